//! `spec.claimHeaders`: plain request headers made from the user's claims, for
//! backends that read `X-Auth-Request-Email` and the like (oauth2-proxy's
//! `--set-xauthrequest`, Grafana's `auth.proxy`). Checked once per snapshot; a value
//! is made per request from the claims authorization read.
//!
//! A value is sent only when a backend reads back exactly the claim: a string as it
//! is, an array as its elements joined with commas, any other value as compact JSON.
//! A value that cannot travel that way (a control character such as CR, LF or NUL,
//! space at either end, an array element with a comma or space at its ends or that is
//! itself an array or object, more than 8 KiB) is not sent at all, as if the user had
//! no such claim: a backend never reads a header injected through a claim, nor an
//! array split differently than the provider sent it.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::diagnostics::{Diagnostic, ObjectRef};

/// Claim headers one AuthRule may set.
pub const MAX_CLAIM_HEADERS: usize = 16;
/// The longest value sent (backends such as nginx refuse longer header lines).
pub const MAX_VALUE_BYTES: usize = 8 * 1024;
const MAX_CLAIM_NAME: usize = 256;

/// Names no claim header may take: framing, hop-by-hop and routing headers, the
/// credentials the backend reads, and the headers whose values Portcullis sets or
/// removes itself.
const RESERVED: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-type",
    "content-encoding",
    "expect",
];

/// One header: its name and the claim it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimHeader {
    pub name: HeaderName,
    pub claim: String,
}

/// Why a claim header was not sent for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum NotSent {
    /// The user has no such claim (or it is null).
    Absent,
    /// The claim's value cannot travel as a header value faithfully.
    Unsendable(&'static str),
}

impl ClaimHeader {
    /// The header's value for a user with `claims`.
    pub fn value(&self, claims: &Map<String, Value>) -> Result<HeaderValue, NotSent> {
        let text = match claims.get(&self.claim) {
            None | Some(Value::Null) => return Err(NotSent::Absent),
            Some(Value::String(s)) => {
                check_text(s)?;
                s.clone()
            }
            Some(Value::Array(items)) => joined(items)?,
            Some(other) => other.to_string(),
        };
        if text.len() > MAX_VALUE_BYTES {
            return Err(NotSent::Unsendable("longer than 8 KiB"));
        }
        HeaderValue::from_str(&text)
            .or_else(|_| HeaderValue::from_bytes(text.as_bytes()))
            .map_err(|_| NotSent::Unsendable("not a valid header value"))
    }
}

/// Text a header carries unchanged: no control character (CR, LF, NUL, TAB, DEL) and
/// no space at either end, which HTTP strips.
fn check_text(s: &str) -> Result<(), NotSent> {
    if s.chars().any(char::is_control) {
        return Err(NotSent::Unsendable("a control character"));
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err(NotSent::Unsendable("a space at either end"));
    }
    Ok(())
}

/// An array's elements joined with commas, each one a reader splitting on commas
/// and trimming spaces gets back whole.
fn joined(items: &[Value]) -> Result<String, NotSent> {
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => {
                check_text(s)?;
                if s.contains(',') {
                    return Err(NotSent::Unsendable("an element with a comma"));
                }
                parts.push(s.clone());
            }
            Value::Number(_) | Value::Bool(_) => parts.push(item.to_string()),
            _ => return Err(NotSent::Unsendable("an element that is not a plain value")),
        }
    }
    Ok(parts.join(","))
}

/// The headers of `spec.claimHeaders`, or every problem with them reported (the rule
/// is then invalid and its routes closed).
pub fn compile(
    spec: &BTreeMap<String, String>,
    object: &ObjectRef,
    errors: &mut Vec<Diagnostic>,
) -> Vec<ClaimHeader> {
    let mut headers: Vec<ClaimHeader> = Vec::new();
    if spec.len() > MAX_CLAIM_HEADERS {
        errors.push(Diagnostic::error(
            object,
            "spec.claimHeaders",
            "TooManyClaimHeaders",
            format!("{} claim headers; at most {MAX_CLAIM_HEADERS}", spec.len()),
            "pass the rest in x-amzn-oidc-data (spec.identityHeaders.claimsFrom) or drop some"
                .into(),
        ));
        return headers;
    }
    for (name, claim) in spec {
        let field = format!("spec.claimHeaders.{name}");
        let problem = match header_name(name) {
            Err(why) => Some(why),
            Ok(h) if headers.iter().any(|c| c.name == h) => {
                Some("names the same header as another entry (names ignore case)".to_owned())
            }
            Ok(_) if claim.is_empty() || claim.len() > MAX_CLAIM_NAME => Some(format!(
                "claim name must be 1 to {MAX_CLAIM_NAME} characters"
            )),
            Ok(h) => {
                headers.push(ClaimHeader {
                    name: h,
                    claim: claim.clone(),
                });
                None
            }
        };
        if let Some(problem) = problem {
            errors.push(Diagnostic::error(
                object,
                &field,
                "InvalidClaimHeader",
                format!("claim header {name:?} {problem}"),
                "use a header of the application's own, such as X-Auth-Request-Email: email".into(),
            ));
        }
    }
    headers
}

/// The header `name` as sent, or why no claim may be sent in it.
fn header_name(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "is not a valid header name (letters, digits and -)".to_owned())?;
    let n = header.as_str();
    if n.contains('_') {
        return Err("has _, which servers read as - (write it with -)".into());
    }
    // `x-amzn-*`: the identity headers, the trace id, and whatever ALB may add.
    let proxy_sets = n.starts_with("x-amzn-")
        || crate::proxy::headers::is_forwarding_header(&header)
        || crate::proxy::canonical::DEFAULT_DROPPED_HEADERS.contains(&n);
    if RESERVED.contains(&n) || proxy_sets {
        return Err(
            "is a header Portcullis sets, removes or frames the request with, or a credential"
                .into(),
        );
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header(claim: &str) -> ClaimHeader {
        ClaimHeader {
            name: HeaderName::from_static("x-auth-request-x"),
            claim: claim.into(),
        }
    }

    fn value(v: Value) -> Result<String, NotSent> {
        let claims = json!({ "c": v });
        header("c")
            .value(claims.as_object().unwrap())
            .map(|h| String::from_utf8(h.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn values_are_sent_as_a_reader_gets_them_back() {
        assert_eq!(value(json!("a@corp.example")), Ok("a@corp.example".into()));
        assert_eq!(value(json!(["staff", "admins"])), Ok("staff,admins".into()));
        assert_eq!(value(json!([])), Ok(String::new()));
        assert_eq!(value(json!([1, true, "x"])), Ok("1,true,x".into()));
        assert_eq!(value(json!(true)), Ok("true".into()));
        assert_eq!(value(json!(42)), Ok("42".into()));
        assert_eq!(
            value(json!({"unit": "ops", "note": "a\nb"})),
            Ok(r#"{"note":"a\nb","unit":"ops"}"#.into()),
            "compact JSON, control characters escaped"
        );
        assert_eq!(value(json!("José Ñ")), Ok("José Ñ".into()), "UTF-8 as is");
        assert_eq!(value(json!(null)), Err(NotSent::Absent));
        assert_eq!(header("missing").value(&Map::new()), Err(NotSent::Absent));
    }

    #[test]
    fn a_value_that_would_change_on_the_way_is_not_sent() {
        for bad in [
            json!("admin@x\r\nX-Auth-Request-Email: root@x"),
            json!("a\nb"),
            json!("a\0b"),
            json!("a\tb"),
            json!("a\u{7f}"),
            json!("a\u{85}b"),
            json!(" admin"),
            json!("admin "),
            json!(["staff", "x,admins"]),
            json!(["staff", " admins"]),
            json!(["a\r\nb"]),
            json!([["nested"]]),
            json!([{"a": 1}]),
            json!([null]),
            json!("x".repeat(MAX_VALUE_BYTES + 1)),
        ] {
            assert!(
                matches!(value(bad.clone()), Err(NotSent::Unsendable(_))),
                "{bad}"
            );
        }
        assert!(value(json!("x".repeat(MAX_VALUE_BYTES))).is_ok());
    }

    fn checked(yaml: &str) -> (Vec<ClaimHeader>, Vec<Diagnostic>) {
        let spec: BTreeMap<String, String> = serde_saphyr::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        let headers = compile(
            &spec,
            &ObjectRef::new("AuthRule", "apps", "sso"),
            &mut errors,
        );
        (headers, errors)
    }

    #[test]
    fn header_names_are_checked_and_lowered() {
        let (headers, errors) =
            checked("X-Auth-Request-Email: email\nX-Auth-Request-Groups: groups\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(headers[0].name, "x-auth-request-email");
        assert_eq!(headers[1].claim, "groups");
        for bad in [
            "Host",
            "cookie",
            "Authorization",
            "Proxy-Authorization",
            "Connection",
            "Transfer-Encoding",
            "TE",
            "Upgrade",
            "Content-Length",
            "X-Amzn-Oidc-Data",
            "x-amzn-oidc-identity",
            "X-Forwarded-For",
            "X-Forwarded-User",
            "Forwarded",
            "X-Real-IP",
            "X-Original-URL",
            "x_auth_email",
            "X Email",
            "X-Email:",
            "",
            "X-Amzn-Trace-Id",
        ] {
            let (headers, errors) = checked(&format!("{bad:?}: email\n"));
            assert!(headers.is_empty(), "{bad}");
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].reason, "InvalidClaimHeader", "{bad}");
            assert!(errors[0].field.starts_with("spec.claimHeaders."), "{bad}");
        }
        let (_, errors) = checked("X-Email: email\nx-email: mail\n");
        assert_eq!(errors.len(), 1, "one header, twice: {errors:?}");
        let (_, errors) = checked("X-Email: ''\n");
        assert_eq!(errors.len(), 1);
        let many: String = (0..=MAX_CLAIM_HEADERS)
            .map(|i| format!("X-Claim-{i}: c{i}\n"))
            .collect();
        let (headers, errors) = checked(&many);
        assert!(headers.is_empty());
        assert_eq!(errors[0].reason, "TooManyClaimHeaders");
    }
}
