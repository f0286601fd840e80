//! The login at the edge, put together: the redirect to the provider, the callback,
//! and the session check that lets a request through with identity headers. The data
//! plane calls in here for every guarded request; everything slow (discovery, JWKS)
//! is cached per provider.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::flow::{self, FlowError, FlowState};
use super::id_token::{self, Expected, IdTokenError};
use super::identity::{self, DataHeader, SigningKey, SigningKeys};
use super::idp::{ClientAuth, Hop, IdpClient, IdpError, TokenResponse};
use super::providers::{Provider, ProviderKey, Registry};
use super::redirect::safe_return_path;
use super::revocations::Revoked;
use super::sealed::KeyRing;
use super::session::{self, Session, SessionError};
use super::shared::{RefreshClaim, RefreshResult, SharedError, SharedState};
use crate::compile::AuthPolicy;
use crate::diagnostics::ObjectRef;
use crate::form::{form_encode, form_pairs, repeated_param};
use crate::model::{ClaimsFrom, SessionStore};

pub use crate::model::CALLBACK_PATH;
/// ALB's `x-amzn-oidc-data` lives about a minute.
const DATA_LIFETIME_SECS: i64 = 60;
/// A signed `x-amzn-oidc-data` is reused for this long, well inside its lifetime.
const DATA_REUSE_SECS: i64 = 20;
/// A finished refresh answers requests still carrying the old cookie for this long.
const REFRESH_REUSE: Duration = Duration::from_secs(30);
/// How long a replica holds a session's refresh lock, and others wait for its result:
/// longer than a refresh takes (token and userinfo, each within the IdP timeout).
const REFRESH_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting replica looks for another's refresh result.
const REFRESH_POLL: Duration = Duration::from_millis(25);
/// Sessions whose opened form and identity headers are kept (least recently and
/// least often used go first): a few KiB each for a usual session, so tens of MB;
/// sessions near the cookie limit (16 KiB sealed) weigh several times that.
const MAX_CACHED_SESSIONS: usize = 20_000;
/// An access token without `expires_in` is taken to last this long.
const DEFAULT_ACCESS_TOKEN_SECS: i64 = 3600;
/// `expires_in` is held within these bounds: a provider's zero or negative value
/// would count as expired before use, an absurd one would never refresh.
const MIN_ACCESS_TOKEN_SECS: i64 = 1;
const MAX_ACCESS_TOKEN_SECS: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Idp(#[from] IdpError),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("the provider sent the user back with error {error}: {description}")]
    ProviderError { error: String, description: String },
    #[error("the callback has no code parameter")]
    MissingCode,
    #[error("userinfo's sub {userinfo:?} is not the ID token's {id_token:?}")]
    SubjectMismatch { id_token: String, userinfo: String },
    #[error("the token response has no ID token")]
    NoIdToken,
    #[error(
        "the callback's iss {got:?} is not the issuer (RFC 9207: an authorization response from another provider)"
    )]
    IssuerMismatch { got: Option<String> },
    #[error(transparent)]
    Shared(#[from] SharedError),
    #[error("another replica's refresh of this session failed: {0}")]
    RefreshedElsewhere(String),
    #[error("front-channel logout request refused: {0}")]
    FrontChannel(&'static str),
    #[error("front-channel logout request refused: its sid is {len} bytes, more than {max}", max = super::revocations::MAX_SID_BYTES)]
    SidTooLong { len: usize },
    #[error("the session store (Redis) is unavailable: {0}")]
    SessionStore(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl LoginError {
    /// ALB's `error_reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Flow(e) => e.reason(),
            Self::Idp(e) => e.reason(),
            Self::IdToken(e) => e.reason(),
            Self::Session(SessionError::ClaimsTooLarge(_)) => "AuthUserinfoResponseSizeExceeded",
            Self::Session(_) | Self::Internal(_) => "AuthUnhandledException",
            Self::ProviderError { .. } => "AuthInvalidGrantError",
            Self::MissingCode => "AuthMissingCodeParam",
            Self::SubjectMismatch { .. } => "AuthInvalidUserinfoResponse",
            Self::NoIdToken => "AuthInvalidTokenResponse",
            Self::IssuerMismatch { .. } => "AuthIssuerMismatch",
            Self::FrontChannel(_) => "AuthInvalidLogoutRequest",
            Self::SidTooLong { .. } => "AuthLogoutSidTooLong",
            Self::Shared(_) => "AuthSharedStateUnavailable",
            Self::SessionStore(_) => "AuthSessionStoreUnavailable",
            Self::RefreshedElsewhere(_) => "AuthInvalidGrantError",
        }
    }

    /// What the person at the browser is told: never the provider's own words, which
    /// go to the log and the flow record.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Flow(_) => {
                "The login could not be matched to this browser; start again from the application."
            }
            Self::ProviderError { .. } => "The identity provider did not complete the login.",
            Self::FrontChannel(_) | Self::SidTooLong { .. } => "The logout request is not valid.",
            Self::Shared(_) => "Sessions cannot be checked right now; try again in a moment.",
            Self::SessionStore(_) => "Sessions cannot be stored right now; try again in a moment.",
            Self::RefreshedElsewhere(_) => "The identity provider did not renew the session.",
            Self::MissingCode | Self::IssuerMismatch { .. } => {
                "The login response is not valid; start again from the application."
            }
            Self::IdToken(_) | Self::SubjectMismatch { .. } | Self::NoIdToken => {
                "The identity provider's answer could not be verified."
            }
            Self::Idp(_) => {
                "The identity provider could not be reached or did not answer as expected."
            }
            Self::Session(SessionError::ClaimsTooLarge(_)) => {
                "The user's claims are too large for a session."
            }
            Self::Session(_) | Self::Internal(_) => "The login failed inside Portcullis.",
        }
    }

    /// ALB's status for each failure.
    pub fn status(&self) -> u16 {
        match self {
            Self::Flow(FlowError::Random) => 500,
            Self::Flow(_) => 401,
            Self::ProviderError { error, .. } if error == "access_denied" => 401,
            Self::ProviderError { .. } => 561,
            Self::MissingCode => 401,
            Self::Idp(IdpError::InvalidGrant { .. }) => 401,
            Self::IdToken(_) | Self::SubjectMismatch { .. } | Self::NoIdToken => 401,
            Self::IssuerMismatch { .. } => 401,
            Self::FrontChannel(_) | Self::SidTooLong { .. } => 400,
            Self::Shared(_) | Self::SessionStore(_) => 503,
            Self::RefreshedElsewhere(_) => 401,
            _ => 500,
        }
    }
}

type SessionKey = [u8; 32];
type RefreshCell = Arc<OnceCell<Result<Arc<Session>, Arc<LoginError>>>>;

pub struct Authenticator {
    providers: Arc<Registry>,
    ring: KeyRing,
    signing_keys: SigningKeys,
    /// The `signer` of `x-amzn-oidc-data`, with `{namespace}`, `{name}` and `{id}`
    /// standing for the AuthRule's.
    signer: String,
    /// Refreshes in flight or just finished, by the stale session's refresh token:
    /// concurrent requests of one session share one refresh, and requests that still
    /// carry the old cookie a moment later reuse its result instead of spending a
    /// refresh token the provider may have rotated.
    refreshes: Mutex<HashMap<SessionKey, (Instant, RefreshCell)>>,
    /// Signed `x-amzn-oidc-data` by session, with the time it was signed.
    signed_data: quick_cache::sync::Cache<SessionKey, (i64, HeaderValue)>,
    /// Logouts providers announced (back and front channel), the logout tokens'
    /// `jti`s already taken, and refresh locks: in process, or in Redis for every
    /// replica.
    shared: Arc<SharedState>,
    opened: quick_cache::sync::Cache<SessionKey, Arc<Session>>,
}

/// A refreshed session, and whether this request is the one that refreshed it.
pub struct Refreshed {
    pub session: Arc<Session>,
    pub performed: bool,
}

/// Where a logout sends the browser, with the cookies that end the session.
pub struct LoggedOut {
    pub set_cookies: Vec<String>,
    pub location: String,
    /// Whose session ended, when there was one.
    pub sub: Option<String>,
}

/// What a request's cookies carry for a logout: the session when it can be read, and
/// for a session kept in Redis its record's name (known even when the record cannot
/// be read, so it is still deleted by name).
#[derive(Default)]
struct Own {
    session: Option<Session>,
    record: Option<String>,
}

/// A request that carries a valid session: the headers the backend gets, ready to
/// send (a clone shares their bytes). A value that cannot travel in a header is `None`
/// and not sent.
#[derive(Clone)]
pub struct Identity {
    pub access_token: Option<HeaderValue>,
    pub sub: Option<HeaderValue>,
    pub data: HeaderValue,
}

/// Identity headers as made for one rule, with when their signed header was signed.
pub struct SignedIdentity {
    made_for: MadeFor,
    signed_at: i64,
    identity: Identity,
}

/// What a signed data header is made for besides its claims: the rule (its signer),
/// the issuer and client it names, and which claims it carries. Compared field by
/// field, so checking a session's reused headers digests nothing.
struct MadeFor {
    rule: ObjectRef,
    issuer: String,
    client_id: String,
    claims: ClaimsFrom,
}

impl MadeFor {
    fn of(policy: &AuthPolicy) -> MadeFor {
        MadeFor {
            rule: policy.rule.clone(),
            issuer: policy.issuer.clone(),
            client_id: policy.client_id.clone(),
            claims: policy.data_claims,
        }
    }

    fn is_for(&self, policy: &AuthPolicy) -> bool {
        self.claims == policy.data_claims
            && self.rule == policy.rule
            && self.issuer == policy.issuer
            && self.client_id == policy.client_id
    }
}

/// Whose claims a signed data header carries: a session's, or a bearer token's own.
const SESSION: &str = "session";
const BEARER: &str = "bearer";

/// Whether a header signed at `signed_at` may still be sent at `now`.
fn reusable(signed_at: i64, now: i64) -> bool {
    now - signed_at < DATA_REUSE_SECS && signed_at <= now
}

/// A header value that shares `text`'s bytes instead of copying them.
fn header_value(text: impl Into<String>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text.into())).ok()
}

/// What a login step needs to know of the browser's request.
#[derive(Clone, Copy)]
pub struct Browser<'a> {
    pub host: &'a str,
    /// This host's callback URL, as the browser addresses it.
    pub redirect_uri: &'a str,
    /// The request's `Cookie` header values.
    pub cookies: &'a [&'a str],
    /// Unix seconds.
    pub now: i64,
    /// Whether cookies get `Secure` (the request came over TLS).
    pub secure: bool,
}

/// A redirect to the provider, with the flow cookie to set.
pub struct LoginRedirect {
    pub location: String,
    pub set_cookie: String,
    pub flow_id: String,
    /// The `state` the provider sends back (in `location` too): the flow record keeps
    /// a keyed hash of it, so a callback that lost its cookie still finds its start.
    pub state: String,
}

/// The authorization request a login sends the browser to, parameters in ALB's order
/// (`diagnose` sends the same request).
pub fn authorization_url(
    endpoint: &str,
    policy: &AuthPolicy,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    pkce_challenge: &str,
) -> String {
    let mut location = format!(
        "{endpoint}{}client_id={}&redirect_uri={}&response_type=code&scope={}&state={}",
        if endpoint.contains('?') { '&' } else { '?' },
        form_encode(&policy.client_id),
        form_encode(redirect_uri),
        form_encode(&policy.scope),
        form_encode(state)
    );
    for (k, v) in &policy.extra_params {
        location.push_str(&format!("&{k}={}", form_encode(v)));
    }
    for resource in &policy.resource {
        location.push_str(&format!("&resource={}", form_encode(resource)));
    }
    location.push_str(&format!(
        "&nonce={}&code_challenge={}&code_challenge_method=S256",
        form_encode(nonce),
        form_encode(pkce_challenge)
    ));
    location
}

/// What a callback did, hop by hop, for the flow record. `flow_id` is known once the
/// flow cookie opens.
#[derive(Default)]
pub struct Notes {
    pub flow_id: Option<String>,
    pub hops: Vec<Note>,
}

pub struct Note {
    /// Unix milliseconds.
    pub at: i64,
    pub hop: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Notes {
    fn note(&mut self, hop: &'static str, ok: bool, detail: String) {
        self.hops.push(Note {
            at: jiff::Timestamp::now().as_millisecond(),
            hop,
            ok,
            detail,
        });
    }

    /// Notes a failed hop and returns its error.
    fn fail<T>(&mut self, hop: &'static str, e: LoginError) -> Result<T, LoginError> {
        self.note(hop, false, format!("{}: {e}", e.reason()));
        Err(e)
    }

    /// Notes the outcome of one hop: its detail on success, reason and error on failure.
    fn outcome<T, E: Into<LoginError>>(
        &mut self,
        hop: &'static str,
        result: Result<T, E>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, LoginError> {
        match result {
            Ok(v) => {
                self.note(hop, true, detail(&v));
                Ok(v)
            }
            Err(e) => {
                let e = e.into();
                self.note(hop, false, format!("{}: {e}", e.reason()));
                Err(e)
            }
        }
    }
}

/// A completed callback: the session cookies and where to send the browser.
pub struct LoggedIn {
    pub set_cookies: Vec<String>,
    pub location: String,
    pub sub: String,
    /// The sealed session's size in bytes (in the cookies, or in Redis).
    pub session_bytes: usize,
}

impl Authenticator {
    pub fn new(
        idp: IdpClient,
        ring: KeyRing,
        signing_keys: impl Into<SigningKeys>,
        signer: String,
        shared: Arc<SharedState>,
    ) -> Self {
        Self {
            providers: Arc::new(Registry::new(idp)),
            ring,
            signing_keys: signing_keys.into(),
            signer,
            refreshes: Mutex::new(HashMap::new()),
            signed_data: quick_cache::sync::Cache::new(MAX_CACHED_SESSIONS),
            opened: quick_cache::sync::Cache::new(MAX_CACHED_SESSIONS),
            shared,
        }
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_keys.current
    }

    /// The key that signs and the keys published beside it.
    pub fn signing_keys(&self) -> &SigningKeys {
        &self.signing_keys
    }

    /// Sessions and flows are bound to the AuthRule and the host; under a cookie
    /// domain, to the namespace, the domain, the issuer and the client, so every rule
    /// of the namespace with that provider and client opens the session on every host
    /// under the domain, and no other client's or namespace's rule ever does.
    pub fn binding(policy: &AuthPolicy, host: &str) -> String {
        let (ns, name) = (&policy.rule.namespace, &policy.rule.name);
        if let Some(domain) = &policy.cookie_domain {
            return serde_json::json!(["domain", ns, domain, policy.issuer, policy.client_id])
                .to_string();
        }
        match policy.rule.kind.as_str() {
            // A policy made from an Ingress's ALB annotations: never an AuthRule's binding.
            "Ingress" => binding_for(ns, &format!("{name}.ingress-annotations"), host),
            _ => binding_for(ns, name, host),
        }
    }

    /// The state shared with other replicas (for its health metric).
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// The provider registry, shared with whoever reports provider health.
    pub fn providers(&self) -> &Arc<Registry> {
        &self.providers
    }

    fn idp(&self) -> &IdpClient {
        self.providers.client()
    }

    async fn provider(&self, policy: &AuthPolicy) -> Result<Arc<Provider>, LoginError> {
        Ok(self.providers.get(&ProviderKey::of(policy)).await?)
    }

    /// The provider's authorization URL for a new flow, parameters in ALB's order.
    pub async fn begin(
        &self,
        policy: &AuthPolicy,
        at: &Browser<'_>,
        return_to: &str,
    ) -> Result<LoginRedirect, LoginError> {
        let Browser {
            host,
            redirect_uri,
            now,
            secure,
            ..
        } = *at;
        let provider = self.provider(policy).await?;
        let (state, sealed) =
            flow::begin(&self.ring, &Self::binding(policy, host), return_to, now)?;
        let location = authorization_url(
            &provider.meta.authorization_endpoint,
            policy,
            redirect_uri,
            &state.state,
            &state.nonce,
            &state.pkce_challenge(),
        );
        Ok(LoginRedirect {
            location,
            set_cookie: flow::set_cookie(&state.state, &sealed, secure),
            flow_id: state.flow_id,
            state: state.state,
        })
    }

    /// The callback: state against the flow cookie first, then the code, the ID token,
    /// userinfo, and the session. Each hop is noted in `notes`.
    pub async fn callback(
        &self,
        policy: &AuthPolicy,
        at: &Browser<'_>,
        raw_query: &str,
        notes: &mut Notes,
    ) -> Result<LoggedIn, LoginError> {
        let query = &form_pairs(raw_query);
        note_callback_query(notes, query);
        if repeated_param(raw_query, &["state", "code", "iss", "error"]).is_some() {
            return notes.fail("callback", FlowError::RepeatedParameter.into());
        }
        let binding = Self::binding(policy, at.host);
        let state = self.open_flow(&binding, query, at, notes)?;
        if let Some(error) = query.get("error") {
            let e = LoginError::ProviderError {
                error: error.clone(),
                description: query.get("error_description").cloned().unwrap_or_default(),
            };
            return notes.fail("provider", e);
        }
        let code = query.get("code").filter(|c| !c.is_empty());
        let code = notes.outcome("code", code.ok_or(LoginError::MissingCode), |_| {
            "present".into()
        })?;
        let provider = self.provider(policy).await;
        let provider = notes.outcome("discovery", provider, |p| {
            format!("token endpoint {}", p.meta.token_endpoint)
        })?;
        if let Err(e) = check_response_issuer(&provider, policy, query.get("iss")) {
            return notes.fail("callback", e);
        }
        let tokens = self
            .redeem(&provider, policy, code, at.redirect_uri, &state, notes)
            .await?;
        let Some(id_token) = tokens.id_token.as_deref() else {
            return notes.fail("token", LoginError::NoIdToken);
        };
        let validated = self
            .validate_id_token(&provider, policy, &state, id_token, at.now)
            .await;
        let id = notes.outcome("id-token", validated, |c| {
            format!(
                "signature, iss, aud, exp, iat and nonce valid; sub {}",
                c.sub
            )
        })?;
        let userinfo = self
            .userinfo_for(&provider, &tokens.access_token, &id.sub, notes)
            .await?;
        note_claims(notes, policy, &id.claims, &userinfo);
        let session = new_session(policy, &state, &id, tokens, userinfo, at.now);
        let stored = match session {
            Ok(s) => self.store_new_session(policy, &binding, &s, at.now).await,
            Err(e) => Err(e.into()),
        };
        let (shards, session_bytes) = notes.outcome("session", stored, |(shards, bytes)| {
            match policy.spec.session.store {
                SessionStore::Cookie => format!("{bytes} bytes in {} cookie(s)", shards.len()),
                SessionStore::Redis => format!(
                    "{bytes} bytes in Redis; the cookie carries a {}-byte id",
                    shards.concat().len()
                ),
            }
        })?;
        let mut set_cookies = session::set_cookie_headers(
            &policy.cookie_name,
            policy.cookie_domain.as_deref(),
            &shards,
            at.secure,
        );
        set_cookies.push(flow::clear_cookie(&state.state, at.secure));
        notes.note("final-redirect", true, format!("to {}", state.return_to));
        Ok(LoggedIn {
            set_cookies,
            location: state.return_to,
            sub: id.sub,
            session_bytes,
        })
    }

    /// Keeps a new session where its rule says: sealed into cookie shards, or sealed
    /// into a Redis record that the one cookie names. The cookie values and the
    /// sealed session's size.
    async fn store_new_session(
        &self,
        policy: &AuthPolicy,
        binding: &str,
        s: &Session,
        now: i64,
    ) -> Result<(Vec<String>, usize), LoginError> {
        if policy.spec.session.store == SessionStore::Cookie {
            let shards = session::seal(&self.ring, binding, s)?;
            let bytes = shards.iter().map(String::len).sum();
            return Ok((shards, bytes));
        }
        let (cookie, name) = session::new_reference(&self.ring, binding)?;
        let record = session::seal_record(&self.ring, binding, &name, s)?;
        let ended_by = ended_by(policy, s);
        (self.shared)
            .put_session(&name, &record, s.expires_at - now, &ended_by, false)
            .await
            .map_err(|e| LoginError::SessionStore(e.to_string()))?;
        Ok((vec![cookie], record.len()))
    }

    /// Opens the flow cookie against the callback's state; the flow's id goes into
    /// `notes` as soon as it is known, so even a later failure is recorded under it.
    fn open_flow(
        &self,
        binding: &str,
        query: &HashMap<String, String>,
        at: &Browser<'_>,
        notes: &mut Notes,
    ) -> Result<FlowState, LoginError> {
        let now = at.now;
        let finished = flow::finish(
            &self.ring,
            binding,
            query.get("state").map(String::as_str),
            at.cookies.iter().copied(),
            now,
        );
        if let Ok(state) = &finished {
            notes.flow_id = Some(state.flow_id.clone());
        }
        notes.outcome("flow-cookie", finished, |s| {
            format!(
                "state matches; the login began {} s ago",
                now - s.started_at
            )
        })
    }

    /// Redeems the code at the token endpoint, noting how long the provider took.
    async fn redeem(
        &self,
        provider: &Provider,
        policy: &AuthPolicy,
        code: &str,
        redirect_uri: &str,
        state: &FlowState,
        notes: &mut Notes,
    ) -> Result<TokenResponse, LoginError> {
        let client = ClientAuth::of(policy);
        let started = Instant::now();
        let redeemed = self
            .idp()
            .redeem_code(
                &provider.meta.token_endpoint,
                &client,
                code,
                redirect_uri,
                &state.pkce_verifier,
            )
            .await;
        notes.outcome("token", redeemed, |t| {
            format!(
                "{} answered in {} ms; ID token {}, refresh token {}",
                provider.meta.token_endpoint,
                started.elapsed().as_millis(),
                yes_no(t.id_token.is_some()),
                yes_no(t.refresh_token.is_some())
            )
        })
    }

    /// The userinfo claims, which must be about the ID token's subject.
    async fn userinfo_for(
        &self,
        provider: &Provider,
        access_token: &str,
        sub: &str,
        notes: &mut Notes,
    ) -> Result<Map<String, Value>, LoginError> {
        let started = Instant::now();
        let claims = self.userinfo(provider, access_token).await;
        let claims = notes.outcome("userinfo", claims, |c| {
            format!("{} claims in {} ms", c.len(), started.elapsed().as_millis())
        })?;
        let userinfo_sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if userinfo_sub != sub {
            let e = LoginError::SubjectMismatch {
                id_token: sub.to_owned(),
                userinfo: userinfo_sub,
            };
            return notes.fail("userinfo", e);
        }
        Ok(claims)
    }

    async fn validate_id_token(
        &self,
        provider: &Provider,
        policy: &AuthPolicy,
        state: &FlowState,
        token: &str,
        now: i64,
    ) -> Result<id_token::IdClaims, LoginError> {
        let expected = Expected {
            issuer: &policy.issuer,
            client_id: &policy.client_id,
            nonce: &state.nonce,
            now,
            algs: &provider.algs,
        };
        self.with_current_keys(provider, |jwks| id_token::validate(token, jwks, &expected))
            .await
    }

    /// Runs `check` against the provider's keys. A token signed with a `kid` not seen
    /// before means the provider may have rotated its keys: they are fetched again
    /// (once per unknown kid and interval) and `check` runs once more.
    pub(super) async fn with_current_keys<T>(
        &self,
        provider: &Provider,
        check: impl Fn(&id_token::Jwks) -> Result<T, IdTokenError>,
    ) -> Result<T, LoginError> {
        match check(&provider.jwks.load()) {
            Err(IdTokenError::UnknownKey(kid)) => {
                let kid_text = kid.clone().unwrap_or_default();
                if self.providers.refetch_keys_for(provider, &kid_text).await? {
                    Ok(check(&provider.jwks.load())?)
                } else {
                    Err(IdTokenError::UnknownKey(kid).into())
                }
            }
            other => Ok(other?),
        }
    }

    async fn userinfo(
        &self,
        provider: &Provider,
        access_token: &str,
    ) -> Result<Map<String, Value>, LoginError> {
        let url = provider
            .meta
            .userinfo_endpoint
            .as_deref()
            .ok_or_else(|| IdpError::Invalid {
                hop: Hop::Userinfo,
                detail: "the provider has no userinfo endpoint".into(),
            })?;
        Ok(self.idp().userinfo(url, access_token).await?)
    }

    /// The session in the request's cookies, if it is valid and not timed out.
    pub async fn session(
        &self,
        policy: &AuthPolicy,
        host: &str,
        cookies: &[&str],
        now: i64,
    ) -> SessionState {
        let Some(shards) = session::read_shards(cookies.iter().copied(), &policy.cookie_name)
        else {
            return SessionState::None;
        };
        let binding = Self::binding(policy, host);
        let opened = match policy.spec.session.store {
            SessionStore::Cookie => self.open_cookie_session(&binding, &shards),
            SessionStore::Redis => self.open_stored_session(&binding, &shards).await,
        };
        let opened = match opened {
            Ok(s) => s,
            Err(state) => return state,
        };
        match self.revoked_at_provider(policy, &opened) {
            Ok(true) => {
                if let Some(name) = &opened.record {
                    // Ended: its record goes too (when Redis answers; it expires anyway).
                    let _ = self.shared.delete_session(name).await;
                }
                return SessionState::Expired;
            }
            Ok(false) => {}
            Err(_) => return SessionState::Unverifiable,
        }
        match opened {
            s if s.expires_at <= now => SessionState::Expired,
            s if s.access_expires_at > now => SessionState::Valid(s),
            s if s.refresh_token.is_some() => SessionState::Stale(s),
            _ => SessionState::Expired,
        }
    }

    fn open_cookie_session(
        &self,
        binding: &str,
        shards: &[String],
    ) -> Result<Arc<Session>, SessionState> {
        if let Some(s) = self.opened_session(binding, shards) {
            return Ok(s);
        }
        match session::open(&self.ring, binding, shards) {
            Ok(s) => Ok(self.remember_session(binding, shards, s)),
            Err(_) => Err(SessionState::Invalid),
        }
    }

    /// The session a server-side session's cookie names, read from Redis on every
    /// request (a logout on another replica deletes it there). Only records of the
    /// size of a cookie session are kept opened in memory.
    async fn open_stored_session(
        &self,
        binding: &str,
        shards: &[String],
    ) -> Result<Arc<Session>, SessionState> {
        let name = session::open_reference(&self.ring, binding, shards)
            .map_err(|_| SessionState::Invalid)?;
        let record = match self.shared.get_session(&name).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(SessionState::Expired),
            Err(_) => return Err(SessionState::StoreUnavailable),
        };
        let open = |name: &str, record: &str| {
            session::open_record(&self.ring, binding, name, record)
                .map_err(|_| SessionState::Invalid)
        };
        if record.len() > session::MAX_SHARDS * session::SHARD_VALUE_BYTES {
            return open(&name, &record).map(Arc::new);
        }
        let parts = [name, record];
        if let Some(s) = self.opened_session(binding, &parts) {
            return Ok(s);
        }
        let s = open(&parts[0], &parts[1])?;
        Ok(self.remember_session(binding, &parts, s))
    }

    /// Whether the provider announced a logout of this session (by `sid`, or of its
    /// user by `sub`) after it began.
    fn revoked_at_provider(&self, policy: &AuthPolicy, s: &Session) -> Result<bool, SharedError> {
        Ok((self.shared)
            .revoked_at(&policy.issuer, &revocation_keys(policy, s))?
            .is_some_and(|t| t >= s.logged_in_at))
    }

    /// A front-channel logout (OpenID Connect Front-Channel Logout 1.0): the provider's
    /// page loads this host's front-channel URI with `iss` and `sid`. Sessions of that
    /// `sid` under the host's AuthRules of that issuer end, and the browser's own
    /// session cookie is cleared when it is one of them. Without `iss` and `sid` only
    /// the browser's own sessions on this host end.
    pub async fn frontchannel_logout(
        &self,
        policies: &[Arc<AuthPolicy>],
        host: &str,
        query: &str,
        cookies: &[&str],
        secure: bool,
        now: i64,
    ) -> Result<Vec<String>, LoginError> {
        if repeated_param(query, &["iss", "sid"]).is_some() {
            return Err(LoginError::FrontChannel("iss or sid is repeated"));
        }
        let query = form_pairs(query);
        let (iss, sid) = (query.get("iss"), query.get("sid"));
        if let Some(sid) = sid
            && sid.len() > super::revocations::MAX_SID_BYTES
        {
            return Err(LoginError::SidTooLong { len: sid.len() });
        }
        let matching: Vec<&Arc<AuthPolicy>> = match (iss, sid) {
            (Some(iss), Some(_)) => policies.iter().filter(|p| &p.issuer == iss).collect(),
            (None, None) => policies.iter().collect(),
            _ => {
                return Err(LoginError::FrontChannel(
                    "iss and sid come together or not at all",
                ));
            }
        };
        if matching.is_empty() {
            return Err(LoginError::FrontChannel(
                "no AuthRule of this host has that issuer",
            ));
        }
        let mut set_cookies = Vec::new();
        for policy in matching {
            if let Some(sid) = sid {
                let key = Revoked::SidIn {
                    namespace: policy.rule.namespace.clone(),
                    sid: sid.clone(),
                };
                self.shared.revoke(&policy.issuer, &key, now).await?;
            }
            let own = self.own_session(policy, host, cookies).await;
            let ends = match sid {
                None => own.session.is_some() || own.record.is_some(),
                Some(sid) => own.session.is_some_and(|s| s.sid.as_ref() == Some(sid)),
            };
            if ends {
                if let Some(name) = &own.record {
                    self.shared
                        .delete_session(name)
                        .await
                        .map_err(|e| LoginError::SessionStore(e.to_string()))?;
                }
                set_cookies.extend(session::clear_cookie_headers(
                    &policy.cookie_name,
                    policy.cookie_domain.as_deref(),
                    secure,
                ));
            }
        }
        Ok(set_cookies)
    }

    /// A back-channel logout token posted by a provider: validated against the first of
    /// `policies` (issuer and client) it was made for, then every session of its `sid`
    /// (or `sub`) ends on this replica.
    pub async fn backchannel_logout(
        &self,
        policies: &[Arc<AuthPolicy>],
        token: &str,
        now: i64,
    ) -> Result<id_token::LogoutClaims, LoginError> {
        let mut last = LoginError::IdToken(IdTokenError::Malformed);
        for policy in policies {
            let provider = match self.provider(policy).await {
                Ok(p) => p,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let checked = self
                .with_current_keys(&provider, |jwks| {
                    id_token::validate_logout_token(
                        token,
                        jwks,
                        &policy.issuer,
                        &policy.client_id,
                        &provider.algs,
                        now,
                    )
                })
                .await;
            match checked {
                Ok(claims) => {
                    self.take_logout(&policy.issuer, &claims, now).await?;
                    return Ok(claims);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn take_logout(
        &self,
        issuer: &str,
        claims: &id_token::LogoutClaims,
        now: i64,
    ) -> Result<(), LoginError> {
        let keep = id_token::LOGOUT_TOKEN_MAX_AGE_SECS + id_token::LEEWAY_SECS;
        if !(self.shared)
            .take_jti(&claims.jti, claims.iat, now, keep)
            .await?
        {
            return Err(LoginError::IdToken(IdTokenError::Replayed));
        }
        let key = match (&claims.sid, &claims.sub) {
            (Some(sid), _) => Revoked::Sid(sid.clone()),
            (None, Some(sub)) => Revoked::Sub(sub.clone()),
            (None, None) => return Err(LoginError::IdToken(IdTokenError::Malformed)),
        };
        if let Err(e) = self.shared.revoke(issuer, &key, now).await {
            self.shared.release_jti(&claims.jti).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Sessions already opened, by their exact cookie text and binding: a browser sends
    /// the same cookie on every request, and opening it (base64, AES-GCM, JSON) is the
    /// costly part of a session check. Only cookies that opened are remembered.
    fn opened_session(&self, binding: &str, shards: &[String]) -> Option<Arc<Session>> {
        self.opened.get(&opened_key(binding, shards))
    }

    fn remember_session(&self, binding: &str, shards: &[String], s: Session) -> Arc<Session> {
        let s = Arc::new(s);
        self.opened.insert(opened_key(binding, shards), s.clone());
        s
    }

    /// Renews a stale session with its refresh token and reads userinfo again, as ALB
    /// does. Requests of one session share one refresh. The session keeps its end time.
    pub async fn refresh(
        &self,
        policy: &AuthPolicy,
        host: &str,
        stale: &Session,
        now: i64,
    ) -> Result<Refreshed, Arc<LoginError>> {
        let binding = Self::binding(policy, host);
        let key = session_key(&[&binding, stale.refresh_token.as_deref().unwrap_or_default()]);
        let cell = {
            let mut refreshes = self
                .refreshes
                .lock()
                .map_err(|_| Arc::new(LoginError::Internal("refresh table poisoned".into())))?;
            refreshes.retain(|_, (started, _)| started.elapsed() < REFRESH_REUSE);
            refreshes
                .entry(key)
                .or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new())))
                .1
                .clone()
        };
        let performed = AtomicBool::new(false);
        let shared_key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let result = cell
            .get_or_init(|| async {
                let refreshed = self
                    .refresh_across_replicas(policy, &binding, &shared_key, stale, now)
                    .await;
                refreshed
                    .map(|(session, here)| {
                        performed.store(here, Ordering::Relaxed);
                        Arc::new(session)
                    })
                    .map_err(Arc::new)
            })
            .await
            .clone();
        result.map(|session| Refreshed {
            session,
            performed: performed.load(Ordering::Relaxed),
        })
    }

    /// One refresh of a session across replicas: the one that takes the shared lock
    /// spends the refresh token and stores the renewed session (sealed) for the
    /// others, which wait for it. Returns the session and whether it was renewed here.
    async fn refresh_across_replicas(
        &self,
        policy: &AuthPolicy,
        binding: &str,
        key: &str,
        stale: &Session,
        now: i64,
    ) -> Result<(Session, bool), LoginError> {
        let deadline = Instant::now() + REFRESH_WAIT;
        loop {
            let (stored, locked) = self.shared.refresh_outcome(key).await?;
            match stored {
                Some(RefreshResult::Sealed(text)) => {
                    return Ok((self.open_shared(binding, stale, &text)?, false));
                }
                Some(RefreshResult::Failed(reason)) => {
                    return Err(LoginError::RefreshedElsewhere(reason));
                }
                None => {}
            }
            if !locked && self.shared.claim_refresh(key, REFRESH_WAIT).await? == RefreshClaim::Mine
            {
                let mut result = self.refresh_once(policy, stale, now).await;
                if let (Ok(s), Some(name)) = (&result, &stale.record) {
                    result = self.rewrite_record(policy, binding, name, s, now).await;
                }
                if self.shared.is_shared() {
                    let outcome = match &result {
                        Ok(s) => self.seal_shared(binding, s).map(RefreshResult::Sealed),
                        Err(e) => Ok(RefreshResult::Failed(e.reason().into())),
                    };
                    let stored = match outcome {
                        Ok(o) => self.shared.finish_refresh(key, &o, REFRESH_REUSE).await,
                        Err(e) => Err(SharedError::Unavailable(e.to_string())),
                    };
                    if let Err(e) = stored {
                        tracing::warn!(rule = %policy.rule, error = %e, "the refreshed session could not be shared; other replicas refresh again");
                    }
                }
                return result.map(|s| (s, true));
            }
            if Instant::now() >= deadline {
                return Err(SharedError::Unavailable(
                    "another replica's refresh did not finish in time".into(),
                )
                .into());
            }
            tokio::time::sleep(REFRESH_POLL).await;
        }
    }

    /// A refreshed session sealed for the replicas waiting on its refresh, as its
    /// rule keeps sessions (cookie shards joined by spaces, or a Redis record).
    fn seal_shared(&self, binding: &str, s: &Session) -> Result<String, SessionError> {
        match &s.record {
            Some(name) => session::seal_record(&self.ring, binding, name, s),
            None => session::seal(&self.ring, binding, s).map(|shards| shards.join(" ")),
        }
    }

    /// What `seal_shared` made of the renewal of `stale`.
    fn open_shared(
        &self,
        binding: &str,
        stale: &Session,
        text: &str,
    ) -> Result<Session, SessionError> {
        match &stale.record {
            Some(name) => session::open_record(&self.ring, binding, name, text),
            None => {
                let shards: Vec<String> = text.split(' ').map(str::to_owned).collect();
                session::open(&self.ring, binding, &shards)
            }
        }
    }

    /// Writes a refreshed server-side session over its record (never bringing back
    /// one a logout deleted meanwhile); the cookie stays as it is.
    async fn rewrite_record(
        &self,
        policy: &AuthPolicy,
        binding: &str,
        name: &str,
        s: &Session,
        now: i64,
    ) -> Result<Session, LoginError> {
        let record = session::seal_record(&self.ring, binding, name, s)?;
        let written = (self.shared)
            .put_session(
                name,
                &record,
                s.expires_at - now,
                &ended_by(policy, s),
                true,
            )
            .await
            .map_err(|e| LoginError::SessionStore(e.to_string()))?;
        if !written {
            return Err(LoginError::RefreshedElsewhere(
                "the session ended (logged out) during its refresh".into(),
            ));
        }
        Ok(s.clone())
    }

    async fn refresh_once(
        &self,
        policy: &AuthPolicy,
        stale: &Session,
        now: i64,
    ) -> Result<Session, LoginError> {
        let provider = self.provider(policy).await?;
        let client = ClientAuth::of(policy);
        let refresh_token = stale.refresh_token.as_deref().unwrap_or_default();
        let tokens = self
            .idp()
            .refresh(&provider.meta.token_endpoint, &client, refresh_token)
            .await?;
        // A new ID token's claims are read from now on: it is checked as at the login.
        let id_claims = match tokens.id_token.as_deref() {
            Some(token) => {
                let id = self
                    .validate_refreshed_id_token(&provider, policy, token, now)
                    .await?;
                if id.sub != stale.sub {
                    return Err(LoginError::SubjectMismatch {
                        id_token: id.sub,
                        userinfo: stale.sub.clone(),
                    });
                }
                Some(id.claims)
            }
            None => None,
        };
        let userinfo = self.userinfo(&provider, &tokens.access_token).await?;
        let sub = userinfo
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if sub != stale.sub {
            return Err(LoginError::SubjectMismatch {
                id_token: stale.sub.clone(),
                userinfo: sub,
            });
        }
        let session = Session {
            sub,
            userinfo,
            claims: Map::new(),
            access_token: tokens.access_token,
            // Providers that rotate refresh tokens send a new one; others keep the old.
            refresh_token: tokens.refresh_token.or_else(|| stale.refresh_token.clone()),
            id_token: tokens.id_token.or_else(|| stale.id_token.clone()),
            flow_id: stale.flow_id.clone(),
            access_expires_at: now + access_lifetime(tokens.expires_in),
            expires_at: stale.expires_at,
            sid: stale.sid.clone(),
            logged_in_at: stale.logged_in_at,
            record: stale.record.clone(),
            identity: Default::default(),
        };
        Ok(session.with_claims(id_claims.as_ref())?)
    }

    async fn validate_refreshed_id_token(
        &self,
        provider: &Provider,
        policy: &AuthPolicy,
        token: &str,
        now: i64,
    ) -> Result<id_token::IdClaims, LoginError> {
        let expected = Expected {
            issuer: &policy.issuer,
            client_id: &policy.client_id,
            nonce: "",
            now,
            algs: &provider.algs,
        };
        self.with_current_keys(provider, |jwks| {
            id_token::validate_refreshed(token, jwks, &expected)
        })
        .await
    }

    /// The cookies that carry `session` for this rule and host.
    pub fn session_cookies(
        &self,
        policy: &AuthPolicy,
        host: &str,
        session: &Session,
        secure: bool,
    ) -> Result<Vec<String>, LoginError> {
        if session.record.is_some() {
            // Its record was rewritten; the cookie names it still.
            return Ok(Vec::new());
        }
        let shards = session::seal(&self.ring, &Self::binding(policy, host), session)?;
        Ok(session::set_cookie_headers(
            &policy.cookie_name,
            policy.cookie_domain.as_deref(),
            &shards,
            secure,
        ))
    }

    /// The session the request's cookies carry for `policy` on `host`, whatever its
    /// state, for a logout to end.
    async fn own_session(&self, policy: &AuthPolicy, host: &str, cookies: &[&str]) -> Own {
        let Some(shards) = session::read_shards(cookies.iter().copied(), &policy.cookie_name)
        else {
            return Own::default();
        };
        let binding = Self::binding(policy, host);
        if policy.spec.session.store == SessionStore::Cookie {
            let session = session::open(&self.ring, &binding, &shards).ok();
            return Own {
                session,
                record: None,
            };
        }
        let Ok(name) = session::open_reference(&self.ring, &binding, &shards) else {
            return Own::default();
        };
        let session = match self.shared.get_session(&name).await {
            Ok(Some(record)) => session::open_record(&self.ring, &binding, &name, &record).ok(),
            Ok(None) | Err(_) => None,
        };
        Own {
            session,
            record: Some(name),
        }
    }

    /// Ends the session in the request's cookies: every shard is cleared and the
    /// browser goes to the provider's `end_session_endpoint` (with `id_token_hint`)
    /// when it has one. `requested` is the logout request's `redirect` parameter; only
    /// an allow-listed URL reaches the provider, only an allow-listed URL or a
    /// same-origin path is followed here. Logout never fails: a provider that cannot be
    /// reached still gets the cookies cleared.
    pub async fn logout(
        &self,
        policy: &AuthPolicy,
        host: &str,
        cookies: &[&str],
        requested: Option<&str>,
        secure: bool,
    ) -> LoggedOut {
        let Own { session, record } = self.own_session(policy, host, cookies).await;
        if let Some(name) = &record
            && let Err(e) = self.shared.delete_session(name).await
        {
            tracing::warn!(rule = %policy.rule, error = %e, "logout: the session's record could not be deleted from Redis; it lives until it expires, but this browser's cookie is cleared");
        }
        let allowed = &policy.post_logout_redirect_uris;
        let listed = requested
            .filter(|r| allowed.iter().any(|a| a == r))
            .or(allowed.first().map(String::as_str));
        let end_session = match self.provider(policy).await {
            Ok(p) => p.meta.end_session_endpoint.clone(),
            Err(e) => {
                tracing::warn!(rule = %policy.rule, error = %e, "logout: provider unreachable, clearing the session only");
                None
            }
        };
        let location = match end_session {
            Some(endpoint) => {
                let mut url = format!(
                    "{endpoint}{}client_id={}",
                    if endpoint.contains('?') { '&' } else { '?' },
                    form_encode(&policy.client_id)
                );
                if let Some(hint) = session.as_ref().and_then(|s| s.id_token.as_deref()) {
                    url.push_str(&format!("&id_token_hint={}", form_encode(hint)));
                }
                if let Some(target) = listed {
                    url.push_str(&format!(
                        "&post_logout_redirect_uri={}",
                        form_encode(target)
                    ));
                }
                url
            }
            None => listed
                .map(str::to_owned)
                .unwrap_or_else(|| safe_return_path(requested.unwrap_or("/")).to_owned()),
        };
        LoggedOut {
            set_cookies: session::clear_cookie_headers(
                &policy.cookie_name,
                policy.cookie_domain.as_deref(),
                secure,
            ),
            location,
            sub: session.map(|s| s.sub),
        }
    }

    /// The three identity headers for a valid session. The signed data header is
    /// reused for a while per session: signing is the costly part of a request.
    /// `x-amzn-oidc-data` carries userinfo's claims, as ALB's, unless the rule asks
    /// for the ID token's too (`spec.identityHeaders.claimsFrom`).
    pub fn identity(
        &self,
        policy: &AuthPolicy,
        session: &Session,
        now: i64,
    ) -> Result<Identity, LoginError> {
        let memo = session.identity.read(|m| {
            (m.made_for.is_for(policy) && reusable(m.signed_at, now)).then(|| m.identity.clone())
        });
        if let Some(identity) = memo {
            return Ok(identity);
        }
        let claims = match policy.data_claims {
            ClaimsFrom::UserInfo => &session.userinfo,
            ClaimsFrom::IdTokenAndUserInfo => &session.claims,
        };
        let (signed_at, identity) = self.signed_identity(
            policy,
            &session.sub,
            claims,
            &session.access_token,
            now,
            SESSION,
        )?;
        session.identity.set(SignedIdentity {
            made_for: MadeFor::of(policy),
            signed_at,
            identity: identity.clone(),
        });
        Ok(identity)
    }

    /// The identity headers for `sub` with `claims` (a session's, or a bearer token's),
    /// carrying `access_token` as the backend's `x-amzn-oidc-accesstoken`.
    pub fn identity_of(
        &self,
        policy: &AuthPolicy,
        sub: &str,
        claims: &Map<String, Value>,
        access_token: &str,
        now: i64,
    ) -> Result<Identity, LoginError> {
        Ok(self
            .signed_identity(policy, sub, claims, access_token, now, BEARER)?
            .1)
    }

    /// `identity_of`, with when its signed header was signed. `from` says whose claims
    /// these are (a session's or a bearer token's own): one access token sent both
    /// ways carries different claims each way.
    fn signed_identity(
        &self,
        policy: &AuthPolicy,
        sub: &str,
        claims: &Map<String, Value>,
        access_token: &str,
        now: i64,
        from: &str,
    ) -> Result<(i64, Identity), LoginError> {
        // The header names the rule (signer), issuer and client, and carries the claims
        // the rule chose: all part of the key.
        let key = digest_of([
            data_policy_key(policy).as_slice(),
            from.as_bytes(),
            access_token.as_bytes(),
        ]);
        let cached = self
            .signed_data
            .get(&key)
            .filter(|(signed_at, _)| reusable(*signed_at, now));
        let (signed_at, data) = match cached {
            Some(hit) => hit,
            None => {
                let signer =
                    identity::signer_for(&self.signer, &policy.rule.namespace, &policy.rule.name);
                let header = DataHeader {
                    issuer: &policy.issuer,
                    client_id: &policy.client_id,
                    signer: &signer,
                    exp: now + DATA_LIFETIME_SECS,
                };
                let signed = identity::sign_data(&self.signing_keys.current, &header, claims)
                    .map_err(|e| LoginError::Internal(e.to_string()))?;
                let data = header_value(signed).ok_or_else(|| {
                    LoginError::Internal("the signed data header is not a header value".into())
                })?;
                self.signed_data.insert(key, (now, data.clone()));
                (now, data)
            }
        };
        let identity = Identity {
            access_token: header_value(access_token),
            sub: header_value(sub),
            data,
        };
        Ok((signed_at, identity))
    }
}

/// An access token's lifetime from `expires_in`, within sane bounds.
fn access_lifetime(expires_in: Option<i64>) -> i64 {
    expires_in
        .unwrap_or(DEFAULT_ACCESS_TOKEN_SECS)
        .clamp(MIN_ACCESS_TOKEN_SECS, MAX_ACCESS_TOKEN_SECS)
}

/// Notes which of the callback's parameters came, before anything is checked.
fn note_callback_query(notes: &mut Notes, query: &HashMap<String, String>) {
    let present = |k: &str| {
        if query.contains_key(k) {
            "present"
        } else {
            "absent"
        }
    };
    notes.note(
        "callback",
        true,
        format!(
            "state {}, code {}, error {}",
            present("state"),
            present("code"),
            query.get("error").map_or("absent", String::as_str)
        ),
    );
}

/// RFC 9207: a provider that names itself in every response must have named
/// the configured issuer, or the code may be another provider's (mix-up).
fn check_response_issuer(
    provider: &Provider,
    policy: &AuthPolicy,
    iss: Option<&String>,
) -> Result<(), LoginError> {
    if (provider.meta.authorization_response_iss_parameter_supported || iss.is_some())
        && iss != Some(&policy.issuer)
    {
        return Err(LoginError::IssuerMismatch { got: iss.cloned() });
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Notes which claims came from the ID token and which from userinfo (names only).
fn note_claims(
    notes: &mut Notes,
    policy: &AuthPolicy,
    id_token: &Map<String, Value>,
    userinfo: &Map<String, Value>,
) {
    notes.note(
        "claims",
        true,
        format!(
            "ID token and userinfo merged, userinfo's winning: {}{}",
            super::claims::provenance(id_token, userinfo),
            data_claims_note(policy, id_token, userinfo)
        ),
    );
}

/// For the flow record: claims only the ID token has do not reach `x-amzn-oidc-data`
/// unless the rule asks for them.
fn data_claims_note(
    policy: &AuthPolicy,
    id_token: &Map<String, Value>,
    userinfo: &Map<String, Value>,
) -> &'static str {
    let token_only = id_token.keys().any(|k| {
        super::claims::origin(k, id_token, userinfo) == Some(super::claims::Origin::IdToken)
    });
    if token_only && policy.data_claims == ClaimsFrom::UserInfo {
        ". x-amzn-oidc-data carries userinfo's claims only, as ALB's; spec.identityHeaders.claimsFrom: IdTokenAndUserInfo adds the ID token's"
    } else {
        ""
    }
}

/// The session a completed login starts.
fn new_session(
    policy: &AuthPolicy,
    state: &FlowState,
    id: &id_token::IdClaims,
    tokens: TokenResponse,
    userinfo: Map<String, Value>,
    now: i64,
) -> Result<Session, SessionError> {
    Session {
        sub: id.sub.clone(),
        userinfo,
        claims: Map::new(),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        id_token: tokens.id_token,
        flow_id: Some(state.flow_id.clone()),
        access_expires_at: now + access_lifetime(tokens.expires_in),
        expires_at: now + policy.session_timeout_secs as i64,
        sid: id
            .claims
            .get("sid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        logged_in_at: now,
        record: None,
        identity: Default::default(),
    }
    .with_claims(Some(&id.claims))
}

/// The revocations that end session `s` of `policy`.
fn revocation_keys(policy: &AuthPolicy, s: &Session) -> Vec<Revoked> {
    let mut keys = vec![Revoked::Sub(s.sub.clone())];
    if let Some(sid) = &s.sid {
        keys.push(Revoked::Sid(sid.clone()));
        keys.push(Revoked::SidIn {
            namespace: policy.rule.namespace.clone(),
            sid: sid.clone(),
        });
    }
    keys
}

/// The revocations, with their issuer, that end server-side session `s`: its record
/// is listed under each, so the logout deletes it.
fn ended_by(policy: &AuthPolicy, s: &Session) -> Vec<(String, Revoked)> {
    revocation_keys(policy, s)
        .into_iter()
        .map(|k| (policy.issuer.clone(), k))
        .collect()
}

fn opened_key(binding: &str, shards: &[String]) -> SessionKey {
    let mut parts: Vec<&str> = Vec::with_capacity(shards.len() + 1);
    parts.push(binding);
    parts.extend(shards.iter().map(String::as_str));
    session_key(&parts)
}

/// What sessions and flows of the AuthRule `namespace/name` on `host` are sealed to.
pub fn binding_for(namespace: &str, name: &str, host: &str) -> String {
    format!("{namespace}/{name}|{host}")
}

/// What a signed data header is made for besides its claims: the rule (its signer),
/// the issuer and client it names, and which claims it carries.
fn data_policy_key(policy: &AuthPolicy) -> SessionKey {
    let claims_from = match policy.data_claims {
        ClaimsFrom::UserInfo => "userinfo",
        ClaimsFrom::IdTokenAndUserInfo => "id-token-and-userinfo",
    };
    session_key(&[
        &policy.rule.namespace,
        &policy.rule.name,
        &policy.issuer,
        &policy.client_id,
        claims_from,
    ])
}

/// A cache key for one session: a digest, so no token sits in memory twice.
fn session_key(parts: &[&str]) -> SessionKey {
    digest_of(parts.iter().map(|p| p.as_bytes()))
}

/// `session_key` of byte strings.
fn digest_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> SessionKey {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(part);
        ctx.update(&[0]);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

pub enum SessionState {
    None,
    Valid(Arc<Session>),
    /// The access token expired; the session has time left and a refresh token.
    Stale(Arc<Session>),
    /// A session of ours that timed out (or whose access token expired).
    Expired,
    /// Whether a provider ended it cannot be known now (the shared state is down).
    Unverifiable,
    /// A session kept in Redis, which does not answer.
    StoreUnavailable,
    /// A cookie by our name that is not ours (tampered, foreign rule or host).
    Invalid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_without_an_alb_name_of_their_own_are_unhandled_exceptions() {
        let e = LoginError::Internal("no randomness".into());
        assert_eq!((e.reason(), e.status()), ("AuthUnhandledException", 500));
        let e = LoginError::Flow(FlowError::Random);
        assert_eq!((e.reason(), e.status()), ("AuthUnhandledException", 500));
    }

    #[test]
    fn access_token_lifetimes_are_bounded() {
        assert_eq!(access_lifetime(None), DEFAULT_ACCESS_TOKEN_SECS);
        assert_eq!(access_lifetime(Some(300)), 300);
        assert_eq!(access_lifetime(Some(0)), MIN_ACCESS_TOKEN_SECS);
        assert_eq!(access_lifetime(Some(-5)), MIN_ACCESS_TOKEN_SECS);
        assert_eq!(access_lifetime(Some(i64::MAX)), MAX_ACCESS_TOKEN_SECS);
    }

    #[test]
    fn session_keys_differ_by_every_part() {
        assert_ne!(session_key(&["a", "bc"]), session_key(&["ab", "c"]));
        assert_eq!(session_key(&["a", "b"]), session_key(&["a", "b"]));
    }
}
