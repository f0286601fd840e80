//! How Ingresses written for the AWS Load Balancer Controller route: ALB path
//! patterns, expressions, and the order rules are tried in.

use super::tests_support::{backend_label, compiled, service};
use super::*;

/// An Ingress `name` in `apps` for app.example.com with these annotations (each line
/// indented by four spaces) and paths (`(path, pathType, service)`), written in order.
fn alb_ingress(name: &str, annotations: &str, paths: &[(&str, &str, &str)]) -> String {
    let mut yaml = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: apps\n  annotations:\n    alb.ingress.kubernetes.io/scheme: internet-facing\n{annotations}spec:\n  ingressClassName: portcullis\n  rules:\n  - host: app.example.com\n    http:\n      paths:\n"
    );
    for (path, kind, svc) in paths {
        yaml.push_str(&format!(
            "      - {{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    yaml
}

/// Services `a` to `e` at 10.0.0.1 to 10.0.0.5.
fn services() -> String {
    ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, s)| service("apps", s, &format!("10.0.0.{}", i + 1), 80))
        .collect()
}

fn with_options(yaml: &str, options: &CompileOptions) -> Compiled {
    compile(&super::tests_support::objects(yaml), options)
}

/// The service (`a`..`e`) a request for app.example.com reaches, `-` for none.
fn reached(c: &Compiled, path: &str) -> String {
    match c.snapshot.routes.find("app.example.com", path) {
        Some(route) => {
            let label = backend_label(&route.backend);
            match label
                .strip_prefix("10.0.0.")
                .and_then(|n| n.strip_suffix(":80"))
            {
                Some(n) => ["a", "b", "c", "d", "e"][n.parse::<usize>().unwrap() - 1].into(),
                None => label,
            }
        }
        None => "-".into(),
    }
}

fn warnings(c: &Compiled, reason: &str) -> Vec<String> {
    c.diagnostics
        .iter()
        .filter(|d| d.reason == reason)
        .map(|d| format!("{} {}: {}", d.object, d.field, d.message))
        .collect()
}

#[test]
fn implementation_specific_wildcards_are_alb_path_patterns() {
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            "",
            &[
                ("/api/*", "ImplementationSpecific", "a"),
                ("/img/?.png", "ImplementationSpecific", "b"),
                ("/*", "ImplementationSpecific", "c"),
            ],
        ),
        services()
    ));
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    for (path, want) in [
        ("/", "c"),
        ("/index.html", "c"),
        ("/api/", "a"),
        ("/api/v1/items", "a"),
        ("/api", "c"),
        ("/apiv1", "c"),
        ("/img/1.png", "b"),
        ("/img/12.png", "c"),
        ("/IMG/1.png", "c"),
        ("/*", "c"),
    ] {
        assert_eq!(reached(&c, path), want, "{path}");
    }
}

#[test]
fn implementation_specific_paths_without_wildcards_stay_prefixes() {
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            "",
            &[
                ("/api", "ImplementationSpecific", "a"),
                ("/", "ImplementationSpecific", "b"),
            ],
        ),
        services()
    ));
    assert_eq!(reached(&c, "/api/x"), "a");
    assert_eq!(reached(&c, "/apix"), "b");
    assert_eq!(reached(&c, "/anything"), "b");
}

/// ALB tries an Ingress's rules as AWS's controller writes them: Exact, Prefix
/// (longest first), then ImplementationSpecific as written. A pattern written after
/// one that covers it never serves, there and here, and `check` says so.
#[test]
fn patterns_are_tried_after_exact_and_prefix_paths_in_the_order_written() {
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            "",
            &[
                ("/*", "ImplementationSpecific", "a"),
                ("/api/*", "ImplementationSpecific", "b"),
                ("/static", "Prefix", "c"),
                ("/health", "Exact", "d"),
            ],
        ),
        services()
    ));
    assert_eq!(reached(&c, "/static/app.js"), "c", "prefixes come first");
    assert_eq!(reached(&c, "/health"), "d");
    assert_eq!(reached(&c, "/api/x"), "a", "the first pattern written wins");
    let unreachable = warnings(&c, "PathUnreachable");
    assert_eq!(unreachable.len(), 1, "{unreachable:#?}");
    assert!(
        unreachable[0].contains("spec.rules[0].http.paths[1]")
            && unreachable[0].contains("spec.rules[0].http.paths[0] of this Ingress")
            && unreachable[0].contains("as written"),
        "{unreachable:#?}"
    );
}

/// Across Ingresses, `group.order` first, then namespace and name, as AWS's controller
/// orders the Ingresses of a group; the older Ingress does not win by age.
#[test]
fn group_order_then_name_orders_patterns_across_ingresses() {
    let catch_all = alb_ingress("a-web", "", &[("/*", "ImplementationSpecific", "a")]);
    let api =
        |order: &str| alb_ingress("b-api", order, &[("/api/*", "ImplementationSpecific", "b")]);
    let c = compiled(&format!("{catch_all}{}{}", api(""), services()));
    assert_eq!(reached(&c, "/api/x"), "a", "a-web comes before b-api");
    assert_eq!(warnings(&c, "PathUnreachable").len(), 1);
    let c = compiled(&format!(
        "{catch_all}{}{}",
        api("    alb.ingress.kubernetes.io/group.order: \"-5\"\n"),
        services()
    ));
    assert_eq!(reached(&c, "/api/x"), "b", "a smaller order goes first");
    assert_eq!(reached(&c, "/other"), "a");
    assert!(warnings(&c, "PathUnreachable").is_empty());
    for bad in ["1001", "first", "1.5"] {
        let c = compiled(&format!(
            "{catch_all}{}{}",
            api(&format!(
                "    alb.ingress.kubernetes.io/group.order: \"{bad}\"\n"
            )),
            services()
        ));
        let route = c
            .snapshot
            .routes
            .all
            .iter()
            .find(|r| r.ingress.name == "b-api");
        let closed = route
            .unwrap()
            .closed
            .as_ref()
            .expect("a bad order closes the routes");
        assert_eq!(closed.reason, "AnnotationInvalid");
        assert!(
            c.diagnostics.iter().any(|d| d.field
                == "metadata.annotations[alb.ingress.kubernetes.io/group.order]"
                && d.fix.contains("-1000")
                || d.message.contains("-1000")),
            "{:#?}",
            c.diagnostics
        );
    }
}

#[test]
fn patterns_follow_case_insensitive_paths() {
    let yaml = format!(
        "{}{}",
        alb_ingress(
            "web",
            "",
            &[
                ("/Admin/*", "ImplementationSpecific", "a"),
                ("/*", "ImplementationSpecific", "b"),
            ],
        ),
        services()
    );
    let options = CompileOptions {
        case_insensitive_paths: true,
        ..CompileOptions::default()
    };
    let c = with_options(&yaml, &options);
    let find = |path: &str| {
        let key = c.snapshot.routes.match_key(path).into_owned();
        c.snapshot
            .routes
            .find("app.example.com", &key)
            .map(|r| r.index)
    };
    assert_eq!(find("/ADMIN/x"), find("/admin/x"));
    assert_eq!(find("/aDmIn/users"), find("/Admin/"));
    assert_ne!(find("/admin/x"), find("/other"));
}

#[test]
fn use_regex_path_match_makes_paths_expressions() {
    let regex = "    alb.ingress.kubernetes.io/use-regex-path-match: \"true\"\n";
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            regex,
            &[
                ("/^/api/v[0-9]+/(.+)$", "ImplementationSpecific", "a"),
                ("/users", "ImplementationSpecific", "b"),
                ("/static", "Prefix", "c"),
            ],
        ),
        services()
    ));
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    assert_eq!(reached(&c, "/api/v2/items"), "a");
    assert_eq!(reached(&c, "/api/vx/items"), "-");
    assert_eq!(reached(&c, "/api/v2/"), "-");
    assert_eq!(reached(&c, "/users"), "b", "searched for, as ALB does");
    assert_eq!(reached(&c, "/x/users/y"), "b");
    assert_eq!(
        reached(&c, "/static/x"),
        "c",
        "Prefix paths are not expressions"
    );

    let c = compiled(&format!(
        "{}{}",
        alb_ingress("web", regex, &[("/(a", "ImplementationSpecific", "a")]),
        services()
    ));
    let bad: Vec<_> = warnings(&c, "InvalidPath");
    assert!(
        bad.len() == 1 && bad[0].contains("does not compile"),
        "{bad:#?}"
    );
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            "    alb.ingress.kubernetes.io/use-regex-path-match: \"yes\"\n",
            &[("/*", "ImplementationSpecific", "a")]
        ),
        services()
    ));
    let route = c.snapshot.routes.find("app.example.com", "/").unwrap();
    assert_eq!(route.closed.as_ref().unwrap().reason, "AnnotationInvalid");
}

#[test]
fn malformed_patterns_are_reported_and_not_served() {
    let long = format!("/{}*", "a".repeat(128));
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            "",
            &[
                (&long, "ImplementationSpecific", "a"),
                ("/a b*", "ImplementationSpecific", "a"),
                ("/x/../*", "ImplementationSpecific", "a"),
                ("/ok/*", "ImplementationSpecific", "b"),
                ("/what?", "Prefix", "c"),
            ],
        ),
        services()
    ));
    let bad = warnings(&c, "InvalidPath");
    assert_eq!(bad.len(), 4, "{bad:#?}");
    assert!(bad[0].contains("128"), "{bad:#?}");
    assert_eq!(reached(&c, "/ok/1"), "b");
    assert_eq!(reached(&c, "/aaaa"), "-");
}

/// An open pattern tried before a guarded path of the same host takes its requests
/// without a login: the guarded rule is warned of, as for any other path.
#[test]
fn an_open_pattern_before_a_guarded_path_is_a_shadow() {
    let guarded = alb_ingress(
        "b-admin",
        "",
        &[("/admin/*", "ImplementationSpecific", "b")],
    );
    let rule = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: b-admin}]
  oidc: {issuer: "https://idp.test", clientId: app, clientSecretRef: {name: idp}}
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: s}
"#;
    let open = alb_ingress("a-web", "", &[("/*", "ImplementationSpecific", "a")]);
    let c = compiled(&format!("{open}{guarded}{rule}{}", services()));
    let shadowed = warnings(&c, "GuardShadowed");
    assert_eq!(shadowed.len(), 1, "{shadowed:#?}");
    assert!(
        shadowed[0].contains("Ingress apps/b-admin"),
        "{shadowed:#?}"
    );
    let fix = &c
        .diagnostics
        .iter()
        .find(|d| d.reason == "GuardShadowed")
        .unwrap()
        .fix;
    assert!(fix.contains("write the guarded path before"), "{fix}");
    // Written the other way round, the guarded path comes first: nothing to warn of.
    let c = compiled(&format!(
        "{}{guarded}{rule}{}",
        open.replace("a-web", "c-web"),
        services()
    ));
    assert!(
        warnings(&c, "GuardShadowed").is_empty(),
        "{:#?}",
        c.diagnostics
    );
    assert_eq!(reached(&c, "/other"), "a");
}

/// The route a GET for app.example.com reaches on a plain or TLS connection.
fn route_on(c: &Compiled, path: &str, tls: bool) -> Option<Arc<Route>> {
    let headers = http::HeaderMap::new();
    c.snapshot
        .routes
        .find_for(&RouteQuery {
            host: "app.example.com",
            path,
            method: &http::Method::GET,
            headers: &headers,
            query: None,
            tls,
            https: tls,
            client: None,
            socket: None,
        })
        .unwrap()
        .cloned()
}

const SSL_REDIRECT_ACTION: &str = "    alb.ingress.kubernetes.io/actions.ssl-redirect: '{\"Type\": \"redirect\", \"RedirectConfig\": { \"Protocol\": \"HTTPS\", \"Port\": \"443\", \"StatusCode\": \"HTTP_301\"}}'\n";

fn use_annotation(yaml: &str, service: &str) -> String {
    yaml.replace(
        &format!("name: {service}, port: {{number: 80}}"),
        &format!("name: {service}, port: {{name: use-annotation}}"),
    )
}

/// The classic pattern of EKS manifests: a first `/*` rule to the `ssl-redirect`
/// action, then the app on `/*`. On plain HTTP the redirect answers; on HTTPS AWS's
/// controller leaves the redirect off (it would loop) and the app serves.
#[test]
fn the_ssl_redirect_action_answers_plain_http_and_leaves_https_to_the_next_rule() {
    let yaml = use_annotation(
        &alb_ingress(
            "web",
            SSL_REDIRECT_ACTION,
            &[
                ("/*", "ImplementationSpecific", "ssl-redirect"),
                ("/*", "ImplementationSpecific", "a"),
            ],
        ),
        "ssl-redirect",
    );
    let c = compiled(&format!("{yaml}{}", services()));
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let plain = route_on(&c, "/x", false).unwrap();
    let Some(answer) = plain.alb.answer.as_deref() else {
        panic!("the redirect answers plain HTTP");
    };
    assert!(matches!(answer, alb_actions::AlbAnswer::Redirect(r) if r.upgrades_only()));
    let tls = route_on(&c, "/x", true).unwrap();
    assert!(tls.alb.answer.is_none());
    assert_eq!(backend_label(&tls.backend), "10.0.0.1:80");
}

#[test]
fn actions_answer_forward_by_weight_or_close_their_rules() {
    let annotations = r#"    alb.ingress.kubernetes.io/actions.response-503: >
      {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"503 error text"}}
    alb.ingress.kubernetes.io/actions.forward-multiple-tg: >
      {"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"a","servicePort":"http","weight":20},{"serviceName":"b","servicePort":80,"weight":80}]}}
    alb.ingress.kubernetes.io/actions.broken: '{"type":"redirect"'
"#;
    let mut yaml = alb_ingress(
        "web",
        annotations,
        &[
            ("/503", "Exact", "response-503"),
            ("/split", "Exact", "forward-multiple-tg"),
            ("/broken", "Exact", "broken"),
            ("/broken-too", "Exact", "broken"),
            ("/missing", "Exact", "missing"),
            ("/*", "ImplementationSpecific", "c"),
        ],
    );
    for name in ["response-503", "forward-multiple-tg", "broken", "missing"] {
        yaml = use_annotation(&yaml, name);
    }
    let c = compiled(&format!("{yaml}{}", services()));
    let fixed = route_on(&c, "/503", false).unwrap();
    assert!(matches!(
        fixed.alb.answer.as_deref(),
        Some(alb_actions::AlbAnswer::Fixed(f)) if f.status == 503 && f.body == "503 error text"
    ));
    let split = route_on(&c, "/split", false).unwrap();
    assert_eq!(
        backend_label(&split.backend),
        "20*10.0.0.1:80 80*10.0.0.2:80"
    );
    for path in ["/broken", "/broken-too", "/missing"] {
        let route = route_on(&c, path, false).unwrap();
        assert_eq!(
            route.closed.as_ref().map(|c| c.reason),
            Some("AnnotationInvalid"),
            "{path} is closed, never left to /*"
        );
    }
    let problems: Vec<String> = c
        .diagnostics
        .iter()
        .map(|d| format!("{} {}", d.field, d.message))
        .collect();
    assert_eq!(
        problems
            .iter()
            .filter(
                |p| p.starts_with("metadata.annotations[alb.ingress.kubernetes.io/actions.broken]")
            )
            .count(),
        1,
        "one report per action: {problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("actions.missing")),
        "{problems:#?}"
    );
    assert!(
        !c.diagnostics
            .iter()
            .any(|d| d.reason == "IgnoredAnnotation"),
        "{problems:#?}"
    );
}

/// An Ingress's login guards its action rules too: ALB runs authenticate-oidc before
/// the rule's action.
#[test]
fn actions_keep_the_ingress_guard() {
    let login = "    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: '{\"issuer\":\"https://idp.test\",\"secretName\":\"idp\"}'\n    alb.ingress.kubernetes.io/actions.teapot: '{\"type\":\"fixed-response\",\"fixedResponseConfig\":{\"statusCode\":\"200\",\"messageBody\":\"secret\"}}'\n";
    let yaml = use_annotation(
        &alb_ingress("web", login, &[("/teapot", "Exact", "teapot")]),
        "teapot",
    );
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {clientID: app, clientSecret: s}\n";
    let c = compiled(&format!("{yaml}{secret}{}", services()));
    let route = route_on(&c, "/teapot", true).unwrap();
    assert!(route.alb.answer.is_some());
    assert!(route.guard_for("/teapot").is_some(), "{:#?}", c.diagnostics);
}

#[test]
fn ssl_redirect_sends_every_plain_request_of_the_group_to_https() {
    let member = |name: &str, annotations: &str, svc: &str| {
        alb_ingress(
            name,
            &format!("    alb.ingress.kubernetes.io/group.name: shop\n{annotations}"),
            &[(&format!("/{svc}"), "Prefix", svc)],
        )
    };
    let c = compiled(&format!(
        "{}{}{}",
        member(
            "web",
            "    alb.ingress.kubernetes.io/ssl-redirect: '443'\n",
            "a"
        ),
        member("api", "", "b"),
        services()
    ));
    for path in ["/a", "/b"] {
        assert_eq!(
            route_on(&c, path, false).unwrap().alb.ssl_redirect,
            Some(443),
            "{path}"
        );
    }
    let c = compiled(&format!(
        "{}{}",
        member(
            "web",
            "    alb.ingress.kubernetes.io/ssl-redirect: 'yes'\n",
            "a"
        ),
        services()
    ));
    let route = route_on(&c, "/a", false).unwrap();
    assert_eq!(route.closed.as_ref().unwrap().reason, "AnnotationInvalid");
}

/// A GET for `host` and `path` with these headers, query and client.
fn route_for(
    c: &Compiled,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    query: Option<&str>,
    client: Option<&str>,
) -> Result<Option<Arc<Route>>, Unevaluable> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    c.snapshot
        .routes
        .find_for(&RouteQuery {
            host,
            path,
            method: &http::Method::GET,
            headers: &map,
            query,
            tls: true,
            https: true,
            client: client.map(|c| c.parse().unwrap()),
            socket: None,
        })
        .map(|r| r.cloned())
}

fn service_of(route: Option<Arc<Route>>) -> String {
    route.map_or("-".into(), |r| {
        let label = backend_label(&r.backend);
        match label
            .strip_prefix("10.0.0.")
            .and_then(|n| n.strip_suffix(":80"))
        {
            Some(n) => ["a", "b", "c", "d", "e"][n.parse::<usize>().unwrap() - 1].into(),
            None => label,
        }
    })
}

/// `conditions.<name>` narrows the rules of Service `<name>` (header, method, query,
/// source) and adds the hosts and paths it names, as the documentation's examples do.
#[test]
fn conditions_narrow_a_rule_and_add_hosts_and_paths() {
    let annotations = r#"    alb.ingress.kubernetes.io/conditions.b: >
      [{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Canary","values":["true"]}},{"field":"source-ip","sourceIpConfig":{"values":["10.0.0.0/8"]}}]
    alb.ingress.kubernetes.io/conditions.c: >
      [{"field":"host-header","hostHeaderConfig":{"values":["anno.example.com","www.*"]}},{"field":"path-pattern","pathPatternConfig":{"values":["/anno/*"]}}]
    alb.ingress.kubernetes.io/conditions.d: >
      [{"field":"query-string","queryStringConfig":{"values":[{"key":"mode","value":"beta"}]}}]
"#;
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            annotations,
            &[
                ("/*", "ImplementationSpecific", "b"),
                ("/c", "Exact", "c"),
                ("/*", "ImplementationSpecific", "d"),
                ("/*", "ImplementationSpecific", "a"),
            ],
        ),
        services()
    ));
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let at = |host: &str, path: &str, headers: &[(&str, &str)], query, client| {
        service_of(route_for(&c, host, path, headers, query, client).unwrap())
    };
    let canary = [("x-canary", "TRUE")];
    let app = "app.example.com";
    assert_eq!(at(app, "/x", &canary, None, Some("10.1.2.3")), "b");
    assert_eq!(at(app, "/x", &canary, None, Some("192.0.2.1")), "a");
    assert_eq!(at(app, "/x", &[], None, Some("10.1.2.3")), "a");
    assert_eq!(at(app, "/x", &[], Some("mode=beta"), None), "d");
    assert_eq!(at(app, "/c", &[], None, None), "c");
    assert_eq!(at(app, "/anno/x", &[], None, None), "c");
    assert_eq!(at("anno.example.com", "/c", &[], None, None), "c");
    assert_eq!(at("anno.example.com", "/anno/1", &[], None, None), "c");
    assert_eq!(at("www.example.org", "/c", &[], None, None), "c");
    assert_eq!(at("anno.example.com", "/x", &[], None, None), "-");
    // What cannot be told is refused, never routed to the next rule.
    let twice = route_for(
        &c,
        app,
        "/x",
        &[("x-canary", "true"), ("x-canary", "false")],
        None,
        Some("10.1.2.3"),
    );
    assert!(
        matches!(twice, Err(Unevaluable::Ambiguous(_))),
        "{:?}",
        twice.map(service_of)
    );
    let no_client = route_for(&c, app, "/x", &canary, None, None);
    assert!(no_client.is_err());
    let query_twice = route_for(&c, app, "/x", &[], Some("mode=beta&mode=alpha"), None);
    assert!(query_twice.is_err());
}

#[test]
fn conditions_that_cannot_be_read_close_the_rule_never_widen_it() {
    let annotations = r#"    alb.ingress.kubernetes.io/conditions.b: '[{"field":"source-ip","sourceIpConfig":{"values":["10.0.0.1"]}}]'
"#;
    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            annotations,
            &[
                ("/admin/*", "ImplementationSpecific", "b"),
                ("/*", "ImplementationSpecific", "a"),
            ],
        ),
        services()
    ));
    let route = route_for(
        &c,
        "app.example.com",
        "/admin/x",
        &[],
        None,
        Some("192.0.2.1"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(route.closed.as_ref().unwrap().reason, "AnnotationInvalid");
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.field == "metadata.annotations[alb.ingress.kubernetes.io/conditions.b]")
        .expect("reported on the annotation");
    assert!(d.message.contains("CIDR"), "{}", d.message);
}

#[test]
fn listen_ports_keep_rules_to_the_listeners_named() {
    let ingress = |ports: &str| {
        compiled(&format!(
            "{}{}",
            alb_ingress(
                "web",
                &format!("    alb.ingress.kubernetes.io/listen-ports: '{ports}'\n"),
                &[("/*", "ImplementationSpecific", "a")],
            ),
            services()
        ))
    };
    let served = |c: &Compiled| {
        (
            route_on(c, "/x", false).is_some(),
            route_on(c, "/x", true).is_some(),
        )
    };
    assert_eq!(served(&ingress(r#"[{"HTTPS": 443}]"#)), (false, true));
    assert_eq!(served(&ingress(r#"[{"HTTP": 80}]"#)), (true, false));
    assert_eq!(
        served(&ingress(r#"[{"HTTP": 80}, {"HTTPS":443}]"#)),
        (true, true)
    );
    let other_port = ingress(r#"[{"HTTPS": 8443}]"#);
    assert_eq!(served(&other_port), (false, true));
    assert!(
        warnings(&other_port, "AnnotationNotHonoured")
            .iter()
            .any(|w| w.contains("8443")),
        "{:#?}",
        other_port.diagnostics
    );
    for bad in [
        r#"[{"TCP": 80}]"#,
        r#"[]"#,
        r#"{"HTTP": 80}"#,
        r#"[{"HTTP": 80, "HTTPS": 443}]"#,
    ] {
        let c = ingress(bad);
        let route = c.snapshot.routes.all.first().unwrap();
        assert_eq!(
            route.closed.as_ref().map(|c| c.reason),
            Some("AnnotationInvalid"),
            "{bad}"
        );
    }
}

/// The transport a request for `/` is sent with, `None` when the route has no
/// reachable Service.
fn transport_of(c: &Compiled) -> Option<Transport> {
    match &route_on(c, "/", true)?.backend {
        Backend::Service(up) => Some(up.transport.clone()),
        _ => None,
    }
}

#[test]
fn backend_protocol_is_honoured_from_the_ingress_and_the_service_wins() {
    let with = |annotations: &str, service_annotations: &str| {
        let services = services().replacen(
            "metadata: {name: a, namespace: apps}",
            &format!(
                "metadata: {{name: a, namespace: apps, annotations: {{{service_annotations}}}}}"
            ),
            1,
        );
        compiled(&format!(
            "{}{services}{}",
            alb_ingress("web", annotations, &[("/*", "ImplementationSpecific", "a")]),
            ca_secret()
        ))
    };
    let tls = |verify| {
        Some(BackendTls {
            verify,
            client: None,
        })
    };
    let c = with(
        "    alb.ingress.kubernetes.io/backend-protocol: HTTPS\n",
        "",
    );
    assert!(route_on(&c, "/", true).unwrap().closed.is_none());
    assert_eq!(
        transport_of(&c).unwrap().tls,
        tls(None),
        "ALB checks no certificate"
    );
    let c = with(
        "    alb.ingress.kubernetes.io/backend-protocol-version: GRPC\n",
        "",
    );
    let grpc = transport_of(&c).unwrap();
    assert_eq!((grpc.tls, grpc.version), (None, BackendVersion::Grpc));
    assert!(warnings(&c, "AnnotationNotHonoured").is_empty());
    assert!(warnings(&c, "IgnoredAnnotation").is_empty());
    // The Service's own annotations win over the Ingress's, each on its own.
    let c = with(
        "    alb.ingress.kubernetes.io/backend-protocol: HTTPS\n    alb.ingress.kubernetes.io/backend-protocol-version: HTTP2\n",
        "alb.ingress.kubernetes.io/backend-protocol: HTTP",
    );
    let t = transport_of(&c).unwrap();
    assert_eq!((t.tls, t.version), (None, BackendVersion::Http2));
    // The opt-in check of the pods' certificate, its server name defaulting to the
    // Service's DNS name.
    let c = with(
        "    alb.ingress.kubernetes.io/backend-protocol: HTTPS\n",
        "portcullis.dev/backend-ca-secret: pods-ca",
    );
    let verify = transport_of(&c).unwrap().tls.unwrap().verify.unwrap();
    assert_eq!(verify.server_name, "a.apps.svc");
    assert!(verify.ca_pem.contains("BEGIN CERTIFICATE"));
}

/// A way of speaking to the pods that cannot be set up never falls back to another:
/// on the Ingress it closes the routes, on the Service its backend answers 503.
#[test]
fn backend_protocol_that_cannot_be_set_up_closes_the_backend() {
    let with = |annotations: &str, service_annotations: &str| {
        let services = services().replacen(
            "metadata: {name: a, namespace: apps}",
            &format!(
                "metadata: {{name: a, namespace: apps, annotations: {{{service_annotations}}}}}"
            ),
            1,
        );
        compiled(&format!(
            "{}{services}{}",
            alb_ingress("web", annotations, &[("/*", "ImplementationSpecific", "a")]),
            ca_secret()
        ))
    };
    for bad in [
        "alb.ingress.kubernetes.io/backend-protocol: https",
        "alb.ingress.kubernetes.io/backend-protocol-version: H2C",
    ] {
        let c = with(&format!("    {bad}\n"), "");
        let route = route_on(&c, "/", true).unwrap();
        assert_eq!(
            route.closed.as_ref().map(|c| c.reason),
            Some("AnnotationInvalid"),
            "{bad}"
        );
    }
    for (ingress, service) in [
        ("", "alb.ingress.kubernetes.io/backend-protocol: TLS"),
        ("", "portcullis.dev/backend-ca-secret: pods-ca"),
        (
            "    alb.ingress.kubernetes.io/backend-protocol: HTTPS\n",
            "portcullis.dev/backend-ca-secret: missing",
        ),
        (
            "    alb.ingress.kubernetes.io/backend-protocol: HTTPS\n",
            "portcullis.dev/backend-server-name: a.apps.svc",
        ),
    ] {
        let c = with(ingress, service);
        assert!(transport_of(&c).is_none(), "{ingress} {service}");
        assert!(
            matches!(
                route_on(&c, "/", true).unwrap().backend,
                Backend::Unavailable { .. }
            ),
            "{service}"
        );
        assert_eq!(warnings(&c, "InvalidBackendProtocol").len(), 1, "{service}");
    }
}

/// A Secret `pods-ca` in `apps` whose `ca.crt` holds a CA certificate.
fn ca_secret() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem: String = ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: pods-ca, namespace: apps}}\nstringData:\n  ca.crt: |\n{pem}"
    )
}

/// Annotations about AWS's load balancer itself are reported once each, with what
/// takes their place; a WAF named by name closes the routes like one named by ARN.
#[test]
fn infrastructure_annotations_are_reported_with_their_replacement() {
    let annotations = r#"    alb.ingress.kubernetes.io/tags: Environment=dev,Team=test
    alb.ingress.kubernetes.io/healthcheck-path: /healthz
    alb.ingress.kubernetes.io/success-codes: 200-399
    alb.ingress.kubernetes.io/target-type: ip
    alb.ingress.kubernetes.io/certificate-arn: arn:aws:acm:us-west-2:123456789012:certificate/1
    alb.ingress.kubernetes.io/listener-attributes.HTTPS-443: routing.http.response.server.enabled=false
    alb.ingress.kubernetes.io/load-balancer-name: shop
"#;
    let c = compiled(&format!(
        "{}{}",
        alb_ingress("web", annotations, &[("/*", "ImplementationSpecific", "a")]),
        services()
    ));
    let ignored: Vec<&Diagnostic> = c
        .diagnostics
        .iter()
        .filter(|d| d.reason == "IgnoredAnnotation")
        .collect();
    assert_eq!(ignored.len(), 7, "{ignored:#?}");
    let fix_of = |name: &str| {
        ignored
            .iter()
            .find(|d| d.field == format!("metadata.annotations[alb.ingress.kubernetes.io/{name}]"))
            .map(|d| d.fix.clone())
            .unwrap_or_else(|| panic!("{name} reported"))
    };
    assert!(fix_of("tags").contains("service.annotations"));
    assert!(fix_of("load-balancer-name").contains("service.annotations"));
    assert!(fix_of("listener-attributes.HTTPS-443").contains("service.annotations"));
    assert!(fix_of("healthcheck-path").contains("readiness probe"));
    assert!(fix_of("success-codes").contains("readiness probe"));
    assert!(fix_of("target-type").contains("ready endpoints"));
    assert!(fix_of("certificate-arn").contains("spec.tls"));
    assert!(route_on(&c, "/", true).unwrap().closed.is_none());

    let c = compiled(&format!(
        "{}{}",
        alb_ingress(
            "web",
            "    alb.ingress.kubernetes.io/wafv2-acl-name: shop-acl\n",
            &[("/*", "ImplementationSpecific", "a")]
        ),
        services()
    ));
    let route = route_on(&c, "/", true).unwrap();
    assert_eq!(
        route.closed.as_ref().unwrap().reason,
        "AnnotationNotHonoured"
    );
}
