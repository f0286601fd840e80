use super::super::tests::{compiled, service};
use super::*;

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// An Ingress `name` for `host` with `annotations`, a Service, and `extra`.
fn ingress(name: &str, host: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: apps\n  annotations:\n{annotations}spec:\n  ingressClassName: portcullis\n  rules:\n  - host: \"{host}\"\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: root, port: {{number: 80}}}}}}}}\n{}",
        service("apps", "root", "10.0.0.1", 80)
    )
}

const VERIFY: &str = "    portcullis.dev/mutual-authentication: '{\"mode\":\"verify\",\"trustStore\":\"client-ca\"}'\n";

fn secret(pem: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca, namespace: apps}}\nstringData:\n  ca.crt: |\n{}",
        indent(pem)
    )
}

#[test]
fn alb_annotation_entries_that_are_not_off_must_agree() {
    assert_eq!(parse_alb(r#"[{"port":443,"mode":"off"}]"#), Ok(None));
    assert_eq!(
        parse_alb(r#"[{"port":80,"mode":"off"},{"port":443,"mode":"passthrough"}]"#),
        Ok(Some(Setting::Passthrough))
    );
    let verify = parse_alb(
        r#"[{"port":443,"mode":"verify","trustStore":"ca","ignoreClientCertificateExpiry":true,"advertiseTrustStoreCaNames":"on"}]"#,
    );
    assert_eq!(
        verify,
        Ok(Some(Setting::Verify {
            trust_store: "ca".into(),
            ignore_expiry: true,
            advertise_ca_names: true
        }))
    );
    for bad in [
        r#"[{"port":443,"mode":"verify"}]"#,
        r#"[{"port":443,"mode":"verify","trustStore":"arn:aws:elasticloadbalancing:us-east-1:1:truststore/x/y"}]"#,
        r#"[{"port":443,"mode":"verify","trustStore":"other/ca"}]"#,
        r#"[{"port":443,"mode":"strict"}]"#,
        r#"[{"port":443,"mode":"passthrough"},{"port":8443,"mode":"verify","trustStore":"ca"}]"#,
        "verify",
    ] {
        assert!(parse_alb(bad).is_err(), "{bad}");
    }
    assert!(
        parse_own(r#"{"mode":"verify","trustStore":"ca"}"#)
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_host_is_found_in_every_spelling_and_its_trust_store_is_read() {
    let c = compiled(&format!(
        "{}{}{}",
        ingress("web", "app.example.com", VERIFY),
        ingress(
            "wild",
            "*.wild.example.com",
            "    portcullis.dev/mutual-authentication: '{\"mode\":\"passthrough\"}'\n"
        ),
        secret(&ca_pem())
    ));
    assert!(
        c.diagnostics.iter().all(|d| !d.is_error()),
        "{:#?}",
        c.diagnostics
    );
    let table = &c.snapshot.mtls;
    for spelling in ["app.example.com", "APP.Example.com", "app.example.com."] {
        let host = table.find(Some(spelling));
        assert!(host.verifies(), "{spelling}");
        assert!(matches!(&host.auth, ClientAuth::Verify(s) if s.source == "apps/client-ca"));
    }
    assert!(matches!(
        table.find(Some("a.wild.example.com")).auth,
        ClientAuth::Passthrough
    ));
    assert!(matches!(
        table.find(Some("a.b.wild.example.com")).auth,
        ClientAuth::Off
    ));
    assert!(matches!(
        table.find(Some("other.example.com")).auth,
        ClientAuth::Off
    ));
    assert_eq!(table.find(None).key, HostAuth::OFF_KEY);
    // A rule without mutual TLS is served as before.
    let route = c.snapshot.routes.find("app.example.com", "/").unwrap();
    assert!(route.closed.is_none());
}

#[test]
fn a_config_map_bundle_serves_as_a_trust_store() {
    let map = format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: client-ca, namespace: apps}}\ndata:\n  ca-bundle.crt: |\n{}",
        indent(&ca_pem())
    );
    let c = compiled(&format!(
        "{}{map}",
        ingress("web", "app.example.com", VERIFY)
    ));
    assert!(
        c.snapshot.mtls.find(Some("app.example.com")).verifies(),
        "{:#?}",
        c.diagnostics
    );
}

#[test]
fn a_missing_or_invalid_trust_store_breaks_its_host_and_names_the_fix() {
    for extra in [String::new(), secret("not PEM at all")] {
        let c = compiled(&format!(
            "{}{}{extra}",
            ingress("web", "app.example.com", VERIFY),
            ingress("other", "other.example.com", "")
        ));
        let host = c.snapshot.mtls.find(Some("app.example.com"));
        assert!(matches!(host.auth, ClientAuth::Broken(_)), "{extra}");
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.reason == "InvalidTrustStore")
            .unwrap_or_else(|| panic!("{:#?}", c.diagnostics));
        assert_eq!(d.object.name, "web");
        assert_eq!(
            d.field,
            "metadata.annotations[portcullis.dev/mutual-authentication]"
        );
        assert!(
            d.fix.contains("apps/client-ca") && d.fix.contains("ca.crt"),
            "{}",
            d.fix
        );
        assert!(matches!(
            c.snapshot.mtls.find(Some("other.example.com")).auth,
            ClientAuth::Off
        ));
    }
}

#[test]
fn ingresses_that_disagree_on_a_host_break_it() {
    let c = compiled(&format!(
        "{}{}{}",
        ingress("one", "app.example.com", VERIFY),
        ingress(
            "two",
            "app.example.com",
            "    portcullis.dev/mutual-authentication: '{\"mode\":\"passthrough\"}'\n    portcullis.dev/share-host-with: \"*\"\n"
        ),
        secret(&ca_pem())
    ));
    assert!(matches!(
        c.snapshot.mtls.find(Some("app.example.com")).auth,
        ClientAuth::Broken(_)
    ));
    let told: Vec<&str> = c
        .diagnostics
        .iter()
        .filter(|d| d.reason == "ConflictingMutualAuthentication")
        .map(|d| d.object.name.as_str())
        .collect();
    assert_eq!(told, ["one", "two"]);
}

#[test]
fn an_arn_or_a_rule_without_a_host_closes_the_routes_with_the_fix() {
    let arn = "    alb.ingress.kubernetes.io/scheme: internet-facing\n    alb.ingress.kubernetes.io/mutual-authentication: '[{\"port\":443,\"mode\":\"verify\",\"trustStore\":\"arn:aws:elasticloadbalancing:eu-west-1:1:truststore/ts/1\"}]'\n";
    let c = compiled(&ingress("web", "app.example.com", arn));
    let route = c.snapshot.routes.find("app.example.com", "/").unwrap();
    assert_eq!(route.closed.as_ref().unwrap().reason, "AnnotationInvalid");
    let d = c
        .diagnostics
        .iter()
        .find(|d| {
            d.field == "metadata.annotations[alb.ingress.kubernetes.io/mutual-authentication]"
        })
        .unwrap();
    assert!(
        d.message.contains("ARN") && d.fix.contains("Secret"),
        "{d:?}"
    );

    let hostless = ingress("web", "app.example.com", VERIFY)
        .replace("  - host: \"app.example.com\"\n    http:", "  - http:");
    let c = compiled(&hostless);
    let route = c.snapshot.routes.find("any.example.com", "/").unwrap();
    assert_eq!(route.closed.as_ref().unwrap().reason, "AnnotationInvalid");
}

#[test]
fn an_accepted_difference_leaves_client_certificates_to_what_is_in_front() {
    let annotations = "    alb.ingress.kubernetes.io/scheme: internet-facing\n    alb.ingress.kubernetes.io/mutual-authentication: '[{\"port\":443,\"mode\":\"verify\",\"trustStore\":\"arn:x\"}]'\n    portcullis.dev/accept-alb-differences: mutual-authentication\n";
    let c = compiled(&ingress("web", "app.example.com", annotations));
    assert!(
        c.snapshot
            .routes
            .find("app.example.com", "/")
            .unwrap()
            .closed
            .is_none()
    );
    assert!(!c.snapshot.mtls.any());
}
