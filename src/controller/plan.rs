//! What the cluster should be told, worked out without touching it: from the
//! published snapshot and diagnostics, provider health, login failures and the status
//! each object has now, the server-side-apply bodies and Events to send. Conditions
//! are compared without timestamps, and a status this replica wrote a moment ago
//! counts as current even when the watch has not delivered it yet, so nothing is
//! written twice and nobody's reconcile loop wakes for nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{IngressLoadBalancerIngress, IngressLoadBalancerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::json;

use crate::compile::{AuthRuleSummary, Snapshot};
use crate::diagnostics::{Category, Diagnostic, ObjectRef};
use crate::model::{
    AuthRule, AuthRuleStatus, GATEWAY_CONTROLLER_NAME, GROUP, ParentReference, PolicyAncestorStatus,
};
use crate::store::Objects;

/// Everything a plan is made from.
pub struct Inputs<'a> {
    pub objects: &'a Objects,
    pub snapshot: &'a Snapshot,
    pub diagnostics: &'a [Diagnostic],
    /// Per AuthRule: its provider's last check (absent before the first).
    pub idp: &'a BTreeMap<ObjectRef, Result<(), String>>,
    /// Per AuthRule: whether the provider accepts its client credentials (absent
    /// while unknown).
    pub credentials: &'a BTreeMap<ObjectRef, Result<(), String>>,
    /// Per AuthRule (`namespace/name`): recent failed logins by reason.
    pub failures: &'a BTreeMap<String, BTreeMap<String, i32>>,
    /// Status this replica wrote recently, by AuthRule uid.
    pub own_writes: &'a HashMap<String, AuthRuleStatus>,
    /// Status written recently for AuthRules that do not parse, by object.
    pub own_unreadable: &'a HashMap<ObjectRef, String>,
    /// Gateway API status written recently, by object.
    pub own_gateway: &'a HashMap<ObjectRef, serde_json::Value>,
    /// Route Events this replica sent lately: (object, reason, message).
    pub own_events: &'a HashSet<RouteEvent>,
    /// Where served Ingresses are reached: the controller's Service
    /// (`namespace/name`), or a fixed address.
    pub publish_service: Option<&'a str>,
    pub publish_address: Option<&'a str>,
    pub now: Timestamp,
}

/// An Event about an Ingress or HTTPRoute: the object, the reason and the message.
pub type RouteEvent = (ObjectRef, &'static str, String);

/// Route diagnostics announced as Warning Events on the route itself (Ingresses have
/// no conditions to carry them).
const ROUTE_EVENT_REASONS: &[&str] = &["AuthRulePending"];

/// One thing to tell the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    AuthRuleStatus {
        object: ObjectRef,
        uid: String,
        status: AuthRuleStatus,
    },
    /// An AuthRule that does not parse: only `Accepted: False` with the error.
    UnreadableStatus {
        object: ObjectRef,
        error: String,
        body: serde_json::Value,
    },
    IngressAddress {
        object: ObjectRef,
        load_balancer: IngressLoadBalancerStatus,
    },
    /// The whole status of a GatewayClass, Gateway or HTTPRoute (our parents only,
    /// others' kept as they are).
    GatewayApiStatus {
        object: ObjectRef,
        kind: &'static str,
        status: serde_json::Value,
    },
    Event {
        regarding: ObjectReference,
        warning: bool,
        reason: String,
        note: String,
        action: &'static str,
        /// For a route Event: what the applier remembers once it is sent.
        once: Option<RouteEvent>,
    },
}

pub fn plan(input: &Inputs<'_>) -> Vec<Write> {
    let mut by_object: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
    for d in input.diagnostics {
        by_object.entry(&d.object).or_default().push(d);
    }
    let mut writes = Vec::new();
    for rule in &input.objects.auth_rules {
        let object = ObjectRef::new(
            "AuthRule",
            rule.metadata.namespace.as_deref().unwrap_or_default(),
            rule.metadata.name.as_deref().unwrap_or_default(),
        );
        let uid = rule.metadata.uid.clone().unwrap_or_default();
        let diags = by_object.get(&object).map(Vec::as_slice).unwrap_or(&[]);
        let label = format!("{}/{}", object.namespace, object.name);
        let observed = Observed {
            idp: input.idp.get(&object).cloned(),
            credentials: input.credentials.get(&object).cloned(),
            failures: input.failures.get(&label).cloned().unwrap_or_default(),
        };
        let recent = input.own_writes.get(&uid);
        let current = recent.or(rule.status.as_ref());
        let mut status = auth_rule_status(
            rule.metadata.generation,
            input.snapshot.auth_rules.get(&object),
            diags,
            current,
            &observed,
            input.now,
        );
        status.ancestors = ancestors(
            input.snapshot.gateway_api.policy_ancestors.get(&object),
            &status,
            current,
        );
        if rule
            .status
            .as_ref()
            .is_some_and(|s| same_status(s, &status))
            || recent.is_some_and(|s| same_status(s, &status))
        {
            continue;
        }
        writes.extend(events(rule, current, &status));
        writes.push(Write::AuthRuleStatus {
            object,
            uid,
            status,
        });
    }
    for unreadable in &input.objects.unreadable_auth_rules {
        if input.own_unreadable.get(&unreadable.object) == Some(&unreadable.error) {
            continue;
        }
        let body = json!({"conditions": [{
            "type": "Accepted", "status": "False", "reason": "InvalidAuthRule",
            "message": format!("{} (fix: compare it with `kubectl explain authrule.spec`)", unreadable.error),
            "lastTransitionTime": Time(input.now),
        }]});
        writes.push(Write::UnreadableStatus {
            object: unreadable.object.clone(),
            error: unreadable.error.clone(),
            body,
        });
    }
    let published = address(input);
    writes.extend(super::gateway_status::plan(
        input,
        &super::gateway_status::addresses(published.as_ref()),
    ));
    if let Some(address) = published {
        writes.extend(ingress_addresses(input, &address));
    }
    writes.extend(route_events(input));
    writes
}

/// A Warning Event on each route object for each of its closing problems, once (the
/// applier remembers what it sent).
fn route_events(input: &Inputs<'_>) -> Vec<Write> {
    let mut out = Vec::new();
    for d in input.diagnostics {
        if !ROUTE_EVENT_REASONS.contains(&d.reason) {
            continue;
        }
        let key: RouteEvent = (d.object.clone(), d.reason, d.message.clone());
        if input.own_events.contains(&key) {
            continue;
        }
        let Some(regarding) = route_reference(input.objects, &d.object) else {
            continue;
        };
        out.push(Write::Event {
            regarding,
            warning: true,
            reason: d.reason.into(),
            note: format!("{} (fix: {})", d.message, d.fix)
                .chars()
                .take(1000)
                .collect(),
            action: "Compile",
            once: Some(key),
        });
    }
    out
}

fn route_reference(objects: &Objects, object: &ObjectRef) -> Option<ObjectReference> {
    let same = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.as_deref() == Some(&object.namespace) && m.name.as_deref() == Some(&object.name)
    };
    let (api_version, meta) = match object.kind.as_str() {
        "Ingress" => (
            "networking.k8s.io/v1",
            &objects
                .ingresses
                .iter()
                .find(|i| same(&i.metadata))?
                .metadata,
        ),
        "HTTPRoute" => (
            "gateway.networking.k8s.io/v1",
            &objects
                .http_routes
                .iter()
                .find(|r| same(&r.metadata))?
                .metadata,
        ),
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(object.kind.clone()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    })
}

/// One PolicyAncestorStatus per Gateway the rule's Gateway API targets reach; its
/// Accepted condition follows the rule's own.
fn ancestors(
    gateways: Option<&Vec<ParentReference>>,
    status: &AuthRuleStatus,
    previous: Option<&AuthRuleStatus>,
) -> Vec<PolicyAncestorStatus> {
    let Some(accepted) = status.conditions.iter().find(|c| c.type_ == "Accepted") else {
        return Vec::new();
    };
    gateways
        .into_iter()
        .flatten()
        .map(|gateway| {
            let mut condition = accepted.clone();
            let kept = previous
                .and_then(|p| p.ancestors.iter().find(|a| a.ancestor_ref == *gateway))
                .and_then(|a| a.conditions.iter().find(|c| c.type_ == "Accepted"))
                .filter(|c| c.status == condition.status && c.reason == condition.reason)
                .map(|c| c.last_transition_time.clone());
            if let Some(time) = kept {
                condition.last_transition_time = time;
            }
            PolicyAncestorStatus {
                ancestor_ref: gateway.clone(),
                controller_name: GATEWAY_CONTROLLER_NAME.into(),
                conditions: vec![condition],
            }
        })
        .collect()
}

/// What the controller knows beyond the compile.
#[derive(Default)]
pub struct Observed {
    pub idp: Option<Result<(), String>>,
    pub credentials: Option<Result<(), String>>,
    pub failures: BTreeMap<String, i32>,
}

/// The conditions of one AuthRule. `previous` supplies the transition times of
/// conditions that did not change.
pub fn auth_rule_status(
    generation: Option<i64>,
    summary: Option<&AuthRuleSummary>,
    diagnostics: &[&Diagnostic],
    previous: Option<&AuthRuleStatus>,
    observed: &Observed,
    now: Timestamp,
) -> AuthRuleStatus {
    let errors: Vec<&&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    let of = |category| errors.iter().find(|d| d.category == category);
    let explain = |d: &Diagnostic| format!("{}: {} (fix: {})", d.field, d.message, d.fix);
    let accepted = match of(Category::Spec) {
        Some(d) => ("False", d.reason.to_owned(), explain(d)),
        None => ("True", "Accepted".into(), "the spec is valid".into()),
    };
    let resolved = match of(Category::Reference) {
        Some(d) => ("False", d.reason.to_owned(), explain(d)),
        None => (
            "True",
            "ResolvedRefs".into(),
            "the client Secret and every target Ingress were found".into(),
        ),
    };
    let attached = summary.map_or(0, |s| s.attached_routes);
    let ready = match summary {
        Some(s) if s.usable && attached > 0 => (
            "True",
            "Ready".into(),
            format!("guarding {attached} route(s)"),
        ),
        Some(s) if s.usable => (
            "False",
            "NoRoutes".into(),
            "no served Ingress route matches the targets and paths".into(),
        ),
        _ => (
            "False",
            "Invalid".into(),
            "the routes it targets answer 500 AuthRuleInvalid until the problems above are fixed"
                .into(),
        ),
    };
    let condition = |kind: &str, (status, reason, message): (&str, String, String)| {
        let kept = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
            .filter(|c| c.status == status && c.reason == reason)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason,
            message,
            observed_generation: generation,
            last_transition_time: kept.unwrap_or(Time(now)),
        }
    };
    let mut conditions = vec![
        condition("Accepted", accepted),
        condition("ResolvedRefs", resolved),
        condition("Ready", ready),
    ];
    if let Some(idp) = &observed.idp {
        conditions.push(condition(
            "IdPReachable",
            match idp {
                Ok(()) => (
                    "True",
                    "DiscoveryLoaded".into(),
                    "the discovery document and keys load".into(),
                ),
                Err(e) => (
                    "False",
                    "IdPUnreachable".into(),
                    format!("{e} (logins in progress keep the last good discovery; fix: run `portcullis diagnose` on this rule)"),
                ),
            },
        ));
    }
    if let Some(credentials) = &observed.credentials {
        conditions.push(condition(
            "CredentialsAccepted",
            match credentials {
                Ok(()) => (
                    "True",
                    "ClientAccepted".into(),
                    "the token endpoint accepts the client id and secret".into(),
                ),
                Err(e) => (
                    "False",
                    "InvalidClient".into(),
                    format!("{e} (fix: put the client secret registered at the provider into the Secret named by spec.oidc.clientSecretRef, or correct spec.oidc.clientId or tokenEndpointAuthMethod; logins fail with AuthTokenEpRequestFailed until then)"),
                ),
            },
        ));
    }
    AuthRuleStatus {
        conditions,
        observed_generation: generation,
        attached_routes: attached as i32,
        recent_login_failures: observed.failures.clone(),
        ancestors: Vec::new(),
    }
}

/// Equal but for the conditions' transition times.
pub fn same_status(a: &AuthRuleStatus, b: &AuthRuleStatus) -> bool {
    let bare = |s: &AuthRuleStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    bare(a) == bare(b)
}

/// A Warning Event for each condition that turned False, with the fix in the note, and
/// one per login-failure reason whose count grew (not one per request).
fn events(rule: &AuthRule, before: Option<&AuthRuleStatus>, status: &AuthRuleStatus) -> Vec<Write> {
    let was_false = |kind: &str| {
        before.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == kind && c.status == "False")
        })
    };
    let mut out = Vec::new();
    for c in &status.conditions {
        if c.status != "False" || c.type_ == "Ready" || was_false(&c.type_) {
            continue;
        }
        out.push(Write::Event {
            regarding: reference(rule),
            warning: true,
            reason: c.reason.clone(),
            note: c.message.chars().take(1000).collect(),
            action: "Compile",
            once: None,
        });
    }
    let counted = before.map(|s| &s.recent_login_failures);
    for (reason, count) in &status.recent_login_failures {
        if counted
            .and_then(|b| b.get(reason))
            .is_some_and(|n| n >= count)
        {
            continue;
        }
        let advice = crate::observe::reasons::lookup(reason).map_or(String::new(), |r| {
            format!(" Usually: {} Fix: {}", r.cause, r.fix)
        });
        out.push(Write::Event {
            regarding: reference(rule),
            warning: true,
            reason: "LoginFailed".into(),
            note: format!("{count} recent login(s) failed with {reason}.{advice}")
                .chars()
                .take(1000)
                .collect(),
            action: "Login",
            once: None,
        });
    }
    out
}

fn reference(rule: &AuthRule) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{GROUP}/v1alpha1")),
        kind: Some("AuthRule".into()),
        name: rule.metadata.name.clone(),
        namespace: rule.metadata.namespace.clone(),
        uid: rule.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The address served Ingresses get: the fixed one, else the controller Service's
/// load-balancer addresses (or external IPs), from the watched Services.
fn address(input: &Inputs<'_>) -> Option<IngressLoadBalancerStatus> {
    let entry = |value: &str| {
        if value.parse::<std::net::IpAddr>().is_ok() {
            IngressLoadBalancerIngress {
                ip: Some(value.into()),
                ..Default::default()
            }
        } else {
            IngressLoadBalancerIngress {
                hostname: Some(value.into()),
                ..Default::default()
            }
        }
    };
    if let Some(fixed) = input.publish_address {
        return Some(IngressLoadBalancerStatus {
            ingress: Some(vec![entry(fixed)]),
        });
    }
    let (namespace, name) = input.publish_service?.split_once('/')?;
    let service: &Service = input.objects.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(name)
    })?;
    let from_lb: Vec<IngressLoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().or(i.hostname.as_deref()))
        .map(entry)
        .collect();
    let addresses = if from_lb.is_empty() {
        service
            .spec
            .as_ref()
            .and_then(|s| s.external_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|v| entry(v))
            .collect()
    } else {
        from_lb
    };
    (!addresses.is_empty()).then_some(IngressLoadBalancerStatus {
        ingress: Some(addresses),
    })
}

/// Every served Ingress whose `status.loadBalancer` is not `address` yet.
fn ingress_addresses(input: &Inputs<'_>, address: &IngressLoadBalancerStatus) -> Vec<Write> {
    let served: std::collections::BTreeSet<&ObjectRef> = input
        .snapshot
        .routes
        .all
        .iter()
        .map(|r| &r.ingress)
        .collect();
    input
        .objects
        .ingresses
        .iter()
        .filter_map(|ingress| {
            let object = ObjectRef::new(
                "Ingress",
                ingress.metadata.namespace.as_deref().unwrap_or_default(),
                ingress.metadata.name.as_deref().unwrap_or_default(),
            );
            let current = ingress
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref());
            (served.contains(&object) && current != Some(address)).then(|| Write::IngressAddress {
                object,
                load_balancer: address.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
