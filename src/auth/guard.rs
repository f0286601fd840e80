//! What the guard decides, as pure functions of what is known about a request: which
//! guard a route's policy asks for, the next step of the session state machine, and
//! what a request without a session gets. The handler (`proxy/handler/guard.rs`) does
//! the I/O these steps call for (a refresh, a login redirect, the identity headers)
//! and turns every `Refusal` into a response in one place; nothing here reads the
//! network, the clock or the access log, so every branch is a unit test.

use std::sync::Arc;

use super::login::{LoginError, SessionState};
use super::refusal::Refusal;
use super::session::Session;
use crate::compile::bearer::BearerPolicy;
use crate::compile::{AuthPolicy, GuardPolicy};
use crate::model::OnUnauthenticatedRequest;

/// How the route's guard is reached: refused before any credential is read, or the
/// guard of a bearer-only route, or the login's.
#[derive(Debug)]
pub enum Entry<'a> {
    Refuse(Refusal),
    BearerOnly(&'a Arc<BearerPolicy>),
    Login(&'a Arc<AuthPolicy>),
}

/// The guard `policy` asks for. Sessions and bearer tokens travel only over HTTPS
/// (`https`: as the client used it, TLS here or ended by a trusted proxy), except to a
/// listener on loopback.
pub fn entry(policy: &GuardPolicy, https: bool, loopback: bool) -> Entry<'_> {
    match policy {
        GuardPolicy::Broken(_) => Entry::Refuse(Refusal::RuleInvalid),
        GuardPolicy::Pending(_) => Entry::Refuse(Refusal::RulePending),
        GuardPolicy::Bearer(_) | GuardPolicy::Oidc(_) if !https && !loopback => {
            Entry::Refuse(Refusal::RequiresHttps)
        }
        GuardPolicy::Bearer(bearer) => Entry::BearerOnly(bearer),
        GuardPolicy::Oidc(policy) => Entry::Login(policy),
    }
}

/// Why a request has no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSession {
    /// It never had one.
    Never,
    /// One of ours ended (timed out, or its refresh failed).
    Ended,
    /// Its cookie was sealed for another rule or host (or tampered with).
    Foreign,
}

/// The session state machine's next step from what the cookie holds.
#[derive(Debug)]
pub enum SessionStep {
    /// A session to pass on (after the AuthRule's authorization).
    Pass(Arc<Session>),
    /// Its access token expired and it has a refresh token: refresh, then
    /// `after_refresh`.
    Refresh(Arc<Session>),
    /// No session: `unauthenticated` says what the request gets.
    Missing(NoSession),
    /// Fail closed: whether a provider ended the session cannot be known now.
    Refuse(Refusal),
    /// Answered with this error (a renewed session that cannot be sealed into cookies).
    Error(Box<LoginError>),
}

pub fn session_step(state: SessionState) -> SessionStep {
    match state {
        SessionState::Valid(session) => SessionStep::Pass(session),
        SessionState::Stale(session) => SessionStep::Refresh(session),
        SessionState::Expired => SessionStep::Missing(NoSession::Ended),
        SessionState::Unverifiable => SessionStep::Refuse(Refusal::SharedStateUnavailable),
        SessionState::StoreUnavailable => SessionStep::Refuse(Refusal::SessionStoreUnavailable),
        SessionState::Invalid => SessionStep::Missing(NoSession::Foreign),
        SessionState::None => SessionStep::Missing(NoSession::Never),
    }
}

/// How a refresh of a stale session came out.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// New tokens (this request's grant, or another's shared with it).
    Renewed(Arc<Session>),
    /// Not tried: the shared state that makes one grant per session is down.
    SharedStateDown,
    /// Renewed, but the Redis that keeps the session does not answer.
    SessionStoreDown,
    /// The provider refused it, or could not be reached.
    Failed,
    /// Renewed, but the new session cannot be sealed into cookies (too large).
    Unsealable(Box<LoginError>),
}

/// The state machine's step after a refresh: a renewed session passes; one whose
/// refresh could not be coordinated fails closed; a failed refresh is a session that
/// ended, and the user logs in again.
pub fn after_refresh(outcome: RefreshOutcome) -> SessionStep {
    match outcome {
        RefreshOutcome::Renewed(session) => SessionStep::Pass(session),
        RefreshOutcome::SharedStateDown => SessionStep::Refuse(Refusal::SharedStateUnavailable),
        RefreshOutcome::SessionStoreDown => SessionStep::Refuse(Refusal::SessionStoreUnavailable),
        RefreshOutcome::Failed => SessionStep::Missing(NoSession::Ended),
        RefreshOutcome::Unsealable(e) => SessionStep::Error(e),
    }
}

/// What the request is, as far as a missing session is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asking {
    /// A CORS preflight (`OPTIONS` with one `Origin` and one `Access-Control-Request-Method`)
    /// without a body.
    pub preflight: bool,
    /// A browser's top-level navigation: the only request a login redirect can serve.
    pub navigation: bool,
}

/// What a request without a session gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    /// On without identity headers: a preflight the rule lets through.
    Preflight,
    /// On without identity headers: `onUnauthenticatedRequest: allow`.
    Allow,
    Refuse(Refusal),
    /// 401 naming the login page: a script cannot follow a login.
    LoginRequired,
    /// To the provider.
    Login,
}

/// `onUnauthenticatedRequest` for a request without a session. A preflight passes
/// only where the rule lets preflights through; ALB sends an ended session to a login
/// even under `deny`, and a foreign cookie under `deny` is said to be one.
pub fn unauthenticated(
    on: OnUnauthenticatedRequest,
    allow_preflight: bool,
    asking: Asking,
    why: NoSession,
) -> Unauthenticated {
    if asking.preflight && allow_preflight {
        return Unauthenticated::Preflight;
    }
    match on {
        OnUnauthenticatedRequest::Allow => return Unauthenticated::Allow,
        OnUnauthenticatedRequest::Deny if why == NoSession::Foreign => {
            return Unauthenticated::Refuse(Refusal::InvalidCookie);
        }
        OnUnauthenticatedRequest::Deny if why == NoSession::Never => {
            return Unauthenticated::Refuse(Refusal::Denied);
        }
        _ => {}
    }
    if asking.navigation {
        Unauthenticated::Login
    } else {
        Unauthenticated::LoginRequired
    }
}

/// What a request without a bearer token gets from a rule that takes tokens only
/// (no `spec.oidc`): never a login. A preflight passes where the rule lets preflights
/// through, any request under `onUnauthenticatedRequest: allow`; the rest get 401.
pub fn without_token(
    on: OnUnauthenticatedRequest,
    allow_preflight: bool,
    preflight: bool,
) -> Unauthenticated {
    match on {
        _ if preflight && allow_preflight => Unauthenticated::Preflight,
        OnUnauthenticatedRequest::Allow => Unauthenticated::Allow,
        _ => Unauthenticated::Refuse(Refusal::BearerTokenRequired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_and_pending_rules_refuse_before_https_and_credentials() {
        let broken = GuardPolicy::Broken("x".into());
        let pending = GuardPolicy::Pending("x".into());
        for (https, loopback) in [(false, false), (true, false), (false, true)] {
            assert!(matches!(
                entry(&broken, https, loopback),
                Entry::Refuse(Refusal::RuleInvalid)
            ));
            assert!(matches!(
                entry(&pending, https, loopback),
                Entry::Refuse(Refusal::RulePending)
            ));
        }
    }

    #[test]
    fn credentials_need_https_except_on_loopback() {
        let bearer = GuardPolicy::Bearer(Arc::new(crate::compile::bearer::BearerPolicy {
            issuer: "https://idp.example".into(),
            jwks_uri: None,
            audiences: vec!["api".into()],
            any_audience: false,
            claims: Vec::new(),
        }));
        assert!(matches!(
            entry(&bearer, false, false),
            Entry::Refuse(Refusal::RequiresHttps)
        ));
        assert!(matches!(entry(&bearer, true, false), Entry::BearerOnly(_)));
        assert!(matches!(entry(&bearer, false, true), Entry::BearerOnly(_)));
    }

    #[test]
    fn the_session_state_machine_fails_closed_when_the_shared_state_is_down() {
        assert!(matches!(
            session_step(SessionState::Unverifiable),
            SessionStep::Refuse(Refusal::SharedStateUnavailable)
        ));
        assert!(matches!(
            session_step(SessionState::Expired),
            SessionStep::Missing(NoSession::Ended)
        ));
        assert!(matches!(
            session_step(SessionState::Invalid),
            SessionStep::Missing(NoSession::Foreign)
        ));
        assert!(matches!(
            session_step(SessionState::None),
            SessionStep::Missing(NoSession::Never)
        ));
        assert!(matches!(
            after_refresh(RefreshOutcome::Failed),
            SessionStep::Missing(NoSession::Ended)
        ));
        assert!(matches!(
            after_refresh(RefreshOutcome::SharedStateDown),
            SessionStep::Refuse(Refusal::SharedStateUnavailable)
        ));
        assert!(matches!(
            session_step(SessionState::StoreUnavailable),
            SessionStep::Refuse(Refusal::SessionStoreUnavailable)
        ));
        assert!(matches!(
            after_refresh(RefreshOutcome::SessionStoreDown),
            SessionStep::Refuse(Refusal::SessionStoreUnavailable)
        ));
    }

    #[test]
    fn a_rule_without_logins_never_sends_a_request_to_one() {
        use OnUnauthenticatedRequest::{Allow, Authenticate, Deny};
        use Unauthenticated as U;
        let required = U::Refuse(Refusal::BearerTokenRequired);
        for (on, allow_preflight, preflight, expected) in [
            (Authenticate, false, false, required),
            (Deny, false, false, required),
            (Authenticate, false, true, required),
            (Authenticate, true, true, U::Preflight),
            (Deny, true, false, required),
            (Allow, false, false, U::Allow),
            (Allow, true, true, U::Preflight),
        ] {
            assert_eq!(
                without_token(on, allow_preflight, preflight),
                expected,
                "{on:?} {allow_preflight} {preflight}"
            );
        }
    }

    #[test]
    fn without_a_session_each_setting_and_request_kind_gets_its_answer() {
        use OnUnauthenticatedRequest::{Allow, Authenticate, Deny};
        use Unauthenticated as U;
        let browser = Asking {
            preflight: false,
            navigation: true,
        };
        let script = Asking {
            preflight: false,
            navigation: false,
        };
        let preflight = Asking {
            preflight: true,
            navigation: false,
        };
        let cases = [
            (Authenticate, false, browser, NoSession::Never, U::Login),
            (
                Authenticate,
                false,
                script,
                NoSession::Never,
                U::LoginRequired,
            ),
            (
                Authenticate,
                false,
                preflight,
                NoSession::Never,
                U::LoginRequired,
            ),
            (
                Authenticate,
                true,
                preflight,
                NoSession::Never,
                U::Preflight,
            ),
            (Authenticate, false, browser, NoSession::Foreign, U::Login),
            (Allow, false, script, NoSession::Never, U::Allow),
            (
                Deny,
                false,
                browser,
                NoSession::Never,
                U::Refuse(Refusal::Denied),
            ),
            (
                Deny,
                false,
                browser,
                NoSession::Foreign,
                U::Refuse(Refusal::InvalidCookie),
            ),
            // ALB sends an ended session to a login even under `deny`.
            (Deny, false, browser, NoSession::Ended, U::Login),
            (Deny, false, script, NoSession::Ended, U::LoginRequired),
            (Deny, true, preflight, NoSession::Never, U::Preflight),
        ];
        for (on, allow_preflight, asking, why, expected) in cases {
            assert_eq!(
                unauthenticated(on, allow_preflight, asking, why),
                expected,
                "{on:?} {allow_preflight} {asking:?} {why:?}"
            );
        }
    }
}
