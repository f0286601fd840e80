//! The session cookie: the login's result, sealed with AES-256-GCM (aws-lc-rs, the
//! same provider as TLS), bound to the AuthRule and host that issued it, and split into
//! `NAME-0` .. `NAME-3` shards of at most 4 KiB when large, as ALB does.
//!
//! Value layout before base64: version (1) | key id (1) | nonce (12) | ciphertext+tag.
//! The key id lets keys rotate: new sessions use the first key, older ones still open
//! with any key of the ring.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

const VERSION: u8 = 1;
pub const MAX_SHARDS: usize = 4;
/// Room for the cookie name and attributes within a browser's 4096-byte limit.
pub const SHARD_VALUE_BYTES: usize = 4000;
/// ALB refuses logins whose claims and access token exceed 11 KiB.
pub const MAX_CLAIMS_BYTES: usize = 11 * 1024;
/// The cookie's own lifetime; the real session lifetime is inside the sealed value.
pub const COOKIE_MAX_AGE_SECS: u64 = 604_800;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error(
        "the session cookie is not one of ours (malformed, tampered with, or for another rule)"
    )]
    Invalid,
    #[error("the session's claims and access token take {0} bytes, more than 11 KiB")]
    ClaimsTooLarge(usize),
    #[error("the sealed session needs {0} bytes, more than 4 shards of 4 KiB")]
    TooLarge(usize),
    #[error("a session key must be 32 bytes")]
    BadKey,
    #[error("sealing failed")]
    Seal,
}

/// What a completed login leaves behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `sub` of the user (from userinfo, equal to the ID token's).
    pub sub: String,
    /// The userinfo response, passed on in `x-amzn-oidc-data`.
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// For the logout's `id_token_hint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Unix seconds when the access token expires (refresh after).
    pub access_expires_at: i64,
    /// Unix seconds when the session ends (`spec.session.timeout` after login).
    pub expires_at: i64,
}

/// Session keys, newest first.
pub struct KeyRing {
    keys: Vec<(u8, RandomizedNonceKey)>,
}

impl KeyRing {
    pub fn new(keys: &[Vec<u8>]) -> Result<Self, SessionError> {
        if keys.is_empty() {
            return Err(SessionError::BadKey);
        }
        let keys = keys
            .iter()
            .map(|k| {
                let key =
                    RandomizedNonceKey::new(&AES_256_GCM, k).map_err(|_| SessionError::BadKey)?;
                Ok((key_id(k), key))
            })
            .collect::<Result<_, SessionError>>()?;
        Ok(Self { keys })
    }
}

/// A stable one-byte id per key, the same on every replica.
fn key_id(key: &[u8]) -> u8 {
    digest(&SHA256, key).as_ref()[0]
}

/// Seals `session` for `binding` (the AuthRule and host) into shard values.
pub fn seal(ring: &KeyRing, binding: &str, session: &Session) -> Result<Vec<String>, SessionError> {
    let claims_bytes = serde_json::to_vec(&session.claims)
        .map_err(|_| SessionError::Seal)?
        .len()
        + session.access_token.len();
    if claims_bytes > MAX_CLAIMS_BYTES {
        return Err(SessionError::ClaimsTooLarge(claims_bytes));
    }
    let (id, key) = &ring.keys[0];
    let mut in_out = serde_json::to_vec(session).map_err(|_| SessionError::Seal)?;
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad(binding)), &mut in_out)
        .map_err(|_| SessionError::Seal)?;
    let mut raw = Vec::with_capacity(2 + NONCE_LEN + in_out.len());
    raw.extend_from_slice(&[VERSION, *id]);
    raw.extend_from_slice(nonce.as_ref());
    raw.extend_from_slice(&in_out);
    let value = STANDARD.encode(raw);
    if value.len() > MAX_SHARDS * SHARD_VALUE_BYTES {
        return Err(SessionError::TooLarge(value.len()));
    }
    Ok(value
        .as_bytes()
        .chunks(SHARD_VALUE_BYTES)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect())
}

/// Opens the shard values of a session for `binding`; any doubt is `Invalid`.
pub fn open(ring: &KeyRing, binding: &str, shards: &[String]) -> Result<Session, SessionError> {
    let value: String = shards.concat();
    if shards.is_empty()
        || shards.len() > MAX_SHARDS
        || value.len() > MAX_SHARDS * SHARD_VALUE_BYTES
    {
        return Err(SessionError::Invalid);
    }
    let raw = STANDARD.decode(value).map_err(|_| SessionError::Invalid)?;
    if raw.len() < 2 + NONCE_LEN + 16 || raw[0] != VERSION {
        return Err(SessionError::Invalid);
    }
    let (id, nonce, sealed) = (raw[1], &raw[2..2 + NONCE_LEN], &raw[2 + NONCE_LEN..]);
    for (_, key) in ring.keys.iter().filter(|(k, _)| *k == id) {
        let mut in_out = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SessionError::Invalid)?;
        if let Ok(plain) = key.open_in_place(nonce, Aad::from(aad(binding)), &mut in_out) {
            return serde_json::from_slice(plain).map_err(|_| SessionError::Invalid);
        }
    }
    Err(SessionError::Invalid)
}

fn aad(binding: &str) -> Vec<u8> {
    format!("portcullis-session-v{VERSION}|{binding}").into_bytes()
}

/// The shard values of cookie `name` (`NAME-0`, `NAME-1`, ... in order) from the
/// request's `Cookie` headers; `None` when `NAME-0` is absent.
pub fn read_shards<'a>(
    cookie_headers: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Option<Vec<String>> {
    let mut found: [Option<String>; MAX_SHARDS] = Default::default();
    for header in cookie_headers {
        for pair in header.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            let index = k
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|i| i.parse::<usize>().ok());
            if let Some(slot) = index.and_then(|i| found.get_mut(i)) {
                slot.get_or_insert_with(|| v.to_owned());
            }
        }
    }
    let shards: Vec<String> = found.into_iter().map_while(|s| s).collect();
    (!shards.is_empty()).then_some(shards)
}

/// `Set-Cookie` values for the shards, expiring any higher shard a larger earlier
/// session may have left behind.
pub fn set_cookie_headers(name: &str, shards: &[String], secure: bool) -> Vec<String> {
    let attrs = |max_age: u64| {
        format!(
            "Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        )
    };
    (0..MAX_SHARDS)
        .map(|i| match shards.get(i) {
            Some(v) => format!("{name}-{i}={v}; {}", attrs(COOKIE_MAX_AGE_SECS)),
            None => format!("{name}-{i}=; {}", attrs(0)),
        })
        .collect()
}

/// `Set-Cookie` values that end the session (logout, invalid cookie).
pub fn clear_cookie_headers(name: &str, secure: bool) -> Vec<String> {
    set_cookie_headers(name, &[], secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seed: u8) -> KeyRing {
        KeyRing::new(&[vec![seed; 32]]).unwrap()
    }

    fn session(claim_bytes: usize) -> Session {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "user-1".into());
        claims.insert("blob".into(), "x".repeat(claim_bytes).into());
        Session {
            sub: "user-1".into(),
            claims,
            access_token: "at".into(),
            refresh_token: Some("rt".into()),
            id_token: None,
            access_expires_at: 100,
            expires_at: 200,
        }
    }

    #[test]
    fn a_sealed_session_opens_for_its_binding_only() {
        let r = ring(1);
        let shards = seal(&r, "apps/sso|app.example.com", &session(10)).unwrap();
        assert_eq!(shards.len(), 1);
        assert_eq!(
            open(&r, "apps/sso|app.example.com", &shards).unwrap(),
            session(10)
        );
        assert_eq!(
            open(&r, "apps/other|app.example.com", &shards),
            Err(SessionError::Invalid),
            "another rule"
        );
        assert_eq!(
            open(&r, "apps/sso|evil.example.com", &shards),
            Err(SessionError::Invalid),
            "another host"
        );
        assert_eq!(
            open(&ring(2), "apps/sso|app.example.com", &shards),
            Err(SessionError::Invalid),
            "another key"
        );
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let r = ring(1);
        let value = seal(&r, "b", &session(10)).unwrap().concat();
        let mut raw = STANDARD.decode(&value).unwrap();
        for i in [0, 1, 5, raw.len() / 2, raw.len() - 1] {
            raw[i] ^= 1;
            assert_eq!(
                open(&r, "b", &[STANDARD.encode(&raw)]),
                Err(SessionError::Invalid),
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        assert_eq!(
            open(&r, "b", &["not base64!".into()]),
            Err(SessionError::Invalid)
        );
        assert_eq!(open(&r, "b", &[]), Err(SessionError::Invalid));
    }

    #[test]
    fn rotated_keys_still_open_older_sessions() {
        let old = KeyRing::new(&[vec![1; 32]]).unwrap();
        let shards = seal(&old, "b", &session(10)).unwrap();
        let rotated = KeyRing::new(&[vec![9; 32], vec![1; 32]]).unwrap();
        assert!(open(&rotated, "b", &shards).is_ok());
        let fresh = seal(&rotated, "b", &session(10)).unwrap();
        assert_eq!(
            open(&old, "b", &fresh),
            Err(SessionError::Invalid),
            "new sessions use the new key"
        );
        assert!(KeyRing::new(&[vec![1; 16]]).is_err());
    }

    #[test]
    fn large_sessions_shard_and_oversize_ones_are_refused() {
        let r = ring(1);
        let shards = seal(&r, "b", &session(8000)).unwrap();
        assert_eq!(shards.len(), 3);
        assert!(shards.iter().all(|s| s.len() <= SHARD_VALUE_BYTES));
        assert_eq!(open(&r, "b", &shards).unwrap(), session(8000));
        assert!(matches!(
            seal(&r, "b", &session(11 * 1024)),
            Err(SessionError::ClaimsTooLarge(_))
        ));
    }

    #[test]
    fn shards_are_read_in_order_and_stop_at_a_gap() {
        let headers = ["a=1; S-1=two; S-0=one", "S-3=four; S-0=ignored; SX-0=no"];
        assert_eq!(
            read_shards(headers, "S"),
            Some(vec!["one".to_string(), "two".to_string()])
        );
        assert_eq!(read_shards(["S-1=x"], "S"), None);
        assert_eq!(read_shards(["other=1"], "S"), None);
    }

    #[test]
    fn set_cookie_writes_shards_and_expires_the_rest() {
        let headers =
            set_cookie_headers("AWSELBAuthSessionCookie", &["a".into(), "b".into()], true);
        assert_eq!(headers.len(), 4);
        assert_eq!(
            headers[0],
            "AWSELBAuthSessionCookie-0=a; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(headers[2].starts_with("AWSELBAuthSessionCookie-2=; Path=/; Max-Age=0;"));
        assert!(
            clear_cookie_headers("S", false)
                .iter()
                .all(|h| h.contains("Max-Age=0") && !h.contains("Secure"))
        );
    }
}
