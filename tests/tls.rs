//! HTTPS: certificates from Ingress TLS Secrets chosen by SNI, swapped in when the
//! Secret changes, and plain HTTP redirected for hosts that have one.

use crate::common;

use common::tls::*;
use common::*;

#[tokio::test]
async fn certificates_follow_sni_rotate_without_restart_and_http_redirects() {
    let a = Backend::start("a").await;
    let dir = TempDir::new("tls");
    let (one, two) = (cert(&["one.example.com"]), cert(&["two.example.com"]));
    let tls = "  tls:\n  - {hosts: [one.example.com], secretName: one}\n  - {hosts: [two.example.com], secretName: two}\n";
    let rules = [
        ("one.example.com", "/", "svc-a"),
        ("two.example.com", "/", "svc-a"),
        ("plain.example.com", "/", "svc-a"),
    ];
    dir.write(
        "ingress.yaml",
        &format!(
            "{}{}",
            ingress_yaml("web", &rules, tls),
            service_yaml("svc-a", &[a.addr])
        ),
    );
    dir.write("one.yaml", &tls_secret("one", &one));
    dir.write("two.yaml", &tls_secret("two", &two));
    let p = Portcullis::start(dir.path(), &["--https", "127.0.0.1:0"]);
    let https = p.https.unwrap();
    let url = |host: &str| format!("https://{host}:{}/", https.port());

    let resp = tls_client(&one, &["one.example.com"], https)
        .get(url("one.example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    let resp = tls_client(&two, &["two.example.com"], https)
        .get(url("two.example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        tls_client(&one, &["two.example.com"], https)
            .get(url("two.example.com"))
            .send()
            .await
            .is_err(),
        "two.example.com is not served with one's certificate"
    );

    let line = p
        .log_line(|l| l.starts_with("h2 ") && l.contains("two.example.com"))
        .await;
    let r = alb_record(&line);
    assert_eq!(r["domain_name"], "two.example.com");
    assert_eq!(r["chosen_cert_arn"], "apps/two");
    assert!(
        r["ssl_protocol"] == "TLSv1.3" && r["ssl_cipher"].starts_with("TLS_"),
        "{line}"
    );

    let held = tls_client(&one, &["one.example.com"], https);
    assert_eq!(
        held.get(url("one.example.com"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let renewed = cert(&["one.example.com"]);
    dir.write("one.yaml", &tls_secret("one", &renewed));
    let fresh = tls_client(&renewed, &["one.example.com"], https);
    eventually("the renewed certificate is served", || async {
        fresh.get(url("one.example.com")).send().await.is_ok()
    })
    .await;
    assert_eq!(
        held.get(url("one.example.com"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "an open connection survives the swap"
    );

    let c = client();
    let redirect = c
        .get(p.url("/path?q=1"))
        .header("host", "one.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(
        redirect.headers()["location"],
        format!("https://one.example.com:{}/path?q=1", https.port())
    );
    let plain = c
        .get(p.url("/"))
        .header("host", "plain.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200, "no certificate, no redirect");
}

/// A provider behind a private certificate authority: refused by default, reached once
/// its certificate is given (`--idp-ca-file`).
#[tokio::test]
async fn a_provider_with_a_private_ca_is_trusted_only_when_its_ca_is_given() {
    use portcullis::auth::idp::IdpClient;
    use rustls::pki_types::pem::PemObject as _;
    let c = cert(&["127.0.0.1"]);
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(c.pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("https://{}", listener.local_addr().unwrap());
    let document = serde_json::json!({
        "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks"),
    })
    .to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, document) = (acceptor.clone(), document.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                    document.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let timeout = std::time::Duration::from_secs(5);
    let default = IdpClient::new(timeout).unwrap();
    let refused = default.discover(&issuer).await.unwrap_err();
    assert_eq!(refused.reason(), "AuthIdpDiscoveryFailed", "{refused}");
    let trusting = IdpClient::with_extra_roots(timeout, Some(c.pem.as_bytes())).unwrap();
    let meta = trusting.discover(&issuer).await.unwrap();
    assert_eq!(meta.issuer, issuer);
    assert!(IdpClient::with_extra_roots(timeout, Some(b"not a certificate")).is_err());
}
