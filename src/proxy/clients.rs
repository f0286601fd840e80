//! Connections to the pods, one set per way of speaking to them (`Transport`) and per
//! data-plane worker, so a pooled connection is used on the thread whose runtime
//! drives it:
//!
//! - HTTP/1.1, in the clear or over TLS: idle connections kept by target (`pool`).
//! - HTTP/2 (and gRPC): one multiplexed connection per target, opened on first use
//!   and again once it closes. The request keeps the client's authority
//!   (`:authority`), which the pooling client would replace with the pod's address.
//!
//! TLS to the pods checks nothing by default, as ALB: pods serve self-signed
//! certificates and are addressed by IP, so no SNI is sent either. A `VerifyBackend`
//! (an Ingress's opt-in, a BackendTLSPolicy) checks the chain against its CAs and the
//! certificate's names against the server name (sent as SNI) or the subject
//! alternative names it lists; a Gateway's client certificate is presented.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tower_service::Service as _;

use super::pool::{H1Pool, UpstreamBody};
use super::{Body, BoxError, ProxyConfig};
use crate::compile::{ClientIdentity, SubjectAltName, Transport, VerifyBackend};

/// Why a request never got a response.
#[derive(Debug)]
pub struct SendFailure {
    /// No connection could be made (refused, unreachable, TLS handshake failed).
    pub connect: bool,
    pub error: BoxError,
}

/// The connections of one transport, per worker.
pub struct Pools {
    workers: Vec<Worker>,
}

enum Worker {
    Http1(H1Pool),
    Http2(H2Pool),
}

impl Pools {
    pub fn new(config: &ProxyConfig, transport: &Transport, workers: usize) -> Self {
        let tls = Arc::new(tls_config(transport));
        let workers = (0..workers.max(1))
            .map(|_| {
                let dialer = Dialer::new(config, transport, tls.clone());
                if transport.version.is_h2() {
                    Worker::Http2(H2Pool::new(dialer))
                } else {
                    Worker::Http1(H1Pool::new(dialer, config.upstream_idle_timeout))
                }
            })
            .collect();
        Self { workers }
    }

    /// Sends `req` to `target` (the pod's address) on `worker`'s connections. Over
    /// HTTP/2 its URI is absolute (the scheme and the client's authority); over
    /// HTTP/1.1 only its path and query are sent.
    pub async fn send(
        &self,
        worker: usize,
        target: &str,
        req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, SendFailure> {
        match &self.workers[worker % self.workers.len()] {
            Worker::Http1(pool) => pool.send(target, req).await,
            // Boxed: the h2 pool's future holds a whole TLS handshake, and every future
            // that awaits this one (the request's, up to hyper's) would be as large and
            // be moved, whole, at each level of every HTTP/1 request.
            Worker::Http2(pool) => Box::pin(pool.send(target, req))
                .await
                .map(|resp| resp.map(UpstreamBody::unpooled)),
        }
    }

    /// Closes the connections idle past the idle timeout.
    pub fn sweep(&self, now: std::time::Instant) {
        for worker in &self.workers {
            if let Worker::Http1(pool) = worker {
                pool.sweep(now);
            }
        }
    }
}

/// Opens connections to the pods: TCP (the connect timeout, no delay), then TLS when
/// the transport asks for it.
pub(super) struct Dialer {
    connector: HttpConnector,
    tls: Option<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)>,
}

/// A connection just opened.
pub(super) enum Dialed {
    Plain(TokioIo<tokio::net::TcpStream>),
    Tls(TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl Dialer {
    fn new(config: &ProxyConfig, transport: &Transport, tls: Arc<ClientConfig>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.upstream_connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let tls = transport.tls.as_ref().map(|_| {
            (
                tokio_rustls::TlsConnector::from(tls),
                verified_name(transport),
            )
        });
        Self { connector, tls }
    }

    /// A connection to `target`; every failure is a failure to connect.
    pub(super) async fn dial(&self, target: &str) -> Result<Dialed, SendFailure> {
        let failed = |error: BoxError| SendFailure {
            connect: true,
            error,
        };
        let uri: Uri = format!("http://{target}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| failed(e.into()))?;
        let tcp = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(|e| failed(e.into()))?;
        let Some((connector, name)) = &self.tls else {
            return Ok(Dialed::Plain(tcp));
        };
        let name = match name {
            Some(n) => n.clone(),
            None => target_name(target).map_err(failed)?,
        };
        let stream = connector
            .connect(name, tcp.into_inner())
            .await
            .map_err(|e| failed(e.into()))?;
        Ok(Dialed::Tls(TokioIo::new(stream)))
    }
}

fn verified_name(transport: &Transport) -> Option<ServerName<'static>> {
    let verify = transport.tls.as_ref()?.verify.as_ref()?;
    ServerName::try_from(verify.server_name.clone()).ok()
}

/// The TLS settings to the pods: ALPN h2 for HTTP/2; the certificate checked
/// against the CA bundle when one is named, else (as ALB) not at all; the client
/// certificate presented when one is given. A client certificate that does not load
/// leaves none presented, which a pod asking for one refuses (closed).
fn tls_config(transport: &Transport) -> ClientConfig {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions");
    let tls = transport.tls.as_ref();
    let verifier: Arc<dyn ServerCertVerifier> = match tls.and_then(|t| t.verify.as_ref()) {
        Some(v) => Arc::new(PolicyVerifier {
            roots: roots(v),
            names: names_to_check(v),
            provider: provider.clone(),
        }),
        None => Arc::new(AnyCertificate(provider)),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client = tls
        .and_then(|t| t.client.as_ref())
        .and_then(client_identity);
    let mut config = match client {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the client certificate for backends cannot be used");
                without_client_auth(transport)
            }),
        None => builder.with_no_client_auth(),
    };
    // HTTP/1.1 offers no ALPN (a pod then speaks HTTP/1.1); HTTP/2 offers only h2.
    if transport.version.is_h2() {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    config
}

/// The same settings without a client certificate.
fn without_client_auth(transport: &Transport) -> ClientConfig {
    let mut plain = transport.clone();
    if let Some(tls) = plain.tls.as_mut() {
        tls.client = None;
    }
    tls_config(&plain)
}

fn client_identity(
    identity: &ClientIdentity,
) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).ok()?;
    Some((certs, key))
}

/// The CAs of a bundle, or this system's; none found leaves the store empty, so every
/// handshake fails (closed, never unchecked).
fn roots(verify: &VerifyBackend) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (_added, ignored) = if verify.system_roots {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "the system's CA certificates could not all be read");
        }
        roots.add_parsable_certificates(found.certs)
    } else {
        let certs = CertificateDer::pem_slice_iter(verify.ca_pem.as_bytes()).flatten();
        roots.add_parsable_certificates(certs)
    };
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "certificates of a backend CA bundle could not be used"
        );
    }
    Arc::new(roots)
}

/// The names a pod's certificate may carry, one of which it must: the subject
/// alternative names when given, else the server name.
fn names_to_check(verify: &VerifyBackend) -> Vec<SubjectAltName> {
    if verify.subject_alt_names.is_empty() {
        vec![SubjectAltName::Dns(verify.server_name.clone())]
    } else {
        verify.subject_alt_names.clone()
    }
}

/// A pod's certificate must chain to `roots` and carry one of `names`; the name the
/// connection was opened with (the SNI) takes no part, as BackendTLSPolicy's
/// `subjectAltNames` asks.
#[derive(Debug)]
struct PolicyVerifier {
    roots: Arc<RootCertStore>,
    names: Vec<SubjectAltName>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PolicyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.names.iter().any(|n| carries(&cert, end_entity, n)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCertificate(self.provider.clone()).verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCertificate(self.provider.clone()).verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether a certificate carries `name`: a DNS name as webpki matches it (the
/// certificate's wildcards included); a wildcard `*.suffix` any one label under the
/// suffix, or the same wildcard; a URI exactly.
fn carries(cert: &ParsedCertificate<'_>, der: &CertificateDer<'_>, name: &SubjectAltName) -> bool {
    match name {
        SubjectAltName::Dns(host) => match host.strip_prefix("*.") {
            None => ServerName::try_from(host.as_str())
                .is_ok_and(|n| verify_server_name(cert, &n).is_ok()),
            Some(suffix) => dns_names(der).iter().any(|d| {
                d.eq_ignore_ascii_case(host)
                    || d.split_once('.').is_some_and(|(label, rest)| {
                        !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
                    })
            }),
        },
        SubjectAltName::Uri(uri) => uri_names(der).iter().any(|u| u == uri),
    }
}

fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    general_names(der, |n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
        _ => None,
    })
}

fn uri_names(der: &CertificateDer<'_>) -> Vec<String> {
    general_names(der, |n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
        _ => None,
    })
}

/// The subject alternative names of a certificate that `pick` keeps.
fn general_names(
    der: &CertificateDer<'_>,
    pick: impl Fn(&x509_parser::extensions::GeneralName<'_>) -> Option<String>,
) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value.general_names.iter().filter_map(pick).collect()
}

/// ALB's check of a pod's certificate: none. The handshake's signatures are still
/// verified, so the pod holds the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One HTTP/2 connection per target, shared by every request to it.
struct H2Pool {
    dialer: Dialer,
    /// By target; bounded by the snapshot's targets (closed ones are dropped as new
    /// ones open).
    open: Mutex<HashMap<String, SendRequest<Body>>>,
}

impl H2Pool {
    fn new(dialer: Dialer) -> Self {
        Self {
            dialer,
            open: Mutex::new(HashMap::new()),
        }
    }

    async fn send(
        &self,
        target: &str,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendFailure> {
        let mut sender = match self.ready(target) {
            Some(sender) => sender,
            None => self.connect(target).await?,
        };
        sender.send_request(req).await.map_err(|e| SendFailure {
            connect: false,
            error: e.into(),
        })
    }

    fn ready(&self, target: &str) -> Option<SendRequest<Body>> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(target)
            .filter(|s| s.is_ready() && !s.is_closed())
            .cloned()
    }

    async fn connect(&self, target: &str) -> Result<SendRequest<Body>, SendFailure> {
        let sender = match self.dialer.dial(target).await? {
            Dialed::Plain(io) => handshake(io).await,
            Dialed::Tls(io) => handshake(io).await,
        }
        .map_err(|e| SendFailure {
            connect: true,
            error: e.into(),
        })?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| !s.is_closed());
        open.insert(target.to_owned(), sender.clone());
        Ok(sender)
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<Body>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection closed");
        }
    });
    Ok(sender)
}

/// The server name of a target (`ip:port`, `[ipv6]:port` or `name:port`): an IP
/// address sends no SNI.
fn target_name(target: &str) -> Result<ServerName<'static>, BoxError> {
    let host = target
        .rsplit_once(':')
        .map_or(target, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok(ServerName::try_from(host.to_owned())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_host_and_ip_addresses_stay_addresses() {
        assert!(matches!(
            target_name("10.0.0.1:8443").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            target_name("[fd00::1]:8443").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert_eq!(
            target_name("api.example.com:443").unwrap(),
            ServerName::try_from("api.example.com").unwrap()
        );
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    fn cert_for(sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for san in sans {
            params
                .subject_alt_names
                .push(match san.strip_prefix("uri:") {
                    Some(uri) => rcgen::SanType::URI((*uri).try_into().unwrap()),
                    None => rcgen::SanType::DnsName((*san).try_into().unwrap()),
                });
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    fn carried(sans: &[&str], name: SubjectAltName) -> bool {
        let der = cert_for(sans);
        let parsed = ParsedCertificate::try_from(&der).unwrap();
        carries(&parsed, &der, &name)
    }

    #[test]
    fn names_match_as_a_policy_means_them() {
        let dns = |s: &str| SubjectAltName::Dns(s.into());
        let uri = |s: &str| SubjectAltName::Uri(s.into());
        assert!(carried(&["web.example.com"], dns("web.example.com")));
        assert!(carried(&["WEB.example.com"], dns("web.example.com")));
        assert!(carried(&["*.example.com"], dns("web.example.com")));
        assert!(!carried(&["web.example.com"], dns("api.example.com")));
        assert!(!carried(&["*.example.com"], dns("a.b.example.com")));
        // A policy's wildcard: one label under the suffix, or the same wildcard.
        assert!(carried(&["web.example.com"], dns("*.example.com")));
        assert!(carried(&["*.example.com"], dns("*.example.com")));
        assert!(!carried(&["a.b.example.com"], dns("*.example.com")));
        assert!(!carried(&["example.com"], dns("*.example.com")));
        // URIs exactly, and never through a DNS name or the other way round.
        assert!(carried(
            &["uri:spiffe://example.com/web"],
            uri("spiffe://example.com/web")
        ));
        assert!(!carried(
            &["uri:spiffe://example.com/web"],
            uri("spiffe://example.com/we")
        ));
        assert!(!carried(
            &["uri:spiffe://example.com/web"],
            uri("spiffe://example.com/web/x")
        ));
        assert!(!carried(&["example.com"], uri("example.com")));
        assert!(!carried(
            &["uri:https://web.example.com"],
            dns("web.example.com")
        ));
    }
}

#[cfg(test)]
mod build_tests {
    use super::*;
    use crate::compile::{BackendTls, BackendVersion};

    /// A pod offered ALPN h2 by an HTTP/1.1 pool could answer in a protocol the pool
    /// does not speak: only HTTP/2 transports offer it.
    #[tokio::test]
    async fn every_transport_builds_its_pools() {
        let config = ProxyConfig::default();
        for tls in [None, Some(BackendTls::default())] {
            for version in [
                BackendVersion::Http1,
                BackendVersion::Http2,
                BackendVersion::Grpc,
            ] {
                let t = Transport {
                    tls: tls.clone(),
                    version,
                };
                assert_eq!(tls_config(&t).alpn_protocols.is_empty(), !version.is_h2());
                assert_eq!(Pools::new(&config, &t, 2).workers.len(), 2);
            }
        }
    }
}
