//! HTTPRoute `RequestMirror` filters attacked with raw bytes, against real backends
//! that record what reaches them: a guarded rule's mirror gets only requests the
//! guard admitted, with the identity headers its backend got and none the client
//! forged; a body is copied only when it was held whole, and a slow mirror holds a
//! bounded number of copies.

use crate::common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::idp::Idp;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What a recording backend received: method, path and query, headers (lower-case
/// names, every value), body.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A backend that keeps every request it reads whole. It answers 200, or, for a path
/// with `fail=N` (and `code=C`, 500 unless given) in its query, `C` to the first `N`
/// requests of that path and query.
pub struct Recorder {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| record(log.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|s| s.path == path).count()
    }
}

async fn record(
    log: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".into(), |p| p.to_string());
    let seen = Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into(),
                )
            })
            .collect(),
        body: body.unwrap_or_default(),
    };
    let earlier = {
        let mut log = log.lock().unwrap();
        let earlier = log.iter().filter(|s| s.path == path).count();
        log.push(seen);
        earlier
    };
    let query: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let fail: usize = query.get("fail").and_then(|n| n.parse().ok()).unwrap_or(0);
    let code: u16 = query
        .get("code")
        .and_then(|c| c.parse().ok())
        .unwrap_or(500);
    let status = if earlier < fail { code } else { 200 };
    let mut resp = Response::new(Full::new(Bytes::from(format!("attempt {}", earlier + 1))));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    Ok(resp)
}

/// A backend that accepts connections and never answers.
struct Silent {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Silent {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { addr, task }
    }
}

pub fn svc(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n",
        addr.port(),
        addr.ip()
    )
}

/// `admin` is guarded (OIDC and bearer tokens from `issuer`), `open` is not; both
/// mirror to `shadow`.
fn routes(issuer: &str) -> String {
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
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}}}}}]
    backendRefs: [{{name: app, port: 80}}]
  - name: open
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}}}}}]
    backendRefs: [{{name: app, port: 80}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: admins, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: admin}}]
  oidc: {{issuer: "{issuer}", clientId: portcullis-test, clientSecretRef: {{name: idp}}}}
  bearer: {{issuer: "{issuer}", audiences: ["https://api.example.com"]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp, namespace: apps}}
stringData: {{client-secret: test-secret}}
"#
    )
}

/// A JWT access token from the provider (client_credentials).
async fn token(issuer: &str) -> String {
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("portcullis-test", Some("test-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().unwrap().to_owned()
}

fn request(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

async fn mirror_count(p: &Portcullis, result: &str) -> f64 {
    let m = p.metrics().await;
    let v = metric_value(
        &m,
        &format!("portcullis_mirror_requests_total{{result=\"{result}\"}}"),
    );
    if v.is_nan() { 0.0 } else { v }
}

/// Identity headers in every spelling a client might forge them.
const FORGED: &str = "X-Amzn-Oidc-Identity: admin\r\nx-amzn-oidc-data: forged\r\nX_Amzn_Oidc_Accesstoken: forged\r\nx-amzn-oidc-identity: root\r\n";

#[tokio::test]
async fn a_guarded_rules_mirror_gets_only_admitted_requests_as_the_backend_does() {
    let app = Recorder::start().await;
    let shadow = Recorder::start().await;
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", "http://app.test/oauth2/idpresponse")]);
    let dir = TempDir::new("mirror-guard");
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}",
            routes(&idp.issuer),
            svc("app", app.addr),
            svc("shadow", shadow.addr)
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);

    // Unadmitted: no credentials, forged identity, a bad token, every spelling of the
    // guarded path, with and without a body.
    let mut refused = 0;
    for path in [
        "/admin",
        "/admin/users",
        "/%61dmin/users",
        "//admin",
        "/x/../admin",
    ] {
        for extra in [
            "",
            FORGED,
            "Authorization: Bearer not.a.token\r\n",
            "Content-Length: 5\r\n\r\nhello",
        ] {
            let bytes = if let Some(body) = extra.strip_prefix("Content-Length: 5\r\n\r\n") {
                format!("POST {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: 5\r\n\r\n{body}").into_bytes()
            } else {
                request("GET", path, extra)
            };
            let r = raw_exchange(p.http, &bytes).await;
            assert!(
                matches!(r.status, 302 | 400 | 401),
                "{path} {extra:?}: {} {}",
                r.status,
                r.body
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 20);
    // One admitted request on the open rule, counted when it is sent: no copy of any
    // refused one was ever started.
    let r = raw_exchange(p.http, &request("GET", "/open?n=1", "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(mirror_count(&p, "sent").await, 1.0);
    eventually("the open request's copy arrives", || async {
        shadow.count("/open?n=1") == 1
    })
    .await;
    assert!(app.requests().iter().all(|s| !s.path.contains("admin")));

    // Admitted with a token, forged headers beside it: the copy carries what the
    // backend got, Portcullis's identity headers and none of the client's.
    let token = token(&idp.issuer).await;
    let auth = format!("Authorization: Bearer {token}\r\n{FORGED}");
    let r = raw_exchange(p.http, &request("GET", "/admin/users?n=2", &auth)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = format!(
        "POST /admin/orders HTTP/1.1\r\nHost: app.test\r\n{auth}Content-Length: 11\r\nConnection: close\r\n\r\nhello world"
    );
    let r = raw_exchange(p.http, body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("both admitted copies arrive", || async {
        shadow.requests().len() == 3
    })
    .await;
    for path in ["/admin/users?n=2", "/admin/orders"] {
        let main = app.requests().into_iter().find(|s| s.path == path).unwrap();
        let copy = shadow
            .requests()
            .into_iter()
            .find(|s| s.path == path)
            .unwrap();
        assert_eq!(copy.header("x-amzn-oidc-identity"), Some("portcullis-test"));
        for name in [
            "x-amzn-oidc-identity",
            "x-amzn-oidc-accesstoken",
            "x-amzn-oidc-data",
            "authorization",
        ] {
            assert_eq!(copy.header(name), main.header(name), "{path}: {name}");
        }
        let identities = copy
            .headers
            .iter()
            .filter(|(n, _)| n.contains("oidc") && n.contains("identity"))
            .count();
        assert_eq!(identities, 1, "{path}: {:?}", copy.headers);
        assert!(
            copy.headers
                .iter()
                .all(|(n, v)| !n.contains('_') && v != "forged" && v != "admin" && v != "root"),
            "{path}: {:?}",
            copy.headers
        );
        assert_eq!(
            (copy.method.as_str(), &copy.body),
            (main.method.as_str(), &main.body)
        );
    }
    assert_eq!(shadow.requests()[2].body, b"hello world");
    assert!(
        shadow
            .requests()
            .iter()
            .all(|s| s.path.contains("n=") || s.path == "/admin/orders")
    );
}

#[tokio::test]
async fn a_body_is_copied_only_when_held_whole_and_a_slow_mirror_is_capped() {
    let app = Recorder::start().await;
    let shadow = Recorder::start().await;
    let silent = Silent::start().await;
    let dir = TempDir::new("mirror-bounds");
    dir.write(
        "all.yaml",
        &format!(
            r#"{EDGE_GATEWAY}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: silent, port: 80}}}}}}]
    backendRefs: [{{name: app, port: 80}}]
  - filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}}}}}]
    backendRefs: [{{name: app, port: 80}}]
{}{}{}"#,
            svc("app", app.addr),
            svc("shadow", shadow.addr),
            svc("silent", silent.addr)
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);

    // A chunked body streams: the backend gets it whole, the mirror gets no copy.
    let chunked = b"POST /chunked HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = raw_exchange(p.http, chunked).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // So does a body past the bound.
    let big = vec![b'x'; 64 * 1024 + 1];
    let mut large = format!(
        "POST /large HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    )
    .into_bytes();
    large.extend_from_slice(&big);
    let r = raw_exchange(p.http, &large).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // One at the bound is held and copied.
    let mut held = format!(
        "POST /held HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        64 * 1024
    )
    .into_bytes();
    held.extend_from_slice(&big[1..]);
    let r = raw_exchange(p.http, &held).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the held body's copy arrives", || async {
        shadow.count("/held") == 1
    })
    .await;
    assert_eq!(shadow.requests()[0].body.len(), 64 * 1024);
    assert_eq!(app.count("/chunked"), 1);
    assert_eq!(app.requests()[0].body, b"hello world");
    assert_eq!(app.requests()[1].body.len(), big.len());
    assert_eq!(shadow.count("/chunked") + shadow.count("/large"), 0);
    assert_eq!(mirror_count(&p, "dropped_body").await, 2.0);

    // A mirror that never answers: the client is answered every time, and copies past
    // the cap are dropped, not queued.
    for i in 0..80 {
        let r = raw_exchange(p.http, &request("GET", &format!("/slow/{i}"), "")).await;
        assert_eq!(r.status, 200, "{i}: {}", r.body);
    }
    assert_eq!(
        app.requests()
            .iter()
            .filter(|s| s.path.starts_with("/slow"))
            .count(),
        80
    );
    assert_eq!(mirror_count(&p, "sent").await, 1.0 + 64.0);
    assert_eq!(mirror_count(&p, "dropped_busy").await, 16.0);
}

/// A mirror that cannot be used closes its rule (500, nothing sent anywhere), and
/// `check` names the filter's field; the rule beside it is served.
#[tokio::test]
async fn a_mirror_that_cannot_be_used_closes_its_rule() {
    let app = Recorder::start().await;
    let manifests = format!(
        r#"{EDGE_GATEWAY}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /missing}}}}]
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: nope, port: 80}}}}}}]
    backendRefs: [{{name: app, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /foreign}}}}]
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: app, namespace: other, port: 80}}}}}}]
    backendRefs: [{{name: app, port: 80}}]
  - backendRefs: [{{name: app, port: 80}}]
{}"#,
        svc("app", app.addr)
    );
    let (ok, report) = run_with_stdin(&["check", "-f", "-"], &manifests);
    assert!(!ok, "{report}");
    for field in ["spec.rules[0].filters[0]", "spec.rules[1].filters[0]"] {
        assert!(
            report.contains(&format!("{field}.requestMirror.backendRef")),
            "{field}: {report}"
        );
    }
    let dir = TempDir::new("mirror-invalid");
    dir.write("all.yaml", &manifests);
    let p = Portcullis::start(dir.path(), &[]);
    for path in ["/missing", "/foreign/x"] {
        let r = raw_exchange(p.http, &request("GET", path, "")).await;
        assert_eq!(r.status, 500, "{path}: {}", r.body);
    }
    let r = raw_exchange(p.http, &request("GET", "/other", "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.requests().len(), 1);
}
