//! Round-robin over a Service port's targets, skipping those that recently refused a
//! connection (passive failure marking).

use std::sync::atomic::Ordering;

use crate::compile::Upstream;

impl Upstream {
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

    #[test]
    fn round_robin_skips_failed_targets_until_they_recover() {
        let up = Upstream::new("ns/s:80".into(), vec!["a".into(), "b".into(), "c".into()]);
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
        let up = Upstream::new("ns/s:80".into(), vec!["a".into(), "b".into()]);
        up.mark_failed(0, 1000);
        up.mark_failed(1, 1000);
        assert!(up.pick(0, None).is_some());
        for _ in 0..4 {
            assert_eq!(up.pick(0, Some(0)), Some(1));
        }
    }
}
