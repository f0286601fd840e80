//! How Portcullis speaks to a Service's pods, read where ALB's users and Gateway API's
//! users write it:
//!
//! - an Ingress: `alb.ingress.kubernetes.io/backend-protocol` (`HTTP`, `HTTPS`) and
//!   `backend-protocol-version` (`HTTP1`, `HTTP2`, `GRPC`), on the Ingress or on the
//!   backend Service, the Service's value winning (as AWS Load Balancer Controller
//!   reads them); `portcullis.dev/backend-ca-secret` and
//!   `portcullis.dev/backend-server-name` opt in to checking the pods' certificate;
//!   A Service port whose `appProtocol` is `https` gets TLS (unchecked, as ALB) unless
//!   the annotation says otherwise;
//! - an HTTPRoute: the Service port's `appProtocol`, where `kubernetes.io/h2c` means
//!   HTTP/2 in the clear, and TLS where a BackendTLSPolicy targets the Service (or
//!   the port), presenting the Gateway's client certificate;
//! - a GRPCRoute: gRPC, which is HTTP/2, whatever the port's `appProtocol` says: in the
//!   clear (h2c with prior knowledge), or over TLS as a BackendTLSPolicy asks.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::backends::Index;
use super::snapshot::{BackendTls, BackendVersion, ClientIdentity, Transport, VerifyBackend};

const PROTOCOL: &str = "alb.ingress.kubernetes.io/backend-protocol";
const VERSION: &str = "alb.ingress.kubernetes.io/backend-protocol-version";
/// A Secret in the Service's namespace whose `ca.crt` the pods' certificates must
/// chain to (off by default, as ALB checks nothing).
pub const CA_SECRET_ANNOTATION: &str = "portcullis.dev/backend-ca-secret";
/// The name the pods' certificate must carry (default `<service>.<namespace>.svc`).
pub const SERVER_NAME_ANNOTATION: &str = "portcullis.dev/backend-server-name";
/// Gateway API's `appProtocol` for HTTP/2 over cleartext (prior knowledge).
const APP_PROTOCOL_H2C: &str = "kubernetes.io/h2c";

/// Where a backend's protocol is read from.
#[derive(Clone, Copy)]
pub enum ProtocolFrom<'a> {
    /// An Ingress's annotations (the Service's own win).
    Alb(Option<&'a BTreeMap<String, String>>),
    /// An HTTPRoute: the Service port's `appProtocol`, TLS by BackendTLSPolicy, and
    /// the client certificate of the route's Gateways.
    AppProtocol(&'a BackendClient),
    /// A GRPCRoute: gRPC, TLS by BackendTLSPolicy as for an HTTPRoute.
    Grpc(&'a BackendClient),
}

/// The client certificate a route's Gateways present to TLS backends: none, one, or
/// why none can be (a reference that does not resolve, Gateways that disagree), in
/// which case TLS backends are closed.
pub type BackendClient = Option<Result<ClientIdentity, String>>;

/// A protocol that cannot be set up: the annotation, what is wrong, and the fix.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolProblem {
    pub field: String,
    pub message: String,
    pub fix: String,
}

/// The transport to the pods of `service`'s `port`.
pub fn transport(
    from: ProtocolFrom,
    service: &Service,
    port: Option<&ServicePort>,
    index: &Index,
) -> Result<Transport, ProtocolProblem> {
    match from {
        ProtocolFrom::AppProtocol(client) => gateway_transport(service, port, index, client),
        ProtocolFrom::Grpc(client) => Ok(Transport {
            version: BackendVersion::Grpc,
            ..gateway_transport(service, port, index, client)?
        }),
        ProtocolFrom::Alb(ingress) => {
            let own = service.metadata.annotations.as_ref();
            let get = |key: &str| {
                own.and_then(|a| a.get(key))
                    .or_else(|| ingress.and_then(|a| a.get(key)))
                    .map(|v| v.trim())
            };
            let https_port = port
                .and_then(|p| p.app_protocol.as_deref())
                .is_some_and(|a| a.eq_ignore_ascii_case("https"));
            let tls = match get(PROTOCOL) {
                None => https_port,
                asked => tls_asked(asked)?,
            };
            let version = version_asked(get(VERSION))?;
            let verify = verify_asked(
                get(CA_SECRET_ANNOTATION),
                get(SERVER_NAME_ANNOTATION),
                tls,
                service,
                index,
            )?;
            Ok(Transport {
                tls: tls.then_some(BackendTls {
                    verify,
                    client: None,
                }),
                version,
            })
        }
    }
}

fn app_protocol(port: Option<&ServicePort>) -> Transport {
    let version = match port.and_then(|p| p.app_protocol.as_deref()) {
        Some(APP_PROTOCOL_H2C) => BackendVersion::Http2,
        _ => BackendVersion::Http1,
    };
    Transport { tls: None, version }
}

/// An HTTPRoute's backend: TLS as the BackendTLSPolicy of the Service (port) asks,
/// or none without one. A policy that cannot be used, or a client certificate that
/// cannot be presented, is a problem: the backend closes.
fn gateway_transport(
    service: &Service,
    port: Option<&ServicePort>,
    index: &Index,
    client: &BackendClient,
) -> Result<Transport, ProtocolProblem> {
    let mut transport = app_protocol(port);
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let port_name = port.and_then(|p| p.name.as_deref());
    let Some(applied) = index.backend_tls.for_port(namespace, name, port_name) else {
        return Ok(transport);
    };
    let verify = applied.clone().map_err(|message| ProtocolProblem {
        field: "BackendTLSPolicy".into(),
        message,
        fix: "fix the BackendTLSPolicy (kubectl describe backendtlspolicy shows why)".into(),
    })?;
    let client = match client {
        None => None,
        Some(Ok(identity)) => Some(identity.clone()),
        Some(Err(message)) => {
            return Err(ProtocolProblem {
                field: "spec.tls.backend.clientCertificateRef".into(),
                message: format!("the Gateway's client certificate cannot be presented: {message}"),
                fix: "fix the Gateway's spec.tls.backend.clientCertificateRef".into(),
            });
        }
    };
    transport.tls = Some(BackendTls {
        verify: Some(verify),
        client,
    });
    Ok(transport)
}

/// `backend-protocol`: `HTTPS` is TLS to the pods.
pub fn tls_asked(value: Option<&str>) -> Result<bool, ProtocolProblem> {
    match value {
        None | Some("HTTP") => Ok(false),
        Some("HTTPS") => Ok(true),
        Some(other) => Err(ProtocolProblem {
            field: PROTOCOL.into(),
            message: format!("{other:?} is neither HTTP nor HTTPS"),
            fix: "use HTTP or HTTPS".into(),
        }),
    }
}

/// `backend-protocol-version`.
pub fn version_asked(value: Option<&str>) -> Result<BackendVersion, ProtocolProblem> {
    match value {
        None | Some("HTTP1") => Ok(BackendVersion::Http1),
        Some("HTTP2") => Ok(BackendVersion::Http2),
        Some("GRPC") => Ok(BackendVersion::Grpc),
        Some(other) => Err(ProtocolProblem {
            field: VERSION.into(),
            message: format!("{other:?} is not HTTP1, HTTP2 or GRPC"),
            fix: "use HTTP1, HTTP2 or GRPC".into(),
        }),
    }
}

/// The opt-in check of the pods' certificate: a CA bundle from a Secret's `ca.crt`
/// and the name to expect. Asked for without TLS, or with a CA that cannot be read, it
/// is a problem: the backend is closed rather than reached unchecked.
fn verify_asked(
    ca_secret: Option<&str>,
    server_name: Option<&str>,
    tls: bool,
    service: &Service,
    index: &Index,
) -> Result<Option<VerifyBackend>, ProtocolProblem> {
    let Some(secret_name) = ca_secret else {
        return match server_name {
            None => Ok(None),
            Some(_) => Err(ProtocolProblem {
                field: SERVER_NAME_ANNOTATION.into(),
                message: "a server name without a CA bundle checks nothing".into(),
                fix: format!(
                    "name the CA's Secret in {CA_SECRET_ANNOTATION}, or remove {SERVER_NAME_ANNOTATION}"
                ),
            }),
        };
    };
    let problem = |message: String, fix: String| ProtocolProblem {
        field: CA_SECRET_ANNOTATION.into(),
        message,
        fix,
    };
    if !tls {
        return Err(problem(
            "a CA bundle is named but the pods are spoken to in plain HTTP".into(),
            format!("set {PROTOCOL}: HTTPS, or remove {CA_SECRET_ANNOTATION}"),
        ));
    }
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let pem = index
        .secret(namespace, secret_name)
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get("ca.crt"))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            problem(
                format!("Secret {namespace}/{secret_name} with key ca.crt not found"),
                format!(
                    "create Secret {namespace}/{secret_name} holding the pods' CA in ca.crt (PEM)"
                ),
            )
        })?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
    if !matches!(&certs, Ok(c) if !c.is_empty()) {
        return Err(problem(
            format!("ca.crt of Secret {namespace}/{secret_name} holds no PEM certificate"),
            "put the CA certificate(s) the pods' certificates chain to in ca.crt, PEM encoded"
                .into(),
        ));
    }
    let server_name = server_name.map_or_else(|| format!("{name}.{namespace}.svc"), str::to_owned);
    if ServerName::try_from(server_name.as_str()).is_err() {
        return Err(ProtocolProblem {
            field: SERVER_NAME_ANNOTATION.into(),
            message: format!("{server_name:?} is not a DNS name or IP address"),
            fix: "the name the pods' certificate carries, e.g. my-svc.my-namespace.svc".into(),
        });
    }
    Ok(Some(VerifyBackend {
        ca_pem: Arc::from(String::from_utf8_lossy(&pem).as_ref()),
        system_roots: false,
        server_name,
        subject_alt_names: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alb_values_are_read_exactly_as_aws_load_balancer_controller_reads_them() {
        assert_eq!(tls_asked(None), Ok(false));
        assert_eq!(tls_asked(Some("HTTP")), Ok(false));
        assert_eq!(tls_asked(Some("HTTPS")), Ok(true));
        for bad in ["https", "TLS", ""] {
            assert!(tls_asked(Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(version_asked(None), Ok(BackendVersion::Http1));
        assert_eq!(version_asked(Some("HTTP2")), Ok(BackendVersion::Http2));
        assert_eq!(version_asked(Some("GRPC")), Ok(BackendVersion::Grpc));
        for bad in ["grpc", "HTTP/2", "H2C"] {
            assert!(version_asked(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_https_app_protocol_gives_an_ingress_backend_tls_unless_annotated() {
        let objects = crate::store::Objects::default();
        let index = Index::new(&objects);
        let port = |p: &str| ServicePort {
            app_protocol: Some(p.to_owned()),
            ..Default::default()
        };
        let service = |annotations: &[(&str, &str)]| Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let tls = |svc: &Service, p: &str| {
            transport(ProtocolFrom::Alb(None), svc, Some(&port(p)), &index)
                .unwrap()
                .tls
        };
        let unchecked = Some(BackendTls::default());
        assert_eq!(tls(&service(&[]), "https"), unchecked);
        assert_eq!(tls(&service(&[]), "HTTPS"), unchecked);
        assert_eq!(tls(&service(&[]), "http"), None);
        assert_eq!(tls(&service(&[]), "kubernetes.io/h2c"), None);
        assert_eq!(tls(&service(&[(PROTOCOL, "HTTP")]), "https"), None);
        assert_eq!(tls(&service(&[(PROTOCOL, "HTTPS")]), "http"), unchecked);
    }

    #[test]
    fn only_h2c_app_protocol_changes_the_transport() {
        let port = |p: Option<&str>| ServicePort {
            app_protocol: p.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            app_protocol(Some(&port(Some("kubernetes.io/h2c")))).version,
            BackendVersion::Http2
        );
        for other in [None, Some("http"), Some("kubernetes.io/ws"), Some("h2c")] {
            assert_eq!(app_protocol(Some(&port(other))), Transport::default());
        }
    }
}
