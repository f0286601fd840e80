//! API clients with bearer tokens next to browser sessions on one AuthRule: a JWT
//! access token from the certified provider (client_credentials for the API's
//! audience) passes with identity headers made from its claims; a tampered, expired
//! or foreign one gets 401 with the RFC 6750 challenge, never a redirect.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::app::*;
use common::*;

const RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    clientSecretRef: {name: idp}
    scope: openid email profile
  bearer:
    issuer: ISSUER
    audiences: ["https://api.example.com"]
    additionalClaims:
    - {name: scope, format: space-separated-values, values: ["api:read"]}
  claimHeaders: {X-Auth-Request-User: client_id, X-Auth-Request-Scope: scope}
  authorization:
    rules:
    - name: machines-read-only
      when: "source == 'bearer' && request.method != 'GET'"
      action: Deny
    - name: everyone-else
      when: "true"
      action: Allow
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: test-secret}
"#;

/// A JWT access token from the provider's token endpoint (client_credentials).
async fn token(issuer: &str, client: &str, scope: &str) -> String {
    let resp: serde_json::Value = client_for_idp()
        .post(format!("{issuer}/token"))
        .basic_auth(client, Some("test-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {resp}"))
        .to_owned()
}

fn client_for_idp() -> reqwest::Client {
    reqwest::Client::new()
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `GET path` on the app over a raw socket with `headers` (each ending in CRLF).
async fn raw_get(s: &Setup, method: &str, path: &str, headers: &str) -> RawResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: app.example.com\r\n{headers}Connection: close\r\n\r\n"
    );
    raw_exchange(s.proxy.http, request.as_bytes()).await
}

#[tokio::test]
async fn a_token_from_the_provider_passes_unchanged_with_identity_headers() {
    let s = setup_rule(&[], RULE, &[]).await;
    let token = token(&s.idp.issuer, "portcullis-test", "api:read").await;
    // A forged identity header in any spelling is replaced by the token's.
    let r = raw_get(
        &s,
        "GET",
        "/api/items",
        &format!("Authorization: Bearer {token}\r\nX-Amzn-Oidc-Identity: admin\r\nx_amzn_oidc_data: forged\r\nX-Auth-Request-User: admin\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = r.backend().expect("the backend answered");
    let headers = &seen["headers"];
    assert_eq!(headers["authorization"], format!("Bearer {token}"));
    assert_eq!(headers["x-amzn-oidc-accesstoken"], token.as_str());
    assert_eq!(headers["x-amzn-oidc-identity"], "portcullis-test");
    assert!(headers.get("x_amzn_oidc_data").is_none());
    // Claim headers come from the token's claims, never from the client.
    assert_eq!(headers["x-auth-request-user"], "portcullis-test");
    assert_eq!(headers["x-auth-request-scope"], "api:read");
    // x-amzn-oidc-data is signed by Portcullis over the token's claims.
    let pem = reqwest::get(format!("http://{}/keys", s.proxy.admin))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let kid = pem["keys"][0]["kid"].as_str().unwrap().to_owned();
    let key = reqwest::get(format!("http://{}/keys/{kid}", s.proxy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = verify_alb_data(headers["x-amzn-oidc-data"].as_str().unwrap(), &key).unwrap();
    assert_eq!(data["payload"]["client_id"], "portcullis-test");
    assert_eq!(data["payload"]["scope"], "api:read");
    // The authorization rules see `source == 'bearer'`: machines may only read.
    let post = raw_get(
        &s,
        "POST",
        "/api/items",
        &format!("Authorization: Bearer {token}\r\nContent-Length: 0\r\n"),
    )
    .await;
    assert_eq!(post.status, 403, "{}", post.head);
    assert!(post.backend().is_none());
    let metrics = s.proxy.metrics().await;
    assert!(
        metrics.contains(
            r#"portcullis_auth_bearer_tokens_total{reason="",result="success",rule="apps/sso"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_tokens_get_401_with_the_challenge_and_never_a_redirect() {
    let s = setup_rule(&[], RULE, &[]).await;
    let good = token(&s.idp.issuer, "portcullis-test", "api:read").await;
    let expired = token(&s.idp.issuer, "portcullis-slow-clock", "api:read").await;
    assert!(claims_of(&expired)["exp"].as_i64().unwrap() < jiff::Timestamp::now().as_second());
    let no_scope = token(&s.idp.issuer, "portcullis-test", "api:write").await;
    // The claims changed after signing: sub swapped for another client's.
    let mut claims = claims_of(&good);
    claims["sub"] = "admin-client".into();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    // Signed with "none": never accepted.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        parts[1]
    );
    // A browser is logged in too: its session cookie does not rescue a bad token.
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let cookies = b
        .get(format!("{}/", s.origin))
        .send()
        .await
        .unwrap()
        .headers()
        .get_all("set-cookie")
        .iter()
        .count();
    assert_eq!(cookies, 0, "the session is settled");
    for (what, token, says) in [
        ("tampered", tampered.as_str(), "signature does not verify"),
        ("expired", expired.as_str(), "expired"),
        ("without the scope", no_scope.as_str(), "claim scope"),
        ("unsigned", unsigned.as_str(), "algorithm"),
        ("not a JWT", "opaque-token", "not a well-formed jwt"),
    ] {
        let r = raw_get(
            &s,
            "GET",
            "/api/items",
            &format!("Accept: text/html\r\nAuthorization: Bearer {token}\r\n"),
        )
        .await;
        assert_eq!(r.status, 401, "{what}: {}", r.head);
        let head = r.head.to_ascii_lowercase();
        assert!(
            head.contains("www-authenticate: bearer error=\"invalid_token\""),
            "{what}: {}",
            r.head
        );
        assert!(head.contains(says), "{what}: {}", r.head);
        assert!(!head.contains("location:"), "{what}: no redirect");
        assert!(r.backend().is_none(), "{what}: never forwarded");
    }
    let session_cookie = {
        let jar = b
            .get(format!("{}/", s.origin))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        jar["headers"]["cookie"].as_str().unwrap().to_owned()
    };
    let both = raw_get(
        &s,
        "GET",
        "/",
        &format!("Authorization: Bearer {tampered}\r\nCookie: {session_cookie}\r\n"),
    )
    .await;
    assert_eq!(both.status, 401, "{}", both.head);
    // Two Authorization headers: the backend might read the other one.
    let two = raw_get(
        &s,
        "GET",
        "/",
        &format!("Authorization: Bearer {good}\r\nAuthorization: Basic YTpi\r\n"),
    )
    .await;
    assert_eq!(two.status, 400, "{}", two.head);
    assert!(two.backend().is_none());
    // A script without any credential is told that a token would do.
    let none = raw_get(&s, "GET", "/api/items", "Accept: application/json\r\n").await;
    assert_eq!(none.status, 401);
    assert!(
        none.head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    let line = s
        .proxy
        .log_line(|l| l.contains("AuthInvalidBearerToken"))
        .await;
    assert_eq!(alb_record(&line)["elb_status_code"], "401");
    let diagnostics = s.proxy.diagnostics.lock().unwrap().join("\n");
    assert!(
        !diagnostics.contains(&good[..40]),
        "tokens are never logged"
    );
}

#[tokio::test]
async fn a_rule_without_oidc_takes_tokens_only_and_never_redirects() {
    let (login, rest) = RULE.split_once("  oidc:").unwrap();
    let bearer_only = format!(
        "{login}  bearer:{}",
        rest.split_once("  bearer:").unwrap().1
    );
    assert!(!bearer_only.contains("clientId"), "{bearer_only}");
    let s = setup_guarded(&[], &bearer_only, &[], 401).await;
    // Without a token, whatever kind of request it is: 401 with the Bearer
    // challenge, never a login, and a session cookie is not even read.
    for headers in [
        "Accept: text/html\r\nSec-Fetch-Mode: navigate\r\n",
        "Accept: application/json\r\nSec-Fetch-Mode: cors\r\n",
        "X-Requested-With: XMLHttpRequest\r\n",
        "",
        "Authorization: Basic YTpi\r\n",
        "Authorization: Bearer\r\n",
        "Cookie: AWSELBAuthSessionCookie-0=AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n",
    ] {
        let r = raw_get(&s, "GET", "/api/items", headers).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.head);
        let head = r.head.to_ascii_lowercase();
        assert!(
            head.contains("www-authenticate: bearer"),
            "{headers:?}: {}",
            r.head
        );
        assert!(
            !head.contains("location:") && !head.contains("set-cookie:"),
            "{}",
            r.head
        );
        assert!(r.body.contains("AuthBearerTokenRequired"), "{}", r.body);
        assert!(r.backend().is_none());
    }
    // There is no login to call back to or log out of: those paths are the route's,
    // and guarded like any other.
    for path in ["/oauth2/idpresponse?code=x&state=y", "/oauth2/logout"] {
        let r = raw_get(&s, "GET", path, "Accept: text/html\r\n").await;
        assert_eq!(r.status, 401, "{path}: {}", r.head);
        assert!(
            r.body.contains("AuthBearerTokenRequired"),
            "{path}: {}",
            r.body
        );
    }
    // A token from the provider passes with identity and claim headers, as beside a
    // login; a forged header in any spelling is replaced.
    let good = token(&s.idp.issuer, "portcullis-test", "api:read").await;
    let no_scope = token(&s.idp.issuer, "portcullis-test", "api:write").await;
    let bearer = format!("Authorization: Bearer {good}\r\n");
    let r = raw_get(
        &s,
        "GET",
        "/api/items",
        &format!("{bearer}X-AMZN-OIDC-IDENTITY: admin\r\nx-auth-request-user: admin\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let headers = &r.backend().unwrap()["headers"];
    assert_eq!(headers["authorization"], format!("Bearer {good}"));
    assert_eq!(headers["x-amzn-oidc-identity"], "portcullis-test");
    assert_eq!(headers["x-amzn-oidc-accesstoken"], good.as_str());
    assert_eq!(headers["x-auth-request-user"], "portcullis-test");
    assert!(
        headers["x-amzn-oidc-data"]
            .as_str()
            .is_some_and(|d| d.split('.').count() == 3)
    );
    // Authorization reads the token's claims: machines may only read.
    let post = raw_get(
        &s,
        "POST",
        "/api/items",
        &format!("{bearer}Content-Length: 0\r\n"),
    )
    .await;
    assert_eq!(post.status, 403, "{}", post.head);
    assert!(post.backend().is_none());
    let r = raw_get(
        &s,
        "GET",
        "/",
        &format!("Authorization: Bearer {no_scope}\r\n"),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.head);
    assert!(r.head.contains("invalid_token"), "{}", r.head);
}

/// `request.sourceIp` in an expression is the client's address as every other check
/// sees it: what a `--trusted-proxy` forwarded for, else the socket's peer; never an
/// `X-Forwarded-For` an untrusted client wrote.
#[tokio::test]
async fn expressions_see_the_client_address_a_trusted_proxy_names_and_no_other() {
    let (login, rest) = RULE.split_once("  oidc:").unwrap();
    let bearer = rest
        .split_once("  bearer:")
        .unwrap()
        .1
        .split_once("  claimHeaders:")
        .unwrap()
        .0;
    let rule = format!(
        "{login}  bearer:{bearer}  authorization:\n    defaultAction: Deny\n    rules:\n    - {{name: office, when: \"has(request.sourceIp) && request.sourceIp == '203.0.113.9'\", action: Allow}}\n"
    );
    let behind = setup_guarded(&[], &rule, &["--trusted-proxy", "127.0.0.1/32"], 401).await;
    let good = token(&behind.idp.issuer, "portcullis-test", "api:read").await;
    for (forwarded, status) in [
        ("X-Forwarded-For: 203.0.113.9\r\n", 200),
        ("X-Forwarded-For: 198.51.100.1\r\n", 403),
        ("X-Forwarded-For: 203.0.113.9.\r\n", 403),
        ("", 403),
    ] {
        assert_eq!(
            status_from(&behind, &good, forwarded).await,
            status,
            "{forwarded:?}"
        );
    }
    let direct = setup_guarded(&[], &rule, &[], 401).await;
    let good = token(&direct.idp.issuer, "portcullis-test", "api:read").await;
    for forwarded in [
        "X-Forwarded-For: 203.0.113.9\r\n",
        "Forwarded: for=203.0.113.9\r\n",
        "X-Real-IP: 203.0.113.9\r\n",
    ] {
        assert_eq!(
            status_from(&direct, &good, forwarded).await,
            403,
            "{forwarded:?}"
        );
    }
}

/// The status of `GET /api/items` with `token` and the `forwarded` headers.
async fn status_from(s: &Setup, token: &str, forwarded: &str) -> u16 {
    let headers = format!("Authorization: Bearer {token}\r\n{forwarded}");
    raw_get(s, "GET", "/api/items", &headers).await.status
}
