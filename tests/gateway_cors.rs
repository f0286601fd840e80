//! The HTTPRoute CORS filter, attacked with raw bytes: it answers preflights and
//! decorates answers on open routes, and on a guarded route it never answers a
//! preflight the AuthRule refuses, nor lets a script of an allowed origin read a
//! guarded answer without a session.

use crate::common;

use common::*;

const CORS: &str = "filters: [{type: CORS, cors: {allowOrigins: [\"https://app.example\", \"https://*.trusted.example\"], allowMethods: [\"*\"], allowHeaders: [\"*\"], exposeHeaders: [x-total], allowCredentials: true, maxAge: 600}}]";

fn manifests(backend: &Backend) -> String {
    format!(
        r#"{EDGE_GATEWAY}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [api.test]
  rules:
  - name: open
    matches: [{{path: {{type: PathPrefix, value: /open}}}}]
    {CORS}
    backendRefs: [{{name: svc, port: 80}}]
  - name: private
    matches: [{{path: {{type: PathPrefix, value: /private}}}}]
    {CORS}
    backendRefs: [{{name: svc, port: 80}}]
  - name: lets-preflights
    matches: [{{path: {{type: PathPrefix, value: /preflights}}}}]
    {CORS}
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: strict, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api, sectionName: private}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: preflights, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api, sectionName: lets-preflights}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
  cors: {{allowPreflight: true}}
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
    format!("{method} {path} HTTP/1.1\r\nHost: api.test\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

const PREFLIGHT: &str = "Origin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x-a\r\n";

fn allows_origin(r: &RawResponse) -> bool {
    r.head
        .to_ascii_lowercase()
        .contains("access-control-allow-origin")
}

#[tokio::test]
async fn the_cors_filter_never_opens_a_guarded_route() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("gateway-cors");
    dir.write("all.yaml", &manifests(&backend));
    let p = Portcullis::start(dir.path(), &[]);

    // Open: the preflight is answered here, the request is decorated.
    let r = raw_exchange(p.http, &request("OPTIONS", "/open", PREFLIGHT)).await;
    assert_eq!(
        (r.status, r.backend().is_some()),
        (204, false),
        "{}",
        r.head
    );
    let head = r.head.to_ascii_lowercase();
    for line in [
        "access-control-allow-origin: https://app.example",
        "access-control-allow-methods: put",
        "access-control-allow-headers: x-a",
        "access-control-allow-credentials: true",
        "access-control-max-age: 600",
    ] {
        assert!(head.contains(line), "{line}: {head}");
    }
    for origin in [
        "https://app.example",
        "HTTPS://APP.EXAMPLE:443",
        "https://a.b.trusted.example",
    ] {
        let r = raw_exchange(
            p.http,
            &request("GET", "/open", &format!("Origin: {origin}\r\n")),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            r.head
                .contains(&format!("access-control-allow-origin: {origin}")),
            "{origin}: {}",
            r.head
        );
    }
    // Other origins, and spellings that only look alike, get no CORS headers.
    for origin in [
        "https://evil.example",
        "null",
        "https://app.example.evil",
        "http://app.example",
        "https://trusted.example",
        "https://app.example:8443",
    ] {
        let r = raw_exchange(
            p.http,
            &request("GET", "/open", &format!("Origin: {origin}\r\n")),
        )
        .await;
        assert!(!allows_origin(&r), "{origin}: {}", r.head);
        let preflight = format!("Origin: {origin}\r\nAccess-Control-Request-Method: GET\r\n");
        let r = raw_exchange(p.http, &request("OPTIONS", "/open", &preflight)).await;
        let answered = (r.status, r.backend().is_some());
        assert_eq!(answered, (204, false), "preflight {origin}");
        assert!(!allows_origin(&r), "preflight {origin}: {}", r.head);
    }
    let twice = "Origin: https://app.example\r\nOrigin: https://app.example\r\n";
    let r = raw_exchange(p.http, &request("GET", "/open", twice)).await;
    assert!(!allows_origin(&r), "two origins: {}", r.head);

    // Guarded, preflights not let through: the guard's answer stands, with no CORS
    // header a script could read it by; nothing reaches the backend.
    let spellings = [
        "/private",
        "/private/data",
        "/%70rivate",
        "//private",
        "/x/../private",
    ];
    for path in spellings {
        for (method, extra) in [
            ("OPTIONS", PREFLIGHT.to_owned()),
            ("GET", "Origin: https://app.example\r\n".to_owned()),
            (
                "GET",
                "Origin: https://app.example\r\nSec-Fetch-Mode: cors\r\nCookie: session=forged\r\n"
                    .to_owned(),
            ),
            (
                "POST",
                "Origin: https://app.example\r\nContent-Length: 0\r\n".to_owned(),
            ),
        ] {
            let r = raw_exchange(p.http, &request(method, path, &extra)).await;
            assert!(
                r.backend().is_none() && matches!(r.status, 400 | 401) && !allows_origin(&r),
                "{method} {path}: {} {}",
                r.status,
                r.head
            );
        }
    }

    // Guarded, preflights let through: the filter answers the preflight (the backend
    // never sees it), and the request itself still needs a session.
    let r = raw_exchange(p.http, &request("OPTIONS", "/preflights", PREFLIGHT)).await;
    assert_eq!(
        (r.status, r.backend().is_some()),
        (204, false),
        "{}",
        r.head
    );
    assert!(allows_origin(&r));
    for (method, extra) in [
        ("GET", "Origin: https://app.example\r\n"),
        (
            "PUT",
            "Origin: https://app.example\r\nContent-Length: 0\r\n",
        ),
    ] {
        let r = raw_exchange(p.http, &request(method, "/preflights", extra)).await;
        assert!(
            r.backend().is_none() && matches!(r.status, 400 | 401) && !allows_origin(&r),
            "{method}: {} {}",
            r.status,
            r.head
        );
    }
    // An OPTIONS with a body is not a preflight, to the guard or the filter.
    let with_body = b"OPTIONS /preflights HTTP/1.1\r\nHost: api.test\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody";
    let r = raw_exchange(p.http, with_body).await;
    assert!(
        r.backend().is_none() && matches!(r.status, 400 | 401) && !allows_origin(&r),
        "OPTIONS with a body: {} {}",
        r.status,
        r.head
    );
    // Nor is anything a browser would not send as one: without `Origin`, two of
    // `Origin` or of `Access-Control-Request-Method`, or an empty method. The guard and
    // the filter agree, so none of these reaches the backend without a session.
    for headers in [
        "Access-Control-Request-Method: GET\r\n",
        "Origin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Method: POST\r\n",
        "Origin: https://app.example\r\nOrigin: https://other.example\r\nAccess-Control-Request-Method: GET\r\n",
        "Origin: https://app.example\r\nAccess-Control-Request-Method: \r\n",
    ] {
        let r = raw_exchange(p.http, &request("OPTIONS", "/preflights?q=1", headers)).await;
        assert!(
            r.backend().is_none() && matches!(r.status, 400 | 401) && !allows_origin(&r),
            "OPTIONS with {headers:?}: {} {}",
            r.status,
            r.head
        );
    }
}
