//! A Gateway's `spec.tls.frontend`: the client certificates each of its HTTPS ports
//! asks for (`perPort`, else `default`), and the TLS table of each Gateway socket, so
//! a socket presents only its own listeners' certificates and checks clients only
//! its own way.
//!
//! A port whose CA references all fail is not served (its listeners are not
//! accepted); `AllowInsecureFallback` asks for a certificate and passes it on
//! unverified, so it never counts as an identity.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use gateway_api::gateways::{Gateway, GatewayTlsFrontendPerPortTlsValidationMode};

use super::gateway::Cond;
use super::mtls::{ClientAuth, HostAuth, TrustStore};
use super::snapshot::{CertTable, ServerCert};
use crate::diagnostics::{Diagnostic, ObjectRef};

/// What one Gateway socket serves over TLS.
#[derive(Default)]
pub struct SocketTls {
    /// The certificates of the socket's listeners, by their hostnames.
    pub certs: CertTable,
    /// The client certificates the socket's port asks for.
    pub client_auth: Arc<HostAuth>,
    /// The hostnames of the socket's listeners (`None`: one without a hostname), which
    /// tell which listener a server name or request host belongs to.
    pub listeners: Arc<Vec<Option<String>>>,
}

impl Default for HostAuth {
    fn default() -> Self {
        Self {
            key: Self::OFF_KEY,
            auth: ClientAuth::Off,
        }
    }
}

/// One CA reference as both halves of the spec (`default`, `perPort`) write it.
struct CaRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

/// A port's validation as written: its CA references and whether it falls back to
/// accepting any client.
struct Validation<'a> {
    field: String,
    refs: Vec<CaRef<'a>>,
    fallback: bool,
}

/// A port's client authentication, or why it has none.
#[derive(Clone, Debug)]
pub(super) struct PortAuth {
    pub auth: Arc<HostAuth>,
    /// The port asks for client certificates (validation is set).
    pub asked: bool,
    /// `ResolvedRefs` is false for this reason and message.
    pub unresolved: Option<(&'static str, String)>,
    /// No CA reference resolved: the port's HTTPS listeners are not accepted.
    pub no_valid_ca: bool,
    pub insecure_fallback: bool,
}

impl PortAuth {
    fn off() -> Self {
        Self {
            auth: Arc::new(HostAuth::default()),
            asked: false,
            unresolved: None,
            no_valid_ca: false,
            insecure_fallback: false,
        }
    }

    /// The listener's conditions with this port's problems, if any; whether the
    /// listener can still be served. Client certificates are asked for on a Gateway's
    /// own socket only: on the shared listener (without `own_address`) the listener is
    /// refused rather than served without them.
    pub fn mark(&self, conditions: &mut [Cond], own_address: bool) -> bool {
        if !own_address && self.asked {
            for c in conditions.iter_mut() {
                let message = "spec.tls.frontend needs a Gateway address of its own (--gateway-addresses); on the shared HTTPS listener its clients would not be asked for certificates".to_owned();
                match c.kind {
                    "Accepted" => *c = cond(c.kind, false, "UnsupportedValue", message),
                    "Programmed" => *c = cond(c.kind, false, "Invalid", message),
                    _ => {}
                }
            }
            return false;
        }
        for c in conditions.iter_mut() {
            match c.kind {
                "ResolvedRefs" if c.ok => {
                    if let Some((reason, message)) = &self.unresolved {
                        *c = cond(c.kind, false, reason, message.clone());
                    }
                }
                "Accepted" if self.no_valid_ca => {
                    let message = "no CA certificate of spec.tls.frontend resolves for this port, so no client can be verified".to_owned();
                    *c = cond(c.kind, false, "NoValidCACertificate", message);
                }
                "Programmed" if self.no_valid_ca => {
                    let message = "the listener is not accepted: no valid CA certificate".into();
                    *c = cond(c.kind, false, "Invalid", message);
                }
                _ => {}
            }
        }
        !self.no_valid_ca
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

/// The client authentication of each port of `ports` (a Gateway's HTTPS ports).
/// `allowed(namespace, kind, name)`: a ReferenceGrant lets the Gateway read that
/// object in another namespace.
pub(super) fn port_auths(
    gateway: &Gateway,
    obj: &ObjectRef,
    ports: &[i32],
    index: &super::backends::Index,
    allowed: &dyn Fn(&str, &str, &str) -> bool,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<i32, PortAuth> {
    let mut out = BTreeMap::new();
    for &port in ports {
        let auth = match validation_for(gateway, port) {
            None => PortAuth::off(),
            Some(v) => resolve(&v, obj, index, allowed, diags),
        };
        out.insert(port, auth);
    }
    out
}

/// `perPort` for the port, else `default`; `None` without validation.
fn validation_for(gateway: &Gateway, port: i32) -> Option<Validation<'_>> {
    let frontend = gateway.spec.tls.as_ref()?.frontend.as_ref()?;
    let per_port = frontend.per_port.iter().flatten().enumerate();
    if let Some((i, p)) = per_port.into_iter().find(|(_, p)| p.port == port) {
        let v = p.tls.validation.as_ref()?;
        return Some(Validation {
            field: format!("spec.tls.frontend.perPort[{i}].tls.validation"),
            refs: (v.ca_certificate_refs.iter())
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                })
                .collect(),
            fallback: v.mode
                == Some(GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback),
        });
    }
    let v = frontend.default.validation.as_ref()?;
    use gateway_api::gateways::GatewayTlsFrontendDefaultValidationMode as Mode;
    Some(Validation {
        field: "spec.tls.frontend.default.validation".into(),
        refs: (v.ca_certificate_refs.iter())
            .map(|r| CaRef {
                group: &r.group,
                kind: &r.kind,
                name: &r.name,
                namespace: r.namespace.as_deref(),
            })
            .collect(),
        fallback: v.mode == Some(Mode::AllowInsecureFallback),
    })
}

/// The trust store of the references that resolve; the first problem of the others.
fn resolve(
    v: &Validation<'_>,
    obj: &ObjectRef,
    index: &super::backends::Index,
    allowed: &dyn Fn(&str, &str, &str) -> bool,
    diags: &mut Vec<Diagnostic>,
) -> PortAuth {
    let mut bundle = Vec::new();
    let mut sources = Vec::new();
    let mut unresolved = None;
    for (i, r) in v.refs.iter().enumerate() {
        match read_ca(r, &obj.namespace, index, allowed) {
            Ok((source, pem)) => {
                bundle.extend_from_slice(&pem);
                bundle.push(b'\n');
                sources.push(source);
            }
            Err((reason, problem)) => {
                let field = format!("{}.caCertificateRefs[{i}]", v.field);
                diags.push(Diagnostic::error(
                    obj,
                    &field,
                    reason,
                    problem.clone(),
                    "name a ConfigMap (or Secret) with PEM CA certificates in key ca.crt, in the Gateway's namespace or allowed by a ReferenceGrant".into(),
                ));
                unresolved.get_or_insert((reason, format!("{field}: {problem}")));
            }
        }
    }
    let verifier = (!sources.is_empty())
        .then(|| super::mtls::verifiers::verifier(&bundle, None, false, true))
        .transpose();
    let verifier = match verifier {
        Ok(v) => v,
        Err(problem) => {
            let message = format!("{}: the CA certificates cannot be used: {problem}", v.field);
            unresolved = Some(("InvalidCACertificateRef", message));
            None
        }
    };
    let Some(verifier) = verifier else {
        return PortAuth {
            auth: Arc::new(HostAuth::default()),
            asked: true,
            unresolved,
            no_valid_ca: true,
            insecure_fallback: v.fallback,
        };
    };
    let auth = if v.fallback {
        HostAuth {
            key: super::mtls::key_of(&("gateway-insecure-fallback", &bundle)),
            auth: ClientAuth::Passthrough,
        }
    } else {
        HostAuth {
            key: super::mtls::key_of(&("gateway-frontend", &bundle)),
            auth: ClientAuth::Verify(TrustStore {
                source: sources.join(","),
                verifier,
            }),
        }
    };
    PortAuth {
        auth: Arc::new(auth),
        asked: true,
        unresolved,
        no_valid_ca: false,
        insecure_fallback: v.fallback,
    }
}

/// A reference's `namespace/name` and PEM bundle, or the listener reason and why not.
fn read_ca(
    r: &CaRef<'_>,
    gateway_ns: &str,
    index: &super::backends::Index,
    allowed: &dyn Fn(&str, &str, &str) -> bool,
) -> Result<(String, Vec<u8>), (&'static str, String)> {
    let core = r.group.is_empty() || r.group == "core";
    if !core || !matches!(r.kind, "ConfigMap" | "Secret") {
        return Err((
            "InvalidCACertificateKind",
            format!(
                "{}/{} {} is not a ConfigMap or Secret",
                r.group, r.kind, r.name
            ),
        ));
    }
    let ns = r.namespace.unwrap_or(gateway_ns);
    let source = format!("{ns}/{}", r.name);
    if ns != gateway_ns && !allowed(ns, r.kind, r.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "{} {source} is in another namespace and no ReferenceGrant there allows it",
                r.kind
            ),
        ));
    }
    let pem = ca_pem(r.kind, ns, r.name, index).map_err(|m| ("InvalidCACertificateRef", m))?;
    super::mtls::parse_store(&pem, None).map_err(|m| {
        (
            "InvalidCACertificateRef",
            format!("{} {source}: {m}", r.kind),
        )
    })?;
    Ok((source, pem))
}

/// Key `ca.crt` of the ConfigMap or Secret.
fn ca_pem(
    kind: &str,
    ns: &str,
    name: &str,
    index: &super::backends::Index,
) -> Result<Vec<u8>, String> {
    let pem = if kind == "ConfigMap" {
        let map = index
            .config_map(ns, name)
            .ok_or_else(|| format!("ConfigMap {ns}/{name} not found"))?;
        let data = map.data.as_ref();
        data.and_then(|d| d.get("ca.crt"))
            .map(|s| s.as_bytes().to_vec())
    } else {
        let secret = index
            .secret(ns, name)
            .ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
        let data = secret.data.as_ref();
        data.and_then(|d| d.get("ca.crt")).map(|b| b.0.clone())
    };
    pem.ok_or_else(|| format!("{kind} {ns}/{name} has no key ca.crt"))
}

/// One served HTTPS listener of a Gateway socket.
pub(super) struct SocketListener {
    pub socket: SocketAddr,
    pub hostname: Option<String>,
    pub cert: Arc<ServerCert>,
    pub client_auth: Arc<HostAuth>,
    pub siblings: Arc<Vec<Option<String>>>,
}

/// The TLS table of each Gateway socket from its served HTTPS listeners.
pub(super) fn socket_tables(
    listeners: impl IntoIterator<Item = SocketListener>,
) -> HashMap<SocketAddr, Arc<SocketTls>> {
    let mut tables: HashMap<SocketAddr, SocketTls> = HashMap::new();
    for l in listeners {
        let table = tables.entry(l.socket).or_insert_with(|| SocketTls {
            certs: CertTable::default(),
            client_auth: l.client_auth.clone(),
            listeners: l.siblings.clone(),
        });
        super::gateway::add_listener_cert(&mut table.certs, l.hostname.as_deref(), l.cert);
    }
    tables.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::objects;
    use super::super::{CompileOptions, Compiled, compile};
    use crate::diagnostics::ObjectRef;

    fn indented(pem: &str, by: usize) -> String {
        pem.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(by)))
            .collect()
    }

    /// A Gateway whose default validation is good and whose ports 7443, 8443 and 6443
    /// name a missing ConfigMap, a Service, and another namespace's ConfigMap.
    fn yaml() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["example.org".to_owned()]).unwrap();
        let site = params.self_signed(&key).unwrap().pem();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap().pem();
        let listener = |name: &str, port: u16| {
            format!(
                "  - {{name: {name}, port: {port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: site}}]}}}}\n"
            )
        };
        let per_port = |port: u16, reference: &str| {
            format!(
                "      - port: {port}\n        tls: {{validation: {{caCertificateRefs: [{reference}]}}}}\n"
            )
        };
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: portcullis}}\nspec: {{controllerName: portcullis.dev/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: portcullis\n  tls:\n    frontend:\n      default: {{validation: {{caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: client-ca}}]}}}}\n      perPort:\n{}{}{}  listeners:\n{}{}{}{}  - {{name: http, port: 80, protocol: HTTP}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: site, namespace: infra}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: client-ca, namespace: infra}}\ndata:\n  ca.crt: |\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: other-ca, namespace: other}}\ndata:\n  ca.crt: |\n{}",
            per_port(7443, "{group: \"\", kind: ConfigMap, name: missing}"),
            per_port(8443, "{group: \"\", kind: Service, name: svc}"),
            per_port(
                6443,
                "{group: \"\", kind: ConfigMap, name: other-ca, namespace: other}"
            ),
            listener("https", 443),
            listener("missing", 7443),
            listener("service", 8443),
            listener("foreign", 6443),
            indented(&site, 4),
            indented(&key.serialize_pem(), 4),
            indented(&ca, 4),
            indented(&ca, 4),
        )
    }

    fn listener(c: &Compiled, name: &str) -> Vec<(&'static str, bool, String)> {
        let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "gw")];
        let l = gw.listeners.iter().find(|l| l.name == name).unwrap();
        (l.conditions.iter())
            .map(|c| (c.kind, c.ok, c.reason.clone()))
            .collect()
    }

    fn has(
        conditions: &[(&'static str, bool, String)],
        kind: &str,
        ok: bool,
        reason: &str,
    ) -> bool {
        conditions
            .iter()
            .any(|(k, o, r)| *k == kind && *o == ok && (reason.is_empty() || r == reason))
    }

    #[test]
    fn each_port_gets_its_validation_or_the_reason_it_has_none() {
        let options = CompileOptions {
            gateway_addresses: Some("127.20.0.0/24".parse().unwrap()),
            ..CompileOptions::default()
        };
        let c = compile(&objects(&yaml()), &options);
        for name in ["https", "http"] {
            let l = listener(&c, name);
            assert!(
                has(&l, "Accepted", true, "") && has(&l, "Programmed", true, ""),
                "{name}: {l:?}"
            );
        }
        for (name, reason) in [
            ("missing", "InvalidCACertificateRef"),
            ("service", "InvalidCACertificateKind"),
            ("foreign", "RefNotPermitted"),
        ] {
            let l = listener(&c, name);
            assert!(has(&l, "ResolvedRefs", false, reason), "{name}: {l:?}");
            assert!(
                has(&l, "Accepted", false, "NoValidCACertificate"),
                "{name}: {l:?}"
            );
            assert!(has(&l, "Programmed", false, ""), "{name}: {l:?}");
        }
        // Only the good port is opened over TLS, and it verifies client certificates.
        let tls: Vec<_> = c.snapshot.gateway_tls.iter().collect();
        assert_eq!(
            tls.len(),
            1,
            "{:?}",
            tls.iter().map(|t| t.0).collect::<Vec<_>>()
        );
        assert_eq!(tls[0].0.port(), 443);
        assert!(tls[0].1.client_auth.verifies());
        assert_eq!(*tls[0].1.listeners, vec![None]);
    }

    #[test]
    fn without_an_own_socket_a_validating_listener_is_refused_not_served_openly() {
        let c = compile(&objects(&yaml()), &CompileOptions::default());
        let l = listener(&c, "https");
        assert!(has(&l, "Accepted", false, "UnsupportedValue"), "{l:?}");
        assert!(has(&l, "Programmed", false, ""), "{l:?}");
        assert!(has(&listener(&c, "http"), "Accepted", true, ""));
    }
}
