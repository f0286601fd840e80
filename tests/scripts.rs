//! The contract with scripts (a single-page app's `fetch()` and XHR), over raw
//! sockets: a session whose access token expired is refreshed silently, whatever the
//! request; a session that ended answers a script 401 with JSON naming the login URL
//! and the `Cookie` challenge, never a redirect its CORS check would fail; only a
//! top-level navigation is sent to the provider.

use crate::common;

use common::app::*;
use common::*;

/// Request classes and whether each is a top-level navigation (sent to the login).
const CLASSES: &[(&str, bool)] = &[
    (
        "Sec-Fetch-Mode: cors\r\nAccept: application/json\r\n",
        false,
    ),
    ("Sec-Fetch-Mode: cors\r\nAccept: text/html\r\n", false),
    ("Sec-Fetch-Mode: no-cors\r\nAccept: */*\r\n", false),
    (
        "Sec-Fetch-Mode: same-origin\r\nAccept: text/html\r\n",
        false,
    ),
    ("Sec-Fetch-Mode: websocket\r\n", false),
    (
        "X-Requested-With: XMLHttpRequest\r\nAccept: text/html\r\n",
        false,
    ),
    (
        "x-requested-with: fetch\r\nSec-Fetch-Mode: navigate\r\n",
        false,
    ),
    ("Accept: application/json\r\n", false),
    ("", false),
    (
        "Sec-Fetch-Mode: navigate\r\nSec-Fetch-Mode: cors\r\nAccept: text/html\r\n",
        false,
    ),
    ("Sec-Fetch-Mode: navigate\r\nAccept: */*\r\n", true),
    ("Sec-Fetch-Mode: NAVIGATE\r\n", true),
    ("Accept: text/html,application/xhtml+xml\r\n", true),
];

async fn raw_get(s: &Setup, path: &str, headers: &str) -> RawResponse {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: app.example.com\r\n{headers}Connection: close\r\n\r\n"
    );
    raw_exchange(s.proxy.http, request.as_bytes()).await
}

/// Every class gets its answer: 302 to the provider for a navigation, else 401 with
/// the JSON body and challenge naming this page as the login URL.
async fn each_class_is_answered(s: &Setup, cookie: &str, why: &str) {
    for (headers, navigation) in CLASSES {
        let r = raw_get(s, "/api/items?page=2", &format!("{cookie}{headers}")).await;
        let head = r.head.to_ascii_lowercase();
        assert!(r.backend().is_none(), "{why} {headers:?}");
        if *navigation {
            assert_eq!(r.status, 302, "{why} {headers:?}: {}", r.head);
            assert!(head.contains(&format!("location: {}/auth?", s.idp.issuer)));
            continue;
        }
        assert_eq!(r.status, 401, "{why} {headers:?}: {}", r.head);
        assert!(
            !head.contains("location:"),
            "{why} {headers:?}: never a redirect"
        );
        assert!(
            head.contains("content-type: application/json"),
            "{}",
            r.head
        );
        assert!(
            head.contains("www-authenticate: cookie form-action=\"/api/items?page=2\""),
            "{why} {headers:?}: {}",
            r.head
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "AuthRequired", "{why} {headers:?}");
        assert_eq!(body["loginUrl"], "/api/items?page=2", "{why} {headers:?}");
        assert_eq!(body["status"], 401);
    }
}

#[tokio::test]
async fn an_expired_session_is_refreshed_silently_then_a_script_is_told_where_to_log_in() {
    // Refresh tokens come with offline_access, which needs consent; the session
    // itself ends 6 s after the login.
    let rule = AUTH_RULE.replace(
        "scope: openid email profile",
        "scope: openid email profile offline_access\n    authenticationRequestExtraParams: {prompt: consent}\n  session: {timeout: 6}",
    );
    let s = setup_rule(&[("IDP_ACCESS_TOKEN_TTL", "2")], &rule, &[]).await;
    each_class_is_answered(&s, "", "without a session").await;

    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "fay").await;
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    let first = seen["headers"]["x-amzn-oidc-accesstoken"].clone();
    let cookie = format!(
        "Cookie: {}\r\n",
        seen["headers"]["cookie"].as_str().unwrap()
    );

    // The access token's lifetime is real time: wait it out.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = raw_get(&s, "/api/items", &format!("{cookie}{}", CLASSES[0].0)).await;
    assert_eq!(
        r.status, 200,
        "a script's request is refreshed silently: {}",
        r.head
    );
    let seen = r.backend().unwrap();
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "fay");
    assert_ne!(
        seen["headers"]["x-amzn-oidc-accesstoken"], first,
        "a new access token"
    );
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("set-cookie: awselbauthsessioncookie-0="),
        "the refreshed session is written back: {}",
        r.head
    );

    // Once the session has ended, no refresh can save it.
    eventually("the session ends", || async {
        raw_get(&s, "/api/items", &format!("{cookie}{}", CLASSES[0].0))
            .await
            .status
            == 401
    })
    .await;
    each_class_is_answered(&s, &cookie, "with an ended session").await;
}
