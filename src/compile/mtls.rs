//! Mutual TLS as ALB does it: which hosts ask the client for a certificate, and
//! against which trust store it is checked. The annotations and the listener default
//! are read here into one table by host; the handshake picks its client-certificate
//! verifier from that table by SNI, and a request is served only on a connection whose
//! handshake was made under its host's setting.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use serde::{Deserialize, Serialize};

use super::backends::Index;
use super::{CompileOptions, ingress_ref, normalize_host};
use crate::diagnostics::{Diagnostic, ObjectRef};

pub mod verifiers;

/// The Ingress annotation that sets mutual TLS for the Ingress's hosts:
/// `{"mode":"verify","trustStore":"<Secret or ConfigMap>"}`.
pub const ANNOTATION: &str = "portcullis.dev/mutual-authentication";
/// AWS Load Balancer Controller's annotation, without its prefix.
pub const ALB_ANNOTATION: &str = "mutual-authentication";

/// What a host asks of the client's certificate (`off` is the absence of a setting).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    /// Ask for a certificate, pass it on unverified (`X-Amzn-Mtls-Clientcert`).
    Passthrough,
    /// The handshake refuses a client without a certificate the trust store vouches for.
    Verify {
        /// A Secret or ConfigMap name (in the Ingress's namespace), or `namespace/name`
        /// for the listener default.
        trust_store: String,
        ignore_expiry: bool,
        /// Send the trust store's CA names in the handshake (`advertiseTrustStoreCaNames`).
        advertise_ca_names: bool,
    },
}

/// One listener's entry of ALB's annotation, or the object of Portcullis's own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    port: Option<u16>,
    mode: Option<String>,
    #[serde(default)]
    trust_store: Option<String>,
    #[serde(default)]
    ignore_client_certificate_expiry: Option<bool>,
    #[serde(default)]
    advertise_trust_store_ca_names: Option<String>,
}

/// ALB's annotation: a JSON list with one entry per listener port. Portcullis has one
/// HTTPS listener, so the entries that are not `off` must agree. `Ok(None)`: off.
pub fn parse_alb(value: &str) -> Result<Option<Setting>, String> {
    let entries: Vec<Entry> = serde_json::from_str(value)
        .map_err(|e| format!("not the JSON AWS Load Balancer Controller reads: {e}"))?;
    let mut found: Option<(Option<u16>, Setting)> = None;
    for entry in &entries {
        let Some(setting) = entry_setting(entry)? else {
            continue;
        };
        match &found {
            Some((_, s)) if *s != setting => {
                return Err(format!(
                    "the entries for ports {:?} and {:?} ask for different client certificates; Portcullis has one HTTPS listener",
                    found.as_ref().and_then(|(p, _)| *p),
                    entry.port
                ));
            }
            _ => found = Some((entry.port, setting)),
        }
    }
    Ok(found.map(|(_, s)| s))
}

/// Portcullis's annotation: one object, as one entry of ALB's list without the port.
pub fn parse_own(value: &str) -> Result<Option<Setting>, String> {
    let entry: Entry =
        serde_json::from_str(value).map_err(|e| format!("not a JSON object: {e}"))?;
    entry_setting(&entry)
}

fn entry_setting(entry: &Entry) -> Result<Option<Setting>, String> {
    let mode = entry.mode.as_deref().unwrap_or("off");
    match mode {
        "off" => Ok(None),
        "passthrough" => Ok(Some(Setting::Passthrough)),
        "verify" => {
            let Some(store) = entry.trust_store.as_deref().map(str::trim) else {
                return Err("mode verify names no trustStore".into());
            };
            if store.starts_with("arn:") {
                return Err(format!(
                    "trustStore {store:?} is an AWS trust store ARN, which Portcullis cannot read"
                ));
            }
            if store.is_empty() || store.contains('/') {
                return Err(format!(
                    "trustStore {store:?} is not the name of a Secret or ConfigMap"
                ));
            }
            let advertise = match entry.advertise_trust_store_ca_names.as_deref() {
                None | Some("off") => false,
                Some("on") => true,
                Some(other) => {
                    return Err(format!(
                        "advertiseTrustStoreCaNames {other:?} is neither on nor off"
                    ));
                }
            };
            Ok(Some(Setting::Verify {
                trust_store: store.to_owned(),
                ignore_expiry: entry.ignore_client_certificate_expiry.unwrap_or(false),
                advertise_ca_names: advertise,
            }))
        }
        other => Err(format!(
            "mode {other:?} is none of off, passthrough, verify"
        )),
    }
}

/// A verified certificate's subject, issuer, serial number and subject alternative names.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    pub serial_number: String,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
}

/// The fix for a malformed annotation.
pub const FIX: &str = r#"e.g. [{"port":443,"mode":"verify","trustStore":"client-ca"}], where client-ca is a Secret (key ca.crt) or ConfigMap (key ca-bundle.crt) in the Ingress's namespace"#;

/// What the handshake and the request path do for one host.
#[derive(Debug)]
pub enum ClientAuth {
    Off,
    Passthrough,
    Verify(TrustStore),
    /// The host's setting cannot be honoured (its trust store is missing or invalid,
    /// or two Ingresses disagree): its requests are refused.
    Broken(String),
}

/// A trust store as the handshake uses it.
pub struct TrustStore {
    /// `namespace/name` of the Secret or ConfigMap.
    pub source: String,
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("source", &self.source)
            .finish()
    }
}

/// A host's client authentication, with the key that names it: two hosts with the
/// same key accept the same certificates, so a connection made for one may serve the
/// other; any other pair is refused (421).
#[derive(Debug)]
pub struct HostAuth {
    pub key: u64,
    pub auth: ClientAuth,
}

impl HostAuth {
    pub const OFF_KEY: u64 = 0;

    fn off() -> Arc<Self> {
        Arc::new(Self {
            key: Self::OFF_KEY,
            auth: ClientAuth::Off,
        })
    }

    /// Verified certificates (whose facts may be believed) come only in verify mode.
    pub fn verifies(&self) -> bool {
        matches!(self.auth, ClientAuth::Verify(_))
    }
}

/// Client authentication by host name: exact, then `*.` wildcard, then the HTTPS
/// listener's default, then off.
#[derive(Debug)]
pub struct MtlsTable {
    exact: HashMap<String, Arc<HostAuth>>,
    wildcard: HashMap<String, Arc<HostAuth>>,
    default: Arc<HostAuth>,
}

impl Default for MtlsTable {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: HostAuth::off(),
        }
    }
}

impl MtlsTable {
    /// The setting for a server name or request host, in any spelling (case, trailing
    /// dot); `None` (no SNI) gets the listener's default.
    pub fn find(&self, host: Option<&str>) -> &Arc<HostAuth> {
        let Some(host) = host else {
            return &self.default;
        };
        let host = normalize_host(host);
        self.exact
            .get(&host)
            .or_else(|| {
                host.split_once('.')
                    .and_then(|(_, suffix)| self.wildcard.get(suffix))
            })
            .unwrap_or(&self.default)
    }

    /// Whether any host (or the default) asks for client certificates.
    pub fn any(&self) -> bool {
        self.default.key != HostAuth::OFF_KEY
            || self
                .exact
                .values()
                .chain(self.wildcard.values())
                .any(|h| h.key != HostAuth::OFF_KEY)
    }

    /// Every distinct setting in the table, by key.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(&self.default)
            .chain(self.exact.values())
            .chain(self.wildcard.values())
            .map(|h| h.key)
    }
}

/// The table for the served Ingresses and the listener default (`--mutual-authentication`).
pub fn compile_mtls(
    ingresses: &[&Ingress],
    index: &Index,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> MtlsTable {
    let mut table = MtlsTable::default();
    if let Some(setting) = &options.mutual_authentication {
        table.default = listener_default(setting, index, diags);
    }
    let groups = super::alb_annotations::Groups::of(ingresses);
    let mut claimed: HashMap<String, (ObjectRef, Arc<HostAuth>)> = HashMap::new();
    for ingress in ingresses {
        // Malformed annotations were reported (and the routes closed) with the other
        // access annotations; here they are only read.
        let access = super::alb_annotations::access_for(ingress, &groups, options, &mut Vec::new());
        let Some(setting) = access.mutual_authentication else {
            continue;
        };
        let obj = ingress_ref(ingress);
        let auth = Arc::new(resolve(&setting, &obj, index, diags));
        for host in rule_hosts(ingress) {
            claim_host(&mut claimed, host, &obj, &auth, diags);
        }
    }
    for (host, (_, auth)) in claimed {
        match host.strip_prefix("*.") {
            Some(suffix) => table.wildcard.insert(suffix.to_owned(), auth),
            None => table.exact.insert(host, auth),
        };
    }
    table
}

/// The hosts of an Ingress's rules, normalised.
fn rule_hosts(ingress: &Ingress) -> Vec<String> {
    let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_ref());
    let mut hosts: Vec<String> = rules
        .into_iter()
        .flatten()
        .filter_map(|r| r.host.as_deref())
        .map(normalize_host)
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// A host takes the setting of the first Ingress naming it; another Ingress asking for
/// a different one breaks the host (both are told), as no handshake can honour both.
fn claim_host(
    claimed: &mut HashMap<String, (ObjectRef, Arc<HostAuth>)>,
    host: String,
    obj: &ObjectRef,
    auth: &Arc<HostAuth>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some((first, held)) = claimed.get(&host) else {
        claimed.insert(host, (obj.clone(), auth.clone()));
        return;
    };
    if held.key == auth.key {
        return;
    }
    let problem = format!(
        "Ingresses {first} and {obj} ask for different client certificates on host {host}; its requests are refused until they agree"
    );
    for who in [first.clone(), obj.clone()] {
        diags.push(Diagnostic::error(
            &who,
            &format!("metadata.annotations[{ANNOTATION}]"),
            "ConflictingMutualAuthentication",
            problem.clone(),
            "give every Ingress of the host the same mutual-authentication setting".into(),
        ));
    }
    let broken = Arc::new(HostAuth {
        key: key_of(&("broken", &problem)),
        auth: ClientAuth::Broken(problem),
    });
    claimed.insert(host, (first.clone(), broken));
}

/// The listener default, whose trust store is named `namespace/name`.
fn listener_default(
    setting: &Setting,
    index: &Index,
    diags: &mut Vec<Diagnostic>,
) -> Arc<HostAuth> {
    let (namespace, name) = match setting {
        Setting::Verify { trust_store, .. } => {
            trust_store.split_once('/').unwrap_or(("", trust_store))
        }
        Setting::Passthrough => ("", ""),
    };
    let obj = ObjectRef::new("Secret", namespace, name);
    Arc::new(resolve(setting, &obj, index, diags))
}

/// A setting with its trust store read: `Broken` (and a diagnostic on `obj`) when the
/// store is missing or invalid.
fn resolve(
    setting: &Setting,
    obj: &ObjectRef,
    index: &Index,
    diags: &mut Vec<Diagnostic>,
) -> HostAuth {
    let Setting::Verify {
        trust_store,
        ignore_expiry,
        advertise_ca_names,
    } = setting
    else {
        return HostAuth {
            key: key_of(&"passthrough"),
            auth: ClientAuth::Passthrough,
        };
    };
    let name = trust_store.rsplit('/').next().unwrap_or(trust_store);
    let source = format!("{}/{name}", obj.namespace);
    let built = read_store(index, &obj.namespace, name).and_then(|(ca, crl)| {
        let verifier =
            verifiers::verifier(&ca, crl.as_deref(), *ignore_expiry, *advertise_ca_names)?;
        Ok((
            key_of(&(&ca, &crl, ignore_expiry, advertise_ca_names)),
            verifier,
        ))
    });
    match built {
        Ok((key, verifier)) => HostAuth {
            key,
            auth: ClientAuth::Verify(TrustStore { source, verifier }),
        },
        Err(problem) => {
            let field = if obj.kind == "Ingress" {
                format!("metadata.annotations[{ANNOTATION}]")
            } else {
                "--trust-store".to_owned()
            };
            let message = format!(
                "trust store {source}: {problem}; requests for the hosts it guards are refused until it is fixed"
            );
            diags.push(Diagnostic::error(
                obj,
                &field,
                "InvalidTrustStore",
                message.clone(),
                format!("create Secret {source} with the PEM CA certificates in key ca.crt (CRLs in ca.crl), or a ConfigMap {source} with them in ca-bundle.crt"),
            ));
            HostAuth {
                key: key_of(&("broken", &message)),
                auth: ClientAuth::Broken(message),
            }
        }
    }
}

/// The PEM CA bundle and CRLs of a Secret (`ca.crt`, `ca.crl`) or ConfigMap
/// (`ca-bundle.crt` or `ca.crt`, and `ca.crl`).
fn read_store(
    index: &Index,
    namespace: &str,
    name: &str,
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    if let Some(secret) = index.secret(namespace, name) {
        let data = secret.data.as_ref();
        let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.clone());
        let ca = get("ca.crt").ok_or("the Secret has no key ca.crt")?;
        return Ok((ca, get("ca.crl")));
    }
    if let Some(map) = index.config_map(namespace, name) {
        let data = map.data.as_ref();
        let get = |k: &str| data.and_then(|d| d.get(k)).map(|s| s.as_bytes().to_vec());
        let ca = get("ca-bundle.crt")
            .or_else(|| get("ca.crt"))
            .ok_or("the ConfigMap has neither ca-bundle.crt nor ca.crt")?;
        return Ok((ca, get("ca.crl")));
    }
    Err("no Secret or ConfigMap of that name".into())
}

/// PEM CA certificates and CRLs to DER, refusing input that holds none or is not PEM.
pub fn parse_store(
    ca: &[u8],
    crl: Option<&[u8]>,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        Vec<CertificateRevocationListDer<'static>>,
    ),
    String,
> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the CA bundle is not PEM: {e}"))?;
    if roots.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    let crls = match crl {
        None => Vec::new(),
        Some(crl) => {
            let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(crl)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ca.crl is not PEM: {e}"))?;
            if crls.is_empty() {
                return Err("ca.crl holds no X509 CRL".into());
            }
            crls
        }
    };
    Ok((roots, crls))
}

/// A WebPKI verifier over the roots and CRLs (ALB's verify mode).
pub fn webpki_verifier(
    roots: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    advertise_ca_names: bool,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .map_err(|e| format!("a CA certificate cannot be used: {e}"))?;
    }
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .with_crls(crls)
        // A CA the CRLs do not cover is not a revoked one (ALB checks the CRLs it has).
        .allow_unknown_revocation_status();
    if !advertise_ca_names {
        builder = builder.clear_root_hint_subjects();
    }
    builder
        .build()
        .map_err(|e| format!("cannot verify client certificates with it: {e}"))
}

pub(crate) fn key_of(value: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    // 0 is off.
    h.finish().max(1)
}

#[cfg(test)]
mod tests;
