//! Copies of requests for HTTPRoute `RequestMirror` filters: sent on the side, their
//! answers read and thrown away, never waited for by the client.
//!
//! A copy is made of the request exactly as the route's backend gets it: after the
//! guard admitted it, with the identity headers Portcullis set and none the client
//! forged. Everything a copy can hold is bounded: its body is one the request path
//! already held whole (at most `HELD_BODY_LIMIT`; a streamed body is never copied),
//! and each filter has at most `IN_FLIGHT_LIMIT` copies open at once. A copy over
//! either bound is dropped and counted (`portcullis_mirror_requests_total`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::request;
use http_body_util::BodyExt;

use super::forward::{self, Outgoing, Way};
use super::pages::full;
use super::{DataPlane, Live};
use crate::compile::Backend;
use crate::compile::mirror::Mirror;
use crate::observe::access_log::AccessRecord;

/// Copies of one filter open at once; more are dropped, so a slow mirror holds at
/// most this many bodies and connections.
pub const IN_FLIGHT_LIMIT: usize = 64;

/// One of a filter's in-flight places, given back when the copy ends.
struct Slot(Arc<Mirror>);

impl Slot {
    fn take(mirror: &Arc<Mirror>) -> Option<Self> {
        mirror
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < IN_FLIGHT_LIMIT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(mirror.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends a copy of the request (`parts` as the backend gets them, `body` the whole
/// body when it was held) to the filter's Service, unless a bound says no.
pub fn send_copy(
    dp: &Arc<DataPlane>,
    live: &Arc<Live>,
    mirror: &Arc<Mirror>,
    parts: &request::Parts,
    body: Option<&Bytes>,
) {
    let counted = |result: &str| dp.metrics.mirror_copies.with_label_values(&[result]).inc();
    let Some(body) = body else {
        return counted("dropped_body");
    };
    let Backend::Service(upstream) = &mirror.backend else {
        return counted("dropped_no_endpoints");
    };
    let balance = live.balances.get(upstream.id).map(|h| h.load());
    let pools = live.pools.get(upstream.id).cloned();
    let (Some(balance), Some(pools)) = (balance.filter(|b| !b.targets().is_empty()), pools) else {
        return counted("dropped_no_endpoints");
    };
    let Some(slot) = Slot::take(mirror) else {
        return counted("dropped_busy");
    };
    let (dp, upstream) = (dp.clone(), upstream.clone());
    let out = Outgoing {
        parts: parts.clone(),
        body: full(body.clone()),
        upgrade: None,
        hold: None,
    };
    counted("sent");
    tokio::spawn(async move {
        let _slot = slot;
        let way = Way {
            balance: &balance,
            pools: &pools,
        };
        let mut rec = AccessRecord::default();
        let limit = dp.config.upstream_response_timeout;
        let sent = forward::forward(&dp, &upstream, way, out, Instant::now(), &mut rec);
        let answered = tokio::time::timeout(limit, async {
            let resp = sent.await.ok()?;
            // Read to the end and thrown away, a frame at a time, so the connection
            // can serve again and nothing of the answer is kept.
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame.ok()?;
            }
            Some(())
        })
        .await;
        let result = match answered {
            Ok(Some(())) => "answered",
            _ => "failed",
        };
        dp.metrics.mirror_copies.with_label_values(&[result]).inc();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::compile::mirror::Share;

    #[test]
    fn slots_stop_at_the_limit_and_come_back_when_dropped() {
        let mirror = Arc::new(Mirror {
            backend: Backend::Invalid {
                reason: String::new(),
            },
            share: Share::ALL,
            in_flight: Default::default(),
        });
        let held: Vec<Slot> = (0..IN_FLIGHT_LIMIT)
            .map(|_| Slot::take(&mirror).expect("under the limit"))
            .collect();
        assert!(Slot::take(&mirror).is_none());
        drop(held);
        assert_eq!(mirror.in_flight.load(Ordering::Acquire), 0);
        assert!(Slot::take(&mirror).is_some());
    }
}
