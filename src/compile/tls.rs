//! Ingress `spec.tls` to certificates chosen by SNI. Parsing a PEM pair is pure, so it
//! happens here and a bad Secret is reported like any other object.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressTLS};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::backends::Index;
use super::snapshot::{CertTable, ServerCert};
use super::{CompileOptions, ingress_ref, normalize_host, valid_host};
use crate::diagnostics::{Diagnostic, ObjectRef};

pub fn compile_certs(
    ingresses: &[&Ingress],
    index: &Index,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> CertTable {
    let mut table = CertTable::default();
    if let Some(default) = options.default_certificate.as_deref() {
        match default_certificate(default, index) {
            Ok(cert) => table.default = Some(cert),
            Err(problem) => diags.push(problem),
        }
    }
    for ingress in ingresses {
        let obj = ingress_ref(ingress);
        let tls = ingress.spec.as_ref().and_then(|s| s.tls.as_ref());
        for (i, entry) in tls.into_iter().flatten().enumerate() {
            let field = format!("spec.tls[{i}]");
            let cert = match entry_certificate(&obj, &field, entry, index) {
                Ok(cert) => cert,
                Err(problem) => {
                    diags.push(problem);
                    continue;
                }
            };
            let hosts = entry.hosts.as_deref().unwrap_or_default();
            if hosts.is_empty() && table.default.is_none() {
                table.default = Some(cert.clone());
            }
            for host in hosts.iter().map(|h| normalize_host(h)) {
                if !valid_host(&host) {
                    diags.push(Diagnostic::error(
                        &obj,
                        &format!("{field}.hosts"),
                        "InvalidHost",
                        format!("TLS host {host:?} is not a DNS name or a `*.` wildcard"),
                        "list host names like app.example.com".into(),
                    ));
                    continue;
                }
                let map = match host.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.entry(suffix.to_owned()),
                    None => table.exact.entry(host.clone()),
                };
                // The oldest Ingress keeps a host; a second certificate for it is ignored.
                map.or_insert_with(|| cert.clone());
            }
        }
    }
    table
}

/// `--default-certificate`, a Secret named namespace/name.
fn default_certificate(default: &str, index: &Index) -> Result<Arc<ServerCert>, Diagnostic> {
    let obj = ObjectRef::new("Secret", "", default);
    match default
        .split_once('/')
        .and_then(|(ns, name)| index.secret(ns, name).map(|s| (s, format!("{ns}/{name}"))))
    {
        Some((secret, source)) => match certified_key(secret) {
            Ok(key) => Ok(Arc::new(ServerCert { key, source })),
            Err(e) => Err(bad_secret(&obj, e)),
        },
        None => Err(Diagnostic::error(
            &obj,
            "",
            "SecretNotFound",
            format!("default certificate Secret {default} not found"),
            "create it or fix --default-certificate (namespace/name)".into(),
        )),
    }
}

/// The certificate of one `spec.tls` entry, from the Secret it names.
fn entry_certificate(
    obj: &ObjectRef,
    field: &str,
    entry: &IngressTLS,
    index: &Index,
) -> Result<Arc<ServerCert>, Diagnostic> {
    let Some(secret_name) = entry.secret_name.as_deref() else {
        return Err(Diagnostic::error(
            obj,
            field,
            "SecretNotFound",
            "TLS entry has no secretName".into(),
            "name the kubernetes.io/tls Secret that holds the certificate".into(),
        ));
    };
    let source = format!("{}/{secret_name}", obj.namespace);
    let Some(secret) = index.secret(&obj.namespace, secret_name) else {
        return Err(Diagnostic::error(
            obj,
            &format!("{field}.secretName"),
            "SecretNotFound",
            format!("TLS Secret {source} not found"),
            format!(
                "create Secret {source} of type kubernetes.io/tls (cert-manager does this for a Certificate)"
            ),
        ));
    };
    let key = certified_key(secret)
        .map_err(|e| bad_secret(&ObjectRef::new("Secret", &obj.namespace, secret_name), e))?;
    Ok(Arc::new(ServerCert { key, source }))
}

fn bad_secret(obj: &ObjectRef, error: String) -> Diagnostic {
    Diagnostic::error(
        obj,
        "data",
        "InvalidCertificate",
        error,
        "store a PEM certificate chain in tls.crt and its private key in tls.key".into(),
    )
}

/// A `kubernetes.io/tls` Secret to a rustls certified key; the key must match the
/// certificate.
pub fn certified_key(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    let data = secret.data.as_ref().ok_or("the Secret has no data")?;
    let crt = data.get("tls.crt").ok_or("the Secret has no tls.crt")?;
    let key = data.get("tls.key").ok_or("the Secret has no tls.key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt.0)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key.0)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    let provider = aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("tls.key does not fit tls.crt: {e}"))?;
    Ok(Arc::new(certified))
}
