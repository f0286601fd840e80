//! Logouts announced by providers (back-channel tokens, front-channel requests) and
//! the logout-token `jti`s already taken. In process here; with `--redis-url` the
//! shared store keeps them for every replica and this table mirrors it.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use crate::model::DEFAULT_SESSION_TIMEOUT_SECONDS;

/// What a revocation ends: every session of a provider session (`sid`) or of a user
/// (`sub`). A front-channel logout names a `sid` without proof of origin, so it only
/// reaches sessions of the namespace whose host received it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revoked {
    Sid(String),
    Sub(String),
    SidIn { namespace: String, sid: String },
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
}

/// The revocations this replica knows of, by issuer and key, with when they happened.
#[derive(Default)]
pub struct RevocationTable {
    revoked: RwLock<HashMap<(String, String), i64>>,
    jtis: Mutex<HashMap<String, i64>>,
}

impl RevocationTable {
    pub fn insert(&self, issuer: &str, key: String, at: i64) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        // A session lasts at most a week: older logouts can match nothing.
        revoked.retain(|_, t| at - *t <= DEFAULT_SESSION_TIMEOUT_SECONDS);
        let entry = revoked.entry((issuer.to_owned(), key)).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// When the latest of these revocations happened, if any did.
    pub fn latest(&self, issuer: &str, keys: &[Revoked]) -> Option<i64> {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        if revoked.is_empty() {
            return None;
        }
        keys.iter()
            .filter_map(|k| revoked.get(&(issuer.to_owned(), k.key())).copied())
            .max()
    }

    /// Takes a logout token's `jti` once; false when it was taken before.
    pub fn take_jti(&self, jti: &str, iat: i64, now: i64, keep_secs: i64) -> bool {
        let mut jtis = self.jtis.lock().unwrap_or_else(|e| e.into_inner());
        jtis.retain(|_, t| now - *t <= keep_secs);
        jtis.insert(jti.to_owned(), iat).is_none()
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
    fn a_jti_is_taken_once() {
        let t = RevocationTable::default();
        assert!(t.take_jti("j", 100, 100, 600));
        assert!(!t.take_jti("j", 100, 200, 600));
        assert!(
            t.take_jti("j", 100, 1000, 600),
            "forgotten after it could be valid"
        );
    }
}
