//! Logouts announced by providers (back-channel tokens, front-channel requests) and
//! the logout-token `jti`s already taken. In process here; with `--redis-url` the
//! shared store keeps them for every replica and this table mirrors it.
//!
//! Everything here can be made to grow by requests from outside (a front-channel
//! logout needs no proof of origin), so every part is bounded by weight, in bytes:
//!
//! - per issuer, the **signed** revocations (back-channel logout tokens, checked
//!   against the provider's keys) and the **unsigned** ones (front-channel requests)
//!   live in two caches with budgets of their own, so a flood of front-channel
//!   requests can only push out front-channel revocations, never one the provider
//!   signed;
//! - each cache evicts its coldest entry (quick_cache's CLOCK-Pro: entries that
//!   sessions keep looking up stay; entries nobody asked for go, oldest first) and
//!   counts it in `portcullis_revocations_evicted_total{kind}`;
//! - the number of issuers is bounded too (revocations are only recorded for issuers
//!   of configured AuthRules; the bound guards the Redis mirror).
//!
//! An insert is O(1): nothing is rescanned. A revocation older than the longest
//! session can match nothing, so entries need no expiry of their own: they age out
//! of the cache as newer ones arrive.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

/// The longest front-channel `sid` taken. Providers' session ids are UUIDs or a few
/// dozen characters; a longer one is refused (400, `AuthLogoutSidTooLong`) before
/// anything is recorded.
pub const MAX_SID_BYTES: usize = 512;

/// What a revocation ends: every session of a provider session (`sid`) or of a user
/// (`sub`). A front-channel logout names a `sid` without proof of origin, so it only
/// reaches sessions of the namespace whose host received it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revoked {
    Sid(String),
    Sub(String),
    SidIn { namespace: String, sid: String },
}

/// Where a revocation came from, which decides the budget it is kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A logout token signed by the provider (back-channel).
    Signed,
    /// A front-channel request: anyone who knows the issuer's URL can send one.
    Unsigned,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Self::Signed => "signed",
            Self::Unsigned => "front_channel",
        }
    }

    /// Which budget a stored key (`Revoked::key`) belongs to.
    pub fn of_key(key: &str) -> Self {
        if key.starts_with("ns:") {
            Self::Unsigned
        } else {
            Self::Signed
        }
    }
}

impl Revoked {
    /// The key's text, as stored (also in Redis).
    pub fn key(&self) -> String {
        match self {
            Self::Sid(sid) => format!("sid:{sid}"),
            Self::Sub(sub) => format!("sub:{sub}"),
            Self::SidIn { namespace, sid } => format!("ns:{namespace}|sid:{sid}"),
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            Self::Sid(_) | Self::Sub(_) => Origin::Signed,
            Self::SidIn { .. } => Origin::Unsigned,
        }
    }
}

/// The budgets of one table, in bytes of key text plus a fixed overhead per entry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Per issuer, revocations the provider signed.
    pub signed_bytes: u64,
    /// Per issuer, front-channel revocations.
    pub unsigned_bytes: u64,
    /// Issuers with a table of their own.
    pub issuers: usize,
    /// Logout-token `jti`s remembered (by count).
    pub jtis: usize,
}

/// What one entry costs beyond its key's text: the cache's slot, the `String`
/// header, the time.
pub const ENTRY_OVERHEAD: u64 = 96;

impl Default for Limits {
    fn default() -> Self {
        Self {
            signed_bytes: 16 << 20,
            unsigned_bytes: 4 << 20,
            issuers: 256,
            jtis: 100_000,
        }
    }
}

#[derive(Clone)]
struct ByLength;

impl Weighter<String, i64> for ByLength {
    fn weight(&self, key: &String, _: &i64) -> u64 {
        key.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Counts what a cache evicts.
#[derive(Clone)]
struct CountEvictions(prometheus::IntCounter);

impl<K, V> Lifecycle<K, V> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _: K, _: V) {
        self.0.inc();
    }
}

type Revocations = Cache<String, i64, ByLength, DefaultHashBuilder, CountEvictions>;

struct IssuerTable {
    signed: Revocations,
    unsigned: Revocations,
}

/// The revocations this replica knows of, by issuer and key, with when they happened.
pub struct RevocationTable {
    limits: Limits,
    issuers: RwLock<HashMap<String, Arc<IssuerTable>>>,
    jtis: Cache<String, i64, quick_cache::UnitWeighter, DefaultHashBuilder, CountEvictions>,
    /// `portcullis_revocations_evicted_total{kind}`.
    evicted: prometheus::IntCounterVec,
    /// Revocations dropped because their issuer found no room.
    refused_issuers: prometheus::IntCounter,
}

impl Default for RevocationTable {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

fn cache_of(bytes: u64, evicted: prometheus::IntCounter) -> Revocations {
    // Estimated items: a front-channel key of a UUID sid is about 150 bytes with its
    // overhead; the estimate only sizes the hash table up front.
    let items = (bytes / 256).clamp(16, 65_536) as usize;
    Cache::with(
        items,
        bytes,
        ByLength,
        DefaultHashBuilder::default(),
        CountEvictions(evicted),
    )
}

impl RevocationTable {
    pub fn new(limits: Limits) -> Self {
        let evicted = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "revocations_evicted_total",
                "Revocations (logouts announced by providers) and logout-token jtis forgotten to stay within their memory bounds, by kind (signed, front_channel, jti, issuer)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for kind in ["signed", "front_channel", "jti", "issuer"] {
            evicted.with_label_values(&[kind]);
        }
        let jtis = Cache::with(
            limits.jtis.min(65_536),
            limits.jtis as u64,
            quick_cache::UnitWeighter,
            DefaultHashBuilder::default(),
            CountEvictions(evicted.with_label_values(&["jti"])),
        );
        Self {
            limits,
            issuers: RwLock::new(HashMap::new()),
            jtis,
            refused_issuers: evicted.with_label_values(&["issuer"]),
            evicted,
        }
    }

    /// The eviction counter, for the process's metrics registry.
    pub fn evicted_metric(&self) -> prometheus::IntCounterVec {
        self.evicted.clone()
    }

    fn issuer(&self, issuer: &str) -> Option<Arc<IssuerTable>> {
        if let Some(t) = self
            .issuers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(issuer)
        {
            return Some(t.clone());
        }
        let mut issuers = self.issuers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = issuers.get(issuer) {
            return Some(t.clone());
        }
        if issuers.len() >= self.limits.issuers {
            self.refused_issuers.inc();
            return None;
        }
        let table = Arc::new(IssuerTable {
            signed: cache_of(
                self.limits.signed_bytes,
                self.evicted.with_label_values(&[Origin::Signed.label()]),
            ),
            unsigned: cache_of(
                self.limits.unsigned_bytes,
                self.evicted.with_label_values(&[Origin::Unsigned.label()]),
            ),
        });
        issuers.insert(issuer.to_owned(), table.clone());
        Some(table)
    }

    /// Records that `key` of `issuer` was revoked at `at` (the later time wins).
    pub fn insert(&self, issuer: &str, key: String, at: i64) {
        let Some(table) = self.issuer(issuer) else {
            tracing::warn!(issuer, "a revocation was dropped: too many issuers");
            return;
        };
        let cache = match Origin::of_key(&key) {
            Origin::Signed => &table.signed,
            Origin::Unsigned => &table.unsigned,
        };
        let found = cache.entry(&key, None, |_, t| {
            *t = (*t).max(at);
            EntryAction::Retain(())
        });
        if let EntryResult::Vacant(guard) = found {
            let _ = guard.insert(at);
        }
    }

    /// When the latest of these revocations happened, if any did.
    pub fn latest(&self, issuer: &str, keys: &[Revoked]) -> Option<i64> {
        let table = self
            .issuers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(issuer)?
            .clone();
        keys.iter()
            .filter_map(|k| {
                let cache = match k.origin() {
                    Origin::Signed => &table.signed,
                    Origin::Unsigned => &table.unsigned,
                };
                cache.get(k.key().as_str())
            })
            .max()
    }

    /// Takes a logout token's `jti` once; false when it was taken before. A `jti` is
    /// kept until `keep_secs` after its token was issued; past that the token itself
    /// is refused as too old. Only tokens the provider signed reach here.
    pub fn take_jti(&self, jti: &str, iat: i64, now: i64, keep_secs: i64) -> bool {
        let key = super::shared::digest_hex(jti);
        let mut fresh = true;
        let found = self.jtis.entry(key.as_str(), None, |_, seen| {
            if now - *seen <= keep_secs {
                fresh = false;
            } else {
                *seen = iat;
            }
            EntryAction::Retain(())
        });
        if let EntryResult::Vacant(guard) = found {
            let _ = guard.insert(iat);
        }
        fresh
    }

    /// Entries and their weight, over all issuers: (signed, unsigned) in bytes.
    pub fn weight(&self) -> (u64, u64) {
        let issuers = self.issuers.read().unwrap_or_else(|e| e.into_inner());
        issuers.values().fold((0, 0), |(s, u), t| {
            (s + t.signed.weight(), u + t.unsigned.weight())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_match_by_issuer_and_key() {
        let t = RevocationTable::default();
        t.insert("https://a", Revoked::Sid("s1".into()).key(), 100);
        t.insert(
            "https://a",
            Revoked::SidIn {
                namespace: "team-a".into(),
                sid: "s2".into(),
            }
            .key(),
            200,
        );
        assert_eq!(
            t.latest("https://a", &[Revoked::Sid("s1".into())]),
            Some(100)
        );
        assert_eq!(t.latest("https://b", &[Revoked::Sid("s1".into())]), None);
        let in_a = Revoked::SidIn {
            namespace: "team-a".into(),
            sid: "s2".into(),
        };
        let in_b = Revoked::SidIn {
            namespace: "team-b".into(),
            sid: "s2".into(),
        };
        assert_eq!(
            t.latest("https://a", std::slice::from_ref(&in_b)),
            None,
            "another namespace"
        );
        assert_eq!(t.latest("https://a", &[in_b, in_a]), Some(200));
    }

    #[test]
    fn the_later_time_wins() {
        let t = RevocationTable::default();
        let k = Revoked::Sub("u".into());
        t.insert("https://a", k.key(), 300);
        t.insert("https://a", k.key(), 100);
        assert_eq!(t.latest("https://a", std::slice::from_ref(&k)), Some(300));
        t.insert("https://a", k.key(), 400);
        assert_eq!(t.latest("https://a", &[k]), Some(400));
    }

    #[test]
    fn a_jti_is_taken_once() {
        let t = RevocationTable::default();
        assert!(t.take_jti("j", 100, 100, 600));
        assert!(!t.take_jti("j", 100, 200, 600));
        assert!(
            t.take_jti("j", 100, 1000, 600),
            "forgotten after it could be valid"
        );
    }

    fn front(sid: &str) -> Revoked {
        Revoked::SidIn {
            namespace: "apps".into(),
            sid: sid.into(),
        }
    }

    #[test]
    fn a_flood_of_front_channel_logouts_stays_within_its_budget_and_spares_signed_ones() {
        let limits = Limits {
            signed_bytes: 64 << 10,
            unsigned_bytes: 256 << 10,
            issuers: 4,
            jtis: 100,
        };
        let t = RevocationTable::new(limits);
        let signed = Revoked::Sid("signed-by-the-idp".into());
        t.insert("https://a", signed.key(), 10);
        let big = "x".repeat(500);
        for i in 0..10_000 {
            t.insert("https://a", front(&format!("{i}{big}")).key(), 20 + i);
        }
        let (s, u) = t.weight();
        assert!(u <= limits.unsigned_bytes, "{u}");
        assert!(s <= limits.signed_bytes, "{s}");
        assert_eq!(
            t.latest("https://a", std::slice::from_ref(&signed)),
            Some(10),
            "the signed revocation survives the flood"
        );
        let evicted = t.evicted.with_label_values(&["front_channel"]).get();
        assert!(evicted > 9_000, "{evicted}");
        assert_eq!(t.evicted.with_label_values(&["signed"]).get(), 0);
        // The newest are kept.
        assert_eq!(
            t.latest("https://a", &[front(&format!("9999{big}"))]),
            Some(20 + 9999)
        );
    }

    #[test]
    fn issuers_and_jtis_are_bounded() {
        let t = RevocationTable::new(Limits {
            issuers: 2,
            jtis: 50,
            ..Limits::default()
        });
        for i in 0..5 {
            t.insert(&format!("https://{i}"), Revoked::Sub("u".into()).key(), 1);
        }
        assert_eq!(t.issuers.read().unwrap().len(), 2);
        assert_eq!(t.evicted.with_label_values(&["issuer"]).get(), 3);
        for i in 0..1_000 {
            assert!(t.take_jti(&format!("j{i}"), 100, 100, 600));
        }
        assert!(t.jtis.len() <= 50, "{}", t.jtis.len());
    }
}
