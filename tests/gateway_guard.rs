//! Gateway API routes from files (`portcullis serve -f`, no cluster), attacked with raw
//! bytes: an AuthRule on one HTTPRoute rule guards every spelling of its paths, and no
//! header, method or sibling rule routes around it.

use crate::common;

use common::*;

fn manifests(backend: &Backend) -> String {
    format!(
        r#"{EDGE_GATEWAY}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - name: admin
    matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - name: beta
    matches: [{{path: {{type: PathPrefix, value: /}}, headers: [{{name: x-beta, value: "yes"}}]}}]
    backendRefs: [{{name: svc, port: 80}}]
  - name: everything
    filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: x-served-by, value: everything}}]}}}}]
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: admins, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: admin}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp, namespace: apps}}
stringData: {{client-secret: s}}
{}"#,
        service_yaml("svc", &[backend.addr])
    )
}

fn request(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn the_guarded_rule_holds_for_every_spelling_header_and_method() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("gateway-guard");
    dir.write("all.yaml", &manifests(&backend));
    let p = Portcullis::start(dir.path(), &[]);

    // The open rules are open, with their filters applied.
    let r = raw_exchange(p.http, &request("GET", "/shop", "")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("x-served-by: everything"),
        "{}",
        r.head
    );

    let spellings = [
        "/admin",
        "/admin/users",
        "/%61dmin/users",
        "//admin/users",
        "/x/../admin/users",
        "/x/%2e%2e/admin/users",
        "/./admin",
        "/admin;x/users",
        "/admin%2fusers",
        "/%5cadmin",
    ];
    for path in spellings {
        for (method, extra) in [
            ("GET", ""),
            ("HEAD", ""),
            ("POST", "Content-Length: 0\r\n"),
            ("GET", "x-beta: yes\r\n"),
            ("GET", "X-Original-URL: /shop\r\nX-Rewrite-URL: /shop\r\n"),
        ] {
            let r = raw_exchange(p.http, &request(method, path, extra)).await;
            assert!(
                r.backend().is_none() && matches!(r.status, 400 | 401),
                "{method} {path} with {extra:?}: {} {}",
                r.status,
                r.body
            );
        }
    }
    // A header match does not pull a guarded path into an open rule: the longer path wins.
    let r = raw_exchange(p.http, &request("GET", "/x", "x-beta: yes\r\n")).await;
    assert_eq!(r.status, 200);
}

fn svc(ns: &str, name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n",
        addr.port(),
        addr.ip()
    )
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: portcullis.dev/gateway-controller}\n";

/// The Gateway `apps/edge` with one HTTP listener (after `CLASS`), which the
/// HTTPRoutes of several tests attach to.
const EDGE: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: apps}\nspec:\n  gatewayClassName: portcullis\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";

fn secret(ns: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: {ns}}}\nstringData: {{client-secret: s}}\n"
    )
}

/// Every listener port is served on the same socket, so a hostname one listener names
/// belongs to the namespaces that listener admits; a tenant attached through another
/// listener (another port, no hostname) does not get it, nor its users' cookies.
#[tokio::test]
async fn a_route_through_another_listener_does_not_take_a_named_host() {
    let api = Backend::start("api").await;
    let evil = Backend::start("evil").await;
    let dir = TempDir::new("gateway-ports");
    dir.write(
        "all.yaml",
        &format!(
            r#"{CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: infra}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: internal, port: 80, protocol: HTTP, hostname: app.test}}
  - {{name: tenants, port: 8080, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: admin, namespace: infra}}
spec:
  parentRefs: [{{name: edge, sectionName: internal}}]
  rules: [{{backendRefs: [{{name: api, port: 80}}]}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: admins, namespace: infra}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: internal}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: grab, namespace: evil}}
spec:
  parentRefs: [{{name: edge, namespace: infra, sectionName: tenants, port: 8080}}]
  hostnames: [app.test, "*.test"]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
    backendRefs: [{{name: e, port: 80}}]
{}{}"#,
            secret("infra"),
            svc("infra", "api", api.addr),
            svc("evil", "e", evil.addr)
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    for path in ["/admin/users", "/x"] {
        let r = raw_exchange(
            p.http,
            &request(
                "GET",
                path,
                "Cookie: AWSELBAuthSessionCookie-0=victim-session\r\n",
            ),
        )
        .await;
        assert_eq!((r.status, r.backend()), (401, None), "{path}: {}", r.body);
    }
    // The tenant still serves the hosts nobody named.
    let r = raw_exchange(
        p.http,
        b"GET /admin HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.backend().unwrap()["backend"], "evil");
}

/// Another namespace's catch-all route and its AuthRule's logout path do not answer a
/// host that has routes of its own.
#[tokio::test]
async fn another_namespaces_logout_path_does_not_answer_this_host() {
    let api = Backend::start("api").await;
    let evil = Backend::start("evil").await;
    let dir = TempDir::new("gateway-logout");
    dir.write(
        "all.yaml",
        &format!(
            r#"{CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: infra}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: 80, protocol: HTTP, hostname: "*.test", allowedRoutes: {{namespaces: {{from: All}}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge, namespace: infra}}]
  hostnames: [app.test]
  rules: [{{backendRefs: [{{name: api, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: quiet, namespace: evil}}
spec:
  parentRefs: [{{name: edge, namespace: infra}}]
  rules:
  - matches: [{{path: {{type: Exact, value: /nothing-to-see}}}}]
    backendRefs: [{{name: e, port: 80}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: trap, namespace: evil}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: quiet}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: x, clientSecretRef: {{name: idp}}}}
  session: {{cookieName: AWSELBAuthSessionCookie}}
  logout: {{path: /bye, postLogoutRedirectUris: ["https://evil.example/phish"]}}
{}{}{}"#,
            secret("evil"),
            svc("apps", "api", api.addr),
            svc("evil", "e", evil.addr)
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let r = raw_exchange(p.http, &request("GET", "/bye", "")).await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert_eq!(r.backend().unwrap()["backend"], "api");
    assert!(!r.head.contains("evil.example"), "{}", r.head);
}

/// Filters cannot write identity headers in any spelling, and a route's regular
/// expression is bounded: both are refused when compiled, and their rules answer 500.
#[tokio::test]
async fn filters_cannot_forge_identity_and_expressions_are_bounded() {
    let api = Backend::start("api").await;
    let dir = TempDir::new("gateway-filters");
    dir.write(
        "all.yaml",
        &format!(
            r#"{CLASS}{EDGE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: forge, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /forged}}}}]
    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x_amzn_oidc_identity, value: admin}}]}}}}]
    backendRefs: [{{name: api, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /rewritten}}}}]
    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X_Original_URL, value: /admin}}]}}}}]
    backendRefs: [{{name: api, port: 80}}]
  - matches: [{{path: {{type: RegularExpression, value: "/long/a*"}}}}]
    backendRefs: [{{name: api, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: huge, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [huge.test]
  rules:
  - matches: [{{path: {{type: RegularExpression, value: "(?:.{{0,200}}){{200}}"}}}}]
    backendRefs: [{{name: api, port: 80}}]
  - backendRefs: [{{name: api, port: 80}}]
{}"#,
            svc("apps", "api", api.addr)
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    for path in ["/forged", "/rewritten"] {
        let r = raw_exchange(p.http, &request("GET", path, "")).await;
        assert_eq!((r.status, r.backend()), (500, None), "{path}: {}", r.body);
    }
    let long = format!("/long/{}", "a".repeat(4000));
    let started = std::time::Instant::now();
    let r = raw_exchange(p.http, &request("GET", &long, "")).await;
    assert_eq!(
        (r.status, error(&r).as_deref()),
        (400, Some("RouteMatchTooLong")),
        "inputs past the bound are not matched, nor passed on: {}",
        r.body
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let r = raw_exchange(p.http, &request("GET", "/long/aaa", "")).await;
    assert_eq!(r.status, 200);
    // An expression past the bounds fails its whole route: the open rule beside it too.
    for path in ["/x", "/"] {
        let r = raw_exchange(
            p.http,
            format!("GET {path} HTTP/1.1\r\nHost: huge.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!((r.status, r.backend()), (500, None), "{path}: {}", r.body);
    }
    let (ok, report) = run_with_stdin(
        &["check", "-f", "-"],
        &std::fs::read_to_string(dir.path().join("all.yaml")).unwrap(),
    );
    assert!(!ok);
    assert!(report.contains("x_amzn_oidc_identity"), "{report}");
    assert!(report.contains("regular expression"), "{report}");
}

/// The reason of an error answer (the JSON body non-browser clients get).
fn error(r: &RawResponse) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    body["error"].as_str().map(str::to_owned)
}

/// A request whose route depends on a match that cannot be read one way (too long
/// for an expression, a header or query parameter given twice) or on a match that
/// does not compile is refused; it never reaches the open rule beside a guarded one.
#[tokio::test]
async fn a_guarded_match_that_cannot_be_decided_never_falls_to_the_open_rule() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("gateway-undecided");
    dir.write(
        "all.yaml",
        &format!(
            r#"{CLASS}{EDGE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - name: admin
    matches: [{{path: {{type: RegularExpression, value: "/admin(/.*)?"}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - name: internal
    matches: [{{headers: [{{name: x-tier, type: RegularExpression, value: "internal.*"}}]}}]
    backendRefs: [{{name: svc, port: 80}}]
  - name: debug
    matches:
    - queryParams: [{{name: debug, value: "1"}}]
    - queryParams: [{{name: mode, type: RegularExpression, value: "admin.*"}}]
    backendRefs: [{{name: svc, port: 80}}]
  - name: everything
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: broken, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [broken.test]
  rules:
  - name: admin
    matches: [{{path: {{type: RegularExpression, value: "/\\p{{Lu}}[a-z]+"}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - name: everything
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: admins, namespace: apps}}
spec:
  targetRefs:
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: admin}}
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: internal}}
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: debug}}
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, name: broken, sectionName: admin}}
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
{}{}"#,
            secret("apps"),
            svc("apps", "svc", backend.addr)
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let open = raw_exchange(p.http, &request("GET", "/shop", "")).await;
    assert_eq!(open.status, 200, "{}", open.body);
    assert!(open.backend().is_some());

    let long = "x".repeat(2100);
    let cases: Vec<(String, String, u16, &str)> = vec![
        ("/admin/users".into(), String::new(), 401, "AuthRequired"),
        (
            "/x".into(),
            format!("x-tier: internal{long}\r\n"),
            400,
            "RouteMatchTooLong",
        ),
        (
            format!("/x?mode=admin{long}"),
            String::new(),
            400,
            "RouteMatchTooLong",
        ),
        (
            "/x?debug=0&debug=1".into(),
            String::new(),
            400,
            "RouteMatchAmbiguous",
        ),
        (
            "/x?debug=0&DEBUG=1".into(),
            String::new(),
            400,
            "RouteMatchAmbiguous",
        ),
        (
            "/x".into(),
            "x-tier: public\r\nx-tier: internal\r\n".into(),
            400,
            "RouteMatchAmbiguous",
        ),
    ];
    for (path, extra, status, reason) in &cases {
        let r = raw_exchange(p.http, &request("GET", path, extra)).await;
        assert_eq!(
            (r.status, r.backend().is_none()),
            (*status, true),
            "{path} {extra:.40}: {}",
            r.body
        );
        assert_eq!(error(&r).as_deref(), Some(*reason), "{path}: {}", r.body);
    }
    // A match that does not compile (RE2's \p{Lu}, which regex-lite refuses) fails
    // its whole route closed: nothing of broken.test reaches the backend.
    for path in ["/Admin", "/", "/anything"] {
        let r = raw_exchange(
            p.http,
            format!("GET {path} HTTP/1.1\r\nHost: broken.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!((r.status, r.backend()), (500, None), "{path}: {}", r.body);
        assert_eq!(error(&r).as_deref(), Some("RouteInvalid"));
    }
    let (ok, report) = run_with_stdin(
        &["check", "-f", "-"],
        &std::fs::read_to_string(dir.path().join("all.yaml")).unwrap(),
    );
    assert!(!ok, "{report}");
    assert!(report.contains("InvalidMatch"), "{report}");
    assert!(report.contains("GuardShadowed"), "{report}");
    assert!(report.contains("spec.rules[1].matches[0]"), "{report}");
}

/// A backendRef's RequestHeaderModifier runs only after the rule's guard has let the
/// request through, overrides every spelling the client sent, and may not write the
/// identity headers or `Host`: such a backend answers 500 instead of forwarding.
#[tokio::test]
async fn backend_header_edits_apply_after_the_guard_and_cannot_forge_identity() {
    let api = Backend::start("api").await;
    let dir = TempDir::new("gateway-backend-filters");
    dir.write(
        "all.yaml",
        &format!(
            r#"{CLASS}{EDGE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - name: admin
    matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
    backendRefs:
    - name: api
      port: 80
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-backend, value: admin}}]}}}}]
  - matches: [{{path: {{type: PathPrefix, value: /forged}}}}]
    backendRefs:
    - name: api
      port: 80
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-Amzn-Oidc-Data, value: x}}]}}}}]
  - matches: [{{path: {{type: PathPrefix, value: /hostless}}}}]
    backendRefs:
    - name: api
      port: 80
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{remove: [Host]}}}}]
  - backendRefs:
    - name: api
      port: 80
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-backend, value: open}}], remove: [x-remove-me]}}}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: admins, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: admin}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
{}{}"#,
            svc("apps", "api", api.addr),
            secret("apps")
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let sent = "X-Backend: evil\r\nx-backend: evil2\r\nX-REMOVE-ME: 1\r\nx-remove-me: 2\r\nX-Amzn-Oidc-Identity: admin\r\n";
    let r = raw_exchange(p.http, &request("GET", "/shop", sent)).await;
    let seen = r.backend().expect("the open rule forwards");
    assert_eq!(seen["headers"]["x-backend"], "open", "{seen}");
    assert!(seen["headers"].get("x-remove-me").is_none(), "{seen}");
    assert!(
        seen["headers"].get("x-amzn-oidc-identity").is_none(),
        "{seen}"
    );
    for path in [
        "/admin",
        "/%61dmin/x",
        "//admin",
        "/x/../admin",
        "/admin%2fx",
    ] {
        let r = raw_exchange(p.http, &request("GET", path, sent)).await;
        assert!(
            r.backend().is_none() && matches!(r.status, 400 | 401),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    for path in ["/forged", "/hostless"] {
        let r = raw_exchange(p.http, &request("GET", path, "")).await;
        assert_eq!((r.status, r.backend()), (500, None), "{path}: {}", r.body);
    }
}
