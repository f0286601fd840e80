//! Round-robin over a Service port's targets, skipping those that recently refused a
//! connection (passive failure marking). The state is kept by the data plane per
//! upstream name, beside the snapshot, so installing a new snapshot (an unrelated
//! Secret changed) keeps both the rotation and the marks of targets still there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

/// A Service port's live targets with their balancer state, shared by every snapshot
/// that routes to it: an EndpointSlice change swaps what it holds, not the routes.
pub struct BackendHandle {
    current: ArcSwap<Balance>,
}

impl BackendHandle {
    pub fn new(targets: &[String]) -> Self {
        Self {
            current: ArcSwap::from_pointee(Balance::new(targets)),
        }
    }

    /// The targets and state now; a request keeps the ones it loaded, so the index it
    /// picked always names the target it meant.
    pub fn load(&self) -> Arc<Balance> {
        self.current.load_full()
    }

    /// Makes `targets` current, carrying over the rotation and the marks of targets
    /// still there; false when they already were current.
    pub fn set_targets(&self, targets: &[String]) -> bool {
        let now = self.current.load();
        if now.serves(targets) {
            return false;
        }
        self.current.store(Arc::new(now.carried_to(targets)));
        true
    }
}

pub struct Balance {
    targets: Vec<String>,
    next: AtomicUsize,
    /// Per target: until when (ms on the data plane's clock) it is skipped.
    failed_until_ms: Vec<AtomicU64>,
}

impl Balance {
    pub fn new(targets: &[String]) -> Self {
        Self {
            targets: targets.to_vec(),
            next: AtomicUsize::new(0),
            failed_until_ms: targets.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// Whether this state is for exactly these targets.
    pub fn serves(&self, targets: &[String]) -> bool {
        self.targets == targets
    }

    /// State for `targets` that keeps this one's position and the marks of the
    /// targets both lists have.
    pub fn carried_to(&self, targets: &[String]) -> Self {
        let next = Self::new(targets);
        next.next
            .store(self.next.load(Ordering::Relaxed), Ordering::Relaxed);
        for (i, t) in targets.iter().enumerate() {
            if let Some(old) = self.targets.iter().position(|o| o == t) {
                let mark = self.failed_until_ms[old].load(Ordering::Relaxed);
                next.failed_until_ms[i].store(mark, Ordering::Relaxed);
            }
        }
        next
    }

    /// The next target not marked failed; if all are marked, the next one anyway (a
    /// marked target is better than none).
    pub fn pick(&self, now_ms: u64, skip: Option<usize>) -> Option<usize> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let healthy = (0..n).map(|i| (start + i) % n).find(|&i| {
            Some(i) != skip && self.failed_until_ms[i].load(Ordering::Relaxed) <= now_ms
        });
        healthy
            .or_else(|| (0..n).map(|i| (start + i) % n).find(|&i| Some(i) != skip))
            .or(Some(start % n))
    }

    pub fn mark_failed(&self, index: usize, until_ms: u64) {
        if let Some(mark) = self.failed_until_ms.get(index) {
            mark.store(until_ms, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn round_robin_skips_failed_targets_until_they_recover() {
        let up = Balance::new(&targets(&["a", "b", "c"]));
        let picks: Vec<_> = (0..6).map(|_| up.pick(0, None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        up.mark_failed(1, 100);
        let picks: Vec<_> = (0..4).map(|_| up.pick(50, None).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(
            (0..3).map(|_| up.pick(100, None).unwrap()).any(|p| p == 1),
            "recovered after the backoff"
        );
    }

    #[test]
    fn all_failed_still_yields_a_target_and_retries_avoid_the_last_one() {
        let up = Balance::new(&targets(&["a", "b"]));
        up.mark_failed(0, 1000);
        up.mark_failed(1, 1000);
        assert!(up.pick(0, None).is_some());
        for _ in 0..4 {
            assert_eq!(up.pick(0, Some(0)), Some(1));
        }
    }

    #[test]
    fn a_handle_swaps_targets_only_when_they_change() {
        let handle = BackendHandle::new(&targets(&["a", "b"]));
        let before = handle.load();
        before.mark_failed(1, 500);
        assert!(!handle.set_targets(&targets(&["a", "b"])));
        assert!(Arc::ptr_eq(&before, &handle.load()), "same state kept");
        assert!(handle.set_targets(&targets(&["b"])));
        let after = handle.load();
        assert_eq!(after.targets(), ["b"]);
        assert_eq!(after.pick(100, None), Some(0), "b's mark came along");
        assert!(handle.set_targets(&[]));
        assert_eq!(
            handle.load().pick(100, None),
            None,
            "no targets: nothing to pick"
        );
        assert_eq!(
            before.targets(),
            ["a", "b"],
            "a request's loaded state is unchanged"
        );
    }

    #[test]
    fn marks_follow_their_target_into_a_new_list() {
        let old = Balance::new(&targets(&["a", "b", "c"]));
        old.mark_failed(1, 500);
        let new = old.carried_to(&targets(&["b", "d"]));
        assert!(new.serves(&targets(&["b", "d"])));
        for _ in 0..4 {
            assert_eq!(new.pick(100, None), Some(1), "b is still failing");
        }
    }
}
