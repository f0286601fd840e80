use super::tests_support::*;
use super::*;

const CLASS_AND_GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra, generation: 3}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
  - name: same
    port: 8080
    protocol: HTTP
  - name: tcp
    port: 9000
    protocol: TCP
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: infra}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

fn route(ns: &str, name: &str, body: &str) -> String {
    format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n"
    )
}

fn fixture(extra: &str) -> String {
    format!(
        "{CLASS_AND_GATEWAY}{}{}{}{extra}",
        service("apps", "web", "10.0.0.1", 8080),
        service("apps", "api", "10.0.0.2", 8080),
        service("data", "store", "10.0.0.3", 8080),
    )
}

fn get(
    c: &Compiled,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    query: Option<&str>,
) -> Option<String> {
    lookup(c, host, path, headers, query).expect("the route can be decided")
}

/// The backend a request reaches, or the reason it is refused before any route.
fn lookup(
    c: &Compiled,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    query: Option<&str>,
) -> Result<Option<String>, &'static str> {
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
            method: &http::Method::GET,
            headers: &map,
            query,
            tls: false,
            https: false,
            client: None,
            socket: None,
        })
        .map_err(|e| e.reason())?;
    Ok(route.map(|r| backend_label(&r.backend)))
}

fn parent_conditions(c: &Compiled, ns: &str, name: &str) -> Vec<(&'static str, bool, String)> {
    c.gateway_status.routes[&ObjectRef::new("HTTPRoute", ns, name)].parents[0]
        .conditions
        .iter()
        .map(|c| (c.kind, c.ok, c.reason.clone()))
        .collect()
}

#[test]
fn routes_attach_to_our_gateways_and_match_path_header_and_query() {
    let c = compiled(&fixture(&route(
        "apps",
        "shop",
        r#"  parentRefs: [{name: edge, namespace: infra, sectionName: http}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /}
      headers: [{name: x-version, value: "2"}]
    - path: {type: Exact, value: /api}
      queryParams: [{name: v, type: RegularExpression, value: "[0-9]+"}]
    backendRefs: [{name: api, port: 80}]"#,
    )));
    assert_eq!(
        get(&c, "shop.example.com", "/x", &[], None).as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(
        get(&c, "shop.example.com", "/x", &[("x-version", "2")], None).as_deref(),
        Some("10.0.0.2:8080"),
        "more header matches win over the same prefix"
    );
    assert_eq!(
        get(&c, "shop.example.com", "/api", &[], Some("v=12")).as_deref(),
        Some("10.0.0.2:8080")
    );
    assert_eq!(
        get(&c, "shop.example.com", "/api", &[], Some("v=x")).as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(
        get(&c, "other.example.com", "/x", &[], None),
        None,
        "only the route's hostnames"
    );
    assert_eq!(
        parent_conditions(&c, "apps", "shop"),
        vec![
            ("Accepted", true, "Accepted".into()),
            ("ResolvedRefs", true, "ResolvedRefs".into())
        ]
    );
    let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "edge")];
    assert_eq!(gw.listeners[0].attached_routes, 1);
    assert_eq!(gw.listeners[1].attached_routes, 0);
    let tcp = &gw.listeners[2];
    assert!(
        tcp.conditions
            .iter()
            .any(|c| c.kind == "Accepted" && !c.ok && c.reason == "UnsupportedProtocol")
    );
    // Some listeners invalid: the Gateway is accepted, and says so.
    assert!(
        gw.conditions
            .iter()
            .any(|c| c.kind == "Accepted" && c.ok && c.reason == "ListenersNotValid"),
        "{:?}",
        gw.conditions
    );
    assert!(
        !c.gateway_status
            .gateways
            .contains_key(&ObjectRef::new("Gateway", "infra", "theirs"))
    );
}

#[test]
fn a_listener_admits_only_the_namespaces_it_allows() {
    let c = compiled(&fixture(&route(
        "apps",
        "sneaky",
        "  parentRefs: [{name: edge, namespace: infra, sectionName: same}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]",
    )));
    assert_eq!(
        parent_conditions(&c, "apps", "sneaky")[0],
        ("Accepted", false, "NotAllowedByListeners".into())
    );
    assert_eq!(get(&c, "any.example.com", "/", &[], None), None);
}

#[test]
fn a_route_to_a_gateway_of_another_class_gets_no_status_from_us() {
    let c = compiled(&fixture(&route(
        "infra",
        "elsewhere",
        "  parentRefs: [{name: theirs}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]",
    )));
    assert!(c.gateway_status.routes.is_empty());
    assert!(c.snapshot.routes.all.is_empty());
}

#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant() {
    let body = "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [x.example.com]\n  rules: [{backendRefs: [{name: store, namespace: data, port: 80}]}]";
    let c = compiled(&fixture(&route("apps", "cross", body)));
    assert_eq!(
        parent_conditions(&c, "apps", "cross")[1],
        ("ResolvedRefs", false, "RefNotPermitted".into())
    );
    assert!(
        get(&c, "x.example.com", "/", &[], None)
            .unwrap()
            .starts_with("invalid"),
        "fails closed with 500"
    );
    let grant = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-apps, namespace: data}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"#;
    let c = compiled(&fixture(&format!(
        "{}{grant}",
        route("apps", "cross", body)
    )));
    assert_eq!(
        parent_conditions(&c, "apps", "cross")[1],
        ("ResolvedRefs", true, "ResolvedRefs".into())
    );
    assert_eq!(
        get(&c, "x.example.com", "/", &[], None).as_deref(),
        Some("10.0.0.3:8080")
    );
}

#[test]
fn weights_split_and_zero_weights_leave_a_backend_out() {
    let c = compiled(&fixture(&route(
        "apps",
        "split",
        "  parentRefs: [{name: edge, namespace: infra}]\n  rules: [{backendRefs: [{name: web, port: 80, weight: 3}, {name: api, port: 80, weight: 1}, {name: store, port: 80, weight: 0}]}]",
    )));
    assert_eq!(
        get(&c, "a.example.com", "/", &[], None).as_deref(),
        Some("3*10.0.0.1:8080 1*10.0.0.2:8080")
    );
}

#[test]
fn listener_and_route_hostnames_intersect() {
    let yaml = fixture(&format!(
        "{}{}",
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wild, namespace: apps}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}]
"#,
        route(
            "apps",
            "hosts",
            "  parentRefs: [{name: wild}]\n  hostnames: [a.example.com, b.other.org]\n  rules: [{backendRefs: [{name: web, port: 80}]}]",
        )
    ));
    let c = compiled(&yaml);
    assert!(get(&c, "a.example.com", "/", &[], None).is_some());
    assert_eq!(get(&c, "b.other.org", "/", &[], None), None);
    let only_other = yaml.replace("a.example.com, ", "");
    let c = compiled(&only_other);
    assert_eq!(
        parent_conditions(&c, "apps", "hosts")[0],
        ("Accepted", false, "NoMatchingListenerHostname".into())
    );
}

#[test]
fn an_authrule_guards_the_route_or_rule_it_names_and_nothing_beside() {
    let rule = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: s3cret}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: admin}]
  oidc: {issuer: "https://idp.example.com", clientId: c, clientSecretRef: {name: idp}}
"#;
    let body = "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [shop.example.com]\n  rules:\n  - name: admin\n    matches: [{path: {type: PathPrefix, value: /admin}}]\n    backendRefs: [{name: web, port: 80}]\n  - backendRefs: [{name: web, port: 80}]";
    let c = compiled(&fixture(&format!("{}{rule}", route("apps", "shop", body))));
    let guarded = |path: &str| {
        !c.snapshot
            .routes
            .find("shop.example.com", path)
            .unwrap()
            .guards
            .is_empty()
    };
    assert!(guarded("/admin/x"));
    assert!(!guarded("/public"));
    let ancestors = &c.gateway_status.policy_ancestors[&ObjectRef::new("AuthRule", "apps", "sso")];
    assert_eq!(ancestors.len(), 1);
    assert_eq!(ancestors[0].name, "edge");
}

#[test]
fn an_unsupported_filter_fails_the_rule_closed() {
    let c = compiled(&fixture(&route(
        "apps",
        "mirror",
        "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [m.example.com]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /admin}}]\n    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-amzn-oidc-identity, value: admin}]}}]\n    backendRefs: [{name: web, port: 80}]\n  - backendRefs: [{name: api, port: 80}]",
    )));
    assert!(
        get(&c, "m.example.com", "/admin", &[], None)
            .unwrap()
            .starts_with("invalid"),
        "a rule that may not be served answers 500 instead of falling to the next rule"
    );
    assert!(c.diagnostics.iter().any(|d| d.reason == "UnsupportedValue"));
}

#[test]
fn prefix_replacement_keeps_the_rest_of_the_path() {
    let m = |prefix: &str, with: &str| PathModifier::Prefix {
        prefix: prefix.into(),
        with: with.into(),
    };
    assert_eq!(m("/prefix", "/new").apply("/prefix/one"), "/new/one");
    assert_eq!(m("/prefix", "/").apply("/prefix/one"), "/one");
    assert_eq!(m("/prefix", "/").apply("/prefix"), "/");
    assert_eq!(m("/prefix", "/new/").apply("/prefix"), "/new");
    assert_eq!(m("/", "/new").apply("/a/b"), "/new/a/b");
}

#[test]
fn a_selector_admits_the_namespaces_whose_labels_match() {
    let yaml = format!(
        "{}{}{}",
        r#"
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {kubernetes.io/metadata.name: apps}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: picky, namespace: infra}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      kinds: [{kind: HTTPRoute}]
      namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: apps}}}
"#,
        route(
            "apps",
            "chosen",
            "  parentRefs: [{kind: Gateway, name: picky, namespace: infra}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]"
        ),
        route(
            "data",
            "other",
            "  parentRefs: [{name: picky, namespace: infra}]\n  rules: [{backendRefs: [{name: store, port: 80}]}]"
        ),
    );
    let c = compiled(&fixture(&yaml));
    assert_eq!(
        parent_conditions(&c, "apps", "chosen")[0],
        ("Accepted", true, "Accepted".into())
    );
    assert_eq!(
        parent_conditions(&c, "data", "other")[0],
        ("Accepted", false, "NotAllowedByListeners".into())
    );
    let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "picky")];
    assert_eq!(gw.listeners[0].attached_routes, 1);
}

#[test]
fn a_route_on_a_listener_with_broken_references_counts_as_attached_but_is_not_served() {
    let yaml = format!(
        "{}{}",
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: broken, namespace: apps}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: tls
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{kind: Secret, name: does-not-exist}]}
"#,
        route(
            "apps",
            "stranded",
            "  parentRefs: [{name: broken, sectionName: tls}]\n  hostnames: [s.example.com]\n  rules: [{backendRefs: [{name: missing, port: 80}]}]"
        ),
    );
    let c = compiled(&fixture(&yaml));
    let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "apps", "broken")];
    assert_eq!(gw.listeners[0].attached_routes, 1);
    assert!(
        gw.listeners[0]
            .conditions
            .iter()
            .any(|c| c.kind == "Programmed" && !c.ok)
    );
    assert_eq!(
        parent_conditions(&c, "apps", "stranded")[1],
        ("ResolvedRefs", false, "BackendNotFound".into())
    );
    assert!(
        c.snapshot.routes.find("s.example.com", "/").is_none(),
        "nothing is served through it"
    );
}

#[test]
fn gateway_wildcards_cover_several_labels_and_ingress_wildcards_one() {
    let yaml = fixture(&format!(
        "{}{}",
        route(
            "apps",
            "deep",
            "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [\"*.gw.example.com\"]\n  rules: [{backendRefs: [{name: web, port: 80}]}]"
        ),
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shallow, namespace: apps}
spec:
  ingressClassName: portcullis
  rules:
  - host: "*.in.example.com"
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]}
"#
    ));
    let c = compiled(&yaml);
    assert_eq!(
        get(&c, "a.b.gw.example.com", "/", &[], None).as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(
        get(&c, "a.in.example.com", "/", &[], None).as_deref(),
        Some("10.0.0.2:8080")
    );
    assert_eq!(get(&c, "a.b.in.example.com", "/", &[], None), None);
}

/// An AuthRule on rule `admin` of HTTPRoute apps/shop.
const GUARD_ADMIN: &str = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: s3cret}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: admin}]
  oidc: {issuer: "https://idp.example.com", clientId: c, clientSecretRef: {name: idp}}
"#;

/// HTTPRoute apps/shop on shop.example.com: rule `admin` (to api) with these matches,
/// then an open catch-all (to web).
fn guarded_shop(admin_matches: &str) -> Compiled {
    let body = format!(
        "  parentRefs: [{{name: edge, namespace: infra}}]\n  hostnames: [shop.example.com]\n  rules:\n  - name: admin\n    matches: {admin_matches}\n    backendRefs: [{{name: api, port: 80}}]\n  - backendRefs: [{{name: web, port: 80}}]"
    );
    compiled(&fixture(&format!(
        "{}{GUARD_ADMIN}",
        route("apps", "shop", &body)
    )))
}

const API: &str = "10.0.0.2:8080";
const WEB: &str = "10.0.0.1:8080";

#[test]
fn regular_expressions_rank_between_exact_paths_and_prefixes() {
    let c = guarded_shop(r#"[{path: {type: RegularExpression, value: "/admin(/.*)?"}}]"#);
    assert_eq!(
        get(&c, "shop.example.com", "/admin/users", &[], None).as_deref(),
        Some(API),
        "the guarded expression is tried before the open prefix /"
    );
    assert_eq!(
        get(&c, "shop.example.com", "/shop", &[], None).as_deref(),
        Some(WEB)
    );
    let guarded = c
        .snapshot
        .routes
        .find("shop.example.com", "/admin")
        .unwrap();
    assert!(!guarded.guards.is_empty());
    assert!(
        !c.diagnostics.iter().any(|d| d.reason == "GuardShadowed"),
        "{:?}",
        c.diagnostics
    );

    let exact = PathRule {
        kind: PathKind::Exact,
        path: "/admin/users".into(),
    };
    let regex = PathRule {
        kind: PathKind::Regex,
        path: "/admin(/.*)?".into(),
    };
    let long_prefix = PathRule {
        kind: PathKind::Prefix,
        path: "/admin/users/and/more/than/the/expression".into(),
    };
    let none = Conditions::default();
    let headers = Conditions {
        headers: vec![(
            http::HeaderName::from_static("x-a"),
            ValueMatch::Exact("1".into()),
        )],
        ..Conditions::default()
    };
    let rank = |p: &PathRule, c: &Conditions| precedence::rank(Some(p), c, Default::default());
    assert!(rank(&exact, &none) < rank(&regex, &headers));
    assert!(rank(&regex, &none) < rank(&long_prefix, &headers));
    assert!(rank(&regex, &headers) < rank(&regex, &none));
    assert!(rank(&long_prefix, &none) < precedence::rank(None, &none, Default::default()));
}

#[test]
fn a_match_that_cannot_be_evaluated_refuses_instead_of_falling_through() {
    let c = guarded_shop(
        r#"[{path: {type: PathPrefix, value: /}, headers: [{name: x-tier, type: RegularExpression, value: "internal.*"}], queryParams: [{name: debug, value: "1"}]}, {path: {type: PathPrefix, value: /}, queryParams: [{name: mode, type: RegularExpression, value: "admin.*"}]}]"#,
    );
    let host = "shop.example.com";
    let long = format!("internal{}", "x".repeat(2100));
    assert_eq!(
        lookup(&c, host, "/x", &[("x-tier", "internal")], Some("debug=1")),
        Ok(Some(API.into()))
    );
    assert_eq!(
        lookup(&c, host, "/x", &[("x-tier", &long)], Some("debug=1")),
        Err("RouteMatchTooLong")
    );
    assert_eq!(
        lookup(&c, host, "/x", &[("x-tier", &long)], Some("debug=0")),
        Ok(Some(WEB.into())),
        "a condition that fails decides even beside one that cannot be read"
    );
    let long_query = format!("mode=admin{}", "x".repeat(2100));
    assert_eq!(
        lookup(&c, host, "/x", &[], Some(&long_query)),
        Err("RouteMatchTooLong")
    );
    for query in [
        "debug=0&debug=1",
        "debug=1&debug=1",
        "debug=1&Debug=0",
        "DEBUG=1&debug=0",
    ] {
        assert_eq!(
            lookup(&c, host, "/x", &[("x-tier", "internal")], Some(query)),
            Err("RouteMatchAmbiguous"),
            "{query}"
        );
    }
    assert_eq!(
        lookup(
            &c,
            host,
            "/x",
            &[("x-tier", "public"), ("x-tier", "internal")],
            Some("debug=1")
        ),
        Err("RouteMatchAmbiguous")
    );
    assert_eq!(
        lookup(&c, host, "/x", &[("x-tier", "internal")], Some("DEBUG=1")),
        Ok(Some(WEB.into())),
        "names are case-sensitive, as Gateway API's conformance tests ask"
    );
    assert_eq!(
        lookup(&c, host, "/x", &[], Some("other=1&other=2")),
        Ok(Some(WEB.into())),
        "parameters no match reads may repeat"
    );
}

#[test]
fn an_unevaluable_rule_ranked_after_the_match_does_not_matter() {
    let body = "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [shop.example.com]\n  rules:\n  - matches: [{path: {type: Exact, value: /open}}]\n    backendRefs: [{name: web, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: x-tier, type: RegularExpression, value: \"i.*\"}]}]\n    backendRefs: [{name: api, port: 80}]";
    let c = compiled(&fixture(&route("apps", "shop", body)));
    let long = "i".repeat(3000);
    assert_eq!(
        lookup(&c, "shop.example.com", "/open", &[("x-tier", &long)], None),
        Ok(Some(WEB.into()))
    );
    assert_eq!(
        lookup(&c, "shop.example.com", "/other", &[("x-tier", &long)], None),
        Err("RouteMatchTooLong")
    );
}

#[test]
fn a_match_that_does_not_compile_fails_its_whole_route_closed() {
    let c = guarded_shop(r#"[{path: {type: RegularExpression, value: "\\p{Lu}[a-z]+"}}]"#);
    for path in ["/Admin", "/", "/shop/anything"] {
        let got = get(&c, "shop.example.com", path, &[], None).unwrap();
        assert!(got.starts_with("invalid"), "{path}: {got}");
    }
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == "InvalidMatch")
        .expect("reported");
    assert_eq!(d.field, "spec.rules[0].matches[0]");
    assert!(d.fix.contains("500"), "{}", d.fix);
    let conditions = parent_conditions(&c, "apps", "shop");
    assert!(
        conditions.contains(&("ResolvedRefs", false, "UnsupportedValue".into())),
        "{conditions:?}"
    );
}

#[test]
fn a_guarded_rule_an_open_rule_can_take_requests_from_is_reported() {
    let shadowed = |c: &Compiled| -> Vec<(String, String)> {
        c.diagnostics
            .iter()
            .filter(|d| d.reason == "GuardShadowed")
            .map(|d| (d.field.clone(), d.message.clone()))
            .collect()
    };
    // Conditions on the guarded rule: a request without them reaches the catch-all.
    let c = guarded_shop(
        "[{path: {type: PathPrefix, value: /admin}, headers: [{name: x-tier, value: internal}]}]",
    );
    let found = shadowed(&c);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "spec.rules[0].matches[0]");
    assert!(
        found[0].1.contains("spec.rules[1].matches[0]"),
        "{}",
        found[0].1
    );
    let conditions = parent_conditions(&c, "apps", "shop");
    assert!(
        conditions.contains(&(precedence_condition(), false, "GuardShadowed".into())),
        "{conditions:?}"
    );
    // A method match likewise.
    let c = guarded_shop("[{path: {type: PathPrefix, value: /admin}, method: GET}]");
    assert_eq!(shadowed(&c).len(), 1);
    // The same path, open and with more conditions: tried first.
    let body = "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [shop.example.com]\n  rules:\n  - name: admin\n    matches: [{path: {type: PathPrefix, value: /admin}}]\n    backendRefs: [{name: api, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /admin}, headers: [{name: x-beta, value: \"1\"}]}]\n    backendRefs: [{name: web, port: 80}]";
    let c = compiled(&fixture(&format!(
        "{}{GUARD_ADMIN}",
        route("apps", "shop", body)
    )));
    let found = shadowed(&c);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains("tried first"), "{}", found[0].1);

    // No warning when the broader rule answers 500 (its backend does not exist).
    let body = "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [shop.example.com]\n  rules:\n  - name: admin\n    matches: [{path: {type: PathPrefix, value: /admin}, method: GET}]\n    backendRefs: [{name: api, port: 80}]\n  - backendRefs: [{name: nowhere, port: 80}]";
    let c = compiled(&fixture(&format!(
        "{}{GUARD_ADMIN}",
        route("apps", "shop", body)
    )));
    assert_eq!(shadowed(&c), vec![]);

    // No warning: a guarded path with no conditions, open paths beside or inside it.
    for matches in [
        "[{path: {type: PathPrefix, value: /admin}}]",
        "[{path: {type: Exact, value: /admin}}]",
        r#"[{path: {type: RegularExpression, value: "/admin(/.*)?"}}]"#,
    ] {
        assert_eq!(shadowed(&guarded_shop(matches)), vec![], "{matches}");
    }
}

#[test]
fn an_open_wildcard_route_of_the_same_namespace_can_shadow_a_guarded_rule() {
    let wildcard = |ns: &str, service: &str| {
        route(
            ns,
            "rest",
            &format!(
                "  parentRefs: [{{name: edge, namespace: infra}}]\n  hostnames: [\"*.example.com\"]\n  rules:\n  - backendRefs: [{{name: {service}, port: 80}}]"
            ),
        )
    };
    let guarded = route(
        "apps",
        "shop",
        "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [shop.example.com]\n  rules:\n  - name: admin\n    matches: [{path: {type: PathPrefix, value: /}, method: GET}]\n    backendRefs: [{name: api, port: 80}]",
    );
    let warnings = |extra: &str| {
        let c = compiled(&fixture(&format!("{guarded}{}{GUARD_ADMIN}", extra)));
        assert_eq!(
            get(&c, "shop.example.com", "/", &[], None).as_deref(),
            Some(API)
        );
        c.diagnostics
            .iter()
            .filter(|d| d.reason == "GuardShadowed")
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    };
    let found = warnings(&wildcard("apps", "web"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("HTTPRoute apps/rest"), "{}", found[0]);
    assert_eq!(
        warnings(&wildcard("data", "store")),
        Vec::<String>::new(),
        "another namespace's rules are not named in this route's status"
    );
}

fn precedence_condition() -> &'static str {
    gateway::SHADOW_CONDITION
}

proptest::proptest! {
    /// Whatever query string carries `debug` (repeated, in other cases, with other
    /// parameters), a request with `debug=1` under that exact name never reaches the
    /// open rule; the guarded rule gets it only when that is the one reading of it
    /// in any case; and it is refused only when `debug` is there and read twice.
    #[test]
    fn repeated_query_keys_never_route_around_a_guarded_match(
        pairs in proptest::collection::vec(
            (
                proptest::sample::select(vec!["debug", "Debug", "DEBUG", "deb%75g", "other", "d"]),
                proptest::sample::select(vec!["1", "0", "", "%31", "1+"]),
            ),
            0..6,
        )
    ) {
        let c = guarded_shop_once();
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        let got = lookup(c, "shop.example.com", "/x", &[], Some(&query));
        let decoded: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let alike: Vec<&(String, String)> = decoded
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("debug"))
            .collect();
        let exact: Vec<&str> = alike
            .iter()
            .filter(|(k, _)| k == "debug")
            .map(|(_, v)| v.as_str())
            .collect();
        match got {
            Ok(Some(b)) if b == WEB => proptest::prop_assert!(
                !exact.contains(&"1") && (exact.is_empty() || alike.len() == 1),
                "{query} reached the open rule"
            ),
            Ok(Some(b)) if b == API => proptest::prop_assert!(
                alike.len() == 1 && exact == ["1"],
                "{query} reached the guarded rule"
            ),
            Err(reason) => {
                proptest::prop_assert_eq!(reason, "RouteMatchAmbiguous");
                proptest::prop_assert!(
                    !exact.is_empty() && alike.len() > 1,
                    "{query} refused"
                );
            }
            other => proptest::prop_assert!(false, "{query}: {other:?}"),
        }
    }
}

fn guarded_shop_once() -> &'static Compiled {
    static C: std::sync::OnceLock<Compiled> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        guarded_shop(
            "[{path: {type: PathPrefix, value: /}, queryParams: [{name: debug, value: \"1\"}]}]",
        )
    })
}

#[test]
fn a_backend_ref_edits_the_headers_of_the_requests_it_gets_only() {
    let c = compiled(&fixture(&route(
        "apps",
        "edits",
        r#"  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [e.example.com]
  rules:
  - backendRefs:
    - name: web
      port: 80
      weight: 1
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: backend, value: web}]}}]
    - {name: api, port: 80, weight: 1}"#,
    )));
    assert_eq!(
        get(&c, "e.example.com", "/", &[], None).as_deref(),
        Some("1*10.0.0.1:8080 [backend=web] 1*10.0.0.2:8080")
    );
}

#[test]
fn a_backend_filter_that_cannot_be_applied_closes_that_backend() {
    for (name, filter) in [
        (
            "oidc",
            "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Amzn-Oidc-Identity, value: admin}]}}",
        ),
        (
            "host",
            "{type: RequestHeaderModifier, requestHeaderModifier: {remove: [host]}}",
        ),
        (
            "mirror",
            "{type: RequestMirror, requestMirror: {backendRef: {name: api, port: 80}}}",
        ),
    ] {
        let c = compiled(&fixture(&route(
            "apps",
            name,
            &format!(
                "  parentRefs: [{{name: edge, namespace: infra}}]\n  hostnames: [{name}.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /admin}}}}]\n    backendRefs: [{{name: web, port: 80, filters: [{filter}]}}]\n  - backendRefs: [{{name: api, port: 80}}]"
            ),
        )));
        let got = get(&c, &format!("{name}.example.com"), "/admin", &[], None).unwrap();
        assert!(got.starts_with("invalid"), "{name}: {got}");
        assert!(
            parent_conditions(&c, "apps", name)
                .iter()
                .any(|(k, ok, r)| *k == "ResolvedRefs" && !ok && r == "UnsupportedValue"),
            "{name}"
        );
        assert!(
            c.diagnostics
                .iter()
                .any(|d| d.reason == "UnsupportedValue"
                    && d.field.contains("backendRefs[0].filters[0]")),
            "{name}"
        );
    }
}

#[test]
fn the_shorter_of_the_request_and_backend_timeouts_bounds_a_rule() {
    let c = compiled(&fixture(&route(
        "apps",
        "slow",
        r#"  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [t.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    timeouts: {backendRequest: 500ms}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /both}}]
    timeouts: {request: 10s, backendRequest: 2s}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /request}}]
    timeouts: {request: 3s, backendRequest: 0s}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /off}}]
    timeouts: {backendRequest: 0s}
    backendRefs: [{name: web, port: 80}]"#,
    )));
    let timeout = |path: &str| {
        c.snapshot
            .routes
            .find("t.example.com", path)
            .unwrap()
            .timeout
    };
    use std::time::Duration;
    assert_eq!(timeout("/backend"), Some(Duration::from_millis(500)));
    assert_eq!(timeout("/both"), Some(Duration::from_secs(2)));
    assert_eq!(timeout("/request"), Some(Duration::from_secs(3)));
    assert_eq!(timeout("/off"), None);
}

#[test]
fn a_gateway_without_an_accepted_listener_is_not_accepted() {
    let c = compiled(&fixture(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: tcp-only, namespace: infra}\nspec:\n  gatewayClassName: portcullis\n  listeners: [{name: raw, port: 1111, protocol: INVALID}]\n",
    ));
    let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "tcp-only")];
    assert!(
        gw.conditions
            .iter()
            .any(|c| c.kind == "Accepted" && !c.ok && c.reason == "ListenersNotValid"),
        "{:?}",
        gw.conditions
    );
}

/// The backend a plain GET reaches on `socket` (`None`: the flag listeners).
fn on(
    c: &Compiled,
    socket: Option<std::net::SocketAddr>,
    host: &str,
    path: &str,
) -> Option<String> {
    let headers = http::HeaderMap::new();
    let route = c
        .snapshot
        .routes
        .find_for(&RouteQuery {
            host,
            path,
            method: &http::Method::GET,
            headers: &headers,
            query: None,
            tls: false,
            https: false,
            client: None,
            socket,
        })
        .expect("the route can be decided");
    route.map(|r| backend_label(&r.backend))
}

fn with_addresses(yaml: &str, range: &str) -> Compiled {
    let options = CompileOptions {
        gateway_addresses: Some(range.parse().unwrap()),
        ..CompileOptions::default()
    };
    compile(&objects(yaml), &options)
}

const TWO_GATEWAYS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: infra}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: 80, protocol: HTTP}, {name: alt, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: b, namespace: infra}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

fn two_gateways() -> String {
    format!(
        "{}{TWO_GATEWAYS}{}{}{}",
        fixture(""),
        route(
            "infra",
            "shared",
            "  parentRefs: [{name: a, port: 80}, {name: b}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /shared}}]\n    backendRefs: [{name: web, namespace: apps, port: 80}]"
        ),
        route(
            "infra",
            "only-a",
            "  parentRefs: [{name: a}]\n  rules:\n  - backendRefs: [{name: store, namespace: data, port: 80}]"
        ),
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: all, namespace: apps}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]\n  to: [{group: \"\", kind: Service}]\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: all, namespace: data}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]\n  to: [{group: \"\", kind: Service}]\n",
    )
}

#[test]
fn gateways_with_addresses_of_their_own_serve_only_their_own_routes() {
    let c = with_addresses(&two_gateways(), "127.10.0.0/24");
    let address = |name: &str| {
        c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", name)]
            .address
            .expect("the Gateway has an address")
    };
    let (a, b) = (address("a"), address("b"));
    assert_ne!(a, b);
    let socket = |ip, port| Some(std::net::SocketAddr::new(ip, port));
    let mut wanted: Vec<_> = (c.snapshot.gateway_sockets.iter())
        .map(|s| s.addr)
        .filter(|s| [a, b].contains(&s.ip()))
        .collect();
    wanted.sort();
    let mut expected = vec![
        socket(a, 80).unwrap(),
        socket(a, 8080).unwrap(),
        socket(b, 80).unwrap(),
    ];
    expected.sort();
    assert_eq!(wanted, expected, "every programmed listener's socket, once");
    // Shared: on both Gateways (on a only at the port its parentRef names).
    assert_eq!(
        on(&c, socket(a, 80), "x.test", "/shared").as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(
        on(&c, socket(b, 80), "x.test", "/shared").as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(
        on(&c, socket(a, 8080), "x.test", "/shared").as_deref(),
        Some("10.0.0.3:8080")
    );
    // Dedicated to a: on neither b nor the flag listeners.
    assert_eq!(
        on(&c, socket(a, 80), "x.test", "/").as_deref(),
        Some("10.0.0.3:8080")
    );
    assert_eq!(on(&c, socket(b, 80), "x.test", "/"), None);
    assert_eq!(on(&c, None, "x.test", "/shared"), None);
    // Another address of the range, or another port: nothing.
    let other = "127.10.0.250".parse().unwrap();
    assert_eq!(on(&c, socket(other, 80), "x.test", "/shared"), None);
    assert_eq!(on(&c, socket(b, 8080), "x.test", "/shared"), None);
}

#[test]
fn without_addresses_of_their_own_gateways_share_the_flag_listeners() {
    let c = compiled(&two_gateways());
    assert!(c.snapshot.gateway_sockets.is_empty());
    assert_eq!(
        on(&c, None, "x.test", "/shared").as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(
        on(&c, None, "x.test", "/").as_deref(),
        Some("10.0.0.3:8080")
    );
}

#[test]
fn a_gateway_without_an_address_serves_nothing_and_says_why() {
    let asks = TWO_GATEWAYS.replace(
        "metadata: {name: b, namespace: infra}\nspec:\n",
        "metadata: {name: b, namespace: infra}\nspec:\n  addresses: [{type: IPAddress, value: 10.9.9.9}]\n",
    );
    let c = with_addresses(&format!("{}{asks}", fixture("")), "127.10.0.0/24");
    let b = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "b")];
    assert_eq!(b.address, None);
    let programmed = b
        .conditions
        .iter()
        .find(|c| c.kind == "Programmed")
        .unwrap();
    assert!(!programmed.ok);
    assert_eq!(programmed.reason, "AddressNotUsable");
    assert!(
        programmed.message.contains("10.9.9.9"),
        "{}",
        programmed.message
    );
    assert!(
        b.listeners[0]
            .conditions
            .iter()
            .any(|c| c.kind == "Programmed" && !c.ok)
    );
    assert_eq!(
        c.snapshot.gateway_sockets.len(),
        4,
        "edge's and a's two listeners each, none of b's"
    );
}

#[test]
fn a_listener_whose_socket_cannot_be_bound_is_not_accepted_and_the_others_stay() {
    let mut c = with_addresses(&two_gateways(), "127.10.0.0/24");
    let a = ObjectRef::new("Gateway", "infra", "a");
    let failed = c.gateway_status.gateways[&a].listeners[1].socket.unwrap();
    let unbound = BTreeMap::from([(failed, format!("cannot listen on {failed}: Address in use"))]);
    mark_unbound(&mut c.gateway_status, &unbound);
    let gw = &c.gateway_status.gateways[&a];
    let state = |i: usize, kind: &str| {
        let c = gw.listeners[i]
            .conditions
            .iter()
            .find(|c| c.kind == kind)
            .unwrap();
        (c.ok, c.reason.clone())
    };
    assert_eq!(state(1, "Accepted"), (false, "PortUnavailable".into()));
    assert_eq!(state(1, "Programmed"), (false, "Invalid".into()));
    assert_eq!(state(0, "Programmed"), (true, "Programmed".into()));
    let gateway = |kind: &str| gw.conditions.iter().find(|c| c.kind == kind).unwrap();
    assert_eq!(gateway("Accepted").reason, "ListenersNotValid");
    assert!(gateway("Programmed").ok, "the other listener still serves");
}

const ISOLATION: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: iso, namespace: infra}
spec:
  gatewayClassName: portcullis
  listeners:
  - {name: empty-hostname, port: 80, protocol: HTTP}
  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: "*.foo.example.com"}
  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com}
"#;

fn isolation(route_hostnames: bool) -> String {
    let mut yaml = format!("{}{ISOLATION}", fixture(""));
    let listeners = [
        ("empty-hostname", "bar.com"),
        ("wildcard-example-com", "bar.example.com"),
        ("wildcard-foo-example-com", "bar.foo.example.com"),
        ("abc-foo-example-com", "abc.foo.example.com"),
    ];
    for (listener, host) in listeners {
        // With hostnames, each route names all four, so only the listener decides.
        let hostnames = if route_hostnames {
            format!("  hostnames: [{}]\n", listeners.map(|(_, h)| h).join(", "))
        } else {
            let _ = host;
            String::new()
        };
        yaml.push_str(&route(
            "infra",
            listener,
            &format!(
                "  parentRefs: [{{name: iso, sectionName: {listener}}}]\n{hostnames}  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /{listener}}}}}]\n    backendRefs: [{{name: store, namespace: data, port: 80}}]"
            ),
        ));
    }
    yaml.push_str("---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: all, namespace: data}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]\n  to: [{group: \"\", kind: Service}]\n");
    yaml
}

#[test]
fn a_request_belongs_to_the_most_specific_listener_of_its_port() {
    let hosts = [
        "bar.com",
        "bar.example.com",
        "bar.foo.example.com",
        "abc.foo.example.com",
    ];
    let paths = [
        "/empty-hostname",
        "/wildcard-example-com",
        "/wildcard-foo-example-com",
        "/abc-foo-example-com",
    ];
    for route_hostnames in [false, true] {
        let shared = compiled(&isolation(route_hostnames));
        let own = with_addresses(&isolation(route_hostnames), "127.10.0.0/24");
        let ip = own.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "iso")]
            .address
            .unwrap();
        for (c, socket) in [
            (&shared, None),
            (&own, Some(std::net::SocketAddr::new(ip, 80))),
        ] {
            for (h, host) in hosts.iter().enumerate() {
                for (p, path) in paths.iter().enumerate() {
                    let got = on(c, socket, host, path);
                    let want = (h == p).then(|| "10.0.0.3:8080".to_owned());
                    assert_eq!(
                        got, want,
                        "{host}{path} on {socket:?}, route hostnames {route_hostnames}"
                    );
                }
            }
        }
    }
}
