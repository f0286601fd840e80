//! The login at the edge, end to end: `portcullis serve` guarding an Ingress with an
//! AuthRule, the real OpenID provider, a cookie-keeping client that follows each hop,
//! and a backend that reports the identity headers it received.

use crate::common;

use base64::Engine as _;
use common::app::*;
use common::idp::{log_in, log_out};
use common::*;

#[tokio::test]
async fn a_browser_logs_in_and_the_backend_gets_the_identity() {
    let s = setup().await;
    let b = browser(&s.proxy);
    let start = b
        .get(format!("{}/dashboard?tab=1", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 302);
    let to_idp = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to_idp.contains("client_id=portcullis-test&redirect_uri="),
        "{to_idp}"
    );
    assert!(
        to_idp.contains("&response_type=code&scope=openid%20email%20profile&state="),
        "ALB's parameter order: {to_idp}"
    );
    assert!(to_idp.contains("&code_challenge_method=S256"));
    let flow_cookie = start.headers()["set-cookie"].to_str().unwrap();
    assert!(
        flow_cookie.starts_with("AWSALBAuthNonce-") && flow_cookie.contains("HttpOnly"),
        "{flow_cookie}"
    );

    let callback = log_in(
        &b,
        &to_idp,
        &format!("{}/oauth2/idpresponse", s.origin),
        "alice",
    )
    .await;
    let done = b.get(&callback.url).send().await.unwrap();
    assert_eq!(done.status(), 302, "{:?}", done.text().await);
    assert_eq!(done.headers()["location"], "/dashboard?tab=1");
    let cookies: Vec<_> = done
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("AWSELBAuthSessionCookie-0=") && !c.contains("Max-Age=0")),
        "{cookies:?}"
    );

    let seen = backend_view(
        b.get(format!("{}/dashboard?tab=1", s.origin))
            .header("x-amzn-oidc-identity", "mallory")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h = &seen["headers"];
    assert_eq!(
        h["x-amzn-oidc-identity"], "alice",
        "the session's identity, not the forged one"
    );
    assert!(!h["x-amzn-oidc-accesstoken"].as_str().unwrap().is_empty());
    // The next request gets the same headers: the signed one is reused, not signed
    // anew (an ES256 signature differs each time it is made).
    let again = backend_view(
        b.get(format!("{}/dashboard?tab=2", s.origin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for name in [
        "x-amzn-oidc-identity",
        "x-amzn-oidc-accesstoken",
        "x-amzn-oidc-data",
    ] {
        assert_eq!(again["headers"][name], h[name], "{name}");
    }
    let data = h["x-amzn-oidc-data"].as_str().unwrap();
    let parts: Vec<&str> = data.split('.').collect();
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["email"], "alice@example.com");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    let pem = reqwest::get(format!(
        "http://{}/keys/{}",
        s.proxy.admin,
        header["kid"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let verified = verify_alb_data(data, &pem)
        .expect("Node's crypto verifies the header with the key endpoint's PEM");
    assert_eq!(verified["payload"]["sub"], "alice");

    let line = s
        .proxy
        .log_line(|l| l.contains("/oauth2/idpresponse"))
        .await;
    let r = alb_record(&line);
    assert_eq!(
        (
            r["elb_status_code"].as_str(),
            r["actions_executed"].as_str()
        ),
        ("302", "authenticate")
    );
    assert_eq!(r["redirect_url"], "/dashboard?tab=1");
    let line = s
        .proxy
        .log_line(|l| {
            l.contains("GET http://app.example.com")
                && l.contains("/dashboard?tab=1")
                && l.contains("\"authenticate,forward\"")
        })
        .await;
    assert_eq!(alb_record(&line)["elb_status_code"], "200");
}

#[tokio::test]
async fn scripts_get_401_with_the_login_url_and_bad_callbacks_get_albs_reasons() {
    let s = setup().await;
    let b = browser(&s.proxy);
    let api = b
        .get(format!("{}/api/items?page=2", s.origin))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let challenges: Vec<String> = (api.headers().get_all("www-authenticate").iter())
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"], "AuthRequired");
    assert_eq!(
        body["loginUrl"], "/api/items?page=2",
        "the page itself: a browser opening it starts a login"
    );
    assert_eq!(challenges, ["Cookie form-action=\"/api/items?page=2\""]);
    // Only a top-level navigation is sent to the provider: a fetch() or XHR asking
    // for HTML would fail the redirect's CORS check.
    for (headers, status) in [
        (
            &[("accept", "text/html"), ("sec-fetch-mode", "cors")][..],
            401,
        ),
        (
            &[
                ("accept", "text/html"),
                ("x-requested-with", "XMLHttpRequest"),
            ],
            401,
        ),
        (&[("accept", "*/*"), ("sec-fetch-mode", "navigate")], 302),
        (&[("accept", "text/html")], 302),
    ] {
        let mut request = b.get(format!("{}/page", s.origin));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{headers:?}");
    }

    let callback = |q: &str| b.get(format!("{}/oauth2/idpresponse?{q}", s.origin)).send();
    let no_state = callback("code=x").await.unwrap();
    assert_eq!(no_state.status(), 401);
    assert_eq!(
        no_state.json::<serde_json::Value>().await.unwrap()["error"],
        "AuthMissingStateParam"
    );
    let no_cookie = callback("code=x&state=abc").await.unwrap();
    assert_eq!(no_cookie.status(), 401);
    assert_eq!(
        no_cookie.json::<serde_json::Value>().await.unwrap()["error"],
        "AuthMissingAWSALBAuthNonce"
    );

    let forged = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .header(
            "cookie",
            "AWSELBAuthSessionCookie-0=AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        302,
        "a forged session is no session: log in again"
    );
}

/// Two more guarded hosts: `closed.example.com` (deny) and `open.example.com` (allow),
/// each with an AuthRule of its own.
fn more_rules(issuer: &str, backend: std::net::SocketAddr) -> String {
    let rule = |name: &str, ingress: &str, mode: &str| {
        AUTH_RULE
            .replace("name: sso", &format!("name: {name}"))
            .replace("[{name: web}]", &format!("[{{name: {ingress}}}]"))
            .replace(
                "    scope: openid email profile",
                &format!("    scope: openid email profile\n  onUnauthenticatedRequest: {mode}"),
            )
            .replace("ISSUER", issuer)
    };
    format!(
        "{}{}{}{}{}",
        ingress_yaml("closed", &[("closed.example.com", "/", "svc2")], ""),
        ingress_yaml("open", &[("open.example.com", "/", "svc2")], ""),
        service_yaml("svc2", &[backend]),
        rule("closed-rule", "closed", "deny"),
        rule("open-rule", "open", "allow"),
    )
}

#[tokio::test]
async fn modes_parallel_logins_and_sessions_bound_to_their_rule() {
    let s = setup().await;
    let other = Backend::start("other").await;
    let issuer = s.idp.issuer.clone();
    s.manifests
        .write("more.yaml", &more_rules(&issuer, other.addr));
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", s.proxy.http)
        .resolve("closed.example.com", s.proxy.http)
        .resolve("open.example.com", s.proxy.http)
        .build()
        .unwrap();
    let port = s.proxy.http.port();
    let closed = format!("http://closed.example.com:{port}/");
    eventually("the deny rule is in effect", || async {
        b.get(&closed).send().await.is_ok_and(|r| r.status() == 401)
    })
    .await;
    let denied = b
        .get(&closed)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        denied.status(),
        401,
        "deny does not redirect browsers either"
    );
    assert!(denied.text().await.unwrap().contains("AuthDenied"));
    let open = b
        .get(format!("http://open.example.com:{port}/"))
        .header("x-amzn-oidc-identity", "mallory")
        .send()
        .await
        .unwrap();
    let seen = backend_view(open).await;
    assert!(
        seen["headers"].get("x-amzn-oidc-identity").is_none(),
        "allow forwards without identity, forged header stripped"
    );

    // Two tabs start a login, then finish in the opposite order.
    let start = |path: &'static str| {
        b.get(format!("{}{path}", s.origin))
            .header("accept", "text/html")
            .send()
    };
    let first = start("/one").await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let second = start("/two").await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let callback_uri = format!("{}/oauth2/idpresponse", s.origin);
    let mut stolen = Vec::new();
    for (to_idp, back) in [(second, "/two"), (first, "/one")] {
        let callback = log_in(&b, &to_idp, &callback_uri, "carol").await;
        let done = b.get(&callback.url).send().await.unwrap();
        assert_eq!(done.status(), 302);
        assert_eq!(done.headers()["location"], back);
        let set = done
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        stolen = set
            .filter(|c| c.starts_with("AWSELBAuthSessionCookie-0="))
            .collect();
    }
    let seen = backend_view(b.get(format!("{}/one", s.origin)).send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "carol");

    // carol's session cookie for app.example.com, replayed at closed.example.com.
    let replay = reqwest::Client::builder()
        .resolve("closed.example.com", s.proxy.http)
        .build()
        .unwrap();
    let resp = replay
        .get(&closed)
        .header("cookie", stolen.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a session is bound to the rule and host that made it"
    );
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_without_a_new_login() {
    // Providers grant refresh tokens for offline_access, which needs consent.
    let rule = AUTH_RULE.replace("scope: openid email profile", "scope: openid email profile offline_access\n    authenticationRequestExtraParams: {prompt: consent}");
    let s = setup_rule(&[("IDP_ACCESS_TOKEN_TTL", "2")], &rule, &[]).await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "dave").await;
    let before = backend_view(b.get(format!("{}/", s.origin)).send().await.unwrap()).await;
    let first_token = before["headers"]["x-amzn-oidc-accesstoken"]
        .as_str()
        .unwrap()
        .to_owned();

    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // Four requests of the stale session at once: one refresh serves them all.
    let get = || {
        b.get(format!("{}/", s.origin))
            .header("accept", "text/html")
            .send()
    };
    let (resp, r2, r3, r4) = tokio::join!(get(), get(), get(), get());
    let resp = resp.unwrap();
    let mut tokens = Vec::new();
    for r in [r2, r3, r4] {
        let seen = backend_view(r.unwrap()).await;
        tokens.push(seen["headers"]["x-amzn-oidc-accesstoken"].clone());
    }
    let renewed = resp.headers().get_all("set-cookie").iter().any(|c| {
        c.to_str()
            .unwrap()
            .starts_with("AWSELBAuthSessionCookie-0=")
    });
    let after = backend_view(resp).await;
    assert!(renewed, "the refreshed session is written back");
    assert_eq!(after["headers"]["x-amzn-oidc-identity"], "dave");
    assert_ne!(
        after["headers"]["x-amzn-oidc-accesstoken"]
            .as_str()
            .unwrap(),
        first_token,
        "a new access token"
    );
    assert!(
        tokens
            .iter()
            .all(|t| *t == after["headers"]["x-amzn-oidc-accesstoken"]),
        "every concurrent request got the one refreshed token"
    );
    let metrics = s.proxy.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_auth_refreshes_total{result="success",rule="apps/sso"} 1"#),
        "{metrics}"
    );
    let again = backend_view(b.get(format!("{}/", s.origin)).send().await.unwrap()).await;
    assert_eq!(
        again["headers"]["x-amzn-oidc-accesstoken"], after["headers"]["x-amzn-oidc-accesstoken"],
        "the new session is used"
    );
}

#[tokio::test]
async fn sessions_survive_a_restart_with_key_files() {
    let keys = TempDir::new("keys");
    keys.write(
        "session-keys",
        &format!(
            "# newest first\n{}\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ),
    );
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    keys.write(
        "signing.pem",
        &format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        ),
    );
    let session_keys = keys.path().join("session-keys").display().to_string();
    let signing_key = keys.path().join("signing.pem").display().to_string();
    let args = [
        "--session-keys-file",
        session_keys.as_str(),
        "--signing-key-file",
        signing_key.as_str(),
    ];
    let s = setup_rule(&[], AUTH_RULE, &args).await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "erin").await;
    let kid = |seen: &serde_json::Value| {
        let data = seen["headers"]["x-amzn-oidc-data"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_owned();
        let header: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE
                .decode(data)
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    let before = kid(&backend_view(b.get(format!("{}/", s.origin)).send().await.unwrap()).await);

    let Setup {
        proxy, manifests, ..
    } = s;
    drop(proxy);
    let restarted = Portcullis::start(manifests.path(), &args);
    // The same browser and cookie jar; `resolve` keeps the URL's port, the new one.
    let seen = backend_view(
        b.get(format!("http://app.example.com:{}/", restarted.http.port()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        seen["headers"]["x-amzn-oidc-identity"], "erin",
        "the restarted process reads the session"
    );
    assert_eq!(kid(&seen), before, "the same signing key and kid");
}

#[tokio::test]
async fn logout_clears_every_shard_and_ends_the_session_at_the_provider() {
    let rule = AUTH_RULE.replace(
        "    scope: openid email profile",
        "    scope: openid email profile\n  logout: {postLogoutRedirectUris: [ORIGIN/]}",
    );
    let s = setup_rule(&[], &rule, &[]).await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "frank").await;
    let seen = backend_view(b.get(format!("{}/", s.origin)).send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "frank");

    let out = b
        .get(format!(
            "{}/oauth2/logout?redirect=https://evil.example/",
            s.origin
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 302);
    let location = out.headers()["location"].to_str().unwrap().to_owned();
    let end_session = format!(
        "{}/session/end?client_id=portcullis-test&id_token_hint=",
        s.idp.issuer
    );
    assert!(location.starts_with(&end_session), "{location}");
    let allowed = format!("{}/", s.origin);
    assert!(
        location.ends_with(&format!(
            "&post_logout_redirect_uri={}",
            allowed.replace(':', "%3A").replace('/', "%2F")
        )),
        "an unlisted target falls back to the allow-list: {location}"
    );
    let cleared: Vec<String> = out
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|c| c.starts_with("AWSELBAuthSessionCookie-") && c.contains("Max-Age=0"))
        .collect();
    assert_eq!(cleared.len(), 4, "every shard expires: {cleared:?}");

    // The provider accepts the hint and the registered target, and sends the browser back.
    let landed = log_out(&b, &location, &allowed).await;
    assert!(landed.starts_with(&allowed), "{landed}");
    let after = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 302, "no session after logout");

    let metrics = s.proxy.metrics().await;
    for line in [
        r#"portcullis_auth_logouts_total{rule="apps/sso"} 1"#,
        r#"portcullis_auth_logins_total{reason="",result="success",rule="apps/sso"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn headless_chromium_logs_in_through_the_providers_pages() {
    let s = setup().await;
    let start = format!("{}/welcome?from=browser", s.origin);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/login.mjs");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args([script, &start, "grace", "MAP app.example.com 127.0.0.1"])
            .output()
            .expect("running node")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen["url"]
            .as_str()
            .unwrap()
            .ends_with("/welcome?from=browser"),
        "back where the login started: {seen}"
    );
    let hops: Vec<&str> = seen["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        hops.iter().any(|h| h.starts_with(&s.idp.issuer)),
        "through the provider's pages: {hops:?}"
    );
    let body = seen["body"].as_str().unwrap();
    let echoed: serde_json::Value =
        serde_json::from_str(&body[body.find('{').unwrap()..=body.rfind('}').unwrap()]).unwrap();
    let h = &echoed["headers"];
    assert_eq!(h["x-amzn-oidc-identity"], "grace");
    for name in ["x-amzn-oidc-accesstoken", "x-amzn-oidc-data"] {
        assert!(!h[name].as_str().unwrap_or_default().is_empty(), "{name}");
    }
    let session = seen["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "AWSELBAuthSessionCookie-0")
        .expect("the browser keeps the session cookie");
    assert_eq!(
        (&session["httpOnly"], &session["sameSite"]),
        (&serde_json::json!(true), &serde_json::json!("Lax"))
    );
}

#[tokio::test]
async fn the_signing_keys_can_be_served_on_a_public_path_of_every_host() {
    let args = ["--public-keys-path", "/.well-known/portcullis-keys"];
    let s = setup_rule(&[], AUTH_RULE, &args).await;
    let b = browser(&s.proxy);
    let jwks: serde_json::Value = b
        .get(format!("{}/.well-known/portcullis-keys", s.origin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap();
    let public = b
        .get(format!("{}/.well-known/portcullis-keys/{kid}", s.origin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let admin = reqwest::get(format!("http://{}/keys/{kid}", s.proxy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    assert_eq!(public, admin, "the same key as the admin listener's");
}

/// An app written for ALB verifies `x-amzn-oidc-data` with aws-jwt-verify's
/// `AlbJwtVerifier`, default settings, pointed at Portcullis's key path and pinned to
/// its rule's signer; data minted for another rule is refused.
#[tokio::test]
async fn aws_jwt_verify_accepts_the_data_header_of_its_rule_only() {
    let tls = common::tls::cert(&["localhost"]);
    let keys_path = "/.well-known/portcullis-keys";
    let extra = TempDir::new("alb-verify");
    extra.write("cert.pem", &tls.pem);
    let args = [
        "--https",
        "127.0.0.1:0",
        "--public-keys-path",
        keys_path,
        "--default-certificate",
        "apps/localhost-tls",
    ];
    let rule = format!(
        "{AUTH_RULE}{}",
        common::tls::tls_secret("localhost-tls", &tls)
    );
    let s = setup_rule(&[], &rule, &args).await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    let data = seen["headers"]["x-amzn-oidc-data"].as_str().unwrap();
    let jwks_uri = format!(
        "https://localhost:{}{keys_path}",
        s.proxy.https.unwrap().port()
    );
    let template = portcullis::auth::identity::DEFAULT_SIGNER;
    let ours = portcullis::auth::identity::signer_for(template, "apps", "sso");
    let verify = |arn: &str| {
        std::process::Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/idp/aws-jwt-verify.mjs"
            ))
            .args([data, &jwks_uri, arn, &s.idp.issuer, "portcullis-test"])
            .env("NODE_EXTRA_CA_CERTS", extra.path().join("cert.pem"))
            .output()
            .unwrap()
    };
    let out = verify(&ours);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(payload["sub"], "alice");
    let other = portcullis::auth::identity::signer_for(template, "other", "sso");
    let out = verify(&other);
    assert!(
        !out.status.success(),
        "another rule's signer must not verify"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ARN not allowed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A callback that names `state` or `code` twice is refused before anything is
/// redeemed: parsers disagree on which of the two counts.
#[tokio::test]
async fn a_callback_with_a_repeated_parameter_is_refused_before_the_code_is_spent() {
    let s = setup().await;
    let b = browser(&s.proxy);
    let callback = callback_url(&b, &s.origin, "/", "erin").await;
    for extra in [
        "&state=other",
        "&code=other",
        "&iss=https%3A%2F%2Fevil.test&iss=x",
    ] {
        let refused = b.get(format!("{callback}{extra}")).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{extra}");
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("AuthInvalidStateParam")
        );
    }
    assert_eq!(
        b.get(&callback).send().await.unwrap().status(),
        302,
        "the code was not spent"
    );
}
