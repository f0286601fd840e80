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
