//! Values only Portcullis can read or make: AES-256-GCM with a random nonce, the
//! purpose and a binding (AuthRule and host) as additional data, so a value made for
//! one purpose, rule or host opens nowhere else.
//!
//! Layout before standard base64: version (1) | key id (1) | nonce (12) | ciphertext+tag.
//! The key id lets keys rotate: values are sealed with the first key of the ring and
//! open with any.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;

#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    Session,
    Flow,
    /// The random id a server-side session's cookie carries.
    SessionId,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Flow => "flow",
            Self::SessionId => "session-id",
        }
    }
}

/// AEAD keys, newest first, each with the HMAC key derived from it that names
/// server-side session records.
pub struct KeyRing {
    keys: Vec<(u8, RandomizedNonceKey, hmac::Key)>,
}

/// Which key of a ring opened a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyIndex(usize);

impl KeyIndex {
    /// The key new values are sealed with.
    pub const NEWEST: Self = Self(0);
}

impl KeyRing {
    /// `None` unless every key is 32 bytes and there is at least one.
    pub fn new(keys: &[Vec<u8>]) -> Option<Self> {
        let keys: Option<Vec<_>> = keys
            .iter()
            .map(|k| {
                RandomizedNonceKey::new(&AES_256_GCM, k)
                    .ok()
                    .map(|key| (key_id(k), key, record_key(k)))
            })
            .collect();
        keys.filter(|k| !k.is_empty()).map(|keys| Self { keys })
    }

    /// HMAC-SHA256 of `data` under the record key of key `index`, in hex: a name that
    /// only the holder of the session keys can compute from `data`.
    pub fn tag(&self, index: KeyIndex, data: &[u8]) -> Option<String> {
        let (_, _, key) = self.keys.get(index.0)?;
        let tag = hmac::sign(key, data);
        Some(tag.as_ref().iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// A key of its own for naming records, so the AEAD key is used for nothing else.
fn record_key(key: &[u8]) -> hmac::Key {
    let derived = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        b"portcullis session record names",
    );
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

/// A stable one-byte id per key, the same on every replica.
fn key_id(key: &[u8]) -> u8 {
    digest(&SHA256, key).as_ref()[0]
}

fn aad(purpose: Purpose, binding: &str) -> Vec<u8> {
    format!("portcullis-v{VERSION}|{}|{binding}", purpose.label()).into_bytes()
}

pub fn seal<T: Serialize>(
    ring: &KeyRing,
    purpose: Purpose,
    binding: &str,
    value: &T,
) -> Option<String> {
    let (id, key, _) = &ring.keys[0];
    let mut in_out = serde_json::to_vec(value).ok()?;
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad(purpose, binding)), &mut in_out)
        .ok()?;
    let mut raw = Vec::with_capacity(2 + NONCE_LEN + in_out.len());
    raw.extend_from_slice(&[VERSION, *id]);
    raw.extend_from_slice(nonce.as_ref());
    raw.extend_from_slice(&in_out);
    Some(STANDARD.encode(raw))
}

/// `None` for anything malformed, tampered with, or sealed for another purpose,
/// binding or key.
pub fn open<T: DeserializeOwned>(
    ring: &KeyRing,
    purpose: Purpose,
    binding: &str,
    value: &str,
) -> Option<T> {
    open_keyed(ring, purpose, binding, value).map(|(v, _)| v)
}

/// `open`, and which key of the ring opened the value.
pub fn open_keyed<T: DeserializeOwned>(
    ring: &KeyRing,
    purpose: Purpose,
    binding: &str,
    value: &str,
) -> Option<(T, KeyIndex)> {
    let raw = STANDARD.decode(value).ok()?;
    if raw.len() < 2 + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
        return None;
    }
    let (id, nonce, sealed) = (raw[1], &raw[2..2 + NONCE_LEN], &raw[2 + NONCE_LEN..]);
    ring.keys
        .iter()
        .enumerate()
        .filter(|(_, (k, _, _))| *k == id)
        .find_map(|(index, (_, key, _))| {
            let mut in_out = sealed.to_vec();
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let plain = key
                .open_in_place(nonce, Aad::from(aad(purpose, binding)), &mut in_out)
                .ok()?;
            Some((serde_json::from_slice(plain).ok()?, KeyIndex(index)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_for_its_purpose_and_binding() {
        let ring = KeyRing::new(&[vec![3; 32]]).unwrap();
        let v = seal(&ring, Purpose::Flow, "b", &"x").unwrap();
        assert_eq!(
            open::<String>(&ring, Purpose::Flow, "b", &v).as_deref(),
            Some("x")
        );
        assert_eq!(
            open::<String>(&ring, Purpose::Session, "b", &v),
            None,
            "a flow cookie is no session"
        );
        assert_eq!(open::<String>(&ring, Purpose::Flow, "c", &v), None);
    }
}
