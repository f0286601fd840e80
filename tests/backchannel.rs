//! A logout at the identity provider ends the session at the edge too: the certified
//! provider posts an OpenID Connect Back-Channel Logout token, Portcullis validates it
//! and refuses the session from then on.

use crate::common;

use common::app::*;
use common::client;
use common::idp::log_out;

#[tokio::test]
async fn a_logout_at_the_provider_ends_the_session_at_the_edge() {
    let s = setup_rule(
        &[(
            "IDP_BACKCHANNEL_URI",
            "http://127.0.0.1:PORT/oauth2/backchannel-logout",
        )],
        AUTH_RULE,
        &[],
    )
    .await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice");

    // The user logs out at the provider itself, not through Portcullis.
    let end = format!(
        "{}/session/end?client_id=portcullis-test&post_logout_redirect_uri={}/",
        s.idp.issuer, s.origin
    );
    log_out(&b, &end, &format!("{}/", s.origin)).await;
    common::eventually("the old session cookie no longer passes", || async {
        b.get(format!("{}/", s.origin))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| {
                r.status() == 302
                    && r.headers()["location"]
                        .to_str()
                        .unwrap()
                        .starts_with(&s.idp.issuer)
            })
    })
    .await;
    let lines = s.proxy.diagnostics.lock().unwrap().join("\n");
    assert!(!lines.contains("logout token refused"), "{lines}");
}

#[tokio::test]
async fn a_forged_logout_token_is_refused() {
    let s = setup().await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let header = "eyJhbGciOiJub25lIn0"; // {"alg":"none"}
    let claims = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::json!({"iss": s.idp.issuer, "aud": "portcullis-test", "iat": jiff::Timestamp::now().as_second(), "jti": "x", "sub": "alice",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}).to_string(),
    );
    let refused = common::client()
        .post(s.proxy.url("/oauth2/backchannel-logout"))
        .form(&[("logout_token", format!("{header}.{claims}."))])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    assert_eq!(
        seen["headers"]["x-amzn-oidc-identity"], "alice",
        "the session lives on"
    );
}

/// Some providers only do front-channel logout: their logout page loads the
/// `frontchannel_logout_uri` with `iss` and `sid`. Third-party cookies are blocked in
/// most browsers, so the iframe usually arrives without the session cookie: the `sid`
/// alone must end the session; when the cookie does come, it is cleared too.
#[tokio::test]
async fn a_front_channel_logout_ends_the_session_of_its_sid() {
    let s = setup_rule(
        &[(
            "IDP_FRONTCHANNEL_URI",
            "http://app.example.com:PORT/oauth2/frontchannel-logout",
        )],
        AUTH_RULE,
        &[],
    )
    .await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let other = browser(&s.proxy);
    log_in_at(&other, &s.origin, "bob").await;
    let end = format!(
        "{}/session/end?client_id=portcullis-test&post_logout_redirect_uri={}/",
        s.idp.issuer, s.origin
    );
    let frames = common::idp::log_out_front_channel(&b, &end).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(frames[0].contains("sid="), "{}", frames[0]);
    // The iframe as a browser that blocks third-party cookies loads it.
    let loaded = browser(&s.proxy).get(&frames[0]).send().await.unwrap();
    assert_eq!(loaded.status(), 200);
    assert!(
        loaded.headers().get("set-cookie").is_none(),
        "no cookie, nothing to clear"
    );
    let r = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "alice's session of that sid has ended");
    let seen = seen_by_backend(&other, &format!("{}/", s.origin)).await;
    assert_eq!(
        seen["headers"]["x-amzn-oidc-identity"], "bob",
        "bob's lives on"
    );
    // With the cookie (first-party), the browser's own session cookie is cleared.
    let frames = common::idp::log_out_front_channel(&other, &end).await;
    let cleared = other.get(&frames[0]).send().await.unwrap();
    let set: Vec<String> = cleared
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        set.iter()
            .any(|c| c.starts_with("AWSELBAuthSessionCookie-0=") && c.contains("Max-Age=0")),
        "{set:?}"
    );
    // A request naming an issuer no AuthRule of this host has is refused.
    let foreign = client()
        .get(
            s.proxy
                .url("/oauth2/frontchannel-logout?iss=https%3A%2F%2Fevil.example&sid=x"),
        )
        .header("host", "app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 400);
}

/// An issuer nobody serves: front-channel logouts need only its URL.
const FLOOD_ISSUER: &str = "https://idp.invalid";

async fn front_channel_target() -> (common::Backend, common::TempDir, common::Portcullis) {
    let backend = common::Backend::start("app").await;
    let manifests = common::TempDir::new("frontchannel-flood");
    manifests.write(
        "app.yaml",
        &format!(
            "{}{}{}",
            common::ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            common::service_yaml("svc", &[backend.addr]),
            AUTH_RULE.replace("ISSUER", FLOOD_ISSUER)
        ),
    );
    let proxy = common::Portcullis::start(manifests.path(), &[]);
    (backend, manifests, proxy)
}

fn front_channel_logout(sid: &str) -> Vec<u8> {
    format!(
        "GET /oauth2/frontchannel-logout?iss=https%3A%2F%2Fidp.invalid&sid={sid} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// 10,000 front-channel logouts with the longest `sid`s taken (512 bytes), and some
/// far longer ones, keep the process within a stated memory bound: the revocation
/// table holds at most 4 MiB of front-channel entries per issuer and forgets the
/// oldest, counting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_front_channel_logouts_keeps_memory_bounded() {
    let (_backend, _manifests, proxy) = front_channel_target().await;
    let addr = proxy.http;
    common::eventually("the AuthRule guards the host", || async {
        common::raw_exchange(addr, &front_channel_logout("warm-up"))
            .await
            .status
            == 200
    })
    .await;
    // Warm up the request path (allocator arenas, connection state) before measuring.
    for i in 0..200 {
        let r = common::raw_exchange(addr, &front_channel_logout(&format!("w{i}"))).await;
        assert_eq!(r.status, 200);
    }
    let before = proxy.rss_kib();

    // Oversize: refused with its catalogued reason, nothing recorded.
    let huge = "s".repeat(59 * 1024);
    let refused = common::raw_exchange(addr, &front_channel_logout(&huge)).await;
    assert_eq!(refused.status, 400, "{}", refused.head);
    proxy.log_line(|l| l.contains("AuthLogoutSidTooLong")).await;

    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            tokio::spawn(async move {
                let pad = "x".repeat(503);
                for i in 0..1_250 {
                    let sid = format!("{t:02}-{i:05}-{pad}");
                    assert_eq!(sid.len(), 512);
                    let r = common::raw_exchange(addr, &front_channel_logout(&sid)).await;
                    assert_eq!(r.status, 200, "{}", r.head);
                    if i % 50 == 0 {
                        // Oversize ones mixed in.
                        let r =
                            common::raw_exchange(addr, &front_channel_logout(&"o".repeat(4096)))
                                .await;
                        assert_eq!(r.status, 400);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let after = proxy.rss_kib();
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "front-channel flood: 10,000 logouts (512-byte sids) in {elapsed:?}; VmRSS {} -> {} KiB (+{grown_mib:.1} MiB)",
        before, after
    );
    // The table's budget is 4 MiB of keys and entries; allocator slack and request
    // buffers add some.
    assert!(
        grown_mib < 24.0,
        "VmRSS grew by {grown_mib:.1} MiB ({before} -> {after} KiB)"
    );
    let metrics = proxy.metrics().await;
    let evicted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("portcullis_revocations_evicted_total{kind=\"front_channel\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no eviction counter in\n{metrics}"));
    assert!(evicted > 1_000.0, "evicted {evicted}");
    assert!(
        metrics.contains("portcullis_revocations_evicted_total{kind=\"signed\"} 0"),
        "signed revocations are never pushed out by front-channel ones"
    );
}
