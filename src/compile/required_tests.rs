//! Routes that wait for their AuthRule: `portcullis.dev/auth-rule` and
//! `--require-auth-rule`.

use super::tests::{compiled, objects, service};
use super::*;

fn ingress(name: &str, host: &str, annotations: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: apps, annotations: {{{annotations}}}}}
spec:
  ingressClassName: portcullis
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}
"#
    )
}

fn rule(name: &str, target: &str) -> String {
    format!(
        r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: {name}, namespace: apps}}
spec:
  targetRefs: [{{name: {target}}}]
  oidc: {{issuer: https://idp.example.com, clientId: app, clientSecretRef: {{name: idp}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp, namespace: apps}}
stringData: {{client-secret: s}}
"#
    )
}

/// The guard the request meets: `open`, `oidc`, or the closed policy's name.
fn verdict(c: &Compiled, host: &str) -> &'static str {
    let route = c.snapshot.routes.find(host, "/x").expect("a route");
    match route.guard_for("/x").map(|g| &g.policy) {
        None => "open",
        Some(GuardPolicy::Oidc(_)) => "oidc",
        Some(GuardPolicy::Bearer(_)) => "bearer",
        Some(GuardPolicy::Broken(_)) => "broken",
        Some(GuardPolicy::Pending(_)) => "pending",
    }
}

fn reasons(c: &Compiled) -> Vec<(&str, &str, &str)> {
    c.diagnostics
        .iter()
        .map(|d| (d.object.name.as_str(), d.field.as_str(), d.reason))
        .collect()
}

const ANNOTATED: &str = r#""portcullis.dev/auth-rule": sso"#;

#[test]
fn an_ingress_naming_a_missing_rule_is_closed_until_the_rule_attaches() {
    let app = service("apps", "app", "10.0.0.1", 80);
    let alone = compiled(&format!("{}{app}", ingress("web", "a.test", ANNOTATED)));
    assert_eq!(verdict(&alone, "a.test"), "pending");
    let field = r#"metadata.annotations["portcullis.dev/auth-rule"]"#;
    assert_eq!(reasons(&alone), [("web", field, "AuthRulePending")]);
    assert!(
        alone.diagnostics[0]
            .message
            .contains("AuthRule apps/sso does not exist")
    );

    let with_rule = format!(
        "{}{app}{}",
        ingress("web", "a.test", ANNOTATED),
        rule("sso", "web")
    );
    let c = compiled(&with_rule);
    assert_eq!(verdict(&c, "a.test"), "oidc");
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
}

#[test]
fn a_named_rule_that_targets_something_else_keeps_the_route_closed() {
    let yaml = format!(
        "{}{}{}{}",
        ingress("web", "a.test", ANNOTATED),
        ingress("other", "b.test", ""),
        service("apps", "app", "10.0.0.1", 80),
        rule("sso", "other")
    );
    let c = compiled(&yaml);
    assert_eq!(verdict(&c, "a.test"), "pending");
    assert_eq!(verdict(&c, "b.test"), "oidc");
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.object.name == "web")
        .unwrap();
    assert!(
        d.message.contains("does not target this Ingress"),
        "{}",
        d.message
    );
    assert!(d.fix.contains("spec.targetRefs"), "{}", d.fix);
}

#[test]
fn a_broken_named_rule_closes_with_its_own_error() {
    let yaml = format!(
        "{}{}{}",
        ingress("web", "a.test", ANNOTATED),
        service("apps", "app", "10.0.0.1", 80),
        rule("sso", "web").replace(
            "clientSecretRef: {name: idp}",
            "clientSecretRef: {name: gone}"
        )
    );
    assert_eq!(verdict(&compiled(&yaml), "a.test"), "broken");
}

#[test]
fn every_named_rule_must_attach() {
    let annotations = r#""portcullis.dev/auth-rule": "sso, audit""#;
    let yaml = format!(
        "{}{}{}",
        ingress("web", "a.test", annotations),
        service("apps", "app", "10.0.0.1", 80),
        rule("sso", "web")
    );
    let c = compiled(&yaml);
    assert_eq!(verdict(&c, "a.test"), "pending");
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.message.contains("AuthRule apps/audit"))
    );
}

#[test]
fn a_malformed_annotation_closes_the_route() {
    for annotations in [
        r#""portcullis.dev/auth-rule": "Not_A_Name""#,
        r#""portcullis.dev/auth-rule": "sso,""#,
        r#""portcullis.dev/auth": "off""#,
    ] {
        let yaml = format!(
            "{}{}{}",
            ingress("web", "a.test", annotations),
            service("apps", "app", "10.0.0.1", 80),
            rule("sso", "web")
        );
        let c = compiled(&yaml);
        assert_eq!(verdict(&c, "a.test"), "pending", "{annotations}");
    }
}

fn strict() -> CompileOptions {
    CompileOptions {
        require_auth_rule: true,
        ..CompileOptions::default()
    }
}

#[test]
fn require_auth_rule_closes_unguarded_routes_unless_marked_public() {
    let yaml = format!(
        "{}{}{}{}",
        ingress("guarded", "a.test", ""),
        ingress("plain", "b.test", ""),
        ingress("public", "c.test", r#""portcullis.dev/auth": none"#),
        service("apps", "app", "10.0.0.1", 80),
    ) + &rule("sso", "guarded");
    let c = compile(&objects(&yaml), &strict());
    assert_eq!(verdict(&c, "a.test"), "oidc");
    assert_eq!(verdict(&c, "b.test"), "pending");
    assert_eq!(verdict(&c, "c.test"), "open");
    let plain: Vec<_> = c
        .diagnostics
        .iter()
        .filter(|d| d.object.name == "plain")
        .collect();
    assert_eq!(plain.len(), 1);
    assert!(
        plain[0].fix.contains("portcullis.dev/auth: none"),
        "{}",
        plain[0].fix
    );
    // Without the flag nothing changes for routes that name no rule.
    assert_eq!(verdict(&compiled(&yaml), "b.test"), "open");
}

#[test]
fn require_auth_rule_covers_the_default_backend() {
    let yaml = format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: fallback, namespace: apps}}
spec:
  ingressClassName: portcullis
  defaultBackend: {{service: {{name: app, port: {{number: 80}}}}}}
{}"#,
        service("apps", "app", "10.0.0.1", 80)
    );
    let c = compile(&objects(&yaml), &strict());
    assert_eq!(verdict(&c, "any.test"), "pending");
}

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
"#;

fn http_route(name: &str, host: &str, annotations: &str, filter: &str) -> String {
    format!(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: apps, annotations: {{{annotations}}}}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [{host}]
  rules:
  - {filter}
"#
    )
}

const TO_APP: &str = "backendRefs: [{name: app, port: 80}]";

#[test]
fn http_routes_wait_for_their_rule_too() {
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("apps", "app", "10.0.0.1", 80),
        http_route("web", "a.test", ANNOTATED, TO_APP),
        http_route("plain", "b.test", "", TO_APP),
    );
    let c = compiled(&yaml);
    assert_eq!(verdict(&c, "a.test"), "pending");
    assert_eq!(verdict(&c, "b.test"), "open");
    let rule = rule("sso", "web").replace(
        "targetRefs: [{name: web}]",
        "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}]",
    );
    assert_eq!(
        verdict(&compiled(&format!("{yaml}{rule}")), "a.test"),
        "oidc"
    );
}

#[test]
fn require_auth_rule_leaves_plain_redirects_alone() {
    let redirect =
        "filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]";
    let yaml = format!(
        "{GATEWAY}{}{}",
        service("apps", "app", "10.0.0.1", 80),
        http_route("upgrade", "a.test", "", redirect),
    );
    let c = compile(&objects(&yaml), &strict());
    assert_eq!(verdict(&c, "a.test"), "open");
}

#[test]
fn require_auth_rule_closes_the_rules_of_a_route_its_authrule_leaves_out() {
    let two_rules = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  hostnames: [a.test]
  rules:
  - name: admin
    matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: app, port: 80}]
  - name: shop
    matches: [{path: {type: PathPrefix, value: /shop}}]
    backendRefs: [{name: app, port: 80}]
"#;
    let rule = rule("sso", "web").replace(
        "targetRefs: [{name: web}]",
        "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: admin}]",
    );
    let yaml = format!(
        "{GATEWAY}{}{two_rules}{rule}",
        service("apps", "app", "10.0.0.1", 80)
    );
    let c = compile(&objects(&yaml), &strict());
    let policy = |path: &str| {
        let route = c.snapshot.routes.find("a.test", path).expect("a route");
        match route.guard_for(path).map(|g| &g.policy) {
            Some(GuardPolicy::Oidc(_)) => "oidc",
            Some(GuardPolicy::Pending(_)) => "pending",
            _ => "other",
        }
    };
    assert_eq!(policy("/admin/x"), "oidc");
    assert_eq!(policy("/shop/x"), "pending");
    // Without the flag the rule's choice stands.
    let open = compiled(&yaml);
    let shop = open.snapshot.routes.find("a.test", "/shop/x").unwrap();
    assert!(shop.guard_for("/shop/x").is_none());
}

/// A filter of a later or experimental channel (`ExternalAuth`) is read, as the API
/// server hands it over, and its rule is closed: the route is reported, and the other
/// routes are served.
#[test]
fn a_filter_type_of_another_channel_closes_its_rule_and_no_other() {
    let unknown: gateway_api::httproutes::HttpRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "authz", "namespace": "apps"},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": ["a.test"],
            "rules": [{
                "filters": [{"type": "ExternalAuth", "externalAuth": {"protocol": "HTTP", "backendRef": {"name": "authz", "port": 8080}}}],
                "backendRefs": [{"name": "app", "port": 80}]
            }]
        }
    }))
    .expect("a route with a filter type of another channel is read");
    let yaml = format!(
        "{GATEWAY}{}{}",
        service("apps", "app", "10.0.0.1", 80),
        http_route("plain", "b.test", "", TO_APP),
    );
    let mut objects = objects(&yaml);
    objects.http_routes.push(std::sync::Arc::new(unknown));
    let c = compile(&objects, &CompileOptions::default());
    assert!(
        reasons(&c).contains(&("authz", "spec.rules[0].filters[0]", "UnsupportedValue")),
        "{:?}",
        reasons(&c)
    );
    let closed = c.snapshot.routes.find("a.test", "/x").expect("a route");
    assert!(
        matches!(closed.backend, Backend::Invalid { .. }),
        "the rule with the unknown filter is closed"
    );
    let plain = c.snapshot.routes.find("b.test", "/x").expect("a route");
    assert!(matches!(plain.backend, Backend::Service(_)));
}
