//! What the cluster should be told, worked out without touching it: from the
//! published snapshot and diagnostics, provider health, login failures and the status
//! each object has now, the server-side-apply bodies and Events to send. Conditions
//! are compared without timestamps, and a status this replica wrote a moment ago
//! counts as current even when the watch has not delivered it yet, so nothing is
//! written twice and nobody's reconcile loop wakes for nothing. One module per kind:
//! `auth_rule`, `ingress` (addresses and route Events) and `gateway`.

mod auth_rule;
mod gateway;
mod ingress;

pub use auth_rule::{ABANDONED_WINDOW, Observed, auth_rule_status, same_status};

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::IngressLoadBalancerStatus;

use crate::compile::Snapshot;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::AuthRuleStatus;
use crate::store::Objects;

/// Everything a plan is made from.
pub struct Inputs<'a> {
    pub objects: &'a Objects,
    pub snapshot: &'a Snapshot,
    /// How the Gateway API objects stand, from the same compile.
    pub gateway: &'a crate::compile::GatewayApiState,
    pub diagnostics: &'a [Diagnostic],
    /// Per AuthRule: its provider's last check (absent before the first).
    pub idp: &'a BTreeMap<ObjectRef, Result<(), String>>,
    /// Per AuthRule: whether the provider accepts its client credentials (absent
    /// while unknown).
    pub credentials: &'a BTreeMap<ObjectRef, Result<(), String>>,
    /// Per AuthRule (`namespace/name`): recent failed logins by reason.
    pub failures: &'a BTreeMap<String, BTreeMap<String, i32>>,
    /// Per AuthRule (`namespace/name`): logins counted abandoned in the last
    /// `ABANDONED_WINDOW`.
    pub abandoned: &'a BTreeMap<String, i32>,
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

/// One thing to tell the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    AuthRuleStatus {
        object: ObjectRef,
        uid: String,
        status: AuthRuleStatus,
    },
    /// An AuthRule that does not parse: `Accepted` and `Ready` False with the error.
    UnreadableStatus {
        object: ObjectRef,
        /// The generation and error reported, so the same pair is written once.
        reported: String,
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
    let mut writes = auth_rule::plan(input);
    let published = ingress::address(input);
    writes.extend(gateway::plan(
        input,
        &gateway::addresses(published.as_ref()),
    ));
    if let Some(address) = published {
        writes.extend(ingress::addresses(input, &address));
    }
    writes.extend(ingress::route_events(input));
    writes
}

#[cfg(test)]
mod tests;
