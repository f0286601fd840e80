//! Two `portcullis serve` replicas sharing state in a real `redis-server`, against the
//! certified provider: a logout the provider posts to one replica ends the session on
//! the other, concurrent refreshes of one session on both spend one refresh-token
//! grant, a login whose callback lands on the other replica is not counted abandoned,
//! and a Redis outage refuses sessions (503) quickly instead of hanging.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::app::*;
use common::redis::RedisServer;
use common::*;

/// Key files both replicas read, so each opens the other's session cookies.
pub(crate) struct SharedKeys {
    _dir: TempDir,
    session: String,
    signing: String,
}

pub(crate) fn shared_keys() -> SharedKeys {
    let dir = TempDir::new("replica-keys");
    dir.write(
        "session-keys",
        &base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
    );
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    dir.write(
        "signing.pem",
        &format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        ),
    );
    SharedKeys {
        session: dir.path().join("session-keys").display().to_string(),
        signing: dir.path().join("signing.pem").display().to_string(),
        _dir: dir,
    }
}

pub(crate) fn replica_args<'a>(keys: &'a SharedKeys, redis_url: &'a str) -> Vec<&'a str> {
    vec![
        "--session-keys-file",
        &keys.session,
        "--signing-key-file",
        &keys.signing,
        "--redis-url",
        redis_url,
        "--redis-timeout-ms",
        "300",
    ]
}

/// `GET /` on a replica with the session's cookie header, as a browser would send it.
pub(crate) async fn get_with(replica: &Portcullis, cookie: &str) -> reqwest::Response {
    client()
        .get(format!("http://{}/", replica.http))
        .header("host", "app.example.com")
        .header("accept", "text/html")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// The cookie header the backend saw behind replica A once logged in.
pub(crate) async fn session_cookie(b: &reqwest::Client, origin: &str) -> String {
    let seen = seen_by_backend(b, &format!("{origin}/")).await;
    seen["headers"]["cookie"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_logout_posted_to_one_replica_ends_the_session_on_the_other() {
    let redis = RedisServer::start();
    let keys = shared_keys();
    let url = redis.url();
    let args = replica_args(&keys, &url);
    let s = setup_rule(
        &[(
            "IDP_BACKCHANNEL_URI",
            "http://127.0.0.1:PORT/oauth2/backchannel-logout",
        )],
        AUTH_RULE,
        &args,
    )
    .await;
    let b_replica = Portcullis::start(s.manifests.path(), &args);
    let browser_a = browser(&s.proxy);
    log_in_at(&browser_a, &s.origin, "alice").await;
    let cookie = session_cookie(&browser_a, &s.origin).await;
    let on_b = get_with(&b_replica, &cookie).await;
    assert_eq!(on_b.status(), 200, "replica B opens A's session");
    let seen: serde_json::Value = on_b.json().await.unwrap();
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice");

    // The user logs out at the provider, which posts the logout token to replica A.
    let end = format!(
        "{}/session/end?client_id=portcullis-test&post_logout_redirect_uri={}/",
        s.idp.issuer, s.origin
    );
    common::idp::log_out(&browser_a, &end, &format!("{}/", s.origin)).await;
    let posted = Instant::now();
    eventually("replica B refuses the session", || async {
        get_with(&b_replica, &cookie).await.status() == 302
    })
    .await;
    let lag = posted.elapsed();
    assert!(
        lag < Duration::from_secs(2),
        "at once, not eventually: {lag:?}"
    );
    let posted_to_a = s
        .proxy
        .log_line(|l| l.contains("/oauth2/backchannel-logout"))
        .await;
    assert_eq!(alb_record(&posted_to_a)["elb_status_code"], "200");
    assert!(
        !b_replica
            .access_log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("backchannel")),
        "the provider posted to replica A only"
    );
    // A replica started after the logout learns it from Redis.
    let c_replica = Portcullis::start(s.manifests.path(), &args);
    eventually("replica C refuses it too", || async {
        get_with(&c_replica, &cookie).await.status() == 302
    })
    .await;
}

#[tokio::test]
async fn concurrent_refreshes_on_two_replicas_spend_one_refresh_grant() {
    let redis = RedisServer::start();
    let keys = shared_keys();
    let url = redis.url();
    let args = replica_args(&keys, &url);
    let rule = AUTH_RULE.replace(
        "scope: openid email profile",
        "scope: openid email profile offline_access\n    authenticationRequestExtraParams: {prompt: consent}",
    );
    let s = setup_rule(&[("IDP_ACCESS_TOKEN_TTL", "2")], &rule, &args).await;
    let b_replica = Portcullis::start(s.manifests.path(), &args);
    let browser_a = browser(&s.proxy);
    log_in_at(&browser_a, &s.origin, "dave").await;
    let cookie = session_cookie(&browser_a, &s.origin).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Five requests of the stale session on each replica, all at once.
    let requests = (0..10).map(|i| {
        let replica = if i % 2 == 0 { &s.proxy } else { &b_replica };
        get_with(replica, &cookie)
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut tokens = Vec::new();
    for r in responses {
        assert_eq!(r.status(), 200);
        let seen: serde_json::Value = r.json().await.unwrap();
        assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "dave");
        tokens.push(seen["headers"]["x-amzn-oidc-accesstoken"].clone());
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "every request on both replicas got the one refreshed token"
    );
    let grants: serde_json::Value = reqwest::get(format!("{}/test/grants", s.idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(grants["refresh_token"], 1, "{grants}");
    let refreshed = r#"portcullis_auth_refreshes_total{result="success",rule="apps/sso"} 1"#;
    let on_a = s.proxy.metrics().await.contains(refreshed);
    let on_b = b_replica.metrics().await.contains(refreshed);
    assert!(
        on_a ^ on_b,
        "one replica refreshed, the other took its result"
    );
}

#[tokio::test]
async fn a_redis_outage_refuses_sessions_at_once_and_they_return_with_it() {
    let redis = RedisServer::start();
    let port = redis.port;
    let keys = shared_keys();
    let url = redis.url();
    let args = replica_args(&keys, &url);
    let s = setup_rule(&[], AUTH_RULE, &args).await;
    let mut allow = args.clone();
    allow.extend(["--redis-unavailable", "allow"]);
    let lenient = Portcullis::start(s.manifests.path(), &allow);
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "erin").await;
    let cookie = session_cookie(&b, &s.origin).await;
    eventually("both replicas mirror Redis", || async {
        get_with(&lenient, &cookie).await.status() == 200
    })
    .await;

    drop(redis);
    eventually("the session is refused while Redis is down", || async {
        get_with(&s.proxy, &cookie).await.status() == 503
    })
    .await;
    let started = Instant::now();
    let refused = get_with(&s.proxy, &cookie).await;
    assert_eq!(refused.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1), "no hang");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("AuthSharedStateUnavailable")
    );
    assert_eq!(
        get_with(&lenient, &cookie).await.status(),
        200,
        "--redis-unavailable allow serves on what it knew"
    );
    let metrics = s.proxy.metrics().await;
    assert!(
        metrics.contains("portcullis_shared_state_up 0"),
        "{metrics}"
    );

    let _back = RedisServer::start_on(port);
    eventually("sessions pass again once Redis is back", || async {
        get_with(&s.proxy, &cookie).await.status() == 200
    })
    .await;
}

/// Front-channel logouts are written to Redis at a bounded rate (20 a second, bursts
/// of 200): a flood beyond it still ends sessions on the replica that received it,
/// and what was not shared is counted. Every request is answered 200 either way.
#[tokio::test]
async fn a_front_channel_flood_reaches_redis_at_a_bounded_rate() {
    let redis = RedisServer::start();
    let url = redis.url();
    let backend = Backend::start("app").await;
    let manifests = TempDir::new("frontchannel-redis");
    manifests.write(
        "app.yaml",
        &format!(
            "{}{}{}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &[backend.addr]),
            AUTH_RULE.replace("ISSUER", "https://idp.invalid")
        ),
    );
    let proxy = Portcullis::start(manifests.path(), &["--redis-url", &url]);
    let logout = |sid: &str| {
        format!(
            "GET /oauth2/frontchannel-logout?iss=https%3A%2F%2Fidp.invalid&sid={sid} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"
        )
    };
    let sent = std::sync::atomic::AtomicUsize::new(0);
    eventually("front-channel logouts are taken", || async {
        let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        raw_exchange(proxy.http, logout(&format!("ready-{n}")).as_bytes())
            .await
            .status
            == 200
    })
    .await;
    let started = Instant::now();
    let flood = 600;
    for i in 0..flood {
        let r = raw_exchange(proxy.http, logout(&format!("flood-{i}")).as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.head);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = proxy.metrics().await;
    let not_shared: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_revocations_not_shared_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no counter in\n{metrics}"));
    let stored: usize = redis
        .command("ZCARD portcullis:revocations:front-channel")
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let total = flood + sent.load(std::sync::atomic::Ordering::Relaxed);
    // Some warm-up requests may have failed before Redis answered; none was stored then.
    assert!(
        stored + not_shared <= total,
        "{stored} + {not_shared} > {total}"
    );
    assert!(
        stored + not_shared >= flood,
        "{stored} + {not_shared} < {flood}"
    );
    let allowed = 200.0 + 20.0 * (elapsed + 1.0);
    assert!(
        (stored as f64) <= allowed,
        "{stored} stored in {elapsed:.1} s, more than the rate allows ({allowed})"
    );
    assert!(not_shared > 0, "the flood exceeded the rate");
    let log = proxy.diagnostics.lock().unwrap().join("\n");
    assert!(log.contains("kept on this replica only"), "{log}");
}

/// A login that began on replica A and whose callback the load balancer sent to
/// replica B came back: A learns it from the shared state and does not count it
/// abandoned, while a login that never came back is.
#[tokio::test]
async fn a_callback_on_the_other_replica_is_not_an_abandoned_login() {
    let redis = RedisServer::start();
    let keys = shared_keys();
    let url = redis.url();
    let mut args = replica_args(&keys, &url);
    args.extend(["--login-abandoned-after", "1"]);
    let s = setup_rule(&[], AUTH_RULE, &args).await;
    let b_replica = Portcullis::start(s.manifests.path(), &args);
    let abandoned_on_a = || async {
        let metrics = s.proxy.metrics().await;
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"portcullis_auth_logins_abandoned_total{rule="apps/sso"} "#)
            })
            .map(str::to_owned)
    };
    // The setup's own first request began a login that never came back.
    eventually("the setup's login is counted abandoned on A", || async {
        abandoned_on_a().await.as_deref() == Some("1")
    })
    .await;

    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let on_a = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", s.proxy.http)
        .build()
        .unwrap();
    let callback = callback_url(&on_a, &s.origin, "/", "bob").await;
    let query = callback.split_once('?').unwrap().1;
    use reqwest::cookie::CookieStore as _;
    let cookie = jar.cookies(&s.origin.parse().unwrap()).unwrap();
    let host = s.origin.trim_start_matches("http://");
    let on_b = client()
        .get(format!(
            "http://{}/oauth2/idpresponse?{query}",
            b_replica.http
        ))
        .header("host", host)
        .header("cookie", cookie.to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 302, "replica B completes the login A began");

    let flows = || async {
        let list = reqwest::get(format!("http://{}/flows", s.proxy.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&list).unwrap()
    };
    eventually(
        "A records that the callback reached another replica",
        || async {
            flows()
                .await
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["hops"] == 2 && f["failedAt"].is_null())
        },
    )
    .await;
    let list = flows().await;
    let returned = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["hops"] == 2 && f["failedAt"].is_null())
        .unwrap();
    let timeline = reqwest::get(format!(
        "http://{}/flows/{}",
        s.proxy.admin,
        returned["id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        timeline.contains("ok   returned        the callback reached another replica"),
        "{timeline}"
    );
    assert_eq!(
        abandoned_on_a().await.as_deref(),
        Some("1"),
        "only the login that never came back"
    );

    // Anyone can start logins and come back from them: the marks stay in one bounded
    // set, not a key per login.
    let keys = || redis.command("DBSIZE");
    let before = keys();
    for _ in 0..30 {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let b = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .resolve("app.example.com", s.proxy.http)
            .build()
            .unwrap();
        let start = b
            .get(format!("{}/", s.origin))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        let to_idp = url::Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
        let state = to_idp
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let back = b
            .get(format!(
                "{}/oauth2/idpresponse?error=access_denied&state={state}",
                s.origin
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), 401, "a refused login comes back");
    }
    eventually("the marks are written", || async {
        redis.command("ZCARD portcullis:callbacks-noted") == ":31"
    })
    .await;
    assert_eq!(keys(), before, "30 returned logins add no Redis key");
}
