//! Which rule a request reaches, as far as compile can tell: the order routes are
//! tried in, and the guarded rules an open rule of the same host can take requests
//! from. Pure functions over the drafts; the data plane only reads the order.

use std::cmp::Reverse;
use std::collections::HashMap;

use super::RouteDraft;
use super::snapshot::{Backend, Conditions, PathKind, PathRule, ValueMatch};
use crate::diagnostics::{Diagnostic, ObjectRef};

/// The order routes are tried in, smallest first: exact paths (an exact path only
/// ever matches itself, so this equals "longest first, Exact on a tie"), then
/// regular expressions (the longest expression first), then the longest prefix, as
/// Envoy Gateway orders them; then Gateway API's method, header and query counts.
/// Then ALB path patterns (and ALB expressions) in `RuleOrder`, as AWS's controller
/// orders the rules of one Ingress (exact, prefix, then `ImplementationSpecific` as
/// written); then the default backend. Sorting is stable: on a tie the older object
/// goes first.
pub(crate) type Rank = (
    u8,
    Reverse<usize>,
    RuleOrder,
    Reverse<bool>,
    Reverse<usize>,
    Reverse<usize>,
);

/// Where an ALB rule comes in AWS's controller's order: the Ingress's `group.order`,
/// then the Ingress's place among those of that order (by namespace and name), then
/// the path's place in the Ingress as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RuleOrder {
    pub group_order: i32,
    pub ingress: usize,
    pub path: usize,
}

pub(crate) fn rank(path: Option<&PathRule>, conditions: &Conditions, order: RuleOrder) -> Rank {
    let (kind, len, order) = match path {
        Some(p) if p.kind == PathKind::Exact => (0, 0, RuleOrder::default()),
        Some(p) if p.kind == PathKind::Regex => (1, p.path.len(), RuleOrder::default()),
        Some(p) if p.kind == PathKind::Prefix => (2, p.path.len(), RuleOrder::default()),
        Some(_) => (3, 0, order),
        None => (4, 0, RuleOrder::default()),
    };
    let (method, headers, query) = conditions.rank();
    (
        kind,
        Reverse(len),
        order,
        Reverse(method),
        Reverse(headers),
        Reverse(query),
    )
}

/// The conditions of a rule as text, so two rules of one path with different
/// conditions (a method, a header, the protocol an action is left off) are not the
/// same rule.
pub(crate) fn condition_key(c: &Conditions) -> String {
    let values = |list: &[(String, ValueMatch)]| {
        list.iter()
            .map(|(n, v)| format!("{n}={}{}", v.is_regex(), v.as_str()))
            .collect::<Vec<_>>()
    };
    let headers: Vec<(String, ValueMatch)> = c
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        c.gateway,
        c.tls,
        c.method,
        values(&headers),
        values(&c.query),
        c.alb
    )
}

/// One rule as the shadow check sees it.
#[derive(Clone, Copy)]
pub(crate) struct RuleView<'a> {
    pub object: &'a ObjectRef,
    pub field: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a PathRule,
    pub conditions: &'a Conditions,
}

/// How an open rule takes requests meant for a guarded one, if it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shadow {
    /// Same path and host, tried first (more conditions, or older): a request that
    /// meets both rules' conditions goes to the open rule.
    TriedFirst,
    /// Same host, a path covering the guarded one (an ALB pattern such as `/*`), tried
    /// first: a request to the guarded path that meets both rules' conditions goes to
    /// the open rule.
    CoversFirst,
    /// The open rule's path covers the guarded one's, and the guarded rule's
    /// conditions (method, headers, query, listener protocol) are not all the open
    /// rule's: a request to the guarded path that fails them goes to the open rule.
    FallsThrough,
}

/// Whether `open` can take requests that `guarded` was meant to guard. `open_first`:
/// the open rule comes before the guarded one in the route order.
pub(crate) fn shadow(open: RuleView, guarded: RuleView, open_first: bool) -> Option<Shadow> {
    let same_host = open.host == guarded.host;
    if same_host && open_first && compatible(open.conditions, guarded.conditions) {
        if open.path == guarded.path {
            return Some(Shadow::TriedFirst);
        }
        if covers_path(open, guarded) {
            return Some(Shadow::CoversFirst);
        }
    }
    let reaches = same_host || reaches_host(open, guarded);
    (reaches && covers_path(open, guarded) && !implies(open.conditions, guarded.conditions))
        .then_some(Shadow::FallsThrough)
}

/// A rule without a host, or with a wildcard covering the guarded host, serves the
/// guarded host after its own rules: counted within one namespace only, so no
/// status tells one tenant about another's rules.
fn reaches_host(open: RuleView, guarded: RuleView) -> bool {
    if open.object.namespace != guarded.object.namespace {
        return false;
    }
    match (open.host, guarded.host) {
        (None, _) => true,
        (Some(o), Some(g)) => o.strip_prefix("*.").is_some_and(|suffix| {
            g.strip_suffix(suffix)
                .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
        }),
        (Some(_), None) => false,
    }
}

/// Every path the guarded rule matches, the open rule matches too.
fn covers_path(open: RuleView, guarded: RuleView) -> bool {
    let (o, g) = (open.path, guarded.path);
    match (o.kind, g.kind) {
        (_, PathKind::Pattern) | (PathKind::Pattern, _) => covers_alb(open, guarded),
        (PathKind::Prefix, PathKind::Regex) => o.path == "/",
        (PathKind::Prefix, _) => o.matches(&g.path),
        (PathKind::Exact, PathKind::Exact) => o.path == g.path,
        (PathKind::Regex, PathKind::Regex) => o.path == g.path,
        (PathKind::Regex, PathKind::Exact) => open
            .conditions
            .path_regex
            .as_ref()
            .is_some_and(|r| r.is_match(&g.path)),
        _ => false,
    }
}

/// `covers_path` where either rule is an ALB path (pattern or expression), as far as
/// can be told without comparing two expressions: the same path; a pattern that is a
/// literal start and one final `*` over paths that all begin with that start; an
/// exact path the other matches; a prefix over patterns that start inside it.
fn covers_alb(open: RuleView, guarded: RuleView) -> bool {
    let (o, g) = (open.path, guarded.path);
    if o.kind == g.kind && o.path == g.path {
        return true;
    }
    // The literal start every path the guarded rule matches has, when it is known.
    let starts_with = match g.kind {
        PathKind::Exact | PathKind::Prefix => Some(g.path.as_str()),
        PathKind::Pattern => guarded
            .conditions
            .path_pattern
            .as_ref()
            .map(|p| p.literal_head()),
        PathKind::Regex => None,
    };
    match o.kind {
        PathKind::Prefix => {
            o.path == "/" || starts_with.is_some_and(|s| s.starts_with(&format!("{}/", o.path)))
        }
        PathKind::Pattern => {
            let everything_after = open
                .conditions
                .path_pattern
                .as_ref()
                .and_then(|p| p.as_str().strip_suffix('*'))
                .filter(|start| !start.contains(['*', '?']));
            let exact_match = g.kind == PathKind::Exact && open_matches(open, &g.path);
            exact_match
                || everything_after.is_some_and(|start| {
                    start.is_empty()
                        || start == "/"
                        || starts_with.is_some_and(|s| s.starts_with(start))
                })
        }
        PathKind::Exact | PathKind::Regex => false,
    }
}

/// Whether an ALB rule's pattern or expression matches this path.
fn open_matches(open: RuleView, path: &str) -> bool {
    let c = open.conditions;
    match (&c.path_pattern, &c.path_regex) {
        (Some(p), _) => p.matches(path),
        (None, Some(r)) => r.is_match(path),
        (None, None) => false,
    }
}

/// Every request meeting `a` meets `b` (as far as can be told without evaluating
/// expressions: the same expression counts as the same condition).
fn implies(a: &Conditions, b: &Conditions) -> bool {
    let headers = b
        .headers
        .iter()
        .all(|(n, v)| a.headers.iter().any(|(m, w)| m == n && same_match(v, w)));
    let query = b
        .query
        .iter()
        .all(|(n, v)| a.query.iter().any(|(m, w)| m == n && same_match(v, w)));
    b.alb.iter().all(|c| a.alb.contains(c))
        && a.gateway == b.gateway
        && b.tls.is_none_or(|t| a.tls == Some(t))
        && b.method
            .as_ref()
            .is_none_or(|m| a.method.as_ref() == Some(m))
        && headers
        && query
}

/// Some request can meet both: no condition of one rules out the other's.
fn compatible(a: &Conditions, b: &Conditions) -> bool {
    let differ =
        |x: &ValueMatch, y: &ValueMatch| !x.is_regex() && !y.is_regex() && x.as_str() != y.as_str();
    let clash_headers = a
        .headers
        .iter()
        .any(|(n, v)| b.headers.iter().any(|(m, w)| n == m && differ(v, w)));
    let clash_query = a
        .query
        .iter()
        .any(|(n, v)| b.query.iter().any(|(m, w)| n == m && differ(v, w)));
    let both = |x: Option<bool>, y: Option<bool>| x.zip(y).is_none_or(|(x, y)| x == y);
    // Conservative: the same listeners, or a request may meet both.
    let socket = |c: &Conditions| c.gateway.as_ref().and_then(|g| g.socket);
    both(a.tls, b.tls)
        && socket(a) == socket(b)
        && a.method
            .as_ref()
            .zip(b.method.as_ref())
            .is_none_or(|(x, y)| x == y)
        && !clash_headers
        && !clash_query
}

fn same_match(a: &ValueMatch, b: &ValueMatch) -> bool {
    a.is_regex() == b.is_regex() && a.as_str() == b.as_str()
}

/// A warning for each guarded rule an open rule of the same host can take requests
/// from, on the guarded rule's object and field. `drafts` are in route order.
pub(super) fn shadowed_guards(drafts: &[RouteDraft]) -> Vec<Diagnostic> {
    let views: Vec<(usize, RuleView, Exposure)> = drafts
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((i, view(d)?, exposure(d))))
        .collect();
    let of = |e: Exposure| {
        views
            .iter()
            .filter(move |(_, _, x)| *x == e)
            .map(|(i, v, _)| (*i, *v))
    };
    let open = OpenRules::new(of(Exposure::Open));
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Diagnostic> = Vec::new();
    for (gi, guarded) in of(Exposure::Guarded) {
        for (oi, open) in open.that_can_reach(guarded) {
            let Some(how) = shadow(open, guarded, oi < gi) else {
                continue;
            };
            // One warning per pair of rules, whatever hosts they share.
            if seen.insert((guarded.object, guarded.field, open.object, open.field)) {
                out.push(diagnostic(open, guarded, how));
            }
        }
    }
    out
}

/// The open rules, indexed by what `shadow` needs of a pair: the same host, or (in the
/// guarded rule's namespace) no host or a wildcard. Trying every open rule against
/// every guarded one made the check quadratic: 1,000 AuthRules over 10,000 Ingresses
/// was 9 million comparisons, most of a compile.
struct OpenRules<'a> {
    by_host: HashMap<Option<&'a str>, Vec<(usize, RuleView<'a>)>>,
    /// Rules without a host or with a wildcard host, by namespace.
    reaching: HashMap<&'a str, Vec<(usize, RuleView<'a>)>>,
}

impl<'a> OpenRules<'a> {
    fn new(open: impl Iterator<Item = (usize, RuleView<'a>)>) -> Self {
        let mut rules = Self {
            by_host: HashMap::new(),
            reaching: HashMap::new(),
        };
        for (i, rule) in open {
            rules.by_host.entry(rule.host).or_default().push((i, rule));
            if rule.host.is_none_or(|h| h.starts_with("*.")) {
                let namespace = rule.object.namespace.as_str();
                rules.reaching.entry(namespace).or_default().push((i, rule));
            }
        }
        rules
    }

    /// Every open rule `shadow` could pair with `guarded`, once each, in route order.
    fn that_can_reach(&self, guarded: RuleView<'a>) -> Vec<(usize, RuleView<'a>)> {
        let same_host = self.by_host.get(&guarded.host).into_iter().flatten();
        let namespace = guarded.object.namespace.as_str();
        let reaching = self.reaching.get(namespace).into_iter().flatten();
        let mut candidates: Vec<(usize, RuleView<'a>)> =
            same_host.chain(reaching).copied().collect();
        candidates.sort_by_key(|(i, _)| *i);
        candidates.dedup_by_key(|(i, _)| *i);
        candidates
    }
}

/// A warning for each ALB path pattern (or expression) that an earlier rule of the
/// same host takes every request from: such a rule never serves, on ALB either, and
/// the warning says the order rules are tried in. `drafts` are in route order.
pub(super) fn unreachable_patterns(drafts: &[RouteDraft]) -> Vec<Diagnostic> {
    let views: Vec<RuleView> = drafts.iter().filter_map(view).collect();
    let mut out = Vec::new();
    for (j, later) in views.iter().enumerate() {
        if later.path.kind != PathKind::Pattern {
            continue;
        }
        let earlier = views[..j].iter().find(|e| {
            e.host == later.host
                && covers_path(**e, *later)
                && implies(later.conditions, e.conditions)
        });
        if let Some(e) = earlier {
            out.push(unreachable(*e, *later));
        }
    }
    out
}

fn unreachable(earlier: RuleView, later: RuleView) -> Diagnostic {
    let other = if earlier.object == later.object {
        format!("{} of this {}", earlier.field, earlier.object.kind)
    } else {
        format!("{} of {}", earlier.field, earlier.object)
    };
    Diagnostic::warning(
        later.object,
        later.field,
        "PathUnreachable",
        format!(
            "path {} on host {} is never reached: {other}, path {}, is tried first and takes every request it matches. Ingress paths are tried in the order AWS's load balancer controller gives ALB rules: Exact paths, then Prefix paths (longest first), then ImplementationSpecific patterns as written (across Ingresses by group.order, then namespace and name)",
            later.path.path,
            later.host.unwrap_or("any host"),
            earlier.path.path
        ),
        "write the more specific pattern first, or remove this path".into(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Exposure {
    Guarded,
    /// Forwards without a login.
    Open,
    /// Answers 500 (or only redirects): takes nothing to a backend.
    Closed,
}

fn exposure(d: &RouteDraft) -> Exposure {
    match (&d.backend, d.guards.is_empty()) {
        (_, false) => Exposure::Guarded,
        (Backend::Invalid { .. }, true) => Exposure::Closed,
        (_, true) => Exposure::Open,
    }
}

fn view(d: &RouteDraft) -> Option<RuleView<'_>> {
    Some(RuleView {
        object: &d.ingress,
        field: &d.field,
        host: d.host.as_deref(),
        path: d.path.as_ref()?,
        conditions: &d.conditions,
    })
}

fn diagnostic(open: RuleView, guarded: RuleView, how: Shadow) -> Diagnostic {
    let host = guarded.host.unwrap_or("any host");
    let other = if open.object == guarded.object {
        format!("{} of this {}", open.field, open.object.kind)
    } else {
        format!("{} of {}", open.field, open.object)
    };
    let message = match how {
        Shadow::TriedFirst => format!(
            "this rule has an AuthRule, but {other} has no AuthRule, the same path {} on host {host}, and is tried first: a request meeting both rules' conditions reaches it without a login",
            guarded.path.path
        ),
        Shadow::CoversFirst => format!(
            "this rule has an AuthRule, but {other} has no AuthRule, a path {} that covers {} on host {host}, and is tried first (ALB path patterns are tried in the order written): every request to this path meeting both rules' conditions reaches it without a login",
            open.path.path, guarded.path.path
        ),
        Shadow::FallsThrough => format!(
            "this rule has an AuthRule, but {other} has no AuthRule and its path {} also covers {} on host {host}: a request to this path that does not meet this rule's method, header, query or protocol conditions reaches it without a login",
            open.path.path, guarded.path.path
        ),
    };
    let fix = match how {
        Shadow::CoversFirst => format!(
            "write the guarded path before {} (ALB patterns are tried in the order written; across Ingresses by group.order, then namespace and name), or guard {} too",
            open.field, open.field
        ),
        Shadow::TriedFirst | Shadow::FallsThrough => format!(
            "guard {} too (an AuthRule on the whole route or its Gateway listener), or give the guarded path a rule without conditions that the AuthRule names",
            open.field
        ),
    };
    Diagnostic::warning(guarded.object, guarded.field, "GuardShadowed", message, fix)
}
