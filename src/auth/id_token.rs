//! ID-token validation, on the same crypto provider as everything else: the signature
//! with an algorithm from a pinned list (RS256, ES256; never `none` or a shared-secret
//! HMAC), then `iss`, `aud`/`azp`, `exp`, `iat` and `nonce`. Every failure is ALB's
//! `AuthInvalidIdToken`; the variant says which check failed, for logs and flow records.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Clock difference tolerated between Portcullis and the provider.
pub const LEEWAY_SECS: i64 = 60;
const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    fn kty(self) -> &'static str {
        match self {
            Self::Rs256 => "RSA",
            Self::Es256 => "EC",
        }
    }
}

/// The algorithms a provider may sign ID tokens with: what its discovery document
/// lists, limited to those supported here. RS256 when it lists nothing (OIDC's default).
pub fn allowed_algs(discovery_list: Option<&[String]>) -> Vec<Alg> {
    match discovery_list {
        None => vec![Alg::Rs256],
        Some(list) => list.iter().filter_map(|a| Alg::parse(a)).collect(),
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Jwks {
    #[serde(default)]
    pub keys: Vec<Jwk>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is not a well-formed JWT")]
    Malformed,
    #[error("the ID token is signed with {0:?}, which is not allowed for this provider")]
    AlgorithmNotAllowed(String),
    #[error("no key in the provider's JWKS matches the ID token's kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token's issuer {0:?} is not the configured issuer")]
    WrongIssuer(String),
    #[error("the ID token is not for this client (aud/azp)")]
    WrongAudience,
    #[error("the ID token has expired (check the clocks of Portcullis and the provider)")]
    Expired,
    #[error(
        "the ID token was issued in the future (check the clocks of Portcullis and the provider)"
    )]
    IssuedInFuture,
    #[error("the ID token is not valid yet (nbf; check the clocks of Portcullis and the provider)")]
    NotYetValid,
    #[error("the ID token's nonce does not match this login")]
    NonceMismatch,
    #[error("the logout token was already used (jti)")]
    Replayed,
}

impl IdTokenError {
    pub fn reason(&self) -> &'static str {
        "AuthInvalidIdToken"
    }
}

pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: i64,
    pub algs: &'a [Alg],
}

/// A validated ID token's claims.
#[derive(Clone, Debug, PartialEq)]
pub struct IdClaims {
    pub sub: String,
    pub exp: i64,
    pub claims: Map<String, Value>,
}

pub fn validate(
    token: &str,
    jwks: &Jwks,
    expected: &Expected<'_>,
) -> Result<IdClaims, IdTokenError> {
    let claims = verified_claims(token, jwks, expected.algs)?;
    check_claims(&claims, expected)?;
    check_nonce(&claims, expected.nonce)?;
    id_claims(claims)
}

/// An ID token of a refresh response (OpenID Connect Core 12.2): checked as at the
/// login (`expected.nonce` aside: the provider need not repeat it, and the token came
/// straight from the token endpoint, not through the browser). Whose it is, the caller
/// compares with the session's `sub`.
pub fn validate_refreshed(
    token: &str,
    jwks: &Jwks,
    expected: &Expected<'_>,
) -> Result<IdClaims, IdTokenError> {
    let claims = verified_claims(token, jwks, expected.algs)?;
    check_claims(&claims, expected)?;
    id_claims(claims)
}

/// The claims of an ID token validated earlier, read again without its signature: only
/// for the token a sealed session carries, which was validated before it was sealed.
pub fn sealed_token_claims(token: &str) -> Result<Map<String, Value>, IdTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdTokenError::Malformed);
    }
    let payload = token.split('.').nth(1).ok_or(IdTokenError::Malformed)?;
    decode_json(payload)
}

fn id_claims(claims: Map<String, Value>) -> Result<IdClaims, IdTokenError> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(IdTokenError::Malformed)?
        .to_owned();
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::Malformed)?;
    Ok(IdClaims { sub, exp, claims })
}

/// The claims of a JWS signed with one of `algs` by a key of `jwks`; nothing of the
/// claims is checked yet.
pub(crate) fn verified_claims(
    token: &str,
    jwks: &Jwks,
    algs: &[Alg],
) -> Result<Map<String, Value>, IdTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdTokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed);
    };
    let header: Map<String, Value> = decode_json(h)?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let alg = Alg::parse(alg_name)
        .filter(|a| algs.contains(a))
        .ok_or_else(|| IdTokenError::AlgorithmNotAllowed(alg_name.to_owned()))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let signature = URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| IdTokenError::Malformed)?;
    let key = find_key(jwks, alg, kid)?;
    verify(alg, key, format!("{h}.{p}").as_bytes(), &signature)?;
    decode_json(p)
}

/// The event a back-channel logout token carries (OpenID Connect Back-Channel Logout 1.0).
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Whom a valid logout token logs out.
#[derive(Debug, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
    pub iat: i64,
}

/// A back-channel logout token: signed by the provider, for this client, recent, with
/// the logout event, a `sid` or `sub`, a `jti`, and no `nonce` (so an ID token can
/// never pass for one).
pub fn validate_logout_token(
    token: &str,
    jwks: &Jwks,
    issuer: &str,
    client_id: &str,
    algs: &[Alg],
    now: i64,
) -> Result<LogoutClaims, IdTokenError> {
    let claims = verified_claims(token, jwks, algs)?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss != issuer {
        return Err(IdTokenError::WrongIssuer(iss.to_owned()));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::Malformed)?;
    if iat > now + LEEWAY_SECS {
        return Err(IdTokenError::IssuedInFuture);
    }
    // Old tokens are refused even without exp: a jti is remembered only so long.
    if now - iat > LOGOUT_TOKEN_MAX_AGE_SECS {
        return Err(IdTokenError::Expired);
    }
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|exp| now > exp + LEEWAY_SECS)
    {
        return Err(IdTokenError::Expired);
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT));
    if !event.is_some_and(Value::is_object) || claims.contains_key("nonce") {
        return Err(IdTokenError::Malformed);
    }
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (sid, sub) = (text("sid"), text("sub"));
    let jti = text("jti").ok_or(IdTokenError::Malformed)?;
    if sid.is_none() && sub.is_none() {
        return Err(IdTokenError::Malformed);
    }
    Ok(LogoutClaims { sid, sub, jti, iat })
}

/// How old a logout token may be.
pub const LOGOUT_TOKEN_MAX_AGE_SECS: i64 = 600;

fn decode_json(segment: &str) -> Result<Map<String, Value>, IdTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| IdTokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| IdTokenError::Malformed)
}

/// The key named by `kid`; without a `kid`, the provider's only key of the right type.
fn find_key<'a>(jwks: &'a Jwks, alg: Alg, kid: Option<&str>) -> Result<&'a Jwk, IdTokenError> {
    let usable = |k: &&Jwk| k.kty == alg.kty() && k.use_.as_deref().is_none_or(|u| u == "sig");
    let mut candidates = jwks
        .keys
        .iter()
        .filter(usable)
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
    match (candidates.next(), candidates.next()) {
        (Some(k), None) => Ok(k),
        (Some(k), Some(_)) if kid.is_some() => Ok(k),
        _ => Err(IdTokenError::UnknownKey(kid.map(str::to_owned))),
    }
}

fn verify(alg: Alg, key: &Jwk, message: &[u8], signature: &[u8]) -> Result<(), IdTokenError> {
    let b64 = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or(IdTokenError::BadSignature)
    };
    match alg {
        Alg::Rs256 => {
            let (n, e) = (b64(&key.n)?, b64(&key.e)?);
            RsaPublicKeyComponents {
                n: &n[..],
                e: &e[..],
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
            .map_err(|_| IdTokenError::BadSignature)
        }
        Alg::Es256 => {
            if key.crv.as_deref() != Some("P-256") {
                return Err(IdTokenError::BadSignature);
            }
            let (x, y) = (b64(&key.x)?, b64(&key.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(IdTokenError::BadSignature);
            }
            let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .map_err(|_| IdTokenError::BadSignature)
        }
    }
}

fn check_claims(claims: &Map<String, Value>, expected: &Expected<'_>) -> Result<(), IdTokenError> {
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss != expected.issuer {
        return Err(IdTokenError::WrongIssuer(iss.to_owned()));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let azp = claims.get("azp").and_then(Value::as_str);
    // With several audiences the token must say it was issued to us (OIDC Core 3.1.3.7).
    let azp_ok = match azp {
        Some(a) => a == expected.client_id,
        None => audiences.len() == 1,
    };
    if !audiences.contains(&expected.client_id) || !azp_ok {
        return Err(IdTokenError::WrongAudience);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::Malformed)?;
    if expected.now > exp + LEEWAY_SECS {
        return Err(IdTokenError::Expired);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::Malformed)?;
    if iat > expected.now + LEEWAY_SECS {
        return Err(IdTokenError::IssuedInFuture);
    }
    match claims.get("nbf") {
        None => {}
        Some(nbf) => match nbf.as_i64() {
            Some(nbf) if nbf > expected.now + LEEWAY_SECS => {
                return Err(IdTokenError::NotYetValid);
            }
            Some(_) => {}
            None => return Err(IdTokenError::Malformed),
        },
    }
    Ok(())
}

fn check_nonce(claims: &Map<String, Value>, nonce: &str) -> Result<(), IdTokenError> {
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return Err(IdTokenError::NonceMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
    };
    use serde_json::json;

    const ISS: &str = "https://idp.example.com";
    const NOW: i64 = 1_700_000_000;

    struct Signer {
        rsa: RsaKeyPair,
        ec: EcdsaKeyPair,
    }

    impl Signer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Self {
                rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
                ec: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                    .unwrap(),
            }
        }

        fn jwks(&self) -> Jwks {
            let public = self.rsa.public_key();
            let point = self.ec.public_key().as_ref();
            serde_json::from_value(json!({"keys": [
                {"kty": "RSA", "kid": "r1", "use": "sig",
                 "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                 "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero())},
                {"kty": "EC", "kid": "e1", "crv": "P-256",
                 "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])},
            ]}))
            .unwrap()
        }

        fn token(&self, header: Value, claims: Value) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = match header["alg"].as_str() {
                Some("RS256") => {
                    let mut sig = vec![0; self.rsa.public_modulus_len()];
                    self.rsa
                        .sign(
                            &RSA_PKCS1_SHA256,
                            &SystemRandom::new(),
                            input.as_bytes(),
                            &mut sig,
                        )
                        .unwrap();
                    sig
                }
                Some("ES256") => self
                    .ec
                    .sign(&SystemRandom::new(), input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                _ => b"forged".to_vec(),
            };
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": "app", "sub": "user-1", "exp": NOW + 300, "iat": NOW, "nonce": "n-1", "email": "a@example.com"})
    }

    fn expected(algs: &[Alg]) -> Expected<'_> {
        Expected {
            issuer: ISS,
            client_id: "app",
            nonce: "n-1",
            now: NOW,
            algs,
        }
    }

    fn with(mut base: Value, key: &str, value: Value) -> Value {
        base[key] = value;
        base
    }

    #[test]
    fn good_tokens_validate_with_either_algorithm() {
        let s = Signer::new();
        let algs = [Alg::Rs256, Alg::Es256];
        for (alg, kid) in [("RS256", "r1"), ("ES256", "e1")] {
            let token = s.token(json!({"alg": alg, "kid": kid}), claims());
            let c = validate(&token, &s.jwks(), &expected(&algs)).unwrap();
            assert_eq!(c.sub, "user-1");
            assert_eq!(c.claims["email"], "a@example.com");
        }
        let no_kid = s.token(json!({"alg": "ES256"}), claims());
        assert!(
            validate(&no_kid, &s.jwks(), &expected(&algs)).is_ok(),
            "the only EC key"
        );
    }

    #[test]
    fn algorithms_are_pinned() {
        let s = Signer::new();
        let rs_only = [Alg::Rs256];
        let es = s.token(json!({"alg": "ES256", "kid": "e1"}), claims());
        assert_eq!(
            validate(&es, &s.jwks(), &expected(&rs_only)),
            Err(IdTokenError::AlgorithmNotAllowed("ES256".into()))
        );
        for alg in ["none", "HS256", "RS384", ""] {
            let t = s.token(json!({"alg": alg, "kid": "r1"}), claims());
            assert!(
                matches!(
                    validate(&t, &s.jwks(), &expected(&[Alg::Rs256, Alg::Es256])),
                    Err(IdTokenError::AlgorithmNotAllowed(_))
                ),
                "{alg}"
            );
        }
        assert_eq!(
            allowed_algs(Some(&["HS256".into(), "ES256".into()])),
            vec![Alg::Es256]
        );
        assert_eq!(allowed_algs(None), vec![Alg::Rs256]);
    }

    #[test]
    fn signatures_and_keys_are_checked() {
        let s = Signer::new();
        let algs = [Alg::Rs256, Alg::Es256];
        let token = s.token(json!({"alg": "RS256", "kid": "r1"}), claims());
        let (input, _) = token.rsplit_once('.').unwrap();
        let other = Signer::new().token(json!({"alg": "RS256", "kid": "r1"}), claims());
        let forged = format!("{input}.{}", other.rsplit_once('.').unwrap().1);
        assert_eq!(
            validate(&forged, &s.jwks(), &expected(&algs)),
            Err(IdTokenError::BadSignature)
        );
        let swapped = token.replacen(
            token.split('.').nth(1).unwrap(),
            &URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("admin")).to_string()),
            1,
        );
        assert_eq!(
            validate(&swapped, &s.jwks(), &expected(&algs)),
            Err(IdTokenError::BadSignature)
        );
        let unknown = s.token(json!({"alg": "RS256", "kid": "rotated"}), claims());
        assert_eq!(
            validate(&unknown, &s.jwks(), &expected(&algs)),
            Err(IdTokenError::UnknownKey(Some("rotated".into())))
        );
        assert_eq!(
            validate("a.b", &s.jwks(), &expected(&algs)),
            Err(IdTokenError::Malformed)
        );
    }

    #[test]
    fn claims_are_checked_in_turn() {
        let s = Signer::new();
        let algs = [Alg::Es256];
        let check = |c: Value| {
            validate(
                &s.token(json!({"alg": "ES256", "kid": "e1"}), c),
                &s.jwks(),
                &expected(&algs),
            )
        };
        assert_eq!(
            check(with(claims(), "iss", json!("https://evil"))),
            Err(IdTokenError::WrongIssuer("https://evil".into()))
        );
        assert_eq!(
            check(with(claims(), "aud", json!("other"))),
            Err(IdTokenError::WrongAudience)
        );
        assert_eq!(
            check(with(claims(), "aud", json!(["app", "other"]))),
            Err(IdTokenError::WrongAudience),
            "several audiences need azp"
        );
        assert!(
            check(with(
                with(claims(), "aud", json!(["app", "other"])),
                "azp",
                json!("app")
            ))
            .is_ok()
        );
        assert_eq!(
            check(with(claims(), "azp", json!("other"))),
            Err(IdTokenError::WrongAudience)
        );
        assert_eq!(
            check(with(claims(), "exp", json!(NOW - LEEWAY_SECS - 1))),
            Err(IdTokenError::Expired)
        );
        assert!(
            check(with(claims(), "exp", json!(NOW - LEEWAY_SECS + 1))).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            check(with(claims(), "iat", json!(NOW + LEEWAY_SECS + 1))),
            Err(IdTokenError::IssuedInFuture)
        );
        assert_eq!(
            check(with(claims(), "nbf", json!(NOW + LEEWAY_SECS + 1))),
            Err(IdTokenError::NotYetValid)
        );
        assert!(
            check(with(claims(), "nbf", json!(NOW + LEEWAY_SECS - 1))).is_ok(),
            "nbf within the leeway, as iat"
        );
        assert_eq!(
            check(with(claims(), "nbf", json!("soon"))),
            Err(IdTokenError::Malformed)
        );
        assert_eq!(
            check(with(claims(), "nonce", json!("n-2"))),
            Err(IdTokenError::NonceMismatch)
        );
        let mut no_nonce = claims();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(no_nonce), Err(IdTokenError::NonceMismatch));
        assert_eq!(
            check(with(claims(), "sub", json!(""))),
            Err(IdTokenError::Malformed)
        );
    }

    #[test]
    fn a_refreshed_id_token_needs_no_nonce_but_every_other_check() {
        let s = Signer::new();
        let algs = [Alg::Es256];
        let check = |claims: Value| {
            validate_refreshed(
                &s.token(json!({"alg": "ES256", "kid": "e1"}), claims),
                &s.jwks(),
                &expected(&algs),
            )
        };
        let mut no_nonce = claims();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(no_nonce.clone()).unwrap().sub, "user-1");
        assert_eq!(
            check(with(no_nonce.clone(), "iss", json!("https://evil.example"))),
            Err(IdTokenError::WrongIssuer("https://evil.example".into()))
        );
        assert_eq!(
            check(with(no_nonce.clone(), "aud", json!("other"))),
            Err(IdTokenError::WrongAudience)
        );
        assert_eq!(
            check(with(no_nonce, "exp", json!(NOW - LEEWAY_SECS - 1))),
            Err(IdTokenError::Expired)
        );
        let forged = s.token(json!({"alg": "ES256", "kid": "e1"}), claims());
        let tampered = format!("{}x", &forged[..forged.len() - 1]);
        assert!(validate_refreshed(&tampered, &s.jwks(), &expected(&algs)).is_err());
    }

    #[test]
    fn a_sealed_token_reads_back_its_claims() {
        let s = Signer::new();
        let token = s.token(json!({"alg": "ES256", "kid": "e1"}), claims());
        assert_eq!(
            sealed_token_claims(&token).unwrap()["email"],
            "a@example.com"
        );
        assert_eq!(sealed_token_claims("x"), Err(IdTokenError::Malformed));
        assert_eq!(sealed_token_claims("a.!!.c"), Err(IdTokenError::Malformed));
    }

    #[test]
    fn logout_tokens_are_checked_as_the_back_channel_spec_says() {
        let s = Signer::new();
        let good = json!({"iss": ISS, "aud": "app", "iat": NOW, "jti": "j-1", "sid": "s-1",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}}});
        let check = |claims: Value| {
            validate_logout_token(
                &s.token(json!({"alg": "ES256", "kid": "e1"}), claims),
                &s.jwks(),
                ISS,
                "app",
                &[Alg::Es256],
                NOW,
            )
        };
        assert_eq!(
            check(good.clone()),
            Ok(LogoutClaims {
                sid: Some("s-1".into()),
                sub: None,
                jti: "j-1".into(),
                iat: NOW
            })
        );
        let mut no_events = good.clone();
        no_events.as_object_mut().unwrap().remove("events");
        assert_eq!(check(no_events), Err(IdTokenError::Malformed));
        assert_eq!(
            check(with(good.clone(), "nonce", json!("n"))),
            Err(IdTokenError::Malformed),
            "an ID token is not a logout token"
        );
        assert_eq!(
            check(with(good.clone(), "aud", json!("other"))),
            Err(IdTokenError::WrongAudience)
        );
        assert_eq!(
            check(with(good.clone(), "iat", json!(NOW - 3600))),
            Err(IdTokenError::Expired)
        );
        let mut anonymous = good.clone();
        anonymous.as_object_mut().unwrap().remove("sid");
        assert_eq!(
            check(anonymous.clone()),
            Err(IdTokenError::Malformed),
            "sid or sub"
        );
        assert!(check(with(anonymous, "sub", json!("alice"))).is_ok());
        let forged = s.token(json!({"alg": "ES256", "kid": "e1"}), good);
        let tampered = format!("{}x", &forged[..forged.len() - 1]);
        assert!(
            validate_logout_token(&tampered, &s.jwks(), ISS, "app", &[Alg::Es256], NOW).is_err()
        );
    }

    fn shared_signer() -> &'static Signer {
        static SIGNER: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
        SIGNER.get_or_init(Signer::new)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Any one byte of a valid token changed (header, claims or signature), the
        /// token no longer validates; nothing panics.
        #[test]
        fn an_altered_token_never_validates(rs in proptest::prelude::any::<bool>(), at in proptest::prelude::any::<proptest::sample::Index>(), byte in proptest::prelude::any::<u8>()) {
            let s = shared_signer();
            let alg = if rs { "RS256" } else { "ES256" };
            let kid = if rs { "r1" } else { "e1" };
            let good = s.token(json!({"alg": alg, "kid": kid}), claims());
            let algs = [Alg::Rs256, Alg::Es256];
            let jwks = s.jwks();
            proptest::prop_assert!(validate(&good, &jwks, &expected(&algs)).is_ok());
            let mut bytes = good.clone().into_bytes();
            let i = at.index(bytes.len());
            proptest::prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let altered = String::from_utf8_lossy(&bytes).into_owned();
            // A change confined to unused base64 bits decodes to the same token: the
            // only alteration allowed to pass.
            let decoded = |t: &str| {
                t.split('.')
                    .map(|p| URL_SAFE_NO_PAD.decode(p).ok())
                    .collect::<Vec<_>>()
            };
            if validate(&altered, &jwks, &expected(&algs)).is_ok() {
                proptest::prop_assert_eq!(decoded(&altered), decoded(&good));
            }
        }

        /// JWKS documents and tokens of any shape are refused or read, never a panic.
        #[test]
        fn hostile_jwks_and_tokens_never_panic(doc in "\\PC{0,80}", token in "[A-Za-z0-9_.=-]{0,120}") {
            let _ = serde_json::from_str::<Jwks>(&doc);
            let s = shared_signer();
            let algs = [Alg::Rs256, Alg::Es256];
            proptest::prop_assert!(validate(&token, &s.jwks(), &expected(&algs)).is_err());
        }
    }
}
