//! BackendTLSPolicy against real TLS pods (files, no cluster): the pod's certificate is
//! checked against the policy's CA and names (its hostname, or the subject alternative
//! names it lists), the hostname is sent as SNI, a Gateway's client certificate is
//! presented, and a policy that cannot be used or a check that fails never lets a
//! request reach the pod, in the clear or unchecked. Requests are raw bytes; the pod
//! reports what it saw of the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::common;
use common::*;

/// A CA and a certificate it signed.
struct Issued {
    ca_pem: String,
    pem: String,
    key: String,
}

/// A certificate for `dns` and `uri` signed by a CA of its own.
fn issue(dns: &str, uri: &str) -> Issued {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![dns.to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::URI(uri.try_into().unwrap()));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Issued {
        ca_pem: ca_cert.pem(),
        pem: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A TLS pod: answers with what it saw of the handshake, and counts the requests that
/// reached it. With `client_ca`, it accepts only clients with a certificate that CA
/// signed.
struct Pod {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pod {
    async fn start(cert: &Issued, client_ca: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(cert, client_ca)));
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let (_, conn) = tls.get_ref();
                    let seen = serde_json::json!({
                        "sni": conn.server_name(),
                        "clientCertificates": conn.peer_certificates().map_or(0, <[_]>::len),
                    });
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let mut seen = seen.clone();
                        seen["path"] = req.uri().path().into();
                        seen["host"] = req
                            .headers()
                            .get("host")
                            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                            .into();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(seen.to_string()),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http1_only()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, served, task }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

fn server_config(cert: &Issued, client_ca: Option<&str>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert.pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add_parsable_certificates(CertificateDer::pem_slice_iter(ca.as_bytes()).flatten());
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).unwrap()
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// A Gateway (with `gateway_tls`, its `spec.tls` lines), an HTTPRoute for
/// app.example.com to Service web (port `https`) at `pod`.
fn gateway(pod: SocketAddr, gateway_tls: &str) -> String {
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
{gateway_tls}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.example.com]
  rules: [{{backendRefs: [{{name: web, port: 443}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: apps}}
spec: {{ports: [{{name: https, port: 443}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: apps, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: https, port: {}}}]
endpoints: [{{addresses: ["{}"]}}]
"#,
        pod.port(),
        pod.ip()
    )
}

fn ca_config_map(name: &str, pem: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: apps}}\ndata:\n  ca.crt: |\n{}",
        indent(pem)
    )
}

/// A BackendTLSPolicy for Service web with these `validation` lines.
fn policy(validation: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: web, namespace: apps}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: web, sectionName: https}}]\n  validation:\n{}",
        indent(validation)
    )
}

const GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n";

async fn status_becomes(proxy: &Portcullis, status: u16) -> RawResponse {
    eventually(&format!("the route answers {status}"), || async {
        raw_exchange(proxy.http, GET).await.status == status
    })
    .await;
    let resp = raw_exchange(proxy.http, GET).await;
    assert_eq!(resp.status, status, "{}", resp.head);
    resp
}

/// What the pod saw, once the proxy answers 200.
async fn seen(proxy: &Portcullis) -> serde_json::Value {
    let resp = status_becomes(proxy, 200).await;
    serde_json::from_str(&resp.body).unwrap()
}

#[tokio::test]
async fn the_pod_is_checked_against_the_policy_and_a_failed_check_never_reaches_it() {
    let pod_cert = issue("web.example.com", "spiffe://example.com/web");
    let pod = Pod::start(&pod_cert, None).await;
    let dir = TempDir::new("backend-tls-policy");
    dir.write("gateway.yaml", &gateway(pod.addr, ""));
    dir.write("ca.yaml", &ca_config_map("pods-ca", &pod_cert.ca_pem));
    let valid = "caCertificateRefs: [{group: \"\", kind: ConfigMap, name: pods-ca}]\nhostname: web.example.com\n";
    dir.write("policy.yaml", &policy(valid));
    let proxy = Portcullis::start(dir.path(), &[]);
    let ok = seen(&proxy).await;
    assert_eq!(
        ok["sni"], "web.example.com",
        "the policy's hostname is the SNI"
    );
    assert_eq!(
        (ok["path"].as_str(), ok["host"].as_str()),
        (Some("/hello"), Some("app.example.com"))
    );
    assert_eq!(ok["clientCertificates"], 0);

    // Each check that fails answers 502 (the handshake is refused) and no request
    // reaches the pod; each policy that cannot be used answers 500 without a
    // connection. Nothing falls back to the clear or to unchecked TLS.
    let other_ca = issue("web.example.com", "spiffe://example.com/web").ca_pem;
    let cases: Vec<(String, String, u16)> = vec![
        (
            valid.replace("pods-ca", "other-ca"),
            "a CA that did not sign the pod's certificate".into(),
            502,
        ),
        (
            valid.replace("web.example.com", "other.example.com"),
            "a hostname the certificate does not carry".into(),
            502,
        ),
        (
            format!(
                "{}subjectAltNames: [{{type: URI, uri: \"spiffe://example.com/other\"}}]\n",
                valid
            ),
            "a URI the certificate does not carry (the hostname it does carry no longer counts)"
                .into(),
            502,
        ),
        (
            format!(
                "{}subjectAltNames: [{{type: Hostname, hostname: other.example.com}}]\n",
                valid
            ),
            "a DNS subject alternative name the certificate does not carry".into(),
            502,
        ),
        (
            valid.replace("pods-ca", "missing"),
            "a ConfigMap that does not exist".into(),
            500,
        ),
        (
            valid.replace("kind: ConfigMap", "kind: Secret"),
            "a kind of CA reference not supported".into(),
            500,
        ),
        (
            "wellKnownCACertificates: System\nhostname: web.example.com\n".into(),
            "the system's CAs, which did not sign the pod's certificate".into(),
            502,
        ),
    ];
    dir.write("other-ca.yaml", &ca_config_map("other-ca", &other_ca));
    for (validation, what, status) in cases {
        dir.write("policy.yaml", &policy(&validation));
        status_becomes(&proxy, status).await;
        let before = pod.served();
        for _ in 0..3 {
            let resp = raw_exchange(proxy.http, GET).await;
            assert_eq!(resp.status, status, "{what}: {}", resp.head);
            assert!(!resp.body.contains("\"sni\""), "{what}: {}", resp.body);
        }
        assert_eq!(pod.served(), before, "{what}: no request reaches the pod");
        // Back to a check that passes before the next case, so each case is seen
        // taking effect on its own.
        dir.write("policy.yaml", &policy(valid));
        seen(&proxy).await;
    }

    // The names to check are the subject alternative names when listed: the
    // certificate's URI passes while the hostname (still the SNI) names another host.
    let by_uri = format!(
        "{}subjectAltNames: [{{type: URI, uri: \"spiffe://example.com/web\"}}]\n",
        valid.replace("web.example.com", "sni-only.example.com")
    );
    dir.write("policy.yaml", &policy(&by_uri));
    eventually("the URI check passes with the new SNI", || async {
        let resp = raw_exchange(proxy.http, GET).await;
        resp.status == 200 && resp.body.contains("sni-only.example.com")
    })
    .await;
    let by_dns = format!(
        "{}subjectAltNames: [{{type: URI, uri: \"spiffe://example.com/other\"}}, {{type: Hostname, hostname: \"*.example.com\"}}]\n",
        valid.replace("web.example.com", "sni-two.example.com")
    );
    dir.write("policy.yaml", &policy(&by_dns));
    eventually(
        "a wildcard name matches the certificate's DNS name",
        || async {
            let resp = raw_exchange(proxy.http, GET).await;
            resp.status == 200 && resp.body.contains("sni-two.example.com")
        },
    )
    .await;

    // Without the policy the Service is spoken to in the clear: the TLS pod refuses.
    dir.write("policy.yaml", "");
    status_becomes(&proxy, 502).await;
    let before = pod.served();
    assert_eq!(raw_exchange(proxy.http, GET).await.status, 502);
    assert_eq!(pod.served(), before);
}

#[tokio::test]
async fn a_gateway_presents_its_client_certificate_to_pods_that_ask_for_one() {
    let pod_cert = issue("web.example.com", "spiffe://example.com/web");
    let client_cert = issue("gateway.example.com", "spiffe://example.com/gateway");
    let pod = Pod::start(&pod_cert, Some(&client_cert.ca_pem)).await;
    let dir = TempDir::new("backend-client-cert");
    let gateway_tls = "  tls:\n    backend:\n      clientCertificateRef: {name: gateway-client}\n";
    dir.write("gateway.yaml", &gateway(pod.addr, gateway_tls));
    dir.write("ca.yaml", &ca_config_map("pods-ca", &pod_cert.ca_pem));
    dir.write(
        "policy.yaml",
        &policy("caCertificateRefs: [{group: \"\", kind: ConfigMap, name: pods-ca}]\nhostname: web.example.com\n"),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    // The Secret is missing: the backend is closed (500), the pod never asked.
    let resp = status_becomes(&proxy, 500).await;
    assert_eq!(pod.served(), 0, "{}", resp.body);
    dir.write(
        "client.yaml",
        &format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: gateway-client, namespace: apps}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&client_cert.pem),
            indent(&client_cert.key)
        ),
    );
    let ok = seen(&proxy).await;
    assert_eq!(ok["clientCertificates"], 1, "{ok}");
    assert_eq!(ok["sni"], "web.example.com");
}
