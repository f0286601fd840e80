//! `spec.claimHeaders`: plain headers made from the user's claims. No client can set
//! one on the rule's routes, in any spelling; a value that would not arrive unchanged
//! is not sent. Requests go over raw sockets, byte for byte as written here.

use std::sync::Arc;

use crate::common;

use common::app::*;
use common::*;
use reqwest::cookie::CookieStore;

const RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  paths: ["/", "/app*"]
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    clientSecretRef: {name: idp}
    scope: openid email profile
  claimHeaders:
    X-Auth-Request-Email: email
    X-Auth-Request-Groups: groups
    X-Auth-Request-Nickname: nickname
  authorization:
    rules:
    # Expressions see the request after its forged claim headers are gone.
    - name: forged-header-seen
      when: "'x-auth-request-email' in request.headers || 'x_auth_request_email' in request.headers"
      action: Deny
    - {name: everyone, when: "true", action: Allow}
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: test-secret}
"#;

/// Logs in as `user` and returns the `Cookie` header its browser then sends.
async fn session_cookie(s: &Setup, user: &str) -> String {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let b = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", s.proxy.http)
        .build()
        .unwrap();
    let callback = callback_url(&b, &s.origin, "/app", user).await;
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 302);
    let url = reqwest::Url::parse(&s.origin).unwrap();
    let cookie = jar.cookies(&url).expect("the session cookie");
    cookie.to_str().unwrap().to_owned()
}

/// Every value of header `name` the backend received.
fn values(seen: &serde_json::Value, name: &str) -> Vec<String> {
    seen["headerList"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

/// Names the backend received that read, with `_` for `-`, as `x-auth-request-*`.
fn claim_like_names(seen: &serde_json::Value) -> Vec<String> {
    seen["headerList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap().to_owned())
        .filter(|n| n.replace('_', "-").starts_with("x-auth-request-"))
        .collect()
}

/// Every spelling of the claim headers a client might try (names are read with `_`
/// as `-` by CGI and WSGI servers, so those count too).
const FORGED: &str = "X-Auth-Request-Email: admin@example.com\r\n\
    x-auth-request-email: admin2@example.com\r\n\
    X-AUTH-REQUEST-EMAIL: admin3@example.com\r\n\
    X_Auth_Request_Email: admin4@example.com\r\n\
    x_auth-request_email: admin5@example.com\r\n\
    X-Auth-Request-Groups: admins\r\n\
    x_auth_request_groups: admins\r\n\
    X-Auth-Request-Nickname: root\r\n";

fn get(path: &str, host: &str, cookie: &str, extra: &str) -> Vec<u8> {
    let cookie = if cookie.is_empty() {
        String::new()
    } else {
        format!("Cookie: {cookie}\r\n")
    };
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn forged_claim_headers_are_replaced_in_every_spelling_and_never_pass_alone() {
    // Underscored names reach the routing only when allowed, so allow them.
    let s = setup_rule(&[], RULE, &["--underscores-in-headers"]).await;
    let cookie = session_cookie(&s, "token-admin").await;
    let r = raw_exchange(
        s.proxy.http,
        &get("/app/x", "app.example.com", &cookie, FORGED),
    )
    .await;
    let seen = r.backend().unwrap_or_else(|| panic!("{}", r.head));
    assert_eq!(
        values(&seen, "x-auth-request-email"),
        ["token-admin@example.com"]
    );
    assert_eq!(
        values(&seen, "x-auth-request-groups"),
        ["staff,admins"],
        "the ID token's groups, joined with commas"
    );
    let mut names = claim_like_names(&seen);
    names.sort();
    assert_eq!(
        names,
        ["x-auth-request-email", "x-auth-request-groups"],
        "no nickname claim, so no nickname header; no underscored copy"
    );

    // Without a session the guarded path never reaches the backend.
    let r = raw_exchange(s.proxy.http, &get("/app/x", "app.example.com", "", FORGED)).await;
    assert_eq!((r.status, r.backend()), (401, None), "{}", r.head);
    // A path of the same route the rule leaves open: the backend gets none of them.
    let r = raw_exchange(s.proxy.http, &get("/public", "app.example.com", "", FORGED)).await;
    let seen = r.backend().unwrap_or_else(|| panic!("{}", r.head));
    assert!(claim_like_names(&seen).is_empty(), "{seen}");
    // With the session too: the open path is no rule's to fill in.
    let r = raw_exchange(
        s.proxy.http,
        &get("/public", "app.example.com", &cookie, FORGED),
    )
    .await;
    assert!(claim_like_names(&r.backend().unwrap()).is_empty());
    // An obs-fold continuation line is refused before anything routes it.
    let folded = "X-Auth-Request-Email: admin@example.com\r\n extra\r\n";
    for path in ["/app/x", "/public"] {
        let r = raw_exchange(s.proxy.http, &get(path, "app.example.com", &cookie, folded)).await;
        assert_eq!((r.status, r.backend()), (400, None), "{path}: {}", r.head);
    }

    // Another namespace's route on another host is not this rule's to change.
    s.manifests.write(
        "other.yaml",
        &format!(
            "{}{}",
            ingress_yaml("web", &[("other.example.com", "/", "svc")], ""),
            service_yaml("svc", &[s._backend.addr])
        )
        .replace("namespace: apps", "namespace: other"),
    );
    let forged = "X-Auth-Request-Email: admin@example.com\r\n";
    eventually("the other namespace's route is served", || async {
        raw_exchange(s.proxy.http, &get("/", "other.example.com", "", forged))
            .await
            .backend()
            .is_some()
    })
    .await;
    let r = raw_exchange(s.proxy.http, &get("/", "other.example.com", "", forged)).await;
    assert_eq!(
        values(&r.backend().unwrap(), "x-auth-request-email"),
        ["admin@example.com"]
    );
}

#[tokio::test]
async fn a_claim_that_cannot_travel_unchanged_is_not_sent() {
    let s = setup_rule(&[], RULE, &[]).await;
    let (crlf, comma) = tokio::join!(
        session_cookie(&s, "crlf-user"),
        session_cookie(&s, "comma-user")
    );
    let r = raw_exchange(s.proxy.http, &get("/app/x", "app.example.com", &crlf, "")).await;
    let seen = r.backend().unwrap_or_else(|| panic!("{}", r.head));
    assert_eq!(
        values(&seen, "x-auth-request-email"),
        ["crlf-user@example.com"],
        "the nickname's line break injected nothing"
    );
    assert!(
        values(&seen, "x-auth-request-nickname").is_empty(),
        "{seen}"
    );
    let r = raw_exchange(s.proxy.http, &get("/app/x", "app.example.com", &comma, "")).await;
    let seen = r.backend().unwrap();
    assert!(
        values(&seen, "x-auth-request-groups").is_empty(),
        "a group with a comma would read as two: {seen}"
    );
    assert_eq!(
        values(&seen, "x-auth-request-email"),
        ["comma-user@example.com"]
    );
    for claim in ["claim=nickname", "claim=groups"] {
        s.proxy
            .diagnostic_line(|l| l.contains("claim header not sent") && l.contains(claim))
            .await;
    }
    let logs = s.proxy.diagnostics.lock().unwrap().join("\n");
    assert!(
        !logs.contains("admin@example.com"),
        "the log names the claim, never its value"
    );
}

/// An HTTPRoute's own header filter cannot write a claim header of the rule that
/// guards it: what the backend gets is the rule's value or nothing.
#[tokio::test]
async fn a_route_filter_cannot_set_a_claim_header() {
    let backend = Backend::start("api").await;
    let dir = TempDir::new("claim-header-filter");
    dir.write(
        "all.yaml",
        &format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portcullis}}
spec: {{controllerName: portcullis.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: apps}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: X-Auth-Request-Email, value: admin@example.com}}]
        add: [{{name: X-Auth-Request-Groups, value: admins}}, {{name: X-Kept, value: "1"}}]
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: sso, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
  onUnauthenticatedRequest: allow
  claimHeaders: {{X-Auth-Request-Email: email, X-Auth-Request-Groups: groups}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp, namespace: apps}}
stringData: {{client-secret: s}}
{}"#,
            service_yaml("svc", &[backend.addr])
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let request = get("/", "app.test", "", FORGED);
    eventually("the route is served", || async {
        raw_exchange(p.http, &request).await.backend().is_some()
    })
    .await;
    let seen = raw_exchange(p.http, &request).await.backend().unwrap();
    assert_eq!(
        claim_like_names(&seen),
        ["x-auth-request-nickname"],
        "only what is no claim header of this rule: {seen}"
    );
    assert_eq!(values(&seen, "x-kept"), ["1"], "the filter itself ran");
}
