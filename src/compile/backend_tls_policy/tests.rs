use super::super::tests::{compiled, service};
use super::super::{Backend, Compiled, Transport};
use super::*;

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  hostnames: [app.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#;

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn indent(s: &str, by: usize) -> String {
    s.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

fn config_map(name: &str, ca: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: apps}}\ndata:\n  ca.crt: |\n{}",
        indent(ca, 4)
    )
}

/// A BackendTLSPolicy `name` (created at second `age`) for Service web with this
/// target `section` and `validation` (its lines, unindented).
fn policy(name: &str, age: u32, section: Option<&str>, validation: &str) -> String {
    let section = section.map_or(String::new(), |s| format!(", sectionName: {s}"));
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: apps, generation: 2, creationTimestamp: \"2026-01-01T00:00:{age:02}Z\"}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: web{section}}}]\n  validation:\n{}",
        indent(validation, 4)
    )
}

const VALID: &str = "caCertificateRefs: [{group: \"\", kind: ConfigMap, name: pods-ca}]\nhostname: web.example.com\n";

fn with(extra: &str) -> Compiled {
    compiled(&format!(
        "{GATEWAY}{}{}{extra}",
        service("apps", "web", "10.0.0.1", 8443),
        config_map("pods-ca", &ca_pem())
    ))
}

/// How app.example.com's requests reach Service web: its transport, or why it answers
/// 500.
fn reached(c: &Compiled) -> Result<Transport, String> {
    match &c
        .snapshot
        .routes
        .find("app.example.com", "/")
        .unwrap()
        .backend
    {
        Backend::Service(up) => Ok(up.transport.clone()),
        Backend::Invalid { reason } => Err(reason.clone()),
        other => panic!("unexpected backend {:?}", std::mem::discriminant(other)),
    }
}

/// The policy's conditions (type, status, reason) for Gateway apps/edge.
fn conditions(c: &Compiled, name: &str) -> Vec<(&'static str, bool, String)> {
    let state =
        &c.gateway_status.backend_tls_policies[&ObjectRef::new("BackendTLSPolicy", "apps", name)];
    let (parent, conds) = state.ancestors.first().expect("an ancestor");
    assert_eq!(
        (parent.namespace.as_str(), parent.name.as_str()),
        ("apps", "edge")
    );
    conds
        .iter()
        .map(|c| (c.kind, c.ok, c.reason.clone()))
        .collect()
}

#[test]
fn without_a_policy_the_pods_are_spoken_to_in_the_clear() {
    assert_eq!(reached(&with("")).unwrap().tls, None);
}

#[test]
fn a_policy_gives_its_service_checked_tls_with_its_hostname_as_sni() {
    let c = with(&policy("p", 0, Some("http"), VALID));
    let verify = reached(&c).unwrap().tls.unwrap().verify.unwrap();
    assert_eq!(verify.server_name, "web.example.com");
    assert!(verify.ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(!verify.system_roots);
    assert!(verify.subject_alt_names.is_empty());
    assert_eq!(
        conditions(&c, "p"),
        [
            ("Accepted", true, "Accepted".into()),
            ("ResolvedRefs", true, "ResolvedRefs".into())
        ]
    );
    assert_eq!(
        c.gateway_status.backend_tls_policies[&ObjectRef::new("BackendTLSPolicy", "apps", "p")]
            .generation,
        Some(2)
    );
    // A section naming another port leaves this one in the clear.
    let c = with(&policy("p", 0, Some("grpc"), VALID));
    assert_eq!(reached(&c).unwrap().tls, None);
}

#[test]
fn subject_alt_names_and_system_roots_are_carried_to_the_check() {
    let v = "wellKnownCACertificates: System\nhostname: web.example.com\nsubjectAltNames:\n- {type: URI, uri: \"spiffe://example.com/web\"}\n- {type: Hostname, hostname: \"*.example.com\"}\n";
    let verify = reached(&with(&policy("p", 0, None, v)))
        .unwrap()
        .tls
        .unwrap()
        .verify
        .unwrap();
    assert!(verify.system_roots);
    assert_eq!(
        verify.subject_alt_names,
        [
            SubjectAltName::Uri("spiffe://example.com/web".into()),
            SubjectAltName::Dns("*.example.com".into())
        ]
    );
}

#[test]
fn the_older_policy_wins_and_a_port_s_own_policy_beats_the_service_s() {
    let older = policy("b-older", 1, None, VALID);
    let newer = policy(
        "a-newer",
        2,
        None,
        &VALID.replace("web.example.com", "other.example.com"),
    );
    let c = with(&format!("{newer}{older}"));
    assert_eq!(
        reached(&c)
            .unwrap()
            .tls
            .unwrap()
            .verify
            .unwrap()
            .server_name,
        "web.example.com"
    );
    assert_eq!(
        conditions(&c, "b-older")[0],
        ("Accepted", true, "Accepted".into())
    );
    assert_eq!(
        conditions(&c, "a-newer")[0],
        ("Accepted", false, "Conflicted".into())
    );
    let conflict = c
        .diagnostics
        .iter()
        .find(|d| d.object == ObjectRef::new("BackendTLSPolicy", "apps", "a-newer"))
        .expect("the conflict is reported");
    assert_eq!(conflict.field, "spec.targetRefs");
    // Same age: by name.
    let c = with(&format!(
        "{}{}",
        policy("z", 1, None, VALID),
        policy("a", 1, None, VALID)
    ));
    assert_eq!(conditions(&c, "z")[0].2, "Conflicted");
    // The port's own policy, however new, is no conflict and wins for that port.
    let port = policy(
        "port",
        9,
        Some("http"),
        &VALID.replace("web.example.com", "port.example.com"),
    );
    let c = with(&format!("{older}{port}"));
    assert_eq!(
        reached(&c)
            .unwrap()
            .tls
            .unwrap()
            .verify
            .unwrap()
            .server_name,
        "port.example.com"
    );
    assert!(conditions(&c, "port")[0].1);
    assert!(conditions(&c, "b-older")[0].1);
}

#[test]
fn a_policy_that_cannot_be_used_closes_its_service_never_falling_back() {
    let cases = [
        (
            VALID.replace("pods-ca", "missing"),
            "NoValidCACertificate",
            Some("InvalidCACertificateRef"),
        ),
        (
            VALID.replace("pods-ca", "empty"),
            "NoValidCACertificate",
            Some("InvalidCACertificateRef"),
        ),
        (
            VALID.replace("kind: ConfigMap", "kind: Secret"),
            "NoValidCACertificate",
            Some("InvalidKind"),
        ),
        (
            VALID.replace("group: \"\"", "group: invalid.io"),
            "NoValidCACertificate",
            Some("InvalidKind"),
        ),
        (
            "wellKnownCACertificates: Mine\nhostname: web.example.com\n".into(),
            "Invalid",
            None,
        ),
        ("hostname: web.example.com\n".into(), "Invalid", None),
        (
            VALID.replace("web.example.com", "10.0.0.1"),
            "Invalid",
            None,
        ),
        (
            format!("{VALID}subjectAltNames: [{{type: URI, uri: no-scheme}}]\n"),
            "Invalid",
            None,
        ),
    ];
    let empty = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: empty, namespace: apps}\ndata: {ca.crt: \"not a certificate\"}\n";
    for (validation, accepted, resolved) in cases {
        let c = with(&format!("{empty}{}", policy("p", 0, None, &validation)));
        let why = reached(&c).expect_err(&validation);
        assert!(why.contains("BackendTLSPolicy"), "{why}");
        let conds = conditions(&c, "p");
        assert_eq!(
            conds[0],
            ("Accepted", false, accepted.into()),
            "{validation}"
        );
        assert_eq!(conds[1].1, resolved.is_none(), "{validation}");
        if let Some(reason) = resolved {
            assert_eq!(conds[1].2, reason, "{validation}");
        }
        assert!(
            why.contains("BackendTLSPolicy apps/p cannot be used"),
            "{why}"
        );
        assert!(
            c.diagnostics
                .iter()
                .any(|d| d.reason == "BackendTLSPolicyNotAccepted"
                    && d.object == ObjectRef::new("BackendTLSPolicy", "apps", "p")
                    && d.field == "spec.validation"),
            "{validation}"
        );
        assert!(
            c.diagnostics
                .iter()
                .any(|d| d.reason == "InvalidBackendProtocol"),
            "{validation}"
        );
    }
}

#[test]
fn one_invalid_ca_among_valid_ones_keeps_the_policy_accepted_but_closes_its_service() {
    let two = "caCertificateRefs:\n- {group: \"\", kind: ConfigMap, name: pods-ca}\n- {group: \"\", kind: ConfigMap, name: missing}\nhostname: web.example.com\n";
    let c = with(&policy("p", 0, None, two));
    let conds = conditions(&c, "p");
    assert_eq!(conds[0], ("Accepted", true, "Accepted".into()));
    assert_eq!(
        conds[1],
        ("ResolvedRefs", false, "InvalidCACertificateRef".into())
    );
    let why = reached(&c).expect_err("closed");
    assert!(why.contains("caCertificateRefs[1]"), "{why}");
}

fn tls_secret(name: &str, ns: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gateway.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.pem(), 4),
        indent(&key.serialize_pem(), 4)
    )
}

/// The Gateway edge naming `reference` (its lines) as its backend client certificate.
fn gateway_client(reference: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: apps}}\nspec:\n  gatewayClassName: portcullis\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n  tls:\n    backend:\n      clientCertificateRef: {reference}\n"
    )
}

fn gateway_resolved(c: &Compiled) -> Option<(bool, String)> {
    let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "apps", "edge")];
    gw.conditions
        .iter()
        .find(|c| c.kind == "ResolvedRefs")
        .map(|c| (c.ok, c.reason.clone()))
}

#[test]
fn a_gateway_s_client_certificate_is_presented_to_its_tls_backends_only() {
    let yaml = |reference: &str, extra: &str| {
        // The fixture's Gateway renamed away: edge is the one naming a certificate.
        compiled(&format!(
            "{}{}{}{}{extra}",
            GATEWAY.replace(
                "kind: Gateway\nmetadata: {name: edge",
                "kind: Gateway\nmetadata: {name: unused"
            ),
            service("apps", "web", "10.0.0.1", 8443),
            config_map("pods-ca", &ca_pem()),
            gateway_client(reference),
        ))
    };
    let ok = yaml(
        "{name: client}",
        &format!(
            "{}{}",
            tls_secret("client", "apps"),
            policy("p", 0, None, VALID)
        ),
    );
    assert_eq!(gateway_resolved(&ok), Some((true, "ResolvedRefs".into())));
    let client = reached(&ok).unwrap().tls.unwrap().client.unwrap();
    assert!(client.cert_pem.contains("BEGIN CERTIFICATE"));
    assert!(
        !format!("{client:?}").contains("PRIVATE KEY"),
        "the key never shows in Debug"
    );
    // Without a policy the backend is in the clear: no certificate to present.
    let clear = yaml("{name: client}", &tls_secret("client", "apps"));
    assert_eq!(reached(&clear).unwrap().tls, None);
    // References that do not resolve: the Gateway says why and its TLS backends close.
    let other_ns = tls_secret("client", "elsewhere");
    for (reference, reason) in [
        ("{name: missing}", "InvalidClientCertificateRef"),
        (
            "{name: client, kind: ConfigMap}",
            "InvalidClientCertificateRef",
        ),
        (
            "{name: client, group: wrong.io}",
            "InvalidClientCertificateRef",
        ),
        ("{name: client, namespace: elsewhere}", "RefNotPermitted"),
    ] {
        let c = yaml(
            reference,
            &format!(
                "{}{other_ns}{}",
                tls_secret("client", "apps"),
                policy("p", 0, None, VALID)
            ),
        );
        assert_eq!(
            gateway_resolved(&c),
            Some((false, reason.into())),
            "{reference}"
        );
        let accepted =
            &c.gateway_status.gateways[&ObjectRef::new("Gateway", "apps", "edge")].conditions;
        assert!(
            accepted.iter().any(|c| c.kind == "Accepted" && c.ok),
            "{reference}"
        );
        let why = reached(&c).expect_err(reference);
        assert!(why.contains("client certificate"), "{why}");
    }
}
