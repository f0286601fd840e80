//! `portcullis check` in a GitOps pipeline: a rendered cluster in one stream, strict
//! fields, machine-readable output, exit codes that tell errors from warnings.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs `check -f - -o json` on `input`; the exit code and the parsed report.
fn check_json(input: &str) -> (i32, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-f", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), report)
}

fn problems<'r>(report: &'r serde_json::Value, reason: &str) -> Vec<&'r serde_json::Value> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["reason"] == reason)
        .collect()
}

/// 10,000 apps (Ingress, Service, EndpointSlice) and 1,000 AuthRules with their
/// Secrets: 32,000 documents in one stream, as `helm template` prints a cluster.
fn rendered_cluster() -> String {
    let mut out = String::with_capacity(16 << 20);
    for i in 0..10_000 {
        out.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: app{i}, namespace: ns{n}}}\nspec:\n  ingressClassName: portcullis\n  rules:\n  - host: app{i}.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: app{i}, port: {{number: 80}}}}}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app{i}, namespace: ns{n}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: app{i}-1, namespace: ns{n}, labels: {{kubernetes.io/service-name: app{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"10.{}.{}.{}\"]}}]\n",
            (i / 65536) % 256,
            (i / 256) % 256,
            i % 256,
            n = i % 100,
        ));
    }
    for i in 0..1_000 {
        out.push_str(&format!(
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: sso{i}, namespace: ns{n}}}\nspec:\n  targetRefs: [{{name: app{i}}}]\n  oidc: {{issuer: \"https://idp.example.com\", clientId: app{i}, clientSecretRef: {{name: idp{i}}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp{i}, namespace: ns{n}}}\nstringData: {{client-secret: s{i}}}\n",
            n = i % 100,
        ));
    }
    out
}

#[test]
fn a_rendered_cluster_of_32000_documents_checks_in_one_stream() {
    let input = rendered_cluster();
    assert_eq!(input.matches("\n---\n").count() + 1, 32_000);
    let started = Instant::now();
    let (code, report) = check_json(&input);
    let took = started.elapsed();
    assert_eq!(
        code,
        0,
        "{:?}",
        &report["problems"].as_array().unwrap().first()
    );
    let summary = &report["summary"];
    assert_eq!(summary["routes"], 10_000);
    assert_eq!(summary["authRules"], 1_000);
    assert_eq!(summary["errors"], 0);
    // A figure, not a verdict: bench/README.md records the release-build timing.
    eprintln!(
        "check of 32,000 documents ({} MiB): {took:?} (debug build)",
        input.len() >> 20
    );
}

const RULE: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: apps}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: svc-1, namespace: apps, labels: {kubernetes.io/service-name: svc}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [\"10.0.0.1\"]}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: apps}\nspec:\n  ingressClassName: portcullis\n  rules:\n  - host: app.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: svc, port: {number: 80}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: sso, namespace: apps}\nspec:\n  targetRefs: [{name: web}]\n  oidc: {issuer: \"https://idp.example.com\", clientId: app, clientSecretRef: {name: idp}}\n";

#[test]
fn typos_and_bad_values_name_their_field_and_what_is_allowed() {
    let (code, report) = check_json(RULE);
    assert_eq!(code, 0, "{report}");

    let typo = RULE.replace(
        "  targetRefs:",
        "  onUnauthenticatedRequests: deny\n  targetRefs:",
    );
    let (code, report) = check_json(&typo);
    assert_eq!(code, 1);
    let unknown = problems(&report, "UnknownField");
    assert_eq!(unknown.len(), 1, "{report}");
    assert_eq!(unknown[0]["field"], "spec.onUnauthenticatedRequests");
    assert_eq!(unknown[0]["name"], "sso");
    let fix = unknown[0]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("did you mean onUnauthenticatedRequest?"),
        "{fix}"
    );

    let scopes = RULE.replace("clientId: app,", "clientId: app, scopes: openid,");
    let (_, report) = check_json(&scopes);
    assert_eq!(
        problems(&report, "UnknownField")[0]["field"],
        "spec.oidc.scopes"
    );

    let bad_value = RULE.replace(
        "  targetRefs:",
        "  onUnauthenticatedRequest: sometimes\n  targetRefs:",
    );
    let (code, report) = check_json(&bad_value);
    assert_eq!(code, 1);
    let invalid = problems(&report, "InvalidAuthRule");
    assert_eq!(
        invalid[0]["field"], "spec.onUnauthenticatedRequest",
        "{report}"
    );
    let message = invalid[0]["message"].as_str().unwrap();
    assert!(
        message.contains("sometimes")
            && message.contains("authenticate")
            && message.contains("deny")
            && message.contains("allow"),
        "{message}"
    );

    let ingress_typo = RULE.replace("pathType: Prefix", "pathType: Prefix, pathtype: Exact");
    let (_, report) = check_json(&ingress_typo);
    assert_eq!(
        problems(&report, "UnknownField")[0]["field"],
        "spec.rules[0].http.paths[0].pathtype"
    );

    let endpoint = RULE.replace(
        "clientId: app,",
        "clientId: app, tokenEndpoint: \"http://idp.example.com/token\",",
    );
    let (_, report) = check_json(&endpoint);
    let message = problems(&report, "InvalidEndpoint")[0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.starts_with("\"http://idp.example.com/token\" "),
        "the URL as written: {message}"
    );
}

#[test]
fn warnings_alone_have_an_exit_code_of_their_own() {
    let other_class = RULE.replace("ingressClassName: portcullis", "ingressClassName: nginx");
    let (code, report) = check_json(&other_class);
    assert_eq!(report["summary"]["errors"], 0, "{report}");
    assert_eq!(report["summary"]["warnings"], 1);
    assert_eq!(code, 3);
}

/// `spec.bearer` is checked offline like the rest: a claim format no one knows, an
/// issuer over plain http, a claim that is always checked named as an additional one,
/// and an authorization expression that does not compile, each on its field.
#[test]
fn bearer_and_authorization_problems_are_named_by_field() {
    let rule = |bearer: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: apps}}\nspec:\n  ingressClassName: portcullis\n  defaultBackend: {{service: {{name: svc, port: {{number: 80}}}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: apps}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-1, namespace: apps, labels: {{kubernetes.io/service-name: svc}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"10.0.0.1\"]}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: apps}}\nstringData: {{client-secret: s}}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: api, namespace: apps}}\nspec:\n  targetRefs: [{{name: web}}]\n  oidc: {{issuer: \"https://idp.example.com\", clientId: app, clientSecretRef: {{name: idp}}}}\n{bearer}"
        )
    };
    let (code, report) = check_json(&rule(
        "  bearer:\n    issuer: https://idp.example.com\n    audiences: [https://api.example.com]\n    additionalClaims:\n    - {name: scope, format: comma-separated, values: [read]}\n",
    ));
    assert_eq!(code, 1, "{report}");
    let unknown = problems(&report, "InvalidAuthRule");
    assert_eq!(
        unknown[0]["field"], "spec.bearer.additionalClaims[0].format",
        "{report}"
    );
    assert!(
        unknown[0]["message"]
            .as_str()
            .unwrap()
            .contains("space-separated-values"),
        "the formats allowed are listed: {report}"
    );

    let (code, report) = check_json(&rule(
        "  bearer:\n    issuer: http://idp.example.com\n    audiences: [https://api.example.com]\n    additionalClaims:\n    - {name: exp, format: single-string, values: ['1']}\n  authorization:\n    rules:\n    - {name: broken, when: \"claims.scope.contains(\", action: Allow}\n",
    ));
    assert_eq!(code, 1, "{report}");
    let fields: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    for field in [
        "spec.bearer.issuer",
        "spec.bearer.additionalClaims[0].name",
        "spec.authorization.rules[0].when",
    ] {
        assert!(fields.contains(&field), "{field} in {report}");
    }
    let cel = problems(&report, "InvalidExpression");
    assert!(
        cel[0]["message"]
            .as_str()
            .unwrap()
            .contains("line 1, column"),
        "{report}"
    );

    let (code, report) = check_json(&rule(
        "  bearer:\n    issuer: https://idp.example.com\n    jwksUri: https://idp.example.com/jwks\n    audiences: [https://api.example.com]\n    additionalClaims:\n    - {name: scope, format: space-separated-values, values: [read, write]}\n    - {name: groups, format: string-array, values: [ops]}\n",
    ));
    assert_eq!(code, 0, "a good one is clean: {report}");
}

/// A rule with neither a login nor tokens, a cookie domain that is a public suffix, and
/// one on a rule without a login: each refused on its field, offline.
#[test]
fn rules_without_a_login_and_cookie_domains_are_checked_offline() {
    let rule = |spec: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: apps}}\nspec:\n  ingressClassName: portcullis\n  rules: [{{host: app.example.co.uk, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}]}}}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: apps}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: apps}}\nstringData: {{client-secret: s}}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: api, namespace: apps}}\nspec:\n  targetRefs: [{{name: web}}]\n{spec}"
        )
    };
    let login = "  oidc: {issuer: \"https://idp.example.com\", clientId: app, clientSecretRef: {name: idp}}\n";
    let bearer = "  bearer: {issuer: \"https://idp.example.com\", audiences: [api]}\n";
    let cases = [
        ("", "MissingOidc", "spec.oidc"),
        (
            &format!("{login}  session: {{cookieDomain: co.uk}}\n") as &str,
            "InvalidCookieDomain",
            "spec.session.cookieDomain",
        ),
        (
            &format!("{bearer}  session: {{cookieDomain: example.co.uk}}\n"),
            "InvalidCookieDomain",
            "spec.session.cookieDomain",
        ),
    ];
    for (spec, reason, field) in cases {
        let (code, report) = check_json(&rule(spec));
        assert_eq!(code, 1, "{spec}: {report}");
        let found = problems(&report, reason);
        assert_eq!(
            found.first().map(|p| &p["field"]),
            Some(&field.into()),
            "{spec}: {report}"
        );
    }
    // The same domain on the rule with a login, and a bearer-only rule, pass.
    for spec in [
        format!("{login}  session: {{cookieDomain: example.co.uk}}\n"),
        bearer.to_owned(),
    ] {
        let (_, report) = check_json(&rule(&spec));
        let of_rule = (report["problems"].as_array().unwrap().iter())
            .filter(|p| p["kind"] == "AuthRule")
            .count();
        assert_eq!(of_rule, 0, "{spec}: {report}");
    }
}
