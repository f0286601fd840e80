//! The session cookie: the login's result, sealed with AES-256-GCM (aws-lc-rs, the
//! same provider as TLS), bound to the AuthRule and host that issued it, and split into
//! `NAME-0` .. `NAME-3` shards of at most 4 KiB when large, as ALB does.
//!
//! A rule with `spec.session.store: redis` keeps the sealed session in Redis instead:
//! the cookie carries a random id sealed like a session, and the record's name is an
//! HMAC of the id under a key derived from the session key, so neither a Redis dump
//! nor a guessed id makes a cookie that opens anything. The record is sealed to its
//! name: moved under another session's name, it no longer opens.

use serde::{Deserialize, Serialize};

use base64::Engine as _;

use super::sealed::{self, KeyIndex, KeyRing, Purpose};

pub const MAX_SHARDS: usize = 4;
/// Room for the cookie name and attributes within a browser's 4096-byte limit.
pub const SHARD_VALUE_BYTES: usize = 4000;
/// ALB refuses logins whose claims and access token exceed 11 KiB.
pub const MAX_CLAIMS_BYTES: usize = 11 * 1024;
/// The cookie's own lifetime; the real session lifetime is inside the sealed value.
pub const COOKIE_MAX_AGE_SECS: u64 = 604_800;
/// A session kept in Redis may be this large, sealed; a larger login is refused.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Random bytes in a server-side session's id (256 bits).
const ID_BYTES: usize = 32;

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
    #[error("sealing failed")]
    Seal,
    #[error("the sealed session needs {0} bytes, more than the 1 MiB a session in Redis may take")]
    RecordTooLarge(usize),
}

type Claims = serde_json::Map<String, serde_json::Value>;

/// What a completed login leaves behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `sub` of the user (from userinfo, equal to the ID token's).
    pub sub: String,
    /// The userinfo response, passed on in `x-amzn-oidc-data` (unless the rule asks
    /// for the ID token's claims too).
    #[serde(rename = "claims")]
    pub userinfo: Claims,
    /// The ID token's claims merged with userinfo's (`auth::claims::merge`): what
    /// authorization and claim headers read. Never stored: made from `id_token` and
    /// `userinfo` when the session is made or opened, so the cookie carries no copy.
    #[serde(skip)]
    pub claims: Claims,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// For the logout's `id_token_hint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The login that made this session, for its flow record's first request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    /// Unix seconds when the access token expires (refresh after).
    pub access_expires_at: i64,
    /// Unix seconds when the session ends (`spec.session.timeout` after login).
    pub expires_at: i64,
    /// The provider's session id (the ID token's `sid`), for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Unix seconds of the login; a logout at the provider after it ends the session.
    #[serde(default)]
    pub logged_in_at: i64,
    /// The name of its record in Redis, for a session kept there (never stored: it
    /// comes from the cookie).
    #[serde(skip)]
    pub record: Option<String>,
    /// The identity headers last made for it, reused while the signed one is fresh:
    /// an opened session is shared by its requests, which then copy and digest
    /// nothing to send them. Never stored.
    #[serde(skip)]
    pub identity: Memo<crate::auth::login::SignedIdentity>,
}

/// A value kept beside the data it was made from, as a cache in it: a copy starts
/// empty, and it takes no part in equality.
pub struct Memo<T>(std::sync::Mutex<Option<T>>);

impl<T> Memo<T> {
    /// What `read` takes from the value, when there is one.
    pub fn read<R>(&self, read: impl FnOnce(&T) -> Option<R>) -> Option<R> {
        let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().and_then(read)
    }

    pub fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl<T> Clone for Memo<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<T> PartialEq for Memo<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Memo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl Session {
    /// The session with `claims` made: `id_token_claims` (the validated ID token's,
    /// when at hand) or else those of the stored `id_token`, merged with userinfo's.
    /// An ID token that cannot be read makes the session invalid: it was validated
    /// before it was sealed, so this is never a real session.
    pub fn with_claims(mut self, id_token_claims: Option<&Claims>) -> Result<Self, SessionError> {
        let read;
        let from_token = match (id_token_claims, &self.id_token) {
            (Some(c), _) => c,
            (None, Some(token)) => {
                read = super::id_token::sealed_token_claims(token)
                    .map_err(|_| SessionError::Invalid)?;
                &read
            }
            (None, None) => &Claims::new(),
        };
        self.claims = super::claims::merge(from_token, &self.userinfo);
        Ok(self)
    }

    /// The stored ID token's claims (empty without one), for explaining a refusal.
    pub fn id_token_claims(&self) -> Claims {
        self.id_token
            .as_deref()
            .and_then(|t| super::id_token::sealed_token_claims(t).ok())
            .unwrap_or_default()
    }
}

/// Seals `session` for `binding` (the AuthRule and host) into shard values.
pub fn seal(ring: &KeyRing, binding: &str, session: &Session) -> Result<Vec<String>, SessionError> {
    let claims_bytes = serde_json::to_vec(&session.userinfo)
        .map_err(|_| SessionError::Seal)?
        .len()
        + session.access_token.len();
    if claims_bytes > MAX_CLAIMS_BYTES {
        return Err(SessionError::ClaimsTooLarge(claims_bytes));
    }
    let value = sealed::seal(ring, Purpose::Session, binding, session).ok_or(SessionError::Seal)?;
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
    sealed::open::<Session>(ring, Purpose::Session, binding, &value)
        .ok_or(SessionError::Invalid)?
        .with_claims(None)
}

/// A new server-side session's cookie value and its record's name.
pub fn new_reference(ring: &KeyRing, binding: &str) -> Result<(String, String), SessionError> {
    let mut id = [0u8; ID_BYTES];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| SessionError::Seal)?;
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
    let cookie = sealed::seal(ring, Purpose::SessionId, binding, &id).ok_or(SessionError::Seal)?;
    let name = record_name(ring, KeyIndex::NEWEST, binding, &id)?;
    Ok((cookie, name))
}

/// The record name a server-side session's cookie (one shard) points at; a cookie
/// that is not one of ours is `Invalid`.
pub fn open_reference(
    ring: &KeyRing,
    binding: &str,
    shards: &[String],
) -> Result<String, SessionError> {
    let [value] = shards else {
        return Err(SessionError::Invalid);
    };
    if value.len() > SHARD_VALUE_BYTES {
        return Err(SessionError::Invalid);
    }
    let (id, key) = sealed::open_keyed::<String>(ring, Purpose::SessionId, binding, value)
        .ok_or(SessionError::Invalid)?;
    // The key that sealed the cookie names the record, so rotating keys keeps it.
    record_name(ring, key, binding, &id)
}

fn record_name(
    ring: &KeyRing,
    key: KeyIndex,
    binding: &str,
    id: &str,
) -> Result<String, SessionError> {
    ring.tag(key, format!("{binding}|{id}").as_bytes())
        .ok_or(SessionError::Seal)
}

/// Seals `session` as the Redis record `name`, up to `MAX_RECORD_BYTES`.
pub fn seal_record(
    ring: &KeyRing,
    binding: &str,
    name: &str,
    session: &Session,
) -> Result<String, SessionError> {
    let value = sealed::seal(
        ring,
        Purpose::Session,
        &record_binding(binding, name),
        session,
    )
    .ok_or(SessionError::Seal)?;
    if value.len() > MAX_RECORD_BYTES {
        return Err(SessionError::RecordTooLarge(value.len()));
    }
    Ok(value)
}

/// Opens the Redis record `name`; one altered, or moved from another name, is `Invalid`.
pub fn open_record(
    ring: &KeyRing,
    binding: &str,
    name: &str,
    value: &str,
) -> Result<Session, SessionError> {
    if value.len() > MAX_RECORD_BYTES {
        return Err(SessionError::Invalid);
    }
    let mut session: Session = sealed::open(
        ring,
        Purpose::Session,
        &record_binding(binding, name),
        value,
    )
    .ok_or(SessionError::Invalid)?;
    session.record = Some(name.to_owned());
    session.with_claims(None)
}

fn record_binding(binding: &str, name: &str) -> String {
    format!("{binding}|record:{name}")
}

/// The shard values of cookie `name` (`NAME-0`, `NAME-1`, ... in order) from the
/// request's `Cookie` headers; `None` when `NAME-0` is absent.
pub fn read_shards<'a>(
    cookie_headers: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Option<Vec<String>> {
    let mut found: [Option<String>; MAX_SHARDS] = Default::default();
    for (k, v) in super::cookies::pairs(cookie_headers) {
        // Exactly `NAME-0` .. `NAME-3`: no sign, no leading zero, no other spelling.
        let index = k
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .filter(|i| i.len() == 1)
            .and_then(|i| i.parse::<usize>().ok());
        if let Some(slot) = index.and_then(|i| found.get_mut(i)) {
            slot.get_or_insert_with(|| v.to_owned());
        }
    }
    let shards: Vec<String> = found.into_iter().map_while(|s| s).collect();
    (!shards.is_empty()).then_some(shards)
}

/// `Set-Cookie` values for the shards, expiring any higher shard a larger earlier
/// session may have left behind. With `domain` (`spec.session.cookieDomain`) every
/// host under it receives them; without, only the host that set them.
pub fn set_cookie_headers(
    name: &str,
    domain: Option<&str>,
    shards: &[String],
    secure: bool,
) -> Vec<String> {
    let domain = domain.map(|d| format!("; Domain={d}")).unwrap_or_default();
    let attrs = |max_age: u64| {
        format!(
            "Path=/{domain}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
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
pub fn clear_cookie_headers(name: &str, domain: Option<&str>, secure: bool) -> Vec<String> {
    set_cookie_headers(name, domain, &[], secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn ring(seed: u8) -> KeyRing {
        KeyRing::new(&[vec![seed; 32]]).unwrap()
    }

    #[test]
    fn a_memo_keeps_what_fits_and_a_copy_starts_empty() {
        let memo: Memo<u32> = Memo::default();
        assert_eq!(memo.read(|v| Some(*v)), None);
        memo.set(7);
        assert_eq!(memo.read(|v| (*v == 7).then_some(*v)), Some(7));
        assert_eq!(
            memo.read(|v| (*v == 8).then_some(*v)),
            None,
            "only what fits"
        );
        assert_eq!(memo.clone().read(|v| Some(*v)), None, "a copy starts empty");
        assert!(memo == Memo::default(), "a memo takes no part in equality");
    }

    fn session(claim_bytes: usize) -> Session {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "user-1".into());
        claims.insert("blob".into(), "x".repeat(claim_bytes).into());
        Session {
            sub: "user-1".into(),
            userinfo: claims,
            claims: Claims::new(),
            access_token: "at".into(),
            refresh_token: Some("rt".into()),
            id_token: None,
            flow_id: None,
            access_expires_at: 100,
            sid: None,
            logged_in_at: 0,
            expires_at: 200,
            record: None,
            identity: Default::default(),
        }
        .with_claims(None)
        .unwrap()
    }

    #[test]
    fn the_id_tokens_claims_are_read_back_never_stored_twice() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let r = ring(1);
        let payload =
            serde_json::json!({"sub": "user-1", "iss": "https://idp", "groups": ["admins"]});
        let mut s = session(10);
        s.id_token = Some(format!(
            "e30.{}.sig",
            URL_SAFE_NO_PAD.encode(payload.to_string())
        ));
        let s = s.with_claims(None).unwrap();
        assert_eq!(s.claims["groups"], serde_json::json!(["admins"]));
        assert!(!s.claims.contains_key("iss"));
        let shards = seal(&r, "b", &s).unwrap();
        let opened = open(&r, "b", &shards).unwrap();
        assert_eq!(opened, s, "the merged claims are made again on opening");
        let json = serde_json::to_value(&s).unwrap();
        assert!(
            json.get("userinfo").is_none() && json["claims"].get("groups").is_none(),
            "{json}"
        );
        let mut broken = s.clone();
        broken.id_token = Some("not a token".into());
        assert_eq!(broken.with_claims(None), Err(SessionError::Invalid));
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
        assert!(KeyRing::new(&[vec![1; 16]]).is_none());
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
    fn a_session_id_cookie_names_its_record_only_with_the_session_keys() {
        let r = ring(1);
        let (cookie, name) = new_reference(&r, "b").unwrap();
        let (_, other) = new_reference(&r, "b").unwrap();
        assert_ne!(name, other, "every login gets its own id");
        assert_eq!(name.len(), 64, "an HMAC-SHA256 in hex");
        assert_eq!(
            open_reference(&r, "b", std::slice::from_ref(&cookie)),
            Ok(name.clone())
        );
        assert!(
            !cookie.contains(&name),
            "the cookie does not carry the record's name"
        );
        for (ring_, binding) in [(ring(2), "b"), (ring(1), "c")] {
            assert_eq!(
                open_reference(&ring_, binding, std::slice::from_ref(&cookie)),
                Err(SessionError::Invalid)
            );
        }
        let mut raw = STANDARD.decode(&cookie).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 0x20;
            let altered = STANDARD.encode(&raw);
            assert_eq!(
                open_reference(&r, "b", &[altered]),
                Err(SessionError::Invalid),
                "byte {i}"
            );
            raw[i] ^= 0x20;
        }
        assert_eq!(
            open_reference(&r, "b", &[cookie.clone(), cookie.clone()]),
            Err(SessionError::Invalid),
            "one shard only"
        );
        let session_cookie = seal(&r, "b", &session(10)).unwrap();
        assert_eq!(
            open_reference(&r, "b", &session_cookie),
            Err(SessionError::Invalid),
            "a cookie session is no session id"
        );
        let rotated = KeyRing::new(&[vec![9; 32], vec![1; 32]]).unwrap();
        assert_eq!(
            open_reference(&rotated, "b", &[cookie]),
            Ok(name),
            "the key that sealed the id still names the record after a rotation"
        );
    }

    #[test]
    fn a_record_opens_under_its_own_name_only_and_may_be_large() {
        let r = ring(1);
        let big = session(40 * 1024);
        assert!(matches!(
            seal(&r, "b", &big),
            Err(SessionError::ClaimsTooLarge(_))
        ));
        let record = seal_record(&r, "b", "name-1", &big).unwrap();
        let opened = open_record(&r, "b", "name-1", &record).unwrap();
        assert_eq!(opened.record.as_deref(), Some("name-1"));
        assert_eq!(
            Session {
                record: None,
                ..opened
            },
            big
        );
        assert_eq!(
            open_record(&r, "b", "name-2", &record),
            Err(SessionError::Invalid),
            "moved under another session's name"
        );
        assert_eq!(
            open_record(&r, "c", "name-1", &record),
            Err(SessionError::Invalid)
        );
        assert!(matches!(
            seal_record(&r, "b", "n", &session(MAX_RECORD_BYTES)),
            Err(SessionError::RecordTooLarge(_))
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
        let headers = set_cookie_headers(
            "AWSELBAuthSessionCookie",
            None,
            &["a".into(), "b".into()],
            true,
        );
        assert_eq!(headers.len(), 4);
        assert_eq!(
            headers[0],
            "AWSELBAuthSessionCookie-0=a; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(headers[2].starts_with("AWSELBAuthSessionCookie-2=; Path=/; Max-Age=0;"));
        assert!(
            clear_cookie_headers("S", None, false)
                .iter()
                .all(|h| h.contains("Max-Age=0") && !h.contains("Secure"))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Shards written as cookies come back whole and in order, whatever other
        /// cookies (look-alike names included) share the header.
        #[test]
        fn shards_reassemble_among_any_other_cookies(
            shards in proptest::collection::vec("[A-Za-z0-9+/=]{1,40}", 1..=MAX_SHARDS),
            noise in proptest::collection::vec(("[A-Za-z0-9_.+-]{1,12}", "[A-Za-z0-9+/=]{0,12}"), 0..6),
            junk in "[a-z0-9 ;=,\"\\\\]{0,60}",
        ) {
            let mut pairs: Vec<String> = noise.iter().map(|(k, v)| format!("{k}={v}")).collect();
            pairs.extend(["S-00=x", "S-+1=x", "Sx-0=x", "S-4=x"].map(String::from));
            let at = pairs.len() / 2;
            for (i, shard) in shards.iter().enumerate().rev() {
                pairs.insert(at, format!("S-{i}={shard}"));
            }
            let header = pairs.join("; ");
            let noise_has_shard = noise.iter().any(|(k, _)| {
                k.strip_prefix("S-").is_some_and(|i| i.len() == 1 && i.parse::<usize>().is_ok())
            });
            if !noise_has_shard {
                proptest::prop_assert_eq!(read_shards([header.as_str(), junk.as_str()], "S"), Some(shards));
            }
            let _ = read_shards([junk.as_str()], "S");
        }
    }
}
