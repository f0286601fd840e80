use super::*;
use crate::source::manifests::{add_document, parse_documents};

pub(super) fn objects(yaml: &str) -> Objects {
    let mut objects = Objects::default();
    for doc in parse_documents(yaml).expect("test YAML parses") {
        add_document(&mut objects, doc, &ObjectRef::new("File", "", "test.yaml"));
    }
    objects
}

pub(super) fn compiled(yaml: &str) -> Compiled {
    compile(&objects(yaml), &CompileOptions::default())
}

pub(super) fn service(ns: &str, name: &str, ip: &str, port: u16) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: [{ip}]
- addresses: [10.9.9.9]
  conditions: {{ready: false}}
"#
    )
}

fn target_of(c: &Compiled, host: &str, path: &str) -> Option<String> {
    let route = c.snapshot.routes.find(host, path)?;
    Some(backend_label(&route.backend))
}

pub(super) fn backend_label(backend: &Backend) -> String {
    match backend {
        Backend::Service(up) if up.targets.is_empty() => format!("{}: no targets", up.name),
        Backend::Service(up) => up.targets.join(","),
        Backend::Unavailable { reason, .. } => format!("unavailable: {reason}"),
        Backend::Invalid { reason } => format!("invalid: {reason}"),
        Backend::Edited { headers, backend } => {
            let set: Vec<String> = headers
                .set
                .iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
                .collect();
            format!("{} [{}]", backend_label(backend), set.join(","))
        }
        Backend::Split(shares) => shares
            .iter()
            .map(|(w, b)| match b {
                Backend::Service(up) => format!("{w}*{}", up.targets.join(",")),
                Backend::Edited { .. } => format!("{w}*{}", backend_label(b)),
                _ => format!("{w}*-"),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: apps}
spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: root, port: {number: 80}}}}
      - {path: /api/, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
      - {path: /api/exact, pathType: Exact, backend: {service: {name: exact, port: {number: 80}}}}
  - host: "*.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: wild, port: {number: 80}}}}
  - http:
      paths:
      - {path: /any, pathType: Prefix, backend: {service: {name: any, port: {number: 80}}}}
"#;

fn routing_fixture() -> String {
    let mut yaml = INGRESS.to_string();
    for (name, ip) in [
        ("root", "10.0.0.1"),
        ("api", "10.0.0.2"),
        ("exact", "10.0.0.3"),
        ("wild", "10.0.0.4"),
        ("any", "10.0.0.5"),
    ] {
        yaml.push_str(&service("apps", name, ip, 8080));
    }
    yaml
}

#[test]
fn routes_by_host_then_longest_path() {
    let c = compiled(&routing_fixture());
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let t = |host, path| target_of(&c, host, path);
    assert_eq!(t("app.example.com", "/").as_deref(), Some("10.0.0.1:8080"));
    assert_eq!(
        t("app.example.com", "/api").as_deref(),
        Some("10.0.0.2:8080"),
        "prefix /api/ matches /api"
    );
    assert_eq!(
        t("app.example.com", "/api/v1").as_deref(),
        Some("10.0.0.2:8080")
    );
    assert_eq!(
        t("app.example.com", "/apiv1").as_deref(),
        Some("10.0.0.1:8080"),
        "prefixes match whole path elements"
    );
    assert_eq!(
        t("app.example.com", "/api/exact").as_deref(),
        Some("10.0.0.3:8080")
    );
    assert_eq!(
        t("app.example.com", "/api/exact/more").as_deref(),
        Some("10.0.0.2:8080")
    );
    assert_eq!(
        t("other.example.com", "/x").as_deref(),
        Some("10.0.0.4:8080")
    );
    assert_eq!(
        t("a.b.example.com", "/x"),
        None,
        "a wildcard covers one label only"
    );
    assert_eq!(
        t("example.com", "/any/thing").as_deref(),
        Some("10.0.0.5:8080")
    );
    assert_eq!(t("example.com", "/else"), None);
}

#[test]
fn only_ready_endpoints_are_targets() {
    let c = compiled(&routing_fixture());
    assert!(
        !target_of(&c, "app.example.com", "/")
            .unwrap()
            .contains("10.9.9.9")
    );
}

#[test]
fn only_ingresses_of_our_class_are_served() {
    let other = INGRESS.replace("ingressClassName: portcullis", "ingressClassName: nginx");
    let c = compile(
        &objects(&format!(
            "{other}{}",
            service("apps", "root", "10.0.0.1", 80)
        )),
        &CompileOptions::default(),
    );
    assert!(c.snapshot.routes.all.is_empty());

    let classless = INGRESS.replace("  ingressClassName: portcullis\n", "");
    let default_class = r#"
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: edge
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: portcullis.dev/ingress-controller}
"#;
    let c = compiled(&format!(
        "{classless}{default_class}{}",
        service("apps", "root", "10.0.0.1", 80)
    ));
    assert!(
        target_of(&c, "app.example.com", "/").is_some(),
        "default class picks up class-less Ingresses"
    );

    let named = INGRESS.replace("ingressClassName: portcullis", "ingressClassName: edge");
    let c = compiled(&format!(
        "{named}{}",
        default_class.replace("\"true\"", "\"false\"")
    ));
    assert!(
        !c.snapshot.routes.all.is_empty(),
        "an IngressClass with our controller name is ours"
    );
}

/// `--ingress-class alb` beside the AWS Load Balancer Controller, whose IngressClass
/// `alb` names its own controller: both would serve the same Ingress, so Portcullis
/// serves none of them and says why.
#[test]
fn the_configured_class_is_not_served_when_another_controller_owns_it() {
    let alb = INGRESS.replace("ingressClassName: portcullis", "ingressClassName: alb");
    let class = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: alb}\nspec: {controller: ingress.k8s.aws/alb}\n";
    let options = CompileOptions {
        ingress_class: "alb".into(),
        ..CompileOptions::default()
    };
    let with_class = objects(&format!(
        "{alb}{class}{}",
        service("apps", "root", "10.0.0.1", 80)
    ));
    let c = compile(&with_class, &options);
    assert!(c.snapshot.routes.all.is_empty());
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "IngressClassOfAnotherController")
        .expect("reported");
    assert_eq!(
        (d.object.kind.as_str(), d.object.name.as_str()),
        ("IngressClass", "alb")
    );
    assert!(d.message.contains("ingress.k8s.aws/alb"), "{}", d.message);

    let without_class = objects(&format!("{alb}{}", service("apps", "root", "10.0.0.1", 80)));
    let c = compile(&without_class, &options);
    assert!(
        !c.snapshot.routes.all.is_empty(),
        "with no IngressClass object, the configured name is ours"
    );
}

#[test]
fn a_missing_service_fails_closed_for_its_route_only() {
    let c = compiled(&format!(
        "{INGRESS}{}",
        service("apps", "root", "10.0.0.1", 80)
    ));
    assert_eq!(
        target_of(&c, "app.example.com", "/").as_deref(),
        Some("10.0.0.1:80")
    );
    let api = target_of(&c, "app.example.com", "/api/x").unwrap();
    assert_eq!(api, "unavailable: Service apps/api not found");
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.field == "spec.rules[0].http.paths[1].backend.service")
        .unwrap();
    assert_eq!(d.object.to_string(), "Ingress apps/web");
    assert!(d.fix.contains("create Service apps/api"));
}

#[test]
fn service_without_ready_endpoints_is_reported() {
    let yaml = format!(
        "{INGRESS}{}",
        service("apps", "root", "10.0.0.1", 80).replace("- addresses: [10.0.0.1]\n", "")
    );
    let c = compiled(&yaml);
    // The route holds the upstream, empty, so endpoints that appear later are served
    // without a compile; until then it answers 503.
    assert_eq!(
        target_of(&c, "app.example.com", "/").as_deref(),
        Some("apps/root:80: no targets")
    );
    let about_root: Vec<_> = c
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("apps/root"))
        .map(|d| (d.reason, d.message.as_str()))
        .collect();
    assert_eq!(
        about_root,
        [(
            "BackendNotFound",
            "Service apps/root has no ready endpoints"
        )]
    );
}

#[test]
fn external_name_services_resolve_by_dns() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ext, namespace: apps}
spec:
  ingressClassName: portcullis
  defaultBackend: {service: {name: upstream, port: {number: 8443}}}
---
apiVersion: v1
kind: Service
metadata: {name: upstream, namespace: apps}
spec: {type: ExternalName, externalName: api.internal.example.}
"#;
    let c = compiled(yaml);
    assert_eq!(
        target_of(&c, "anything", "/x").as_deref(),
        Some("api.internal.example:8443")
    );
    assert_eq!(c.snapshot.routes.find("anything", "/").unwrap().priority, 0);
}

#[test]
fn the_older_ingress_keeps_a_contested_path() {
    let newer = r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: newer, namespace: apps, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: any, port: {number: 80}}}}]
"#;
    let older = INGRESS.replace(
        "name: web, namespace: apps",
        "name: web, namespace: apps, creationTimestamp: \"2026-01-01T00:00:00Z\"",
    );
    let c = compiled(&format!(
        "{newer}\n---\n{older}{}",
        routing_fixture().replace(INGRESS, "")
    ));
    assert_eq!(
        target_of(&c, "app.example.com", "/").as_deref(),
        Some("10.0.0.1:8080")
    );
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "PathConflict")
        .unwrap();
    assert_eq!(d.object.to_string(), "Ingress apps/newer");
    assert!(d.message.contains("Ingress apps/web"));
}

#[test]
fn invalid_paths_and_hosts_are_reported_and_skipped() {
    let yaml = INGRESS
        .replace("path: /api/,", "path: api,")
        .replace("host: \"*.example.com\"", "host: \"a.*.com\"");
    let c = compiled(&format!("{yaml}{}", routing_fixture().replace(INGRESS, "")));
    let fields: Vec<_> = c
        .diagnostics
        .iter()
        .map(|d| (d.field.as_str(), d.reason))
        .collect();
    assert!(
        fields.contains(&("spec.rules[0].http.paths[1].path", "InvalidPath")),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("spec.rules[1].host", "InvalidHost")),
        "{fields:?}"
    );
    assert_eq!(
        target_of(&c, "app.example.com", "/").as_deref(),
        Some("10.0.0.1:8080"),
        "the rest still serves"
    );
}

const AUTH_RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps, generation: 3}
spec:
  targetRefs: [{name: web}]
  paths: ["/auth*"]
  oidc:
    issuer: https://idp.example.com
    clientId: app
    clientSecretRef: {name: idp}
"#;

const SECRET: &str = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: "s3cret\n"}
"#;

fn guard_policy(c: &Compiled, path: &str) -> Option<Result<Arc<AuthPolicy>, String>> {
    let route = c.snapshot.routes.find("app.example.com", path)?;
    route.guard_for(path).map(|g| match &g.policy {
        GuardPolicy::Oidc(p) => Ok(p.clone()),
        GuardPolicy::Bearer(_) => Err("bearer tokens only".into()),
        GuardPolicy::Broken(m) | GuardPolicy::Pending(m) => Err(m.clone()),
    })
}

#[test]
fn an_authrule_guards_the_paths_it_names() {
    let c = compiled(&format!("{}{AUTH_RULE}{SECRET}", routing_fixture()));
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let policy = guard_policy(&c, "/auth/x").unwrap().unwrap();
    assert_eq!(
        policy.credential.fingerprint(),
        "s3cret",
        "trailing newline of a secret file is dropped"
    );
    assert_eq!(policy.cookie_name, "AWSELBAuthSessionCookie");
    assert_eq!(policy.session_timeout_secs, 604_800);
    assert_eq!(policy.scope, "openid");
    assert!(guard_policy(&c, "/public").is_none());
    let summary = &c.snapshot.auth_rules[&ObjectRef::new("AuthRule", "apps", "sso")];
    assert_eq!(
        summary.attached_routes, 5,
        "every route of Ingress apps/web"
    );
    assert_eq!(summary.generation, Some(3));
    assert!(
        format!("{policy:?}").contains("<redacted>") && !format!("{policy:?}").contains("s3cret")
    );
}

#[test]
fn a_missing_secret_key_fails_closed_and_names_the_fix() {
    let secret = SECRET.replace("client-secret", "secret");
    let c = compiled(&format!("{}{AUTH_RULE}{secret}", routing_fixture()));
    let err = guard_policy(&c, "/auth").unwrap().unwrap_err();
    assert!(
        err.contains("Secret apps/idp has no key client-secret"),
        "{err}"
    );
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "SecretKeyNotFound")
        .unwrap();
    assert_eq!(d.object.to_string(), "AuthRule apps/sso");
    assert_eq!(d.field, "spec.oidc.clientSecretRef.key");
    assert!(!c.snapshot.auth_rules[&d.object].usable);
}

#[test]
fn sessions_in_redis_need_redis_or_the_rule_closes_its_routes() {
    let rule = AUTH_RULE.replace("  oidc:", "  session: {store: redis}\n  oidc:");
    let yaml = format!("{}{rule}{SECRET}", routing_fixture());
    let c = compiled(&yaml);
    let err = guard_policy(&c, "/auth").unwrap().unwrap_err();
    assert!(err.contains("--redis-url"), "{err}");
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "SessionStoreUnavailable")
        .unwrap();
    assert_eq!(
        (d.object.to_string().as_str(), d.field.as_str()),
        ("AuthRule apps/sso", "spec.session.store")
    );
    assert!(d.fix.contains("spec.session.store: cookie"), "{}", d.fix);
    let with_redis = CompileOptions {
        redis: true,
        ..CompileOptions::default()
    };
    let c = compile(&objects(&yaml), &with_redis);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let policy = guard_policy(&c, "/auth").unwrap().unwrap();
    assert_eq!(policy.spec.session.store, crate::model::SessionStore::Redis);
}

#[test]
fn every_problem_of_an_authrule_is_reported_at_once() {
    let rule = AUTH_RULE
        .replace("https://idp.example.com", "http://idp.example.com")
        .replace("clientId: app", "clientId: app\n    scope: email\n    authenticationRequestExtraParams: {state: x, \"bad&key\": v, access_type: offline, login_hint: a}");
    let c = compiled(&format!("{}{rule}", routing_fixture()));
    let reasons: Vec<_> = c.diagnostics.iter().map(|d| d.reason).collect();
    for r in [
        "InvalidIssuer",
        "InvalidScope",
        "InvalidExtraParam",
        "SecretNotFound",
    ] {
        assert!(
            reasons.contains(&r),
            "{r} missing from {:#?}",
            c.diagnostics
        );
    }
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == "InvalidExtraParam")
            .count(),
        2,
        "state and bad&key, not access_type or login_hint: {:#?}",
        c.diagnostics
    );
}

#[test]
fn an_unreadable_authrule_still_guards_its_targets() {
    let rule = AUTH_RULE.replace("clientId: app", "clientId: [not, a, string]");
    let c = compiled(&format!("{}{rule}{SECRET}", routing_fixture()));
    assert!(
        guard_policy(&c, "/public").unwrap().is_err(),
        "no paths known: every path is guarded"
    );
}

#[test]
fn http_issuers_are_only_for_loopback() {
    assert!(crate::model::check_endpoint_url("https://idp.example.com/realms/x").is_ok());
    assert!(crate::model::check_endpoint_url("http://127.0.0.1:9000").is_ok());
    assert!(crate::model::check_endpoint_url("http://localhost/x").is_ok());
    assert!(crate::model::check_endpoint_url("http://localhost.evil.com/").is_err());
    assert!(crate::model::check_endpoint_url("https://user@idp.example.com").is_err());
    assert!(crate::model::check_endpoint_url("idp.example.com").is_err());
}

#[test]
fn authrule_targets_are_checked() {
    let rule = AUTH_RULE.replace(
        "[{name: web}]",
        "[{name: nope}, {name: web, kind: Service}]",
    );
    let c = compiled(&format!("{}{rule}{SECRET}", routing_fixture()));
    let reasons: Vec<_> = c
        .diagnostics
        .iter()
        .map(|d| (d.field.as_str(), d.reason))
        .collect();
    assert!(reasons.contains(&("spec.targetRefs[0]", "TargetNotFound")));
    assert!(reasons.contains(&("spec.targetRefs[1]", "UnsupportedTarget")));
}

fn tls_secret(name: &str, hosts: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let indent = |s: String| {
        s.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "\n---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: {name}, namespace: apps}}\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(cert.pem()),
        indent(key.serialize_pem())
    )
}

#[test]
fn certificates_are_chosen_exact_then_wildcard_then_default() {
    let ingress = INGRESS.replace(
        "  rules:",
        "  tls:\n  - {hosts: [app.example.com], secretName: exact}\n  - {hosts: [\"*.example.com\"], secretName: wild}\n  - {secretName: fallback}\n  rules:",
    );
    let yaml = format!(
        "{ingress}{}{}{}{}",
        routing_fixture().replace(INGRESS, ""),
        tls_secret("exact", &["app.example.com"]),
        tls_secret("wild", &["*.example.com"]),
        tls_secret("fallback", &["fallback"])
    );
    let c = compiled(&yaml);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let certs = &c.snapshot.certs;
    assert_eq!(
        certs.find(Some("APP.example.com")).unwrap().source,
        "apps/exact"
    );
    assert_eq!(
        certs.find(Some("x.example.com")).unwrap().source,
        "apps/wild"
    );
    assert_eq!(
        certs.find(Some("elsewhere.org")).unwrap().source,
        "apps/fallback"
    );
    assert_eq!(certs.find(None).unwrap().source, "apps/fallback");
    assert!(
        c.snapshot
            .routes
            .find("app.example.com", "/")
            .unwrap()
            .https_redirect
    );
    assert!(
        !c.snapshot
            .routes
            .find("example.com", "/any")
            .unwrap()
            .https_redirect,
        "no certificate covers a host-less rule"
    );
}

#[test]
fn a_certificate_with_the_wrong_key_is_reported() {
    let good = tls_secret("exact", &["app.example.com"]);
    let other = tls_secret("other", &["x"]);
    let key_of = |s: &str| s[s.find("  tls.key").unwrap()..].to_string();
    let mismatched = good.replace(&key_of(&good), &key_of(&other));
    let ingress = INGRESS.replace(
        "  rules:",
        "  tls:\n  - {hosts: [app.example.com], secretName: exact}\n  rules:",
    );
    let c = compiled(&format!(
        "{ingress}{}{mismatched}",
        routing_fixture().replace(INGRESS, "")
    ));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "InvalidCertificate")
        .unwrap();
    assert_eq!(d.object.to_string(), "Secret apps/exact");
    assert!(c.snapshot.certs.find(Some("app.example.com")).is_none());
    assert!(
        !c.snapshot
            .routes
            .find("app.example.com", "/")
            .unwrap()
            .https_redirect,
        "no redirect to a host without a certificate"
    );
}

#[test]
fn the_ssl_redirect_annotation_turns_the_redirect_off() {
    let ingress = INGRESS
        .replace(
            "  rules:",
            "  tls:\n  - {hosts: [app.example.com], secretName: exact}\n  rules:",
        )
        .replace(
            "namespace: apps}",
            "namespace: apps, annotations: {portcullis.dev/ssl-redirect: \"false\"}}",
        );
    let c = compiled(&format!(
        "{ingress}{}{}",
        routing_fixture().replace(INGRESS, ""),
        tls_secret("exact", &["app.example.com"])
    ));
    assert!(
        !c.snapshot
            .routes
            .find("app.example.com", "/")
            .unwrap()
            .https_redirect
    );
}

fn ingress(ns: &str, name: &str, host: Option<&str>, path: &str, annotations: &str) -> String {
    let host = host.map_or(String::new(), |h| format!("host: {h}\n    "));
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "2026-01-0{n}T00:00:00Z"{annotations}}}
spec:
  ingressClassName: portcullis
  rules:
  - {host}http:
      paths:
      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}
"#,
        n = if ns == "victim" { 1 } else { 2 }
    )
}

fn two_tenants(evil_annotations: &str, victim_annotations: &str) -> String {
    let mut yaml = ingress("victim", "app", Some("app.test"), "/", victim_annotations);
    yaml.push_str(&ingress(
        "evil",
        "grab",
        Some("app.test"),
        "/admin/login",
        evil_annotations,
    ));
    yaml.push_str(&ingress("evil", "any", None, "/other", ""));
    yaml.push_str(&service("victim", "svc", "10.0.0.1", 80));
    yaml.push_str(&service("evil", "svc", "10.6.6.6", 80));
    yaml
}

#[test]
fn a_host_belongs_to_the_namespace_of_its_oldest_ingress() {
    let c = compiled(&two_tenants("", ""));
    assert_eq!(
        target_of(&c, "app.test", "/admin/login").as_deref(),
        Some("10.0.0.1:80")
    );
    // A rule without a host does not reach into an owned host either.
    assert_eq!(
        target_of(&c, "app.test", "/other").as_deref(),
        Some("10.0.0.1:80")
    );
    assert_eq!(
        target_of(&c, "elsewhere.test", "/other").as_deref(),
        Some("10.6.6.6:80")
    );
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "HostOwnedByOtherNamespace")
        .expect("the refused Ingress is told why");
    assert_eq!(d.object, ObjectRef::new("Ingress", "evil", "grab"));
    assert_eq!(d.field, "spec.rules[0].host");
    assert!(d.fix.contains(SHARE_HOST_ANNOTATION), "{}", d.fix);
}

#[test]
fn the_owner_may_share_its_host() {
    for share in [
        ", annotations: {portcullis.dev/share-host-with: \"evil\"}",
        ", annotations: {portcullis.dev/share-host-with: \"*\"}",
    ] {
        let c = compiled(&two_tenants("", share));
        assert_eq!(
            target_of(&c, "app.test", "/admin/login").as_deref(),
            Some("10.6.6.6:80")
        );
        assert!(
            !c.diagnostics
                .iter()
                .any(|d| d.reason == "HostOwnedByOtherNamespace")
        );
    }
    // Only the owner can share: the claimant's own annotation is worth nothing.
    let c = compiled(&two_tenants(
        ", annotations: {portcullis.dev/share-host-with: \"*\"}",
        "",
    ));
    assert_eq!(
        target_of(&c, "app.test", "/admin/login").as_deref(),
        Some("10.0.0.1:80")
    );
    let options = CompileOptions {
        allow_shared_hosts: true,
        ..CompileOptions::default()
    };
    let c = compile(&objects(&two_tenants("", "")), &options);
    assert_eq!(
        target_of(&c, "app.test", "/admin/login").as_deref(),
        Some("10.6.6.6:80")
    );
}

fn rule_on(ns: &str, name: &str, target: &str, cookie: Option<&str>) -> String {
    let session = cookie.map_or(String::new(), |c| {
        format!("  session: {{cookieName: {c}}}\n")
    });
    format!(
        r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "2026-01-0{n}T00:00:00Z"}}
spec:
  targetRefs: [{{name: {target}}}]
{session}  oidc: {{issuer: "https://idp.test", clientId: app, clientSecretRef: {{name: idp}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp, namespace: {ns}}}
stringData: {{client-secret: s}}
"#,
        n = if name == "first" { 1 } else { 2 }
    )
}

#[test]
fn two_rules_on_one_host_never_share_a_cookie() {
    let mut yaml = ingress("apps", "a", Some("app.example.com"), "/a", "");
    yaml.push_str(&ingress("apps", "b", Some("app.example.com"), "/b", ""));
    yaml.push_str(&ingress("apps", "c", Some("other.test"), "/", ""));
    yaml.push_str(&service("apps", "svc", "10.0.0.1", 80));
    let mut defaults = yaml.clone();
    defaults.push_str(&rule_on("apps", "first", "a", None));
    defaults.push_str(&rule_on("apps", "second", "b", None));
    let c = compiled(&defaults);
    let cookie = |c: &Compiled, path: &str| match guard_policy(c, path) {
        Some(Ok(p)) => p.cookie_name.clone(),
        other => panic!("{path}: {:?}", other.map(|r| r.map(|p| p.rule.clone()))),
    };
    let (a, b) = (cookie(&c, "/a"), cookie(&c, "/b"));
    assert_eq!(
        a, "AWSELBAuthSessionCookie",
        "the oldest rule keeps ALB's name"
    );
    assert!(b.starts_with("AWSELBAuthSessionCookie-") && b != a, "{b}");
    assert_eq!(
        cookie(&compiled(&defaults), "/b"),
        b,
        "stable across compiles"
    );

    let mut named = yaml;
    named.push_str(&rule_on("apps", "first", "a", Some("same")));
    named.push_str(&rule_on("apps", "second", "b", Some("same")));
    let c = compiled(&named);
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "CookieNameConflict")
        .unwrap();
    assert_eq!(d.object, ObjectRef::new("AuthRule", "apps", "second"));
    assert_eq!(d.field, "spec.session.cookieName");
}

#[test]
fn an_authrule_wins_over_alb_annotations_on_the_same_ingress() {
    let ingress = INGRESS.replace(
        "metadata: {name: web, namespace: apps}",
        "metadata:\n  name: web\n  namespace: apps\n  annotations:\n    alb.ingress.kubernetes.io/scheme: internet-facing\n    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: '{\"issuer\":\"https://alb.example.com\",\"secretName\":\"alb\"}'",
    );
    let mut yaml = format!("{ingress}{}", service("apps", "root", "10.0.0.1", 80));
    yaml.push_str("---\napiVersion: v1\nkind: Secret\nmetadata: {name: alb, namespace: apps}\nstringData: {clientID: a, clientSecret: b}\n");
    let annotated = compiled(&yaml);
    match guard_policy(&annotated, "/") {
        Some(Ok(p)) => assert_eq!(
            (
                p.issuer.as_str(),
                p.client_id.as_str(),
                p.rule.kind.as_str()
            ),
            ("https://alb.example.com", "a", "Ingress")
        ),
        _ => panic!("the annotations guard the Ingress"),
    }
    yaml.push_str(&rule_on("apps", "first", "web", None));
    let both = compiled(&yaml);
    match guard_policy(&both, "/") {
        Some(Ok(p)) => assert_eq!(p.issuer, "https://idp.test"),
        _ => panic!("the AuthRule guards the Ingress"),
    }
    assert!(
        both.diagnostics
            .iter()
            .any(|d| d.reason == "AnnotationsOverridden")
    );
}

#[test]
fn alb_annotations_that_ask_for_a_login_they_cannot_have_close_the_routes() {
    let with = |annotations: &str| {
        let ingress = INGRESS.replace(
            "metadata: {name: web, namespace: apps}",
            &format!("metadata:\n  name: web\n  namespace: apps\n  annotations:\n    alb.ingress.kubernetes.io/scheme: internet-facing\n{annotations}"),
        );
        compiled(&format!(
            "{ingress}{}",
            service("apps", "root", "10.0.0.1", 80)
        ))
    };
    for broken in [
        "    alb.ingress.kubernetes.io/auth-type: oidc\n",
        "    alb.ingress.kubernetes.io/auth-type: cognito\n",
        "    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: '{\"issuer\":\"https://alb.example.com\",\"secretName\":\"missing\"}'\n",
        "    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: 'not json'\n",
    ] {
        let c = with(broken);
        assert!(
            matches!(guard_policy(&c, "/"), Some(Err(_))),
            "closed, not served without a login: {broken}"
        );
        assert!(
            c.diagnostics.iter().any(|d| d
                .field
                .starts_with("metadata.annotations[alb.ingress.kubernetes.io/")),
            "{:#?}",
            c.diagnostics
        );
    }
    let open = with("    alb.ingress.kubernetes.io/auth-type: none\n");
    assert!(
        guard_policy(&open, "/").is_none(),
        "auth-type none asks for no login"
    );
}

/// The Ingress fixture with these annotations (each line indented by four spaces),
/// its Services, and whatever else `extra` adds.
fn annotated(annotations: &str, extra: &str) -> Compiled {
    let ingress = INGRESS.replace(
        "metadata: {name: web, namespace: apps}",
        &format!("metadata:\n  name: web\n  namespace: apps\n  annotations:\n{annotations}"),
    );
    compiled(&format!(
        "{ingress}{}{extra}",
        service("apps", "root", "10.0.0.1", 80)
    ))
}

/// The problems reported on annotations (the fixture's other Services are missing),
/// besides those ignored.
fn annotation_problems(c: &Compiled) -> Vec<String> {
    c.diagnostics
        .iter()
        .filter(|d| d.field.starts_with("metadata.annotations") && d.reason != "IgnoredAnnotation")
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

const INTERNET_FACING: &str = "    alb.ingress.kubernetes.io/scheme: internet-facing\n";

fn bearer_guard(c: &Compiled) -> Option<Arc<bearer::BearerPolicy>> {
    let route = c.snapshot.routes.find("app.example.com", "/")?;
    match &route.guard_for("/")?.policy {
        GuardPolicy::Bearer(b) => Some(b.clone()),
        _ => None,
    }
}

const JWT: &str = r#"    alb.ingress.kubernetes.io/jwt-validation: '{"jwksEndpoint":"https://idp.test/jwks","issuer":"https://idp.test","additionalClaims":[{"name":"scope","format":"space-separated-values","values":["api:read"]}]}'
"#;

#[test]
fn jwt_validation_alone_guards_with_bearer_tokens_only() {
    let c = annotated(
        &format!(
            "{INTERNET_FACING}{JWT}    portcullis.dev/jwt-audiences: https://api.test, other\n"
        ),
        "",
    );
    assert_eq!(annotation_problems(&c), Vec::<String>::new());
    let b = bearer_guard(&c).expect("a bearer-only guard");
    assert_eq!(b.issuer, "https://idp.test");
    assert_eq!(b.jwks_uri.as_deref(), Some("https://idp.test/jwks"));
    assert_eq!(b.audiences, ["https://api.test", "other"]);
    assert!(!b.any_audience);
    assert_eq!(b.claims.len(), 1);
    // Every path of the Ingress, as ALB's action on its rules.
    let api = c.snapshot.routes.find("app.example.com", "/api/x").unwrap();
    assert!(matches!(
        api.guard_for("/api/x").map(|g| &g.policy),
        Some(GuardPolicy::Bearer(_))
    ));
    assert!(
        c.snapshot
            .routes
            .oidc_policies("app.example.com", None, None)
            .is_empty(),
        "no login endpoints"
    );

    let any = annotated(
        &format!("{INTERNET_FACING}{JWT}    portcullis.dev/jwt-audiences: \"*\"\n"),
        "",
    );
    assert_eq!(annotation_problems(&any), Vec::<String>::new());
    assert!(bearer_guard(&any).unwrap().any_audience);
}

#[test]
fn jwt_validation_without_audiences_or_well_formed_json_closes_the_routes() {
    let no_claims = JWT.replace(
        r#","additionalClaims":[{"name":"scope","format":"space-separated-values","values":["api:read"]}]"#,
        "",
    );
    for (annotations, field) in [
        (
            JWT.to_owned(),
            "metadata.annotations[portcullis.dev/jwt-audiences]",
        ),
        (
            format!("{no_claims}    portcullis.dev/jwt-audiences: \"*\"\n"),
            "metadata.annotations[portcullis.dev/jwt-audiences]",
        ),
        (
            format!("{JWT}    portcullis.dev/jwt-audiences: \"a, *\"\n"),
            "metadata.annotations[portcullis.dev/jwt-audiences]",
        ),
        (
            "    alb.ingress.kubernetes.io/jwt-validation: '{\"issuer\":\"https://idp.test\"}'\n    portcullis.dev/jwt-audiences: a\n".to_owned(),
            "metadata.annotations[alb.ingress.kubernetes.io/jwt-validation]",
        ),
        (
            JWT.replace("https://idp.test\",\"add", "http://idp.test\",\"add")
                + "    portcullis.dev/jwt-audiences: a\n",
            "metadata.annotations[alb.ingress.kubernetes.io/jwt-validation].issuer",
        ),
        (
            JWT.replace("https://idp.test/jwks", "https://169.254.169.254/jwks")
                + "    portcullis.dev/jwt-audiences: a\n",
            "metadata.annotations[alb.ingress.kubernetes.io/jwt-validation].jwksEndpoint",
        ),
    ] {
        let c = annotated(&format!("{INTERNET_FACING}{annotations}"), "");
        assert!(
            matches!(guard_policy(&c, "/"), Some(Err(_))),
            "closed: {annotations}"
        );
        assert!(
            c.diagnostics.iter().any(|d| d.field == field),
            "{field}: {:#?}",
            c.diagnostics
        );
    }
}

#[test]
fn jwt_validation_beside_a_login_is_the_rules_bearer_check() {
    let c = annotated(
        &format!(
            "{INTERNET_FACING}    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: '{{\"issuer\":\"https://alb.example.com\",\"secretName\":\"alb\"}}'\n{JWT}    portcullis.dev/jwt-audiences: \"*\"\n"
        ),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: alb, namespace: apps}\nstringData: {clientID: a, clientSecret: b}\n",
    );
    assert_eq!(annotation_problems(&c), Vec::<String>::new());
    let p = guard_policy(&c, "/").unwrap().unwrap();
    let b = p.bearer.as_ref().expect("tokens beside sessions");
    assert_eq!(b.issuer, "https://idp.test");
    assert!(b.any_audience);
}

#[test]
fn cognito_annotations_become_the_user_pools_oidc_login() {
    let cognito = r#"    alb.ingress.kubernetes.io/auth-type: cognito
    alb.ingress.kubernetes.io/auth-idp-cognito: '{"userPoolARN":"arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbC123","userPoolClientID":"4abc5def","userPoolDomain":"my-app"}'
"#;
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: cognito, namespace: apps}\nstringData: {clientSecret: s}\n";
    let c = annotated(
        &format!("{INTERNET_FACING}{cognito}    portcullis.dev/cognito-client-secret: cognito\n"),
        secret,
    );
    assert_eq!(annotation_problems(&c), Vec::<String>::new());
    let p = guard_policy(&c, "/").unwrap().unwrap();
    assert_eq!(
        p.issuer,
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
    );
    let base = "https://my-app.auth.eu-west-1.amazoncognito.com/oauth2";
    assert_eq!(
        p.authorization_endpoint.as_deref(),
        Some(format!("{base}/authorize").as_str())
    );
    assert_eq!(
        p.token_endpoint.as_deref(),
        Some(format!("{base}/token").as_str())
    );
    assert_eq!(
        p.user_info_endpoint.as_deref(),
        Some(format!("{base}/userInfo").as_str())
    );
    assert_eq!(
        (p.client_id.as_str(), p.credential.fingerprint().as_str()),
        ("4abc5def", "s")
    );

    // ALB reads the secret from Cognito; here a Secret must hold it, or the routes close.
    for (annotations, extra, field) in [
        (cognito.to_owned(), secret, "metadata.annotations[portcullis.dev/cognito-client-secret]"),
        (
            format!("{cognito}    portcullis.dev/cognito-client-secret: missing\n"),
            secret,
            "metadata.annotations[portcullis.dev/cognito-client-secret]",
        ),
        (
            cognito.replace("userpool/eu-west-1_AbC123", "group/x")
                + "    portcullis.dev/cognito-client-secret: cognito\n",
            secret,
            "metadata.annotations[alb.ingress.kubernetes.io/auth-idp-cognito]",
        ),
        (
            "    alb.ingress.kubernetes.io/auth-type: cognito\n    portcullis.dev/cognito-client-secret: cognito\n".to_owned(),
            secret,
            "metadata.annotations[alb.ingress.kubernetes.io/auth-idp-cognito]",
        ),
    ] {
        let c = annotated(&format!("{INTERNET_FACING}{annotations}"), extra);
        assert!(
            matches!(guard_policy(&c, "/"), Some(Err(_))),
            "closed: {annotations}"
        );
        assert!(
            c.diagnostics.iter().any(|d| d.field == field),
            "{field}: {:#?}",
            c.diagnostics
        );
    }
}

#[test]
fn inbound_cidrs_become_the_routes_source_allow_list() {
    let c = annotated(
        &format!(
            "{INTERNET_FACING}    alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8, 192.168.1.7/24 ,2001:db8::/32\n"
        ),
        "",
    );
    assert_eq!(annotation_problems(&c), Vec::<String>::new());
    for path in ["/", "/api/x", "/any"] {
        let route = c.snapshot.routes.find("app.example.com", path).unwrap();
        let sources = route.sources.as_ref().expect("every route of the Ingress");
        let admits = |ip: &str| sources.admits(Some(ip.parse().unwrap()));
        assert!(admits("10.200.0.1"));
        assert!(admits("192.168.1.200"), "host bits are dropped");
        assert!(admits("::ffff:10.0.0.1"), "IPv4 as IPv6 is IPv4");
        assert!(admits("2001:db8:1::5"));
        assert!(!admits("127.0.0.1"));
        assert!(!admits("192.168.2.1"));
        assert!(!admits("2001:db9::1"));
        assert!(!sources.admits(None));
        assert!(route.closed.is_none());
    }

    for bad in ["10.0.0.0/33", "10.0.0.1", "", "10.0.0.0/8,,", "any"] {
        let c = annotated(
            &format!("{INTERNET_FACING}    alb.ingress.kubernetes.io/inbound-cidrs: \"{bad}\"\n"),
            "",
        );
        let route = c.snapshot.routes.find("app.example.com", "/").unwrap();
        let closed = route
            .closed
            .as_ref()
            .expect("a malformed list closes the routes");
        assert_eq!(closed.reason, "AnnotationInvalid", "{bad}");
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.field == "metadata.annotations[alb.ingress.kubernetes.io/inbound-cidrs]")
            .unwrap_or_else(|| panic!("{bad}: {:#?}", c.diagnostics));
        assert_eq!(d.severity, crate::diagnostics::Severity::Error);
        assert!(d.fix.contains("10.0.0.0/8"), "{}", d.fix);
    }
}

#[test]
fn access_controls_portcullis_cannot_give_close_the_routes_unless_accepted() {
    for (annotation, name) in [
        ("    alb.ingress.kubernetes.io/scheme: internal\n", "scheme"),
        ("    alb.ingress.kubernetes.io/target-type: ip\n", "scheme"),
        (
            "    alb.ingress.kubernetes.io/wafv2-acl-arn: arn:aws:wafv2:us-east-1:1:regional/webacl/x/y\n",
            "wafv2-acl-arn",
        ),
        (
            "    alb.ingress.kubernetes.io/waf-acl-id: abc\n",
            "waf-acl-id",
        ),
        (
            "    alb.ingress.kubernetes.io/shield-advanced-protection: \"true\"\n",
            "shield-advanced-protection",
        ),
        (
            "    alb.ingress.kubernetes.io/security-groups: sg-1, sg-2\n",
            "security-groups",
        ),
        (
            "    alb.ingress.kubernetes.io/security-group-prefix-lists: pl-1\n",
            "security-group-prefix-lists",
        ),
    ] {
        let scheme = if name == "scheme" {
            ""
        } else {
            INTERNET_FACING
        };
        let c = annotated(&format!("{scheme}{annotation}"), "");
        let route = c.snapshot.routes.find("app.example.com", "/").unwrap();
        let closed = route
            .closed
            .as_ref()
            .unwrap_or_else(|| panic!("{name} closes"));
        assert_eq!(closed.reason, "AnnotationNotHonoured");
        assert!(closed.problem.contains(name), "{}", closed.problem);
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.field == format!("metadata.annotations[alb.ingress.kubernetes.io/{name}]"))
            .unwrap_or_else(|| panic!("{name}: {:#?}", c.diagnostics));
        assert_eq!(d.severity, crate::diagnostics::Severity::Error);
        assert!(
            d.fix
                .contains(&format!("portcullis.dev/accept-alb-differences: {name}")),
            "{}",
            d.fix
        );
        // The operator who put the control in front says so, and the routes open.
        let accepted = annotated(
            &format!(
                "{scheme}{annotation}    portcullis.dev/accept-alb-differences: waf-acl-id, {name}\n"
            ),
            "",
        );
        let route = accepted
            .snapshot
            .routes
            .find("app.example.com", "/")
            .unwrap();
        assert!(route.closed.is_none(), "{name}: {:?}", route.closed);
        assert_eq!(annotation_problems(&accepted), Vec::<String>::new());
        assert!(
            !accepted.diagnostics.iter().any(|d| d.field.contains(name)),
            "an accepted annotation is read, not reported as ignored: {:#?}",
            accepted.diagnostics
        );
        // Or says so for every Ingress.
        let options = CompileOptions {
            accept_alb_differences: vec![name.to_owned()],
            ..CompileOptions::default()
        };
        let ingress = INGRESS.replace(
            "metadata: {name: web, namespace: apps}",
            &format!(
                "metadata:\n  name: web\n  namespace: apps\n  annotations:\n{scheme}{annotation}"
            ),
        );
        let global = compile(&objects(&ingress), &options);
        let route = global.snapshot.routes.find("app.example.com", "/").unwrap();
        assert!(route.closed.is_none(), "{name}: {:?}", route.closed);
    }
    // What asks for nothing closes nothing.
    for open in [
        "    alb.ingress.kubernetes.io/shield-advanced-protection: \"false\"\n",
        "    alb.ingress.kubernetes.io/mutual-authentication: '[{\"port\":443,\"mode\":\"off\"}]'\n",
        "    alb.ingress.kubernetes.io/wafv2-acl-arn: \"\"\n",
    ] {
        let c = annotated(&format!("{INTERNET_FACING}{open}"), "");
        let route = c.snapshot.routes.find("app.example.com", "/").unwrap();
        assert!(route.closed.is_none(), "{open}");
    }
    let plain = compiled(INGRESS);
    let route = plain.snapshot.routes.find("app.example.com", "/").unwrap();
    assert!(
        route.closed.is_none() && route.sources.is_none(),
        "an Ingress not written for ALB is not internal by ALB's default"
    );
    // A malformed value closes too, and a typo in the acceptance is reported.
    let c = annotated(
        &format!(
            "{INTERNET_FACING}    alb.ingress.kubernetes.io/mutual-authentication: verify\n    portcullis.dev/accept-alb-differences: wafv2\n"
        ),
        "",
    );
    let route = c.snapshot.routes.find("app.example.com", "/").unwrap();
    assert_eq!(route.closed.as_ref().unwrap().reason, "AnnotationInvalid");
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.field == "metadata.annotations[portcullis.dev/accept-alb-differences]"),
        "{:#?}",
        c.diagnostics
    );
}

#[test]
fn a_source_allow_list_keeps_its_routes_logins_from_other_networks() {
    let c = annotated(
        &format!(
            "{INTERNET_FACING}    alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8\n    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: '{{\"issuer\":\"https://alb.example.com\",\"secretName\":\"alb\"}}'\n"
        ),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: alb, namespace: apps}\nstringData: {clientID: a, clientSecret: b}\n",
    );
    assert_eq!(annotation_problems(&c), Vec::<String>::new());
    let routes = &c.snapshot.routes;
    let inside = Some("10.1.2.3".parse().unwrap());
    let outside = Some("127.0.0.1".parse().unwrap());
    assert_eq!(
        routes.oidc_policies("app.example.com", inside, None).len(),
        1
    );
    assert!(
        routes
            .oidc_policies("app.example.com", outside, None)
            .is_empty()
    );
    assert!(
        routes
            .oidc_policies("app.example.com", None, None)
            .is_empty()
    );
}

#[test]
fn an_ingress_group_shares_its_load_balancers_access_controls() {
    let member = |name: &str, host: &str, annotations: &str| {
        ingress(
            "apps",
            name,
            Some(host),
            "/",
            &format!(
                ", annotations: {{alb.ingress.kubernetes.io/group.name: g, alb.ingress.kubernetes.io/scheme: internet-facing{annotations}}}"
            ),
        )
    };
    let svc = service("apps", "svc", "10.0.0.1", 80);
    let c = compiled(&format!(
        "{}{}{svc}",
        member(
            "a",
            "a.test",
            ", alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8"
        ),
        member("b", "b.test", "")
    ));
    let route = c.snapshot.routes.find("b.test", "/").expect("b is served");
    let sources = route.sources.as_ref().expect("the group's inbound-cidrs");
    assert!(sources.admits(Some("10.1.2.3".parse().unwrap())));
    assert!(!sources.admits(Some("203.0.113.5".parse().unwrap())));
    // Members that disagree (AWS's controller refuses the group) close their routes.
    let c = compiled(&format!(
        "{}{}{svc}",
        member(
            "a",
            "a.test",
            ", alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8"
        ),
        member(
            "b",
            "b.test",
            ", alb.ingress.kubernetes.io/inbound-cidrs: 0.0.0.0/0"
        )
    ));
    for host in ["a.test", "b.test"] {
        let route = c.snapshot.routes.find(host, "/").expect("served");
        assert_eq!(
            route.closed.as_ref().map(|c| c.reason),
            Some("AnnotationInvalid"),
            "{host}"
        );
    }
    // Another group, or none, is not affected.
    let c = compiled(&format!(
        "{}{}{svc}",
        member(
            "a",
            "a.test",
            ", alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8"
        ),
        member("b", "b.test", "").replace("group.name: g", "group.name: h")
    ));
    let route = c.snapshot.routes.find("b.test", "/").expect("served");
    assert!(route.sources.is_none() && route.closed.is_none());
}
