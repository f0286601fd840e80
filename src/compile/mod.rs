//! Objects in, snapshot and diagnostics out. Pure: no I/O, no clock, no randomness,
//! so every rule about what an Ingress or AuthRule means is tested here without a
//! server. A bad object is left out (its routes fail closed) and reported; it never
//! takes the rest down.

pub mod alb_actions;
pub mod alb_annotations;
pub mod alb_conditions;
pub mod alb_transforms;
mod auth;
pub mod authorization;
mod backend_client;
pub mod backend_protocol;
pub mod backend_tls_policy;
mod backends;
pub mod bearer;
mod cel_facts;
pub mod claim_headers;
mod client_credential;
mod cookie_domain;
pub mod cors;
mod frontend_tls;
mod gateway;
pub mod gateway_addresses;
mod gateway_infrastructure;
pub mod grpc_route;
mod listener_set;
pub mod mirror;
pub mod mtls;
pub mod path_pattern;
mod precedence;
pub mod required;
pub mod retry;
pub mod snapshot;
mod tls;
pub mod tls_route;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::CONTROLLER_NAME;
use crate::store::Objects;
pub use backends::SliceIndex;
pub use gateway::{
    Cond, GatewayApiState, GatewayState, ListenerState, ParentStatus, RouteState, mark_unbound,
};
pub use listener_set::ListenerSetState;
pub use snapshot::*;

pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub const SSL_REDIRECT_ANNOTATION: &str = "portcullis.dev/ssl-redirect";
/// On an Ingress of the namespace that owns a host: the other namespaces (comma
/// separated, or `*`) whose Ingresses may add paths to that host.
pub const SHARE_HOST_ANNOTATION: &str = "portcullis.dev/share-host-with";

#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// The IngressClass name this controller serves even when no IngressClass object
    /// names it (handy with manifest files).
    pub ingress_class: String,
    /// Also serve Ingresses that name no class at all.
    pub watch_ingress_without_class: bool,
    /// `namespace/name` of a `kubernetes.io/tls` Secret used when no other certificate
    /// matches the TLS server name.
    pub default_certificate: Option<String>,
    /// Let Ingresses of any namespace add paths to any host (no host ownership).
    pub allow_shared_hosts: bool,
    /// Match Ingress paths, AuthRule path patterns and logout paths without regard to
    /// ASCII case, for backends that route that way (Express, ASP.NET).
    pub case_insensitive_paths: bool,
    /// Close every route no AuthRule guards unless its object is annotated
    /// `portcullis.dev/auth: none` (`--require-auth-rule`).
    pub require_auth_rule: bool,
    /// ALB access-control annotations (`scheme`, `wafv2-acl-arn`, ...) whose
    /// difference the operator accepts for every Ingress, as if each carried them in
    /// `portcullis.dev/accept-alb-differences`.
    pub accept_alb_differences: Vec<String>,
    /// The range each Gateway gets an address of its own from, its listeners bound
    /// there at their own ports (`--gateway-addresses`); `None`: every Gateway is
    /// served on the flag listeners by protocol.
    pub gateway_addresses: Option<ipnet::IpNet>,
    /// Redis is configured (`--redis-url`): AuthRules may keep sessions there.
    pub redis: bool,
    /// The HTTPS listener's client certificates for hosts no Ingress sets them for
    /// (`--mutual-authentication`, `--trust-store`); `None`: off.
    pub mutual_authentication: Option<mtls::Setting>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            ingress_class: "portcullis".into(),
            watch_ingress_without_class: false,
            default_certificate: None,
            allow_shared_hosts: false,
            case_insensitive_paths: false,
            require_auth_rule: false,
            accept_alb_differences: Vec::new(),
            gateway_addresses: None,
            redis: false,
            mutual_authentication: None,
        }
    }
}

/// What a compile gives: the snapshot the data plane serves, the problems found, and
/// how the Gateway API objects stand (read by the controller for their status only).
pub struct Compiled {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
    pub gateway_status: GatewayApiState,
}

pub fn compile(objects: &Objects, options: &CompileOptions) -> Compiled {
    let mut diags = objects.diagnostics.clone();
    let index = backends::Index::new(objects);
    let ingresses = select_ingresses(objects, options, &mut diags);
    let mut certs = tls::compile_certs(&ingresses, &index, options, &mut diags);
    let mtls = mtls::compile_mtls(&ingresses, &index, options, &mut diags);
    let ours: HashSet<ObjectRef> = ingresses.iter().map(|i| ingress_ref(i)).collect();
    let mut rules = auth::compile_rules(objects, &index, &ours, options.redis, &mut diags);
    auth::separate_cookie_names(&mut rules, &ingress_hosts(&ingresses), &mut diags);
    if options.case_insensitive_paths {
        auth::fold_case(&mut rules);
    }
    let mut owners = if options.allow_shared_hosts {
        HashMap::new()
    } else {
        host_owners(&ingresses)
    };
    let mut upstreams = backends::UpstreamCache::default();
    let (mut drafts, default_draft) = compile_routes(
        &ingresses,
        &index,
        &certs,
        &rules.guards,
        &owners,
        &mut upstreams,
        options,
        &mut diags,
    );
    let gateway_api = gateway::compile(
        objects,
        &index,
        &rules.guards,
        &mut owners,
        &mut upstreams,
        &mut certs,
        options,
        &mut diags,
    );
    drafts.extend(gateway_api.drafts);
    let mut default_draft = default_draft;
    let requirements = route_requirements(objects, &ingresses);
    let mut all_drafts: Vec<&mut RouteDraft> =
        drafts.iter_mut().chain(&mut default_draft).collect();
    cookie_domain::refuse_unowned(&mut all_drafts, &mut rules.summaries, &mut diags);
    required::close_unguarded(
        &mut all_drafts,
        &requirements,
        &|rule| rules.summaries.contains_key(rule),
        options.require_auth_rule,
        &mut diags,
    );
    drafts.sort_by_key(|d| precedence::rank(d.path.as_ref(), &d.conditions, d.order));
    let shadowed = precedence::shadowed_guards(&drafts);
    diags.extend(precedence::unreachable_patterns(&drafts));
    let mut gateway_state = gateway_api.state;
    gateway::report_shadowed(&shadowed, &mut gateway_state);
    diags.extend(shadowed);
    let mut routes = build_table(drafts, default_draft);
    routes.upstreams = upstreams.into_list();
    routes.owners = owners;
    routes.fold_case = options.case_insensitive_paths;
    count_attachments(&routes, &mut rules.summaries);
    diags.sort_by(|a, b| (&a.object, a.severity).cmp(&(&b.object, b.severity)));
    Compiled {
        snapshot: Snapshot {
            routes,
            certs,
            mtls,
            auth_rules: rules.summaries,
            gateway_sockets: gateway_api.sockets,
            passthrough: gateway_api.passthrough,
            gateway_tls: gateway_api.socket_tls,
        },
        diagnostics: diags,
        gateway_status: gateway_state,
    }
}

/// Each AuthRule's routes, policy and hosts, as served.
fn count_attachments(routes: &RouteTable, summaries: &mut BTreeMap<ObjectRef, AuthRuleSummary>) {
    for route in &routes.all {
        for guard in &route.guards {
            let Some(summary) = summaries.get_mut(&guard.rule) else {
                continue;
            };
            summary.attached_routes += 1;
            if let GuardPolicy::Oidc(p) = &guard.policy {
                summary.policy = Some(p.clone());
            }
            if let Some(host) = &route.host
                && !summary.hosts.contains(host)
            {
                summary.hosts.push(host.clone());
            }
        }
    }
}

/// What the annotations of each served Ingress and of each HTTPRoute ask of their
/// routes' guards.
fn route_requirements(
    objects: &Objects,
    ingresses: &[&Ingress],
) -> HashMap<ObjectRef, required::Requirement> {
    let ingresses = ingresses.iter().map(|i| (ingress_ref(i), &i.metadata));
    let routes =
        (objects.http_routes.iter()).map(|r| (meta_ref("HTTPRoute", &r.metadata), &r.metadata));
    let grpc_routes =
        (objects.grpc_routes.iter()).map(|r| (meta_ref("GRPCRoute", &r.metadata), &r.metadata));
    ingresses
        .chain(routes)
        .chain(grpc_routes)
        .map(|(object, meta)| (object, required::requirement(meta.annotations.as_ref())))
        .collect()
}

fn ingress_ref(ingress: &Ingress) -> ObjectRef {
    meta_ref("Ingress", &ingress.metadata)
}

pub(crate) fn meta_ref(kind: &str, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        kind,
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Oldest first, then by namespace/name: the order that decides conflicts, as in
/// other ingress controllers.
/// Borrowed, so sorting thousands of objects allocates nothing per comparison.
pub(crate) fn age_key(meta: &ObjectMeta) -> (Option<jiff::Timestamp>, &str, &str) {
    (
        meta.creation_timestamp.as_ref().map(|t| t.0),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The Ingresses of our class: named by `spec.ingressClassName` (or the legacy
/// annotation) as an IngressClass whose controller is ours or as the configured
/// class name; or naming no class while one of our classes is the cluster default.
///
/// The configured class name is not served when an IngressClass of that name belongs
/// to another controller (`--ingress-class alb` beside the AWS Load Balancer
/// Controller): two controllers would serve, and guard differently, the same Ingress.
fn select_ingresses<'a>(
    objects: &'a Objects,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> Vec<&'a Ingress> {
    let mut names: HashSet<&str> = HashSet::from([options.ingress_class.as_str()]);
    let mut have_default = options.watch_ingress_without_class;
    for class in &objects.ingress_classes {
        let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
        if controller != Some(CONTROLLER_NAME) {
            if class.metadata.name.as_deref() == Some(options.ingress_class.as_str()) {
                names.remove(options.ingress_class.as_str());
                diags.push(class_of_another_controller(
                    &options.ingress_class,
                    controller.unwrap_or("none"),
                ));
            }
            continue;
        }
        if let Some(name) = class.metadata.name.as_deref() {
            names.insert(name);
        }
        let is_default = class
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION));
        have_default |= is_default.map(String::as_str) == Some("true");
    }
    let mut selected: Vec<&Ingress> = objects
        .ingresses
        .iter()
        .map(Arc::as_ref)
        .filter(|ing| {
            let class = ing
                .spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref())
                .or_else(|| {
                    ing.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                        .map(String::as_str)
                });
            match class {
                Some(c) => names.contains(c),
                None => have_default,
            }
        })
        .collect();
    selected.sort_by(|a, b| age_key(&a.metadata).cmp(&age_key(&b.metadata)));
    selected
}

fn class_of_another_controller(name: &str, controller: &str) -> Diagnostic {
    Diagnostic::error(
        &ObjectRef::new("IngressClass", "", name),
        "spec.controller",
        "IngressClassOfAnotherController",
        format!(
            "IngressClass {name} belongs to controller {controller}, so Portcullis serves none of its Ingresses (two controllers would serve the same Ingress)"
        ),
        format!(
            "give Portcullis a class of its own (--ingress-class, an IngressClass with controller {CONTROLLER_NAME}) and move Ingresses to it host by host; see docs/coming-from-alb.md"
        ),
    )
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn valid_host(host: &str) -> bool {
    crate::model::is_dns_name(host.strip_prefix("*.").unwrap_or(host))
}

#[derive(Hash, PartialEq, Eq)]
enum HostKey {
    Exact(String),
    Wildcard(String),
    Any,
}

fn host_key(host: Option<&str>) -> HostKey {
    match host {
        None => HostKey::Any,
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => HostKey::Wildcard(suffix.to_owned()),
            None => HostKey::Exact(h.to_owned()),
        },
    }
}

/// Each Ingress's hosts, `*` standing for its rules without a host and its default
/// backend.
fn ingress_hosts(ingresses: &[&Ingress]) -> HashMap<ObjectRef, Vec<String>> {
    ingresses
        .iter()
        .map(|ing| {
            let spec = ing.spec.as_ref();
            let mut hosts: Vec<String> = spec
                .iter()
                .flat_map(|s| s.rules.iter().flatten())
                .map(|r| r.host.as_deref().map_or_else(|| "*".into(), normalize_host))
                .collect();
            if spec.is_some_and(|s| s.default_backend.is_some()) {
                hosts.push("*".into());
            }
            hosts.sort();
            hosts.dedup();
            (ingress_ref(ing), hosts)
        })
        .collect()
}

/// Each named host belongs to the namespace of the oldest Ingress naming it (`ingresses`
/// come oldest first), shared with the namespaces that namespace's Ingresses for the
/// host list in their share annotation.
fn host_owners(ingresses: &[&Ingress]) -> HashMap<String, HostOwner> {
    let mut owners: HashMap<String, HostOwner> = HashMap::new();
    for ingress in ingresses {
        let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
        let shared = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SHARE_HOST_ANNOTATION));
        let hosts = ingress.spec.iter().flat_map(|s| s.rules.iter().flatten());
        for host in hosts.filter_map(|r| r.host.as_deref()).map(normalize_host) {
            let owner = owners.entry(host).or_insert_with(|| HostOwner {
                namespace: namespace.clone(),
                shared_with: SharedWith::Nobody,
            });
            if owner.namespace == namespace
                && let Some(list) = shared
            {
                owner.shared_with = merge_shared(&owner.shared_with, list);
            }
        }
    }
    owners
}

fn merge_shared(current: &SharedWith, annotation: &str) -> SharedWith {
    let listed: Vec<String> = annotation
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    match current {
        _ if listed.iter().any(|n| n == "*") => SharedWith::Everyone,
        SharedWith::Everyone => SharedWith::Everyone,
        SharedWith::Nobody => SharedWith::Namespaces(listed),
        SharedWith::Namespaces(known) => {
            let mut all = known.clone();
            all.extend(listed.into_iter().filter(|n| !known.contains(n)));
            SharedWith::Namespaces(all)
        }
    }
}

fn ssl_redirect_enabled(ingress: &Ingress) -> bool {
    let value = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION));
    value.map(String::as_str) != Some("false")
}

struct RouteDraft {
    host: Option<String>,
    /// The field of `ingress` this route comes from, for diagnostics.
    field: String,
    path: Option<PathRule>,
    ingress: ObjectRef,
    backend: Backend,
    guards: Vec<Guard>,
    https_redirect: bool,
    conditions: Conditions,
    filters: Filters,
    timeout: Option<std::time::Duration>,
    sources: Option<Arc<SourceAllowList>>,
    closed: Option<Arc<Closed>>,
    /// Where the route comes in ALB's rule order (read for ALB path patterns only).
    order: precedence::RuleOrder,
    alb: AlbRoute,
}

#[allow(clippy::too_many_arguments)]
fn compile_routes(
    ingresses: &[&Ingress],
    index: &backends::Index,
    certs: &CertTable,
    guards: &HashMap<ObjectRef, Vec<Guard>>,
    owners: &HashMap<String, HostOwner>,
    upstreams: &mut backends::UpstreamCache,
    options: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<RouteDraft>, Option<RouteDraft>) {
    let mut routes = IngressRoutes {
        drafts: Vec::new(),
        taken: HashMap::new(),
        default_draft: None,
    };
    let groups = alb_annotations::Groups::of(ingresses);
    let by_name = positions_by_name(ingresses);
    for ingress in ingresses {
        let obj = ingress_ref(ingress);
        let Some(spec) = ingress.spec.as_ref() else {
            continue;
        };
        let access = alb_annotations::access_for(ingress, &groups, options, diags);
        let mut backends = alb_actions::Backends {
            index,
            upstreams,
            object: &obj,
            annotations: ingress.metadata.annotations.as_ref(),
            reported: HashSet::new(),
        };
        let base = ingress_draft(
            &obj,
            guards.get(&obj).map(Vec::as_slice).unwrap_or_default(),
            &access,
            Backend::Invalid {
                reason: String::new(),
            },
        );
        if let Some(backend) = spec.default_backend.as_ref() {
            let field = "spec.defaultBackend";
            if let Some(resolved) = backends.resolve(backend, field, diags) {
                let candidate = with_backend(&base, field.into(), resolved);
                offer_default_backend(&mut routes.default_draft, candidate, diags);
            }
        }
        let order = precedence::RuleOrder {
            group_order: access.group_order,
            ingress: by_name.get(&obj).copied().unwrap_or_default(),
            path: 0,
        };
        let context = RuleContext {
            certs,
            owners,
            options,
            https_redirect: ssl_redirect_enabled(ingress),
            regex_paths: access.regex_paths,
        };
        routes.add_rules(spec, &base, order, &context, &mut backends, diags);
    }
    (routes.drafts, routes.default_draft)
}

/// What the rules of one Ingress are compiled with.
struct RuleContext<'a> {
    certs: &'a CertTable,
    owners: &'a HashMap<String, HostOwner>,
    options: &'a CompileOptions,
    /// Portcullis's own redirect to HTTPS for hosts with a certificate.
    https_redirect: bool,
    regex_paths: bool,
}

/// The routes of every Ingress so far, and which host, path and conditions each
/// Ingress has taken (the older keeps a contested one).
struct IngressRoutes {
    drafts: Vec<RouteDraft>,
    taken: HashMap<(HostKey, PathRule, String), ObjectRef>,
    default_draft: Option<RouteDraft>,
}

impl IngressRoutes {
    /// The routes of an Ingress's rules, each a copy of `base` (its guards and
    /// access) with its host, path and backend.
    fn add_rules(
        &mut self,
        spec: &k8s_openapi::api::networking::v1::IngressSpec,
        base: &RouteDraft,
        mut order: precedence::RuleOrder,
        context: &RuleContext,
        backends: &mut alb_actions::Backends,
        diags: &mut Vec<Diagnostic>,
    ) {
        let obj = &base.ingress;
        let read = PathReading {
            regex: context.regex_paths,
            fold: context.options.case_insensitive_paths,
        };
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.as_deref().map(normalize_host);
            if let Some(refusal) = host_refusal(obj, ri, host.as_deref(), context.owners) {
                diags.push(refusal);
                continue;
            }
            for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("spec.rules[{ri}].http.paths[{pi}]");
                let Some(own_path) = ingress_path(p, read, obj, &field, diags) else {
                    continue;
                };
                order.path += 1;
                let backend_field = format!("{field}.backend");
                let Some(resolved) = backends.resolve(&p.backend, &backend_field, diags) else {
                    continue;
                };
                let mut draft = with_backend(base, field, resolved);
                draft.order = order;
                let targets = rule_targets(
                    &mut draft,
                    (host.clone(), own_path),
                    &p.backend,
                    backends,
                    context,
                    diags,
                );
                for (target_host, host_condition) in &targets.hosts {
                    for (path, path_conditions) in &targets.paths {
                        let target = Target {
                            host: target_host.clone(),
                            host_condition: host_condition.clone(),
                            path: path.clone(),
                            path_conditions: path_conditions.clone(),
                        };
                        self.offer(&draft, target, context, diags);
                    }
                }
            }
        }
    }

    /// The route of `draft` for one host and path, unless an older Ingress took
    /// that host, path and conditions.
    fn offer(
        &mut self,
        draft: &RouteDraft,
        target: Target,
        context: &RuleContext,
        diags: &mut Vec<Diagnostic>,
    ) {
        let mut conditions = Conditions {
            tls: draft.conditions.tls,
            alb: draft.conditions.alb.clone(),
            ..target.path_conditions
        };
        conditions.alb.extend(target.host_condition);
        let host = target.host;
        let key = (
            host_key(host.as_deref()),
            target.path.clone(),
            precedence::condition_key(&conditions),
        );
        let obj = &draft.ingress;
        if let Some(owner) = self.taken.get(&key) {
            let conflict = path_conflict(obj, &draft.field, host.as_deref(), &target.path, owner);
            diags.push(conflict);
            return;
        }
        self.taken.insert(key, obj.clone());
        let https_redirect =
            context.https_redirect && host.as_deref().is_some_and(|h| context.certs.covers(h));
        self.drafts.push(RouteDraft {
            host,
            path: Some(target.path),
            https_redirect,
            conditions,
            ..draft.clone_parts()
        });
    }
}

/// One host and path a rule serves.
struct Target {
    host: Option<String>,
    /// For hosts given by a wildcard that is not `*.` and a name, or an expression.
    host_condition: Option<alb_conditions::AlbCondition>,
    path: PathRule,
    /// What matches the path (an ALB pattern or expression).
    path_conditions: Conditions,
}

/// The hosts and paths a rule serves: its own, and those its `conditions.<name>`
/// adds, with that annotation's other conditions put on `draft`. A conditions
/// annotation that cannot be read closes the rule, which keeps its own host and path.
struct Targets {
    hosts: Vec<(Option<String>, Option<alb_conditions::AlbCondition>)>,
    paths: Vec<(PathRule, Conditions)>,
}

fn rule_targets(
    draft: &mut RouteDraft,
    (host, (path, path_conditions)): (Option<String>, (PathRule, Conditions)),
    backend: &k8s_openapi::api::networking::v1::IngressBackend,
    backends: &mut alb_actions::Backends,
    context: &RuleContext,
    diags: &mut Vec<Diagnostic>,
) -> Targets {
    let regex_path = path_conditions.path_regex.is_some();
    match backends.transforms(backend, &draft.field, diags) {
        Ok(rewrite) => draft.alb.rewrite = rewrite,
        Err(closed) => draft.closed = draft.closed.clone().or(Some(closed)),
    }
    let mut targets = Targets {
        hosts: vec![(host.clone(), None)],
        paths: vec![(path, path_conditions)],
    };
    let read = match backends.conditions(backend, &draft.field, diags) {
        Ok(Some(read)) => read,
        Ok(None) => return targets,
        Err(closed) => {
            draft.closed = draft.closed.clone().or(Some(closed));
            return targets;
        }
    };
    draft.conditions.alb.extend(read.conditions);
    if let Some(extra) = read.hosts {
        // The rule's own host (if any) and the condition's, as one ALB condition.
        targets.hosts.retain(|(h, _)| h.is_some());
        let obj = &draft.ingress;
        for name in extra.names {
            match host_refusal(obj, 0, Some(&name), context.owners) {
                Some(refusal) => diags.push(Diagnostic {
                    field: draft.field.clone(),
                    ..refusal
                }),
                None => targets.hosts.push((Some(name), None)),
            }
        }
        targets
            .hosts
            .extend(extra.matching.map(|c| (None, Some(c))));
    }
    if let Some(extra) = read.paths {
        let fold = context.options.case_insensitive_paths;
        match extra_paths(extra, regex_path, fold, &draft.ingress, &draft.field, diags) {
            Ok(paths) => targets.paths.extend(paths),
            Err(closed) => draft.closed = draft.closed.clone().or(Some(closed)),
        }
    }
    targets
}

/// The paths a `path-pattern` condition adds: patterns, or expressions when the rule's
/// own path is one (AWS's controller refuses the mix).
fn extra_paths(
    extra: alb_conditions::ExtraPaths,
    regex_path: bool,
    fold: bool,
    obj: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<Vec<(PathRule, Conditions)>, Arc<Closed>> {
    use alb_conditions::ExtraPaths;
    let before = diags.len();
    let paths: Vec<(PathRule, Conditions)> = match (extra, regex_path) {
        (ExtraPaths::Patterns(patterns), false) => patterns
            .iter()
            .filter_map(|p| alb_pattern_path(p, fold, obj, field, diags))
            .collect(),
        (ExtraPaths::Expressions(exprs), true) => exprs
            .iter()
            .filter_map(|e| alb_regex_path(&format!("/{e}"), fold, obj, field, diags))
            .collect(),
        (_, regex) => {
            let (rule, condition) = if regex {
                ("an expression (use-regex-path-match)", "values")
            } else {
                ("not an expression", "regexValues")
            };
            diags.push(Diagnostic::error(
                obj,
                field,
                "InvalidAnnotation",
                format!("the rule's path is {rule}, and its path-pattern condition gives {condition}, which AWS's controller refuses; the rule answers 500 AnnotationInvalid"),
                "give the path-pattern condition the same kind of values as the rule's path".into(),
            ));
            Vec::new()
        }
    };
    if diags.len() > before {
        return Err(Arc::new(Closed {
            reason: "AnnotationInvalid",
            problem: format!("{obj} {field}: a path-pattern condition cannot be used"),
        }));
    }
    Ok(paths)
}

impl RouteDraft {
    /// A copy of everything but the host, path and conditions, which `offer` sets.
    fn clone_parts(&self) -> RouteDraft {
        RouteDraft {
            host: None,
            field: self.field.clone(),
            path: None,
            ingress: self.ingress.clone(),
            backend: self.backend.clone(),
            guards: self.guards.clone(),
            https_redirect: false,
            conditions: Conditions::default(),
            filters: self.filters.clone(),
            timeout: self.timeout,
            sources: self.sources.clone(),
            closed: self.closed.clone(),
            order: self.order,
            alb: self.alb.clone(),
        }
    }
}

/// `base` serving `resolved` for the rule at `field`.
fn with_backend(base: &RouteDraft, field: String, resolved: alb_actions::Resolved) -> RouteDraft {
    RouteDraft {
        host: base.host.clone(),
        field,
        path: base.path.clone(),
        ingress: base.ingress.clone(),
        backend: resolved.backend,
        guards: base.guards.clone(),
        https_redirect: base.https_redirect,
        conditions: Conditions {
            alb: (base.conditions.alb.iter().cloned())
                .chain(
                    resolved
                        .listener
                        .map(alb_conditions::AlbCondition::Listener),
                )
                .collect(),
            ..Conditions::default()
        },
        filters: Filters::default(),
        timeout: base.timeout,
        sources: base.sources.clone(),
        closed: base.closed.clone().or(resolved.closed),
        order: base.order,
        alb: AlbRoute {
            answer: resolved.answer,
            ..base.alb.clone()
        },
    }
}

/// A route of the Ingress to `backend`, for any host and path, with the Ingress's
/// guards and access.
fn ingress_draft(
    obj: &ObjectRef,
    guards: &[Guard],
    access: &alb_annotations::IngressAccess,
    backend: Backend,
) -> RouteDraft {
    RouteDraft {
        host: None,
        field: String::new(),
        path: None,
        ingress: obj.clone(),
        backend,
        guards: guards.to_vec(),
        https_redirect: false,
        filters: Filters::default(),
        timeout: None,
        conditions: Conditions {
            alb: (access.listener.iter())
                .map(|https| alb_conditions::AlbCondition::Listener(*https))
                .collect(),
            ..Conditions::default()
        },
        sources: access.sources.clone(),
        closed: access.closed.clone(),
        order: precedence::RuleOrder::default(),
        alb: AlbRoute {
            answer: None,
            ssl_redirect: access.ssl_redirect,
            rewrite: None,
        },
    }
}

/// Each Ingress's place by namespace and name: how AWS's controller orders the
/// Ingresses of one `group.order`.
fn positions_by_name(ingresses: &[&Ingress]) -> HashMap<ObjectRef, usize> {
    let mut refs: Vec<ObjectRef> = ingresses.iter().map(|i| ingress_ref(i)).collect();
    refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    refs.into_iter().enumerate().map(|(i, r)| (r, i)).collect()
}

/// The oldest Ingress's default backend holds; later ones are warned of.
fn offer_default_backend(
    default_draft: &mut Option<RouteDraft>,
    candidate: RouteDraft,
    diags: &mut Vec<Diagnostic>,
) {
    match default_draft {
        Some(first) => diags.push(Diagnostic::warning(
            &candidate.ingress,
            "spec.defaultBackend",
            "DefaultBackendConflict",
            format!(
                "{} already sets the default backend; this one is ignored",
                first.ingress
            ),
            "set spec.defaultBackend on one Ingress of the class only".into(),
        )),
        None => *default_draft = Some(candidate),
    }
}

/// Why the rule's host is not served: not a valid name, or owned by another
/// namespace that does not share it.
fn host_refusal(
    obj: &ObjectRef,
    ri: usize,
    host: Option<&str>,
    owners: &HashMap<String, HostOwner>,
) -> Option<Diagnostic> {
    let h = host?;
    let namespace = &obj.namespace;
    if !valid_host(h) {
        return Some(Diagnostic::error(
            obj,
            &format!("spec.rules[{ri}].host"),
            "InvalidHost",
            format!("host {h:?} is not a DNS name or a `*.` wildcard"),
            "use a name like app.example.com or *.example.com".into(),
        ));
    }
    let owner = owners.get(h).filter(|owner| !owner.admits(namespace))?;
    Some(Diagnostic::error(
        obj,
        &format!("spec.rules[{ri}].host"),
        "HostOwnedByOtherNamespace",
        format!(
            "host {h} belongs to namespace {} (its oldest Ingress); this rule's paths are not served",
            owner.namespace
        ),
        format!(
            "use a host of namespace {namespace}'s own, or annotate an Ingress of namespace {} for {h} with {SHARE_HOST_ANNOTATION}: {namespace}",
            owner.namespace
        ),
    ))
}

fn path_conflict(
    obj: &ObjectRef,
    field: &str,
    host: Option<&str>,
    path: &PathRule,
    owner: &ObjectRef,
) -> Diagnostic {
    Diagnostic::warning(
        obj,
        field,
        "PathConflict",
        format!(
            "host {} path {} is already served by {owner}, the older Ingress; this path is ignored",
            host.unwrap_or("*"),
            path.path
        ),
        "remove the duplicate path from one of the Ingresses".into(),
    )
}

/// How an Ingress's `ImplementationSpecific` paths are read.
#[derive(Clone, Copy)]
struct PathReading {
    /// `use-regex-path-match: "true"`: as regular expressions.
    regex: bool,
    /// `--case-insensitive-paths`: matched against the path in lower case.
    fold: bool,
}

/// An Ingress path and the conditions that match it: `Exact` and `Prefix` as the
/// Ingress specification says; `ImplementationSpecific` as ALB reads it when it holds
/// `*` or `?` (or is an expression, under `use-regex-path-match`), else as a prefix.
fn ingress_path(
    p: &k8s_openapi::api::networking::v1::HTTPIngressPath,
    read: PathReading,
    obj: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<(PathRule, Conditions)> {
    let value = p.path.as_deref();
    let alb = p.path_type == "ImplementationSpecific";
    if alb && read.regex {
        return alb_regex_path(value.unwrap_or("/"), read.fold, obj, field, diags);
    }
    if alb && value.is_some_and(|v| v.contains(['*', '?'])) {
        return alb_pattern_path(value.unwrap_or_default(), read.fold, obj, field, diags);
    }
    let mut rule = path_rule(value, &p.path_type, obj, field, diags)?;
    if read.fold {
        rule.path = rule.path.to_ascii_lowercase();
    }
    Some((rule, Conditions::default()))
}

fn invalid_path(obj: &ObjectRef, field: &str, message: String, fix: &str) -> Diagnostic {
    Diagnostic::error(
        obj,
        &format!("{field}.path"),
        "InvalidPath",
        message,
        fix.into(),
    )
}

/// Whether a path is absolute and free of what could be read two ways: spaces,
/// control characters, `#`, `..` segments (and `?` unless `wildcards`).
fn plain_path(path: &str, wildcards: bool) -> bool {
    path.starts_with('/')
        && !path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || (b == b'?' && !wildcards))
        && !path.split('/').any(|seg| seg == "..")
}

/// An ALB path pattern: `*` any run of characters, `?` exactly one, over the whole
/// path, case-sensitive (unless every path is folded).
fn alb_pattern_path(
    value: &str,
    fold: bool,
    obj: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<(PathRule, Conditions)> {
    const FIX: &str = "ALB path patterns start with /, hold at most 128 characters and no spaces, control characters, # or .. segments; * matches any run of characters, ? exactly one";
    let source = if fold {
        value.to_ascii_lowercase()
    } else {
        value.to_owned()
    };
    if !plain_path(&source, true) {
        diags.push(invalid_path(
            obj,
            field,
            format!("path pattern {value:?} is not a valid ALB path pattern"),
            FIX,
        ));
        return None;
    }
    match path_pattern::PathPattern::new(&source) {
        Ok(pattern) => Some((
            PathRule {
                kind: PathKind::Pattern,
                path: source,
            },
            Conditions {
                path_pattern: Some(pattern),
                ..Conditions::default()
            },
        )),
        Err(e) => {
            diags.push(invalid_path(
                obj,
                field,
                format!("path pattern {value:?} is {e}"),
                FIX,
            ));
            None
        }
    }
}

/// A path under `use-regex-path-match: "true"`: a `/` and then a regular expression
/// that ALB searches the path for (write `^` and `$` to match all of it), with the
/// bounds of every route expression.
fn alb_regex_path(
    value: &str,
    fold: bool,
    obj: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<(PathRule, Conditions)> {
    const FIX: &str = "under use-regex-path-match, write the path as / followed by the expression, e.g. /^/api/(.+)$";
    let Some(expression) = value.strip_prefix('/') else {
        diags.push(invalid_path(
            obj,
            field,
            format!("path {value:?} does not start with /, which comes before the expression"),
            FIX,
        ));
        return None;
    };
    match gateway::bounded_search_regex(expression, fold) {
        Ok(regex) => Some((
            PathRule {
                kind: PathKind::Pattern,
                path: value.to_owned(),
            },
            Conditions {
                path_regex: Some(regex),
                ..Conditions::default()
            },
        )),
        Err(e) => {
            diags.push(invalid_path(
                obj,
                field,
                format!("path expression {expression:?} does not compile: {e}"),
                FIX,
            ));
            None
        }
    }
}

fn path_rule(
    path: Option<&str>,
    path_type: &str,
    obj: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<PathRule> {
    let path = path.unwrap_or("/");
    if !plain_path(path, false) {
        diags.push(invalid_path(
            obj,
            field,
            format!("path {path:?} is not a valid absolute path"),
            "paths start with / and contain no spaces, control characters, ?, # or ..",
        ));
        return None;
    }
    let kind = match path_type {
        "Exact" => PathKind::Exact,
        "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
        other => {
            diags.push(Diagnostic::error(
                obj,
                &format!("{field}.pathType"),
                "InvalidPathType",
                format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific"),
                "set pathType to Prefix or Exact".into(),
            ));
            return None;
        }
    };
    let path = match kind {
        PathKind::Prefix if path.len() > 1 => path.trim_end_matches('/').to_owned(),
        _ => path.to_owned(),
    };
    Some(PathRule {
        kind,
        path: if path.is_empty() { "/".into() } else { path },
    })
}

fn build_table(mut drafts: Vec<RouteDraft>, default_draft: Option<RouteDraft>) -> RouteTable {
    drafts.sort_by_key(|d| precedence::rank(d.path.as_ref(), &d.conditions, d.order));
    let mut table = RouteTable::default();
    let make = |d: RouteDraft, priority: usize, all: &mut Vec<Arc<Route>>| {
        let route = Arc::new(Route {
            index: all.len(),
            ingress: d.ingress,
            host: d.host,
            path: d.path,
            backend: d.backend,
            guards: d.guards,
            https_redirect: d.https_redirect,
            priority,
            conditions: d.conditions,
            filters: d.filters,
            timeout: d.timeout,
            sources: d.sources,
            closed: d.closed,
            alb: d.alb,
        });
        all.push(route.clone());
        route
    };
    let mut all = Vec::new();
    for (i, draft) in drafts.into_iter().enumerate() {
        let key = host_key(draft.host.as_deref());
        let route = make(draft, i + 1, &mut all);
        match key {
            HostKey::Exact(h) => table.exact.entry(h).or_default().push(route),
            HostKey::Wildcard(s) => table.wildcard.entry(s).or_default().push(route),
            HostKey::Any => table.any_host.push(route),
        }
    }
    table.default_backend = default_draft.map(|d| make(d, 0, &mut all));
    table.auth_paths = all
        .iter()
        .flat_map(|r| &r.guards)
        .filter_map(|g| match &g.policy {
            GuardPolicy::Oidc(p) => p.login.then(|| p.logout_path.clone()),
            GuardPolicy::Bearer(_) | GuardPolicy::Broken(_) | GuardPolicy::Pending(_) => None,
        })
        .chain([crate::model::CALLBACK_PATH.to_owned()])
        .collect();
    table.all = all;
    table
}

/// Counts of what a snapshot serves, for logs.
pub fn summary(snapshot: &Snapshot) -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("routes", snapshot.routes.all.len()),
        (
            "certificates",
            snapshot.certs.exact.len() + snapshot.certs.wildcard.len(),
        ),
        ("authRules", snapshot.auth_rules.len()),
    ])
}

#[cfg(test)]
mod alb_routing_tests;
#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod grpc_route_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
use tests as tests_support;
#[cfg(test)]
mod required_tests;
