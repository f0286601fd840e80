//! What the data plane serves from: an immutable route table, certificates and auth
//! policies. Built by `compile`, swapped in whole, never changed in place (apart from
//! the load balancer's counters, which start at zero in every snapshot).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::diagnostics::ObjectRef;
use crate::model::{AuthRuleSpec, OnUnauthenticatedRequest, TokenEndpointAuthMethod};

#[derive(Default)]
pub struct Snapshot {
    pub routes: RouteTable,
    pub certs: CertTable,
    /// Which hosts ask for client certificates, and how they are checked.
    pub mtls: super::mtls::MtlsTable,
    /// Every AuthRule that compiled, with the number of routes it guards.
    pub auth_rules: BTreeMap<ObjectRef, AuthRuleSummary>,
    /// The sockets of the Gateways' own addresses (`--gateway-addresses`), for the
    /// listeners to open; empty without that flag.
    pub gateway_sockets: Vec<GatewaySocket>,
    /// TLSRoutes by the passthrough socket they are served on.
    pub passthrough: super::tls_route::PassthroughTable,
    /// What each Gateway socket serves over TLS: its listeners' certificates, the
    /// client certificates its port asks for, its listeners' hostnames.
    pub gateway_tls: HashMap<SocketAddr, Arc<super::frontend_tls::SocketTls>>,
}

/// A socket a Gateway listener is served on: its address and port, whether TLS
/// ends there, or whether TLS passes through it still encrypted (TLSRoutes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewaySocket {
    pub addr: SocketAddr,
    pub tls: bool,
    pub passthrough: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthRuleSummary {
    pub generation: Option<i64>,
    pub attached_routes: usize,
    /// Whether it compiled into a working policy (false: its routes answer 500).
    pub usable: bool,
    /// The policy its routes use, when it compiled and guards any.
    pub policy: Option<Arc<AuthPolicy>>,
    /// The named hosts it guards.
    pub hosts: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    Exact,
    Prefix,
    /// An HTTPRoute `RegularExpression` path; the expression itself is in
    /// `Route::conditions.path_regex`.
    Regex,
    /// An Ingress `ImplementationSpecific` path read as ALB reads it: a pattern with
    /// `*` or `?` (in `Route::conditions.path_pattern`), or under
    /// `use-regex-path-match` an expression (in `Route::conditions.path_regex`). Tried
    /// after exact and prefix paths, in the order ALB tries its rules.
    Pattern,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathRule {
    pub kind: PathKind,
    /// For prefixes, without a trailing slash (`/` stays `/`).
    pub path: String,
}

impl PathRule {
    pub fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::Prefix => {
                self.path == "/"
                    || (path.starts_with(&self.path)
                        && matches!(path.as_bytes().get(self.path.len()), None | Some(b'/')))
            }
            PathKind::Regex | PathKind::Pattern => true,
        }
    }
}

pub struct Route {
    /// Position in `RouteTable::all`; the data plane keeps per-route metric handles
    /// under this index.
    pub index: usize,
    pub ingress: ObjectRef,
    pub host: Option<String>,
    /// `None` for an Ingress `defaultBackend`.
    pub path: Option<PathRule>,
    pub backend: Backend,
    pub guards: Vec<Guard>,
    /// The host has a certificate, and plain-HTTP requests are redirected to HTTPS.
    pub https_redirect: bool,
    /// ALB's `matched_rule_priority`: 1.. in match order, 0 for a default backend.
    pub priority: usize,
    /// What else the request must carry (HTTPRoute matches); empty for Ingresses.
    pub conditions: Conditions,
    /// What to change on the way (HTTPRoute filters); empty for Ingresses.
    pub filters: Filters,
    /// HTTPRoute `timeouts.request` or `timeouts.backendRequest`, the shorter: the
    /// whole exchange, else 504.
    pub timeout: Option<std::time::Duration>,
    /// Who may reach the route at all (ALB's `inbound-cidrs`), checked before the
    /// guard and the login endpoints; `None`: everyone.
    pub sources: Option<Arc<SourceAllowList>>,
    /// An access control the route's object asks for that Portcullis cannot give:
    /// the route answers this error and never reaches the backend.
    pub closed: Option<Arc<Closed>>,
    /// What ALB's annotations add: an answer instead of the backend, a redirect to
    /// HTTPS.
    pub alb: AlbRoute,
}

/// What ALB's annotations add to a route besides its path, conditions and backend.
#[derive(Clone, Default)]
pub struct AlbRoute {
    /// `actions.<name>`: a redirect or a fixed response instead of the backend,
    /// answered after the guard, as ALB runs its login before a rule's action.
    pub answer: Option<Arc<super::alb_actions::AlbAnswer>>,
    /// `ssl-redirect`: a plain-HTTP request goes to HTTPS on this port, before any
    /// login or rule.
    pub ssl_redirect: Option<u16>,
    /// `transforms.<name>`: the URL and host the backend receives.
    pub rewrite: Option<Arc<super::alb_transforms::AlbRewrite>>,
}

/// Source addresses allowed to reach a route (ALB's `inbound-cidrs`, a security group
/// in front of the load balancer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceAllowList {
    pub nets: Vec<ipnet::IpNet>,
}

impl SourceAllowList {
    /// Whether the client address is in the list. An IPv4 address carried as
    /// IPv6 (`::ffff:10.0.0.1`) counts as the IPv4 address; no address never passes.
    pub fn admits(&self, client: Option<std::net::IpAddr>) -> bool {
        let Some(ip) = client.map(|ip| ip.to_canonical()) else {
            return false;
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Why a route is closed: the reason (one of the catalogue's) and what the operator
/// must do, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// `AnnotationNotHonoured` or `AnnotationInvalid`.
    pub reason: &'static str,
    pub problem: String,
}

/// The facts of a request that routing reads, taken from the canonical request.
pub struct RouteQuery<'a> {
    pub host: &'a str,
    /// The match key of the canonical path (`RouteTable::match_key`).
    pub path: &'a str,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
    pub query: Option<&'a str>,
    pub tls: bool,
    /// The client connected over HTTPS, here or at a trusted proxy in front (ALB's
    /// listener annotations read this).
    pub https: bool,
    /// The client's address, as the source allow-list reads it (`None`: a trusted
    /// proxy's header named none).
    pub client: Option<IpAddr>,
    /// The Gateway socket the request came in on (`--gateway-addresses`); `None`: the
    /// flag listeners (`--http`, `--https`, `--https-offloaded`).
    pub socket: Option<SocketAddr>,
}

#[derive(Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(regex_lite::Regex),
}

/// Inputs longer than this are not given to a regular expression: with the
/// compile-time limit on program size it bounds the work one request can ask for. A
/// request whose routing depends on such an input is refused (`Unevaluable`), never
/// routed as if the expression had not matched.
pub const MAX_REGEX_INPUT: usize = 2048;

/// Why a request's route cannot be decided: a match that would have to be evaluated
/// before the route is known has an input it cannot read one way only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unevaluable {
    /// Longer than `MAX_REGEX_INPUT`, for a regular expression to read (the path, or
    /// the named header or query parameter).
    TooLong(String),
    /// Present more than once (a query parameter also when another copy's name
    /// differs only in case), or not text for an expression to read: the route and
    /// the backend could read different values.
    Ambiguous(String),
}

impl Unevaluable {
    /// The access log's and error page's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Unevaluable::TooLong(_) => "RouteMatchTooLong",
            Unevaluable::Ambiguous(_) => "RouteMatchAmbiguous",
        }
    }

    /// What could not be read (`path`, `header x-tier`, `query parameter debug`).
    pub fn input(&self) -> &str {
        match self {
            Unevaluable::TooLong(what) | Unevaluable::Ambiguous(what) => what,
        }
    }
}

/// The outcome of one condition: `Ok(matched)`, or why it cannot be told.
pub type Eval = Result<bool, Unevaluable>;

/// Conditions joined by "and", decided as they would be if every one could be
/// evaluated: one that fails decides (no match) even when another cannot be read;
/// otherwise one that cannot be read leaves the whole undecided.
fn all_of(evals: impl IntoIterator<Item = Eval>) -> Eval {
    let mut undecided = None;
    for eval in evals {
        match eval {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                undecided.get_or_insert(e);
            }
        }
    }
    undecided.map_or(Ok(true), Err)
}

fn regex_eval(r: &regex_lite::Regex, value: &str, what: impl FnOnce() -> String) -> Eval {
    if value.len() > MAX_REGEX_INPUT {
        return Err(Unevaluable::TooLong(what()));
    }
    Ok(r.is_match(value))
}

impl ValueMatch {
    /// The value as bytes: an exact match compares them; an expression needs text.
    fn eval(&self, value: &[u8], what: impl FnOnce() -> String) -> Eval {
        match self {
            ValueMatch::Exact(v) => Ok(v.as_bytes() == value),
            ValueMatch::Regex(r) => match std::str::from_utf8(value) {
                Ok(text) => regex_eval(r, text, what),
                Err(_) => Err(Unevaluable::Ambiguous(what())),
            },
        }
    }

    /// The expression or value, to compare two matches.
    pub fn as_str(&self) -> &str {
        match self {
            ValueMatch::Exact(v) => v,
            ValueMatch::Regex(r) => r.as_str(),
        }
    }

    pub fn is_regex(&self) -> bool {
        matches!(self, ValueMatch::Regex(_))
    }
}

#[derive(Clone, Default)]
pub struct Conditions {
    pub path_regex: Option<regex_lite::Regex>,
    /// An ALB path pattern the whole path must match (linear in the path's length,
    /// so never too long to read).
    pub path_pattern: Option<super::path_pattern::PathPattern>,
    pub method: Option<http::Method>,
    /// Every header must be present once with a matching value (names are matched
    /// without regard to case; a header present twice cannot be read one way).
    pub headers: Vec<(http::HeaderName, ValueMatch)>,
    /// Every query parameter must be present once under exactly this name; present
    /// again (under this name or one differing only in case), it cannot be read one
    /// way.
    pub query: Vec<(String, ValueMatch)>,
    /// `Some(true)`: only on TLS connections (every parent listener is HTTPS);
    /// `Some(false)`: only on plain ones.
    pub tls: Option<bool>,
    /// ALB's `conditions.<name>`: every one must hold.
    pub alb: Vec<super::alb_conditions::AlbCondition>,
    /// The Gateway listeners an HTTPRoute's route came through; `None` (Ingresses):
    /// served on the flag listeners only.
    pub gateway: Option<ListenerScope>,
}

/// Where a Gateway route is served: on one socket, and only for request hosts whose
/// most specific listener hostname there is one the route came through (listener
/// isolation: a route of `*.example.com` never serves `abc.example.com` when another
/// listener of the port names `abc.example.com`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerScope {
    /// The Gateway's own socket (`--gateway-addresses`); `None`: the flag listeners.
    pub socket: Option<SocketAddr>,
    /// The hostnames of every listener of the Gateway sharing the port (`None`: a
    /// listener without one), lower case.
    pub siblings: Arc<Vec<Option<String>>>,
    /// The hostnames of the listeners among them the route came through.
    pub via: Vec<Option<String>>,
}

impl ListenerScope {
    /// Whether a request for `host` (lower case, no port or trailing dot) on `socket`
    /// belongs to one of the listeners the route came through.
    pub fn admits(&self, socket: Option<SocketAddr>, host: &str) -> bool {
        socket == self.socket
            && most_specific_listener(&self.siblings, host).is_some_and(|l| self.via.contains(l))
    }
}

/// The listener hostname that takes `host`: the same name, else the wildcard of the
/// longest suffix (a Gateway wildcard covers any number of labels), else a listener
/// without a hostname; `None` when no listener takes it.
pub fn most_specific_listener<'l>(
    listeners: &'l [Option<String>],
    host: &str,
) -> Option<&'l Option<String>> {
    let mut best: Option<(usize, &Option<String>)> = None;
    for listener in listeners {
        let score = match listener.as_deref() {
            None => 0,
            Some(name) if name == host => usize::MAX,
            Some(name) => match name.strip_prefix("*.") {
                Some(suffix)
                    if host.len() > suffix.len() + 1
                        && host.ends_with(suffix)
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.' =>
                {
                    suffix.len() + 1
                }
                _ => continue,
            },
        };
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, listener));
        }
    }
    best.map(|(_, l)| l)
}

impl Conditions {
    /// Whether the request meets every condition, or why that cannot be told.
    pub fn eval(&self, req: &RouteQuery<'_>) -> Eval {
        let fixed = self.reachable_on(req.socket, req.host)
            && self.tls.is_none_or(|tls| tls == req.tls)
            && self.method.as_ref().is_none_or(|m| m == req.method)
            && self
                .path_pattern
                .as_ref()
                .is_none_or(|p| p.matches(req.path));
        if !fixed {
            return Ok(false);
        }
        let path = self
            .path_regex
            .as_ref()
            .map(|r| regex_eval(r, req.path, || "path".into()));
        let headers = self
            .headers
            .iter()
            .map(|(name, want)| header_eval(req.headers, name, want));
        let query = (!self.query.is_empty()).then(|| query_pairs(req.query));
        let query = self
            .query
            .iter()
            .map(|(name, want)| query_eval(query.as_deref().unwrap_or_default(), name, want));
        let alb = self.alb.iter().map(|c| c.eval(req));
        all_of(path.into_iter().chain(headers).chain(query).chain(alb))
    }

    /// Whether a request for `host` coming in on `socket` may reach the route at all:
    /// an Ingress's on the flag listeners, a Gateway route through its own listeners.
    pub fn reachable_on(&self, socket: Option<SocketAddr>, host: &str) -> bool {
        match &self.gateway {
            None => socket.is_none(),
            Some(scope) => scope.admits(socket, host),
        }
    }

    /// Gateway API precedence after the path: a method, then more headers, then
    /// more query parameters.
    pub(crate) fn rank(&self) -> (bool, usize, usize) {
        (self.method.is_some(), self.headers.len(), self.query.len())
    }
}

fn header_eval(headers: &http::HeaderMap, name: &http::HeaderName, want: &ValueMatch) -> Eval {
    let what = || format!("header {name}");
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(false),
        (Some(v), None) => want.eval(v.as_bytes(), what),
        (Some(_), Some(_)) => Err(Unevaluable::Ambiguous(what())),
    }
}

type QueryPair<'q> = (std::borrow::Cow<'q, str>, std::borrow::Cow<'q, str>);

fn query_pairs(query: Option<&str>) -> Vec<QueryPair<'_>> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).collect()
}

/// A query parameter match. Names are case-sensitive, as Gateway API says (and its
/// conformance tests): absent under exactly its name is no match; present once is
/// read; present again, under the same name or one differing only in case (which
/// ASP.NET and others read as the same parameter), it cannot be read one way.
fn query_eval(pairs: &[QueryPair<'_>], name: &str, want: &ValueMatch) -> Eval {
    let what = || format!("query parameter {name}");
    let exact = pairs.iter().filter(|(k, _)| k == name).count();
    let alike = pairs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .count();
    match (exact, alike) {
        (0, _) => Ok(false),
        (1, 1) => match pairs.iter().find(|(k, _)| k == name) {
            Some((_, value)) => want.eval(value.as_bytes(), what),
            None => Ok(false),
        },
        _ => Err(Unevaluable::Ambiguous(what())),
    }
}

#[derive(Clone, Default)]
pub struct HeaderEdits {
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

#[derive(Clone)]
pub enum PathModifier {
    Full(String),
    /// Replaces the matched path prefix (`prefix`) with `with`.
    Prefix {
        prefix: String,
        with: String,
    },
}

impl PathModifier {
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathModifier::Full(p) => p.clone(),
            PathModifier::Prefix { prefix, with } => {
                let rest = path.get(prefix.len()..).unwrap_or("");
                let rest = if prefix == "/" { path } else { rest };
                let with = with.trim_end_matches('/');
                match (with.is_empty(), rest.is_empty()) {
                    (true, true) => "/".into(),
                    (true, false) => format!("/{}", rest.trim_start_matches('/')),
                    (false, true) => with.to_owned(),
                    (false, false) => format!("{with}/{}", rest.trim_start_matches('/')),
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: u16,
}

#[derive(Clone)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Clone, Default)]
pub struct Filters {
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    /// The `CORS` filter: preflights it answers, headers it gives the backend's answer.
    pub cors: Option<Arc<super::cors::Cors>>,
    /// `RequestMirror` filters: a copy of each request, after the guard, to each.
    pub mirrors: Vec<Arc<super::mirror::Mirror>>,
    /// The rule's `retry`.
    pub retry: Option<super::retry::Retry>,
}

impl Filters {
    /// Whether a request's body is worth holding whole (when small) before it is
    /// sent: a mirror needs a copy, a retry needs to send it again.
    pub fn wants_body_copy(&self) -> bool {
        !self.mirrors.is_empty() || self.retry.is_some()
    }
}

impl Route {
    /// A short label for metrics and logs: `host/path` or `*/path`.
    pub fn label(&self) -> String {
        let host = self.host.as_deref().unwrap_or("*");
        match &self.path {
            Some(p) => format!("{host}{}", p.path),
            None => format!("{host} default"),
        }
    }

    /// The claim headers of every AuthRule guarding this route: removed from each of
    /// its requests, whatever path and guard apply, so no client sets one.
    pub fn claim_header_names(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.guards
            .iter()
            .filter_map(|g| match &g.policy {
                GuardPolicy::Oidc(p) => Some(p.claim_headers.iter().map(|c| &c.name)),
                _ => None,
            })
            .flatten()
    }

    /// The guard that applies to this (canonical) request path, if any.
    pub fn guard_for(&self, path: &str) -> Option<&Guard> {
        self.guards
            .iter()
            .find(|g| g.paths.is_empty() || g.paths.iter().any(|p| p.matches(path)))
    }
}

#[derive(Clone)]
pub enum Backend {
    Service(Arc<Upstream>),
    /// HTTPRoute `backendRefs` with weights: each request goes to one, in proportion.
    /// A share whose backend is unavailable answers as that backend would (500/503).
    Split(Vec<(u32, Backend)>),
    /// A backendRef with a RequestHeaderModifier of its own: the edits apply, after the
    /// rule's, only to the requests this backend is picked for. `backend` is never a
    /// split.
    Edited {
        headers: HeaderEdits,
        backend: Box<Backend>,
    },
    /// The route's reference is invalid (500, as Gateway API asks).
    Invalid {
        reason: String,
    },
    /// The route exists but cannot be served (503 with this reason).
    Unavailable {
        service: String,
        reason: String,
    },
}

/// One Service port's endpoints, shared by every route that points at it. Which
/// target comes next, and which failed lately, is the data plane's to keep (by `id`),
/// so it outlives this snapshot; so are the targets themselves once an EndpointSlice
/// changes (`DataPlane::update_endpoints` swaps them without a new snapshot).
pub struct Upstream {
    /// `namespace/service:port`, ALB's `target_group_arn` in the access log.
    pub name: String,
    /// `ip:port` or `[ipv6]:port` or `dns-name:port` (ExternalName), as compiled; empty
    /// when the Service has no ready endpoints (503 until it has).
    pub targets: Vec<String>,
    /// Where the targets come from when they follow EndpointSlices; `None` for an
    /// ExternalName Service.
    pub endpoints: Option<EndpointSource>,
    /// Position in `RouteTable::upstreams`.
    pub id: usize,
    /// How the pods are spoken to: HTTP/1.1 in the clear unless the Service asks.
    pub transport: Transport,
}

/// The protocol to a Service's pods (ALB's target group protocol and version).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transport {
    /// `Some`: TLS to the pods (`backend-protocol: HTTPS`).
    pub tls: Option<BackendTls>,
    pub version: BackendVersion,
}

/// The HTTP version to the pods (`backend-protocol-version`, `appProtocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendVersion {
    #[default]
    Http1,
    /// HTTP/2: negotiated by ALPN over TLS, prior knowledge (h2c) in the clear.
    Http2,
    /// gRPC: HTTP/2 as above; Portcullis's own refusals answer in gRPC's terms.
    Grpc,
}

impl BackendVersion {
    pub fn is_h2(self) -> bool {
        self != Self::Http1
    }
}

/// TLS to the pods. As ALB, the pods' certificate is not checked unless a CA bundle
/// is named: pods commonly serve self-signed certificates, and no SNI is sent (the
/// pods are addressed by IP).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendTls {
    pub verify: Option<VerifyBackend>,
    /// The certificate presented to the pods (a Gateway's
    /// `spec.tls.backend.clientCertificateRef`).
    pub client: Option<ClientIdentity>,
}

/// Check the pods' certificate: it must chain to one of these CAs and name this server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VerifyBackend {
    /// PEM, as the Secret's `ca.crt` holds it (checked to parse when compiled); empty
    /// with `system_roots`.
    pub ca_pem: Arc<str>,
    /// The CAs this system trusts instead (BackendTLSPolicy's
    /// `wellKnownCACertificates: System`).
    pub system_roots: bool,
    /// The name sent as SNI, and the name the certificate must carry unless
    /// `subject_alt_names` is set.
    pub server_name: String,
    /// When not empty, the certificate must carry one of these (and `server_name` is
    /// only the SNI), as BackendTLSPolicy's `subjectAltNames` says.
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// A name a pod's certificate may carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS name (a wildcard in the certificate matches as usual).
    Dns(String),
    /// A URI, compared exactly (a SPIFFE ID, say).
    Uri(String),
}

/// A client certificate and its key, PEM. The key never shows in `Debug` (which keys
/// upstreams by their transport and may be logged); the certificate names it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub cert_pem: Arc<str>,
    pub key_pem: Arc<str>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The Service port whose EndpointSlices give an upstream its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSource {
    pub namespace: String,
    pub service: String,
    /// The Service port's name, which EndpointSlice ports are matched by ("" unnamed).
    pub port_name: String,
}

#[derive(Clone)]
pub struct Guard {
    pub rule: ObjectRef,
    /// The HTTPRoute rule or Gateway listener the AuthRule names (`sectionName`).
    pub section: Option<String>,
    /// ALB path patterns, matched in time linear in the path; empty guards every path.
    pub paths: Vec<super::path_pattern::PathPattern>,
    pub policy: GuardPolicy,
}

#[derive(Clone)]
pub enum GuardPolicy {
    Oidc(Arc<AuthPolicy>),
    /// Bearer tokens only, no login (ALB's `jwt-validation` without `auth-type`): a
    /// request without a valid token gets 401.
    Bearer(Arc<super::bearer::BearerPolicy>),
    /// The AuthRule is broken: fail closed with 500 and this message.
    Broken(String),
    /// The AuthRules the route's object requires have not attached yet (or it requires
    /// one and has none): fail closed with 503 and this message.
    Pending(String),
}

/// An AuthRule with everything resolved: defaults applied, the client secret read.
#[derive(Clone, PartialEq)]
pub struct AuthPolicy {
    pub rule: ObjectRef,
    /// Browser logins (`spec.oidc`). Without them the rule takes bearer tokens only:
    /// `issuer` is the tokens' and there is no client, session or logout.
    pub login: bool,
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub user_info_endpoint: Option<String>,
    pub client_id: String,
    /// The client secret, key or ServiceAccount token the token endpoint is given.
    pub credential: crate::auth::client_assertion::ClientCredential,
    /// Resource indicators (RFC 8707) sent with the authorization and token requests.
    pub resource: Vec<String>,
    pub scope: String,
    pub extra_params: Vec<(String, String)>,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    pub cookie_name: String,
    /// `spec.session.cookieDomain` (lower case, no leading dot): sessions are bound to
    /// the namespace, issuer and client instead of the host, and shared under it.
    pub cookie_domain: Option<String>,
    pub session_timeout_secs: u64,
    pub on_unauthenticated: OnUnauthenticatedRequest,
    pub logout_path: String,
    pub post_logout_redirect_uris: Vec<String>,
    /// Forward CORS preflights without a session (`spec.cors.allowPreflight`).
    pub allow_preflight: bool,
    /// Who may pass once logged in (`spec.authorization`); `None`: every user.
    pub authorization: Option<Arc<super::authorization::Authorization>>,
    /// Bearer tokens accepted besides sessions (`spec.bearer`).
    pub bearer: Option<Arc<super::bearer::BearerPolicy>>,
    /// The claims a session's `x-amzn-oidc-data` carries
    /// (`spec.identityHeaders.claimsFrom`).
    pub data_claims: crate::model::ClaimsFrom,
    /// Plain headers made from claims (`spec.claimHeaders`).
    pub claim_headers: Vec<super::claim_headers::ClaimHeader>,
    pub spec: AuthRuleSpec,
}

impl std::fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPolicy")
            .field("rule", &self.rule)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// The namespace a host belongs to (that of its oldest Ingress) and the namespaces it
/// shares the host with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostOwner {
    pub namespace: String,
    pub shared_with: SharedWith,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SharedWith {
    #[default]
    Nobody,
    Namespaces(Vec<String>),
    Everyone,
}

impl HostOwner {
    pub fn admits(&self, namespace: &str) -> bool {
        self.namespace == namespace
            || match &self.shared_with {
                SharedWith::Nobody => false,
                SharedWith::Namespaces(list) => list.iter().any(|n| n == namespace),
                SharedWith::Everyone => true,
            }
    }
}

#[derive(Default)]
pub struct RouteTable {
    pub(crate) exact: HashMap<String, Vec<Arc<Route>>>,
    /// Keyed by the suffix after `*.`.
    pub(crate) wildcard: HashMap<String, Vec<Arc<Route>>>,
    pub(crate) any_host: Vec<Arc<Route>>,
    pub(crate) default_backend: Option<Arc<Route>>,
    pub all: Vec<Arc<Route>>,
    /// The callback and every logout path: the few paths answered by the login itself.
    pub(crate) auth_paths: HashSet<String>,
    /// Who each named host (`app.example.com`, `*.example.com`) belongs to. Routes of
    /// a wildcard host, routes without a host and the default backend serve a named
    /// host only for the namespaces its owner admits. Empty when hosts may be shared.
    pub(crate) owners: HashMap<String, HostOwner>,
    /// Every upstream a route points at, by `Upstream::id`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Paths are matched in lower case (route paths, patterns and logout paths were
    /// folded when compiled).
    pub(crate) fold_case: bool,
}

impl RouteTable {
    /// Host (lower case, no port) then the longest matching path; rules for the exact
    /// host first, then a wildcard host, then rules without a host, then the default
    /// backend, each only as far as the host's owner admits its namespace.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let headers = http::HeaderMap::new();
        self.find_for(&RouteQuery {
            host,
            path,
            method: &http::Method::GET,
            headers: &headers,
            query: None,
            tls: false,
            https: false,
            client: None,
            socket: None,
        })
        .ok()
        .flatten()
    }

    /// As `find`, with the HTTPRoute conditions (method, headers, query, listener
    /// protocol) checked too. The first route in precedence order whose path and
    /// conditions match serves; when a route before it cannot be evaluated (an input
    /// too long, or one that can be read two ways) the request has no route that can
    /// be told apart from a guess, and the answer is `Err`, never the next route.
    pub fn find_for(&self, req: &RouteQuery<'_>) -> Result<Option<&Arc<Route>>, Unevaluable> {
        let owner = self.owner(req.host);
        let candidates = self
            .candidates(req.host)
            .filter(|r| r.path.as_ref().is_some_and(|p| p.matches(req.path)))
            .filter(|r| owner.is_none_or(|o| o.admits(&r.ingress.namespace)));
        for route in candidates {
            if route.conditions.eval(req)? {
                return Ok(Some(route));
            }
        }
        let default = self
            .default_backend
            .as_ref()
            .filter(|r| owner.is_none_or(|o| o.admits(&r.ingress.namespace)));
        match default {
            Some(route) if route.conditions.eval(req)? => Ok(Some(route)),
            _ => Ok(None),
        }
    }

    /// Routes that may serve `host`, in precedence order (default backend aside): the
    /// exact host, then wildcards from the longest suffix. An Ingress wildcard covers
    /// one label (`*.example.com` serves `a.example.com`, not `a.b.example.com`), a
    /// Gateway API one any number, as each specification says.
    fn candidates<'a, 'h>(
        &'a self,
        host: &'h str,
    ) -> impl Iterator<Item = &'a Arc<Route>> + use<'a, 'h> {
        let suffixes = std::iter::successors(host.split_once('.').map(|(_, s)| s), |s| {
            s.split_once('.').map(|(_, rest)| rest)
        });
        let wildcard = suffixes.enumerate().flat_map(move |(depth, suffix)| {
            self.wildcard
                .get(suffix)
                .into_iter()
                .flatten()
                .filter(move |r| {
                    depth == 0 || matches!(r.ingress.kind.as_str(), "HTTPRoute" | "GRPCRoute")
                })
        });
        self.exact
            .get(host)
            .into_iter()
            .flatten()
            .chain(wildcard)
            .chain(&self.any_host)
    }

    /// The owner of the exact host, else of the wildcard host that covers it.
    fn owner(&self, host: &str) -> Option<&HostOwner> {
        self.owners.get(host).or_else(|| {
            host.split_once('.')
                .and_then(|(_, suffix)| self.owners.get(&format!("*.{suffix}")))
        })
    }

    /// The form of a request path that routes, guards and the login paths are
    /// matched against.
    pub fn match_key<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        if self.fold_case {
            std::borrow::Cow::Owned(path.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(path)
        }
    }

    /// Whether this path may belong to the login itself on some host (cheap, checked
    /// for every request before the per-host lookup).
    pub fn is_auth_path(&self, path: &str) -> bool {
        self.auth_paths.contains(path)
    }

    /// Every working policy with logins, once each (the back channel is not per host).
    pub fn all_policies(&self) -> Vec<Arc<AuthPolicy>> {
        let mut policies: Vec<Arc<AuthPolicy>> = Vec::new();
        for guard in self.all.iter().flat_map(|r| &r.guards) {
            if let GuardPolicy::Oidc(p) = &guard.policy
                && p.login
                && !policies.iter().any(|known| known.rule == p.rule)
            {
                policies.push(p.clone());
            }
        }
        policies
    }

    /// The policies with logins guarding any route this host can reach: the callback path is
    /// answered per host, whichever route a login started from. Rules of namespaces
    /// the host's owner does not admit never take part in its logins.
    ///
    /// When the host has routes of its own (not by wildcard), wildcard, host-less and
    /// default routes take part only for those routes' namespaces: another namespace's
    /// catch-all route must not answer this host's callback or logout path.
    ///
    /// Routes whose source allow-list refuses `client` take no part either: their
    /// login endpoints are as closed to it as the routes themselves; nor do routes
    /// served on another socket or through another listener than `socket` and `host`
    /// reach.
    pub fn oidc_policies(
        &self,
        host: &str,
        client: Option<IpAddr>,
        socket: Option<SocketAddr>,
    ) -> Vec<Arc<AuthPolicy>> {
        let owner = self.owner(host);
        let named: Vec<&str> = self
            .exact
            .get(host)
            .into_iter()
            .flatten()
            .filter(|r| r.conditions.reachable_on(socket, host))
            .map(|r| r.ingress.namespace.as_str())
            .collect();
        let routes = self
            .candidates(host)
            .chain(&self.default_backend)
            .filter(|r| owner.is_none_or(|o| o.admits(&r.ingress.namespace)))
            .filter(|r| named.is_empty() || named.contains(&r.ingress.namespace.as_str()))
            .filter(|r| r.sources.as_ref().is_none_or(|s| s.admits(client)))
            .filter(|r| r.conditions.reachable_on(socket, host))
            .filter(|r| r.closed.is_none());
        let mut policies: Vec<Arc<AuthPolicy>> = Vec::new();
        for guard in routes.flat_map(|r| &r.guards) {
            if let GuardPolicy::Oidc(p) = &guard.policy
                && p.login
                && !policies.iter().any(|known| known.rule == p.rule)
            {
                policies.push(p.clone());
            }
        }
        policies
    }
}

/// A certificate with the Secret it came from (the access log's `chosen_cert_arn`).
pub struct ServerCert {
    pub key: Arc<CertifiedKey>,
    pub source: String,
}

#[derive(Default)]
pub struct CertTable {
    pub(crate) exact: HashMap<String, Arc<ServerCert>>,
    pub(crate) wildcard: HashMap<String, Arc<ServerCert>>,
    pub(crate) default: Option<Arc<ServerCert>>,
}

impl CertTable {
    /// Exact name, then a wildcard certificate, then the default certificate.
    pub fn find(&self, server_name: Option<&str>) -> Option<&Arc<ServerCert>> {
        let by_name = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                name.split_once('.')
                    .and_then(|(_, suffix)| self.wildcard.get(suffix))
            })
        });
        by_name.or(self.default.as_ref())
    }

    pub fn covers(&self, host: &str) -> bool {
        self.exact.contains_key(host)
            || host
                .split_once('.')
                .is_some_and(|(_, suffix)| self.wildcard.contains_key(suffix))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}
