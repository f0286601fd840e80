//! ListenerSets: listeners a Gateway takes from objects of their own, as its
//! `spec.allowedListeners` admits them (none unless it says so). The decisions are
//! made here: which sets a Gateway admits, the order listeners are merged in (the
//! Gateway's own first, then sets oldest first, each in its own order), which of them
//! lose a port or hostname to a listener before them, and what a set's status says.
//! Compiling each listener (protocol, certificate, routes) is the Gateway's.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use gateway_api::gateways::{
    GatewayAllowedListeners, GatewayAllowedListenersNamespacesFrom, GatewayListeners,
};
use gateway_api::listenersets::ListenerSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::gateway::{Cond, ListenerState};
use super::{age_key, meta_ref, normalize_host};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::GATEWAY_GROUP;

/// What a ListenerSet's status says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListenerSetState {
    pub generation: Option<i64>,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerState>,
}

/// One ListenerSet naming a Gateway as its parent, its listeners read as a Gateway's
/// (the two kinds share one listener schema).
pub struct SetListeners<'a> {
    pub set: &'a ListenerSet,
    pub obj: ObjectRef,
    pub specs: Vec<GatewayListeners>,
}

/// The ListenerSets naming each Gateway as their parent, oldest first, then by
/// namespace and name: the order in which their listeners are merged.
pub fn by_parent(sets: &[Arc<ListenerSet>]) -> HashMap<ObjectRef, Vec<SetListeners<'_>>> {
    let mut sorted: Vec<&ListenerSet> = sets.iter().map(Arc::as_ref).collect();
    sorted.sort_by_key(|s| age_key(&s.metadata));
    let mut out: HashMap<ObjectRef, Vec<SetListeners<'_>>> = HashMap::new();
    for set in sorted {
        let obj = meta_ref("ListenerSet", &set.metadata);
        let Some(parent) = parent_of(set, &obj.namespace) else {
            continue;
        };
        let specs = set
            .spec
            .listeners
            .iter()
            .filter_map(|l| serde_json::to_value(l).ok())
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        out.entry(parent)
            .or_default()
            .push(SetListeners { set, obj, specs });
    }
    out
}

/// The Gateway a set names as its parent; `None` for a parent of another kind.
fn parent_of(set: &ListenerSet, set_ns: &str) -> Option<ObjectRef> {
    let parent = &set.spec.parent_ref;
    let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    if group != GATEWAY_GROUP || kind != "Gateway" {
        return None;
    }
    let ns = parent.namespace.as_deref().unwrap_or(set_ns);
    Some(ObjectRef::new("Gateway", ns, &parent.name))
}

/// Whether a Gateway of `gateway_ns` admits a ListenerSet of `set_ns` (whose
/// namespace has `labels`): `allowedListeners.namespaces.from` None (the default),
/// Same, Selector or All.
pub fn admits(
    allowed: Option<&GatewayAllowedListeners>,
    gateway_ns: &str,
    set_ns: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_ref()) {
        None | Some(GatewayAllowedListenersNamespacesFrom::None) => false,
        Some(GatewayAllowedListenersNamespacesFrom::Same) => gateway_ns == set_ns,
        Some(GatewayAllowedListenersNamespacesFrom::All) => true,
        Some(GatewayAllowedListenersNamespacesFrom::Selector) => {
            // A Selector without a selector selects nothing, as an empty `from` would.
            let Some(selector) = namespaces.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let empty = BTreeMap::new();
            let have = labels.unwrap_or(&empty);
            let labels_ok =
                (selector.match_labels.iter().flatten()).all(|(k, v)| have.get(k) == Some(v));
            let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
                super::gateway::requirement_holds(
                    &LabelSelectorRequirement {
                        key: e.key.clone(),
                        operator: e.operator.clone(),
                        values: e.values.clone(),
                    },
                    have,
                )
            });
            labels_ok && expressions_ok
        }
    }
}

/// Why a listener loses to one merged before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Its port is taken with another protocol.
    Protocol,
    /// Its port and protocol are taken with the same hostname.
    Hostname,
}

impl Conflict {
    pub fn reason(self) -> &'static str {
        match self {
            Conflict::Protocol => "ProtocolConflict",
            Conflict::Hostname => "HostnameConflict",
        }
    }
}

/// What conflicts are judged on: a listener's port, protocol and hostname (lower
/// case), and what to call it in a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub port: i32,
    pub protocol: String,
    pub hostname: Option<String>,
    pub what: String,
}

impl Slot {
    pub fn of(spec: &GatewayListeners, owner: &ObjectRef) -> Self {
        Self {
            port: spec.port,
            protocol: spec.protocol.clone(),
            hostname: spec.hostname.as_deref().map(normalize_host),
            what: format!("listener {} of {owner}", spec.name),
        }
    }
}

/// The listeners merged into a Gateway so far. The Gateway's own come first and
/// always keep their place; a ListenerSet's listener takes one only when nothing
/// before it holds its port with another protocol, or its port and hostname.
pub struct Merge {
    taken: Vec<Slot>,
}

impl Merge {
    pub fn new(gateway: Vec<Slot>) -> Self {
        Self { taken: gateway }
    }

    /// Takes `slot`, or tells why it cannot, and which listener holds it.
    pub fn take(&mut self, slot: Slot) -> Result<(), (Conflict, String)> {
        let same_port = || self.taken.iter().filter(|t| t.port == slot.port);
        if let Some(t) = same_port().find(|t| t.protocol != slot.protocol) {
            return Err((Conflict::Protocol, t.what.clone()));
        }
        if let Some(t) = same_port().find(|t| t.hostname == slot.hostname) {
            return Err((Conflict::Hostname, t.what.clone()));
        }
        self.taken.push(slot);
        Ok(())
    }
}

/// A listener that lost its place: neither accepted nor programmed, conflicted, for
/// the same reason.
pub fn conflicted(conditions: &mut Vec<Cond>, conflict: Conflict, with: &str) {
    let reason = conflict.reason();
    let message = match conflict {
        Conflict::Protocol => format!("{with} holds this port with another protocol"),
        Conflict::Hostname => format!("{with} holds this port and hostname"),
    };
    conditions.retain(|c| !matches!(c.kind, "Accepted" | "Programmed" | "Conflicted"));
    conditions.insert(0, cond("Accepted", false, reason, message.clone()));
    conditions.push(cond("Conflicted", true, reason, message.clone()));
    conditions.push(cond("Programmed", false, reason, message));
}

/// A listener that holds its place: not conflicted.
pub fn not_conflicted(conditions: &mut [Cond]) {
    for c in conditions.iter_mut().filter(|c| c.kind == "Conflicted") {
        *c = cond("Conflicted", false, "NoConflicts", String::new());
    }
}

/// The warning for a set its Gateway does not admit: it serves nothing.
pub fn not_allowed(set: &ObjectRef, gateway: &ObjectRef) -> Diagnostic {
    Diagnostic::warning(
        set,
        "spec.parentRef",
        "ListenerSetNotAllowed",
        format!(
            "{gateway} does not admit ListenerSets of namespace {}: its listeners are not served",
            set.namespace
        ),
        format!(
            "set spec.allowedListeners.namespaces on {gateway} (from: Same, Selector or All) to admit namespace {}",
            set.namespace
        ),
    )
}

/// The warning for listener `i` of a set, which lost its place to `with`.
pub fn lost(
    set: &ObjectRef,
    i: usize,
    spec: &GatewayListeners,
    conflict: Conflict,
    with: &str,
) -> Diagnostic {
    let (what, fix) = match conflict {
        Conflict::Protocol => ("port with another protocol", "use another port"),
        Conflict::Hostname => ("port and hostname", "use another hostname or port"),
    };
    Diagnostic::warning(
        set,
        &format!("spec.listeners[{i}]"),
        conflict.reason(),
        format!(
            "listener {} is not served: {with}, merged before it, holds its {what}",
            spec.name
        ),
        format!("{fix}; the Gateway's own listeners come first, then older ListenerSets"),
    )
}

/// Where a ListenerSet stands with its parent Gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The Gateway's `allowedListeners` does not admit it.
    NotAllowed,
    /// The Gateway itself is not accepted.
    ParentNotAccepted,
    /// Admitted: of its listeners, `valid` are accepted with their references
    /// resolved, and `programmed` are served.
    Admitted {
        total: usize,
        valid: usize,
        programmed: usize,
    },
}

impl Standing {
    /// Whether the set counts as attached to its Gateway (`attachedListenerSets`):
    /// admitted with at least one valid listener.
    pub fn attached(self) -> bool {
        matches!(self, Standing::Admitted { valid, .. } if valid > 0)
    }

    /// The set's Accepted and Programmed conditions.
    pub fn conditions(self) -> Vec<Cond> {
        let refused = |reason: &str, message: &str| {
            vec![
                cond("Accepted", false, reason, message.into()),
                cond("Programmed", false, reason, message.into()),
            ]
        };
        match self {
            Standing::NotAllowed => refused(
                "NotAllowed",
                "the parent Gateway's spec.allowedListeners does not admit ListenerSets of this namespace",
            ),
            Standing::ParentNotAccepted => {
                refused("ParentNotAccepted", "the parent Gateway is not accepted")
            }
            Standing::Admitted { valid: 0, .. } => refused(
                "ListenersNotValid",
                "no listener is valid; their status says why",
            ),
            Standing::Admitted {
                total,
                valid,
                programmed,
            } => {
                let accepted = if valid == total {
                    cond("Accepted", true, "Accepted", String::new())
                } else {
                    let message = format!(
                        "{} of {total} listeners are not valid; their status says why",
                        total - valid
                    );
                    cond("Accepted", true, "ListenersNotValid", message)
                };
                let programmed = if programmed > 0 {
                    cond("Programmed", true, "Programmed", String::new())
                } else {
                    cond(
                        "Programmed",
                        false,
                        "Invalid",
                        "no listener is programmed".into(),
                    )
                };
                vec![accepted, programmed]
            }
        }
    }
}

/// Listeners of ListenerSets whose socket could not be bound are neither accepted
/// nor programmed (as a Gateway's own are), and a set left with none programmed says so.
pub fn mark_unbound(
    sets: &mut BTreeMap<ObjectRef, ListenerSetState>,
    unbound: &BTreeMap<SocketAddr, String>,
) {
    for set in sets.values_mut() {
        let mut changed = false;
        for listener in &mut set.listeners {
            let Some(why) = listener.socket.and_then(|s| unbound.get(&s)) else {
                continue;
            };
            changed = true;
            for c in &mut listener.conditions {
                match c.kind {
                    "Accepted" => *c = cond("Accepted", false, "PortUnavailable", why.clone()),
                    "Programmed" => *c = cond("Programmed", false, "Invalid", why.clone()),
                    _ => {}
                }
            }
        }
        let programmed = (set.listeners.iter())
            .any(|l| l.conditions.iter().any(|c| c.kind == "Programmed" && c.ok));
        if changed && !programmed {
            for c in set.conditions.iter_mut().filter(|c| c.kind == "Programmed") {
                *c = cond(
                    "Programmed",
                    false,
                    "Invalid",
                    "no listener is programmed".into(),
                );
            }
        }
    }
}

fn cond(kind: &'static str, ok: bool, reason: &str, message: String) -> Cond {
    Cond {
        kind,
        ok,
        reason: reason.into(),
        message,
    }
}

#[cfg(test)]
#[path = "listener_set_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "listener_set_gateway_tests.rs"]
mod gateway_tests;
