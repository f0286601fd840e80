//! Gateway API objects of Portcullis's GatewayClasses to routes of the same table the
//! Ingresses fill, and to what their status says. A route attaches where its parent
//! listener allows it (protocol, `allowedRoutes`, hostname); a reference to another
//! namespace needs a ReferenceGrant there. A broken rule answers 500 rather than
//! letting its requests fall through to a broader rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom, GatewayListenersTlsMode,
};
use gateway_api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs,
    HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersUrlRewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use k8s_openapi::api::networking::v1::{IngressBackend, IngressServiceBackend, ServiceBackendPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::backend_client::{gateway_backend_client, route_backend_client};
use super::backend_protocol::BackendClient;
use super::backend_tls_policy::PolicyState;
use super::backends::{Index, UpstreamCache};
use super::gateway_addresses::Assigner;
use super::listener_set::{ListenerSetState, SetListeners};
use super::snapshot::{
    Backend, CertTable, Conditions, Filters, GatewaySocket, Guard, HeaderEdits, HostOwner,
    ListenerScope, PathKind, PathModifier, PathRule, Redirect, Rewrite, ServerCert, SharedWith,
    ValueMatch,
};
use super::{CompileOptions, RouteDraft, age_key, meta_ref, normalize_host, path_rule};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{GATEWAY_CONTROLLER_NAME, GATEWAY_GROUP, ParentReference};
use crate::store::Objects;
use listener_sets::compile_listener_sets;

/// The listeners a Gateway takes from ListenerSets, compiled as its own are.
mod listener_sets;

/// One status condition as compile sees it; the controller adds times and generations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub kind: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub(super) fn yes(kind: &'static str, reason: &str, message: &str) -> Self {
        Self {
            kind,
            ok: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub(super) fn no(kind: &'static str, reason: &str, message: String) -> Self {
        Self {
            kind,
            ok: false,
            reason: reason.into(),
            message,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayApiState {
    /// GatewayClasses of Portcullis's controller name, with their generation.
    pub classes: BTreeMap<String, Option<i64>>,
    pub gateways: BTreeMap<ObjectRef, GatewayState>,
    pub routes: BTreeMap<ObjectRef, RouteState>,
    /// The ListenerSets naming a Gateway of Portcullis's as their parent.
    pub listener_sets: BTreeMap<ObjectRef, ListenerSetState>,
    /// Per AuthRule with Gateway API targets: the Gateways its guarded routes attach to.
    pub policy_ancestors: BTreeMap<ObjectRef, Vec<ParentReference>>,
    /// Gateways get addresses of their own (`--gateway-addresses`), so listeners of
    /// any port are served as such.
    pub own_addresses: bool,
    /// Per BackendTLSPolicy: its conditions per Gateway its Services are reached by.
    pub backend_tls_policies: BTreeMap<ObjectRef, PolicyState>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayState {
    pub generation: Option<i64>,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerState>,
    /// Gateways get addresses of their own (`--gateway-addresses`): its status shows
    /// `address` (none when it has none), not Portcullis's published address.
    pub own_address: bool,
    pub address: Option<IpAddr>,
    /// How many ListenerSets are attached; `None` when `spec.allowedListeners` is
    /// not set (the field is left out of the status then).
    pub attached_listener_sets: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListenerState {
    pub name: String,
    pub supported_kinds: Vec<String>,
    pub attached_routes: i32,
    pub conditions: Vec<Cond>,
    /// Where the listener is to be bound (`--gateway-addresses`): a socket that cannot
    /// be bound makes it not programmed.
    pub socket: Option<SocketAddr>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteState {
    pub generation: Option<i64>,
    pub parents: Vec<ParentStatus>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParentStatus {
    pub parent: HttpRouteParentRefs,
    pub conditions: Vec<Cond>,
}

/// What the routes of one listener need to know of it.
pub(super) struct Listener<'a> {
    pub(super) gateway: ObjectRef,
    /// Where the listener is declared: its Gateway, or a ListenerSet attached to it.
    pub(super) owner: ObjectRef,
    pub(super) spec: &'a GatewayListeners,
    pub(super) hostname: Option<String>,
    tls: bool,
    /// Protocol TLS, mode Passthrough: TLSRoutes attach, HTTPRoutes do not.
    pub(super) passthrough: bool,
    pub(super) usable: bool,
    /// The route kinds it takes (`supportedKinds`).
    kinds: Vec<String>,
    /// HTTP or HTTPS: a listener Portcullis serves, whose hostname is taken from the
    /// others of its port even while it is not programmed.
    served_protocol: bool,
    /// The Gateway's own socket for this listener (`--gateway-addresses`).
    pub(super) socket: Option<SocketAddr>,
    /// The hostnames of every listener served where this one is (see
    /// `ListenerScope::siblings`).
    siblings: Arc<Vec<Option<String>>>,
    /// The Gateway's client certificate for TLS backends.
    backend_client: Arc<BackendClient>,
    /// An HTTPS listener's certificate, once it resolved.
    cert: Option<Arc<ServerCert>>,
    /// The client certificates its port asks for (`spec.tls.frontend`).
    client_auth: Arc<super::mtls::HostAuth>,
}

impl Listener<'_> {
    /// Where the listener is served: its Gateway's socket, or the flag listener of its
    /// protocol (shared by every Gateway without an address of its own).
    fn entry(&self) -> (Option<SocketAddr>, bool) {
        (self.socket, self.tls)
    }
}

pub(super) struct GatewayOutput {
    pub drafts: Vec<RouteDraft>,
    pub state: GatewayApiState,
    /// The sockets to open for programmed listeners (`--gateway-addresses`).
    pub sockets: Vec<GatewaySocket>,
    /// The TLSRoutes of passthrough listeners, by socket.
    pub passthrough: super::tls_route::PassthroughTable,
    /// What each of those sockets serves over TLS.
    pub socket_tls: HashMap<SocketAddr, Arc<super::frontend_tls::SocketTls>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn compile(
    objects: &Objects,
    index: &Index,
    guards: &HashMap<ObjectRef, Vec<Guard>>,
    owners: &mut HashMap<String, HostOwner>,
    upstreams: &mut UpstreamCache,
    certs: &mut CertTable,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> GatewayOutput {
    let mut state = GatewayApiState {
        classes: our_classes(objects),
        own_addresses: options.gateway_addresses.is_some(),
        ..GatewayApiState::default()
    };
    let grants = Grants::new(objects);
    let labels: HashMap<&str, &BTreeMap<String, String>> = objects
        .namespaces
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref()?)))
        .collect();
    let sets = super::listener_set::by_parent(&objects.listener_sets);
    let context = GatewayContext {
        index,
        grants: &grants,
        labels: &labels,
        sets: &sets,
        own_addresses: options.gateway_addresses.is_some(),
    };
    let mut listeners = compile_gateways(objects, &mut state, &context, certs, options, diags);
    share_siblings(&mut listeners, options.gateway_addresses.is_some());
    let sockets = gateway_sockets(&listeners);
    let socket_tls = socket_tls(&listeners);
    if !options.allow_shared_hosts {
        own_listener_hosts(&listeners, &labels, owners);
    }
    let owners = &*owners;
    let grpc_routes = super::grpc_route::as_http_routes(objects, diags);
    let mut routes: Vec<(&str, &HttpRoute)> = (objects.http_routes.iter())
        .map(|r| ("HTTPRoute", r.as_ref()))
        .chain(grpc_routes.iter().map(|r| ("GRPCRoute", r)))
        .collect();
    routes.sort_by_key(|(_, r)| age_key(&r.metadata));
    let mut drafts = Vec::new();
    let mut attached: HashMap<(ObjectRef, String), i32> = HashMap::new();
    let mut route_gateways: HashMap<ObjectRef, Vec<ParentReference>> = HashMap::new();
    for (kind, route) in routes {
        let obj = meta_ref(kind, &route.metadata);
        let (mut route_state, places) = place_route(
            &obj,
            route,
            &listeners,
            &labels,
            &mut attached,
            &mut route_gateways,
        );
        if route_state.parents.is_empty() {
            continue;
        }
        let out = compile_rules(
            route, &obj, &places, guards, owners, index, &grants, upstreams, options, diags,
        );
        drafts.extend(out.drafts);
        let resolved = out.resolved;
        for parent in &mut route_state.parents {
            parent.conditions.push(resolved.clone());
        }
        state.routes.insert(obj, route_state);
    }
    let passthrough = super::tls_route::compile(
        objects,
        &listeners,
        &labels,
        index,
        &grants,
        guards,
        upstreams,
        &mut attached,
        &mut state,
        options.require_auth_rule,
        diags,
    );
    let owned = (state.gateways.iter_mut())
        .map(|(obj, gw)| (obj, &mut gw.listeners))
        .chain((state.listener_sets.iter_mut()).map(|(obj, set)| (obj, &mut set.listeners)));
    for (owner, owned_listeners) in owned {
        for listener in owned_listeners {
            listener.attached_routes = attached
                .get(&(owner.clone(), listener.name.clone()))
                .copied()
                .unwrap_or(0);
        }
    }
    state.policy_ancestors = policy_ancestors(guards, &route_gateways, &state);
    super::grpc_route::report_login_only(&drafts, diags);
    state.backend_tls_policies = index.backend_tls.status(objects, &route_gateways);
    diags.extend(index.backend_tls.diagnostics());
    GatewayOutput {
        drafts,
        state,
        sockets,
        passthrough,
        socket_tls,
    }
}

/// The TLS tables of the sockets of programmed HTTPS listeners.
fn socket_tls(
    listeners: &HashMap<ObjectRef, Vec<Listener<'_>>>,
) -> HashMap<SocketAddr, Arc<super::frontend_tls::SocketTls>> {
    let served = listeners.values().flatten().filter(|l| l.usable && l.tls);
    super::frontend_tls::socket_tables(served.filter_map(|l| {
        Some(super::frontend_tls::SocketListener {
            socket: l.socket?,
            hostname: l.hostname.clone(),
            cert: l.cert.clone()?,
            client_auth: l.client_auth.clone(),
            siblings: l.siblings.clone(),
        })
    }))
}

/// Gives each listener the hostnames of every listener served where it is, which
/// decide which of them a request's host belongs to. With `own_addresses`, a Gateway
/// without an address is served nowhere and takes part in no set.
fn share_siblings(listeners: &mut HashMap<ObjectRef, Vec<Listener<'_>>>, own_addresses: bool) {
    let mut sets: HashMap<(Option<SocketAddr>, bool), Vec<Option<String>>> = HashMap::new();
    let served = |l: &Listener| l.served_protocol && (!own_addresses || l.socket.is_some());
    for listener in listeners.values().flatten().filter(|l| served(l)) {
        let set = sets.entry(listener.entry()).or_default();
        if !set.contains(&listener.hostname) {
            set.push(listener.hostname.clone());
        }
    }
    let sets: HashMap<_, Arc<Vec<Option<String>>>> =
        sets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    for listener in listeners.values_mut().flatten() {
        if let Some(set) = sets.get(&listener.entry()).filter(|_| served(listener)) {
            listener.siblings = set.clone();
        }
    }
}

/// The sockets of the programmed listeners of Gateways with their own address.
fn gateway_sockets(listeners: &HashMap<ObjectRef, Vec<Listener<'_>>>) -> Vec<GatewaySocket> {
    let sockets: BTreeSet<GatewaySocket> = listeners
        .values()
        .flatten()
        .filter(|l| l.usable)
        .filter_map(|l| {
            Some(GatewaySocket {
                addr: l.socket?,
                tls: l.tls,
                passthrough: l.passthrough,
            })
        })
        .collect();
    sockets.into_iter().collect()
}

/// The GatewayClasses of Portcullis's controller name, with their generation.
fn our_classes(objects: &Objects) -> BTreeMap<String, Option<i64>> {
    let mut classes = BTreeMap::new();
    for class in &objects.gateway_classes {
        if class.spec.controller_name == GATEWAY_CONTROLLER_NAME
            && let Some(name) = &class.metadata.name
        {
            classes.insert(name.clone(), class.metadata.generation);
        }
    }
    classes
}

/// What compiling a Gateway's listeners reads besides the Gateway.
struct GatewayContext<'c, 'a> {
    index: &'c Index<'c>,
    grants: &'c Grants<'c>,
    labels: &'c HashMap<&'c str, &'c BTreeMap<String, String>>,
    /// The ListenerSets naming each Gateway as their parent, in merge order.
    sets: &'a HashMap<ObjectRef, Vec<SetListeners<'a>>>,
    /// Gateways get addresses of their own (`--gateway-addresses`).
    own_addresses: bool,
}

/// The Gateways of our classes, oldest first, their state recorded in `state`; the
/// listeners of each, and of each ListenerSet attached to one, by where they are
/// declared.
fn compile_gateways<'a>(
    objects: &'a Objects,
    state: &mut GatewayApiState,
    context: &GatewayContext<'_, 'a>,
    certs: &mut CertTable,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<ObjectRef, Vec<Listener<'a>>> {
    let (index, grants) = (context.index, context.grants);
    let mut gateways: Vec<&Gateway> = objects
        .gateways
        .iter()
        .map(Arc::as_ref)
        .filter(|g| state.classes.contains_key(&g.spec.gateway_class_name))
        .collect();
    gateways.sort_by_key(|g| age_key(&g.metadata));
    let mut listeners: HashMap<ObjectRef, Vec<Listener<'_>>> = HashMap::new();
    let mut assigner = options.gateway_addresses.map(Assigner::new);
    for gateway in gateways {
        let obj = meta_ref("Gateway", &gateway.metadata);
        let address = assigner.as_mut().map(|a| {
            let pool = *a.pool();
            a.assign(gateway, &format!("{}/{}", obj.namespace, obj.name))
                .map_err(|e| address_refusal(&e, &pool))
        });
        let own = options.gateway_addresses.is_some();
        let sets = context
            .sets
            .get(&obj)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let set_ports: Vec<i32> = (sets.iter().flat_map(|s| &s.specs))
            .filter(|l| l.protocol == "HTTPS")
            .map(|l| l.port)
            .collect();
        let (mut gw_state, mut gw_listeners, gw_tls) =
            compile_gateway(gateway, &obj, index, grants, certs, own, &set_ports, diags);
        match address {
            None => gw_state.conditions.push(gateway_programmed(
                gateway,
                gw_listeners.iter().any(|l| l.usable),
            )),
            Some(address) => own_address(&mut gw_state, &mut gw_listeners, address),
        }
        let refusal = super::gateway_infrastructure::parameters_refusal(&obj, gateway);
        if let Some((refusal, diagnostic)) = &refusal {
            diags.push(diagnostic.clone());
            gw_listeners.iter_mut().for_each(|l| l.usable = false);
            super::gateway_infrastructure::refuse(&mut gw_state, refusal.clone());
        }
        let mut set_listeners = compile_listener_sets(
            gateway,
            &obj,
            &mut gw_state,
            &gw_listeners,
            sets,
            context,
            certs,
            &mut state.listener_sets,
            diags,
        );
        // A set's listeners are the Gateway's: its client certificates, per port, and
        // the certificate it presents to TLS backends.
        for (set_obj, set_ls) in &mut set_listeners {
            if let Some(set_state) = state.listener_sets.get_mut(set_obj) {
                gw_tls.apply(set_ls, &mut set_state.listeners, own);
            }
        }
        if refusal.is_some() {
            // A refused Gateway serves nothing, the listeners its ListenerSets add neither.
            (set_listeners.iter_mut())
                .flat_map(|(_, ls)| ls.iter_mut())
                .for_each(|l| l.usable = false);
        }
        listeners.extend(set_listeners);
        state.gateways.insert(obj.clone(), gw_state);
        listeners.insert(obj, gw_listeners);
    }
    listeners
}

/// The route's parents and the listeners it attaches to through them; each listener's
/// count of routes and each route's Gateways are kept up to date.
fn place_route(
    obj: &ObjectRef,
    route: &HttpRoute,
    listeners: &HashMap<ObjectRef, Vec<Listener<'_>>>,
    labels: &HashMap<&str, &BTreeMap<String, String>>,
    attached: &mut HashMap<(ObjectRef, String), i32>,
    route_gateways: &mut HashMap<ObjectRef, Vec<ParentReference>>,
) -> (RouteState, Vec<Place>) {
    let mut route_state = RouteState {
        generation: route.metadata.generation,
        parents: Vec::new(),
    };
    let mut places: Vec<Place> = Vec::new();
    for parent in route.spec.parent_refs.iter().flatten() {
        let Some(outcome) = attach(
            obj,
            parent,
            route.spec.hostnames.as_deref().unwrap_or_default(),
            listeners,
            labels,
        ) else {
            continue;
        };
        route_state.parents.push(ParentStatus {
            parent: parent.clone(),
            conditions: vec![outcome.accepted.clone()],
        });
        for (listener, hosts) in outcome.places {
            *attached
                .entry((listener.owner.clone(), listener.spec.name.clone()))
                .or_default() += 1;
            let ancestor = ParentReference {
                group: GATEWAY_GROUP.into(),
                kind: "Gateway".into(),
                namespace: listener.gateway.namespace.clone(),
                name: listener.gateway.name.clone(),
                section_name: None,
            };
            let known = route_gateways.entry(obj.clone()).or_default();
            if !known.contains(&ancestor) {
                known.push(ancestor);
            }
            places.push(Place {
                gateway: listener.gateway.clone(),
                listener: listener.spec.name.clone(),
                tls: listener.tls,
                usable: listener.usable,
                hosts,
                hostname: listener.hostname.clone(),
                socket: listener.socket,
                siblings: listener.siblings.clone(),
                backend_client: listener.backend_client.clone(),
            });
        }
    }
    (route_state, places)
}

/// Every listener port is served on Portcullis's own listeners, so a hostname a
/// listener names belongs to the namespaces that listener admits: a route attached
/// through another listener (a host-less one, or one on another port) must not serve
/// it. A host an Ingress owns stays the Ingress's.
fn own_listener_hosts(
    listeners: &HashMap<ObjectRef, Vec<Listener<'_>>>,
    labels: &HashMap<&str, &BTreeMap<String, String>>,
    owners: &mut HashMap<String, HostOwner>,
) {
    let mut claimed: BTreeMap<String, HostOwner> = BTreeMap::new();
    let mut all: Vec<&Listener> = listeners.values().flatten().collect();
    all.sort_by(|a, b| (&a.owner, &a.spec.name).cmp(&(&b.owner, &b.spec.name)));
    for listener in all {
        let Some(host) = &listener.hostname else {
            continue;
        };
        let admitted = listener_admits(listener, labels);
        let entry = claimed.entry(host.clone()).or_insert_with(|| HostOwner {
            namespace: listener.owner.namespace.clone(),
            shared_with: SharedWith::Nobody,
        });
        entry.shared_with = match (std::mem::take(&mut entry.shared_with), admitted) {
            (SharedWith::Everyone, _) | (_, SharedWith::Everyone) => SharedWith::Everyone,
            (SharedWith::Nobody, other) | (other, SharedWith::Nobody) => other,
            (SharedWith::Namespaces(mut a), SharedWith::Namespaces(b)) => {
                a.extend(b);
                a.sort();
                a.dedup();
                SharedWith::Namespaces(a)
            }
        };
        if listener.owner.namespace != entry.namespace
            && let SharedWith::Namespaces(list) = &mut entry.shared_with
            && !list.contains(&listener.owner.namespace)
        {
            list.push(listener.owner.namespace.clone());
        }
    }
    for (host, owner) in claimed {
        owners.entry(host).or_insert(owner);
    }
}

/// The namespaces, besides its own Gateway's, a listener takes routes from.
fn listener_admits(
    listener: &Listener,
    labels: &HashMap<&str, &BTreeMap<String, String>>,
) -> SharedWith {
    let from = listener
        .spec
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone());
    match from {
        None | Some(GatewayListenersAllowedRoutesNamespacesFrom::Same) => SharedWith::Nobody,
        Some(GatewayListenersAllowedRoutesNamespacesFrom::All) => SharedWith::Everyone,
        Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector) => SharedWith::Namespaces(
            labels
                .keys()
                .filter(|ns| namespace_allowed(listener, ns, labels))
                .map(|ns| (*ns).to_owned())
                .collect(),
        ),
    }
}

/// Where a route attaches: one listener of one Gateway, under these hosts (`None`:
/// any). It serves there only when the listener is `usable` (accepted, references
/// resolved, no conflict); it counts as attached either way, as the specification
/// says.
struct Place {
    gateway: ObjectRef,
    listener: String,
    tls: bool,
    usable: bool,
    hosts: Vec<Option<String>>,
    /// The listener's own hostname.
    hostname: Option<String>,
    socket: Option<SocketAddr>,
    siblings: Arc<Vec<Option<String>>>,
    backend_client: Arc<BackendClient>,
}

fn policy_ancestors(
    guards: &HashMap<ObjectRef, Vec<Guard>>,
    route_gateways: &HashMap<ObjectRef, Vec<ParentReference>>,
    state: &GatewayApiState,
) -> BTreeMap<ObjectRef, Vec<ParentReference>> {
    let mut out: BTreeMap<ObjectRef, Vec<ParentReference>> = BTreeMap::new();
    for (target, target_guards) in guards {
        let ancestors: Vec<ParentReference> = match target.kind.as_str() {
            "HTTPRoute" | "GRPCRoute" => route_gateways.get(target).cloned().unwrap_or_default(),
            "Gateway" if state.gateways.contains_key(target) => vec![ParentReference {
                group: GATEWAY_GROUP.into(),
                kind: "Gateway".into(),
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                section_name: None,
            }],
            _ => continue,
        };
        for guard in target_guards {
            let list = out.entry(guard.rule.clone()).or_default();
            for a in &ancestors {
                if !list.contains(a) {
                    list.push(a.clone());
                }
            }
            list.sort();
        }
    }
    out
}

/// What a Gateway gives every listener served for it, its ListenerSets' included: the
/// client certificates each HTTPS port asks for, the certificate presented to TLS
/// backends.
struct GatewayTls {
    ports: BTreeMap<i32, super::frontend_tls::PortAuth>,
    backend_client: Arc<BackendClient>,
}

impl GatewayTls {
    /// Gives `listeners` (with their states) the Gateway's TLS settings; a listener
    /// whose port's client certificates cannot be asked for is not served.
    fn apply(&self, listeners: &mut [Listener<'_>], states: &mut [ListenerState], own: bool) {
        for (listener, listener_state) in listeners.iter_mut().zip(states) {
            listener.backend_client = self.backend_client.clone();
            let Some(port) = self.ports.get(&listener.spec.port).filter(|_| listener.tls) else {
                continue;
            };
            listener.client_auth = port.auth.clone();
            if !port.mark(&mut listener_state.conditions, own) {
                listener.usable = false;
            }
        }
    }
}

/// A Gateway's own listeners and status; `set_ports` are the HTTPS ports its
/// ListenerSets add, whose client certificates it decides too.
#[allow(clippy::too_many_arguments)]
fn compile_gateway<'a>(
    gateway: &'a Gateway,
    obj: &ObjectRef,
    index: &Index,
    grants: &Grants,
    certs: &mut CertTable,
    own_addresses: bool,
    set_ports: &[i32],
    diags: &mut Vec<Diagnostic>,
) -> (GatewayState, Vec<Listener<'a>>, GatewayTls) {
    let mut state = GatewayState {
        generation: gateway.metadata.generation,
        ..GatewayState::default()
    };
    let mut out = Vec::new();
    let specs = &gateway.spec.listeners;
    for i in 0..specs.len() {
        let (listener_state, listener) =
            compile_listener(obj, specs, i, index, grants, certs, own_addresses, diags);
        state.listeners.push(listener_state);
        out.push(listener);
    }
    let ports = frontend_validation(gateway, obj, index, grants, &out, set_ports, diags);
    if ports.values().any(|a| a.insecure_fallback) {
        state.conditions.push(Cond::yes(
            "InsecureFrontendValidationMode",
            "ConfigurationChanged",
            "spec.tls.frontend accepts clients without a valid certificate (AllowInsecureFallback)",
        ));
    }
    let granted =
        |ns: &str, name: &str| grants.allows(&obj.namespace, "Gateway", ns, "", "Secret", name);
    let (client, resolved) = gateway_backend_client(gateway, obj, index, &granted);
    state.conditions.extend(resolved);
    let tls = GatewayTls {
        ports,
        backend_client: Arc::new(client),
    };
    tls.apply(&mut out, &mut state.listeners, own_addresses);
    state.conditions.push(gateway_accepted(&state.listeners));
    (state, out, tls)
}

/// `spec.tls.frontend` for the HTTPS ports of the Gateway's listeners and of
/// `set_ports`: the client certificates each asks for, or why it cannot.
fn frontend_validation(
    gateway: &Gateway,
    obj: &ObjectRef,
    index: &Index,
    grants: &Grants,
    listeners: &[Listener<'_>],
    set_ports: &[i32],
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<i32, super::frontend_tls::PortAuth> {
    let mut ports: Vec<i32> = listeners
        .iter()
        .filter(|l| l.tls && l.served_protocol)
        .map(|l| l.spec.port)
        .chain(set_ports.iter().copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let allowed = |ns: &str, kind: &str, name: &str| {
        grants.allows(&obj.namespace, "Gateway", ns, "", kind, name)
    };
    super::frontend_tls::port_auths(gateway, obj, &ports, index, &allowed, diags)
}

/// The condition a Gateway without an address of its own gets: not accepted for a
/// kind of address Portcullis does not give, else not programmed.
fn address_refusal(why: &super::gateway_addresses::NoAddress, pool: &ipnet::IpNet) -> Cond {
    use super::gateway_addresses::NoAddress;
    let message = why.message(pool);
    match why {
        NoAddress::Unsupported(_) => Cond::no("Accepted", "UnsupportedAddress", message),
        NoAddress::Refused(_) => Cond::no("Programmed", "AddressNotUsable", message),
        NoAddress::Exhausted => Cond::no("Programmed", "AddressNotAssigned", message),
    }
}

/// A Gateway served at its own address: its listeners' sockets there, or, without
/// an address, nothing of it programmed.
fn own_address(
    state: &mut GatewayState,
    listeners: &mut [Listener<'_>],
    address: Result<IpAddr, Cond>,
) {
    state.own_address = true;
    let ip = match address {
        Ok(ip) => ip,
        Err(refusal) => {
            let message = refusal.message.clone();
            for (listener, listener_state) in listeners.iter_mut().zip(&mut state.listeners) {
                listener.usable = false;
                if let Some(p) = listener_state
                    .conditions
                    .iter_mut()
                    .find(|c| c.kind == "Programmed")
                {
                    *p = Cond::no(
                        "Programmed",
                        "Pending",
                        format!("the Gateway has no address: {message}"),
                    );
                }
            }
            if refusal.kind == "Accepted" {
                state.conditions.retain(|c| c.kind != "Accepted");
                state.conditions.insert(0, refusal);
                state
                    .conditions
                    .push(Cond::no("Programmed", "Invalid", message));
            } else {
                state.conditions.push(refusal);
            }
            return;
        }
    };
    state.address = Some(ip);
    for (listener, listener_state) in listeners.iter_mut().zip(&mut state.listeners) {
        let socket = SocketAddr::new(ip, listener.spec.port as u16);
        listener.socket = Some(socket);
        listener_state.socket = Some(socket);
    }
    state
        .conditions
        .push(if listeners.iter().any(|l| l.usable) {
            Cond::yes("Programmed", "Programmed", "")
        } else {
            Cond::no("Programmed", "Invalid", "no listener is programmed".into())
        });
}

/// Listeners whose socket could not be bound are neither accepted (`PortUnavailable`)
/// nor programmed, and their Gateway says so; the other listeners serve all the same.
pub fn mark_unbound(state: &mut GatewayApiState, unbound: &BTreeMap<SocketAddr, String>) {
    super::listener_set::mark_unbound(&mut state.listener_sets, unbound);
    for gateway in state.gateways.values_mut() {
        let mut changed = false;
        for listener in &mut gateway.listeners {
            let Some(why) = listener.socket.and_then(|s| unbound.get(&s)) else {
                continue;
            };
            changed = true;
            for c in &mut listener.conditions {
                match c.kind {
                    "Accepted" => *c = Cond::no("Accepted", "PortUnavailable", why.clone()),
                    "Programmed" => *c = Cond::no("Programmed", "Invalid", why.clone()),
                    _ => {}
                }
            }
        }
        if !changed {
            continue;
        }
        let accepted = gateway_accepted(&gateway.listeners);
        let any_programmed = gateway
            .listeners
            .iter()
            .any(|l| l.conditions.iter().any(|c| c.kind == "Programmed" && c.ok));
        for c in &mut gateway.conditions {
            match c.kind {
                "Accepted" => *c = accepted.clone(),
                "Programmed" if !any_programmed => {
                    *c = Cond::no("Programmed", "Invalid", "no listener is programmed".into());
                }
                _ => {}
            }
        }
    }
}

/// A Gateway is accepted while at least one of its listeners is; reason
/// `ListenersNotValid` when some are not, as Gateway API asks.
fn gateway_accepted(listeners: &[ListenerState]) -> Cond {
    let accepted = listeners
        .iter()
        .filter(|l| l.conditions.iter().any(|c| c.kind == "Accepted" && c.ok))
        .count();
    if accepted == listeners.len() {
        return Cond::yes("Accepted", "Accepted", "");
    }
    let message = format!(
        "{} of {} listeners are not accepted; their status says why",
        listeners.len() - accepted,
        listeners.len()
    );
    if accepted == 0 {
        Cond::no("Accepted", "ListenersNotValid", message)
    } else {
        Cond::yes("Accepted", "ListenersNotValid", &message)
    }
}

/// Listener `i` of `specs`, its status and what routes attach to; an HTTPS
/// listener's certificate goes into `certs`.
#[allow(clippy::too_many_arguments)]
fn compile_listener<'a>(
    obj: &ObjectRef,
    specs: &'a [GatewayListeners],
    i: usize,
    index: &Index,
    grants: &Grants,
    certs: &mut CertTable,
    own_addresses: bool,
    diags: &mut Vec<Diagnostic>,
) -> (ListenerState, Listener<'a>) {
    let spec = &specs[i];
    let field = format!("spec.listeners[{i}]");
    let hostname = spec.hostname.as_deref().map(normalize_host);
    let mut conditions = Vec::new();
    let tls = spec.protocol == "HTTPS";
    let served_protocol = matches!(spec.protocol.as_str(), "HTTP" | "HTTPS");
    let passthrough = spec.protocol == "TLS";
    let accepted = if passthrough {
        super::tls_route::listener_accepted(obj, spec, &field, own_addresses, diags)
    } else {
        accepted_condition(obj, spec, &field, served_protocol, diags)
    };
    let protocol_ok = accepted.ok;
    conditions.push(accepted);
    conditions.push(conflicted_condition(specs, i, hostname.as_deref()));
    let route_kinds: &[&str] = if passthrough {
        &["TLSRoute"]
    } else {
        ROUTE_KINDS
    };
    let (kinds, kinds_ok) = if protocol_ok {
        supported_kinds(spec, route_kinds)
    } else {
        (Vec::new(), true)
    };
    let mut resolved = if kinds_ok {
        Cond::yes("ResolvedRefs", "ResolvedRefs", "")
    } else {
        Cond::no(
            "ResolvedRefs",
            "InvalidRouteKinds",
            format!(
                "allowedRoutes.kinds names kinds other than {}",
                route_kinds.join(" and ")
            ),
        )
    };
    let mut served_cert = None;
    if tls && protocol_ok {
        match listener_cert(obj, spec, &field, index, grants, diags) {
            Ok(cert) => {
                add_listener_cert(certs, hostname.as_deref(), cert.clone());
                served_cert = Some(cert);
            }
            Err(cond) => resolved = cond,
        }
    }
    conditions.push(resolved);
    let usable = listener_usable(&conditions, &kinds);
    conditions.push(if usable {
        Cond::yes("Programmed", "Programmed", "")
    } else {
        Cond::no(
            "Programmed",
            "Invalid",
            "the listener is not accepted or its references do not resolve".into(),
        )
    });
    let listener_state = ListenerState {
        name: spec.name.clone(),
        supported_kinds: kinds.clone(),
        attached_routes: 0,
        conditions,
        socket: None,
    };
    let listener = Listener {
        gateway: obj.clone(),
        owner: obj.clone(),
        spec,
        hostname,
        tls,
        passthrough,
        usable,
        kinds: kinds.clone(),
        served_protocol,
        socket: None,
        siblings: Arc::default(),
        backend_client: Arc::default(),
        cert: served_cert,
        client_auth: Arc::default(),
    };
    (listener_state, listener)
}

fn accepted_condition(
    obj: &ObjectRef,
    spec: &GatewayListeners,
    field: &str,
    protocol_ok: bool,
    diags: &mut Vec<Diagnostic>,
) -> Cond {
    if protocol_ok {
        return Cond::yes("Accepted", "Accepted", "");
    }
    diags.push(Diagnostic::error(
        obj,
        &format!("{field}.protocol"),
        "UnsupportedProtocol",
        format!(
            "listener {} has protocol {}; Portcullis serves HTTP and HTTPS",
            spec.name, spec.protocol
        ),
        "use protocol HTTP or HTTPS, or serve this listener with another Gateway class".into(),
    ));
    Cond::no(
        "Accepted",
        "UnsupportedProtocol",
        format!(
            "protocol {} is not supported; use HTTP or HTTPS",
            spec.protocol
        ),
    )
}

/// Whether another listener of the Gateway takes listener `i`'s port with another
/// protocol, or with the same hostname.
fn conflicted_condition(specs: &[GatewayListeners], i: usize, hostname: Option<&str>) -> Cond {
    let spec = &specs[i];
    let conflict = specs.iter().enumerate().find(|(j, other)| {
        *j != i
            && other.port == spec.port
            && (other.protocol != spec.protocol
                || other.hostname.as_deref().map(normalize_host).as_deref() == hostname)
    });
    let mut cond = match conflict {
        None => Cond::yes("Conflicted", "NoConflicts", ""),
        Some((_, other)) if other.protocol != spec.protocol => Cond::no(
            "Conflicted",
            "ProtocolConflict",
            format!(
                "listener {} uses port {} with protocol {}",
                other.name, spec.port, other.protocol
            ),
        ),
        Some((_, other)) => Cond::no(
            "Conflicted",
            "HostnameConflict",
            format!("listener {} has the same port and hostname", other.name),
        ),
    };
    // Conflicted is the one condition where True is the problem.
    cond.ok = !cond.ok;
    cond
}

/// The listener's certificate serves its hostname, or every host when it has none;
/// the first listener to name a host keeps it.
pub(super) fn add_listener_cert(
    certs: &mut CertTable,
    hostname: Option<&str>,
    cert: Arc<ServerCert>,
) {
    match hostname {
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => {
                certs.wildcard.entry(suffix.to_owned()).or_insert(cert);
            }
            None => {
                certs.exact.entry(h.to_owned()).or_insert(cert);
            }
        },
        None => {
            certs.default.get_or_insert(cert);
        }
    }
}

/// Programmed when accepted, not conflicted and its references resolve, or the
/// only unresolved reference is a route kind beside one it does take.
fn listener_usable(conditions: &[Cond], kinds: &[String]) -> bool {
    conditions.iter().all(|c| {
        if c.kind == "Conflicted" {
            !c.ok
        } else {
            c.ok || (c.kind == "ResolvedRefs"
                && c.reason == "InvalidRouteKinds"
                && !kinds.is_empty())
        }
    })
}

fn gateway_programmed(gateway: &Gateway, any_programmed: bool) -> Cond {
    if gateway
        .spec
        .addresses
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        Cond::no(
            "Programmed",
            "AddressNotAssigned",
            "spec.addresses cannot be honoured: Portcullis serves on its own listen addresses"
                .into(),
        )
    } else if any_programmed {
        Cond::yes("Programmed", "Programmed", "")
    } else {
        Cond::no("Programmed", "Invalid", "no listener is programmed".into())
    }
}

/// The route kinds an HTTP or HTTPS listener takes unless `allowedRoutes.kinds` says
/// otherwise.
const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

/// The route kinds a listener takes: those of its protocol (`route_kinds`) that
/// `allowedRoutes.kinds` names (all when it names none); false when it names a kind
/// Portcullis cannot serve there.
fn supported_kinds(spec: &GatewayListeners, route_kinds: &[&str]) -> (Vec<String>, bool) {
    let Some(kinds) = spec.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) else {
        return (route_kinds.iter().map(|k| (*k).to_owned()).collect(), true);
    };
    let mut supported = Vec::new();
    let mut all_ok = true;
    for k in kinds {
        let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
        if group == GATEWAY_GROUP && route_kinds.contains(&k.kind.as_str()) {
            if !supported.contains(&k.kind) {
                supported.push(k.kind.clone());
            }
        } else {
            all_ok = false;
        }
    }
    (supported, all_ok)
}

fn listener_cert(
    obj: &ObjectRef,
    spec: &GatewayListeners,
    field: &str,
    index: &Index,
    grants: &Grants,
    diags: &mut Vec<Diagnostic>,
) -> Result<Arc<ServerCert>, Cond> {
    let tls = spec.tls.as_ref();
    if tls.and_then(|t| t.mode.as_ref()) == Some(&GatewayListenersTlsMode::Passthrough) {
        return Err(Cond::no(
            "ResolvedRefs",
            "InvalidCertificateRef",
            "tls.mode Passthrough is not supported on an HTTPS listener".into(),
        ));
    }
    let Some(cert_ref) = tls
        .and_then(|t| t.certificate_refs.as_ref())
        .and_then(|r| r.first())
    else {
        return Err(Cond::no(
            "ResolvedRefs",
            "InvalidCertificateRef",
            "an HTTPS listener needs tls.certificateRefs".into(),
        ));
    };
    let gw_ns = obj.namespace.as_str();
    let ns = cert_ref.namespace.as_deref().unwrap_or(gw_ns);
    let group = cert_ref.group.as_deref().unwrap_or("");
    let kind = cert_ref.kind.as_deref().unwrap_or("Secret");
    let source = format!("{ns}/{}", cert_ref.name);
    if !(group.is_empty() || group == "core") || kind != "Secret" {
        return Err(Cond::no(
            "ResolvedRefs",
            "InvalidCertificateRef",
            format!("certificateRefs name a {group}/{kind}; only Secrets are supported"),
        ));
    }
    if ns != gw_ns && !grants.allows(gw_ns, &obj.kind, ns, "", "Secret", &cert_ref.name) {
        return Err(Cond::no(
            "ResolvedRefs",
            "RefNotPermitted",
            format!(
                "Secret {source} is in another namespace and no ReferenceGrant there allows it"
            ),
        ));
    }
    let Some(secret) = index.secret(ns, &cert_ref.name) else {
        diags.push(Diagnostic::error(
            obj,
            &format!("{field}.tls.certificateRefs[0]"),
            "SecretNotFound",
            format!("TLS Secret {source} not found"),
            format!("create Secret {source} of type kubernetes.io/tls"),
        ));
        return Err(Cond::no(
            "ResolvedRefs",
            "InvalidCertificateRef",
            format!("Secret {source} not found"),
        ));
    };
    match super::tls::certified_key(secret) {
        Ok(key) => Ok(Arc::new(ServerCert { key, source })),
        Err(e) => Err(Cond::no(
            "ResolvedRefs",
            "InvalidCertificateRef",
            format!("Secret {source}: {e}"),
        )),
    }
}

pub(super) struct Attachment<'l, 'a> {
    pub(super) accepted: Cond,
    pub(super) places: Vec<(&'l Listener<'a>, Vec<Option<String>>)>,
}

/// How one parentRef of a route of `route.kind` attaches (HTTPRoutes and GRPCRoutes to
/// HTTP and HTTPS listeners, TLSRoutes to passthrough ones): `None` when the parent is
/// not a Gateway of Portcullis's, or a ListenerSet naming one (its status is another
/// controller's to write). A Gateway parent means the Gateway's own listeners, a
/// ListenerSet parent that set's.
pub(super) fn attach<'l, 'a>(
    route: &ObjectRef,
    parent: &HttpRouteParentRefs,
    hostnames: &[String],
    gateways: &'l HashMap<ObjectRef, Vec<Listener<'a>>>,
    labels: &HashMap<&str, &BTreeMap<String, String>>,
) -> Option<Attachment<'l, 'a>> {
    let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    if group != GATEWAY_GROUP || !matches!(kind, "Gateway" | "ListenerSet") {
        return None;
    }
    let ns = parent.namespace.as_deref().unwrap_or(&route.namespace);
    let listeners = gateways.get(&ObjectRef::new(kind, ns, &parent.name))?;
    let named: Vec<&Listener> = listeners
        .iter()
        .filter(|l| {
            parent
                .section_name
                .as_ref()
                .is_none_or(|s| *s == l.spec.name)
        })
        .filter(|l| parent.port.is_none_or(|p| p == l.spec.port))
        .collect();
    let refuse = |reason: &str, message: String| {
        Some(Attachment {
            accepted: Cond::no("Accepted", reason, message),
            places: Vec::new(),
        })
    };
    if named.is_empty() {
        return refuse(
            "NoMatchingParent",
            format!("no listener of the {kind} has this sectionName and port"),
        );
    }
    let allowed: Vec<&Listener> = named
        .into_iter()
        .filter(|l| l.kinds.contains(&route.kind))
        .filter(|l| namespace_allowed(l, &route.namespace, labels))
        .collect();
    if allowed.is_empty() {
        return refuse(
            "NotAllowedByListeners",
            format!(
                "the {kind}'s listeners do not allow {}s of this namespace",
                route.kind
            ),
        );
    }
    let places: Vec<(&Listener, Vec<Option<String>>)> = allowed
        .into_iter()
        .filter_map(|l| {
            let hosts = intersect(l.hostname.as_deref(), hostnames)?;
            Some((l, hosts))
        })
        .collect();
    if places.is_empty() {
        return refuse(
            "NoMatchingListenerHostname",
            "no hostname of the route matches a listener's hostname".into(),
        );
    }
    Some(Attachment {
        accepted: Cond::yes("Accepted", "Accepted", ""),
        places,
    })
}

fn namespace_allowed(
    listener: &Listener,
    route_ns: &str,
    labels: &HashMap<&str, &BTreeMap<String, String>>,
) -> bool {
    let namespaces = listener
        .spec
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    let from = namespaces.and_then(|n| n.from.clone());
    match from {
        None | Some(GatewayListenersAllowedRoutesNamespacesFrom::Same) => {
            listener.owner.namespace == route_ns
        }
        Some(GatewayListenersAllowedRoutesNamespacesFrom::All) => true,
        Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector) => {
            let Some(selector) = namespaces.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let empty = BTreeMap::new();
            let have = labels.get(route_ns).copied().unwrap_or(&empty);
            let labels_ok = selector
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| have.get(k) == Some(v));
            let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
                requirement_holds(
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

pub(super) fn requirement_holds(
    req: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&req.key);
    let listed = |v: &String| req.values.iter().flatten().any(|x| x == v);
    match req.operator.as_str() {
        "In" => value.is_some_and(listed),
        "NotIn" => !value.is_some_and(listed),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// The hosts a route serves through a listener: `None` when they share nothing.
pub(super) fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<Option<String>>> {
    let route: Vec<String> = route.iter().map(|h| normalize_host(h)).collect();
    match (listener, route.is_empty()) {
        (None, true) => Some(vec![None]),
        (Some(l), true) => Some(vec![Some(l.to_owned())]),
        (None, false) => Some(route.into_iter().map(Some).collect()),
        (Some(l), false) => {
            let hosts: Vec<Option<String>> = route
                .iter()
                .filter_map(|r| host_intersection(l, r))
                .map(Some)
                .collect();
            (!hosts.is_empty()).then_some(hosts)
        }
    }
}

/// The more specific of two hostnames when one covers the other.
fn host_intersection(a: &str, b: &str) -> Option<String> {
    let covers = |wild: &str, name: &str| {
        wild.strip_prefix("*.").is_some_and(|suffix| {
            name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}"))
        })
    };
    if a == b {
        Some(a.to_owned())
    } else if covers(a, b) {
        Some(b.to_owned())
    } else if covers(b, a) {
        Some(a.to_owned())
    } else {
        None
    }
}

struct RulesOutput {
    drafts: Vec<RouteDraft>,
    resolved: Cond,
}

/// A host a route serves where it is served (a socket and protocol, and the
/// listeners there it came through), and the places it comes through.
struct RouteHost<'p> {
    host: Option<String>,
    tls: bool,
    scope: ListenerScope,
    via: Vec<&'p Place>,
}

/// The route's hosts, one per host and place served: a route attached to two
/// Gateways with addresses of their own is two routes, each guarded as its Gateway
/// says; Gateways served on the flag listeners share them, and the guards of all.
fn route_hosts(places: &[Place]) -> Vec<RouteHost<'_>> {
    let mut hosts: Vec<RouteHost<'_>> = Vec::new();
    for place in places.iter().filter(|p| p.usable) {
        for host in &place.hosts {
            let same = |h: &&mut RouteHost| {
                h.host == *host && h.tls == place.tls && h.scope.socket == place.socket
            };
            match hosts.iter_mut().find(same) {
                Some(known) => {
                    if !known.scope.via.contains(&place.hostname) {
                        known.scope.via.push(place.hostname.clone());
                    }
                    known.via.push(place);
                }
                None => hosts.push(RouteHost {
                    host: host.clone(),
                    tls: place.tls,
                    scope: ListenerScope {
                        socket: place.socket,
                        siblings: place.siblings.clone(),
                        via: vec![place.hostname.clone()],
                    },
                    via: vec![place],
                }),
            }
        }
    }
    hosts
}

/// One match of a rule, compiled: its field, path and conditions.
type CompiledMatch = (String, PathRule, Conditions);

/// Every match of a rule, or `Err` with the field of the first that does not compile.
fn rule_matches(
    rule: &HttpRouteRules,
    field: &str,
    obj: &ObjectRef,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> Result<Vec<CompiledMatch>, String> {
    let matches: Vec<HttpRouteRulesMatches> = match rule.matches.as_deref() {
        Some(m) if !m.is_empty() => m.to_vec(),
        _ => vec![HttpRouteRulesMatches::default()],
    };
    let mut out = Vec::new();
    for (mi, m) in matches.iter().enumerate() {
        let mfield = format!("{field}.matches[{mi}]");
        match route_match(m, &mfield, obj, options, diags) {
            Some((path, conditions)) => out.push((mfield, path, conditions)),
            None => return Err(mfield),
        }
    }
    Ok(out)
}

/// How long a rule's request may take: the shorter of `timeouts.request` and
/// `timeouts.backendRequest` (the two bound the same wait: with a `retry`, every
/// attempt and the waits between them together); `0s` or no value leaves that bound
/// out.
fn rule_timeout(rule: &HttpRouteRules) -> Option<std::time::Duration> {
    let t = rule.timeouts.as_ref()?;
    [t.request.as_deref(), t.backend_request.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|v| v.parse::<gateway_api::Duration>().ok())
        .map(|d| std::time::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
        .filter(|d| !d.is_zero())
        .min()
}

/// A route with a match that does not compile serves nothing: every rule of it
/// answers 500 on every host it has, and so does a catch-all in the broken match's
/// place, since which requests that match was meant to take cannot be known. Its
/// traffic never reaches a broader rule.
const BROKEN_MATCH: &str = "a match of this HTTPRoute does not compile";

#[allow(clippy::too_many_arguments)]
fn compile_rules(
    route: &HttpRoute,
    obj: &ObjectRef,
    places: &[Place],
    guards: &HashMap<ObjectRef, Vec<Guard>>,
    owners: &HashMap<String, HostOwner>,
    index: &Index,
    grants: &Grants,
    upstreams: &mut UpstreamCache,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> RulesOutput {
    let mut resolved = Cond::yes("ResolvedRefs", "ResolvedRefs", "");
    let hosts: Vec<RouteHost<'_>> = route_hosts(places)
        .into_iter()
        .filter(|h| host_admits(h.host.as_deref(), owners, obj, diags))
        .collect();
    let rules: Vec<&HttpRouteRules> = route.spec.rules.iter().flatten().collect();
    let compiled: Vec<Result<Vec<CompiledMatch>, String>> = rules
        .iter()
        .enumerate()
        .map(|(ri, rule)| rule_matches(rule, &format!("spec.rules[{ri}]"), obj, options, diags))
        .collect();
    let broken: Vec<&String> = compiled.iter().filter_map(|c| c.as_ref().err()).collect();
    if let Some(field) = broken.first() {
        resolved = Cond::no(
            "ResolvedRefs",
            "UnsupportedValue",
            format!("{field} does not compile; every rule of this route answers 500 until it does"),
        );
    }
    let mut drafts = Vec::new();
    let client = route_backend_client(places.iter().map(|p| p.backend_client.as_ref()));
    for (ri, (rule, matches)) in rules.iter().zip(&compiled).enumerate() {
        let field = format!("spec.rules[{ri}]");
        let backend = rule_backend(
            rule,
            obj,
            &field,
            (index, grants, &client),
            upstreams,
            &mut resolved,
            diags,
        );
        let Ok(matches) = matches else {
            continue;
        };
        let extras = rule_extras(
            rule,
            obj,
            &field,
            (index, grants, &client),
            upstreams,
            diags,
        );
        let (backend, mirrors, retry) = match extras {
            Ok((mirrors, retry)) => (backend, mirrors, retry),
            Err(cond) => {
                if resolved.ok {
                    resolved = cond.clone();
                }
                let reason = cond.message;
                (Backend::Invalid { reason }, Vec::new(), None)
            }
        };
        for (mfield, path, conditions) in matches {
            let (mut filters, invalid) =
                served_filters(rule, path, &field, !broken.is_empty(), obj, diags);
            filters.mirrors = mirrors.clone();
            filters.retry = retry.clone();
            if let Some(cond) = invalid.as_ref().and_then(|(_, c)| c.clone()) {
                resolved = cond;
            }
            let served = Served {
                rule,
                field: mfield,
                path,
                conditions,
                backend: match invalid {
                    Some((reason, _)) => Backend::Invalid { reason },
                    None => backend.clone(),
                },
                filters,
            };
            drafts.extend(host_drafts(obj, &served, &hosts, guards));
        }
    }
    for field in broken {
        drafts.extend(hosts.iter().map(|h| broken_catch_all(obj, field, h)));
    }
    RulesOutput { drafts, resolved }
}

/// A rule's mirrors and retry, or the ResolvedRefs condition that makes the rule
/// answer 500 (never served without them).
fn rule_extras(
    rule: &HttpRouteRules,
    obj: &ObjectRef,
    field: &str,
    refs: (&Index, &Grants, &BackendClient),
    upstreams: &mut UpstreamCache,
    diags: &mut Vec<Diagnostic>,
) -> Result<(Vec<Arc<super::mirror::Mirror>>, Option<super::retry::Retry>), Cond> {
    let retry = super::retry::rule_retry(rule.retry.as_ref(), field).map_err(|(f, message)| {
        diags.push(Diagnostic::error(
            obj,
            &f,
            "UnsupportedValue",
            message.clone(),
            "see HTTPRoute retries in the README".into(),
        ));
        Cond::no("ResolvedRefs", "UnsupportedValue", message)
    })?;
    let mut resolve =
        |r: &HttpRouteRulesBackendRefs, f: &str| backend_ref(r, obj, f, refs, upstreams, diags);
    let mirrors = super::mirror::rule_mirrors(rule, field, &mut resolve);
    let mirrors = mirrors.map_err(|(f, cond)| {
        diags.push(Diagnostic::error(
            obj,
            &f,
            "InvalidMirror",
            format!("{}; the rule answers 500 until its mirror can be used", cond.message),
            "name a Service port that exists (another namespace's needs a ReferenceGrant there), with a percent of 0 to 100 or a fraction of at most 1".into(),
        ));
        cond
    })?;
    Ok((mirrors, retry))
}

/// The filters a match is served with, or why it answers 500 instead (with the
/// ResolvedRefs condition to report, for an unsupported filter). A rule whose filters
/// cannot be applied is served as 500, never without them; so is every rule of a
/// route with a match that does not compile (`route_broken`).
fn served_filters(
    rule: &HttpRouteRules,
    path: &PathRule,
    field: &str,
    route_broken: bool,
    obj: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> (Filters, Option<(String, Option<Cond>)>) {
    match rule_filters(rule.filters.as_deref().unwrap_or_default(), path, field) {
        Ok(f) if !route_broken => (f, None),
        Ok(_) => (Filters::default(), Some((BROKEN_MATCH.to_owned(), None))),
        Err((f, message)) => {
            diags.push(Diagnostic::error(
                obj,
                &f,
                "UnsupportedValue",
                message.clone(),
                "see the HTTPRoute filters Portcullis supports in the README".into(),
            ));
            let cond = Cond::no("ResolvedRefs", "UnsupportedValue", message);
            let reason = "the HTTPRoute rule has an unsupported filter".to_owned();
            (Filters::default(), Some((reason, Some(cond))))
        }
    }
}

/// One compiled match of a rule, as it is served.
struct Served<'r> {
    rule: &'r HttpRouteRules,
    field: &'r str,
    path: &'r PathRule,
    conditions: &'r Conditions,
    backend: Backend,
    filters: Filters,
}

/// A match's route on each host of its HTTPRoute, with the protocol condition and
/// the guards of the places that host comes through.
fn host_drafts(
    obj: &ObjectRef,
    served: &Served,
    hosts: &[RouteHost<'_>],
    guards: &HashMap<ObjectRef, Vec<Guard>>,
) -> Vec<RouteDraft> {
    hosts
        .iter()
        .map(|h| RouteDraft {
            host: h.host.clone(),
            field: served.field.to_owned(),
            path: Some(served.path.clone()),
            ingress: obj.clone(),
            backend: served.backend.clone(),
            guards: route_guards(obj, served.rule, &h.via, guards),
            https_redirect: false,
            conditions: Conditions {
                tls: Some(h.tls),
                gateway: Some(h.scope.clone()),
                ..served.conditions.clone()
            },
            filters: served.filters.clone(),
            timeout: rule_timeout(served.rule),
            sources: None,
            closed: None,
            order: Default::default(),
            alb: Default::default(),
        })
        .collect()
}

/// Whether a route may serve this host: not when it belongs to another namespace.
fn host_admits(
    host: Option<&str>,
    owners: &HashMap<String, HostOwner>,
    obj: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let Some(h) = host else {
        return true;
    };
    if owners.get(h).is_none_or(|o| o.admits(&obj.namespace)) {
        return true;
    }
    diags.push(Diagnostic::error(
        obj,
        "spec.hostnames",
        "HostOwnedByOtherNamespace",
        format!("host {h} belongs to another namespace's Ingress; this route does not serve it"),
        format!(
            "use a host of namespace {}'s own, or have the owning Ingress share it",
            obj.namespace
        ),
    ));
    false
}

fn broken_catch_all(obj: &ObjectRef, field: &str, at: &RouteHost<'_>) -> RouteDraft {
    RouteDraft {
        host: at.host.clone(),
        field: field.to_owned(),
        path: Some(PathRule {
            kind: PathKind::Prefix,
            path: "/".into(),
        }),
        ingress: obj.clone(),
        backend: Backend::Invalid {
            reason: BROKEN_MATCH.into(),
        },
        guards: Vec::new(),
        https_redirect: false,
        conditions: Conditions {
            tls: Some(at.tls),
            gateway: Some(at.scope.clone()),
            ..Conditions::default()
        },
        filters: Filters::default(),
        timeout: None,
        sources: None,
        closed: None,
        order: Default::default(),
        alb: Default::default(),
    }
}

/// Adds a condition to each HTTPRoute with a guarded rule an open rule can take
/// requests from (`GuardShadowed` diagnostics), so `kubectl get httproute` shows it.
pub(super) fn report_shadowed(diags: &[Diagnostic], state: &mut GatewayApiState) {
    let mut by_route: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
    for d in diags.iter().filter(|d| d.reason == "GuardShadowed") {
        by_route.entry(&d.object).or_default().push(d);
    }
    for (obj, found) in by_route {
        let Some(route) = state.routes.get_mut(obj) else {
            continue;
        };
        let mut message = format!("{}: {}", found[0].field, found[0].message);
        if found.len() > 1 {
            message.push_str(&format!(
                " (and {} more; see `portcullis check`)",
                found.len() - 1
            ));
        }
        for parent in &mut route.parents {
            parent
                .conditions
                .push(Cond::no(SHADOW_CONDITION, "GuardShadowed", message.clone()));
        }
    }
}

/// The condition type (implementation-specific, so domain-prefixed) that says whether
/// every guarded rule of a route holds against its open siblings.
pub const SHADOW_CONDITION: &str = "portcullis.dev/GuardsHold";

/// The AuthRules guarding this rule: those naming the route (or this rule by its
/// name) and those naming a Gateway (or the listener) it attaches through.
fn route_guards(
    obj: &ObjectRef,
    rule: &HttpRouteRules,
    via: &[&Place],
    guards: &HashMap<ObjectRef, Vec<Guard>>,
) -> Vec<Guard> {
    let mut out: Vec<Guard> = guards
        .get(obj)
        .into_iter()
        .flatten()
        .filter(|g| g.section.is_none() || g.section == rule.name)
        .cloned()
        .collect();
    for place in via {
        for g in guards.get(&place.gateway).into_iter().flatten() {
            if (g.section.is_none() || g.section.as_deref() == Some(place.listener.as_str()))
                && !out.iter().any(|o| o.rule == g.rule)
            {
                out.push(g.clone());
            }
        }
    }
    out
}

fn route_match(
    m: &HttpRouteRulesMatches,
    field: &str,
    obj: &ObjectRef,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> Option<(PathRule, Conditions)> {
    let mut conditions = Conditions::default();
    let path = match_path(m, field, obj, options, &mut conditions, diags)?;
    if let Err(what) = request_conditions(m, &mut conditions) {
        diags.push(invalid_match(obj, field, what));
        return None;
    }
    Some((path, conditions))
}

fn invalid_match(obj: &ObjectRef, field: &str, what: String) -> Diagnostic {
    Diagnostic::error(
        obj,
        field,
        "InvalidMatch",
        what,
        "fix the match; every rule of this HTTPRoute answers 500 until then".into(),
    )
}

/// The match's path (a prefix of `/` when it names none); a regular expression goes
/// into `conditions` too.
fn match_path(
    m: &HttpRouteRulesMatches,
    field: &str,
    obj: &ObjectRef,
    options: &CompileOptions,
    conditions: &mut Conditions,
    diags: &mut Vec<Diagnostic>,
) -> Option<PathRule> {
    let (kind, value) = match &m.path {
        Some(p) => (
            p.r#type
                .clone()
                .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix),
            p.value.clone().unwrap_or_else(|| "/".into()),
        ),
        None => (HttpRouteRulesMatchesPathType::PathPrefix, "/".into()),
    };
    match kind {
        HttpRouteRulesMatchesPathType::Exact | HttpRouteRulesMatchesPathType::PathPrefix => {
            let kind = if kind == HttpRouteRulesMatchesPathType::Exact {
                "Exact"
            } else {
                "Prefix"
            };
            let mut rule = path_rule(Some(&value), kind, obj, &format!("{field}.path"), diags)?;
            if options.case_insensitive_paths {
                rule.path = rule.path.to_ascii_lowercase();
            }
            Some(rule)
        }
        HttpRouteRulesMatchesPathType::RegularExpression => match bounded_regex(&value) {
            Ok(r) => {
                conditions.path_regex = Some(r);
                Some(PathRule {
                    kind: PathKind::Regex,
                    path: value,
                })
            }
            Err(e) => {
                diags.push(invalid_match(
                    obj,
                    field,
                    format!("path regular expression {value:?} does not compile: {e}"),
                ));
                None
            }
        },
    }
}

/// The match's method, headers and query parameters as `conditions`, or what is
/// wrong with the first that is not valid.
fn request_conditions(
    m: &HttpRouteRulesMatches,
    conditions: &mut Conditions,
) -> Result<(), String> {
    if let Some(method) = &m.method {
        let name = serde_json::to_value(method)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match http::Method::from_bytes(name.as_bytes()) {
            Ok(method) => conditions.method = Some(method),
            Err(_) => return Err(format!("method {name:?} is not valid")),
        }
    }
    for h in m.headers.iter().flatten() {
        let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
            return Err(format!("header name {:?} is not valid", h.name));
        };
        if conditions.headers.iter().any(|(n, _)| *n == name) {
            continue; // The first match for a name wins, as the specification says.
        }
        let regex = h.r#type == Some(HttpRouteRulesMatchesHeadersType::RegularExpression);
        let value =
            value_match(regex, &h.value).map_err(|e| format!("header regular expression {e}"))?;
        conditions.headers.push((name, value));
    }
    for q in m.query_params.iter().flatten() {
        if conditions.query.iter().any(|(n, _)| *n == q.name) {
            continue;
        }
        let regex = q.r#type == Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression);
        let value =
            value_match(regex, &q.value).map_err(|e| format!("query regular expression {e}"))?;
        conditions.query.push((q.name.clone(), value));
    }
    Ok(())
}

/// A header or query parameter match: the value itself, or a bounded expression.
fn value_match(regex: bool, value: &str) -> Result<ValueMatch, String> {
    if !regex {
        return Ok(ValueMatch::Exact(value.to_owned()));
    }
    bounded_regex(value)
        .map(ValueMatch::Regex)
        .map_err(|e| format!("{value:?} does not compile: {e}"))
}

/// Identity and framing headers no filter may write: the identity headers are the
/// guard's alone, and framing is the proxy's.
/// Names are compared with `_` read as `-`, as CGI and WSGI servers read them.
fn writable_header(name: &http::HeaderName) -> bool {
    let n = name.as_str().replace('_', "-");
    !(n.starts_with("x-amzn-oidc-")
        || matches!(
            n.as_str(),
            "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "te"
                | "trailer"
                | "upgrade"
                | "content-length"
                | "x-original-url"
                | "x-rewrite-url"
                | "x-original-uri"
                | "proxy"
        ))
}

/// Longest pattern, compiled program size and nesting a route's regular expression
/// may have: matching costs at most program size × input length, and one tenant's
/// expression runs on every request to its host.
const MAX_PATTERN_BYTES: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 64 * 1024;
const REGEX_NEST_LIMIT: u32 = 16;

/// A Gateway API expression: it must match the whole value.
fn bounded_regex(pattern: &str) -> Result<regex_lite::Regex, String> {
    bounded(pattern, &format!("^(?:{pattern})$"), false)
}

/// An ALB expression: ALB searches the value for it, so it is compiled as written
/// (`^` and `$` anchor it). `fold`: matched without regard to ASCII case, for paths
/// that are folded to lower case before matching.
pub(super) fn bounded_search_regex(pattern: &str, fold: bool) -> Result<regex_lite::Regex, String> {
    bounded(pattern, pattern, fold)
}

fn bounded(pattern: &str, program: &str, fold: bool) -> Result<regex_lite::Regex, String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("longer than {MAX_PATTERN_BYTES} bytes"));
    }
    regex_lite::RegexBuilder::new(program)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .case_insensitive(fold)
        .build()
        .map_err(|e| e.to_string())
}

fn header_edits(
    set: &[(String, String)],
    add: &[(String, String)],
    remove: &[String],
    field: &str,
) -> Result<HeaderEdits, (String, String)> {
    let name = |n: &str| {
        http::HeaderName::from_bytes(n.as_bytes())
            .ok()
            .filter(writable_header)
            .ok_or_else(|| {
                (
                    field.to_owned(),
                    format!("header {n:?} may not be changed by a filter"),
                )
            })
    };
    let pair = |(n, v): &(String, String)| {
        let value = http::HeaderValue::from_str(v).map_err(|_| {
            (
                field.to_owned(),
                format!("header value for {n:?} is not valid"),
            )
        })?;
        Ok::<_, (String, String)>((name(n)?, value))
    };
    Ok(HeaderEdits {
        set: set.iter().map(pair).collect::<Result<_, _>>()?,
        add: add.iter().map(pair).collect::<Result<_, _>>()?,
        remove: remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
    })
}

fn pairs<'a>(items: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    items.map(|(n, v)| (n.clone(), v.clone())).collect()
}

fn rule_filters(
    filters: &[HttpRouteRulesFilters],
    path: &PathRule,
    field: &str,
) -> Result<Filters, (String, String)> {
    let mut out = Filters::default();
    for (i, f) in filters.iter().enumerate() {
        let ffield = format!("{field}.filters[{i}]");
        if let Some(m) = &f.request_header_modifier {
            let set = pairs(m.set.iter().flatten().map(|h| (&h.name, &h.value)));
            let add = pairs(m.add.iter().flatten().map(|h| (&h.name, &h.value)));
            let remove = m.remove.as_deref().unwrap_or_default();
            out.request_headers = header_edits(&set, &add, remove, &ffield)?;
        } else if let Some(m) = &f.response_header_modifier {
            let set = pairs(m.set.iter().flatten().map(|h| (&h.name, &h.value)));
            let add = pairs(m.add.iter().flatten().map(|h| (&h.name, &h.value)));
            let remove = m.remove.as_deref().unwrap_or_default();
            out.response_headers = header_edits(&set, &add, remove, &ffield)?;
        } else if let Some(r) = &f.request_redirect {
            let modifier = match &r.path {
                Some(p) => Some(path_modifier(
                    p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
                    p.replace_full_path.as_deref(),
                    p.replace_prefix_match.as_deref(),
                    path,
                    &ffield,
                )?),
                None => None,
            };
            out.redirect = Some(Redirect {
                scheme: r.scheme.as_ref().map(|s| match s {
                    HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".into(),
                    HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".into(),
                }),
                hostname: r.hostname.as_deref().map(normalize_host),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path: modifier,
                status: r
                    .status_code
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(302),
            });
        } else if let Some(r) = &f.url_rewrite {
            let modifier = match &r.path {
                Some(p) => Some(path_modifier(
                    p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath,
                    p.replace_full_path.as_deref(),
                    p.replace_prefix_match.as_deref(),
                    path,
                    &ffield,
                )?),
                None => None,
            };
            out.rewrite = Some(Rewrite {
                hostname: r.hostname.as_deref().map(normalize_host),
                path: modifier,
            });
        } else if let Some(c) = &f.cors {
            let cors = super::cors::compile(c).map_err(|m| (format!("{ffield}.cors"), m))?;
            out.cors = Some(Arc::new(cors));
        } else if f.request_mirror.is_some() {
            // Compiled with the rule's references (`rule_extras`).
        } else {
            return Err((ffield, "only RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror and CORS filters are supported".into()));
        }
    }
    Ok(out)
}

fn path_modifier(
    full: bool,
    full_path: Option<&str>,
    prefix: Option<&str>,
    path: &PathRule,
    field: &str,
) -> Result<PathModifier, (String, String)> {
    if full {
        return Ok(PathModifier::Full(full_path.unwrap_or("/").to_owned()));
    }
    if path.kind != PathKind::Prefix {
        return Err((
            field.to_owned(),
            "ReplacePrefixMatch needs a PathPrefix match".into(),
        ));
    }
    Ok(PathModifier::Prefix {
        prefix: path.path.clone(),
        with: prefix.unwrap_or("/").to_owned(),
    })
}

#[allow(clippy::too_many_arguments)]
fn rule_backend(
    rule: &HttpRouteRules,
    obj: &ObjectRef,
    field: &str,
    refs_to: (&Index, &Grants, &BackendClient),
    upstreams: &mut UpstreamCache,
    resolved: &mut Cond,
    diags: &mut Vec<Diagnostic>,
) -> Backend {
    let refs = rule.backend_refs.as_deref().unwrap_or_default();
    let mut shares: Vec<(u32, Backend)> = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let bfield = format!("{field}.backendRefs[{i}]");
        let weight = u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0);
        let backend = match backend_ref(r, obj, &bfield, refs_to, upstreams, diags) {
            Ok(b) => b,
            Err(cond) => {
                if resolved.ok {
                    *resolved = cond.clone();
                }
                Backend::Invalid {
                    reason: cond.message,
                }
            }
        };
        shares.push((weight, backend));
    }
    shares.retain(|(w, _)| *w > 0);
    match shares.len() {
        0 if rule
            .filters
            .iter()
            .flatten()
            .any(|f| f.request_redirect.is_some()) =>
        {
            Backend::Invalid {
                reason: "redirect only".into(),
            }
        }
        0 => Backend::Invalid {
            reason: "the rule has no backend with a weight above 0".into(),
        },
        1 => shares.pop().map(|(_, b)| b).unwrap_or(Backend::Invalid {
            reason: String::new(),
        }),
        _ => Backend::Split(shares),
    }
}

pub(super) fn backend_ref(
    r: &HttpRouteRulesBackendRefs,
    obj: &ObjectRef,
    field: &str,
    (index, grants, client): (&Index, &Grants, &BackendClient),
    upstreams: &mut UpstreamCache,
    diags: &mut Vec<Diagnostic>,
) -> Result<Backend, Cond> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !(group.is_empty() || group == "core") || kind != "Service" {
        return Err(Cond::no(
            "ResolvedRefs",
            "InvalidKind",
            format!("{field} names a {group}/{kind}; only Services are supported"),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(&obj.namespace);
    if ns != obj.namespace && !grants.allows(&obj.namespace, &obj.kind, ns, "", "Service", &r.name)
    {
        return Err(Cond::no(
            "ResolvedRefs",
            "RefNotPermitted",
            format!(
                "Service {ns}/{} is in another namespace and no ReferenceGrant there allows it",
                r.name
            ),
        ));
    }
    if !index.service_exists(ns, &r.name) {
        return Err(Cond::no(
            "ResolvedRefs",
            "BackendNotFound",
            format!("Service {ns}/{} not found", r.name),
        ));
    }
    let Some(port) = r.port else {
        return Err(Cond::no(
            "ResolvedRefs",
            "UnsupportedValue",
            format!("{field} has no port"),
        ));
    };
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: r.name.clone(),
            port: Some(ServiceBackendPort {
                number: Some(port),
                name: None,
            }),
        }),
        resource: None,
    };
    let edits = backend_edits(r, field).map_err(|(f, message)| {
        diags.push(Diagnostic::error(
            obj,
            &f,
            "UnsupportedValue",
            message.clone(),
            "a backendRef takes only a RequestHeaderModifier filter".into(),
        ));
        Cond::no("ResolvedRefs", "UnsupportedValue", message)
    })?;
    let from = match obj.kind.as_str() {
        "GRPCRoute" => super::backend_protocol::ProtocolFrom::Grpc(client),
        _ => super::backend_protocol::ProtocolFrom::AppProtocol(client),
    };
    let resolved = upstreams.resolve(index, ns, &backend, from, obj, field, diags);
    Ok(match edits {
        Some(headers) => Backend::Edited {
            headers,
            backend: Box::new(resolved),
        },
        None => resolved,
    })
}

/// The RequestHeaderModifier of a backendRef (checked as a rule's is), or the field
/// and message of a filter that cannot be applied: that backend then answers 500,
/// never without its filter.
fn backend_edits(
    r: &HttpRouteRulesBackendRefs,
    field: &str,
) -> Result<Option<HeaderEdits>, (String, String)> {
    let mut out = None;
    for (i, f) in r.filters.iter().flatten().enumerate() {
        let ffield = format!("{field}.filters[{i}]");
        let Some(m) = &f.request_header_modifier else {
            return Err((
                ffield,
                "only the RequestHeaderModifier filter is supported on a backendRef".into(),
            ));
        };
        let set = pairs(m.set.iter().flatten().map(|h| (&h.name, &h.value)));
        let add = pairs(m.add.iter().flatten().map(|h| (&h.name, &h.value)));
        let remove = m.remove.as_deref().unwrap_or_default();
        out = Some(header_edits(&set, &add, remove, &ffield)?);
    }
    Ok(out)
}

/// ReferenceGrants by the namespace they stand in.
pub(super) struct Grants<'a> {
    by_namespace: HashMap<&'a str, Vec<&'a gateway_api::referencegrants::ReferenceGrant>>,
}

impl<'a> Grants<'a> {
    fn new(objects: &'a Objects) -> Self {
        let mut by_namespace: HashMap<&str, Vec<_>> = HashMap::new();
        for g in &objects.reference_grants {
            if let Some(ns) = g.metadata.namespace.as_deref() {
                by_namespace.entry(ns).or_default().push(g.as_ref());
            }
        }
        Self { by_namespace }
    }

    /// Whether a `from_kind` of `from_ns` may refer to `to_group/to_kind` `name` in `to_ns`.
    fn allows(
        &self,
        from_ns: &str,
        from_kind: &str,
        to_ns: &str,
        to_group: &str,
        to_kind: &str,
        name: &str,
    ) -> bool {
        let from_group = GATEWAY_GROUP;
        self.by_namespace.get(to_ns).into_iter().flatten().any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    (t.group == to_group || (to_group.is_empty() && t.group == "core"))
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
    }
}
