//! GRPCRoutes, read as the HTTPRoutes they amount to, so both fill one route table
//! and share its guard, canonicalisation, precedence and access logs. A gRPC call is
//! an HTTP/2 POST to `/<service>/<method>` with a `content-type` of
//! `application/grpc` (or `application/grpc+<codec>`): a method match is a path
//! match, and every match of a GRPCRoute also asks for that content type, so a
//! request that is not a gRPC call is never taken by one.
//!
//! The rest of a GRPCRoute (parents, hostnames, rule names, header filters, backend
//! references and weights) has the shape of its HTTPRoute counterpart and is taken
//! over as it is.

use gateway_api::grpcroutes::{
    GrpcRoute, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeadersType,
    GrpcRouteRulesMatchesMethod, GrpcRouteRulesMatchesMethodType,
};
use gateway_api::httproutes::{
    HttpRoute, HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType,
};
use serde_json::Value;

use std::collections::BTreeSet;

use super::RouteDraft;
use super::snapshot::GuardPolicy;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::OnUnauthenticatedRequest;
use crate::store::Objects;

/// The content types of a gRPC call: `application/grpc`, alone or with a codec
/// (`+proto`) or parameters, in any case (media types are case-insensitive, and gRPC
/// servers take `Application/GRPC`). `application/grpc-web` is another protocol.
pub const GRPC_CONTENT_TYPE: &str = "(?i:application/grpc)(?:[+;].*)?";

/// Every GRPCRoute that can be read as one, as the HTTPRoute it amounts to (its
/// kind aside: the route's object stays the GRPCRoute).
pub(super) fn as_http_routes(objects: &Objects, diags: &mut Vec<Diagnostic>) -> Vec<HttpRoute> {
    objects
        .grpc_routes
        .iter()
        .filter_map(|r| {
            let obj = super::meta_ref("GRPCRoute", &r.metadata);
            as_http_route(r, &obj, diags)
        })
        .collect()
}

/// The HTTPRoute a GRPCRoute amounts to, or `None` (reported) when it cannot be
/// read as one.
pub(super) fn as_http_route(
    route: &GrpcRoute,
    obj: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> Option<HttpRoute> {
    let mut doc = match serde_json::to_value(route) {
        Ok(doc) => doc,
        Err(e) => return unreadable(obj, e, diags),
    };
    doc["kind"] = Value::from("HTTPRoute");
    let rules = route.spec.rules.iter().flatten();
    for (ri, rule) in rules.enumerate() {
        let matches: Vec<HttpRouteRulesMatches> = match rule.matches.as_deref() {
            Some(m) if !m.is_empty() => m
                .iter()
                .enumerate()
                .map(|(mi, m)| {
                    let field = format!("spec.rules[{ri}].matches[{mi}]");
                    as_http_match(m, obj, &field, diags)
                })
                .collect(),
            _ => vec![as_http_match(
                &GrpcRouteRulesMatches::default(),
                obj,
                "",
                diags,
            )],
        };
        let converted = match serde_json::to_value(matches) {
            Ok(v) => v,
            Err(e) => return unreadable(obj, e, diags),
        };
        doc["spec"]["rules"][ri]["matches"] = converted;
    }
    match serde_json::from_value(doc) {
        Ok(http) => Some(http),
        Err(e) => unreadable(obj, e, diags),
    }
}

fn unreadable(
    obj: &ObjectRef,
    e: serde_json::Error,
    diags: &mut Vec<Diagnostic>,
) -> Option<HttpRoute> {
    diags.push(Diagnostic::error(
        obj,
        "spec",
        "UnsupportedValue",
        format!("the GRPCRoute cannot be read as a route: {e}"),
        "fix the GRPCRoute (`kubectl explain grpcroute.spec`); it serves nothing until then".into(),
    ));
    None
}

/// One match: its method as a path match, its headers as they are, and the gRPC
/// content type. A header match the route names itself comes first, so a match on
/// `content-type` of its own is the one that counts (the first match of a name wins).
fn as_http_match(
    m: &GrpcRouteRulesMatches,
    obj: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> HttpRouteRulesMatches {
    let mut headers: Vec<HttpRouteRulesMatchesHeaders> = m
        .headers
        .iter()
        .flatten()
        .map(|h| HttpRouteRulesMatchesHeaders {
            name: h.name.clone(),
            r#type: Some(match h.r#type {
                Some(GrpcRouteRulesMatchesHeadersType::RegularExpression) => {
                    HttpRouteRulesMatchesHeadersType::RegularExpression
                }
                _ => HttpRouteRulesMatchesHeadersType::Exact,
            }),
            value: h.value.clone(),
        })
        .collect();
    headers.push(HttpRouteRulesMatchesHeaders {
        name: "content-type".into(),
        r#type: Some(HttpRouteRulesMatchesHeadersType::RegularExpression),
        value: GRPC_CONTENT_TYPE.into(),
    });
    let path = m
        .method
        .as_ref()
        .map(|method| method_path(method, obj, &format!("{field}.method"), diags));
    HttpRouteRulesMatches {
        headers: Some(headers),
        path,
        ..HttpRouteRulesMatches::default()
    }
}

/// The path a method match stands for. `Exact` with both names is the exact path
/// `/<service>/<method>`; with the service alone, every method of it; with the
/// method alone, that method of any service. `RegularExpression` matches each name
/// that is given against its own expression, and any name in place of one left out.
/// Neither name given matches every call, as no method match does.
fn method_path(
    m: &GrpcRouteRulesMatchesMethod,
    obj: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> HttpRouteRulesMatchesPath {
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    let regex = m.r#type == Some(GrpcRouteRulesMatchesMethodType::RegularExpression);
    let path = |kind, value: String| HttpRouteRulesMatchesPath {
        r#type: Some(kind),
        value: Some(value),
    };
    if !regex {
        for (name, value) in [("service", service), ("method", method)] {
            if let Some(v) = value.filter(|v| !grpc_name(v, name == "service")) {
                diags.push(Diagnostic::error(
                    obj,
                    &format!("{field}.{name}"),
                    "InvalidMatch",
                    format!("{name} {v:?} is not a gRPC name; it is matched as written"),
                    "use letters, digits and _ (and . between the parts of a service name), or type RegularExpression".into(),
                ));
            }
        }
    }
    let any = "[^/]+".to_owned();
    match (regex, service, method) {
        (_, None, None) => path(HttpRouteRulesMatchesPathType::PathPrefix, "/".into()),
        (false, Some(s), Some(m)) => {
            path(HttpRouteRulesMatchesPathType::Exact, format!("/{s}/{m}"))
        }
        (false, Some(s), None) => path(HttpRouteRulesMatchesPathType::PathPrefix, format!("/{s}")),
        (false, None, Some(m)) => path(
            HttpRouteRulesMatchesPathType::RegularExpression,
            format!("/{any}/{}", regex_lite::escape(m)),
        ),
        (true, s, m) => {
            let group = |v: Option<&str>| v.map_or_else(|| any.clone(), |v| format!("(?:{v})"));
            path(
                HttpRouteRulesMatchesPathType::RegularExpression,
                format!("/{}/{}", group(s), group(m)),
            )
        }
    }
}

/// A gRPC client never follows a login: a call without credentials to a GRPCRoute
/// whose AuthRule logs people in only with a browser (`spec.oidc` without
/// `spec.bearer`) is refused with `grpc-status` 16 UNAUTHENTICATED, and has no way
/// to become authenticated but a session cookie. Each such route and rule is told
/// once, so `portcullis check` says it before a client finds out.
pub(super) fn report_login_only(drafts: &[RouteDraft], diags: &mut Vec<Diagnostic>) {
    let mut told: BTreeSet<(&ObjectRef, &ObjectRef)> = BTreeSet::new();
    for draft in drafts.iter().filter(|d| d.ingress.kind == "GRPCRoute") {
        for guard in &draft.guards {
            let GuardPolicy::Oidc(policy) = &guard.policy else {
                continue;
            };
            let login_only = policy.login
                && policy.bearer.is_none()
                && policy.on_unauthenticated != OnUnauthenticatedRequest::Allow;
            if !login_only || !told.insert((&draft.ingress, &guard.rule)) {
                continue;
            }
            diags.push(Diagnostic::warning(
                &draft.ingress,
                "spec.rules",
                "GrpcLoginOnly",
                format!(
                    "AuthRule {} guards this GRPCRoute with browser logins only: gRPC clients cannot follow a login, so calls without a session cookie get grpc-status 16 UNAUTHENTICATED",
                    guard.rule
                ),
                format!(
                    "add spec.bearer to AuthRule {} so gRPC clients send a token (`authorization: Bearer ...` metadata)",
                    guard.rule
                ),
            ));
        }
    }
}

/// gRPC's grammar for a service (`package.Service`, a leading `.` allowed) or a
/// method name.
fn grpc_name(name: &str, service: bool) -> bool {
    let name = if service {
        name.strip_prefix('.').unwrap_or(name)
    } else {
        name
    };
    let part = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if service {
        name.split('.').all(part)
    } else {
        part(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> GrpcRoute {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn converted(yaml: &str) -> (HttpRoute, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let obj = ObjectRef::new("GRPCRoute", "ns", "r");
        let http = as_http_route(&route(yaml), &obj, &mut diags).unwrap();
        (http, diags)
    }

    fn paths(http: &HttpRoute) -> Vec<(String, String)> {
        http.spec
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.matches.iter().flatten())
            .map(|m| {
                let p = m.path.clone().unwrap_or_default();
                (
                    format!(
                        "{:?}",
                        p.r#type
                            .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix)
                    ),
                    p.value.unwrap_or_else(|| "/".into()),
                )
            })
            .collect()
    }

    const HEAD: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: r, namespace: ns}\n";

    #[test]
    fn method_matches_are_path_matches() {
        let (http, diags) = converted(&format!(
            "{HEAD}spec:\n  rules:\n  - matches:\n    - method: {{service: pkg.Svc, method: Echo}}\n    - method: {{service: pkg.Svc}}\n    - method: {{method: Echo}}\n    - method: {{type: RegularExpression, service: 'pkg\\.S.*', method: 'Ec.o'}}\n    - method: {{type: RegularExpression, method: 'Ec.o'}}\n    - headers: [{{name: v, value: '1'}}]\n  - {{}}\n"
        ));
        assert!(diags.is_empty(), "{diags:?}");
        let got = paths(&http);
        let want = [
            ("Exact", "/pkg.Svc/Echo"),
            ("PathPrefix", "/pkg.Svc"),
            ("RegularExpression", "/[^/]+/Echo"),
            ("RegularExpression", "/(?:pkg\\.S.*)/(?:Ec.o)"),
            ("RegularExpression", "/[^/]+/(?:Ec.o)"),
            ("PathPrefix", "/"),
            ("PathPrefix", "/"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn every_match_asks_for_the_grpc_content_type_after_the_routes_own_headers() {
        let (http, _) = converted(&format!(
            "{HEAD}spec:\n  rules:\n  - matches:\n    - headers: [{{name: version, value: two}}, {{name: x, type: RegularExpression, value: 'a.*'}}]\n  - backendRefs: [{{name: s, port: 8080}}]\n"
        ));
        let rules = http.spec.rules.unwrap();
        let first = &rules[0].matches.as_ref().unwrap()[0];
        let names: Vec<&str> = (first.headers.iter().flatten())
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, ["version", "x", "content-type"]);
        let last = first.headers.as_ref().unwrap().last().unwrap();
        assert_eq!(last.value, GRPC_CONTENT_TYPE);
        let second = &rules[1].matches.as_ref().unwrap()[0];
        assert_eq!(second.headers.as_ref().unwrap()[0].name, "content-type");
        assert_eq!(rules[1].backend_refs.as_ref().unwrap()[0].port, Some(8080));
    }

    #[test]
    fn the_content_type_expression_takes_grpc_and_nothing_else() {
        let re = regex_lite::Regex::new(&format!("^(?:{GRPC_CONTENT_TYPE})$")).unwrap();
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
            "APPLICATION/GRPC+proto",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for not in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "Application/GRPC-Web",
            "application/json",
            "text/plain; application/grpc",
            "",
        ] {
            assert!(!re.is_match(not), "{not}");
        }
    }

    #[test]
    fn names_filters_parents_and_weights_carry_over() {
        let (http, _) = converted(&format!(
            "{HEAD}spec:\n  parentRefs: [{{name: gw, sectionName: l}}]\n  hostnames: [grpc.example.com]\n  rules:\n  - name: named\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {{set: [{{name: a, value: b}}]}}\n    backendRefs: [{{name: s, port: 8080, weight: 7}}]\n"
        ));
        let spec = &http.spec;
        assert_eq!(
            spec.parent_refs.as_ref().unwrap()[0]
                .section_name
                .as_deref(),
            Some("l")
        );
        assert_eq!(spec.hostnames.as_ref().unwrap()[0], "grpc.example.com");
        let rule = &spec.rules.as_ref().unwrap()[0];
        assert_eq!(rule.name.as_deref(), Some("named"));
        assert_eq!(rule.backend_refs.as_ref().unwrap()[0].weight, Some(7));
        let set = rule.filters.as_ref().unwrap()[0]
            .request_header_modifier
            .as_ref()
            .unwrap()
            .set
            .as_ref()
            .unwrap();
        assert_eq!(set[0].name, "a");
    }

    #[test]
    fn a_name_outside_grpcs_grammar_is_reported_and_matched_as_written() {
        let (http, diags) = converted(&format!(
            "{HEAD}spec:\n  rules:\n  - matches:\n    - method: {{service: 'a/b', method: 'c.d'}}\n"
        ));
        let fields: Vec<&str> = diags.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].matches[0].method.service",
                "spec.rules[0].matches[0].method.method"
            ]
        );
        assert_eq!(paths(&http), [("Exact".to_owned(), "/a/b/c.d".to_owned())]);
    }

    #[test]
    fn grpc_names() {
        for ok in ["Echo", "_x1", "pkg.v1.Svc", ".pkg.Svc"] {
            assert!(grpc_name(ok, true), "{ok}");
        }
        for not in ["", "1a", "a..b", "a/b", "a b", "a."] {
            assert!(!grpc_name(not, true), "{not}");
        }
        assert!(!grpc_name("a.b", false));
    }
}
