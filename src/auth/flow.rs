//! One login attempt, from the redirect to the provider to the callback. Its state
//! (OAuth `state`, OIDC `nonce`, PKCE verifier, where to return, when it began) lives
//! in a sealed cookie, ALB's `AWSALBAuthNonce`, named after the `state` so several
//! tabs can log in at once. The callback checks that cookie against `state` before the
//! code is redeemed: a code arriving in another browser is refused.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::sealed::{self, KeyRing, Purpose};

pub const FLOW_COOKIE_PREFIX: &str = "AWSALBAuthNonce";
/// How long a login may take, as ALB allows.
pub const LOGIN_WINDOW_SECS: i64 = 900;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// Names this attempt in logs and flow records.
    pub flow_id: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// A same-origin path (already checked), where the browser goes after login.
    pub return_to: String,
    /// Unix seconds.
    pub started_at: i64,
}

impl FlowState {
    /// S256 of the verifier, for the authorization request.
    pub fn pkce_challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest(&SHA256, self.pkce_verifier.as_bytes()))
    }
}

/// Why a callback was refused, with ALB's reason names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("the callback has no state parameter")]
    MissingState,
    #[error(
        "the browser did not send the login's flow cookie (blocked or expired cookie, or another browser)"
    )]
    MissingCookie,
    #[error("the flow cookie is not valid (tampered with, or made for another rule or host)")]
    InvalidCookie,
    #[error("the state parameter does not match the flow cookie")]
    StateMismatch,
    #[error("the callback carries state, code, iss or error more than once")]
    RepeatedParameter,
    #[error("the login took longer than 15 minutes")]
    Expired,
    #[error("the system random generator failed")]
    Random,
}

impl FlowError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingState => "AuthMissingStateParam",
            Self::MissingCookie => "AuthMissingAWSALBAuthNonce",
            Self::InvalidCookie => "AuthInvalidAWSALBAuthNonce",
            Self::StateMismatch | Self::RepeatedParameter => "AuthInvalidStateParam",
            Self::Expired => "AuthLoginWindowExpired",
            Self::Random => "AuthUnhandledException",
        }
    }
}

fn random_token(bytes: usize) -> Result<String, FlowError> {
    let mut b = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| FlowError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// The cookie that carries the flow whose `state` this is.
pub fn cookie_name(state: &str) -> String {
    let hash = digest(&SHA256, state.as_bytes());
    let short: String = hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{FLOW_COOKIE_PREFIX}-{short}")
}

/// Starts a flow: fresh state, nonce and PKCE verifier; returns the state and the
/// sealed cookie value.
pub fn begin(
    ring: &KeyRing,
    binding: &str,
    return_to: &str,
    now: i64,
) -> Result<(FlowState, String), FlowError> {
    let flow = FlowState {
        flow_id: random_token(9)?,
        state: random_token(24)?,
        nonce: random_token(24)?,
        pkce_verifier: random_token(32)?,
        return_to: return_to.to_owned(),
        started_at: now,
    };
    let sealed = sealed::seal(ring, Purpose::Flow, binding, &flow).ok_or(FlowError::Random)?;
    Ok((flow, sealed))
}

/// Checks a callback's `state` against the browser's cookies before anything else.
pub fn finish<'a>(
    ring: &KeyRing,
    binding: &str,
    state: Option<&str>,
    cookies: impl IntoIterator<Item = &'a str>,
    now: i64,
) -> Result<FlowState, FlowError> {
    let state = state
        .filter(|s| !s.is_empty())
        .ok_or(FlowError::MissingState)?;
    let name = cookie_name(state);
    let value = super::cookies::find(cookies, &name).ok_or(FlowError::MissingCookie)?;
    let flow: FlowState =
        sealed::open(ring, Purpose::Flow, binding, value).ok_or(FlowError::InvalidCookie)?;
    verify_slices_are_equal(flow.state.as_bytes(), state.as_bytes())
        .map_err(|_| FlowError::StateMismatch)?;
    if now - flow.started_at > LOGIN_WINDOW_SECS || now < flow.started_at - 60 {
        return Err(FlowError::Expired);
    }
    Ok(flow)
}

/// `Set-Cookie` for a new flow cookie, living as long as the login window.
pub fn set_cookie(state: &str, sealed: &str, secure: bool) -> String {
    format!(
        "{}={sealed}; Path=/; Max-Age={LOGIN_WINDOW_SECS}; HttpOnly; SameSite=Lax{}",
        cookie_name(state),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes a finished flow's cookie.
pub fn clear_cookie(state: &str, secure: bool) -> String {
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        cookie_name(state),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(&[vec![7; 32]]).unwrap()
    }

    fn cookie_header(flow: &FlowState, sealed: &str) -> String {
        format!("other=1; {}={sealed}", cookie_name(&flow.state))
    }

    #[test]
    fn a_callback_with_its_own_cookie_passes() {
        let r = ring();
        let (flow, sealed) = begin(&r, "apps/sso|h", "/app?x=1", 1000).unwrap();
        let back = finish(
            &r,
            "apps/sso|h",
            Some(&flow.state),
            [cookie_header(&flow, &sealed).as_str()],
            1010,
        )
        .unwrap();
        assert_eq!(back, flow);
        assert_eq!(back.return_to, "/app?x=1");
        assert_eq!(
            flow.pkce_verifier.len(),
            43,
            "RFC 7636: 43 to 128 characters"
        );
        assert_eq!(
            flow.pkce_challenge(),
            URL_SAFE_NO_PAD.encode(digest(&SHA256, flow.pkce_verifier.as_bytes()))
        );
    }

    #[test]
    fn parallel_flows_in_one_browser_each_find_their_cookie() {
        let r = ring();
        let (one, s1) = begin(&r, "b", "/one", 0).unwrap();
        let (two, s2) = begin(&r, "b", "/two", 0).unwrap();
        let header = format!(
            "{}={s1}; {}={s2}",
            cookie_name(&one.state),
            cookie_name(&two.state)
        );
        assert_eq!(
            finish(&r, "b", Some(&two.state), [header.as_str()], 5)
                .unwrap()
                .return_to,
            "/two"
        );
        assert_eq!(
            finish(&r, "b", Some(&one.state), [header.as_str()], 5)
                .unwrap()
                .return_to,
            "/one"
        );
    }

    #[test]
    fn each_failure_has_its_alb_reason() {
        let r = ring();
        let (flow, sealed) = begin(&r, "b", "/", 1000).unwrap();
        let header = cookie_header(&flow, &sealed);
        let check = |state: Option<&str>, cookies: &str, now: i64| {
            finish(&r, "b", state, [cookies], now).unwrap_err().reason()
        };
        assert_eq!(check(None, &header, 1000), "AuthMissingStateParam");
        assert_eq!(
            check(Some(&flow.state), "other=1", 1000),
            "AuthMissingAWSALBAuthNonce"
        );
        let forged = format!("{}=AAAA{}", cookie_name(&flow.state), &sealed[4..]);
        assert_eq!(
            check(Some(&flow.state), &forged, 1000),
            "AuthInvalidAWSALBAuthNonce"
        );
        assert_eq!(
            finish(&r, "other-rule", Some(&flow.state), [header.as_str()], 1000)
                .unwrap_err()
                .reason(),
            "AuthInvalidAWSALBAuthNonce"
        );
        assert_eq!(
            check(Some(&flow.state), &header, 1000 + LOGIN_WINDOW_SECS + 1),
            "AuthLoginWindowExpired"
        );

        // Another flow's cookie presented under this state's name: the states differ.
        let (other, other_sealed) = begin(&r, "b", "/", 1000).unwrap();
        let swapped = format!("{}={other_sealed}", cookie_name(&flow.state));
        assert_ne!(other.state, flow.state);
        assert_eq!(
            check(Some(&flow.state), &swapped, 1000),
            "AuthInvalidStateParam"
        );
    }

    #[test]
    fn cookies_are_scoped_to_the_login_window() {
        let c = set_cookie("s", "v", true);
        assert!(c.starts_with(&format!(
            "{}=v; Path=/; Max-Age=900; HttpOnly",
            cookie_name("s")
        )));
        assert!(c.ends_with("; Secure"));
        assert!(clear_cookie("s", false).contains("Max-Age=0"));
    }
}
