//! State the replicas share: logouts providers announced, logout-token `jti`s already
//! taken, and the lock that lets one replica spend a session's refresh token while
//! the others wait for its result.
//!
//! Without Redis all of it lives in this process: a logout reaches the replica the
//! provider called, and two replicas refreshing one session spend its refresh token
//! twice. With `--redis-url` it lives in Redis. Revocations are read on every request,
//! so each replica mirrors them in memory: it subscribes to a channel, loads the
//! stored set, and keeps both current; a lost subscription or a failed ping marks the
//! mirror stale until it is whole again. While it is stale, or Redis does not answer
//! within the timeout, `--redis-unavailable refuse` (the default) answers sessions
//! with 503 and `allow` serves them on the revocations known so far. Nothing waits
//! longer than the timeout, and nothing panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::revocations::{Origin, RevocationTable, Revoked};
use crate::model::DEFAULT_SESSION_TIMEOUT_SECONDS;

const PREFIX: &str = "portcullis:";
/// The sorted set of revocations the provider signed: member `[issuer, key]` as
/// JSON, score the time.
const REVOCATIONS: &str = "portcullis:revocations";
/// The sorted set of front-channel revocations, kept apart so their bound never
/// pushes out a signed one.
const FRONT_CHANNEL_REVOCATIONS: &str = "portcullis:revocations:front-channel";
/// The most members each sorted set keeps (the newest); older ones are trimmed on
/// every write. With `sid`s of at most `MAX_SID_BYTES` a set stays under ~70 MB.
const MAX_STORED_REVOCATIONS: i64 = 100_000;
/// Front-channel revocations written to Redis: on average this many a second, in
/// bursts of up to `FRONT_CHANNEL_BURST`. What is over the rate is kept in this
/// replica's table only, logged and counted.
const FRONT_CHANNEL_PER_SEC: f64 = 20.0;
const FRONT_CHANNEL_BURST: f64 = 200.0;
/// The sorted set of logins whose callback arrived (member: digest of the flow id,
/// score: the time), and the most it keeps.
const CALLBACKS_NOTED: &str = "portcullis:callbacks-noted";
const MAX_NOTED_CALLBACKS: i64 = 100_000;
/// Where each new revocation is announced to the other replicas.
const CHANNEL: &str = "portcullis:revocations";
/// How often the subscription proves it is alive.
const PING_EVERY: Duration = Duration::from_secs(1);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// What sessions get while Redis cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum WhenUnavailable {
    /// Answer 503: a logout announced meanwhile could not be seen.
    #[default]
    Refuse,
    /// Serve on the revocations known so far (and refresh without the shared lock).
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    #[error("the shared state (Redis) is unavailable: {0}")]
    Unavailable(String),
}

/// The outcome of asking for a session's refresh lock.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshClaim {
    /// This replica refreshes; others wait for what it stores.
    Mine,
    /// Another replica is refreshing.
    Theirs,
}

/// What the replica that refreshed stored for the others.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshResult {
    /// The renewed session, sealed with the session keys as a cookie value is.
    Sealed(String),
    /// The refresh failed (the reason), so the session ended.
    Failed(String),
}

pub struct SharedState {
    table: RevocationTable,
    redis: Option<Redis>,
    /// The budget of front-channel writes to Redis.
    front_channel_writes: std::sync::Mutex<TokenBucket>,
    /// `portcullis_revocations_not_shared_total`: front-channel revocations over the
    /// write rate, kept in this replica only.
    not_shared: prometheus::IntCounter,
    not_shared_log: crate::observe::RateLimitedLog,
    when_unavailable: WhenUnavailable,
    /// `portcullis_shared_state_up`: 1 while the revocations mirror is current.
    up: prometheus::IntGauge,
}

struct Redis {
    conn: ConnectionManager,
    client: redis::Client,
    timeout: Duration,
    synced: AtomicBool,
}

impl SharedState {
    /// State in this process only.
    pub fn in_process() -> Arc<Self> {
        let state = Arc::new(Self {
            table: RevocationTable::default(),
            redis: None,
            front_channel_writes: std::sync::Mutex::new(TokenBucket::front_channel()),
            not_shared: not_shared_counter(),
            not_shared_log: Default::default(),
            when_unavailable: WhenUnavailable::Allow,
            up: up_gauge(),
        });
        state.up.set(1);
        state
    }

    /// State in Redis at `url` (`redis://` or `rediss://`). Connections are made
    /// lazily and again after failures, so Portcullis starts and serves while Redis
    /// is down; the mirror follows in the background.
    pub fn redis(
        url: &str,
        timeout: Duration,
        when_unavailable: WhenUnavailable,
    ) -> Result<Arc<Self>, SharedError> {
        let client =
            redis::Client::open(url).map_err(|e| SharedError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| SharedError::Unavailable(e.to_string()))?;
        let state = Arc::new(Self {
            table: RevocationTable::default(),
            front_channel_writes: std::sync::Mutex::new(TokenBucket::front_channel()),
            not_shared: not_shared_counter(),
            not_shared_log: Default::default(),
            redis: Some(Redis {
                conn,
                client,
                timeout,
                synced: AtomicBool::new(false),
            }),
            when_unavailable,
            up: up_gauge(),
        });
        tokio::spawn(follow(Arc::downgrade(&state)));
        Ok(state)
    }

    pub fn health_metric(&self) -> prometheus::IntGauge {
        self.up.clone()
    }

    /// The bounds' counters, for the process's metrics registry.
    pub fn bound_metrics(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.table.evicted_metric()),
            Box::new(self.not_shared.clone()),
        ]
    }

    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether the revocations mirror is current (always, in process).
    pub fn is_current(&self) -> bool {
        self.redis
            .as_ref()
            .is_none_or(|r| r.synced.load(Ordering::Acquire))
    }

    fn unavailable(&self, why: impl Into<String>) -> Result<(), SharedError> {
        match self.when_unavailable {
            WhenUnavailable::Refuse => Err(SharedError::Unavailable(why.into())),
            WhenUnavailable::Allow => Ok(()),
        }
    }

    /// When the latest of these revocations of `issuer` happened, if any did. Read
    /// from memory; refused while the mirror of Redis is stale (unless allowed).
    pub fn revoked_at(&self, issuer: &str, keys: &[Revoked]) -> Result<Option<i64>, SharedError> {
        if !self.is_current() {
            self.unavailable("the revocations could not be read from Redis")?;
        }
        Ok(self.table.latest(issuer, keys))
    }

    /// Records a revocation here and, with Redis, for every replica.
    pub async fn revoke(&self, issuer: &str, key: &Revoked, at: i64) -> Result<(), SharedError> {
        self.table.insert(issuer, key.key(), at);
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let origin = key.origin();
        if origin == Origin::Unsigned {
            let allowed = self
                .front_channel_writes
                .lock()
                .map(|mut b| b.take(std::time::Instant::now()))
                .unwrap_or(false);
            if !allowed {
                self.not_shared.inc();
                if self.not_shared_log.allow() {
                    tracing::warn!(
                        issuer,
                        total = self.not_shared.get(),
                        "front-channel logouts arrive faster than {FRONT_CHANNEL_PER_SEC}/s: the excess is kept on this replica only, not shared through Redis"
                    );
                }
                return Ok(());
            }
        }
        let set = match origin {
            Origin::Signed => REVOCATIONS,
            Origin::Unsigned => FRONT_CHANNEL_REVOCATIONS,
        };
        let member = serde_json::json!([issuer, key.key()]).to_string();
        let message = serde_json::json!({"issuer": issuer, "key": key.key(), "at": at}).to_string();
        let mut conn = redis.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(set)
            .arg("GT")
            .arg(at)
            .arg(&member)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(set)
            .arg("-inf")
            .arg(at - DEFAULT_SESSION_TIMEOUT_SECONDS)
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(set)
            .arg(0)
            .arg(-(MAX_STORED_REVOCATIONS + 1))
            .ignore()
            .cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(&message)
            .ignore();
        within(redis.timeout, pipe.query_async::<()>(&mut conn)).await?;
        self.end_sessions(redis, issuer, key).await
    }

    /// Takes a logout token's `jti` once across all replicas; false when taken before.
    pub async fn take_jti(
        &self,
        jti: &str,
        iat: i64,
        now: i64,
        keep_secs: i64,
    ) -> Result<bool, SharedError> {
        let Some(redis) = &self.redis else {
            return Ok(self.table.take_jti(jti, iat, now, keep_secs));
        };
        let key = format!("{PREFIX}jti:{}", digest_hex(jti));
        let mut conn = redis.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(keep_secs.max(1));
        let taken = set.query_async::<Option<String>>(&mut conn);
        Ok(within(redis.timeout, taken).await?.is_some())
    }

    /// Gives a `jti` back when the logout it carried could not be recorded, so the
    /// provider's retry is taken. Best effort: the key expires anyway.
    pub async fn release_jti(&self, jti: &str) {
        if let Some(redis) = &self.redis {
            let mut conn = redis.conn.clone();
            let del = conn.del::<_, ()>(format!("{PREFIX}jti:{}", digest_hex(jti)));
            let _ = within(redis.timeout, del).await;
        }
    }

    /// Asks for the refresh lock of the session whose refresh token digests to
    /// `session`. In process every replica is its own: always `Mine`.
    pub async fn claim_refresh(
        &self,
        session: &str,
        hold: Duration,
    ) -> Result<RefreshClaim, SharedError> {
        let Some(redis) = &self.redis else {
            return Ok(RefreshClaim::Mine);
        };
        let mut conn = redis.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(format!("{PREFIX}refresh-lock:{session}"))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(hold.as_millis() as u64);
        let claimed = set.query_async::<Option<String>>(&mut conn);
        match within(redis.timeout, claimed).await {
            Ok(Some(_)) => Ok(RefreshClaim::Mine),
            Ok(None) => Ok(RefreshClaim::Theirs),
            Err(e) => {
                self.unavailable(e.to_string())?;
                Ok(RefreshClaim::Mine)
            }
        }
    }

    /// Stores the outcome of a refresh for the replicas waiting on it.
    pub async fn finish_refresh(
        &self,
        session: &str,
        result: &RefreshResult,
        keep: Duration,
    ) -> Result<(), SharedError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let value = match result {
            RefreshResult::Sealed(s) => format!("ok {s}"),
            RefreshResult::Failed(reason) => format!("failed {reason}"),
        };
        let mut conn = redis.conn.clone();
        let set = conn.set_ex::<_, _, ()>(
            format!("{PREFIX}refreshed:{session}"),
            value,
            keep.as_secs().max(1),
        );
        within(redis.timeout, set).await
    }

    /// The stored outcome of another replica's refresh, when there is one yet; and
    /// whether its lock is still held (a replica that died lets it lapse).
    pub async fn refresh_outcome(
        &self,
        session: &str,
    ) -> Result<(Option<RefreshResult>, bool), SharedError> {
        let Some(redis) = &self.redis else {
            return Ok((None, false));
        };
        let mut conn = redis.conn.clone();
        let mut pipe = redis::pipe();
        pipe.get(format!("{PREFIX}refreshed:{session}"))
            .exists(format!("{PREFIX}refresh-lock:{session}"));
        let read = pipe.query_async::<(Option<String>, bool)>(&mut conn);
        let (value, locked) = within(redis.timeout, read).await?;
        let result = value.and_then(|v| {
            let (kind, rest) = v.split_once(' ')?;
            match kind {
                "ok" => Some(RefreshResult::Sealed(rest.to_owned())),
                "failed" => Some(RefreshResult::Failed(rest.to_owned())),
                _ => None,
            }
        });
        Ok((result, locked))
    }

    /// Notes, for the replica that sent its redirect, that flow `flow_id`'s callback
    /// arrived. Nothing in process: there the flow record itself shows it. The marks
    /// are one sorted set trimmed to `MAX_NOTED_CALLBACKS` on every write, since any
    /// client can start logins and return from them: past the bound the oldest marks
    /// go, and those logins read as abandoned.
    pub async fn note_callback(&self, flow_id: &str, keep: Duration) -> Result<(), SharedError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut conn = redis.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(CALLBACKS_NOTED)
            .arg(now)
            .arg(digest_hex(flow_id))
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(CALLBACKS_NOTED)
            .arg("-inf")
            .arg(now - keep.as_secs().max(1) as i64)
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(CALLBACKS_NOTED)
            .arg(0)
            .arg(-(MAX_NOTED_CALLBACKS + 1))
            .ignore();
        within(redis.timeout, pipe.query_async::<()>(&mut conn)).await
    }

    /// Which of `flow_ids` had their callback noted by any replica, in order; `None`
    /// in process, where only this replica's own records can tell.
    pub async fn callbacks_noted(
        &self,
        flow_ids: &[String],
    ) -> Result<Option<Vec<bool>>, SharedError> {
        let Some(redis) = &self.redis else {
            return Ok(None);
        };
        if flow_ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut conn = redis.conn.clone();
        let mut pipe = redis::pipe();
        for id in flow_ids {
            pipe.zscore(CALLBACKS_NOTED, digest_hex(id));
        }
        let noted = pipe.query_async::<Vec<Option<f64>>>(&mut conn);
        let noted = within(redis.timeout, noted).await?;
        Ok(Some(noted.iter().map(Option::is_some).collect()))
    }

    /// Writes a server-side session record `name` for `ttl_secs`, listed under each
    /// of `ended_by` (the revocations that end it) so a logout finds it. With
    /// `replace_only` an ended record is not brought back: false when there was none.
    pub async fn put_session(
        &self,
        name: &str,
        value: &str,
        ttl_secs: i64,
        ended_by: &[(String, Revoked)],
        replace_only: bool,
    ) -> Result<bool, SharedError> {
        let redis = self.session_redis()?;
        let ttl = ttl_secs.max(1);
        let mut pipe = redis::pipe();
        let set = pipe
            .cmd("SET")
            .arg(session_key(name))
            .arg(value)
            .arg("EX")
            .arg(ttl);
        if replace_only {
            set.arg("XX");
        }
        for (issuer, key) in ended_by {
            let index = sessions_of(issuer, key);
            pipe.cmd("SADD").arg(&index).arg(name).ignore();
            // NX sets the first expiry, GT only ever lengthens it.
            for when in ["NX", "GT"] {
                pipe.cmd("EXPIRE").arg(&index).arg(ttl).arg(when).ignore();
            }
        }
        let mut conn = redis.conn.clone();
        let written = pipe.query_async::<(Option<String>,)>(&mut conn);
        Ok(within(redis.timeout, written).await?.0.is_some())
    }

    /// The server-side session record `name`; `None` when it ended or never was.
    pub async fn get_session(&self, name: &str) -> Result<Option<String>, SharedError> {
        let redis = self.session_redis()?;
        let mut conn = redis.conn.clone();
        let read = conn.get::<_, Option<String>>(session_key(name));
        within(redis.timeout, read).await
    }

    /// Deletes the server-side session record `name` (a logout).
    pub async fn delete_session(&self, name: &str) -> Result<(), SharedError> {
        let redis = self.session_redis()?;
        let mut conn = redis.conn.clone();
        let del = conn.del::<_, ()>(session_key(name));
        within(redis.timeout, del).await
    }

    /// Deletes every server-side session record listed under `key` of `issuer`.
    async fn end_sessions(
        &self,
        redis: &Redis,
        issuer: &str,
        key: &Revoked,
    ) -> Result<(), SharedError> {
        let index = sessions_of(issuer, key);
        let mut conn = redis.conn.clone();
        let names = conn.smembers::<_, Vec<String>>(&index);
        let names = within(redis.timeout, names).await?;
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.del(session_key(name)).ignore();
        }
        pipe.del(&index).ignore();
        within(redis.timeout, pipe.query_async::<()>(&mut conn)).await
    }

    fn session_redis(&self) -> Result<&Redis, SharedError> {
        self.redis
            .as_ref()
            .ok_or_else(|| SharedError::Unavailable("sessions in Redis need --redis-url".into()))
    }

    fn apply(&self, message: &str) {
        let parsed: Option<(String, String, i64)> =
            serde_json::from_str::<serde_json::Value>(message)
                .ok()
                .and_then(|v| {
                    Some((
                        v.get("issuer")?.as_str()?.to_owned(),
                        v.get("key")?.as_str()?.to_owned(),
                        v.get("at")?.as_i64()?,
                    ))
                });
        match parsed {
            Some((issuer, key, at)) => self.table.insert(&issuer, key, at),
            None => tracing::warn!("ignored a malformed message on {CHANNEL}"),
        }
    }
}

fn not_shared_counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new(
        "revocations_not_shared_total",
        "Front-channel logouts over the rate written to Redis: kept on the replica that received them only",
    )
    .expect("valid metric")
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<std::time::Instant>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            at: None,
        }
    }

    fn front_channel() -> Self {
        Self::new(FRONT_CHANNEL_PER_SEC, FRONT_CHANNEL_BURST)
    }

    /// Takes one token at `now`, when there is one.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        if let Some(at) = self.at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn up_gauge() -> prometheus::IntGauge {
    prometheus::IntGauge::new(
        "shared_state_up",
        "1 while the shared state (Redis, when configured) is reachable and the revocations mirror is current",
    )
    .expect("valid metric")
}

/// Runs `op` within `timeout`; both failures read as unavailable.
async fn within<T>(
    timeout: Duration,
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, SharedError> {
    match tokio::time::timeout(timeout, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SharedError::Unavailable(e.to_string())),
        Err(_) => Err(SharedError::Unavailable(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Keeps the mirror of the revocations current for as long as the state lives:
/// subscribe, load, follow; start again after any failure.
async fn follow(state: std::sync::Weak<SharedState>) {
    let mut delay = Duration::from_millis(100);
    let mut reported = false;
    loop {
        let Some(s) = state.upgrade() else { return };
        let Err(e) = follow_once(&s).await else {
            return;
        };
        let was_current = s
            .redis
            .as_ref()
            .is_some_and(|r| r.synced.swap(false, Ordering::AcqRel));
        s.up.set(0);
        if was_current {
            delay = Duration::from_millis(100);
            reported = false;
        }
        if !reported {
            tracing::warn!(error = %e, refuse_sessions = s.when_unavailable == WhenUnavailable::Refuse, "shared state lost: revocations are not current until Redis answers again");
            reported = true;
        }
        drop(s);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

async fn follow_once(s: &Arc<SharedState>) -> Result<(), SharedError> {
    let Some(redis) = &s.redis else {
        return Ok(());
    };
    let pubsub = within(redis.timeout, redis.client.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    within(redis.timeout, sink.subscribe(CHANNEL)).await?;
    // Subscribed first, then loaded: a revocation between the two arrives either way.
    let mut conn = redis.conn.clone();
    let since = jiff::Timestamp::now().as_second() - DEFAULT_SESSION_TIMEOUT_SECONDS;
    for set in [FRONT_CHANNEL_REVOCATIONS, REVOCATIONS] {
        let stored =
            conn.zrangebyscore_withscores::<_, _, _, Vec<(String, i64)>>(set, since, "+inf");
        for (member, at) in within(redis.timeout, stored).await? {
            if let Ok((issuer, key)) = serde_json::from_str::<(String, String)>(&member) {
                s.table.insert(&issuer, key, at);
            }
        }
    }
    redis.synced.store(true, Ordering::Release);
    s.up.set(1);
    tracing::info!("shared state: revocations mirrored from Redis");
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(m) => match m.get_payload::<String>() {
                    Ok(text) => s.apply(&text),
                    Err(e) => tracing::warn!(error = %e, "unreadable message on {CHANNEL}"),
                },
                None => return Err(SharedError::Unavailable("the subscription ended".into())),
            },
            _ = tick.tick() => {
                // In subscribed mode the answer is ["pong", ""].
                within(redis.timeout, sink.ping::<redis::Value>()).await?;
            }
        }
    }
}

/// Where a server-side session record lives; `name` is already a keyed hash.
fn session_key(name: &str) -> String {
    format!("{PREFIX}session:{name}")
}

/// The set of the server-side sessions a revocation ends.
fn sessions_of(issuer: &str, key: &Revoked) -> String {
    format!(
        "{PREFIX}sessions-of:{}",
        digest_hex(&format!("{issuer}\n{}", key.key()))
    )
}

/// A short stable name for a secret (a `jti`, a refresh token): never stored as is.
pub fn digest_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_state_is_always_current() {
        let s = SharedState::in_process();
        assert!(s.is_current());
        s.revoke("https://a", &Revoked::Sid("x".into()), 10)
            .await
            .unwrap();
        assert_eq!(
            s.revoked_at("https://a", &[Revoked::Sid("x".into())]),
            Ok(Some(10))
        );
        assert!(s.take_jti("j", 1, 1, 600).await.unwrap());
        assert!(!s.take_jti("j", 1, 2, 600).await.unwrap());
        assert_eq!(
            s.claim_refresh("k", Duration::from_secs(1)).await,
            Ok(RefreshClaim::Mine)
        );
    }

    #[test]
    fn the_token_bucket_allows_its_burst_then_its_rate() {
        let start = std::time::Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0);
        assert_eq!((0..8).filter(|_| b.take(start)).count(), 5, "the burst");
        assert!(!b.take(start + Duration::from_millis(50)), "half a token");
        assert!(
            b.take(start + Duration::from_millis(100)),
            "one token later"
        );
        let later = start + Duration::from_secs(60);
        assert_eq!(
            (0..8).filter(|_| b.take(later)).count(),
            5,
            "never more than the burst"
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_refuses_or_allows_as_configured_and_never_hangs() {
        // Port 9 (discard) on loopback: nothing listens.
        for (when, refused) in [
            (WhenUnavailable::Refuse, true),
            (WhenUnavailable::Allow, false),
        ] {
            let s = SharedState::redis("redis://127.0.0.1:9/", Duration::from_millis(200), when)
                .unwrap();
            let started = std::time::Instant::now();
            let read = s.revoked_at("https://a", &[Revoked::Sid("x".into())]);
            assert_eq!(read.is_err(), refused, "{when:?}");
            let written = s.revoke("https://a", &Revoked::Sid("x".into()), 10).await;
            assert!(written.is_err(), "a write needs Redis");
            let claim = s.claim_refresh("k", Duration::from_secs(1)).await;
            assert_eq!(claim.is_err(), refused, "{when:?}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
        }
    }
}
