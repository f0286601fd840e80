//! Which rule a request reaches, as far as compile can tell: the order routes are
//! tried in, and the guarded rules an open rule of the same host can take requests
//! from. Pure functions over the drafts; the data plane only reads the order.

use std::cmp::Reverse;

use super::RouteDraft;
use super::snapshot::{Backend, Conditions, PathKind, PathRule, ValueMatch};
use crate::diagnostics::{Diagnostic, ObjectRef};

/// The order routes are tried in, smallest first: exact paths (an exact path only
/// ever matches itself, so this equals "longest first, Exact on a tie"), then
/// regular expressions (the longest expression first), then the longest prefix, then
/// the default backend, as Envoy Gateway orders them; then Gateway API's method,
/// header and query counts. Sorting is stable: on a tie the older object goes first.
pub(crate) type Rank = (
    u8,
    Reverse<usize>,
    Reverse<bool>,
    Reverse<usize>,
    Reverse<usize>,
);

pub(crate) fn rank(path: Option<&PathRule>, conditions: &Conditions) -> Rank {
    let (kind, len) = match path {
        Some(p) if p.kind == PathKind::Exact => (0, 0),
        Some(p) if p.kind == PathKind::Regex => (1, p.path.len()),
        Some(p) => (2, p.path.len()),
        None => (3, 0),
    };
    let (method, headers, query) = conditions.rank();
    (
        kind,
        Reverse(len),
        Reverse(method),
        Reverse(headers),
        Reverse(query),
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
    /// The open rule's path covers the guarded one's, and the guarded rule's
    /// conditions (method, headers, query, listener protocol) are not all the open
    /// rule's: a request to the guarded path that fails them goes to the open rule.
    FallsThrough,
}

/// Whether `open` can take requests that `guarded` was meant to guard. `open_first`:
/// the open rule comes before the guarded one in the route order.
pub(crate) fn shadow(open: RuleView, guarded: RuleView, open_first: bool) -> Option<Shadow> {
    let same_host = open.host == guarded.host;
    if same_host
        && open_first
        && open.path == guarded.path
        && compatible(open.conditions, guarded.conditions)
    {
        return Some(Shadow::TriedFirst);
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
    b.tls.is_none_or(|t| a.tls == Some(t))
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
    both(a.tls, b.tls)
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
    let open: Vec<(usize, RuleView)> = of(Exposure::Open).collect();
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Diagnostic> = Vec::new();
    for (gi, guarded) in of(Exposure::Guarded) {
        for (oi, open) in &open {
            let Some(how) = shadow(*open, guarded, *oi < gi) else {
                continue;
            };
            // One warning per pair of rules, whatever hosts they share.
            if seen.insert((guarded.object, guarded.field, open.object, open.field)) {
                out.push(diagnostic(*open, guarded, how));
            }
        }
    }
    out
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
        Shadow::FallsThrough => format!(
            "this rule has an AuthRule, but {other} has no AuthRule and its path {} also covers {} on host {host}: a request to this path that does not meet this rule's method, header, query or protocol conditions reaches it without a login",
            open.path.path, guarded.path.path
        ),
    };
    Diagnostic::warning(
        guarded.object,
        guarded.field,
        "GuardShadowed",
        message,
        format!(
            "guard {} too (an AuthRule on the whole route or its Gateway listener), or give the guarded path a rule without conditions that the AuthRule names",
            open.field
        ),
    )
}
