//! `private_key_jwt` (RFC 7523): the JWT a token request carries instead of a client
//! secret. Either Portcullis signs it with the rule's key (`clientKeyRef`), or it is
//! Portcullis's own ServiceAccount token, which providers trusting the cluster's
//! issuer accept as a federated credential (`serviceAccountTokenAudience`).

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::form::form_encode;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a signed assertion is valid: one token request, with room for clock skew.
pub const ASSERTION_LIFETIME_SECS: i64 = 60;
/// Where the operator mounts ServiceAccount tokens: `<dir>/<namespace>/<audience>`.
pub const DEFAULT_TOKEN_DIR: &str = "/var/run/secrets/portcullis/tokens";
/// A projected ServiceAccount token is a few KiB; anything larger is not one.
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("not a PEM private key: {0}")]
    NotPem(String),
    #[error("not an RSA key (2048 to 8192 bits) or a P-256 EC key: {0}")]
    Unsupported(String),
    #[error("not a PEM certificate: {0}")]
    Certificate(String),
    #[error("signing the client assertion failed")]
    Signing,
    #[error("the ServiceAccount token {path} cannot be read: {detail}")]
    TokenUnreadable { path: String, detail: String },
    #[error("the ServiceAccount token {path} is not a JWT for audience {audience:?}")]
    TokenAudience { path: String, audience: String },
}

/// How a rule's client proves itself at the token endpoint.
#[derive(Clone, PartialEq)]
pub enum ClientCredential {
    /// `client_secret_basic` or `client_secret_post`.
    Secret(String),
    /// `private_key_jwt` signed with the rule's key.
    Key(std::sync::Arc<ClientKey>),
    /// `private_key_jwt` with Portcullis's ServiceAccount token (federated).
    ServiceAccountToken(ServiceAccountToken),
}

impl ClientCredential {
    /// What tells one credential from another (the secret itself, the key's
    /// thumbprint, the token's file), for noticing that it changed.
    pub fn fingerprint(&self) -> String {
        match self {
            Self::Secret(secret) => secret.clone(),
            Self::Key(key) => format!("key {} {:?}", key.kid, key.thumbprints),
            Self::ServiceAccountToken(t) => format!("token {}", t.file.display()),
        }
    }
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::Key(key) => write!(f, "Key({})", key.kid),
            Self::ServiceAccountToken(t) => write!(f, "ServiceAccountToken({})", t.audience),
        }
    }
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// The client's private key, its public JWK and the certificate's thumbprints.
pub struct ClientKey {
    signer: Signer,
    jwk: Value,
    kid: String,
    /// `x5t` and `x5t#S256` of the certificate stored with the key.
    thumbprints: Option<(String, String)>,
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        self.jwk == other.jwk && self.thumbprints == other.thumbprints
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey").field("kid", &self.kid).finish()
    }
}

impl ClientKey {
    /// A PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) and, optionally, the PEM
    /// certificate registered for it.
    pub fn from_pem(key: &[u8], cert: Option<&[u8]>) -> Result<Self, AssertionError> {
        let der = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| AssertionError::NotPem(e.to_string()))?;
        let unsupported =
            |e: aws_lc_rs::error::KeyRejected| AssertionError::Unsupported(e.to_string());
        let ec = |der: &[u8]| {
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .map(Signer::Ec)
                .map_err(unsupported)
        };
        let signer = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(Signer::Rsa)
                .map_err(unsupported)?,
            PrivateKeyDer::Sec1(k) => ec(k.secret_sec1_der())?,
            PrivateKeyDer::Pkcs8(k) => match RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()) {
                Ok(rsa) => Signer::Rsa(rsa),
                Err(_) => ec(k.secret_pkcs8_der())?,
            },
            _ => return Err(AssertionError::Unsupported("unknown key format".into())),
        };
        let thumbprints = cert.map(certificate_thumbprints).transpose()?;
        let (members, alg) = public_members(&signer);
        let kid = URL_SAFE_NO_PAD.encode(sha256(members.as_bytes()));
        let mut jwk: Value = serde_json::from_str(&members).unwrap_or_default();
        jwk["kid"] = kid.clone().into();
        jwk["alg"] = alg.into();
        jwk["use"] = "sig".into();
        Ok(Self {
            signer,
            jwk,
            kid,
            thumbprints,
        })
    }

    /// The RFC 7638 thumbprint of the public key: the `kid` the JWT names.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm the key signs with: `RS256` or `ES256`.
    pub fn alg(&self) -> &str {
        self.jwk["alg"].as_str().unwrap_or_default()
    }

    /// The public key as a JWKS, for registering at the provider.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// A client assertion for one token request at `audience` (the token endpoint).
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: i64,
        jti: &str,
    ) -> Result<String, AssertionError> {
        let mut header = json!({ "alg": self.jwk["alg"], "typ": "JWT", "kid": self.kid });
        if let Some((sha1, sha256)) = &self.thumbprints {
            header["x5t"] = sha1.as_str().into();
            header["x5t#S256"] = sha256.as_str().into();
        }
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": audience, "jti": jti,
            "iat": now, "nbf": now, "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, AssertionError> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input, &mut signature)
                    .map_err(|_| AssertionError::Signing)?;
                Ok(signature)
            }
            Signer::Ec(pair) => pair
                .sign(&rng, input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| AssertionError::Signing),
        }
    }
}

/// The public key's required JWK members in RFC 7638's order (the thumbprint's
/// input), and the JWS algorithm the key signs with.
fn public_members(signer: &Signer) -> (String, &'static str) {
    match signer {
        Signer::Rsa(pair) => {
            let public = pair.public_key();
            let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
            let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
            (format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#), "RS256")
        }
        Signer::Ec(pair) => {
            let point = pair.public_key().as_ref();
            let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
            let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
            (
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                "ES256",
            )
        }
    }
}

/// `x5t` (SHA-1) and `x5t#S256` of the first certificate in `pem`.
fn certificate_thumbprints(pem: &[u8]) -> Result<(String, String), AssertionError> {
    let cert = CertificateDer::from_pem_slice(pem)
        .map_err(|e| AssertionError::Certificate(e.to_string()))?;
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
    Ok((
        URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        URL_SAFE_NO_PAD.encode(sha256(&cert)),
    ))
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A rule's federated credential: Portcullis's ServiceAccount token for `audience`,
/// mounted for the rule's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountToken {
    pub audience: String,
    /// `<namespace>/<audience, percent-encoded>` under the token directory: a rule
    /// reads only the tokens the operator mounted for its own namespace.
    pub file: PathBuf,
}

impl ServiceAccountToken {
    pub fn new(namespace: &str, audience: &str) -> Self {
        Self {
            audience: audience.to_owned(),
            file: Path::new(namespace).join(form_encode(audience)),
        }
    }

    /// Reads the token afresh (the kubelet rotates it in place) and checks that it is
    /// a JWT for the configured audience, so a missing or wrong mount says so here
    /// rather than as the provider's `invalid_client`.
    pub async fn read(&self, dir: &Path) -> Result<String, AssertionError> {
        let path = dir.join(&self.file);
        let unreadable = |detail: String| AssertionError::TokenUnreadable {
            path: path.display().to_string(),
            detail,
        };
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        if meta.len() > MAX_TOKEN_BYTES {
            return Err(unreadable(format!("larger than {MAX_TOKEN_BYTES} bytes")));
        }
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let token = text.trim().to_owned();
        if !jwt_has_audience(&token, &self.audience) {
            return Err(AssertionError::TokenAudience {
                path: path.display().to_string(),
                audience: self.audience.clone(),
            });
        }
        Ok(token)
    }
}

/// Whether the JWT's (unverified) `aud` is or lists `audience`.
fn jwt_has_audience(token: &str, audience: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let claims: Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or_default();
    match &claims["aud"] {
        Value::String(a) => a == audience,
        Value::Array(list) => list.iter().any(|a| a == audience),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
