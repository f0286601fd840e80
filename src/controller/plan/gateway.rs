//! Status for the Gateway API objects of Portcullis's classes, worked out as the rest of
//! the plan is: from the compiled state and the status each object has now, compared
//! without transition times, so an unchanged object is never written.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::{Inputs, Write};
use crate::compile::{Cond, GatewayState, ListenerSetState, ListenerState, RouteState};
use crate::diagnostics::ObjectRef;
use crate::model::{GATEWAY_CONTROLLER_NAME, GATEWAY_GROUP};

/// The features the conformance suite may check, as GatewayClass status lists them.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "HTTPRoute",
    "ReferenceGrant",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "GatewayHTTPListenerIsolation",
    "ListenerSet",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "GatewayBackendClientCertificate",
    "HTTPRouteCORS",
];

/// Features served only when Gateways have addresses of their own
/// (`--gateway-addresses`): listeners at any port, told apart by port; TLS passed
/// through, which needs a socket to itself.
pub const OWN_ADDRESS_FEATURES: &[&str] = &[
    "GatewayPort8080",
    "HTTPRouteParentRefPort",
    "HTTPRouteDestinationPortMatching",
    "GatewayAddressEmpty",
    "GatewayStaticAddresses",
    "TLSRoute",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
];

pub fn plan(input: &Inputs<'_>, addresses: &[(String, String)]) -> Vec<Write> {
    let state = &input.gateway;
    let mut writes = Vec::new();
    for class in &input.objects.gateway_classes {
        let Some(name) = class.metadata.name.as_deref() else {
            continue;
        };
        let Some(generation) = state.classes.get(name) else {
            continue;
        };
        let object = ObjectRef::new("GatewayClass", "", name);
        let current = class
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        let conditions = [
            Cond {
                kind: "Accepted",
                ok: true,
                reason: "Accepted".into(),
                message: "served by Portcullis".into(),
            },
            Cond {
                kind: "SupportedVersion",
                ok: true,
                reason: "SupportedVersion".into(),
                message: "Gateway API v1 (standard channel)".into(),
            },
        ];
        let own = state.own_addresses.then_some(OWN_ADDRESS_FEATURES);
        let mut names: Vec<&str> = SUPPORTED_FEATURES
            .iter()
            .chain(own.into_iter().flatten())
            .copied()
            .collect();
        names.sort_unstable();
        let features: Vec<Value> = names.iter().map(|f| json!({"name": f})).collect();
        let status = json!({
            "conditions": conditions_json(&conditions, *generation, current.as_ref().and_then(|c| c.get("conditions")), input.now),
            "supportedFeatures": features,
        });
        writes.extend(write_if_changed(
            input,
            object,
            "GatewayClass",
            status,
            current,
        ));
    }
    for gateway in &input.objects.gateways {
        let object = crate::compile::meta_ref("Gateway", &gateway.metadata);
        let Some(gw) = state.gateways.get(&object) else {
            continue;
        };
        let current = gateway
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        let status = gateway_status(gw, current.as_ref(), addresses, input.now);
        writes.extend(write_if_changed(input, object, "Gateway", status, current));
    }
    for set in &input.objects.listener_sets {
        let object = crate::compile::meta_ref("ListenerSet", &set.metadata);
        let Some(ls) = state.listener_sets.get(&object) else {
            continue;
        };
        let current = set
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        let status = listener_set_status(ls, current.as_ref(), input.now);
        writes.extend(write_if_changed(
            input,
            object,
            "ListenerSet",
            status,
            current,
        ));
    }
    let http = (input.objects.http_routes.iter()).map(|r| {
        (
            "HTTPRoute",
            &r.metadata,
            r.status.as_ref().map(serde_json::to_value),
        )
    });
    let grpc = (input.objects.grpc_routes.iter()).map(|r| {
        (
            "GRPCRoute",
            &r.metadata,
            r.status.as_ref().map(serde_json::to_value),
        )
    });
    let tls = (input.objects.tls_routes.iter()).map(|r| {
        (
            "TLSRoute",
            &r.metadata,
            r.status.as_ref().map(serde_json::to_value),
        )
    });
    for (kind, meta, current) in http.chain(grpc).chain(tls) {
        let object = crate::compile::meta_ref(kind, meta);
        let Some(rs) = state.routes.get(&object) else {
            continue;
        };
        let current = current.and_then(Result::ok);
        let status = route_status(rs, &object, current.as_ref(), input.now);
        writes.extend(write_if_changed(input, object, kind, status, current));
    }
    writes.extend(backend_tls_policy_writes(input));
    writes
}

/// The ancestors of each BackendTLSPolicy: ours as compiled, others' kept. Nothing is
/// written for a policy none of our Gateways reach that shows none of ours.
fn backend_tls_policy_writes(input: &Inputs<'_>) -> Vec<Write> {
    let mut writes = Vec::new();
    for policy in &input.objects.backend_tls_policies {
        let object = crate::compile::meta_ref("BackendTLSPolicy", &policy.metadata);
        let Some(ps) = input.gateway.backend_tls_policies.get(&object) else {
            continue;
        };
        let current = policy
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        let listed = |c: &Value| {
            c.get("ancestors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let before = current.as_ref().map(listed).unwrap_or_default();
        let ours_before = |a: &&Value| {
            a.get("controllerName").and_then(Value::as_str) == Some(GATEWAY_CONTROLLER_NAME)
        };
        if ps.ancestors.is_empty() && !before.iter().any(|a| ours_before(&a)) {
            continue;
        }
        let theirs = before.iter().filter(|a| !ours_before(a)).cloned();
        let ours = ps.ancestors.iter().map(|(parent, conditions)| {
            let ancestor_ref = json!({
                "group": parent.group,
                "kind": parent.kind,
                "namespace": parent.namespace,
                "name": parent.name,
            });
            let kept = before
                .iter()
                .filter(ours_before)
                .find(|a| {
                    a.get("ancestorRef").map(without_defaults)
                        == Some(without_defaults(&ancestor_ref))
                })
                .and_then(|a| a.get("conditions"));
            json!({
                "ancestorRef": ancestor_ref,
                "controllerName": GATEWAY_CONTROLLER_NAME,
                "conditions": conditions_json(conditions, ps.generation, kept, input.now),
            })
        });
        // At most 16 ancestors, as the API allows.
        let ancestors: Vec<Value> = theirs.chain(ours).take(16).collect();
        let status = json!({ "ancestors": ancestors });
        writes.extend(write_if_changed(
            input,
            object,
            "BackendTLSPolicy",
            status,
            current,
        ));
    }
    writes
}

fn write_if_changed(
    input: &Inputs<'_>,
    object: ObjectRef,
    kind: &'static str,
    status: Value,
    current: Option<Value>,
) -> Option<Write> {
    let same = |v: &Value| without_times(v) == without_times(&status);
    if current.as_ref().is_some_and(same) || input.own_gateway.get(&object).is_some_and(same) {
        return None;
    }
    Some(Write::GatewayApiStatus {
        object,
        kind,
        status,
    })
}

fn gateway_status(
    gw: &GatewayState,
    current: Option<&Value>,
    addresses: &[(String, String)],
    now: Timestamp,
) -> Value {
    let listeners = listeners_json(&gw.listeners, gw.generation, current, now);
    let own: Vec<(String, String)> = (gw.address.iter())
        .map(|ip| ("IPAddress".to_owned(), ip.to_string()))
        .collect();
    let addresses = if gw.own_address { &own } else { addresses };
    let mut conditions = gw.conditions.clone();
    if addresses.is_empty()
        && !gw.own_address
        && let Some(p) = conditions.iter_mut().find(|c| c.kind == "Programmed")
    {
        *p = Cond {
            kind: "Programmed",
            ok: false,
            reason: "AddressNotAssigned".into(),
            message: "no address to publish: set --publish-service or --publish-address".into(),
        };
    }
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|(kind, value)| json!({"type": kind, "value": value}))
        .collect();
    let mut status = json!({
        "addresses": addresses,
        "conditions": conditions_json(&conditions, gw.generation, current.and_then(|c| c.get("conditions")), now),
        "listeners": listeners,
    });
    if let Some(count) = gw.attached_listener_sets {
        status["attachedListenerSets"] = json!(count);
    }
    status
}

/// The status of listeners (a Gateway's or a ListenerSet's), keeping the transition
/// times of the conditions they had.
fn listeners_json(
    listeners: &[ListenerState],
    generation: Option<i64>,
    current: Option<&Value>,
    now: Timestamp,
) -> Vec<Value> {
    listeners
        .iter()
        .map(|l| {
            let before = current
                .and_then(|c| c.get("listeners"))
                .and_then(Value::as_array)
                .and_then(|ls| ls.iter().find(|x| x.get("name").and_then(Value::as_str) == Some(&l.name)))
                .and_then(|x| x.get("conditions"));
            json!({
                "name": l.name,
                "attachedRoutes": l.attached_routes,
                "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GATEWAY_GROUP, "kind": k})).collect::<Vec<_>>(),
                "conditions": conditions_json(&l.conditions, generation, before, now),
            })
        })
        .collect()
}

fn listener_set_status(ls: &ListenerSetState, current: Option<&Value>, now: Timestamp) -> Value {
    let before = current.and_then(|c| c.get("conditions"));
    json!({
        "conditions": conditions_json(&ls.conditions, ls.generation, before, now),
        "listeners": listeners_json(&ls.listeners, ls.generation, current, now),
    })
}

fn route_status(
    rs: &RouteState,
    object: &ObjectRef,
    current: Option<&Value>,
    now: Timestamp,
) -> Value {
    let theirs: Vec<Value> = current
        .and_then(|c| c.get("parents"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| {
            p.get("controllerName").and_then(Value::as_str) != Some(GATEWAY_CONTROLLER_NAME)
        })
        .cloned()
        .collect();
    let ours = rs.parents.iter().map(|p| {
        let parent_ref = json!({
            "group": p.parent.group.clone().unwrap_or_else(|| GATEWAY_GROUP.into()),
            "kind": p.parent.kind.clone().unwrap_or_else(|| "Gateway".into()),
            "namespace": p.parent.namespace.clone().unwrap_or_else(|| object.namespace.clone()),
            "name": p.parent.name,
        });
        let mut parent_ref = parent_ref;
        if let Some(s) = &p.parent.section_name {
            parent_ref["sectionName"] = json!(s);
        }
        if let Some(port) = p.parent.port {
            parent_ref["port"] = json!(port);
        }
        let before = current
            .and_then(|c| c.get("parents"))
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter().find(|x| {
                    x.get("controllerName").and_then(Value::as_str) == Some(GATEWAY_CONTROLLER_NAME)
                        && x.get("parentRef").map(without_defaults)
                            == Some(without_defaults(&parent_ref))
                })
            })
            .and_then(|x| x.get("conditions"));
        json!({
            "parentRef": parent_ref,
            "controllerName": GATEWAY_CONTROLLER_NAME,
            "conditions": conditions_json(&p.conditions, rs.generation, before, now),
        })
    });
    json!({"parents": theirs.into_iter().chain(ours).collect::<Vec<_>>()})
}

/// A parentRef compared without the fields the API server may default.
fn without_defaults(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("group");
        map.remove("kind");
    }
    v
}

/// Conditions as the API wants them, keeping each one's transition time while its
/// status stays what it was.
fn conditions_json(
    conditions: &[Cond],
    generation: Option<i64>,
    before: Option<&Value>,
    now: Timestamp,
) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" };
            let kept = before
                .and_then(Value::as_array)
                .and_then(|list| {
                    list.iter()
                        .find(|b| b.get("type").and_then(Value::as_str) == Some(c.kind))
                })
                .filter(|b| b.get("status").and_then(Value::as_str) == Some(status))
                .and_then(|b| b.get("lastTransitionTime").cloned());
            let message = if c.message.is_empty() {
                c.reason.clone()
            } else {
                c.message.clone()
            };
            json!({
                "type": c.kind,
                "status": status,
                "reason": c.reason,
                "message": message,
                "observedGeneration": generation.unwrap_or(0),
                "lastTransitionTime": kept.unwrap_or_else(|| json!(Time(now))),
            })
        })
        .collect()
}

/// A status with every `lastTransitionTime` taken out, for comparing.
pub fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// The addresses to publish on Gateways, from the Ingress address the plan computes.
pub fn addresses(
    load_balancer: Option<&k8s_openapi::api::networking::v1::IngressLoadBalancerStatus>,
) -> Vec<(String, String)> {
    load_balancer
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) => Some(("IPAddress".to_owned(), ip.clone())),
            (None, Some(h)) => Some(("Hostname".to_owned(), h.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "listener_set_tests.rs"]
mod listener_set_tests;
