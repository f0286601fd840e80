//! Bearer tokens on guarded routes (ALB's `jwt-validation`): the signature with the
//! issuer's keys from the shared provider registry, then the claims `spec.bearer`
//! asks for. A refusal is a 401 with `WWW-Authenticate: Bearer error="invalid_token"`
//! (RFC 6750), never a redirect.

use serde_json::{Map, Value};

use super::id_token::{self, Alg, IdTokenError};
use super::idp::IdpError;
use super::login::{Authenticator, LoginError};
use super::providers::ProviderKey;
use crate::compile::bearer::{BearerPolicy, BearerRefusal};

/// Signature algorithms a bearer token may use (ALB takes RS256 only; ES256 too here).
const BEARER_ALGS: &[Alg] = &[Alg::Rs256, Alg::Es256];

#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is signed with an algorithm other than RS256 or ES256")]
    Algorithm,
    #[error("no key of the issuer matches the token's kid")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error(transparent)]
    Refused(#[from] BearerRefusal),
    /// The issuer's keys could not be read: our problem, not the client's.
    #[error("the issuer's keys could not be read: {0}")]
    Keys(IdpError),
}

impl BearerError {
    /// The reason in the access log and on metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Keys(e) => e.reason(),
            _ => "AuthInvalidBearerToken",
        }
    }

    /// 401 for a token that is not good enough, 500 when the keys are out of reach.
    pub fn status(&self) -> u16 {
        match self {
            Self::Keys(_) => 500,
            _ => 401,
        }
    }
}

impl From<IdTokenError> for BearerError {
    fn from(e: IdTokenError) -> Self {
        match e {
            IdTokenError::AlgorithmNotAllowed(_) => Self::Algorithm,
            IdTokenError::UnknownKey(_) => Self::UnknownKey,
            IdTokenError::BadSignature => Self::BadSignature,
            _ => Self::Malformed,
        }
    }
}

/// A token that passed: whom it names and what it says.
pub struct BearerIdentity {
    pub sub: String,
    pub claims: Map<String, Value>,
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case, as
/// RFC 7235 reads it); `None` for any other scheme or none.
pub fn bearer_token(authorization: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(authorization).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Authenticator {
    /// Validates a bearer token against `bearer`: the signature with the issuer's
    /// current keys (refetched once for an unknown `kid`), then its claims.
    pub async fn bearer(
        &self,
        bearer: &BearerPolicy,
        token: &str,
        now: i64,
    ) -> Result<BearerIdentity, BearerError> {
        let provider = self
            .providers()
            .get(&ProviderKey::for_bearer(bearer))
            .await
            .map_err(BearerError::Keys)?;
        let claims = self
            .with_current_keys(&provider, |jwks| {
                id_token::verified_claims(token, jwks, BEARER_ALGS)
            })
            .await
            .map_err(|e| match e {
                LoginError::IdToken(e) => BearerError::from(e),
                LoginError::Idp(e) => BearerError::Keys(e),
                _ => BearerError::Malformed,
            })?;
        bearer.check(&claims, now)?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(BearerIdentity { sub, claims })
    }
}

/// The value of `WWW-Authenticate` for a refused token (RFC 6750 section 3).
pub fn challenge(error: Option<&BearerError>) -> String {
    match error {
        None => "Bearer".into(),
        Some(e) => format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            e.to_string().replace(['"', '\\'], "'")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_scheme_carries_a_token() {
        assert_eq!(bearer_token(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token(b"bearer  abc"), Some("abc"));
        assert_eq!(bearer_token(b"Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Bearer \xff"), None);
    }

    #[test]
    fn the_challenge_names_the_failed_check_without_quotes_breaking_it() {
        let e = BearerError::Refused(BearerRefusal::ClaimMismatch("a\"b".into()));
        assert_eq!(
            challenge(Some(&e)),
            "Bearer error=\"invalid_token\", error_description=\"the token's claim a'b does not hold the required values\""
        );
        assert_eq!(challenge(None), "Bearer");
        assert_eq!(e.status(), 401);
        assert_eq!(e.reason(), "AuthInvalidBearerToken");
    }
}
