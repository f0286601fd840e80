//! GRPCRoutes from files, guarded by a bearer AuthRule and attacked with hand-written
//! HTTP/2 frames over a raw TCP socket (no client to normalise names, values or
//! paths): a call without a valid token never reaches the pod, whatever its path,
//! content type or forged identity headers; a call with one reaches it over h2c with
//! the identity headers Portcullis made and none the client sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::common;
use common::h2::*;
use common::idp::Idp;
use common::*;

/// What a gRPC pod received: each call's path and headers, in order.
type Received = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A gRPC pod over h2c (prior knowledge) that records every call and answers it OK.
struct Pod {
    addr: SocketAddr,
    received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pod {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                        .collect();
                    log.lock()
                        .unwrap()
                        .push((req.uri().path().to_owned(), headers));
                    async move {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let body = Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x00"))
                            .with_trailers(async move { Some(Ok(trailers)) });
                        let mut resp = Response::new(body);
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    fn calls(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.received.lock().unwrap().clone()
    }
}

const SERVICE: &str = "echo.Echo";

fn manifests(pod: &Pod, issuer: &str) -> String {
    format!(
        r#"{EDGE_GATEWAY}---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [grpc.test]
  rules:
  - matches: [{{method: {{service: {SERVICE}}}}}]
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: callers, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo}}]
  bearer:
    issuer: {issuer}
    audiences: ["https://api.example.com"]
{}"#,
        service_yaml("svc", &[pod.addr])
    )
}

/// How the proxy ended a raw call: the frames of stream 1 it sent (type, flags).
#[derive(Debug)]
struct Ended {
    frames: Vec<(u8, u8)>,
}

impl Ended {
    /// A trailers-only answer of the proxy's own: one HEADERS frame that ends the
    /// stream, no DATA (a pod's answer carries a message).
    fn answered_alone(&self) -> bool {
        self.frames == [(HEADERS, END_HEADERS | END_STREAM)]
    }

    fn refused_by_protocol(&self) -> bool {
        self.frames
            .iter()
            .any(|(t, _)| *t == RST_STREAM || *t == GOAWAY)
    }
}

/// One gRPC call on stream 1 of a fresh h2c connection: these header fields, then
/// one empty message, as raw frames. Waits for the stream (or connection) to end.
async fn raw_call(proxy: SocketAddr, fields: &[(&[u8], &[u8])]) -> Ended {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &hpack(fields)));
    out.extend(frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x00"));
    tcp.write_all(&out).await.unwrap();
    let frames = tokio::time::timeout(Duration::from_secs(10), frames_of_stream_1(&mut tcp))
        .await
        .expect("the proxy ends the call");
    Ended { frames }
}

/// The request fields of a call to `path` with this content type, then `extra`.
fn call_fields<'a>(
    path: &'a [u8],
    content_type: &'a [u8],
    extra: &[(&'a [u8], &'a [u8])],
) -> Vec<(&'a [u8], &'a [u8])> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"grpc.test"),
        (b"content-type", content_type),
        (b"te", b"trailers"),
    ];
    fields.extend_from_slice(extra);
    fields
}

/// A JWT access token from the provider (client_credentials for the API).
async fn token(issuer: &str) -> String {
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("portcullis-test", Some("test-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
            ("scope", "api:read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().unwrap().to_owned()
}

/// The answer a gRPC client reads (decoded by hyper, for its status only).
async fn grpc_status(proxy: SocketAddr, authorization: Option<&str>) -> (u16, HeaderMap) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::post(format!("http://grpc.test/{SERVICE}/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x00")))
        .unwrap();
    if let Some(a) = authorization {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap();
    if let Some(trailers) = body.trailers() {
        headers.extend(trailers.clone());
    }
    (status, headers)
}

struct Setup {
    proxy: Portcullis,
    pod: Pod,
    idp: Idp,
    _dir: TempDir,
}

async fn setup() -> Setup {
    let pod = Pod::start().await;
    let idp = Idp::start(&[]);
    let dir = TempDir::new("grpc-route");
    dir.write("all.yaml", &manifests(&pod, &idp.issuer));
    let proxy = Portcullis::start(dir.path(), &[]);
    eventually("the GRPCRoute is guarded", || async {
        grpc_status(proxy.http, None)
            .await
            .1
            .get("grpc-status")
            .is_some_and(|s| s == "16")
    })
    .await;
    Setup {
        proxy,
        pod,
        idp,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_call_without_a_valid_token_never_reaches_the_pod_in_any_spelling() {
    let s = setup().await;
    let (status, headers) = grpc_status(s.proxy.http, None).await;
    assert_eq!(status, 200, "gRPC's refusals are HTTP 200");
    assert_eq!(headers["grpc-status"], "16", "UNAUTHENTICATED");
    assert!(!headers.contains_key("location"), "never a redirect");
    let (_, headers) = grpc_status(s.proxy.http, Some("Bearer not.a.token")).await;
    assert_eq!(headers["grpc-status"], "16");

    let path = format!("/{SERVICE}/Say");
    let paths: Vec<String> = vec![
        path.clone(),
        format!("/{SERVICE}/Say?x=1"),
        format!("//{SERVICE}/Say"),
        format!("/{SERVICE}//Say"),
        format!("/{SERVICE}/./Say"),
        format!("/x/../{SERVICE}/Say"),
        "/echo%2EEcho/Say".into(),
        "/echo.Echo%2FSay".into(),
        "/%65cho.Echo/Say".into(),
        format!("/{SERVICE}/Say%00"),
        format!("/{SERVICE}/Say;x"),
        format!("/{SERVICE}/Say#x"),
        format!("/{SERVICE}\\Say"),
        format!("/{SERVICE}/Say/"),
        "/ECHO.ECHO/SAY".into(),
    ];
    let forged: Vec<(&[u8], &[u8])> = vec![
        (b"x-amzn-oidc-identity", b"admin"),
        (b"x-amzn-oidc-data", b"forged"),
        (b"x_amzn_oidc_accesstoken", b"forged"),
    ];
    let content_types: [&[u8]; 4] = [
        b"application/grpc",
        b"application/grpc+proto",
        b"application/grpc;charset=utf-8",
        b"text/plain",
    ];
    for p in &paths {
        for ct in content_types {
            for extra in [
                &[][..],
                &forged[..],
                &[(&b"authorization"[..], &b"Bearer x.y.z"[..])][..],
            ] {
                let ended = raw_call(s.proxy.http, &call_fields(p.as_bytes(), ct, extra)).await;
                // A gRPC call gets a trailers-only answer of the proxy's own; any
                // other request its page. Either way the pod sees nothing (below).
                let grpc = ct.starts_with(b"application/grpc");
                assert!(
                    !grpc || ended.answered_alone() || ended.refused_by_protocol(),
                    "{p} {}: {ended:?}",
                    String::from_utf8_lossy(ct)
                );
            }
        }
    }
    // Names HTTP/2 forbids (upper case, connection-specific), and the header twice.
    for extra in [
        vec![(&b"X-Amzn-Oidc-Identity"[..], &b"admin"[..])],
        vec![
            (b"connection", b"keep-alive"),
            (b"x-amzn-oidc-identity", b"admin"),
        ],
        vec![
            (b"authorization", b"Bearer x.y.z"),
            (b"authorization", b"Bearer a.b.c"),
        ],
    ] {
        let ended = raw_call(
            s.proxy.http,
            &call_fields(path.as_bytes(), b"application/grpc", &extra),
        )
        .await;
        assert!(
            ended.answered_alone() || ended.refused_by_protocol(),
            "{extra:?}: {ended:?}"
        );
    }
    assert!(s.pod.calls().is_empty(), "{:?}", s.pod.calls());
}

#[tokio::test]
async fn a_call_with_a_token_reaches_the_pod_over_h2c_with_portcullis_identity_only() {
    let s = setup().await;
    let token = token(&s.idp.issuer).await;
    let bearer = format!("Bearer {token}");
    let path = format!("/{SERVICE}/Say");
    let forged: Vec<(&[u8], &[u8])> = vec![
        (b"authorization", bearer.as_bytes()),
        (b"x-amzn-oidc-identity", b"admin"),
        (b"x-amzn-oidc-identity", b"root"),
        (b"x-amzn-oidc-data", b"forged"),
        (b"x_amzn_oidc_accesstoken", b"forged"),
        (b"x-amzn-oidc-accesstoken", b"forged"),
    ];
    let ended = raw_call(
        s.proxy.http,
        &call_fields(path.as_bytes(), b"application/grpc", &forged),
    )
    .await;
    assert!(!ended.refused_by_protocol(), "{ended:?}");
    assert!(ended.frames.iter().any(|(t, _)| *t == DATA), "{ended:?}");
    let calls = s.pod.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (seen_path, headers) = &calls[0];
    assert_eq!(seen_path, &path);
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-amzn-oidc-identity"), ["portcullis-test"]);
    assert_eq!(values("x-amzn-oidc-accesstoken"), [token.as_str()]);
    assert_eq!(values("x-amzn-oidc-data").len(), 1);
    assert_ne!(values("x-amzn-oidc-data"), ["forged"]);
    assert!(values("x_amzn_oidc_accesstoken").is_empty());
    assert_eq!(values("content-type"), ["application/grpc"]);

    // The same call on a method the route does not take reaches nothing.
    let other = raw_call(
        s.proxy.http,
        &call_fields(b"/other.Service/Say", b"application/grpc", &forged),
    )
    .await;
    assert!(other.answered_alone(), "{other:?}");
    assert_eq!(s.pod.calls().len(), 1);
}
