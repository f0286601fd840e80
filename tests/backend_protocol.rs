//! How Portcullis speaks to the pods: TLS with a self-signed certificate (unchecked, as
//! ALB, or checked against a CA Secret), HTTP/2 in the clear (h2c) and over TLS
//! (ALPN), and gRPC, whose trailers reach the client and whose refused calls get a
//! `grpc-status`, never a page. Each backend is a real hyper server that reports what
//! arrived: the HTTP version, `:authority`, headers, the SNI and ALPN of its TLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::common;
use common::app::{browser, log_in_at, seen_by_backend};
use common::idp::Idp;
use common::tls::{TestCert, cert};
use common::*;

/// What a backend saw of the TLS handshake.
#[derive(Default)]
struct Handshake {
    sni: Option<String>,
    alpn: Option<String>,
}

/// How a backend serves.
#[derive(Clone, Copy, PartialEq)]
enum Serves {
    /// HTTP/2 only, in the clear (prior knowledge).
    H2c,
    /// TLS with `cert`, HTTP/1.1 or HTTP/2 by ALPN.
    Tls,
}

struct Pod {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pod {
    async fn start(serves: Serves, cert: &TestCert) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = (serves == Serves::Tls).then(|| acceptor(cert));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(stream), Handshake::default(), true).await,
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let (_, conn) = tls.get_ref();
                            let seen = Handshake {
                                sni: conn.server_name().map(str::to_owned),
                                alpn: conn
                                    .alpn_protocol()
                                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                            };
                            let h2 = seen.alpn.as_deref() == Some("h2");
                            serve(TokioIo::new(tls), seen, h2).await;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

fn acceptor(cert: &TestCert) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert.pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve<I>(io: I, seen: Handshake, h2: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let seen = Arc::new(seen);
    let service = service_fn(move |req| answer(req, seen.clone()));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if h2 {
        builder = builder.http2_only();
    } else {
        builder = builder.http1_only();
    }
    let _ = builder.serve_connection(io, service).await;
}

type Answer = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A gRPC call is echoed with trailers; anything else gets what arrived, as JSON.
async fn answer(
    req: Request<Incoming>,
    seen: Arc<Handshake>,
) -> Result<Response<Answer>, Infallible> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let view = serde_json::json!({
        "version": format!("{:?}", req.version()),
        "authority": req.uri().authority().map(|a| a.to_string()),
        "path": req.uri().path(),
        "headers": headers,
        "sni": seen.sni,
        "alpn": seen.alpn,
    });
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/grpc");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !grpc {
        let mut view = view;
        view["bodyBytes"] = body.len().into();
        let json = Full::new(Bytes::from(view.to_string())).boxed_unsync();
        return Ok(Response::new(json));
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "echoed".parse().unwrap());
    let echoed = Full::new(body)
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed_unsync();
    let mut resp = Response::new(echoed);
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp.headers_mut().insert(
        "x-seen",
        http::HeaderValue::from_str(&view.to_string()).unwrap(),
    );
    Ok(resp)
}

/// Service `svc` in `apps` (port 80) with these annotations, at `pod`.
fn service(pod: SocketAddr, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n  namespace: apps\n  annotations: {{{annotations}}}\nspec:\n  ports: [{{name: web, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-x, namespace: apps, labels: {{kubernetes.io/service-name: svc}}}}\naddressType: IPv4\nports: [{{name: web, port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n",
        pod.port(),
        pod.ip()
    )
}

/// An Ingress for app.example.com, `/` to `svc`, as AWS Load Balancer Controller's
/// docs write one for TLS and HTTP/2 to the pods.
fn ingress(annotations: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
{annotations}spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: svc
            port:
              number: 80
"#
    )
}

fn ca_secret(name: &str, c: &TestCert) -> String {
    let pem: String = c.pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: apps}}\nstringData:\n  ca.crt: |\n{pem}"
    )
}

const GET: &[u8] =
    b"GET /hello?x=1 HTTP/1.1\r\nHost: app.example.com\r\nAccept: application/json\r\nConnection: close\r\n\r\n";

/// What the backend saw of a plain GET sent as raw bytes, once the proxy answers 200.
async fn seen(proxy: &Portcullis) -> serde_json::Value {
    let resp = raw_exchange(proxy.http, GET).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    serde_json::from_str(&resp.body).unwrap()
}

async fn status_becomes(proxy: &Portcullis, status: u16) {
    eventually(&format!("the route answers {status}"), || async {
        raw_exchange(proxy.http, GET).await.status == status
    })
    .await;
}

#[tokio::test]
async fn tls_to_a_self_signed_pod_sends_no_sni_and_checks_the_certificate_only_when_asked() {
    let pod_cert = cert(&["svc.apps.svc"]);
    let pod = Pod::start(Serves::Tls, &pod_cert).await;
    let dir = TempDir::new("backend-tls");
    dir.write("svc.yaml", &service(pod.addr, ""));
    dir.write(
        "app.yaml",
        &ingress("    alb.ingress.kubernetes.io/backend-protocol: HTTPS\n"),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    status_becomes(&proxy, 200).await;
    let seen_tls = seen(&proxy).await;
    assert_eq!(seen_tls["version"], "HTTP/1.1");
    assert_eq!(seen_tls["sni"], serde_json::Value::Null, "ALB sends no SNI");
    assert_eq!(
        seen_tls["alpn"],
        serde_json::Value::Null,
        "HTTP/1.1 offers no ALPN"
    );
    assert_eq!(seen_tls["path"], "/hello");
    assert_eq!(seen_tls["headers"]["host"], "app.example.com");
    assert_eq!(seen_tls["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen_tls["headers"]["x-forwarded-for"], "127.0.0.1");

    // Checked against a CA that did not sign the pod's certificate: no request reaches
    // the pod.
    let other = cert(&["svc.apps.svc"]);
    dir.write("ca.yaml", &ca_secret("pods-ca", &other));
    dir.write(
        "svc.yaml",
        &service(pod.addr, "portcullis.dev/backend-ca-secret: pods-ca"),
    );
    status_becomes(&proxy, 502).await;
    let refused = raw_exchange(proxy.http, GET).await;
    assert!(
        refused.body.contains("TargetConnectionError"),
        "{}",
        refused.body
    );

    // Checked against the pod's own CA, under the Service's DNS name, sent as SNI.
    dir.write("ca.yaml", &ca_secret("pods-ca", &pod_cert));
    status_becomes(&proxy, 200).await;
    let verified = seen(&proxy).await;
    assert_eq!(verified["sni"], "svc.apps.svc");

    // A name the certificate does not carry fails the check.
    dir.write(
        "svc.yaml",
        &service(
            pod.addr,
            "portcullis.dev/backend-ca-secret: pods-ca, portcullis.dev/backend-server-name: other.apps.svc",
        ),
    );
    status_becomes(&proxy, 502).await;
}

#[tokio::test]
async fn http2_reaches_h2c_and_tls_pods_with_the_clients_authority() {
    let pod_cert = cert(&["svc.apps.svc"]);
    let h2c = Pod::start(Serves::H2c, &pod_cert).await;
    let h2 = Pod::start(Serves::Tls, &pod_cert).await;
    let dir = TempDir::new("backend-h2");
    // The Service's annotation asks for HTTP/2; the Ingress says nothing of it.
    dir.write(
        "svc.yaml",
        &service(
            h2c.addr,
            "alb.ingress.kubernetes.io/backend-protocol-version: HTTP2",
        ),
    );
    dir.write("app.yaml", &ingress(""));
    let proxy = Portcullis::start(dir.path(), &[]);
    status_becomes(&proxy, 200).await;
    let cleartext = seen(&proxy).await;
    assert_eq!(cleartext["version"], "HTTP/2.0");
    assert_eq!(cleartext["authority"], "app.example.com");
    assert_eq!(cleartext["path"], "/hello");
    assert_eq!(cleartext["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(cleartext["headers"].get("host").is_none(), "{cleartext}");
    assert!(
        cleartext["headers"].get("connection").is_none(),
        "{cleartext}"
    );

    // HTTP/1.1's own framing and hop-by-hop headers, in every spelling a client may
    // send, never reach an HTTP/2 pod (where they are malformed): a chunked body
    // arrives as a body, and the request is not refused for them.
    let chunked = b"POST /upload HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: gzip, trailers\r\nAccept: application/json\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let resp = raw_exchange(proxy.http, chunked).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    let posted: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(posted["version"], "HTTP/2.0");
    assert_eq!(posted["bodyBytes"], 5);
    let names: Vec<&String> = posted["headers"].as_object().unwrap().keys().collect();
    for hop in [
        "transfer-encoding",
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "host",
    ] {
        assert!(!names.iter().any(|n| *n == hop), "{hop} in {names:?}");
    }
    assert_eq!(posted["headers"]["te"], "trailers");

    dir.write(
        "svc.yaml",
        &service(
            h2.addr,
            "alb.ingress.kubernetes.io/backend-protocol-version: HTTP2",
        ),
    );
    dir.write(
        "app.yaml",
        &ingress("    alb.ingress.kubernetes.io/backend-protocol: HTTPS\n"),
    );
    eventually("the route reaches the TLS pod", || async {
        let resp = raw_exchange(proxy.http, GET).await;
        resp.status == 200 && resp.body.contains("\"alpn\":\"h2\"")
    })
    .await;
    let over_tls = seen(&proxy).await;
    assert_eq!(over_tls["version"], "HTTP/2.0");
    assert_eq!(over_tls["authority"], "app.example.com");
    assert_eq!(over_tls["sni"], serde_json::Value::Null);
}

/// A gRPC call over h2c to Portcullis: its status, its body and its trailers.
struct Call {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

async fn grpc_call(proxy: SocketAddr, path: &str, cookie: Option<&str>) -> Call {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // One length-prefixed message: uncompressed, 5 bytes.
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let mut req = Request::post(format!("http://app.example.com{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(message))
        .unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Call {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    }
}

#[tokio::test]
async fn grpc_calls_get_their_trailers_and_a_refused_call_gets_a_grpc_status() {
    let pod = Pod::start(Serves::H2c, &cert(&["svc.apps.svc"])).await;
    let dir = TempDir::new("backend-grpc");
    dir.write("svc.yaml", &service(pod.addr, ""));
    let proxy = Portcullis::start(dir.path(), &[]);
    let origin = format!("http://app.example.com:{}", proxy.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    let guarded = format!(
        "    alb.ingress.kubernetes.io/backend-protocol-version: GRPC\n    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: '{{\"issuer\":\"{}\",\"secretName\":\"oidc-client\"}}'\n",
        idp.issuer
    );
    dir.write(
        "app.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: oidc-client, namespace: apps}}\nstringData: {{clientID: portcullis-test, clientSecret: test-secret}}\n",
            ingress(&guarded)
        ),
    );
    eventually("the route is guarded", || async {
        let call = grpc_call(proxy.http, "/echo.Echo/Say", None).await;
        call.headers.get("grpc-status").is_some_and(|s| s == "16")
    })
    .await;

    // Without a session: no login page, no redirect, a gRPC status.
    let refused = grpc_call(proxy.http, "/echo.Echo/Say", None).await;
    assert_eq!(refused.status, 200);
    assert_eq!(refused.headers["content-type"], "application/grpc");
    assert_eq!(refused.headers["grpc-status"], "16", "UNAUTHENTICATED");
    let message = refused.headers["grpc-message"].to_str().unwrap();
    assert!(message.starts_with("AuthRequired"), "{message}");
    assert!(refused.body.is_empty());
    assert!(!refused.headers.contains_key("location"));

    // A logged-in call reaches the pod over HTTP/2 with the identity headers, and the
    // pod's trailers reach the client.
    let b = browser(&proxy);
    log_in_at(&b, &origin, "carol").await;
    let page = seen_by_backend(&b, &format!("{origin}/")).await;
    assert_eq!(
        page["version"], "HTTP/2.0",
        "a plain request to a gRPC pod: HTTP/2 too"
    );
    let session = page["headers"]["cookie"].as_str().unwrap().to_owned();
    let call = grpc_call(proxy.http, "/echo.Echo/Say", Some(&session)).await;
    assert_eq!(call.status, 200);
    assert_eq!(&call.body[..], b"\x00\x00\x00\x00\x05hello");
    let trailers = call.trailers.expect("the pod's trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "echoed");
    let seen: serde_json::Value =
        serde_json::from_str(call.headers["x-seen"].to_str().unwrap()).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["authority"], "app.example.com");
    assert_eq!(seen["path"], "/echo.Echo/Say");
    assert_eq!(seen["headers"]["te"], "trailers");
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "carol");
    assert!(seen["headers"].get("x-amzn-oidc-data").is_some());
}
