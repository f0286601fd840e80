//! The listeners a Gateway takes from the ListenerSets it admits: each compiled as one
//! of the Gateway's own would be, then judged against every listener merged before it
//! (`compile/listener_set.rs` decides admission, order and conflicts).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use gateway_api::gateways::Gateway;

use super::{
    Cond, GatewayContext, GatewayState, Listener, ListenerState, compile_listener, listener_usable,
};
use crate::compile::listener_set::{self, ListenerSetState, Merge, SetListeners, Slot, Standing};
use crate::compile::snapshot::CertTable;
use crate::diagnostics::{Diagnostic, ObjectRef};

/// The listeners of the ListenerSets naming `gateway` as their parent, merged after
/// its own, by set: a set the Gateway does not admit, or cannot take while it is not
/// accepted itself, adds none. Each set's state goes into `states`, how many are
/// attached into the Gateway's.
#[allow(clippy::too_many_arguments)]
pub(super) fn compile_listener_sets<'a>(
    gateway: &Gateway,
    obj: &ObjectRef,
    gw_state: &mut GatewayState,
    own: &[Listener<'_>],
    sets: &'a [SetListeners<'a>],
    context: &GatewayContext<'_, '_>,
    certs: &mut CertTable,
    states: &mut BTreeMap<ObjectRef, ListenerSetState>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(ObjectRef, Vec<Listener<'a>>)> {
    let allowed = gateway.spec.allowed_listeners.as_ref();
    let accepted = (gw_state.conditions.iter()).any(|c| c.kind == "Accepted" && c.ok);
    let mut merge = Merge::new(own.iter().map(|l| Slot::of(l.spec, obj)).collect());
    let mut attached = 0;
    let mut out = Vec::new();
    for set in sets {
        let labels = context.labels.get(set.obj.namespace.as_str()).copied();
        let (standing, listeners, listener_states) =
            if !listener_set::admits(allowed, &obj.namespace, &set.obj.namespace, labels) {
                diags.push(listener_set::not_allowed(&set.obj, obj));
                (Standing::NotAllowed, Vec::new(), Vec::new())
            } else if !accepted {
                (Standing::ParentNotAccepted, Vec::new(), Vec::new())
            } else {
                compile_set(obj, gw_state, set, &mut merge, context, certs, diags)
            };
        attached += i32::from(standing.attached());
        let set_state = ListenerSetState {
            generation: set.set.metadata.generation,
            conditions: standing.conditions(),
            listeners: listener_states,
        };
        states.insert(set.obj.clone(), set_state);
        out.push((set.obj.clone(), listeners));
    }
    gw_state.attached_listener_sets = allowed.is_some().then_some(attached);
    out
}

/// The listeners of one admitted ListenerSet, each compiled as a Gateway's would be
/// and judged against every listener merged before it: one that loses its port or
/// hostname is not accepted, and gives no certificate.
fn compile_set<'a>(
    gateway: &ObjectRef,
    gw_state: &GatewayState,
    set: &'a SetListeners<'a>,
    merge: &mut Merge,
    context: &GatewayContext<'_, '_>,
    certs: &mut CertTable,
    diags: &mut Vec<Diagnostic>,
) -> (Standing, Vec<Listener<'a>>, Vec<ListenerState>) {
    let (mut listeners, mut states) = (Vec::new(), Vec::new());
    let (mut valid, mut programmed) = (0, 0);
    for (i, spec) in set.specs.iter().enumerate() {
        let conflict = merge.take(Slot::of(spec, &set.obj)).err();
        let mut unused = CertTable::default();
        let table = if conflict.is_some() {
            &mut unused
        } else {
            &mut *certs
        };
        let (mut state, mut listener) = compile_listener(
            &set.obj,
            &set.specs,
            i,
            context.index,
            context.grants,
            table,
            context.own_addresses,
            diags,
        );
        listener.gateway = gateway.clone();
        // Conflicts were judged within the set alone: the merge's verdict replaces them.
        listener.usable = match &conflict {
            Some((why, with)) => {
                listener_set::conflicted(&mut state.conditions, *why, with);
                diags.push(listener_set::lost(&set.obj, i, spec, *why, with));
                false
            }
            None => {
                listener_set::not_conflicted(&mut state.conditions);
                state.conditions.retain(|c| c.kind != "Programmed");
                let usable = listener_usable(&state.conditions, &state.supported_kinds);
                state.conditions.push(listener_programmed(usable));
                usable
            }
        };
        valid += usize::from(listener.usable);
        place_on_gateway(gw_state, &mut state, &mut listener);
        programmed += usize::from(listener.usable);
        listeners.push(listener);
        states.push(state);
    }
    let total = set.specs.len();
    let standing = Standing::Admitted {
        total,
        valid,
        programmed,
    };
    (standing, listeners, states)
}

fn listener_programmed(usable: bool) -> Cond {
    if usable {
        Cond::yes("Programmed", "Programmed", "")
    } else {
        Cond::no(
            "Programmed",
            "Invalid",
            "the listener is not accepted or its references do not resolve".into(),
        )
    }
}

/// A ListenerSet's listener is served where its Gateway's are: at the Gateway's own
/// address when Gateways have their own, and nowhere while it has none.
fn place_on_gateway(gw_state: &GatewayState, state: &mut ListenerState, listener: &mut Listener) {
    if !gw_state.own_address {
        return;
    }
    let Some(ip) = gw_state.address else {
        listener.usable = false;
        if let Some(p) = state.conditions.iter_mut().find(|c| c.kind == "Programmed") {
            *p = Cond::no("Programmed", "Pending", "the Gateway has no address".into());
        }
        return;
    };
    let socket = SocketAddr::new(ip, listener.spec.port as u16);
    listener.socket = Some(socket);
    state.socket = Some(socket);
}
