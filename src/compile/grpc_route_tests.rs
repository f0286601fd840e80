//! GRPCRoutes compiled with everything else: attachment, status, backends, guards.

use super::tests_support::*;
use super::*;

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
  - name: http-only
    port: 8080
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}, kinds: [{kind: HTTPRoute}]}
"#;

const ECHO: &str = "pkg.Echo";

fn fixture(extra: &str) -> String {
    format!(
        "{GATEWAY}{}{}{extra}",
        service("apps", "one", "10.0.0.1", 3000),
        service("apps", "two", "10.0.0.2", 3000),
    )
}

fn grpc_route(name: &str, body: &str) -> String {
    format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{body}\n"
    )
}

/// The backend a POST to `path` reaches with these headers (`None`: no route).
fn call(c: &Compiled, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    route_of(c, path, headers).map(|r| backend_label(&r.backend))
}

/// The route of a POST to `path` with these headers.
fn route_of(c: &Compiled, path: &str, headers: &[(&str, &str)]) -> Option<Arc<Route>> {
    route_at(c, "grpc.example.com", path, headers)
}

fn route_at(c: &Compiled, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<Arc<Route>> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let route = c
        .snapshot
        .routes
        .find_for(&RouteQuery {
            host,
            path,
            method: &http::Method::POST,
            headers: &map,
            query: None,
            tls: false,
            https: false,
            client: None,
            socket: None,
        })
        .ok()?;
    route.cloned()
}

const GRPC: (&str, &str) = ("content-type", "application/grpc");

fn two_methods() -> Compiled {
    compiled(&fixture(&grpc_route(
        "echo",
        &format!(
            "  parentRefs: [{{name: edge, namespace: infra, sectionName: http}}]\n  hostnames: [grpc.example.com]\n  rules:\n  - matches: [{{method: {{service: {ECHO}, method: Echo}}}}]\n    backendRefs: [{{name: one, port: 80}}]\n  - matches: [{{method: {{service: {ECHO}, method: EchoTwo}}, headers: [{{name: version, value: two}}]}}]\n    backendRefs: [{{name: two, port: 80}}]"
        ),
    )))
}

#[test]
fn a_method_match_takes_grpc_calls_of_that_method_only() {
    let c = two_methods();
    assert_eq!(
        call(&c, "/pkg.Echo/Echo", &[GRPC]).as_deref(),
        Some("10.0.0.1:3000")
    );
    assert_eq!(
        call(&c, "/pkg.Echo/EchoTwo", &[GRPC, ("version", "two")]).as_deref(),
        Some("10.0.0.2:3000")
    );
    assert_eq!(call(&c, "/pkg.Echo/EchoTwo", &[GRPC]), None, "header");
    assert_eq!(call(&c, "/pkg.Echo/Other", &[GRPC]), None, "method");
    assert_eq!(call(&c, "/pkg.Echo/Echo/x", &[GRPC]), None, "exact");
    for not_grpc in [
        None,
        Some("application/json"),
        Some("application/grpc-web+proto"),
    ] {
        let headers: Vec<(&str, &str)> =
            not_grpc.map(|v| ("content-type", v)).into_iter().collect();
        assert_eq!(call(&c, "/pkg.Echo/Echo", &headers), None, "{not_grpc:?}");
    }
}

#[test]
fn a_grpc_route_speaks_h2c_to_its_backends_and_reports_its_status() {
    let c = two_methods();
    let route = route_of(&c, "/pkg.Echo/Echo", &[GRPC]);
    let Some(Backend::Service(up)) = route.as_ref().map(|r| &r.backend) else {
        panic!("a service backend");
    };
    assert_eq!(up.transport.version, BackendVersion::Grpc);
    assert_eq!(up.transport.tls, None);
    let state = &c.gateway_status.routes[&ObjectRef::new("GRPCRoute", "apps", "echo")];
    let conds: Vec<(&str, bool)> = state.parents[0]
        .conditions
        .iter()
        .map(|c| (c.kind, c.ok))
        .collect();
    assert_eq!(conds, [("Accepted", true), ("ResolvedRefs", true)]);
    let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "edge")];
    assert_eq!(gw.listeners[0].supported_kinds, ["HTTPRoute", "GRPCRoute"]);
    assert_eq!(gw.listeners[0].attached_routes, 1);
}

#[test]
fn a_listener_that_takes_only_httproutes_refuses_a_grpc_route() {
    let c = compiled(&fixture(&grpc_route(
        "echo",
        "  parentRefs: [{name: edge, namespace: infra, sectionName: http-only}]\n  rules:\n  - backendRefs: [{name: one, port: 80}]",
    )));
    let state = &c.gateway_status.routes[&ObjectRef::new("GRPCRoute", "apps", "echo")];
    let accepted = &state.parents[0].conditions[0];
    assert_eq!(
        (accepted.kind, accepted.ok, accepted.reason.as_str()),
        ("Accepted", false, "NotAllowedByListeners")
    );
    assert!(
        accepted.message.contains("GRPCRoutes"),
        "{}",
        accepted.message
    );
    assert!(c.snapshot.routes.all.is_empty());
}

#[test]
fn a_backend_in_another_namespace_needs_a_grant_for_grpc_routes() {
    let body = "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [grpc.example.com]\n  rules:\n  - backendRefs: [{name: one, namespace: apps, port: 80}]";
    let route = format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: far, namespace: infra}}\nspec:\n{body}\n"
    );
    let grant = |kind: &str| {
        format!(
            "\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: apps}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: infra}}]\n  to: [{{group: \"\", kind: Service}}]\n"
        )
    };
    let resolved = |extra: &str| {
        let c = compiled(&fixture(&format!("{route}{extra}")));
        let state = &c.gateway_status.routes[&ObjectRef::new("GRPCRoute", "infra", "far")];
        let cond = state.parents[0].conditions[1].clone();
        (cond.ok, cond.reason)
    };
    assert_eq!(resolved(""), (false, "RefNotPermitted".into()));
    assert_eq!(
        resolved(&grant("HTTPRoute")),
        (false, "RefNotPermitted".into()),
        "a grant for HTTPRoutes is not one for GRPCRoutes"
    );
    assert_eq!(resolved(&grant("GRPCRoute")), (true, "ResolvedRefs".into()));
}

fn auth_rule(spec: &str) -> String {
    format!(
        "\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: apps}}\nstringData: {{client-secret: s3cret}}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: sso, namespace: apps}}\nspec:\n{spec}\n"
    )
}

const OIDC: &str =
    "  oidc: {issuer: \"https://idp.example.com\", clientId: c, clientSecretRef: {name: idp}}";
const BEARER: &str = "  bearer: {issuer: \"https://idp.example.com\", audiences: [api], jwksUri: \"https://idp.example.com/jwks\"}";

#[test]
fn an_authrule_guards_a_grpc_route_or_one_named_rule_of_it() {
    let target = |section: &str| {
        format!(
            "  targetRefs: [{{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo{section}}}]\n{BEARER}"
        )
    };
    let body = format!(
        "  parentRefs: [{{name: edge, namespace: infra}}]\n  hostnames: [grpc.example.com]\n  rules:\n  - name: admin\n    matches: [{{method: {{service: {ECHO}, method: Admin}}}}]\n    backendRefs: [{{name: two, port: 80}}]\n  - backendRefs: [{{name: one, port: 80}}]"
    );
    let guarded = |c: &Compiled, path: &str| !route_of(c, path, &[GRPC]).unwrap().guards.is_empty();
    let whole = compiled(&fixture(&format!(
        "{}{}",
        grpc_route("echo", &body),
        auth_rule(&target(""))
    )));
    assert!(
        whole
            .diagnostics
            .iter()
            .all(|d| d.reason != "TargetNotFound"),
        "{:?}",
        whole.diagnostics
    );
    assert!(guarded(&whole, "/pkg.Echo/Admin"));
    assert!(guarded(&whole, "/pkg.Echo/Echo"));
    let one = compiled(&fixture(&format!(
        "{}{}",
        grpc_route("echo", &body),
        auth_rule(&target(", sectionName: admin"))
    )));
    assert!(guarded(&one, "/pkg.Echo/Admin"));
    assert!(!guarded(&one, "/pkg.Echo/Echo"));
    let ancestors =
        &one.gateway_status.policy_ancestors[&ObjectRef::new("AuthRule", "apps", "sso")];
    assert_eq!(ancestors[0].name, "edge");
}

#[test]
fn check_says_when_grpc_clients_cannot_log_in() {
    let body = "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [grpc.example.com]\n  rules:\n  - backendRefs: [{name: one, port: 80}]";
    let target = "  targetRefs: [{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo}]";
    let told = |spec: String| {
        let c = compiled(&fixture(&format!(
            "{}{}",
            grpc_route("echo", body),
            auth_rule(&spec)
        )));
        c.diagnostics
            .iter()
            .filter(|d| d.reason == "GrpcLoginOnly")
            .count()
    };
    assert_eq!(told(format!("{target}\n{OIDC}")), 1);
    assert_eq!(told(format!("{target}\n{OIDC}\n{BEARER}")), 0);
    assert_eq!(told(format!("{target}\n{BEARER}")), 0);
}

#[test]
fn a_wildcard_listener_serves_grpc_routes_at_any_depth_below_it() {
    let gateway = "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wild, namespace: apps}\nspec:\n  gatewayClassName: portcullis\n  listeners: [{name: w, port: 80, protocol: HTTP, hostname: \"*.bar.com\"}]\n";
    let route = grpc_route(
        "echo",
        "  parentRefs: [{name: wild}]\n  rules:\n  - backendRefs: [{name: one, port: 80}]",
    );
    let c = compiled(&fixture(&format!("{gateway}{route}")));
    for host in ["a.bar.com", "multiple.prefixes.bar.com"] {
        let found = route_at(&c, host, "/pkg.Echo/Echo", &[GRPC]);
        assert!(found.is_some(), "{host}");
    }
    assert!(route_at(&c, "bar.com", "/pkg.Echo/Echo", &[GRPC]).is_none());
}
