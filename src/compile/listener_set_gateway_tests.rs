//! ListenerSets as the Gateway compile serves them: status, routes and guards.

use crate::compile::tests_support::{backend_label, compiled, service};
use crate::compile::{Compiled, ListenerState};
use crate::diagnostics::ObjectRef;

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: teams, labels: {listeners: allowed}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: portcullis
  allowedListeners: {namespaces: {from: Selector, selector: {matchLabels: {listeners: allowed}}}}
  listeners:
  - {name: main, port: 80, protocol: HTTP, hostname: main.example.com, allowedRoutes: {namespaces: {from: All}}}
"#;

fn set(ns: &str, name: &str, created: &str, listeners: &str) -> String {
    format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\", generation: 2}}\nspec:\n  parentRef: {{name: edge, namespace: infra}}\n  listeners:\n{listeners}\n"
    )
}

fn route(ns: &str, name: &str, parents: &str, prefix: &str, backend: &str) -> String {
    format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: {parents}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}

fn listener<'c>(c: &'c Compiled, ns: &str, set: &str, name: &str) -> &'c ListenerState {
    let set = &c.gateway_status.listener_sets[&ObjectRef::new("ListenerSet", ns, set)];
    set.listeners.iter().find(|l| l.name == name).unwrap()
}

fn reasons(conditions: &[crate::compile::Cond]) -> Vec<String> {
    let mut out: Vec<String> = (conditions.iter())
        .map(|c| format!("{}={}/{}", c.kind, c.ok, c.reason))
        .collect();
    out.sort();
    out
}

fn set_conditions(c: &Compiled, ns: &str, name: &str) -> Vec<String> {
    reasons(&c.gateway_status.listener_sets[&ObjectRef::new("ListenerSet", ns, name)].conditions)
}

#[test]
fn listeners_merge_after_the_gateways_own_and_older_sets_win_conflicts() {
    let yaml = [
        GATEWAY,
        &set(
            "teams",
            "first",
            "2024-01-01T00:00:00Z",
            "  - {name: shop, port: 80, protocol: HTTP, hostname: shop.example.com}\n  - {name: raw, port: 80, protocol: TCP}\n  - {name: taken, port: 80, protocol: HTTP, hostname: MAIN.example.com}",
        ),
        &set(
            "teams",
            "second",
            "2024-01-02T00:00:00Z",
            "  - {name: shop, port: 80, protocol: HTTP, hostname: shop.example.com}",
        ),
        // Not in a namespace the selector admits.
        &set(
            "infra",
            "outsider",
            "2023-01-01T00:00:00Z",
            "  - {name: early, port: 80, protocol: HTTP, hostname: early.example.com}",
        ),
    ]
    .concat();
    let c = compiled(&yaml);
    let gateway = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "edge")];
    assert_eq!(gateway.attached_listener_sets, Some(1));
    assert_eq!(
        gateway.listeners.len(),
        1,
        "a set's listeners are in its own status"
    );
    assert!(reasons(&gateway.conditions).contains(&"Accepted=true/Accepted".to_owned()));
    assert_eq!(
        set_conditions(&c, "teams", "first"),
        [
            "Accepted=true/ListenersNotValid",
            "Programmed=true/Programmed"
        ]
    );
    assert_eq!(
        reasons(&listener(&c, "teams", "first", "shop").conditions),
        [
            "Accepted=true/Accepted",
            "Conflicted=false/NoConflicts",
            "Programmed=true/Programmed",
            "ResolvedRefs=true/ResolvedRefs"
        ]
    );
    let raw = reasons(&listener(&c, "teams", "first", "raw").conditions);
    assert!(
        raw.contains(&"Accepted=false/ProtocolConflict".to_owned()),
        "{raw:?}"
    );
    assert!(
        raw.contains(&"Conflicted=true/ProtocolConflict".to_owned()),
        "{raw:?}"
    );
    assert!(
        raw.contains(&"Programmed=false/ProtocolConflict".to_owned()),
        "{raw:?}"
    );
    let taken = reasons(&listener(&c, "teams", "first", "taken").conditions);
    assert!(
        taken.contains(&"Conflicted=true/HostnameConflict".to_owned()),
        "{taken:?}"
    );
    assert_eq!(
        set_conditions(&c, "teams", "second"),
        [
            "Accepted=false/ListenersNotValid",
            "Programmed=false/ListenersNotValid"
        ]
    );
    assert_eq!(
        set_conditions(&c, "infra", "outsider"),
        ["Accepted=false/NotAllowed", "Programmed=false/NotAllowed"]
    );
    // `check` says which listener lost to which, and which set is not admitted.
    let said: Vec<(String, &str, &str)> = (c.diagnostics.iter())
        .filter(|d| d.object.kind == "ListenerSet")
        .map(|d| (d.object.name.clone(), d.field.as_str(), d.reason))
        .collect();
    assert!(said.contains(&("first".into(), "spec.listeners[1]", "ProtocolConflict")));
    assert!(said.contains(&("first".into(), "spec.listeners[2]", "HostnameConflict")));
    assert!(said.contains(&("second".into(), "spec.listeners[0]", "HostnameConflict")));
    assert!(said.contains(&("outsider".into(), "spec.parentRef", "ListenerSetNotAllowed")));
    let lost = c
        .diagnostics
        .iter()
        .find(|d| d.object.name == "second")
        .unwrap();
    assert!(
        lost.message
            .contains("listener shop of ListenerSet teams/first"),
        "{}",
        lost.message
    );
}

fn routed() -> Compiled {
    let yaml = [
        GATEWAY,
        &service("infra", "web", "10.0.0.1", 8080),
        &service("teams", "shop", "10.0.0.2", 8080),
        &set(
            "teams",
            "shop",
            "2024-01-01T00:00:00Z",
            "  - {name: a, port: 80, protocol: HTTP, hostname: a.shop.example.com}\n  - {name: b, port: 80, protocol: HTTP, hostname: b.shop.example.com}",
        ),
        &route("infra", "main", "[{name: edge}]", "/", "web"),
        &route(
            "teams",
            "on-set",
            "[{kind: ListenerSet, group: gateway.networking.k8s.io, name: shop}]",
            "/",
            "shop",
        ),
        &route(
            "teams",
            "on-a",
            "[{kind: ListenerSet, group: gateway.networking.k8s.io, name: shop, sectionName: a}]",
            "/only-a",
            "shop",
        ),
        // The set's listener names are not the Gateway's.
        &route(
            "teams",
            "wrong-parent",
            "[{name: edge, namespace: infra, sectionName: a}]",
            "/wrong",
            "shop",
        ),
        // Listeners admit routes of the set's own namespace by default.
        &route(
            "infra",
            "from-infra",
            "[{kind: ListenerSet, group: gateway.networking.k8s.io, name: shop, namespace: teams}]",
            "/infra",
            "web",
        ),
    ]
    .concat();
    compiled(&yaml)
}

fn served(c: &Compiled, host: &str, path: &str) -> Option<String> {
    c.snapshot
        .routes
        .find(host, path)
        .map(|r| backend_label(&r.backend))
}

fn first_parent(c: &Compiled, ns: &str, name: &str) -> Vec<String> {
    reasons(&c.gateway_status.routes[&ObjectRef::new("HTTPRoute", ns, name)].parents[0].conditions)
}

#[test]
fn routes_attach_to_a_set_by_its_own_parent_ref_and_serve_its_hostnames_only() {
    let c = routed();
    assert_eq!(
        served(&c, "main.example.com", "/x").as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(
        served(&c, "a.shop.example.com", "/x").as_deref(),
        Some("10.0.0.2:8080")
    );
    assert_eq!(
        served(&c, "b.shop.example.com", "/x").as_deref(),
        Some("10.0.0.2:8080")
    );
    // A route of the Gateway does not serve the set's hostnames, nor one of the set
    // the Gateway's.
    assert_eq!(
        served(&c, "main.example.com", "/only-a"),
        served(&c, "main.example.com", "/")
    );
    assert_eq!(
        served(&c, "b.shop.example.com", "/only-a").as_deref(),
        Some("10.0.0.2:8080")
    );
    let on_a = c
        .snapshot
        .routes
        .find("a.shop.example.com", "/only-a/x")
        .unwrap();
    assert_eq!(on_a.ingress, ObjectRef::new("HTTPRoute", "teams", "on-a"));
    let on_b = c
        .snapshot
        .routes
        .find("b.shop.example.com", "/only-a/x")
        .unwrap();
    assert_eq!(on_b.ingress, ObjectRef::new("HTTPRoute", "teams", "on-set"));
    assert_eq!(listener(&c, "teams", "shop", "a").attached_routes, 2);
    assert_eq!(listener(&c, "teams", "shop", "b").attached_routes, 1);
    let gateway = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "edge")];
    assert_eq!(gateway.listeners[0].attached_routes, 1);
    assert!(
        first_parent(&c, "teams", "wrong-parent")
            .contains(&"Accepted=false/NoMatchingParent".to_owned())
    );
    assert!(
        first_parent(&c, "infra", "from-infra")
            .contains(&"Accepted=false/NotAllowedByListeners".to_owned())
    );
    assert!(first_parent(&c, "teams", "on-a").contains(&"Accepted=true/Accepted".to_owned()));
}

#[test]
fn an_authrule_on_the_gateway_guards_the_routes_of_its_listener_sets() {
    let rule = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: infra}
stringData: {client-secret: s3cret}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: infra}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  oidc: {issuer: "https://idp.example.com", clientId: c, clientSecretRef: {name: idp}}
"#;
    let yaml = [
        GATEWAY,
        &service("teams", "shop", "10.0.0.2", 8080),
        &set(
            "teams",
            "shop",
            "2024-01-01T00:00:00Z",
            "  - {name: a, port: 80, protocol: HTTP, hostname: a.shop.example.com}",
        ),
        &route(
            "teams",
            "on-set",
            "[{kind: ListenerSet, group: gateway.networking.k8s.io, name: shop}]",
            "/",
            "shop",
        ),
        rule,
    ]
    .concat();
    let c = compiled(&yaml);
    let route = c.snapshot.routes.find("a.shop.example.com", "/x").unwrap();
    assert_eq!(backend_label(&route.backend), "10.0.0.2:8080");
    assert!(!route.guards.is_empty(), "the Gateway's AuthRule guards it");
}
