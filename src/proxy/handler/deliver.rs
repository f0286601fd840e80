//! The last step to the backend: the body streamed as it comes, or, on a route that
//! mirrors or retries, held whole first when it is small, so its copies and retries
//! carry exactly the bytes the first attempt did. A body that is not held is never
//! copied and never sent twice.

use super::*;
use crate::compile::Upstream;
use crate::proxy::mirror;
use crate::proxy::retry::Attempts;

/// The most body a request may have to be held whole (declared by its
/// `Content-Length`); larger or undeclared ones stream.
pub(super) const HELD_BODY_LIMIT: u64 = 64 * 1024;

/// A request on its way, its body not yet read.
pub(super) struct Unsent {
    pub(super) parts: http::request::Parts,
    pub(super) body: Incoming,
    pub(super) upgrade: Option<hyper::upgrade::OnUpgrade>,
    pub(super) hold: Option<crate::proxy::connections::Hold>,
    pub(super) received_bytes: Arc<AtomicU64>,
}

/// A request body: held whole, or left to stream.
pub(super) enum RequestBody {
    Held(Bytes),
    Streamed(Incoming),
}

/// Whether a body is small enough to hold: none at all, or a declared length within
/// the limit. Nothing is read to decide.
pub(super) fn holdable(body: &Incoming) -> bool {
    body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= HELD_BODY_LIMIT)
}

/// The body held whole when `holdable`, else untouched. `Err` when a body declared
/// small broke off or ran past its length.
pub(super) async fn hold_small(
    body: Incoming,
    count: &AtomicU64,
) -> Result<RequestBody, forward::ForwardError> {
    if !holdable(&body) {
        return Ok(RequestBody::Streamed(body));
    }
    let limited = http_body_util::Limited::new(body, HELD_BODY_LIMIT as usize);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| forward::ForwardError::ClientBody)?
        .to_bytes();
    count.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(RequestBody::Held(bytes))
}

impl Exchange {
    /// Sends the request to `upstream`: copies to the route's mirrors first (only of
    /// a held body), then the request itself, again under the route's retry.
    pub(super) async fn deliver(
        &mut self,
        route: &Route,
        upstream: &Upstream,
        way: forward::Way<'_>,
        out: Unsent,
    ) -> Result<Response<Body>, forward::ForwardError> {
        let Unsent {
            parts,
            body,
            upgrade,
            hold,
            received_bytes,
        } = out;
        let body = if upgrade.is_none() && route.filters.wants_body_copy() {
            hold_small(body, &received_bytes).await?
        } else {
            RequestBody::Streamed(body)
        };
        let whole = match &body {
            RequestBody::Held(bytes) => Some(bytes),
            RequestBody::Streamed(_) => None,
        };
        for m in &route.filters.mirrors {
            if upgrade.is_none() && m.share.picks(filters::next_random()) {
                mirror::send_copy(&self.dp, &self.live, m, &parts, whole);
            }
        }
        let body = match (body, &route.filters.retry) {
            (RequestBody::Held(bytes), Some(policy)) => {
                let attempts = Attempts {
                    dp: &self.dp,
                    upstream,
                    way,
                    policy,
                    received: self.received,
                };
                return attempts.send(parts, bytes, &mut self.rec).await;
            }
            (RequestBody::Held(bytes), None) => crate::proxy::pages::full(bytes),
            (RequestBody::Streamed(inner), _) => CountingBody {
                inner,
                count: received_bytes,
            }
            .boxed_unsync(),
        };
        let out = Outgoing {
            parts,
            body,
            upgrade,
            hold,
        };
        forward::forward(&self.dp, upstream, way, out, self.received, &mut self.rec).await
    }
}
