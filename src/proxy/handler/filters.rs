//! HTTPRoute filters and backends: the weighted pick, redirects and rewrites.

use super::*;

impl Exchange {
    /// The `CORS` filter's answer to a preflight: 204, with its `Access-Control-*`
    /// headers for an allowed origin; `None` for any other request.
    pub(super) fn cors_preflight(
        &mut self,
        policy: &crate::compile::cors::Cors,
        req: &Request<Incoming>,
    ) -> Option<Response<Body>> {
        let headers = cors::preflight(policy, req.method(), req.headers())?;
        self.rec.add_action("cors-preflight");
        let mut resp = Response::new(super::super::pages::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        *resp.headers_mut() = headers;
        Some(resp)
    }
}

/// One backend of a weighted split, in proportion to the weights, with the header
/// edits of its backendRef.
pub(crate) fn pick(backend: &Backend) -> (&Backend, Option<&HeaderEdits>) {
    match backend {
        Backend::Split(shares) => {
            let total: u64 = shares.iter().map(|(w, _)| u64::from(*w)).sum();
            let mut at = next_random() % total.max(1);
            for (weight, share) in shares {
                if at < u64::from(*weight) {
                    return pick(share);
                }
                at -= u64::from(*weight);
            }
            pick(&shares[0].1)
        }
        Backend::Edited { headers, backend } => (backend, Some(headers)),
        other => (other, None),
    }
}

/// A per-thread xorshift sequence: weighted splits need spread, not secrecy.
pub(super) fn next_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// An HTTPRoute RequestRedirect's Location: each part as the filter sets it, else as
/// the request had it; the port is left out when it is the scheme's own.
pub(super) fn redirect_location(
    redirect: &Redirect,
    authority: &canonical::Authority,
    path: &str,
    query: Option<&str>,
    tls: bool,
) -> String {
    let scheme = redirect
        .scheme
        .clone()
        .unwrap_or_else(|| if tls { "https" } else { "http" }.into());
    let host = redirect.hostname.as_deref().unwrap_or(&authority.host);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = redirect.port.or(if redirect.scheme.is_some() {
        None
    } else {
        authority.port
    });
    let path = redirect
        .path
        .as_ref()
        .map_or_else(|| path.to_owned(), |m| m.apply(path));
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}{path}{query}"),
        _ => format!("{scheme}://{host}{path}{query}"),
    }
}

/// The path and authority an HTTPRoute URLRewrite sends on.
pub(super) fn rewritten(
    rewrite: &Rewrite,
    authority: &canonical::Authority,
    path: &str,
    query: Option<&str>,
) -> (String, canonical::Authority) {
    let path = rewrite
        .path
        .as_ref()
        .map_or_else(|| path.to_owned(), |m| m.apply(path));
    let mut authority = authority.clone();
    if let Some(host) = &rewrite.hostname {
        authority.host = host.clone();
        authority.port = None;
        authority.header = host.clone();
    }
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    (path_and_query, authority)
}
