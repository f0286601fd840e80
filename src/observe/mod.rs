//! What the data plane tells operators: trace ids, access logs, metrics, flow
//! records, and the reasons they all speak of.

pub mod access_log;
pub mod flows;
pub mod metrics;
pub mod reasons;
pub mod trace;

/// Lets a warning through at most once per interval (10 s by default), so an attack
/// that trips a bound on every request writes a line now and then, not a flood.
pub struct RateLimitedLog {
    interval_ms: u64,
    /// Milliseconds after `base` of the last line let through, plus one (0: never).
    last: std::sync::atomic::AtomicU64,
    base: std::time::Instant,
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        Self::every(std::time::Duration::from_secs(10))
    }
}

impl RateLimitedLog {
    pub fn every(interval: std::time::Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            last: Default::default(),
            base: std::time::Instant::now(),
        }
    }

    /// Whether a line may be written now.
    pub fn allow(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = self.base.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= self.interval_ms)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
