//! Leader election on a `coordination.k8s.io` Lease, in a task of its own.
//!
//! Whether another replica's Lease has lapsed is judged the way client-go judges it:
//! by how long *this* replica has seen the record unchanged, on its own monotonic
//! clock, never by comparing the record's `renewTime` with the local wall clock (skew
//! between nodes would then decide leadership). Leadership is published as a deadline:
//! the time of the last successful renewal's request plus the Lease duration, so a
//! replica cut off from the API server stops writing by itself when that passes, before
//! any other replica may take over.
//!
//! (`kube-lease-manager` compares `renewTime` with `SystemTime::now()`, which is the
//! skew this avoids; hence this small module instead.)

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

pub const LEASE_NAME: &str = "portcullis-leader";

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    /// How long a Lease lasts without renewal.
    pub duration: Duration,
    /// How often it is renewed (or another's checked).
    pub renew_every: Duration,
    /// The longest any one API call may take.
    pub call_timeout: Duration,
}

impl LeaseConfig {
    pub fn new(identity: String) -> Self {
        Self {
            name: LEASE_NAME.into(),
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// Leadership as the rest of the controller sees it: held until a deadline on this
/// replica's monotonic clock.
#[derive(Clone)]
pub struct Leadership(watch::Receiver<Option<Instant>>);

impl Leadership {
    /// Whether this replica leads right now.
    pub fn holds(&self) -> bool {
        self.remaining().is_some()
    }

    /// How long this replica still leads, if it does.
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = (*self.0.borrow())?;
        deadline.checked_duration_since(Instant::now())
    }

    /// Waits until the deadline moves (renewed, lost or taken).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }

    /// Leadership that is never held (for `--no-status` and tests).
    pub fn never() -> Self {
        let (_tx, rx) = watch::channel(None);
        Self(rx)
    }
}

/// Another replica's record as this one last saw it, and since when.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    record: (Option<String>, Option<String>, Option<i32>),
    since: Instant,
}

/// What to do about the Lease, given its spec as read now.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Free, or unchanged for longer than its duration: take it over.
    TakeOver,
    /// Someone else's and alive.
    Wait,
}

/// The pure part of election: `seen` is updated to the record as read at `now`.
pub fn decide(
    spec: Option<&LeaseSpec>,
    exists: bool,
    identity: &str,
    seen: &mut Option<Observation>,
    now: Instant,
) -> Decision {
    if !exists {
        *seen = None;
        return Decision::Create;
    }
    let holder = spec.and_then(|s| s.holder_identity.clone());
    if holder.as_deref() == Some(identity) {
        *seen = None;
        return Decision::Renew;
    }
    let Some(holder_spec) = spec.filter(|_| holder.is_some()) else {
        return Decision::TakeOver;
    };
    let record = (
        holder,
        holder_spec.renew_time.as_ref().map(|t| t.0.to_string()),
        holder_spec.lease_transitions,
    );
    let since = match seen {
        Some(o) if o.record == record => o.since,
        _ => now,
    };
    *seen = Some(Observation { record, since });
    let duration =
        Duration::from_secs(holder_spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    if now.duration_since(since) >= duration {
        Decision::TakeOver
    } else {
        Decision::Wait
    }
}

/// Runs the election until `shutdown`, then hands the Lease back if held.
pub fn spawn(
    api: Api<Lease>,
    config: LeaseConfig,
    rounds: prometheus::IntCounterVec,
    mut shutdown: watch::Receiver<bool>,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut seen = None;
        loop {
            let started = Instant::now();
            let round =
                tokio::time::timeout(config.call_timeout, round(&api, &config, &mut seen)).await;
            let learnt = match round {
                Ok(Ok(true)) => "leading",
                Ok(Ok(false)) => "following",
                _ => "failed",
            };
            rounds.with_label_values(&[learnt]).inc();
            match round {
                Ok(Ok(true)) => {
                    let deadline = started + config.duration;
                    let was = tx.borrow().is_some_and(|d| Instant::now() < d);
                    if !was {
                        tracing::info!(identity = %config.identity, "leading: this replica writes status");
                    }
                    tx.send_replace(Some(deadline));
                }
                Ok(Ok(false)) => {
                    if tx.borrow().is_some() {
                        tracing::info!(identity = %config.identity, "another replica holds the Lease");
                    }
                    tx.send_replace(None);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader Lease: the API call failed; leading until the last renewal runs out")
                }
                Err(_) => {
                    tracing::warn!(timeout = ?config.call_timeout, "leader Lease: no answer; leading until the last renewal runs out")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(config.renew_every) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        if tx.borrow().is_some_and(|d| Instant::now() < d) {
            tx.send_replace(None);
            let _ = tokio::time::timeout(config.call_timeout, release(&api, &config)).await;
        }
    });
    (Leadership(rx), task)
}

/// One read and, when due, one compare-and-swap write. `Ok(true)`: this replica holds
/// the Lease now.
async fn round(
    api: &Api<Lease>,
    config: &LeaseConfig,
    seen: &mut Option<Observation>,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&config.name).await?;
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        current.is_some(),
        &config.identity,
        seen,
        Instant::now(),
    );
    let now = MicroTime(Timestamp::now());
    let seconds = config.duration.as_secs() as i32;
    match (decision, current) {
        (Decision::Wait, _) => Ok(false),
        (Decision::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            conflict_is_false(api.create(&PostParams::default(), &lease).await)
        }
        (decision, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if decision == Decision::TakeOver {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(now);
            // The resourceVersion read above makes this a compare-and-swap.
            conflict_is_false(
                api.replace(&config.name, &PostParams::default(), &lease)
                    .await,
            )
        }
        (_, None) => Ok(false),
    }
}

/// Lets another replica take over at once instead of after the Lease lapses.
async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    if let Ok(Some(mut lease)) = api.get_opt(&config.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(config.identity.as_str())
    {
        spec.holder_identity = None;
        let _ = api
            .replace(&config.name, &PostParams::default(), &lease)
            .await;
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(1),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn ours_is_renewed_and_none_is_created() {
        let mut seen = None;
        let now = Instant::now();
        assert_eq!(decide(None, false, "a", &mut seen, now), Decision::Create);
        let ours = held_by("a", "2026-01-01T00:00:00Z");
        assert_eq!(
            decide(Some(&ours), true, "a", &mut seen, now),
            Decision::Renew
        );
        let free = LeaseSpec::default();
        assert_eq!(
            decide(Some(&free), true, "a", &mut seen, now),
            Decision::TakeOver
        );
    }

    #[test]
    fn another_holder_lapses_only_after_its_record_stood_still_here_for_the_duration() {
        let mut seen = None;
        let start = Instant::now();
        // A renewTime far in the past says nothing: clocks differ between nodes.
        let theirs = held_by("b", "2000-01-01T00:00:00Z");
        assert_eq!(
            decide(Some(&theirs), true, "a", &mut seen, start),
            Decision::Wait
        );
        let later = start + Duration::from_secs(14);
        assert_eq!(
            decide(Some(&theirs), true, "a", &mut seen, later),
            Decision::Wait
        );
        // A renewal (the record changed) starts the count again.
        let renewed = held_by("b", "2000-01-01T00:00:05Z");
        assert_eq!(
            decide(Some(&renewed), true, "a", &mut seen, later),
            Decision::Wait
        );
        let not_yet = later + Duration::from_secs(14);
        assert_eq!(
            decide(Some(&renewed), true, "a", &mut seen, not_yet),
            Decision::Wait
        );
        let lapsed = later + Duration::from_secs(15);
        assert_eq!(
            decide(Some(&renewed), true, "a", &mut seen, lapsed),
            Decision::TakeOver
        );
        // A renewTime in the future (a fast clock elsewhere) doesn't hold it forever.
        let mut seen = None;
        let future = held_by("c", "2999-01-01T00:00:00Z");
        assert_eq!(
            decide(Some(&future), true, "a", &mut seen, start),
            Decision::Wait
        );
        let after = start + Duration::from_secs(15);
        assert_eq!(
            decide(Some(&future), true, "a", &mut seen, after),
            Decision::TakeOver
        );
    }

    #[tokio::test]
    async fn leadership_ends_at_its_deadline_without_any_call() {
        let (tx, rx) = watch::channel(Some(Instant::now() + Duration::from_millis(50)));
        let leadership = Leadership(rx);
        assert!(leadership.holds());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!leadership.holds(), "no renewal: no leadership");
        drop(tx);
        assert!(!Leadership::never().holds());
    }
}
