//! What the data plane serves from: an immutable route table, certificates and auth
//! policies. Built by `compile`, swapped in whole, never changed in place (apart from
//! the load balancer's counters, which start at zero in every snapshot).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::diagnostics::ObjectRef;
use crate::model::{
    AuthRuleSpec, OnUnauthenticatedRequest, TokenEndpointAuthMethod, path_pattern_matches,
};

#[derive(Default)]
pub struct Snapshot {
    pub routes: RouteTable,
    pub certs: CertTable,
    /// Every AuthRule that compiled, with the number of routes it guards.
    pub auth_rules: BTreeMap<ObjectRef, AuthRuleSummary>,
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

    /// The guard that applies to this (canonical) request path, if any.
    pub fn guard_for(&self, path: &str) -> Option<&Guard> {
        self.guards
            .iter()
            .find(|g| g.paths.is_empty() || g.paths.iter().any(|p| path_pattern_matches(p, path)))
    }
}

pub enum Backend {
    Service(Arc<Upstream>),
    /// The route exists but cannot be served (503 with this reason).
    Unavailable {
        service: String,
        reason: String,
    },
}

/// One Service port's endpoints, shared by every route that points at it. Which
/// target comes next, and which failed lately, is the data plane's to keep (by `id`),
/// so it outlives this snapshot.
pub struct Upstream {
    /// `namespace/service:port`, ALB's `target_group_arn` in the access log.
    pub name: String,
    /// `ip:port` or `[ipv6]:port` or `dns-name:port` (ExternalName).
    pub targets: Vec<String>,
    /// Position in `RouteTable::upstreams`.
    pub id: usize,
}

#[derive(Clone)]
pub struct Guard {
    pub rule: ObjectRef,
    /// ALB path patterns; empty guards every path.
    pub paths: Vec<String>,
    pub policy: GuardPolicy,
}

#[derive(Clone)]
pub enum GuardPolicy {
    Oidc(Arc<AuthPolicy>),
    /// The AuthRule is broken: fail closed with 500 and this message.
    Broken(String),
}

/// An AuthRule with everything resolved: defaults applied, the client secret read.
#[derive(Clone, PartialEq)]
pub struct AuthPolicy {
    pub rule: ObjectRef,
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub user_info_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
    pub extra_params: Vec<(String, String)>,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    pub cookie_name: String,
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
    pub spec: AuthRuleSpec,
}

impl std::fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPolicy")
            .field("rule", &self.rule)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
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
        let owner = self.owner(host);
        self.candidates(host)
            .filter(|r| r.path.as_ref().is_some_and(|p| p.matches(path)))
            .chain(&self.default_backend)
            .find(|r| owner.is_none_or(|o| o.admits(&r.ingress.namespace)))
    }

    /// Routes that may serve `host`, in precedence order (default backend aside).
    fn candidates<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Arc<Route>> + 'a {
        let wildcard = host
            .split_once('.')
            .and_then(|(_, suffix)| self.wildcard.get(suffix));
        self.exact
            .get(host)
            .into_iter()
            .chain(wildcard)
            .flatten()
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

    /// Every working OIDC policy, once each (the back channel is not per host).
    pub fn all_policies(&self) -> Vec<Arc<AuthPolicy>> {
        let mut policies: Vec<Arc<AuthPolicy>> = Vec::new();
        for guard in self.all.iter().flat_map(|r| &r.guards) {
            if let GuardPolicy::Oidc(p) = &guard.policy
                && !policies.iter().any(|known| known.rule == p.rule)
            {
                policies.push(p.clone());
            }
        }
        policies
    }

    /// The OIDC policies guarding any route this host can reach: the callback path is
    /// answered per host, whichever route a login started from. Rules of namespaces
    /// the host's owner does not admit never take part in its logins.
    pub fn oidc_policies(&self, host: &str) -> Vec<Arc<AuthPolicy>> {
        let owner = self.owner(host);
        let routes = self
            .candidates(host)
            .chain(&self.default_backend)
            .filter(|r| owner.is_none_or(|o| o.admits(&r.ingress.namespace)));
        let mut policies: Vec<Arc<AuthPolicy>> = Vec::new();
        for guard in routes.flat_map(|r| &r.guards) {
            if let GuardPolicy::Oidc(p) = &guard.policy
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
