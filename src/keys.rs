//! The session keys and the `x-amzn-oidc-data` signing key: from files, from a
//! Kubernetes Secret that the first replica creates, or made at start. Every replica
//! reading the same Secret seals and opens the same sessions and publishes one `kid`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::auth::identity::{IdentityError, SigningKey, SigningKeys, pem};
use crate::auth::sealed::KeyRing;

/// Key names inside the keys Secret.
pub const SESSION_KEYS: &str = "session-keys";
pub const SIGNING_KEY: &str = "signing-key.pem";
/// Published beside the signing key during a rollout (see `SigningKeys`): the key it
/// replaced, and the key that will replace it.
pub const PREVIOUS_SIGNING_KEY: &str = "signing-key-previous.pem";
pub const NEXT_SIGNING_KEY: &str = "signing-key-next.pem";

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{source_name}: a session-key line is not base64")]
    NotBase64 { source_name: String },
    #[error(
        "{source_name} holds no session key (one base64 32-byte key a line, newest first; e.g. `head -c32 /dev/urandom | base64`)"
    )]
    NoSessionKey { source_name: String },
    #[error("{source_name}: session keys must be 32 bytes each")]
    BadSessionKey { source_name: String },
    #[error("{source_name}: the signing key is not a P-256 PKCS#8 PEM key: {error}")]
    BadSigningKey {
        source_name: String,
        error: IdentityError,
    },
    #[error(
        "Secret {namespace}/{name} has no key {key}; delete it to have a new one made, or add the key"
    )]
    MissingKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("reading or creating Secret {namespace}/{name}: {error}")]
    Api {
        namespace: String,
        name: String,
        error: kube::Error,
    },
    #[error("the system random generator failed")]
    Random,
}

/// Keys as text: the session keys (one base64 key a line) and the signing key (PEM).
pub struct KeyText {
    pub session_keys: String,
    pub signing_key_pem: String,
    /// Keys published, not used to sign: the previous and the next signing key.
    pub previous_signing_key_pem: Option<String>,
    pub next_signing_key_pem: Option<String>,
}

pub struct Keys {
    pub ring: KeyRing,
    pub signing_keys: SigningKeys,
}

impl KeyText {
    /// A fresh session key and signing key.
    pub fn generate() -> Result<Self, KeysError> {
        use aws_lc_rs::rand::SecureRandom as _;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut session = [0u8; 32];
        rng.fill(&mut session).map_err(|_| KeysError::Random)?;
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .map_err(|_| KeysError::Random)?;
        Ok(Self {
            session_keys: format!("{}\n", STANDARD.encode(session)),
            signing_key_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            previous_signing_key_pem: None,
            next_signing_key_pem: None,
        })
    }

    /// Parses both; `source_name` names where they came from in errors.
    pub fn parse(&self, source_name: &str) -> Result<Keys, KeysError> {
        let session_keys = parse_session_keys(&self.session_keys, source_name)?;
        let ring = KeyRing::new(&session_keys).ok_or_else(|| KeysError::BadSessionKey {
            source_name: source_name.into(),
        })?;
        let key = |pem: &str| {
            SigningKey::from_pem(pem.as_bytes()).map_err(|error| KeysError::BadSigningKey {
                source_name: source_name.into(),
                error,
            })
        };
        let optional = |pem: &Option<String>| pem.as_deref().map(key).transpose();
        let signing_keys = SigningKeys {
            current: key(&self.signing_key_pem)?,
            previous: optional(&self.previous_signing_key_pem)?,
            next: optional(&self.next_signing_key_pem)?,
        };
        Ok(Keys { ring, signing_keys })
    }
}

/// One base64 key a line, newest first; blank lines and `#` comments skipped.
pub fn parse_session_keys(text: &str, source_name: &str) -> Result<Vec<Vec<u8>>, KeysError> {
    let keys: Vec<Vec<u8>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            STANDARD.decode(l).map_err(|_| KeysError::NotBase64 {
                source_name: source_name.into(),
            })
        })
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        return Err(KeysError::NoSessionKey {
            source_name: source_name.into(),
        });
    }
    Ok(keys)
}

/// The keys in Secret `namespace/name`, created with fresh keys when it does not exist
/// yet. Replicas starting together race to create it; the loser reads the winner's.
pub async fn from_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<KeyText, KeysError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_error = |error| KeysError::Api {
        namespace: namespace.into(),
        name: name.into(),
        error,
    };
    let secret = match api.get_opt(name).await.map_err(api_error)? {
        Some(s) => s,
        None => {
            let fresh = KeyText::generate()?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(namespace.into()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/name".to_owned(),
                        "portcullis".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([
                    (
                        SESSION_KEYS.to_owned(),
                        ByteString(fresh.session_keys.into_bytes()),
                    ),
                    (
                        SIGNING_KEY.to_owned(),
                        ByteString(fresh.signing_key_pem.into_bytes()),
                    ),
                ])),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(s) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), "made new session and signing keys");
                    s
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    api.get(name).await.map_err(api_error)?
                }
                Err(e) => return Err(api_error(e)),
            }
        }
    };
    let optional = |key: &'static str| -> Option<String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .filter(|text| !text.trim().is_empty())
    };
    let field = |key: &'static str| -> Result<String, KeysError> {
        optional(key).ok_or_else(|| KeysError::MissingKey {
            namespace: namespace.into(),
            name: name.into(),
            key,
        })
    };
    Ok(KeyText {
        session_keys: field(SESSION_KEYS)?,
        signing_key_pem: field(SIGNING_KEY)?,
        previous_signing_key_pem: optional(PREVIOUS_SIGNING_KEY),
        next_signing_key_pem: optional(NEXT_SIGNING_KEY),
    })
}
