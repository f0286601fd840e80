//! A guarded route's request: bearer token or session (refreshed when due), the
//! AuthRule's authorization, preflights and `onUnauthenticatedRequest`; it passes with
//! identity headers or is answered here.

use super::*;
use crate::auth::guard::{
    Asking, NoSession, RefreshOutcome, SessionStep, Unauthenticated, after_refresh, session_step,
    without_token,
};

/// What a request's session cookie is worth to the guard, once the state machine
/// (`auth::guard`) has run its course.
enum SessionVerdict {
    /// A session to pass on.
    Pass(Arc<Session>),
    /// Answered here (the shared state cannot vouch for the session, or its cookies
    /// cannot be sealed).
    Answer(Response<Body>),
    /// No session, and why.
    Missing(NoSession),
}

impl Exchange {
    /// A guarded request: `None` lets it through (with identity headers when it has a
    /// session), `Some` answers it here.
    pub(super) async fn guard(
        &mut self,
        req: &mut Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
    ) -> Option<Response<Body>> {
        let now = unix_now();
        if !policy.login {
            return self.bearer_rule(req, arrival, policy, now).await;
        }
        if policy.bearer.is_some() && req.headers().contains_key(http::header::AUTHORIZATION) {
            // A request with a token is an API client's: it is never sent to a login,
            // and a session cookie beside a bad token does not rescue it.
            match self.bearer_credential(req) {
                Ok(Some(token)) => return self.bearer(req, arrival, policy, &token, now).await,
                Ok(None) => {}
                Err(refused) => return Some(*refused),
            }
        }
        match self.session_of(req, arrival, policy, now).await {
            SessionVerdict::Pass(session) => {
                let who = Who {
                    sub: &session.sub,
                    claims: &session.claims,
                    session: Some(&session),
                };
                if let Some(refused) = self.authorize(req, arrival, policy, who) {
                    return Some(refused);
                }
                self.first_request(req, &session);
                self.claim_headers_for(policy, &session.claims);
                self.pass_identity(req, policy, &session, now)
            }
            SessionVerdict::Answer(answer) => Some(answer),
            SessionVerdict::Missing(why) => {
                self.unauthenticated(req, arrival, policy, why, now).await
            }
        }
    }

    /// A rule without logins (`spec.bearer` only): a token is checked as beside a
    /// login; a request without one is answered 401 with the Bearer challenge, never
    /// sent to a login, and no session cookie is read.
    async fn bearer_rule(
        &mut self,
        req: &mut Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        now: i64,
    ) -> Option<Response<Body>> {
        if req.headers().contains_key(http::header::AUTHORIZATION) {
            match self.bearer_credential(req) {
                Ok(Some(token)) => return self.bearer(req, arrival, policy, &token, now).await,
                Ok(None) => {}
                Err(refused) => return Some(*refused),
            }
        }
        let preflight = asking(req).preflight;
        match without_token(policy.on_unauthenticated, policy.allow_preflight, preflight) {
            Unauthenticated::Preflight => {
                self.rec.add_action("preflight");
                None
            }
            Unauthenticated::Allow => None,
            Unauthenticated::Refuse(refusal) => {
                let mut resp = self.refused(refusal);
                offer_bearer(&mut resp, policy);
                Some(resp)
            }
            Unauthenticated::LoginRequired | Unauthenticated::Login => {
                unreachable!("without_token never asks for a login")
            }
        }
    }

    /// What the request's session cookie is worth: the session state machine's steps
    /// (`auth::guard`), with the refresh it may ask for done here.
    async fn session_of(
        &mut self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        now: i64,
    ) -> SessionVerdict {
        let host = arrival.authority.host.as_str();
        let cookies = cookie_headers(req.headers());
        let mut step = session_step(self.dp.auth.session(policy, host, &cookies, now).await);
        if let SessionStep::Refresh(stale) = step {
            step = after_refresh(self.refresh(arrival, policy, &stale, now).await);
        }
        match step {
            SessionStep::Pass(session) => SessionVerdict::Pass(session),
            SessionStep::Refresh(_) => unreachable!("a refresh is done above"),
            SessionStep::Missing(NoSession::Foreign) => {
                // Tampered, or minted for another rule or host: no session, but say so.
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, "session cookie refused: not sealed for this rule and host");
                self.rec.error_reason = "AuthInvalidCookie".into();
                SessionVerdict::Missing(NoSession::Foreign)
            }
            SessionStep::Missing(why) => SessionVerdict::Missing(why),
            SessionStep::Error(e) => SessionVerdict::Answer(self.login_error(&e)),
            SessionStep::Refuse(refusal) => {
                // Fail closed: a logout announced meanwhile could not be seen, or the
                // session itself cannot be read.
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, reason = refusal.reason(), "session refused: Redis is unavailable");
                SessionVerdict::Answer(self.refused(refusal))
            }
        }
    }

    /// Refreshes a session whose access token expired (once across replicas); the
    /// new cookies ride on whatever the answer is.
    async fn refresh(
        &mut self,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        stale: &Session,
        now: i64,
    ) -> RefreshOutcome {
        let host = arrival.authority.host.as_str();
        let auth = &self.dp.auth;
        match auth.refresh(policy, host, stale, now).await {
            Ok(refreshed) => {
                let session = refreshed.session;
                if refreshed.performed {
                    self.dp.metrics.auth.refresh(&rule_label(policy), true);
                    tracing::info!(trace_id = %self.trace.root, rule = %policy.rule, sub = %session.sub, "session refreshed");
                }
                match auth.session_cookies(policy, host, &session, arrival.https) {
                    Ok(cookies) => self.set_cookies = cookies,
                    Err(e) => return RefreshOutcome::Unsealable(Box::new(e)),
                }
                RefreshOutcome::Renewed(session)
            }
            Err(e) if matches!(*e, LoginError::SessionStore(_)) => {
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, error = %e, "refreshed session not stored: Redis is unavailable");
                RefreshOutcome::SessionStoreDown
            }
            Err(e) if matches!(*e, LoginError::Shared(_)) => {
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, error = %e, "refresh not attempted: the shared state is unavailable");
                RefreshOutcome::SharedStateDown
            }
            Err(e) => {
                // A failed refresh is a session that ended: log in again.
                self.dp.metrics.auth.refresh(&rule_label(policy), false);
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, reason = e.reason(), error = %e, "refresh failed");
                RefreshOutcome::Failed
            }
        }
    }

    /// The first request a new session makes, on its flow record.
    fn first_request(&self, req: &Request<Incoming>, session: &Session) {
        let Some(flow_id) = &session.flow_id else {
            return;
        };
        self.dp.flows.first_request(flow_id, || Hop {
            at: now_ms(),
            hop: FIRST_REQUEST.into(),
            ok: true,
            trace_id: self.trace.root.clone(),
            detail: format!(
                "{} {} with the session of {}",
                req.method(),
                req.uri().path(),
                session.sub
            ),
        });
    }

    /// A request without a session: what `onUnauthenticatedRequest` gives it
    /// (`auth::guard::unauthenticated`), carried out.
    async fn unauthenticated(
        &mut self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        why: NoSession,
        now: i64,
    ) -> Option<Response<Body>> {
        let asking = asking(req);
        let return_to = safe_return_path(&arrival.path_and_query).to_owned();
        match auth_guard::unauthenticated(
            policy.on_unauthenticated,
            policy.allow_preflight,
            asking,
            why,
        ) {
            Unauthenticated::Preflight => {
                self.rec.add_action("preflight");
                None
            }
            Unauthenticated::Allow => None,
            Unauthenticated::Refuse(refusal) => {
                let mut resp = self.refused(refusal);
                offer_bearer(&mut resp, policy);
                Some(resp)
            }
            Unauthenticated::LoginRequired => Some(self.login_required(policy, &return_to)),
            Unauthenticated::Login => Some(
                self.begin_login(req, arrival, policy, &return_to, now)
                    .await,
            ),
        }
    }

    /// Scripts cannot follow a login (a redirect to the provider fails their CORS
    /// check). Point them at this page: opened in a browser, it starts a login with
    /// its own flow cookie. The challenge names the cookie scheme and the page, so a
    /// single-page app can tell "log in again" from any other 401.
    fn login_required(&mut self, policy: &AuthPolicy, return_to: &str) -> Response<Body> {
        self.rec.error_reason = "AuthRequired".into();
        let body = serde_json::json!({"status": 401, "error": "AuthRequired", "loginUrl": return_to, "traceId": self.trace.root});
        let mut resp = Response::new(crate::proxy::pages::full(body.to_string()));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        offer_bearer(&mut resp, policy);
        let escaped = return_to.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("Cookie form-action=\"{escaped}\"")) {
            resp.headers_mut().append(http::header::WWW_AUTHENTICATE, v);
        }
        resp
    }

    /// The redirect to the provider, with the flow cookie, recorded as the flow's
    /// first hop.
    async fn begin_login(
        &mut self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        return_to: &str,
        now: i64,
    ) -> Response<Body> {
        let host = arrival.authority.host.as_str();
        let cookies = cookie_headers(req.headers());
        let redirect_uri = callback_uri(&arrival.authority, arrival.https);
        let at = Browser {
            host,
            redirect_uri: &redirect_uri,
            cookies: &cookies,
            now,
            secure: arrival.https,
        };
        match self.dp.auth.begin(policy, &at, return_to).await {
            Ok(login) => {
                let endpoint = login.location.split('?').next().unwrap_or_default();
                let extra: String = (policy.extra_params.iter())
                    .map(|(k, v)| format!(", {k}={v}"))
                    .collect();
                let hop = Hop {
                    at: now_ms(),
                    hop: "redirect".into(),
                    ok: true,
                    trace_id: self.trace.root.clone(),
                    detail: format!(
                        "to {endpoint} for {return_to}: client_id {}, redirect_uri {redirect_uri}, scope {:?}{extra}, nonce and PKCE S256",
                        policy.client_id, policy.scope,
                    ),
                };
                let sent = Sent {
                    client_id: policy.client_id.clone(),
                    redirect_uri: redirect_uri.clone(),
                };
                let rule = rule_label(policy);
                (self.dp.flows).begun(&login.flow_id, &rule, host, hop, &login.state, sent);
                self.rec.redirect_url = login.location.clone();
                let mut resp = redirect(StatusCode::FOUND, &login.location);
                append_cookies(&mut resp, [login.set_cookie]);
                resp
            }
            Err(e) => {
                // No flow began: the record is kept under the request's trace id.
                let hop = Hop {
                    at: now_ms(),
                    hop: "redirect".into(),
                    ok: false,
                    trace_id: self.trace.root.clone(),
                    detail: format!("{}: {e}", e.reason()),
                };
                let id = format!("begin-{}", self.trace.root);
                (self.dp.flows).record(&id, &rule_label(policy), host, hop);
                self.dp.flows.failed(&id, e.reason());
                self.login_error(&e)
            }
        }
    }

    /// The AuthRule's authorization for a logged-in user or a bearer token's client:
    /// `None` lets the request on, `Some` is the 403.
    pub(super) fn authorize(
        &mut self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        who: Who<'_>,
    ) -> Option<Response<Body>> {
        let source = if who.session.is_some() {
            Source::Session
        } else {
            Source::Bearer
        };
        let authorization = policy.authorization.as_ref()?;
        let headers = if authorization.reads_headers() {
            req.headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect()
        } else {
            Default::default()
        };
        let facts = RequestFacts {
            method: req.method().as_str(),
            path: &arrival.path,
            host: &arrival.authority.host,
            headers,
            fold_case: self.live.snapshot.routes.fold_case,
            client_cert: (self.conn.tls.as_ref())
                .and_then(|t| t.client_cert.as_ref())
                .and_then(|c| c.facts.as_ref()),
            source_ip: arrival.client,
        };
        let decision = authorization.decide(who.claims, &facts, source);
        if decision.allowed {
            return None;
        }
        let report = refusal_report(&decision, &who);
        let refusal = if report.overage() {
            GuardRefusal::ClaimsOverage
        } else {
            GuardRefusal::Forbidden
        };
        // A refusal is a security event: logged at warn, like other refused logins.
        tracing::warn!(
            trace_id = %self.trace.root,
            rule = %policy.rule,
            refused_by = %decision.by,
            claims = ?decision.claims,
            reason = refusal.reason(),
            checked = %report.summary(),
            fix = report.advice().as_deref().unwrap_or("-"),
            error = decision.error.as_deref().unwrap_or("-"),
            sub = %who.sub,
            source = source.as_str(),
            "request refused by the AuthRule's authorization"
        );
        if let Some(flow_id) = who.session.and_then(|s| s.flow_id.as_deref()) {
            self.record_refusal(req, arrival, policy, flow_id, refusal, &report);
        }
        Some(self.refused_with(refusal, Some(&report.for_user())))
    }

    /// A refused request of a session, on its login's flow record: a failed
    /// `authorize` hop under this request's trace id.
    fn record_refusal(
        &self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        flow_id: &str,
        refusal: GuardRefusal,
        report: &RefusalReport,
    ) {
        let advice = report
            .advice()
            .map(|a| format!("; at the provider: {a}"))
            .unwrap_or_default();
        let hop = Hop {
            at: now_ms(),
            hop: AUTHORIZE.into(),
            ok: false,
            trace_id: self.trace.root.clone(),
            detail: format!(
                "{}: {} {} {}{advice}; claims present: {}",
                refusal.reason(),
                req.method(),
                req.uri().path(),
                report.decided(),
                report.present_names().unwrap_or_else(|| "none".into())
            ),
        };
        let host = &arrival.authority.host;
        (self.dp.flows).refused(flow_id, &rule_label(policy), host, hop, refusal.reason());
    }

    /// The bearer token of the request, if it carries one. More than one
    /// `Authorization` header is refused (400): the backend could read another token
    /// than the one checked here.
    pub(super) fn bearer_credential(
        &mut self,
        req: &Request<Incoming>,
    ) -> Result<Option<String>, Box<Response<Body>>> {
        let mut values = req.headers().get_all(http::header::AUTHORIZATION).iter();
        let (Some(first), None) = (values.next(), values.next()) else {
            self.rec.add_action("authenticate");
            let mut resp = self.error(
                StatusCode::BAD_REQUEST,
                "AuthInvalidBearerToken",
                "The request carries more than one Authorization header.",
            );
            if let Ok(v) = http::HeaderValue::from_str(
                "Bearer error=\"invalid_request\", error_description=\"more than one Authorization header\"",
            ) {
                resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            return Err(Box::new(resp));
        };
        Ok(bearer_token(first.as_bytes()).map(str::to_owned))
    }

    /// A request with a bearer token: checked, authorized with `source` bearer, and
    /// forwarded with the token unchanged and identity headers from its claims; a bad
    /// token gets 401 with the RFC 6750 challenge.
    pub(super) async fn bearer(
        &mut self,
        req: &mut Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
        token: &str,
        now: i64,
    ) -> Option<Response<Body>> {
        let bearer = policy.bearer.as_ref()?;
        let rule = rule_label(policy);
        let who = match self.dp.auth.bearer(bearer, token, now).await {
            Ok(who) => who,
            Err(e) => {
                self.dp.metrics.auth.bearer(&rule, e.reason());
                return Some(self.bearer_refused(&policy.rule, &e));
            }
        };
        self.dp.metrics.auth.bearer(&rule, "");
        let client = Who {
            sub: &who.sub,
            claims: &who.claims,
            session: None,
        };
        if let Some(refused) = self.authorize(req, arrival, policy, client) {
            return Some(refused);
        }
        self.claim_headers_for(policy, &who.claims);
        match (self.dp.auth).identity_of(policy, &who.sub, &who.claims, token, now) {
            Ok(identity) => {
                insert_identity(req.headers_mut(), identity);
                None
            }
            Err(e) => Some(self.login_error(&e)),
        }
    }

    /// A route that takes bearer tokens only (ALB's `jwt-validation` without a login):
    /// `None` forwards the request with its token unchanged, `Some` is the refusal
    /// (401 without a valid token, never a redirect).
    pub(super) async fn bearer_only(
        &mut self,
        req: &mut Request<Incoming>,
        rule: &ObjectRef,
        bearer: &BearerPolicy,
    ) -> Option<Response<Body>> {
        let token = if req.headers().contains_key(http::header::AUTHORIZATION) {
            match self.bearer_credential(req) {
                Ok(token) => token,
                Err(refused) => return Some(*refused),
            }
        } else {
            None
        };
        let Some(token) = token else {
            let mut resp = self.refused(GuardRefusal::BearerTokenRequired);
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return Some(resp);
        };
        let label = format!("{}/{}", rule.namespace, rule.name);
        match self.dp.auth.bearer(bearer, &token, unix_now()).await {
            Ok(_) => {
                self.dp.metrics.auth.bearer(&label, "");
                None
            }
            Err(e) => {
                self.dp.metrics.auth.bearer(&label, e.reason());
                Some(self.bearer_refused(rule, &e))
            }
        }
    }

    pub(super) fn bearer_refused(&mut self, rule: &ObjectRef, e: &BearerError) -> Response<Body> {
        tracing::warn!(trace_id = %self.trace.root, %rule, reason = e.reason(), error = %e, "bearer token refused");
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let message = if status == StatusCode::UNAUTHORIZED {
            "The bearer token is not valid here."
        } else {
            "The token issuer's keys could not be read."
        };
        let mut resp = self.error(status, e.reason(), message);
        if status == StatusCode::UNAUTHORIZED
            && let Ok(v) = http::HeaderValue::from_str(&challenge(Some(e)))
        {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
        resp
    }

    /// The rule's claim headers for a user with `claims`, set once the route's filters
    /// have run. A value that cannot travel unchanged is not sent, and logged (the
    /// claim's name, never its value).
    fn claim_headers_for(
        &mut self,
        policy: &AuthPolicy,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) {
        for header in &policy.claim_headers {
            match header.value(claims) {
                Ok(value) => self.claim_headers.push((header.name.clone(), value)),
                Err(NotSent::Absent) => {}
                Err(NotSent::Unsendable(why)) => {
                    tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, header = %header.name, claim = %header.claim, why, "claim header not sent: the claim's value cannot travel in a header unchanged");
                }
            }
        }
    }

    pub(super) fn pass_identity(
        &mut self,
        req: &mut Request<Incoming>,
        policy: &AuthPolicy,
        session: &Session,
        now: i64,
    ) -> Option<Response<Body>> {
        match self.dp.auth.identity(policy, session, now) {
            Ok(identity) => {
                insert_identity(req.headers_mut(), identity);
                None
            }
            Err(e) => Some(self.login_error(&e)),
        }
    }
}

/// Whose request authorization decides on.
pub(super) struct Who<'a> {
    pub sub: &'a str,
    /// What authorization reads: a session's merged claims, or a bearer token's.
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
    /// The session, for where its claims came from; `None` for a bearer token.
    pub session: Option<&'a Session>,
}

/// How the claims a refusal read stood, by name.
fn refusal_report(decision: &Decision<'_>, who: &Who<'_>) -> RefusalReport {
    let id_token;
    let provenance = match who.session {
        Some(s) => {
            id_token = s.id_token_claims();
            Provenance::Session {
                id_token: &id_token,
                userinfo: &s.userinfo,
            }
        }
        None => Provenance::Bearer,
    };
    RefusalReport::new(decision.decider(), &decision.claims, who.claims, provenance)
}

pub(super) fn insert_identity(headers: &mut HeaderMap, identity: Identity) {
    let Identity {
        access_token,
        sub,
        data,
    } = identity;
    for (name, value) in [
        ("x-amzn-oidc-accesstoken", access_token),
        ("x-amzn-oidc-identity", sub),
        ("x-amzn-oidc-data", Some(data)),
    ] {
        if let Some(v) = value {
            headers.insert(name, v);
        }
    }
}

/// What the request is to the guard when it has no session or token.
fn asking(req: &Request<Incoming>) -> Asking {
    // A CORS preflight carries no credentials by design; one with a body is not one.
    Asking {
        preflight: crate::proxy::cors::is_preflight(req.method(), req.headers())
            && req.body().is_end_stream(),
        navigation: is_navigation(req.headers()),
    }
}

/// A 401 on a rule that takes bearer tokens says so (RFC 6750), for API clients.
pub(super) fn offer_bearer(resp: &mut Response<Body>, policy: &AuthPolicy) {
    if policy.bearer.is_some() {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
}
