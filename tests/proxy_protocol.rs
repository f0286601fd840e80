//! PROXY protocol on the listeners named in `--proxy-protocol`, over raw sockets: the
//! header's source is the client everywhere (X-Forwarded-For, the access log,
//! inbound-cidrs, per-client caps), a connection without a valid header is closed
//! before anything is served, the header comes before TLS, and a listener without
//! the flag never believes one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;

use common::tls::*;
use common::*;

/// A v1 line: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`.
fn v1(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header, byte by byte: PROXY (or LOCAL) over TCP, the addresses, then `tlvs`.
fn v2(command: u8, source: &str, destination: &str, tlvs: &[u8]) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let mut payload = Vec::new();
    let family = match (s.ip(), d.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            payload.extend(a.octets());
            payload.extend(b.octets());
            0x11
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            payload.extend(a.octets());
            payload.extend(b.octets());
            0x21
        }
        _ => panic!("one family"),
    };
    payload.extend(s.port().to_be_bytes());
    payload.extend(d.port().to_be_bytes());
    payload.extend(tlvs);
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x20 | command);
    header.push(family);
    header.extend((payload.len() as u16).to_be_bytes());
    header.extend(payload);
    header
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The value of `name` in the metrics text, for the line whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An open route to the echo backend at app.example.com/, with the Ingress's
/// `annotations` and `tls` (spec lines).
async fn route(tag: &str, annotations: &str, tls: &str) -> (Backend, TempDir) {
    let backend = Backend::start("app").await;
    let dir = TempDir::new(tag);
    let annotations = match annotations {
        "" => String::new(),
        some => format!("  annotations:\n{some}"),
    };
    let ingress = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: apps\n{annotations}spec:\n  ingressClassName: portcullis\n{tls}  rules:\n  - host: app.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"
    );
    dir.write(
        "all.yaml",
        &format!("{ingress}{}", service_yaml("svc", &[backend.addr])),
    );
    (backend, dir)
}

async fn served(addr: SocketAddr) {
    let request = joined(&[&v1("192.0.2.1:1", "192.0.2.2:80"), &get("/", "")]);
    eventually("the route is served", || async {
        raw_exchange(addr, &request).await.backend().is_some()
    })
    .await;
}

/// Each header form names the client the backend and the access log see; what the
/// client itself claims in X-Forwarded-For goes, since it is no trusted proxy.
#[tokio::test]
async fn v1_and_v2_headers_name_the_client_everywhere() {
    let (_backend, dir) = route("pp-forms", "", "").await;
    let p = Portcullis::start(dir.path(), &["--proxy-protocol", "http"]);
    served(p.http).await;
    let aws_tlv = [0xEA, 0x00, 0x17, 0x01]
        .into_iter()
        .chain(*b"vpce-08d2bf15fac5001c9")
        .collect::<Vec<u8>>();
    let cases: [(&str, Vec<u8>, &str, &str); 6] = [
        (
            "v1 TCP4",
            v1("203.0.113.7:5123", "198.51.100.1:443"),
            "203.0.113.7",
            "443",
        ),
        (
            "v1 TCP6",
            v1("[2001:db8::7]:5124", "[2001:db8::1]:8443"),
            "2001:db8::7",
            "8443",
        ),
        (
            "v2 IPv4",
            v2(1, "203.0.113.8:5125", "198.51.100.1:443", &[]),
            "203.0.113.8",
            "443",
        ),
        (
            "v2 IPv4 with AWS's endpoint TLV",
            v2(1, "203.0.113.9:5126", "198.51.100.1:80", &aws_tlv),
            "203.0.113.9",
            "80",
        ),
        (
            "v2 IPv6",
            v2(1, "[2001:db8::9]:5127", "[2001:db8::1]:443", &[]),
            "2001:db8::9",
            "443",
        ),
        (
            "v2 IPv4-mapped IPv6",
            v2(1, "[::ffff:203.0.113.12]:5129", "[2001:db8::1]:443", &[]),
            "203.0.113.12",
            "443",
        ),
    ];
    for (i, (what, header, client, port)) in cases.into_iter().enumerate() {
        let path = format!("/form-{i}");
        let forged = "X-Forwarded-For: 10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\n";
        let r = raw_exchange(p.http, &joined(&[&header, &get(&path, forged)])).await;
        let seen = r.backend().unwrap_or_else(|| panic!("{what}: {}", r.head));
        assert_eq!(seen["headers"]["x-forwarded-for"], client, "{what}");
        assert_eq!(seen["headers"]["x-real-ip"], client, "{what}");
        assert_eq!(seen["headers"]["x-forwarded-port"], port, "{what}");
        let line = p.log_line(|l| l.contains(&format!("{path} "))).await;
        let client_port = &alb_record(&line)["client:port"];
        assert!(client_port.contains(client), "{what}: {client_port}");
        assert!(
            line.contains(&format!(":{port}{path} ")),
            "{what}: the request line names the load balancer's port: {line}"
        );
    }
    // LOCAL (the load balancer's health check) and UNKNOWN: the socket's peer stands.
    for (what, header) in [
        ("v2 LOCAL", v2(0, "203.0.113.10:1", "198.51.100.1:443", &[])),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec()),
    ] {
        let r = raw_exchange(p.http, &joined(&[&header, &get("/local", "")])).await;
        let seen = r.backend().unwrap_or_else(|| panic!("{what}: {}", r.head));
        assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1", "{what}");
    }
    // The header and the request in separate writes, the header itself split.
    let header = v2(1, "203.0.113.11:5128", "198.51.100.1:443", &[]);
    let mut s = TcpStream::connect(p.http).await.unwrap();
    for part in [&header[..5], &header[5..20], &header[20..]] {
        s.write_all(part).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.write_all(&get("/split", "")).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    assert!(
        out.contains("\"x-forwarded-for\":\"203.0.113.11\""),
        "{out}"
    );
}

/// The header's address is the peer that --trusted-proxy is asked about: the socket's
/// peer (the load balancer) being trusted lends nothing to the client's headers.
#[tokio::test]
async fn trusted_proxies_are_judged_by_the_proxy_address() {
    let (_backend, dir) = route("pp-trust", "", "").await;
    let p = Portcullis::start(
        dir.path(),
        &[
            "--proxy-protocol",
            "http",
            "--trusted-proxy",
            "127.0.0.1",
            "--trusted-proxy",
            "198.51.100.0/24",
        ],
    );
    served(p.http).await;
    let xff = "X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n";
    let r = raw_exchange(
        p.http,
        &joined(&[
            &v1("203.0.113.7:1", "192.0.2.2:80"),
            &get("/untrusted", xff),
        ]),
    )
    .await;
    let seen = r.backend().unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    let r = raw_exchange(
        p.http,
        &joined(&[&v1("198.51.100.9:1", "192.0.2.2:80"), &get("/trusted", xff)]),
    )
    .await;
    let seen = r.backend().unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "10.1.2.3, 198.51.100.9");
    // A proxy that adds a line of its own instead of appending: every line is kept,
    // in order, as the client address Portcullis decided on was read from them.
    let lines = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.1.2.3\r\n";
    let r = raw_exchange(
        p.http,
        &joined(&[&v1("198.51.100.9:1", "192.0.2.2:80"), &get("/lines", lines)]),
    )
    .await;
    let seen = r.backend().unwrap();
    let sent: Vec<&str> = seen["headerList"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-forwarded-for")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["6.6.6.6, 10.1.2.3, 198.51.100.9"]);
}

/// `inbound-cidrs` admits and refuses by the header's address, not the socket's.
#[tokio::test]
async fn inbound_cidrs_read_the_proxy_address() {
    let cidrs = "    alb.ingress.kubernetes.io/scheme: internet-facing\n    alb.ingress.kubernetes.io/inbound-cidrs: 203.0.113.0/24, 2001:db8:1::/48\n";
    let (_backend, dir) = route("pp-cidrs", cidrs, "").await;
    let p = Portcullis::start(dir.path(), &["--proxy-protocol", "http"]);
    for (header, admitted) in [
        (v1("203.0.113.7:1", "192.0.2.2:80"), true),
        (v2(1, "[2001:db8:1::5]:1", "[2001:db8::1]:80", &[]), true),
        (v1("198.51.100.7:1", "192.0.2.2:80"), false),
        (v2(1, "[2001:db8:2::5]:1", "[2001:db8::1]:80", &[]), false),
        // LOCAL: the socket's peer, loopback, is not listed.
        (v2(0, "203.0.113.7:1", "192.0.2.2:80", &[]), false),
    ] {
        let request = joined(&[&header, &get("/", "X-Forwarded-For: 203.0.113.1\r\n")]);
        eventually("the allow-list decides", || async {
            let r = raw_exchange(p.http, &request).await;
            match admitted {
                true => r.backend().is_some(),
                false => r.status == 403 && r.body.contains("SourceNotAllowed"),
            }
        })
        .await;
    }
}

/// Connections that do not start with a whole, valid header are closed before any
/// HTTP: no answer, no access-log line, nothing at the backend; each is counted by
/// reason and logged.
#[tokio::test]
async fn connections_without_a_valid_header_are_closed_unserved() {
    let (_backend, dir) = route("pp-refused", "", "").await;
    let p = Portcullis::start(
        dir.path(),
        &["--proxy-protocol", "http", "--header-read-timeout", "1"],
    );
    served(p.http).await;
    let mut bad_version = v2(1, "203.0.113.7:1", "192.0.2.2:80", &[]);
    bad_version[12] = 0x31;
    let mut oversized = v2(1, "203.0.113.7:1", "192.0.2.2:80", &[]);
    oversized[14..16].copy_from_slice(&4000u16.to_be_bytes());
    let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(93));
    assert_eq!(long.len(), 109);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("no header", get("/case-plain", ""), "missing"),
        (
            "lower case",
            joined(&[
                b"proxy TCP4 203.0.113.7 192.0.2.2 1 80\r\n",
                &get("/case-lower", ""),
            ]),
            "missing",
        ),
        (
            "TLS first",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
            "missing",
        ),
        (
            "unknown family",
            joined(&[
                b"PROXY TCP5 203.0.113.7 192.0.2.2 1 80\r\n",
                &get("/case-family", ""),
            ]),
            "malformed",
        ),
        (
            "v1 cut short",
            joined(&[b"PROXY TCP4 203.0.113.7\r\n", &get("/case-short", "")]),
            "malformed",
        ),
        (
            "v1 bare LF",
            joined(&[
                b"PROXY TCP4 203.0.113.7 192.0.2.2 1 80\n",
                &get("/case-lf", ""),
            ]),
            "malformed",
        ),
        (
            "v1 mixed families",
            joined(&[
                b"PROXY TCP4 203.0.113.7 2001:db8::1 1 80\r\n",
                &get("/case-mixed", ""),
            ]),
            "malformed",
        ),
        (
            "v1 over 107 bytes",
            joined(&[long.as_bytes(), &get("/case-long", "")]),
            "too_large",
        ),
        (
            "v2 bad version",
            joined(&[&bad_version, &get("/case-version", "")]),
            "malformed",
        ),
        (
            "v2 oversized",
            joined(&[&oversized, &get("/case-oversized", "")]),
            "too_large",
        ),
    ];
    for (what, bytes, _) in &cases {
        let started = Instant::now();
        let r = raw_exchange(p.http, bytes).await;
        assert_eq!((r.status, r.head.as_str()), (0, ""), "{what}: answered");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{what}: closed at once"
        );
    }
    // Truncated: the peer stops part way (and closes), or stalls until the timeout.
    let header = v2(1, "203.0.113.7:1", "192.0.2.2:80", &[]);
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(&header[..20]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(out.is_empty());
    let started = Instant::now();
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let waited = started.elapsed();
    assert!(out.is_empty());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "a half header holds its place for the header-read timeout only: {waited:?}"
    );

    let metrics = p.metrics().await;
    let count = |reason: &str| {
        metric(
            &metrics,
            "portcullis_proxy_protocol_refused_total",
            &format!("reason=\"{reason}\""),
        )
    };
    for reason in ["missing", "malformed", "too_large"] {
        let expected = cases.iter().filter(|c| c.2 == reason).count() as u64;
        assert_eq!(count(reason), Some(expected), "{reason}: {metrics}");
    }
    assert_eq!(count("truncated"), Some(1));
    assert_eq!(count("timeout"), Some(1));
    assert!(
        p.access_log
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("/case-")),
        "nothing was served"
    );
    let logged = p.diagnostics.lock().unwrap().join("\n");
    assert!(logged.contains("ProxyProtocolHeaderRefused"), "{logged}");
}

/// On a TLS listener the header comes before the ClientHello; the handshake and the
/// request then go on as usual.
#[tokio::test]
async fn tls_listeners_read_the_header_before_the_handshake() {
    let tls = "  tls:\n  - {hosts: [app.example.com], secretName: app-tls}\n";
    let (_backend, dir) = route("pp-tls", "", tls).await;
    let cert = cert(&["app.example.com"]);
    dir.write("tls.yaml", &tls_secret("app-tls", &cert));
    let p = Portcullis::start(
        dir.path(),
        &["--https", "127.0.0.1:0", "--proxy-protocol", "https"],
    );
    let https = p.https.unwrap();
    let connector = tls_connector(&cert);
    let exchange = |header: Vec<u8>, path: &'static str| {
        let connector = connector.clone();
        async move {
            let mut tcp = TcpStream::connect(https).await.unwrap();
            tcp.write_all(&header).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("app.example.com").unwrap();
            let mut tls = connector.connect(name, tcp).await.ok()?;
            tls.write_all(&get(path, "")).await.unwrap();
            let mut out = String::new();
            let _ = tls.read_to_string(&mut out).await;
            Some(out)
        }
    };
    let first = v2(1, "203.0.113.7:5000", "198.51.100.1:443", &[]);
    eventually("the route is served over TLS", || async {
        let out = exchange(first.clone(), "/tls").await.unwrap_or_default();
        out.contains("\"backend\":\"app\"")
    })
    .await;
    let out = exchange(first.clone(), "/tls").await.unwrap();
    assert!(out.contains("\"x-forwarded-for\":\"203.0.113.7\""), "{out}");
    assert!(out.contains("\"x-forwarded-proto\":\"https\""), "{out}");
    let out = exchange(v1("[2001:db8::7]:5000", "[2001:db8::1]:443"), "/tls-v1")
        .await
        .unwrap();
    assert!(out.contains("\"x-forwarded-for\":\"2001:db8::7\""), "{out}");
    let line = p.log_line(|l| l.contains("/tls-v1 ")).await;
    assert!(line.starts_with("https "), "{line}");
    // Without the header the ClientHello itself is refused: no handshake at all.
    let tcp = TcpStream::connect(https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("app.example.com").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
    eventually("the refusal is counted", || async {
        metric(
            &p.metrics().await,
            "portcullis_proxy_protocol_refused_total",
            "listener=\"https\",reason=\"missing\"",
        ) == Some(1)
    })
    .await;
}

fn tls_connector(trusted: &TestCert) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trusted.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A listener without --proxy-protocol reads a PROXY line as a malformed request
/// (400) and never takes its address.
#[tokio::test]
async fn a_listener_without_the_flag_never_believes_a_proxy_line() {
    let (_backend, dir) = route("pp-off", "", "").await;
    let p = Portcullis::start(dir.path(), &[]);
    eventually("the route is served", || async {
        raw_exchange(p.http, &get("/", ""))
            .await
            .backend()
            .is_some()
    })
    .await;
    for header in [
        v1("203.0.113.7:1", "192.0.2.2:80"),
        v2(1, "203.0.113.7:1", "192.0.2.2:80", &[]),
    ] {
        let r = raw_exchange(p.http, &joined(&[&header, &get("/", "")])).await;
        assert_eq!(r.status, 400, "{}", r.head);
        assert!(r.backend().is_none());
    }
}

/// Per-client connection caps count the header's address: the load balancer's own
/// address, shared by every client, caps no one.
#[tokio::test]
async fn per_client_caps_count_the_proxy_address() {
    let (_backend, dir) = route("pp-caps", "", "").await;
    let p = Portcullis::start(
        dir.path(),
        &[
            "--proxy-protocol",
            "http",
            "--max-connections-per-client",
            "1",
        ],
    );
    served(p.http).await;
    // Admitted, and busy (no request answered yet): it cannot be closed for room.
    let mut first = TcpStream::connect(p.http).await.unwrap();
    first
        .write_all(&v1("203.0.113.7:1", "192.0.2.2:80"))
        .await
        .unwrap();
    eventually("the first connection is admitted", || async {
        metric(
            &p.metrics().await,
            "portcullis_connections_open",
            "listener=\"http\"",
        ) == Some(1)
    })
    .await;
    let again = raw_exchange(
        p.http,
        &joined(&[&v1("203.0.113.7:2", "192.0.2.2:80"), &get("/", "")]),
    )
    .await;
    assert_eq!(
        again.status, 0,
        "the same client is at its cap: {}",
        again.head
    );
    let mapped = v2(1, "[::ffff:203.0.113.7]:3", "[2001:db8::1]:80", &[]);
    let again = raw_exchange(p.http, &joined(&[&mapped, &get("/", "")])).await;
    assert_eq!(
        again.status, 0,
        "the same client written as IPv4-mapped IPv6: {}",
        again.head
    );
    let other = raw_exchange(
        p.http,
        &joined(&[&v1("203.0.113.8:1", "192.0.2.2:80"), &get("/", "")]),
    )
    .await;
    assert!(
        other.backend().is_some(),
        "another client, the same load balancer"
    );
    first.write_all(&get("/", "")).await.unwrap();
    let mut out = String::new();
    let _ = first.read_to_string(&mut out).await;
    assert!(out.contains("\"x-forwarded-for\":\"203.0.113.7\""), "{out}");
}

/// `--https-offloaded`: TLS ended at the load balancer counts as HTTPS (the backend
/// hears https and the load balancer's port), and guarded routes are not refused for
/// want of HTTPS off loopback.
#[tokio::test]
async fn the_offloaded_listener_counts_as_https() {
    let (_backend, dir) = route("pp-offload", "", "").await;
    let host = crate::common::cluster::host_address();
    let rule = "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: guard, namespace: apps}\nspec:\n  targetRefs: [{name: admin}]\n  oidc: {issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {name: idp}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n";
    dir.write(
        "guarded.yaml",
        &format!(
            "{}{rule}",
            ingress_yaml("admin", &[("app.example.com", "/admin", "svc")], "")
        ),
    );
    let (http, offloaded) = (format!("{host}:0"), format!("{host}:0"));
    let args: Vec<&std::ffi::OsStr> = [
        "serve",
        "-f",
        dir.path().to_str().unwrap(),
        "--http",
        &http,
        "--https-offloaded",
        &offloaded,
        "--proxy-protocol",
        "https-offloaded",
        "--admin",
        "127.0.0.1:0",
    ]
    .map(std::ffi::OsStr::new)
    .to_vec();
    let p = Portcullis::launch(&args);
    let offloaded = p.https_offloaded.unwrap();
    let header = v2(1, "203.0.113.7:5000", "198.51.100.1:443", &[]);
    eventually("the route is served", || async {
        raw_exchange(offloaded, &joined(&[&header, &get("/", "")]))
            .await
            .backend()
            .is_some()
    })
    .await;
    let r = raw_exchange(offloaded, &joined(&[&header, &get("/offloaded", "")])).await;
    let seen = r.backend().unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-port"], "443");
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7");
    let line = p.log_line(|l| l.contains("/offloaded ")).await;
    assert!(
        line.starts_with("https ") && line.contains("https://app.example.com:443/offloaded"),
        "{line}"
    );
    // The guarded route: refused for want of HTTPS on --http, not on the offloaded one.
    let plain = raw_exchange(p.http, &get("/admin", "")).await;
    assert!(plain.body.contains("AuthRequiresHttps"), "{}", plain.body);
    let r = raw_exchange(offloaded, &joined(&[&header, &get("/admin", "")])).await;
    assert_eq!(r.status, 401, "the login is asked for: {}", r.body);
    assert!(r.body.contains("AuthRequired"), "{}", r.body);
    assert!(r.backend().is_none(), "no session, no backend");
}

/// Connections waiting for their header are capped at --max-connections: one more is
/// closed at once, and the waiting one, once its header comes, is served.
#[tokio::test]
async fn connections_waiting_for_a_header_are_capped() {
    let (_backend, dir) = route("pp-waiting", "", "").await;
    let p = Portcullis::start(
        dir.path(),
        &["--proxy-protocol", "http", "--max-connections", "1"],
    );
    served(p.http).await;
    let header = v1("203.0.113.7:1", "192.0.2.2:80");
    let mut waiting = TcpStream::connect(p.http).await.unwrap();
    waiting.write_all(&header[..10]).await.unwrap();
    eventually("one more is refused while one waits", || async {
        raw_exchange(p.http, &joined(&[&header, &get("/", "")]))
            .await
            .status
            == 0
    })
    .await;
    let refused = metric(
        &p.metrics().await,
        "portcullis_proxy_protocol_refused_total",
        "reason=\"busy\"",
    );
    assert!(refused >= Some(1), "{refused:?}");
    waiting
        .write_all(&joined(&[&header[10..], &get("/", "")]))
        .await
        .unwrap();
    let mut out = String::new();
    let _ = waiting.read_to_string(&mut out).await;
    assert!(out.contains("\"x-forwarded-for\":\"203.0.113.7\""), "{out}");
}
