//! The provider registry: what discovery and JWKS say of each provider configuration,
//! keyed by the whole configuration (issuer and every endpoint override), so two
//! AuthRules naming one issuer with different endpoints never share an entry.
//!
//! The request path only reads it. The first use of a configuration fetches it (one
//! fetch however many requests wait); after that a background task refreshes it on a
//! TTL, keeping the last good answer while the provider is down. A failure is
//! remembered with a growing back-off, so an outage does not turn every request into
//! an outbound call. An ID token signed with a `kid` not seen before refetches the
//! keys at once, then, while the `kid`s keep being unknown, after 1 s, 2 s, 4 s, …
//! up to once a minute per provider (`kid_refetch_delay`): a provider whose keys lag
//! its first token by a few seconds costs a few seconds of failed logins, and tokens
//! with made-up `kid`s cost it one fetch a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::id_token::{self, Alg, Jwks};
use super::idp::{Hop, IdpClient, IdpError, ProviderMetadata};
use crate::compile::AuthPolicy;
use crate::compile::bearer::BearerPolicy;
use crate::model::check_endpoint_url;

/// How long discovery and keys are used before the background refresh reads them again.
pub const REFRESH_AFTER: Duration = Duration::from_secs(600);
/// Unknown-`kid` refetches: the first wait, doubling to the last.
const FIRST_KID_BACKOFF: Duration = Duration::from_secs(1);
const MAX_KID_BACKOFF: Duration = Duration::from_secs(60);
/// Back-off after a failed fetch: doubling from the first to the last.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An entry no request asked for in this long is dropped (its AuthRule is gone).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// One provider configuration, as AuthRules spell it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderKey {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub user_info_endpoint: Option<String>,
    /// Keys from here instead of discovery (`spec.bearer.jwksUri`): only keys are read.
    pub jwks_uri: Option<String>,
}

impl ProviderKey {
    /// The provider of a rule's logins, or the token issuer of a bearer-only rule.
    pub fn of(policy: &AuthPolicy) -> Self {
        if let (false, Some(bearer)) = (policy.login, &policy.bearer) {
            return Self::for_bearer(bearer);
        }
        Self {
            issuer: policy.issuer.clone(),
            authorization_endpoint: policy.authorization_endpoint.clone(),
            token_endpoint: policy.token_endpoint.clone(),
            user_info_endpoint: policy.user_info_endpoint.clone(),
            jwks_uri: None,
        }
    }

    /// The issuer of bearer tokens. Without a `jwksUri` this is the same entry as a
    /// login's of that issuer (without endpoint overrides), so keys are fetched once.
    pub fn for_bearer(bearer: &BearerPolicy) -> Self {
        Self {
            issuer: bearer.issuer.clone(),
            authorization_endpoint: None,
            token_endpoint: None,
            user_info_endpoint: None,
            jwks_uri: bearer.jwks_uri.clone(),
        }
    }
}

/// A provider as discovery described it, with the configuration's overrides applied.
pub struct Provider {
    pub meta: ProviderMetadata,
    pub algs: Vec<Alg>,
    pub jwks: ArcSwap<Jwks>,
    /// When unknown `kid`s may refetch the keys again (one state per provider, so
    /// made-up `kid`s remember nothing each).
    kid_refetch: Mutex<KidRefetch>,
}

/// The back-off of unknown-`kid` refetches of one provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KidRefetch {
    last: Option<Instant>,
    /// Refetches in a row that did not find the `kid` they were made for.
    misses: u32,
}

/// How long after a refetch the next one may run, after `misses` refetches in a row
/// that found nothing new: none after a hit, then 1 s, 2 s, 4 s, … at most 60 s.
pub fn kid_refetch_delay(misses: u32) -> Duration {
    match misses {
        0 => Duration::ZERO,
        n => FIRST_KID_BACKOFF
            .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
            .min(MAX_KID_BACKOFF),
    }
}

impl KidRefetch {
    /// Whether an unknown `kid` may refetch the keys at `now` (and notes that it does).
    pub fn may_refetch(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let since = now.saturating_duration_since(last);
            if since < kid_refetch_delay(self.misses) {
                return false;
            }
            // Quiet for long: the next unknown kid is news again.
            if since >= 2 * MAX_KID_BACKOFF {
                self.misses = 0;
            }
        }
        self.last = Some(now);
        true
    }

    /// The refetch found the `kid` (`true`) or not.
    pub fn fetched(&mut self, found: bool) {
        self.misses = if found {
            0
        } else {
            self.misses.saturating_add(1)
        };
    }
}

/// The last check of one configuration, for status.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    Ok,
    Failing(IdpError),
}

struct Entry {
    current: ArcSwapOption<Provider>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    state: Mutex<EntryState>,
}

struct EntryState {
    fetched_at: Option<Instant>,
    /// The last fetch, whatever its outcome.
    checked_at: Option<Instant>,
    last_used: Instant,
    failure: Option<Failure>,
}

struct Failure {
    error: IdpError,
    retry_at: Instant,
    backoff: Duration,
}

pub struct Registry {
    idp: IdpClient,
    entries: Mutex<HashMap<ProviderKey, Arc<Entry>>>,
    /// `portcullis_idp_up{issuer}`: 1 when the last fetch of discovery and keys
    /// worked, 0 when it failed.
    up: prometheus::IntGaugeVec,
}

impl Registry {
    pub fn new(idp: IdpClient) -> Self {
        let up = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "idp_up",
                "1 when the provider's discovery and keys last loaded, 0 when that failed, by issuer",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        Self {
            idp,
            entries: Mutex::new(HashMap::new()),
            up,
        }
    }

    /// The health gauge, for the process's metrics registry.
    pub fn health_metric(&self) -> prometheus::IntGaugeVec {
        self.up.clone()
    }

    pub fn client(&self) -> &IdpClient {
        &self.idp
    }

    fn entry(&self, key: &ProviderKey) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    current: ArcSwapOption::empty(),
                    fetching: tokio::sync::Mutex::new(()),
                    state: Mutex::new(EntryState {
                        fetched_at: None,
                        checked_at: None,
                        last_used: Instant::now(),
                        failure: None,
                    }),
                })
            })
            .clone()
    }

    /// The provider of this configuration: cached, or fetched once for everyone
    /// waiting; a recent failure is answered from memory until its back-off ends.
    pub async fn get(&self, key: &ProviderKey) -> Result<Arc<Provider>, IdpError> {
        let entry = self.entry(key);
        let backing_off = {
            let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
            state.last_used = Instant::now();
            state.recent_failure()
        };
        if let Some(p) = entry.current.load_full() {
            return Ok(p);
        }
        if let Some(e) = backing_off {
            return Err(e);
        }
        let _one = entry.fetching.lock().await;
        if let Some(p) = entry.current.load_full() {
            return Ok(p);
        }
        if let Some(e) = entry
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recent_failure()
        {
            return Err(e);
        }
        self.fetch_into(key, &entry).await
    }

    async fn fetch_into(
        &self,
        key: &ProviderKey,
        entry: &Entry,
    ) -> Result<Arc<Provider>, IdpError> {
        let fetched = self.fetch(key).await;
        self.up
            .with_label_values(&[key.issuer.as_str()])
            .set(i64::from(fetched.is_ok()));
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        state.checked_at = Some(Instant::now());
        match fetched {
            Ok(provider) => {
                let provider = Arc::new(provider);
                entry.current.store(Some(provider.clone()));
                state.fetched_at = Some(Instant::now());
                state.failure = None;
                Ok(provider)
            }
            Err(e) => {
                let backoff = state
                    .failure
                    .as_ref()
                    .map_or(FIRST_BACKOFF, |f| (f.backoff * 2).min(MAX_BACKOFF));
                state.failure = Some(Failure {
                    error: e.clone(),
                    retry_at: Instant::now() + backoff,
                    backoff,
                });
                Err(e)
            }
        }
    }

    async fn fetch(&self, key: &ProviderKey) -> Result<Provider, IdpError> {
        if let Some(jwks_uri) = &key.jwks_uri {
            return self.fetch_keys_only(key, jwks_uri).await;
        }
        let mut meta = self.idp.discover(&key.issuer).await?;
        // Endpoints given in the AuthRule win over discovery, as with ALB.
        if let Some(e) = &key.authorization_endpoint {
            meta.authorization_endpoint = e.clone();
        }
        if let Some(e) = &key.token_endpoint {
            meta.token_endpoint = e.clone();
        }
        if let Some(e) = &key.user_info_endpoint {
            meta.userinfo_endpoint = Some(e.clone());
        }
        check_discovered(&meta)?;
        let jwks = self.idp.jwks(&meta.jwks_uri).await?;
        let algs = id_token::allowed_algs(meta.id_token_signing_alg_values_supported.as_deref());
        Ok(Provider {
            meta,
            algs,
            jwks: ArcSwap::from_pointee(jwks),
            kid_refetch: Mutex::default(),
        })
    }

    /// An issuer known only by its keys (`spec.bearer.jwksUri`, as ALB's `jwt-validation`
    /// takes it): no discovery, no endpoints but the keys'.
    async fn fetch_keys_only(
        &self,
        key: &ProviderKey,
        jwks_uri: &str,
    ) -> Result<Provider, IdpError> {
        check_endpoint_url(jwks_uri).map_err(|why| IdpError::Invalid {
            hop: Hop::Jwks,
            detail: format!("jwks_uri {jwks_uri:?} {why}"),
        })?;
        let jwks = self.idp.jwks(jwks_uri).await?;
        Ok(Provider {
            meta: ProviderMetadata {
                issuer: key.issuer.clone(),
                authorization_endpoint: String::new(),
                token_endpoint: String::new(),
                userinfo_endpoint: None,
                jwks_uri: jwks_uri.to_owned(),
                end_session_endpoint: None,
                id_token_signing_alg_values_supported: None,
                authorization_response_iss_parameter_supported: false,
            },
            algs: id_token::allowed_algs(None),
            jwks: ArcSwap::from_pointee(jwks),
            kid_refetch: Mutex::default(),
        })
    }

    /// Refetches the provider's keys for a token signed with an unknown `kid`, when
    /// the provider's back-off allows. Returns whether the keys were replaced.
    pub async fn refetch_keys_for(&self, provider: &Provider, kid: &str) -> Result<bool, IdpError> {
        let allowed = provider
            .kid_refetch
            .lock()
            .is_ok_and(|mut r| r.may_refetch(Instant::now()));
        if !allowed {
            return Ok(false);
        }
        let fetched = self.idp.jwks(&provider.meta.jwks_uri).await;
        let found = fetched.as_ref().is_ok_and(|jwks| {
            jwks.keys
                .iter()
                .any(|k| k.kid.as_deref() == Some(kid) || kid.is_empty())
        });
        if let Ok(mut r) = provider.kid_refetch.lock() {
            r.fetched(found);
        }
        provider.jwks.store(Arc::new(fetched?));
        Ok(true)
    }

    /// The configuration's health, read again when the last check is older than
    /// `max_age` (what status reports; the fresh answer serves requests too).
    pub async fn check(&self, key: &ProviderKey, max_age: Duration) -> Health {
        let entry = self.entry(key);
        let stale = |entry: &Entry| {
            let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
            state.last_used = Instant::now();
            state.checked_at.is_none_or(|t| t.elapsed() >= max_age)
        };
        if stale(&entry) {
            let _one = entry.fetching.lock().await;
            if stale(&entry) {
                let _ = self.fetch_into(key, &entry).await;
            }
        }
        self.health(key).unwrap_or(Health::Ok)
    }

    /// The last check of a configuration; `None` before its first.
    pub fn health(&self, key: &ProviderKey) -> Option<Health> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let state = entries
            .get(key)?
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (&state.failure, state.fetched_at) {
            (Some(f), _) => Some(Health::Failing(f.error.clone())),
            (None, Some(_)) => Some(Health::Ok),
            (None, None) => None,
        }
    }

    /// One pass of the background work: refresh what is older than `REFRESH_AFTER`
    /// (or failed and due again), forget what nobody used for long.
    pub async fn refresh_due(&self) {
        let due: Vec<(ProviderKey, Arc<Entry>)> = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|_, e| {
                e.state
                    .lock()
                    .map(|s| s.last_used.elapsed() < FORGET_AFTER)
                    .unwrap_or(false)
            });
            entries
                .iter()
                .filter(|(_, e)| e.state.lock().is_ok_and(|s| s.due()))
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect()
        };
        for (key, entry) in due {
            let Ok(_one) = entry.fetching.try_lock() else {
                continue;
            };
            if let Err(e) = self.fetch_into(&key, &entry).await {
                tracing::warn!(issuer = %key.issuer, error = %e, "provider refresh failed; the last good discovery and keys stay in use");
            }
        }
    }

    /// Runs `refresh_due` every few seconds for as long as the registry lives.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                registry.refresh_due().await;
            }
        });
    }
}

impl EntryState {
    fn recent_failure(&self) -> Option<IdpError> {
        self.failure
            .as_ref()
            .filter(|f| Instant::now() < f.retry_at)
            .map(|f| f.error.clone())
    }

    fn due(&self) -> bool {
        match (&self.failure, self.fetched_at) {
            (Some(f), _) => Instant::now() >= f.retry_at,
            (None, Some(at)) => at.elapsed() >= REFRESH_AFTER,
            (None, None) => false,
        }
    }
}

/// Endpoints read from discovery are held to the rules configured ones are: https
/// (plain http only on loopback), no user info, and no link-local or cloud metadata
/// address.
fn check_discovered(meta: &ProviderMetadata) -> Result<(), IdpError> {
    let endpoints = [
        ("authorization_endpoint", Some(&meta.authorization_endpoint)),
        ("token_endpoint", Some(&meta.token_endpoint)),
        ("userinfo_endpoint", meta.userinfo_endpoint.as_ref()),
        ("jwks_uri", Some(&meta.jwks_uri)),
        ("end_session_endpoint", meta.end_session_endpoint.as_ref()),
    ];
    for (name, url) in endpoints {
        let Some(url) = url else { continue };
        if let Err(why) = check_endpoint_url(url) {
            return Err(IdpError::Invalid {
                hop: Hop::Discovery,
                detail: format!("{name} {url:?} {why}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(token: &str) -> ProviderMetadata {
        ProviderMetadata {
            issuer: "https://idp.test".into(),
            authorization_endpoint: "https://idp.test/auth".into(),
            token_endpoint: token.into(),
            userinfo_endpoint: None,
            jwks_uri: "https://idp.test/jwks".into(),
            end_session_endpoint: None,
            id_token_signing_alg_values_supported: None,
            authorization_response_iss_parameter_supported: false,
        }
    }

    #[test]
    fn discovered_endpoints_are_checked_like_configured_ones() {
        assert!(check_discovered(&meta("https://idp.test/token")).is_ok());
        assert!(check_discovered(&meta("http://127.0.0.1:9/token")).is_ok());
        for bad in [
            "http://idp.test/token",
            "https://169.254.169.254/latest",
            "https://[fe80::1]/token",
            "https://user@idp.test/token",
            "ftp://idp.test/token",
        ] {
            assert!(check_discovered(&meta(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_unknown_kid_schedule_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (0..10).map(|n| kid_refetch_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(kid_refetch_delay(u32::MAX), MAX_KID_BACKOFF);
    }

    /// A provider whose JWKS shows a new key 3 s after its first token: with a fake
    /// clock, logins fail for about those 3 s, not a minute.
    #[test]
    fn an_unknown_kid_refetches_with_backoff_on_a_fake_clock() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = KidRefetch::default();
        let published_at = 3_000;
        let mut fetches = Vec::new();
        let mut found_at = None;
        // A login every 100 ms for 10 s.
        for ms in (0..10_000).step_by(100) {
            if found_at.is_some() {
                break;
            }
            if r.may_refetch(at(ms)) {
                fetches.push(ms);
                let found = ms >= published_at;
                r.fetched(found);
                if found {
                    found_at = Some(ms);
                }
            }
        }
        assert_eq!(fetches, [0, 1_000, 3_000]);
        assert_eq!(found_at, Some(3_000));
        assert_eq!(r.misses, 0, "a hit resets the back-off");
        assert!(
            r.may_refetch(at(3_000)),
            "the next rotation is news at once"
        );

        // Made-up kids, one every 100 ms for ten minutes: the fetches thin out to one
        // a minute.
        let mut r = KidRefetch::default();
        let mut fetches = Vec::new();
        for ms in (0..600_000).step_by(100) {
            if r.may_refetch(at(ms)) {
                fetches.push(ms / 1000);
                r.fetched(false);
            }
        }
        assert_eq!(&fetches[..8], [0, 1, 3, 7, 15, 31, 63, 123]);
        assert!(fetches.len() <= 16, "{fetches:?}");
        assert!(fetches.windows(2).skip(7).all(|w| w[1] - w[0] == 60));
        // Quiet for two minutes, then an unknown kid refetches at once.
        let last = *fetches.last().unwrap() * 1000;
        assert!(!r.may_refetch(at(last + 59_000)));
        assert!(r.may_refetch(at(last + 130_000)));
        r.fetched(false);
        assert!(!r.may_refetch(at(last + 130_500)));
        assert!(r.may_refetch(at(last + 131_000)), "back to one second");
    }

    #[test]
    fn keys_differ_by_every_override() {
        let base = ProviderKey {
            issuer: "https://idp.test".into(),
            authorization_endpoint: None,
            token_endpoint: None,
            user_info_endpoint: None,
            jwks_uri: None,
        };
        let other = ProviderKey {
            token_endpoint: Some("https://evil.test/token".into()),
            ..base.clone()
        };
        assert_ne!(base, other);
    }
}
