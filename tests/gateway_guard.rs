//! Gateway API routes from files (`portcullis serve -f`, no cluster), attacked with raw
//! bytes: an AuthRule on one HTTPRoute rule guards every spelling of its paths, and no
//! header, method or sibling rule routes around it.

mod common;

use common::*;

fn manifests(backend: &Backend) -> String {
    format!(
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
