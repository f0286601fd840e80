//! Mutual TLS as ALB does it, over raw TLS sockets to a real Portcullis: verify mode
//! refuses bad, expired, revoked, unknown and absent certificates in the handshake;
//! passthrough passes the chain on; the backend gets ALB's X-Amzn-Mtls-* headers and
//! never a client's; a connection made for one host's setting serves no host with
//! another (421), whatever the spelling of the host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;
use common::tls::*;
use common::*;

/// A client certificate and its key.
pub(crate) struct Client {
    der: CertificateDer<'static>,
    key_pem: String,
}

/// A CA that signs client certificates.
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub(crate) fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

pub(crate) fn client(ca: &Ca, cn: &str, serial: u8, expired: bool) -> Client {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![format!("{cn}.clients.example")]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example, Inc");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(SerialNumber::from_slice(&[0x7a, serial]));
    if expired {
        params.not_before = date_time_ymd(2001, 1, 1);
        params.not_after = date_time_ymd(2002, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Client {
        der: cert.der().clone(),
        key_pem: key.serialize_pem(),
    }
}

/// A CRL of `ca` revoking the certificate with `serial`.
fn crl(ca: &Ca, serial: u8) -> String {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2020, 1, 1),
        next_update: date_time_ymd(2100, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(&[0x7a, serial]),
            revocation_time: date_time_ymd(2020, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .unwrap()
    .pem()
    .unwrap()
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A trust store Secret (`ca.crt`, and `ca.crl` when given).
fn trust_store_secret(name: &str, ca_pem: &str, crl_pem: Option<&str>) -> String {
    let mut yaml = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: apps}}\nstringData:\n  ca.crt: |\n{}\n",
        indent(ca_pem)
    );
    if let Some(crl) = crl_pem {
        yaml.push_str(&format!("  ca.crl: |\n{}\n", indent(crl)));
    }
    yaml
}

/// An Ingress for one host with `annotations` (YAML lines under `annotations:`),
/// served with the default certificate.
fn ingress(name: &str, host: &str, annotations: &[&str]) -> String {
    let plain = ingress_yaml(
        name,
        &[(host, "/", "svc")],
        "  tls:\n  - {secretName: site}\n",
    );
    let lines: String = annotations.iter().map(|a| format!("    {a}\n")).collect();
    plain.replacen(
        &format!("metadata: {{name: {name}, namespace: apps}}"),
        &format!("metadata:\n  name: {name}\n  namespace: apps\n  annotations:\n{lines}"),
        1,
    )
}

const STRICT: &str =
    r#"portcullis.dev/mutual-authentication: '{"mode":"verify","trustStore":"client-ca"}'"#;
const PASS: &str = r#"portcullis.dev/mutual-authentication: '{"mode":"passthrough"}'"#;

/// An EKS Ingress as written for AWS Load Balancer Controller, with verify mode that
/// ignores client certificate expiry.
const EKS_LENIENT: &[&str] = &[
    "alb.ingress.kubernetes.io/scheme: internet-facing",
    "alb.ingress.kubernetes.io/target-type: ip",
    r#"alb.ingress.kubernetes.io/listen-ports: '[{"HTTPS":443}]'"#,
    r#"alb.ingress.kubernetes.io/mutual-authentication: '[{"port":443,"mode":"verify","trustStore":"client-ca","ignoreClientCertificateExpiry":true}]'"#,
];

/// How the test client connects: the SNI it sends (none: by address), and the
/// certificate it presents.
pub(crate) struct Dial<'a> {
    pub(crate) sni: Option<&'a str>,
    pub(crate) cert: Option<&'a Client>,
    pub(crate) alpn: &'a [u8],
}

fn connector(site: &TestCert, dial: &Dial<'_>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(site.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match dial.cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![dial.alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub(crate) async fn tls_stream(
    addr: SocketAddr,
    site: &TestCert,
    dial: &Dial<'_>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = match dial.sni {
        Some(sni) => ServerName::try_from(sni.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector(site, dial).connect(name, tcp).await
}

/// Sends `request` exactly as given over TLS and reads the whole response; a refused
/// handshake reads as status 0.
pub(crate) async fn exchange(
    addr: SocketAddr,
    site: &TestCert,
    sni: Option<&str>,
    cert: Option<&Client>,
    request: &str,
) -> RawResponse {
    let dial = Dial {
        sni,
        cert,
        alpn: b"http/1.1",
    };
    let Ok(mut stream) = tls_stream(addr, site, &dial).await else {
        return parse_response(b"");
    };
    let _ = stream.write_all(request.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

/// The status of a GET over a connection made for `host` itself.
async fn status(s: &Setup, host: &str, cert: Option<&Client>) -> u16 {
    exchange(s.https, &s.site, Some(host), cert, &get(host, ""))
        .await
        .status
}

fn get(host: &str, extra: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

/// Every X-Amzn-Mtls-* header the backend received, as (name, value).
fn mtls_headers(resp: &RawResponse) -> Vec<(String, String)> {
    let backend = resp
        .backend()
        .unwrap_or_else(|| panic!("{}\n{}", resp.head, resp.body));
    backend["headerList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(k, _)| k.replace('_', "-").starts_with("x-amzn-mtls-"))
        .collect()
}

fn one<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    let found: Vec<_> = headers.iter().filter(|(k, _)| k == name).collect();
    assert_eq!(found.len(), 1, "{name} once: {headers:?}");
    &found[0].1
}

/// The PEM a URL-encoded header value holds, read back to DER.
fn decoded_pem(value: &str) -> Vec<CertificateDer<'static>> {
    let pem = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .unwrap();
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

struct Setup {
    _backend: Backend,
    _dir: TempDir,
    p: Portcullis,
    site: TestCert,
    https: SocketAddr,
}

/// The names the site certificate covers.
const HOSTS: [&str; 2] = ["*.example.com", "127.0.0.1"];

async fn setup(tag: &str, ca: &Ca, crl_pem: &str, extra: &str, flags: &[&str]) -> Setup {
    let backend = Backend::start("app").await;
    let dir = TempDir::new(tag);
    let site = cert(&HOSTS);
    let manifests = [
        service_yaml("svc", &[backend.addr]),
        tls_secret("site", &site),
        trust_store_secret("client-ca", &ca.pem, Some(crl_pem)),
        ingress("strict", "strict.example.com", &[STRICT]),
        ingress("lenient", "lenient.example.com", EKS_LENIENT),
        ingress("pass", "pass.example.com", &[PASS]),
        ingress("open", "open.example.com", &[]),
        extra.to_owned(),
    ];
    dir.write("all.yaml", &manifests.concat());
    let mut args = vec!["--https", "127.0.0.1:0"];
    args.extend(flags);
    let p = Portcullis::start(dir.path(), &args);
    let https = p.https.unwrap();
    let s = Setup {
        _backend: backend,
        _dir: dir,
        p,
        site,
        https,
    };
    eventually("the open host is served", || async {
        exchange(
            s.https,
            &s.site,
            Some("open.example.com"),
            None,
            &get("open.example.com", ""),
        )
        .await
        .status
            == 200
    })
    .await;
    s
}

#[tokio::test]
async fn verify_mode_refuses_in_the_handshake_every_certificate_the_trust_store_does_not_vouch_for()
{
    let (trusted, stranger) = (ca("Client CA"), ca("Stranger CA"));
    let good = client(&trusted, "alice", 1, false);
    let expired = client(&trusted, "bob", 2, true);
    let revoked = client(&trusted, "mallory", 3, false);
    let unknown = client(&stranger, "eve", 4, false);
    let s = setup("mtls-verify", &trusted, &crl(&trusted, 3), "", &[]).await;
    assert_eq!(status(&s, "strict.example.com", Some(&good)).await, 200);
    assert_eq!(
        status(&s, "strict.example.com", Some(&expired)).await,
        0,
        "expired"
    );
    assert_eq!(
        status(&s, "strict.example.com", Some(&revoked)).await,
        0,
        "revoked by ca.crl"
    );
    assert_eq!(
        status(&s, "strict.example.com", Some(&unknown)).await,
        0,
        "another CA"
    );
    assert_eq!(
        status(&s, "strict.example.com", None).await,
        0,
        "no certificate"
    );

    // The EKS Ingress's ignoreClientCertificateExpiry: expiry alone is forgiven.
    assert_eq!(status(&s, "lenient.example.com", Some(&good)).await, 200);
    assert_eq!(
        status(&s, "lenient.example.com", Some(&expired)).await,
        200,
        "expiry ignored"
    );
    assert_eq!(
        status(&s, "lenient.example.com", Some(&revoked)).await,
        0,
        "revocation is not"
    );
    assert_eq!(status(&s, "lenient.example.com", Some(&unknown)).await, 0);
    assert_eq!(status(&s, "lenient.example.com", None).await, 0);

    // A host without mutual TLS asks for nothing.
    assert_eq!(status(&s, "open.example.com", None).await, 200);

    let line =
        s.p.log_line(|l| l.contains("strict.example.com") && l.contains(" 200 "))
            .await;
    assert!(!line.is_empty());
}

#[tokio::test]
async fn the_backend_gets_albs_headers_for_the_certificate_and_never_a_clients() {
    let trusted = ca("Client CA");
    let good = client(&trusted, "alice", 1, false);
    let s = setup("mtls-headers", &trusted, &crl(&trusted, 9), "", &[]).await;
    // Every spelling of every header a client could try to forge.
    let forged = "X-Amzn-Mtls-Clientcert-Subject: CN=admin\r\nx-amzn-mtls-clientcert-leaf: forged\r\nX-AMZN-MTLS-CLIENTCERT: forged\r\nx_amzn_mtls_clientcert_serial_number: 01\r\nX-Amzn-Mtls-Clientcert-Issuer: CN=Client CA\r\nX-Amzn-Mtls-Anything: x\r\n";

    let resp = exchange(
        s.https,
        &s.site,
        Some("strict.example.com"),
        Some(&good),
        &get("strict.example.com", forged),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    let headers = mtls_headers(&resp);
    assert_eq!(
        headers.len(),
        5,
        "ALB's five, nothing of the client's: {headers:?}"
    );
    assert_eq!(
        one(&headers, "x-amzn-mtls-clientcert-serial-number"),
        "7A01"
    );
    assert_eq!(
        one(&headers, "x-amzn-mtls-clientcert-subject"),
        "CN=alice,O=Example\\, Inc"
    );
    assert_eq!(
        one(&headers, "x-amzn-mtls-clientcert-issuer"),
        "CN=Client CA"
    );
    let validity = one(&headers, "x-amzn-mtls-clientcert-validity");
    assert!(
        validity.starts_with("NotBefore=")
            && validity.ends_with('Z')
            && validity.contains("Z;NotAfter="),
        "{validity}"
    );
    let leaf = one(&headers, "x-amzn-mtls-clientcert-leaf");
    assert!(
        leaf.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{leaf}"
    );
    assert_eq!(
        decoded_pem(leaf),
        std::slice::from_ref(&good.der),
        "the leaf, URL-encoded PEM"
    );

    // Passthrough: the chain, unverified, in one header; none of verify mode's.
    let resp = exchange(
        s.https,
        &s.site,
        Some("pass.example.com"),
        Some(&good),
        &get("pass.example.com", forged),
    )
    .await;
    let headers = mtls_headers(&resp);
    assert_eq!(headers.len(), 1, "{headers:?}");
    assert_eq!(
        decoded_pem(one(&headers, "x-amzn-mtls-clientcert")),
        std::slice::from_ref(&good.der)
    );
    // Passthrough takes any certificate, or none.
    let stranger = client(&ca("Stranger CA"), "eve", 4, true);
    let resp = exchange(
        s.https,
        &s.site,
        Some("pass.example.com"),
        Some(&stranger),
        &get("pass.example.com", ""),
    )
    .await;
    assert_eq!(
        decoded_pem(one(&mtls_headers(&resp), "x-amzn-mtls-clientcert")),
        std::slice::from_ref(&stranger.der)
    );
    let resp = exchange(
        s.https,
        &s.site,
        Some("pass.example.com"),
        None,
        &get("pass.example.com", forged),
    )
    .await;
    assert_eq!(mtls_headers(&resp), [], "no certificate, no header");

    // Hosts without mutual TLS, over TLS and plain HTTP: the client's are gone too.
    let resp = exchange(
        s.https,
        &s.site,
        Some("open.example.com"),
        None,
        &get("open.example.com", forged),
    )
    .await;
    assert_eq!(mtls_headers(&resp), []);
    let resp = raw_exchange(s.p.http, get("open.example.com", forged).as_bytes()).await;
    assert_eq!(mtls_headers(&resp), []);
}

#[tokio::test]
async fn a_connection_made_for_another_setting_serves_no_host_that_asks_for_certificates() {
    let trusted = ca("Client CA");
    let good = client(&trusted, "alice", 1, false);
    let s = setup("mtls-sni", &trusted, &crl(&trusted, 9), "", &[]).await;
    let https = s.https;
    // (SNI, certificate, host as the request names it): each must be refused with 421.
    let strict_spellings = [
        "strict.example.com",
        "STRICT.Example.COM",
        "strict.example.com.",
        "strict.example.com:443",
        "Strict.Example.Com.:443",
    ];
    for host in strict_spellings {
        for (sni, cert) in [
            (Some("open.example.com"), None),
            (Some("open.example.com"), Some(&good)),
            (None, Some(&good)),
            (Some("pass.example.com"), Some(&good)),
            (Some("lenient.example.com"), Some(&good)),
        ] {
            let resp = exchange(https, &s.site, sni, cert, &get(host, "")).await;
            assert_eq!(
                resp.status, 421,
                "SNI {sni:?} then Host {host}: {}",
                resp.head
            );
            assert!(resp.backend().is_none());
        }
        // The absolute form names the host in the request line instead.
        let request =
            format!("GET https://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = exchange(https, &s.site, Some("open.example.com"), None, &request).await;
        assert_eq!(resp.status, 421, "absolute form {host}");
    }
    // Passthrough hosts too: no certificate information may be made up elsewhere.
    for host in [
        "pass.example.com",
        "PASS.example.com.",
        "pass.example.com:443",
    ] {
        for sni in [Some("open.example.com"), None, Some("strict.example.com")] {
            let cert = if sni == Some("strict.example.com") {
                Some(&good)
            } else {
                None
            };
            let resp = exchange(https, &s.site, sni, cert, &get(host, "")).await;
            assert_eq!(resp.status, 421, "SNI {sni:?} then Host {host}");
        }
    }
    // A connection made with a certificate serves a host without mutual TLS only when
    // its setting is the same (off): the headers would describe another host's client.
    let resp = exchange(
        https,
        &s.site,
        Some("strict.example.com"),
        Some(&good),
        &get("open.example.com", ""),
    )
    .await;
    assert_eq!(resp.status, 421);
    // Its own host, in any spelling, is served.
    for host in strict_spellings {
        let resp = exchange(
            https,
            &s.site,
            Some("strict.example.com"),
            Some(&good),
            &get(host, ""),
        )
        .await;
        assert_eq!(resp.status, 200, "{host}");
    }
    let resp = exchange(
        https,
        &s.site,
        Some("STRICT.example.com"),
        Some(&good),
        &get("strict.example.com", ""),
    )
    .await;
    assert_eq!(resp.status, 200, "SNI in capitals");

    // h2: `:authority` of a verify host on a connection made for an open one.
    let dial = Dial {
        sni: Some("open.example.com"),
        cert: None,
        alpn: b"h2",
    };
    let stream = tls_stream(https, &s.site, &dial).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for authority in [
        "strict.example.com",
        "STRICT.EXAMPLE.COM.",
        "pass.example.com:443",
    ] {
        let req = http::Request::get(format!("https://{authority}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 421, ":authority {authority}");
    }
    let req = http::Request::get("https://open.example.com/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);

    // Plain HTTP to a host that asks for certificates is never served: it goes to HTTPS.
    let resp = raw_exchange(s.p.http, get("strict.example.com", "").as_bytes()).await;
    assert_eq!(resp.status, 308, "{}", resp.head);
    assert!(resp.backend().is_none());
    let location = format!("location: https://strict.example.com:{}/", https.port());
    assert!(
        resp.head.to_ascii_lowercase().contains(&location),
        "{}",
        resp.head
    );
    let line = s.p.log_line(|l| l.contains("MisdirectedRequest")).await;
    assert!(line.contains("421"), "{line}");
}

#[tokio::test]
async fn a_trust_store_that_cannot_be_used_closes_its_hosts_and_no_other() {
    let trusted = ca("Client CA");
    let good = client(&trusted, "alice", 1, false);
    let broken = [
        ingress(
            "missing",
            "missing.example.com",
            &[r#"portcullis.dev/mutual-authentication: '{"mode":"verify","trustStore":"nowhere"}'"#],
        ),
        ingress(
            "arn",
            "arn.example.com",
            &[
                "alb.ingress.kubernetes.io/scheme: internet-facing",
                r#"alb.ingress.kubernetes.io/mutual-authentication: '[{"port":443,"mode":"verify","trustStore":"arn:aws:elasticloadbalancing:eu-west-1:123456789012:truststore/ts/abc"}]'"#],
        ),
        ingress(
            "junk",
            "junk.example.com",
            &[r#"portcullis.dev/mutual-authentication: '{"mode":"verify","trustStore":"junk-ca"}'"#],
        ),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: junk-ca, namespace: apps}\nstringData:\n  ca.crt: not a certificate\n".to_owned(),
        // A default backend serves every host, those without mutual TLS too.
        ingress("catchall", "catchall.example.com", &[STRICT]).replacen(
            "spec:\n",
            "spec:\n  defaultBackend: {service: {name: svc, port: {number: 80}}}\n",
            1,
        ),
    ]
    .concat();
    let s = setup("mtls-broken", &trusted, &crl(&trusted, 9), &broken, &[]).await;
    for host in [
        "missing.example.com",
        "arn.example.com",
        "junk.example.com",
        "catchall.example.com",
    ] {
        let resp = exchange(s.https, &s.site, Some(host), Some(&good), &get(host, "")).await;
        assert_eq!(resp.status, 500, "{host}: {}", resp.head);
        assert!(resp.backend().is_none());
    }
    let resp = exchange(
        s.https,
        &s.site,
        Some("strict.example.com"),
        Some(&good),
        &get("strict.example.com", ""),
    )
    .await;
    assert_eq!(resp.status, 200, "other hosts are served");
    // The default backend of an Ingress with mutual TLS is never reached without a
    // certificate: not over a handshake without SNI, another host's, or plain HTTP.
    for (sni, host) in [
        (None, "nothing.example.org"),
        (Some("open.example.com"), "nothing.example.org"),
        (None, "catchall.example.com"),
    ] {
        let resp = exchange(s.https, &s.site, sni, None, &get(host, "")).await;
        assert!(resp.backend().is_none(), "{sni:?} {host}: {}", resp.head);
    }
    for host in ["nothing.example.org", "catchall.example.com", "anything"] {
        let resp = raw_exchange(s.p.http, get(host, "").as_bytes()).await;
        assert!(resp.backend().is_none(), "plain HTTP {host}: {}", resp.head);
    }

    let (_, report) = run_with_stdin(
        &["check", "-f", "-", "-o", "json"],
        &std::fs::read_to_string(s._dir.path().join("all.yaml")).unwrap(),
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let problems = report["problems"].as_array().unwrap();
    let about = |name: &str| {
        problems
            .iter()
            .find(|p| {
                p["name"] == name
                    && p["field"]
                        .as_str()
                        .is_some_and(|f| f.ends_with("mutual-authentication]"))
            })
            .unwrap_or_else(|| panic!("a problem for {name}: {problems:?}"))
    };
    let missing = about("missing");
    assert_eq!(missing["reason"], "InvalidTrustStore");
    assert_eq!(
        missing["field"],
        "metadata.annotations[portcullis.dev/mutual-authentication]"
    );
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("apps/nowhere"),
        "{missing}"
    );
    let arn = about("arn");
    assert_eq!(
        arn["field"],
        "metadata.annotations[alb.ingress.kubernetes.io/mutual-authentication]"
    );
    assert!(arn["message"].as_str().unwrap().contains("ARN"), "{arn}");
    assert!(arn["fix"].as_str().unwrap().contains("Secret"), "{arn}");
    let catchall = about("catchall");
    assert!(
        catchall["message"]
            .as_str()
            .unwrap()
            .contains("defaultBackend"),
        "{catchall}"
    );
    let junk = about("junk");
    assert!(
        junk["message"].as_str().unwrap().contains("no certificate"),
        "{junk}"
    );
}

#[tokio::test]
async fn the_listener_default_asks_every_host_without_its_own_setting() {
    let trusted = ca("Client CA");
    let good = client(&trusted, "alice", 1, false);
    let backend = Backend::start("app").await;
    let dir = TempDir::new("mtls-default");
    let site = cert(&HOSTS);
    dir.write(
        "all.yaml",
        &[
            service_yaml("svc", &[backend.addr]),
            tls_secret("site", &site),
            trust_store_secret("client-ca", &trusted.pem, None),
            ingress("open", "open.example.com", &[]),
            ingress("pass", "pass.example.com", &[PASS]),
        ]
        .concat(),
    );
    let p = Portcullis::start(
        dir.path(),
        &[
            "--https",
            "127.0.0.1:0",
            "--mutual-authentication",
            "verify",
            "--trust-store",
            "apps/client-ca",
        ],
    );
    let https = p.https.unwrap();
    eventually("the open host is served with a certificate", || async {
        exchange(
            https,
            &site,
            Some("open.example.com"),
            Some(&good),
            &get("open.example.com", ""),
        )
        .await
        .status
            == 200
    })
    .await;
    let resp = exchange(
        https,
        &site,
        Some("open.example.com"),
        None,
        &get("open.example.com", ""),
    )
    .await;
    assert_eq!(resp.status, 0, "the default asks for a certificate");
    let resp = exchange(
        https,
        &site,
        None,
        Some(&good),
        &get("open.example.com", ""),
    )
    .await;
    assert_eq!(resp.status, 200, "no SNI: the listener's default");
    let resp = exchange(
        https,
        &site,
        Some("pass.example.com"),
        None,
        &get("pass.example.com", ""),
    )
    .await;
    assert_eq!(resp.status, 200, "a host's own setting wins");
}
