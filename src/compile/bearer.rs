//! `spec.bearer`: what a bearer token must say to pass, compiled once per
//! configuration. The claim checks are pure (the caller gives the clock); the
//! signature is checked by the auth module with the issuer's keys before these run.

use serde_json::{Map, Value};

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{AdditionalClaim, BearerSpec, ClaimFormat, check_endpoint_url};

/// Clock difference tolerated between Portcullis and the token's issuer, as for ID
/// tokens.
pub const LEEWAY_SECS: i64 = 60;
/// Claims ALB checks by default and refuses as additional claims.
const CHECKED_ALWAYS: &[&str] = &["exp", "iss", "nbf", "iat"];
const MAX_CLAIM_VALUE_LEN: usize = 256;

/// A compiled `spec.bearer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerPolicy {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub audiences: Vec<String>,
    /// No audience check (ALB's `jwt-validation` checks none; only when the operator
    /// says so with `portcullis.dev/jwt-audiences: *`, never from `spec.bearer`).
    pub any_audience: bool,
    pub claims: Vec<ClaimRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequirement {
    pub name: String,
    pub format: ClaimFormat,
    pub values: Vec<String>,
}

/// Why a signed token was refused; the text goes into `WWW-Authenticate`'s
/// `error_description` and the log, so it never quotes a claim's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerRefusal {
    #[error("the token's issuer is not the configured one")]
    WrongIssuer,
    #[error("the token is not for this API (aud)")]
    WrongAudience,
    #[error("the token has no exp claim")]
    NoExpiry,
    #[error("the token's {0} claim is not a number of seconds")]
    BadTime(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the token has no sub claim")]
    NoSubject,
    #[error("an ID token or logout token is not an access token")]
    NotAnAccessToken,
    #[error("the token's claim {0} does not hold the required values")]
    ClaimMismatch(String),
    #[error("the token's claim {0} is not of the configured format")]
    ClaimFormat(String),
}

/// Compiles `spec.bearer`, reporting every problem at once; `None` when any.
pub fn compile(
    spec: &BearerSpec,
    object: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> Option<BearerPolicy> {
    let before = diags.len();
    let mut err = |field: String, reason: &'static str, message: String, fix: String| {
        diags.push(Diagnostic::error(object, &field, reason, message, fix));
    };
    if let Err(m) = check_endpoint_url(&spec.issuer) {
        err(
            "spec.bearer.issuer".into(),
            "InvalidIssuer",
            format!("issuer {:?} {m}", spec.issuer),
            "use the token issuer's URL exactly as in the tokens' iss claim".into(),
        );
    }
    if let Some((uri, Err(m))) = spec.jwks_uri.as_deref().map(|u| (u, check_endpoint_url(u))) {
        err(
            "spec.bearer.jwksUri".into(),
            "InvalidEndpoint",
            format!("{uri:?} {m}"),
            "use the https URL of the issuer's JWKS, or leave it out to use discovery".into(),
        );
    }
    if spec.audiences.is_empty() || spec.audiences.iter().any(|a| a.trim().is_empty()) {
        err(
            "spec.bearer.audiences".into(),
            "InvalidAudience",
            "audiences must list at least one non-empty audience".into(),
            "name the API as the issuer puts it in aud, e.g. https://api.example.com".into(),
        );
    }
    for (i, claim) in spec.additional_claims.iter().enumerate() {
        check_additional_claim(object, i, claim, diags);
    }
    (diags.len() == before).then(|| BearerPolicy {
        issuer: spec.issuer.clone(),
        jwks_uri: spec.jwks_uri.clone(),
        audiences: spec.audiences.clone(),
        any_audience: false,
        claims: spec
            .additional_claims
            .iter()
            .map(|c| ClaimRequirement {
                name: c.name.clone(),
                format: c.format,
                values: c.values.clone(),
            })
            .collect(),
    })
}

fn check_additional_claim(
    object: &ObjectRef,
    i: usize,
    claim: &AdditionalClaim,
    diags: &mut Vec<Diagnostic>,
) {
    let mut err = |field: String, message: String, fix: String| {
        diags.push(Diagnostic::error(
            object,
            &field,
            "InvalidAdditionalClaim",
            message,
            fix,
        ));
    };
    let field = format!("spec.bearer.additionalClaims[{i}]");
    if CHECKED_ALWAYS.contains(&claim.name.as_str()) || claim.name == "aud" {
        err(
            format!("{field}.name"),
            format!("claim {:?} cannot be an additional claim", claim.name),
            "exp, iss, nbf and iat are always checked; list audiences in spec.bearer.audiences"
                .into(),
        );
    } else if claim.name.trim().is_empty() {
        err(
            format!("{field}.name"),
            "the claim name is empty".into(),
            "name the claim, e.g. scope".into(),
        );
    }
    let spaced = claim.format == ClaimFormat::SpaceSeparatedValues;
    if claim.values.is_empty()
        || claim.values.len() > 10
        || claim
            .values
            .iter()
            .any(|v| v.is_empty() || v.len() > MAX_CLAIM_VALUE_LEN || (spaced && v.contains(' ')))
    {
        err(
            format!("{field}.values"),
            format!(
                "claim {:?} needs 1 to 10 non-empty values of at most {MAX_CLAIM_VALUE_LEN} characters{}",
                claim.name,
                if spaced { ", without spaces" } else { "" }
            ),
            "e.g. values: [api:read]".into(),
        );
    }
}

impl BearerPolicy {
    /// Checks the claims of a token whose signature is already verified.
    pub fn check(&self, claims: &Map<String, Value>, now: i64) -> Result<(), BearerRefusal> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(BearerRefusal::WrongIssuer);
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !self.any_audience
            && !audiences
                .iter()
                .any(|a| self.audiences.iter().any(|want| want == a))
        {
            return Err(BearerRefusal::WrongAudience);
        }
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| BearerRefusal::BadTime(name.into())),
        };
        match time("exp")? {
            None => return Err(BearerRefusal::NoExpiry),
            Some(exp) if now > exp + LEEWAY_SECS => return Err(BearerRefusal::Expired),
            Some(_) => {}
        }
        if time("nbf")?.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(BearerRefusal::NotYetValid);
        }
        if time("iat")?.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(BearerRefusal::IssuedInFuture);
        }
        // An ID token (nonce) or a logout token (events) signed by the same issuer
        // is not an API credential, even when its audience matches.
        if claims.contains_key("nonce") || claims.contains_key("events") {
            return Err(BearerRefusal::NotAnAccessToken);
        }
        if claims
            .get("sub")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(BearerRefusal::NoSubject);
        }
        for required in &self.claims {
            required.check(claims.get(&required.name))?;
        }
        Ok(())
    }
}

impl ClaimRequirement {
    fn check(&self, claim: Option<&Value>) -> Result<(), BearerRefusal> {
        let wrong_format = || BearerRefusal::ClaimFormat(self.name.clone());
        let held: Vec<&str> = match (self.format, claim) {
            (ClaimFormat::SingleString, Some(Value::String(s))) => {
                return if self.values.iter().any(|v| v == s) {
                    Ok(())
                } else {
                    Err(BearerRefusal::ClaimMismatch(self.name.clone()))
                };
            }
            (ClaimFormat::StringArray, Some(Value::Array(items))) => items
                .iter()
                .map(|i| i.as_str().ok_or_else(wrong_format))
                .collect::<Result<_, _>>()?,
            (ClaimFormat::SpaceSeparatedValues, Some(Value::String(s))) => {
                s.split(' ').filter(|w| !w.is_empty()).collect()
            }
            (_, None) => return Err(BearerRefusal::ClaimMismatch(self.name.clone())),
            (_, Some(_)) => return Err(wrong_format()),
        };
        if self.values.iter().all(|v| held.contains(&v.as_str())) {
            Ok(())
        } else {
            Err(BearerRefusal::ClaimMismatch(self.name.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn policy(yaml: &str) -> (Option<BearerPolicy>, Vec<Diagnostic>) {
        let spec: BearerSpec = serde_saphyr::from_str(yaml).unwrap();
        let mut diags = Vec::new();
        let p = compile(
            &spec,
            &ObjectRef::new("AuthRule", "apps", "api"),
            &mut diags,
        );
        (p, diags)
    }

    fn good() -> BearerPolicy {
        policy(
            r#"
issuer: https://idp.example.com
audiences: [https://api.example.com]
additionalClaims:
- {name: scope, format: space-separated-values, values: ["api:read"]}
- {name: client_id, format: single-string, values: [worker, cron]}
- {name: roles, format: string-array, values: [reader]}
"#,
        )
        .0
        .unwrap()
    }

    fn claims() -> Map<String, Value> {
        json!({"iss": "https://idp.example.com", "aud": ["https://api.example.com", "other"],
            "exp": NOW + 300, "iat": NOW, "sub": "worker", "client_id": "worker",
            "scope": "openid api:read api:write", "roles": ["reader", "writer"]})
        .as_object()
        .unwrap()
        .clone()
    }

    fn with(key: &str, value: Value) -> Map<String, Value> {
        let mut c = claims();
        c.insert(key.into(), value);
        c
    }

    fn without(key: &str) -> Map<String, Value> {
        let mut c = claims();
        c.remove(key);
        c
    }

    #[test]
    fn a_token_holding_every_requirement_passes() {
        assert_eq!(good().check(&claims(), NOW), Ok(()));
        assert_eq!(
            good().check(&with("aud", json!("https://api.example.com")), NOW),
            Ok(())
        );
        assert_eq!(
            good().check(&with("exp", json!(NOW - LEEWAY_SECS + 1)), NOW),
            Ok(()),
            "within the leeway"
        );
    }

    #[test]
    fn each_standard_claim_is_checked() {
        let p = good();
        let refused = |c: Map<String, Value>| p.check(&c, NOW).unwrap_err();
        assert_eq!(
            refused(with("iss", json!("https://evil.example.com"))),
            BearerRefusal::WrongIssuer
        );
        assert_eq!(
            refused(with("aud", json!("portcullis-test"))),
            BearerRefusal::WrongAudience
        );
        assert_eq!(refused(without("aud")), BearerRefusal::WrongAudience);
        assert_eq!(refused(without("exp")), BearerRefusal::NoExpiry);
        assert_eq!(
            refused(with("exp", json!("later"))),
            BearerRefusal::BadTime("exp".into())
        );
        assert_eq!(
            refused(with("exp", json!(NOW - LEEWAY_SECS - 1))),
            BearerRefusal::Expired
        );
        assert_eq!(
            refused(with("nbf", json!(NOW + LEEWAY_SECS + 1))),
            BearerRefusal::NotYetValid
        );
        assert_eq!(
            refused(with("iat", json!(NOW + LEEWAY_SECS + 1))),
            BearerRefusal::IssuedInFuture
        );
        assert_eq!(refused(without("sub")), BearerRefusal::NoSubject);
        assert_eq!(
            refused(with("nonce", json!("n"))),
            BearerRefusal::NotAnAccessToken
        );
        assert_eq!(
            refused(with("events", json!({}))),
            BearerRefusal::NotAnAccessToken
        );
    }

    #[test]
    fn additional_claims_follow_their_format() {
        let p = good();
        let refused = |c: Map<String, Value>| p.check(&c, NOW).unwrap_err();
        assert_eq!(
            refused(with("scope", json!("api:write"))),
            BearerRefusal::ClaimMismatch("scope".into())
        );
        assert_eq!(
            refused(with("scope", json!("api:readx"))),
            BearerRefusal::ClaimMismatch("scope".into()),
            "whole words only"
        );
        assert_eq!(
            refused(with("scope", json!(["api:read"]))),
            BearerRefusal::ClaimFormat("scope".into())
        );
        assert_eq!(
            refused(with("client_id", json!("mallory"))),
            BearerRefusal::ClaimMismatch("client_id".into())
        );
        assert!(p.check(&with("client_id", json!("cron")), NOW).is_ok());
        assert_eq!(
            refused(with("roles", json!(["writer"]))),
            BearerRefusal::ClaimMismatch("roles".into())
        );
        assert_eq!(
            refused(with("roles", json!("reader"))),
            BearerRefusal::ClaimFormat("roles".into())
        );
        assert_eq!(
            refused(without("roles")),
            BearerRefusal::ClaimMismatch("roles".into())
        );
    }

    #[test]
    fn bad_specs_are_reported_by_field() {
        let (p, diags) = policy(
            r#"
issuer: http://idp.example.com
jwksUri: https://169.254.169.254/keys
audiences: [""]
additionalClaims:
- {name: exp, format: single-string, values: [x]}
- {name: scope, format: space-separated-values, values: ["a b"]}
- {name: team, format: string-array, values: []}
"#,
        );
        assert!(p.is_none());
        let fields: Vec<&str> = diags.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.bearer.issuer",
                "spec.bearer.jwksUri",
                "spec.bearer.audiences",
                "spec.bearer.additionalClaims[0].name",
                "spec.bearer.additionalClaims[1].values",
                "spec.bearer.additionalClaims[2].values",
            ]
        );
    }
}
