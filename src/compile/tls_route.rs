//! TLSRoutes: TLS passed through still encrypted to the Service a route names for the
//! server name of the ClientHello. They attach to listeners of protocol TLS, mode
//! Passthrough, of Gateways with addresses of their own, where such a listener has a
//! socket to itself: nothing else is served there, and no HTTPRoute attaches to it.
//! Nothing is decrypted, so no AuthRule can guard a TLSRoute: one an AuthRule names,
//! or one on a listener an AuthRule guards, closes its connections instead.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use gateway_api::gateways::{GatewayListeners, GatewayListenersTlsMode};
use gateway_api::httproutes::{HttpRouteParentRefs, HttpRouteRulesBackendRefs};
use gateway_api::tlsroutes::{TlsRoute, TlsRouteParentRefs, TlsRouteRulesBackendRefs};

use super::backends::{Index, UpstreamCache};
use super::gateway::{
    Cond, GatewayApiState, Grants, Listener, ParentStatus, RouteState, attach, backend_ref,
};
use super::snapshot::{Backend, Guard};
use super::{age_key, meta_ref};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::store::Objects;

/// The TLSRoutes each passthrough socket serves, oldest route first.
#[derive(Clone, Default)]
pub struct PassthroughTable {
    by_socket: HashMap<SocketAddr, Vec<PassthroughRoute>>,
}

#[derive(Clone)]
pub struct PassthroughRoute {
    /// `abc.example.com`, `*.example.com`, or `None`: any server name.
    pub host: Option<String>,
    /// A Service, a weighted split of them, or `Invalid` (the connection is closed).
    pub backend: Backend,
    pub route: ObjectRef,
}

impl PassthroughTable {
    /// The route for `server_name` on `socket`: the exact name first, then the most
    /// specific wildcard that covers it, then a route for any name; the oldest route
    /// wins among equals.
    pub fn find(&self, socket: SocketAddr, server_name: &str) -> Option<&PassthroughRoute> {
        let routes = self.by_socket.get(&socket)?;
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        let exact = || routes.iter().find(|r| r.host.as_deref() == Some(&name));
        let wildcard = || {
            routes
                .iter()
                .filter(|r| r.host.as_deref().is_some_and(|h| covers(h, &name)))
                .min_by_key(|r| Reverse(r.host.as_ref().map_or(0, String::len)))
        };
        let any = || routes.iter().find(|r| r.host.is_none());
        exact().or_else(wildcard).or_else(any)
    }

    pub fn is_empty(&self) -> bool {
        self.by_socket.is_empty()
    }
}

/// Whether `*.suffix` covers `name` (one label or more in front of the suffix).
fn covers(wildcard: &str, name: &str) -> bool {
    wildcard.strip_prefix("*.").is_some_and(|suffix| {
        name.len() > suffix.len() + 1 && name.ends_with(suffix) && {
            name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
    })
}

/// The Accepted condition of a listener of protocol TLS: only mode Passthrough is
/// served, and only on a Gateway's own address, where the listener has its socket.
pub(super) fn listener_accepted(
    obj: &ObjectRef,
    spec: &GatewayListeners,
    field: &str,
    own_addresses: bool,
    diags: &mut Vec<Diagnostic>,
) -> Cond {
    // The mode defaults to Terminate.
    let mode = spec.tls.as_ref().and_then(|t| t.mode.as_ref());
    if mode != Some(&GatewayListenersTlsMode::Passthrough) {
        diags.push(Diagnostic::error(
            obj,
            &format!("{field}.tls.mode"),
            "UnsupportedValue",
            format!(
                "listener {} is protocol TLS with mode Terminate; Portcullis passes TLS through (mode Passthrough) and ends TLS on HTTPS listeners",
                spec.name
            ),
            "set tls.mode: Passthrough for TLSRoutes, or use protocol HTTPS with HTTPRoutes to end TLS here".into(),
        ));
        return Cond::no(
            "Accepted",
            "UnsupportedValue",
            "tls.mode Terminate is not supported on a TLS listener; use Passthrough, or protocol HTTPS with HTTPRoutes".into(),
        );
    }
    if !own_addresses {
        diags.push(Diagnostic::error(
            obj,
            &format!("{field}.protocol"),
            "UnsupportedProtocol",
            format!(
                "listener {} passes TLS through, which needs a socket of its own",
                spec.name
            ),
            "run Portcullis with --gateway-addresses, so each Gateway's listeners get sockets of their own".into(),
        ));
        return Cond::no(
            "Accepted",
            "UnsupportedProtocol",
            "TLS passthrough needs Gateways with addresses of their own (--gateway-addresses)"
                .into(),
        );
    }
    Cond::yes("Accepted", "Accepted", "")
}

/// Every TLSRoute attached to the passthrough listeners, its status in `state` and
/// each listener's count in `attached`.
#[allow(clippy::too_many_arguments)]
pub(super) fn compile(
    objects: &Objects,
    listeners: &HashMap<ObjectRef, Vec<Listener<'_>>>,
    labels: &HashMap<&str, &BTreeMap<String, String>>,
    index: &Index,
    grants: &Grants,
    guards: &HashMap<ObjectRef, Vec<Guard>>,
    upstreams: &mut UpstreamCache,
    attached: &mut HashMap<(ObjectRef, String), i32>,
    state: &mut GatewayApiState,
    require_auth_rule: bool,
    diags: &mut Vec<Diagnostic>,
) -> PassthroughTable {
    let mut routes: Vec<&TlsRoute> = objects.tls_routes.iter().map(Arc::as_ref).collect();
    routes.sort_by_key(|r| age_key(&r.metadata));
    let mut table = PassthroughTable::default();
    for route in routes {
        let obj = meta_ref("TLSRoute", &route.metadata);
        let mut route_state = RouteState {
            generation: route.metadata.generation,
            parents: Vec::new(),
        };
        let mut places = Vec::new();
        for parent in route.spec.parent_refs.iter().flatten() {
            let parent = as_http(parent);
            let hostnames = &route.spec.hostnames;
            let Some(outcome) = attach(&obj, &parent, hostnames, listeners, labels) else {
                continue;
            };
            route_state.parents.push(ParentStatus {
                parent,
                conditions: vec![outcome.accepted.clone()],
            });
            for (listener, hosts) in outcome.places {
                let key = (listener.owner.clone(), listener.spec.name.clone());
                *attached.entry(key).or_default() += 1;
                places.push((listener, hosts));
            }
        }
        if route_state.parents.is_empty() {
            continue;
        }
        let (mut backend, resolved) = route_backend(route, &obj, index, grants, upstreams, diags);
        if let Some(closed) = unmet_requirement(route, &obj, require_auth_rule, diags) {
            backend = closed;
        }
        for parent in &mut route_state.parents {
            parent.conditions.push(resolved.clone());
        }
        for (listener, hosts) in places {
            let Some(socket) = listener.socket.filter(|_| listener.usable) else {
                continue;
            };
            let backend = match guarded_by(&obj, listener, guards) {
                Some(rule) => closed_by_guard(&obj, rule, diags),
                None => backend.clone(),
            };
            let served = table.by_socket.entry(socket).or_default();
            for host in hosts {
                served.push(PassthroughRoute {
                    host,
                    backend: backend.clone(),
                    route: obj.clone(),
                });
            }
        }
        state.routes.insert(obj, route_state);
    }
    table
}

/// A TLSRoute's parentRef in the shape every route's status is written from (the
/// fields are the same).
fn as_http(parent: &TlsRouteParentRefs) -> HttpRouteParentRefs {
    HttpRouteParentRefs {
        group: parent.group.clone(),
        kind: parent.kind.clone(),
        name: parent.name.clone(),
        namespace: parent.namespace.clone(),
        port: parent.port,
        section_name: parent.section_name.clone(),
    }
}

/// The AuthRule that guards this route or the listener it comes through, if any:
/// it cannot see inside the TLS passed through, so it must close it.
fn guarded_by<'g>(
    obj: &ObjectRef,
    listener: &Listener<'_>,
    guards: &'g HashMap<ObjectRef, Vec<Guard>>,
) -> Option<&'g ObjectRef> {
    let on_route = guards.get(obj).into_iter().flatten();
    let on_listener = guards
        .get(&listener.gateway)
        .into_iter()
        .flatten()
        .filter(|g| g.section.as_deref().is_none_or(|s| s == listener.spec.name));
    on_route.chain(on_listener).map(|g| &g.rule).next()
}

/// A TLSRoute whose annotations ask for a login (`portcullis.dev/auth-rule`), or any
/// TLSRoute under `--require-auth-rule` not annotated `portcullis.dev/auth: none`,
/// can never have one: it is closed, and told why.
fn unmet_requirement(
    route: &TlsRoute,
    obj: &ObjectRef,
    require_auth_rule: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<Backend> {
    use super::required::{AUTH_ANNOTATION, AUTH_RULE_ANNOTATION, annotation_field};
    let asked = super::required::requirement(route.metadata.annotations.as_ref());
    let (field, message, fix) = if let Some((field, problem)) = asked.invalid.first() {
        (
            field.clone(),
            problem.clone(),
            "fix the annotation".to_owned(),
        )
    } else if !asked.rules.is_empty() {
        (
            annotation_field(AUTH_RULE_ANNOTATION),
            "names AuthRules, which cannot guard TLS passed through; the route is closed".into(),
            "end TLS at Portcullis (an HTTPS listener with an HTTPRoute) for routes that need a login".into(),
        )
    } else if require_auth_rule && !asked.public {
        (
            annotation_field(AUTH_ANNOTATION),
            "--require-auth-rule closes every route no AuthRule guards, and none can guard TLS passed through".into(),
            format!("annotate the TLSRoute {AUTH_ANNOTATION}: none to pass it through without a login, or end TLS at Portcullis with an HTTPRoute"),
        )
    } else {
        return None;
    };
    diags.push(Diagnostic::error(
        obj,
        &field,
        "AuthRulePending",
        message.clone(),
        fix,
    ));
    Some(Backend::Invalid { reason: message })
}

fn closed_by_guard(obj: &ObjectRef, rule: &ObjectRef, diags: &mut Vec<Diagnostic>) -> Backend {
    let message = format!(
        "{rule} guards this route, but TLS passed through is never decrypted, so it cannot be authenticated; its connections are closed"
    );
    diags.push(Diagnostic::error(
        obj,
        "spec.parentRefs",
        "GuardCannotApply",
        message.clone(),
        "end TLS at Portcullis instead: an HTTPS listener with an HTTPRoute, which the AuthRule then guards".into(),
    ));
    Backend::Invalid { reason: message }
}

/// Every backendRef of the route's rules, weighted; the ResolvedRefs condition of the
/// first that does not resolve (its share closes its connections).
fn route_backend(
    route: &TlsRoute,
    obj: &ObjectRef,
    index: &Index,
    grants: &Grants,
    upstreams: &mut UpstreamCache,
    diags: &mut Vec<Diagnostic>,
) -> (Backend, Cond) {
    let mut resolved = Cond::yes("ResolvedRefs", "ResolvedRefs", "");
    let mut shares: Vec<(u32, Backend)> = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        for (bi, r) in rule.backend_refs.iter().enumerate() {
            let field = format!("spec.rules[{ri}].backendRefs[{bi}]");
            let weight = u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0);
            let backend = match backend_ref(
                &as_http_ref(r),
                obj,
                &field,
                // Passed through as TCP: no client certificate is presented.
                (index, grants, &None),
                upstreams,
                diags,
            ) {
                Ok(b) => b,
                Err(cond) => {
                    if resolved.ok {
                        resolved = cond.clone();
                    }
                    Backend::Invalid {
                        reason: cond.message,
                    }
                }
            };
            shares.push((weight, backend));
        }
    }
    shares.retain(|(w, _)| *w > 0);
    let backend = match shares.len() {
        0 => Backend::Invalid {
            reason: "the route has no backend with a weight above 0".into(),
        },
        1 => shares.remove(0).1,
        _ => Backend::Split(shares),
    };
    (backend, resolved)
}

fn as_http_ref(r: &TlsRouteRulesBackendRefs) -> HttpRouteRulesBackendRefs {
    HttpRouteRulesBackendRefs {
        group: r.group.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        port: r.port,
        weight: r.weight,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::{objects, service};
    use super::super::{CompileOptions, Compiled, compile as compile_all};
    use super::*;

    const EDGE: &str = r#"
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
  listeners:
  - {name: tls, port: 443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: web, port: 80, protocol: HTTP}
  - {name: ended, port: 8443, protocol: TLS, tls: {mode: Terminate}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: pass, namespace: apps, annotations: ANNOTATIONS}
spec:
  parentRefs: [{name: edge, sectionName: tls}, {name: edge, sectionName: web}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#;

    fn compiled(annotations: &str, addresses: bool, require_auth_rule: bool) -> Compiled {
        let yaml = format!(
            "{}\n---\n{}",
            EDGE.replace("ANNOTATIONS", annotations),
            service("apps", "web", "10.0.0.1", 8080)
        );
        let options = CompileOptions {
            gateway_addresses: addresses.then(|| "127.10.0.0/24".parse().unwrap()),
            require_auth_rule,
            ..CompileOptions::default()
        };
        compile_all(&objects(&yaml), &options)
    }

    /// Whether `abc.example.com` is passed through to a Service on the TLS listener.
    fn served(c: &Compiled) -> bool {
        let gateway = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "apps", "edge")];
        let socket = gateway.listeners[0]
            .socket
            .expect("the listener has a socket");
        let route = c.snapshot.passthrough.find(socket, "abc.example.com");
        matches!(route.map(|r| &r.backend), Some(Backend::Service(_)))
    }

    fn accepted(c: &Compiled, kind: &str, name: &str) -> Vec<(bool, String)> {
        c.gateway_status.routes[&ObjectRef::new(kind, "apps", name)]
            .parents
            .iter()
            .map(|p| (p.conditions[0].ok, p.conditions[0].reason.clone()))
            .collect()
    }

    #[test]
    fn tls_routes_attach_to_passthrough_listeners_only_and_http_routes_never_do() {
        let c = compiled("{}", true, false);
        assert!(served(&c));
        assert_eq!(
            accepted(&c, "TLSRoute", "pass"),
            [
                (true, "Accepted".into()),
                (false, "NotAllowedByListeners".into())
            ]
        );
        assert_eq!(
            accepted(&c, "HTTPRoute", "web"),
            [(false, "NotAllowedByListeners".into())]
        );
        let gateway = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "apps", "edge")];
        let listener = |i: usize| &gateway.listeners[i];
        assert_eq!(listener(0).supported_kinds, ["TLSRoute"]);
        assert_eq!(listener(0).attached_routes, 1);
        assert_eq!(listener(1).attached_routes, 0);
        assert!(listener(2).supported_kinds.is_empty());
        let ended = &listener(2).conditions[0];
        assert_eq!(
            (ended.ok, ended.reason.as_str()),
            (false, "UnsupportedValue")
        );
        assert!(
            c.snapshot
                .gateway_sockets
                .iter()
                .any(|s| s.passthrough && !s.tls)
        );
        // Without sockets of their own, passthrough listeners are not served at all.
        let shared = compiled("{}", false, false);
        let gateway = &shared.gateway_status.gateways[&ObjectRef::new("Gateway", "apps", "edge")];
        let refused = &gateway.listeners[0].conditions[0];
        assert_eq!(
            (refused.ok, refused.reason.as_str()),
            (false, "UnsupportedProtocol")
        );
        assert!(shared.snapshot.passthrough.is_empty());
    }

    #[test]
    fn a_tls_route_that_asks_for_a_login_is_closed() {
        assert!(!served(&compiled("{}", true, true)), "--require-auth-rule");
        assert!(served(&compiled(
            r#"{"portcullis.dev/auth": none}"#,
            true,
            true
        )));
        let named = compiled(r#"{"portcullis.dev/auth-rule": users}"#, true, false);
        assert!(!served(&named), "an AuthRule named in the annotation");
        assert!(
            named
                .diagnostics
                .iter()
                .any(|d| d.reason == "AuthRulePending")
        );
    }

    fn table(hosts: &[(Option<&str>, &str)]) -> (PassthroughTable, SocketAddr) {
        let socket: SocketAddr = "127.10.0.5:443".parse().unwrap();
        let routes = hosts
            .iter()
            .map(|(host, name)| PassthroughRoute {
                host: host.map(str::to_owned),
                backend: Backend::Invalid {
                    reason: String::new(),
                },
                route: ObjectRef::new("TLSRoute", "ns", name),
            })
            .collect();
        let mut table = PassthroughTable::default();
        table.by_socket.insert(socket, routes);
        (table, socket)
    }

    fn found(t: &PassthroughTable, socket: SocketAddr, name: &str) -> Option<String> {
        t.find(socket, name).map(|r| r.route.name.clone())
    }

    #[test]
    fn the_exact_name_wins_then_the_most_specific_wildcard_then_any() {
        let (t, socket) = table(&[
            (Some("*.com"), "broad"),
            (Some("*.example.com"), "narrow"),
            (Some("abc.example.com"), "exact"),
            (Some("abc.example.com"), "younger"),
        ]);
        assert_eq!(found(&t, socket, "abc.example.com").unwrap(), "exact");
        assert_eq!(found(&t, socket, "ABC.Example.com.").unwrap(), "exact");
        assert_eq!(found(&t, socket, "x.y.example.com").unwrap(), "narrow");
        assert_eq!(found(&t, socket, "other.com").unwrap(), "broad");
        // A wildcard covers names under it, never the suffix itself or a look-alike.
        for name in ["example.com", "com", "abcexample.com.org", "notexample.org"] {
            let hit = found(&t, socket, name);
            assert!(hit.as_deref() != Some("narrow"), "{name}: {hit:?}");
        }
        assert_eq!(found(&t, socket, "other.org"), None);
        let elsewhere: SocketAddr = "127.10.0.6:443".parse().unwrap();
        assert_eq!(found(&t, elsewhere, "abc.example.com"), None);
        let (any, socket) = table(&[(Some("a.example.com"), "a"), (None, "any")]);
        assert_eq!(found(&any, socket, "b.example.org").unwrap(), "any");
    }
}
