//! TLSRoutes on a Gateway's own address: TLS passed through by the ClientHello's
//! server name, attacked with raw bytes. Each backend here is a bare TCP listener that
//! records every byte it gets, so the test sees exactly what was forwarded.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP endpoint that answers its name once it has read something, and keeps what
/// each connection sent.
struct Recorder {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let record = got.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let at = {
                        let mut all = record.lock().unwrap();
                        all.push(Vec::new());
                        all.len() - 1
                    };
                    let mut buf = [0u8; 8192];
                    let mut answered = false;
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap()[at].extend_from_slice(&buf[..n]);
                        if !answered {
                            answered = true;
                            let _ = stream.write_all(name.as_bytes()).await;
                        }
                    }
                });
            }
        });
        Self { addr, got }
    }

    fn connections(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }
}

/// The first flight of a real TLS client for `name` (an IP address sends no name).
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    client.write_tls(&mut out).unwrap();
    out
}

/// Sends `bytes`, then reads until the other side closes: what came back (empty: the
/// connection was closed without an answer).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Vec::new();
    };
    let _ = stream.write_all(bytes).await;
    let mut back = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => back.extend_from_slice(&buf[..n]),
            _ => return back,
        }
        // A recorder answers its name and keeps the connection: that is enough.
        if back.len() >= 3 && !back.starts_with(b"HTTP") {
            return back;
        }
    }
}

/// `portcullis check` on the manifests, with Gateway addresses as the server has them.
fn check(dir: &TempDir, range: &str) -> String {
    let path = dir.path().to_str().unwrap();
    let args = ["check", "-f", path, "--gateway-addresses", range];
    run_with_stdin(&args, "").1
}

fn range(test: u8) -> (String, IpAddr) {
    let second = 100 + std::process::id() % 100;
    let ip = format!("127.{second}.{}.10", 60 + test).parse().unwrap();
    (format!("127.{second}.{}.0/24", 60 + test), ip)
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: portcullis.dev/gateway-controller}\n";

/// A Gateway at `ip` with a passthrough listener at 8443 and an HTTP one at 8080;
/// TLSRoutes by exact name, by wildcard, and an HTTPRoute for the same name.
fn objects(ip: IpAddr, exact: &Recorder, wild: &Recorder, web: &Backend, extra: &str) -> String {
    format!(
        "{CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: apps}}
spec:
  gatewayClassName: portcullis
  addresses: [{{type: IPAddress, value: \"{ip}\"}}]
  listeners:
  - {{name: tls, port: 8443, protocol: TLS, hostname: \"*.example.com\", tls: {{mode: Passthrough}}}}
  - {{name: web, port: 8080, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: exact, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [abc.example.com]
  rules: [{{backendRefs: [{{name: exact, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: wild, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [\"*.com\"]
  rules: [{{backendRefs: [{{name: wild, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [abc.example.com]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
{}{}{}{extra}",
        service_yaml("exact", &[exact.addr]),
        service_yaml("wild", &[wild.addr]),
        service_yaml("web", &[web.addr]),
    )
}

#[tokio::test]
async fn tls_is_passed_through_by_server_name_and_nothing_else_is() {
    let exact = Recorder::start("exact").await;
    let wild = Recorder::start("wild").await;
    let web = Backend::start("web").await;
    let (range, ip) = range(1);
    let dir = TempDir::new("tls-route");
    dir.write("all.yaml", &objects(ip, &exact, &wild, &web, ""));
    let _p = Portcullis::start(dir.path(), &["--gateway-addresses", &range]);
    let tls = SocketAddr::new(ip, 8443);
    let http = SocketAddr::new(ip, 8080);
    let hello = client_hello("abc.example.com");
    eventually("the passthrough socket serves", || async {
        exchange(tls, &hello).await == b"exact"
    })
    .await;

    // Every byte goes through as sent, the ClientHello included.
    let mut sent = client_hello("abc.example.com");
    sent.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
    let before = exact.connections().len();
    assert_eq!(exchange(tls, &sent).await, b"exact");
    eventually("the backend got every byte", || async {
        exact.connections().get(before).is_some_and(|c| *c == sent)
    })
    .await;
    // The exact name first, then the wildcard the route and listener share.
    assert_eq!(
        exchange(tls, &client_hello("ABC.example.com")).await,
        b"exact"
    );
    for name in ["other.example.com", "x.y.example.com"] {
        assert_eq!(exchange(tls, &client_hello(name)).await, b"wild", "{name}");
    }
    let (exact_seen, wild_seen) = (exact.connections().len(), wild.connections().len());
    // No name, a name no route takes (outside the listener's hostname), plain HTTP,
    // bytes that are not TLS: closed, and no endpoint is asked.
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("no server name", client_hello("192.0.2.1")),
        ("outside the listener", client_hello("abc.example.org")),
        ("the wildcard's own suffix", client_hello("example.com")),
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: abc.example.com\r\n\r\n".to_vec(),
        ),
        ("not TLS", b"\x16\x03\x01\x00\x02\xff\xff".to_vec()),
        (
            "SSLv2",
            b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10".to_vec(),
        ),
    ];
    for (what, bytes) in &refused {
        assert_eq!(exchange(tls, bytes).await, b"", "{what}: closed unanswered");
    }
    // The HTTPRoute for the same name is served on the HTTP listener only, and a
    // ClientHello sent there never reaches a TLSRoute's endpoint.
    let (status, backend) = {
        let r = raw_exchange(
            http,
            b"GET / HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n",
        )
        .await;
        (
            r.status,
            r.backend()
                .and_then(|b| b["backend"].as_str().map(str::to_owned)),
        )
    };
    assert_eq!((status, backend.as_deref()), (200, Some("web")));
    let answer = exchange(http, &client_hello("abc.example.com")).await;
    assert!(!answer.starts_with(b"exact") && !answer.starts_with(b"wild"));
    assert_eq!(
        exact.connections().len(),
        exact_seen,
        "no endpoint was asked"
    );
    assert_eq!(wild.connections().len(), wild_seen, "no endpoint was asked");
}

/// What an unauthenticated client can make the process hold is bounded: a ClientHello
/// larger than 16 KiB is cut off, one that never ends is dropped at the handshake
/// timeout; neither reaches an endpoint.
#[tokio::test]
async fn a_client_hello_is_bounded_in_size_and_time() {
    let exact = Recorder::start("exact").await;
    let wild = Recorder::start("wild").await;
    let web = Backend::start("web").await;
    let (range, ip) = range(2);
    let dir = TempDir::new("tls-route-bounds");
    dir.write("all.yaml", &objects(ip, &exact, &wild, &web, ""));
    let _p = Portcullis::start(dir.path(), &["--gateway-addresses", &range]);
    let tls = SocketAddr::new(ip, 8443);
    let hello = client_hello("abc.example.com");
    eventually("the passthrough socket serves", || async {
        exchange(tls, &hello).await == b"exact"
    })
    .await;
    let seen = exact.connections().len() + wild.connections().len();
    // A ClientHello that claims 64 KiB, sent record after record.
    let mut endless = Vec::new();
    for i in 0..4 {
        endless.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00]);
        let start = endless.len();
        endless.resize(start + 0x4000, 0);
        if i == 0 {
            endless[start..start + 4].copy_from_slice(&[0x01, 0x00, 0xff, 0xf0]);
        }
    }
    assert_eq!(exchange(tls, &endless).await, b"", "cut off");
    // Half a ClientHello, then silence: closed by the handshake timeout (10 s).
    let mut stream = TcpStream::connect(tls).await.unwrap();
    stream.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not answered: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(exact.connections().len() + wild.connections().len(), seen);
}

/// An AuthRule cannot see inside TLS passed through: one that names a TLSRoute, or
/// the Gateway listener it comes through, closes its connections (fail closed), and
/// `portcullis check` says why and what to do instead.
#[tokio::test]
async fn an_auth_rule_on_a_tls_route_closes_it_and_says_why() {
    let exact = Recorder::start("exact").await;
    let wild = Recorder::start("wild").await;
    let web = Backend::start("web").await;
    let (range, ip) = range(3);
    let rule = |targets: &str| {
        format!(
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: users, namespace: apps}}\nspec:\n  targetRefs: [{targets}]\n  oidc: {{issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {{name: idp}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: apps}}\nstringData: {{client-secret: s}}\n"
        )
    };
    let on_route = rule("{group: gateway.networking.k8s.io, kind: TLSRoute, name: exact}");
    let dir = TempDir::new("tls-route-guarded");
    dir.write("all.yaml", &objects(ip, &exact, &wild, &web, &on_route));
    let out = check(&dir, &range);
    assert!(
        out.contains("TLSRoute apps/exact passes TLS through")
            && out.contains("an HTTPS listener with an HTTPRoute"),
        "{out}"
    );
    let _p = Portcullis::start(dir.path(), &["--gateway-addresses", &range]);
    let tls = SocketAddr::new(ip, 8443);
    eventually("the passthrough socket serves", || async {
        exchange(tls, &client_hello("other.example.com")).await == b"wild"
    })
    .await;
    assert_eq!(
        exchange(tls, &client_hello("abc.example.com")).await,
        b"",
        "closed"
    );
    assert!(
        exact.connections().is_empty(),
        "the guarded route's endpoint is never asked"
    );
    // Guarding the listener closes every TLSRoute through it.
    let on_listener =
        rule("{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: tls}");
    dir.write("all.yaml", &objects(ip, &exact, &wild, &web, &on_listener));
    eventually("the guarded listener closes", || async {
        exchange(tls, &client_hello("other.example.com"))
            .await
            .is_empty()
    })
    .await;
    let out = check(&dir, &range);
    assert!(
        out.contains("(GuardCannotApply)") && out.contains("an HTTPS listener with an HTTPRoute"),
        "{out}"
    );
    assert!(exact.connections().is_empty());
}
