//! A Gateway's `spec.tls.backend.clientCertificateRef`: the certificate its routes
//! present to backends they reach over TLS (a BackendTLSPolicy's targets). A
//! reference that does not resolve makes the Gateway's `ResolvedRefs` False and
//! closes those backends; backends in the clear are not concerned.

use std::sync::Arc;

use gateway_api::gateways::Gateway;

use super::backend_protocol::BackendClient;
use super::backends::Index;
use super::gateway::Cond;
use super::snapshot::ClientIdentity;
use crate::diagnostics::ObjectRef;

/// The Gateway's client certificate for backends and the `ResolvedRefs` condition to
/// report (none when the Gateway names no client certificate). `granted(namespace,
/// name)` says whether a ReferenceGrant lets the Gateway use a Secret elsewhere.
pub fn gateway_backend_client(
    gateway: &Gateway,
    obj: &ObjectRef,
    index: &Index,
    granted: &dyn Fn(&str, &str) -> bool,
) -> (BackendClient, Option<Cond>) {
    let Some(r) = gateway
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref())
    else {
        return (None, None);
    };
    let failed = |reason: &str, message: String| {
        let message = format!("spec.tls.backend.clientCertificateRef: {message}");
        (
            Some(Err(message.clone())),
            Some(Cond {
                kind: "ResolvedRefs",
                ok: false,
                reason: reason.into(),
                message,
            }),
        )
    };
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !(group.is_empty() || group == "core") || kind != "Secret" {
        return failed(
            "InvalidClientCertificateRef",
            format!(
                "names a {group}/{kind}; only a Secret (group \"\") of type kubernetes.io/tls is supported"
            ),
        );
    }
    let ns = r.namespace.as_deref().unwrap_or(&obj.namespace);
    let source = format!("{ns}/{}", r.name);
    if ns != obj.namespace && !granted(ns, &r.name) {
        return failed(
            "RefNotPermitted",
            format!(
                "Secret {source} is in another namespace and no ReferenceGrant there allows it; add one in {ns} from this Gateway's namespace"
            ),
        );
    }
    let Some(secret) = index.secret(ns, &r.name) else {
        return failed(
            "InvalidClientCertificateRef",
            format!(
                "Secret {source} not found; create it (type kubernetes.io/tls, tls.crt and tls.key)"
            ),
        );
    };
    match identity(secret) {
        Ok(identity) => (
            Some(Ok(identity)),
            Some(Cond {
                kind: "ResolvedRefs",
                ok: true,
                reason: "ResolvedRefs".into(),
                message: String::new(),
            }),
        ),
        Err(e) => failed(
            "InvalidClientCertificateRef",
            format!(
                "Secret {source}: {e}; put the client certificate in tls.crt and its key in tls.key (PEM)"
            ),
        ),
    }
}

/// The certificate and key of a `kubernetes.io/tls` Secret, checked to load together.
fn identity(secret: &k8s_openapi::api::core::v1::Secret) -> Result<ClientIdentity, String> {
    super::tls::certified_key(secret)?;
    let data = secret.data.as_ref();
    let pem = |key: &str| -> Arc<str> {
        let bytes = data.and_then(|d| d.get(key)).map(|b| b.0.as_slice());
        Arc::from(String::from_utf8_lossy(bytes.unwrap_or_default()).as_ref())
    };
    Ok(ClientIdentity {
        cert_pem: pem("tls.crt"),
        key_pem: pem("tls.key"),
    })
}

/// The client certificate of a route attached to Gateways presenting `clients`: theirs
/// when they agree; when they differ, none can be chosen for the route's backends
/// (shared by every Gateway), so its TLS backends close.
pub fn route_backend_client<'a>(clients: impl Iterator<Item = &'a BackendClient>) -> BackendClient {
    let mut chosen: Option<&BackendClient> = None;
    for c in clients {
        match chosen {
            None => chosen = Some(c),
            Some(first) if first == c => {}
            Some(_) => {
                return Some(Err(
                    "the route's Gateways present different client certificates to backends; attach it to Gateways that agree, or split it".into(),
                ));
            }
        }
    }
    chosen.cloned().flatten()
}
