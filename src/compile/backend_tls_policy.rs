//! BackendTLSPolicy: TLS from a Gateway's routes to a Service's pods, checked against
//! the CAs of a ConfigMap's `ca.crt` (or the system's, `wellKnownCACertificates:
//! System`), with `hostname` sent as SNI and checked in the pods' certificate unless
//! `subjectAltNames` lists the names to check instead.
//!
//! A policy targets a Service, or one port of it by name (`sectionName`); the port's
//! own policy wins over the Service's. Two policies for the same target: the older one
//! wins (then namespace/name), the other is `Conflicted` for it. A policy that cannot
//! be used (no valid CA, an unknown CA kind, a bad name) closes its targets: their
//! requests answer 500, never plaintext nor unchecked TLS.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use gateway_api::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyValidation, BackendTlsPolicyValidationSubjectAltNamesType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::backends::Index;
use super::gateway::Cond;
use super::snapshot::{SubjectAltName, VerifyBackend};
use super::{age_key, meta_ref};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::ParentReference;
use crate::store::Objects;

/// What a target's requests get: the check to make, or why they answer 500.
pub type Applied = Result<VerifyBackend, String>;

/// `(namespace, service, sectionName)`.
type Target = (String, String, Option<String>);

/// Every BackendTLSPolicy, read once per compile.
#[derive(Default)]
pub struct Policies {
    /// The winning policy of each target, as it applies.
    by_target: HashMap<Target, Arc<Applied>>,
    verdicts: BTreeMap<ObjectRef, Verdict>,
}

/// How one policy stands, whatever Gateway it is seen through.
struct Verdict {
    generation: Option<i64>,
    namespace: String,
    services: Vec<String>,
    conditions: Vec<Cond>,
}

/// A policy's status: per Gateway its targets are reached through, the conditions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyState {
    pub generation: Option<i64>,
    pub ancestors: Vec<(ParentReference, Vec<Cond>)>,
}

impl Policies {
    pub fn new(objects: &Objects, index: &Index) -> Self {
        let mut policies: Vec<&BackendTlsPolicy> = objects
            .backend_tls_policies
            .iter()
            .map(Arc::as_ref)
            .collect();
        policies.sort_by_key(|p| age_key(&p.metadata));
        let mut out = Self::default();
        for policy in policies {
            let obj = meta_ref("BackendTLSPolicy", &policy.metadata);
            let (applied, mut conditions) =
                validate(&policy.spec.validation, &obj.namespace, index);
            let name = format!("BackendTLSPolicy {}/{}", obj.namespace, obj.name);
            let applied = Arc::new(applied.map_err(|m| format!("{name} cannot be used: {m}")));
            let mut services = Vec::new();
            let mut conflicted = false;
            for t in &policy.spec.target_refs {
                if !(t.group.is_empty() || t.group == "core") || t.kind != "Service" {
                    continue;
                }
                services.push(t.name.clone());
                let target = (
                    obj.namespace.clone(),
                    t.name.clone(),
                    t.section_name.clone(),
                );
                match out.by_target.entry(target) {
                    std::collections::hash_map::Entry::Occupied(_) => conflicted = true,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(applied.clone());
                    }
                }
            }
            if conflicted && conditions[0].ok {
                conditions[0] = cond(
                    "Accepted",
                    false,
                    "Conflicted",
                    "an older BackendTLSPolicy targets the same Service (and port); it applies there".into(),
                );
            }
            out.verdicts.insert(
                obj.clone(),
                Verdict {
                    generation: policy.metadata.generation,
                    namespace: obj.namespace,
                    services,
                    conditions,
                },
            );
        }
        out
    }

    /// The policy that applies to a Service's port (by the port's name), if any.
    pub fn for_port(&self, namespace: &str, service: &str, port: Option<&str>) -> Option<&Applied> {
        let key = |section: Option<&str>| {
            (
                namespace.to_owned(),
                service.to_owned(),
                section.map(str::to_owned),
            )
        };
        port.and_then(|p| self.by_target.get(&key(Some(p))))
            .or_else(|| self.by_target.get(&key(None)))
            .map(Arc::as_ref)
    }

    /// What `check` reports: each policy not accepted, with the field and the fix.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (obj, v) in &self.verdicts {
            let Some(c) = v.conditions.iter().find(|c| !c.ok) else {
                continue;
            };
            let (field, fix) = match c.reason.as_str() {
                "Conflicted" => (
                    "spec.targetRefs",
                    "delete one of the policies, or give each a port of its own with sectionName",
                ),
                _ => (
                    "spec.validation",
                    "fix spec.validation as the message says; until then the Services it targets answer 500",
                ),
            };
            out.push(Diagnostic::error(
                obj,
                field,
                "BackendTLSPolicyNotAccepted",
                format!("{} ({}): {}", c.kind, c.reason, c.message),
                fix.into(),
            ));
        }
        out
    }

    /// Each policy's status: its conditions for every Gateway whose attached routes
    /// send requests to one of its Services.
    pub fn status(
        &self,
        objects: &Objects,
        route_gateways: &HashMap<ObjectRef, Vec<ParentReference>>,
    ) -> BTreeMap<ObjectRef, PolicyState> {
        let mut gateways_of: HashMap<(String, String), BTreeSet<ParentReference>> = HashMap::new();
        for route in &objects.http_routes {
            let obj = meta_ref("HTTPRoute", &route.metadata);
            let Some(gateways) = route_gateways.get(&obj) else {
                continue;
            };
            let refs = route.spec.rules.iter().flatten();
            for r in refs.flat_map(|rule| rule.backend_refs.iter().flatten()) {
                let group = r.group.as_deref().unwrap_or("");
                if !(group.is_empty() || group == "core")
                    || r.kind.as_deref().unwrap_or("Service") != "Service"
                {
                    continue;
                }
                let ns = r.namespace.clone().unwrap_or_else(|| obj.namespace.clone());
                gateways_of
                    .entry((ns, r.name.clone()))
                    .or_default()
                    .extend(gateways.iter().cloned());
            }
        }
        self.verdicts
            .iter()
            .map(|(obj, v)| {
                let ancestors: BTreeSet<&ParentReference> = v
                    .services
                    .iter()
                    .filter_map(|s| gateways_of.get(&(v.namespace.clone(), s.clone())))
                    .flatten()
                    .collect();
                let state = PolicyState {
                    generation: v.generation,
                    ancestors: ancestors
                        .into_iter()
                        .map(|a| (a.clone(), v.conditions.clone()))
                        .collect(),
                };
                (obj.clone(), state)
            })
            .collect()
    }
}

fn cond(kind: &'static str, ok: bool, reason: &str, message: String) -> Cond {
    Cond {
        kind,
        ok,
        reason: reason.into(),
        message,
    }
}

/// The check a policy asks for and its `Accepted` and `ResolvedRefs` conditions (in
/// that order). Anything short of a whole, usable check is an `Err`: its targets close.
fn validate(
    validation: &BackendTlsPolicyValidation,
    namespace: &str,
    index: &Index,
) -> (Applied, Vec<Cond>) {
    let resolved_ok = || cond("ResolvedRefs", true, "ResolvedRefs", String::new());
    let invalid = |message: String| {
        (
            Err(message.clone()),
            vec![cond("Accepted", false, "Invalid", message), resolved_ok()],
        )
    };
    let names = match names(validation) {
        Ok(n) => n,
        Err(message) => return invalid(message),
    };
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    let well_known = validation
        .well_known_ca_certificates
        .as_deref()
        .filter(|w| !w.is_empty());
    let (ca_pem, system_roots) = match (refs.is_empty(), well_known) {
        (true, Some("System")) => (String::new(), true),
        (true, Some(other)) => {
            return invalid(format!(
                "wellKnownCACertificates {other:?} is not supported; use \"System\" or caCertificateRefs"
            ));
        }
        (true, None) => {
            return invalid(
                "validation names no CA: set caCertificateRefs (a ConfigMap with ca.crt) or wellKnownCACertificates: System".into(),
            );
        }
        (false, Some(_)) => {
            return invalid(
                "caCertificateRefs and wellKnownCACertificates are both set; use one".into(),
            );
        }
        (false, None) => match ca_bundle(refs, namespace, index) {
            Ok(pem) => (pem, false),
            Err((reason, message, some_valid)) => {
                // Accepted while one of its CAs is valid, as the specification asks;
                // closed all the same.
                let accepted = if some_valid {
                    cond("Accepted", true, "Accepted", String::new())
                } else {
                    cond("Accepted", false, "NoValidCACertificate", message.clone())
                };
                return (
                    Err(message.clone()),
                    vec![accepted, cond("ResolvedRefs", false, reason, message)],
                );
            }
        },
    };
    let verify = VerifyBackend {
        ca_pem: Arc::from(ca_pem),
        system_roots,
        server_name: validation.hostname.clone(),
        subject_alt_names: names,
    };
    (
        Ok(verify),
        vec![
            cond("Accepted", true, "Accepted", String::new()),
            resolved_ok(),
        ],
    )
}

/// `hostname` (a DNS name, sent as SNI) and `subjectAltNames`.
fn names(validation: &BackendTlsPolicyValidation) -> Result<Vec<SubjectAltName>, String> {
    let dns = |name: &str, field: &str| match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(name.to_owned()),
        _ => Err(format!("{field} {name:?} is not a DNS name")),
    };
    dns(&validation.hostname, "validation.hostname")?;
    let mut out = Vec::new();
    for (i, san) in validation.subject_alt_names.iter().flatten().enumerate() {
        let field = format!("validation.subjectAltNames[{i}]");
        out.push(match san.r#type {
            BackendTlsPolicyValidationSubjectAltNamesType::Hostname => {
                let host = san.hostname.as_deref().unwrap_or_default();
                // A wildcard (`*.example.com`) stands for one label under its suffix.
                let suffix = host.strip_prefix("*.").unwrap_or(host);
                dns(suffix, &format!("{field}.hostname"))?;
                SubjectAltName::Dns(host.to_ascii_lowercase())
            }
            BackendTlsPolicyValidationSubjectAltNamesType::Uri => {
                match san.uri.as_deref().filter(|u| u.contains(':')) {
                    Some(uri) => SubjectAltName::Uri(uri.to_owned()),
                    None => return Err(format!("{field}.uri must be a URI with a scheme")),
                }
            }
        });
    }
    Ok(out)
}

/// Why a CA bundle cannot be used: the reason (`InvalidKind`,
/// `InvalidCACertificateRef`), a message naming the ref and the fix, and whether
/// another ref of the policy was valid (the policy is then still `Accepted`).
type BundleProblem = (&'static str, String, bool);

/// The PEM of every CA the refs name. Any ref that cannot be used fails the whole
/// bundle, so its targets close rather than trust part of what was asked.
fn ca_bundle(
    refs: &[gateway_api::backendtlspolicies::BackendTlsPolicyValidationCaCertificateRefs],
    namespace: &str,
    index: &Index,
) -> Result<String, BundleProblem> {
    let mut bundle = String::new();
    let mut first_problem = None;
    for (i, r) in refs.iter().enumerate() {
        match ca_of(
            r,
            &format!("validation.caCertificateRefs[{i}]"),
            namespace,
            index,
        ) {
            Ok(pem) => {
                bundle.push_str(pem);
                bundle.push('\n');
            }
            Err(problem) => {
                first_problem.get_or_insert(problem);
            }
        }
    }
    match first_problem {
        None => Ok(bundle),
        Some((reason, message)) => Err((reason, message, !bundle.is_empty())),
    }
}

/// The PEM of one CA reference: a ConfigMap's `ca.crt` holding a certificate.
fn ca_of<'i>(
    r: &gateway_api::backendtlspolicies::BackendTlsPolicyValidationCaCertificateRefs,
    field: &str,
    namespace: &str,
    index: &Index<'i>,
) -> Result<&'i str, (&'static str, String)> {
    if !(r.group.is_empty() || r.group == "core") || r.kind != "ConfigMap" {
        return Err((
            "InvalidKind",
            format!(
                "{field} names a {}/{}; only a ConfigMap (group \"\") holding ca.crt is supported",
                r.group, r.kind
            ),
        ));
    }
    let pem = index
        .config_map(namespace, &r.name)
        .and_then(|m| m.data.as_ref())
        .and_then(|d| d.get("ca.crt"))
        .ok_or_else(|| {
            (
                "InvalidCACertificateRef",
                format!(
                    "{field}: ConfigMap {namespace}/{} with key ca.crt not found; create it with the CA of the pods' certificates (PEM)",
                    r.name
                ),
            )
        })?;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>();
    if !matches!(&certs, Ok(c) if !c.is_empty()) {
        return Err((
            "InvalidCACertificateRef",
            format!(
                "{field}: ca.crt of ConfigMap {namespace}/{} holds no PEM certificate; put the CA certificate(s) there, PEM encoded",
                r.name
            ),
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests;
