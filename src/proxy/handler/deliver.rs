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

/// The most body held at once by every request together: past it a body streams (no
/// copy to a mirror, no retry) instead of being held, so many clients on many
/// connections cannot make the process hold more than this for them.
const HELD_BODIES_BUDGET: u64 = 64 * 1024 * 1024;

static HELD_NOW: AtomicU64 = AtomicU64::new(0);

/// A part of `HELD_BODIES_BUDGET`, given back when dropped.
pub(super) struct HeldShare(u64);

impl HeldShare {
    fn take(bytes: u64) -> Option<Self> {
        HELD_NOW
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now + bytes <= HELD_BODIES_BUDGET).then_some(now + bytes)
            })
            .ok()
            .map(|_| Self(bytes))
    }
}

impl Drop for HeldShare {
    fn drop(&mut self) {
        HELD_NOW.fetch_sub(self.0, Ordering::AcqRel);
    }
}

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

/// The body held whole when `holdable` and the budget has room for it (with the share
/// of the budget it takes), else untouched. `Err` when a body declared small broke
/// off or ran past its length.
pub(super) async fn hold_small(
    body: Incoming,
    count: &AtomicU64,
) -> Result<(RequestBody, Option<HeldShare>), forward::ForwardError> {
    if !holdable(&body) {
        return Ok((RequestBody::Streamed(body), None));
    }
    let declared = body.size_hint().exact().unwrap_or(0);
    let Some(share) = HeldShare::take(declared) else {
        return Ok((RequestBody::Streamed(body), None));
    };
    let limited = http_body_util::Limited::new(body, HELD_BODY_LIMIT as usize);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| forward::ForwardError::ClientBody)?
        .to_bytes();
    count.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok((RequestBody::Held(bytes), Some(share)))
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
        // Kept until the request is done: its retries send the held body again.
        let (body, _share) = if upgrade.is_none() && route.filters.wants_body_copy() {
            hold_small(body, &received_bytes).await?
        } else {
            (RequestBody::Streamed(body), None)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bodies_share_one_budget_given_back_when_done() {
        let all = HeldShare::take(HELD_BODIES_BUDGET).expect("the budget is free");
        assert!(
            HeldShare::take(1).is_none(),
            "past the budget, bodies stream"
        );
        drop(all);
        let one = HeldShare::take(HELD_BODY_LIMIT).expect("given back when dropped");
        drop(one);
        assert_eq!(HELD_NOW.load(Ordering::Acquire), 0);
    }
}
