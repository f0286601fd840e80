//! One request, start to finish: route, redirect to HTTPS, strip forged identity
//! headers, apply the route's guard, forward, and log once the body is sent.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::canonical::{self, Authority, Refusal};
use super::forward::{self, Outgoing};
use super::headers::{is_websocket_upgrade, set_forwarded};
use super::pages::{ErrorPage, prefers_html, redirect};
use super::{Body, BoxError, ConnInfo, DataPlane, Live};
use crate::auth::bearer::{BearerError, bearer_token, challenge};
use crate::auth::flow::FlowError;
use crate::auth::login::{Browser, CALLBACK_PATH, Identity, LoginError, Notes, SessionState};
use crate::auth::redirect::safe_return_path;
use crate::auth::session::Session;
use crate::compile::authorization::{RequestFacts, Source};
use crate::compile::{
    AuthPolicy, Backend, GuardPolicy, Redirect, Rewrite, Route, RouteQuery, Unevaluable,
};
use crate::form::form_pairs;
use crate::model::OnUnauthenticatedRequest;
use crate::model::{BACKCHANNEL_LOGOUT_PATH, FRONTCHANNEL_LOGOUT_PATH};
use crate::observe::access_log::{AccessRecord, timestamp};
use crate::observe::flows::{Hop, now_ms};
use crate::observe::trace::{self, TraceId};

/// What the guard needs of the canonical request.
struct Arrival<'a> {
    authority: &'a Authority,
    /// The canonical path.
    path: &'a str,
    /// The canonical path with the query as sent.
    path_and_query: &'a str,
}

/// State of one request, filled as it moves along.
struct Exchange {
    dp: Arc<DataPlane>,
    live: Arc<Live>,
    conn: Arc<ConnInfo>,
    trace: TraceId,
    rec: AccessRecord,
    received: Instant,
    html: bool,
    /// A HEAD request: error answers carry no body, so they name no media type.
    head: bool,
    route: Option<Arc<Route>>,
    /// Cookies to set on the response whatever it is (a refreshed session).
    set_cookies: Vec<String>,
}

pub async fn handle(
    dp: Arc<DataPlane>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let received = Instant::now();
    let now = jiff::Timestamp::now();
    let live = dp.live.load_full();
    let trace = TraceId::for_request(req.headers(), now.as_second().max(0) as u64);
    let websocket = req.version() == Version::HTTP_11 && is_websocket_upgrade(req.headers());
    let kind = match (
        conn.tls.is_some(),
        websocket,
        req.version() == Version::HTTP_2,
    ) {
        (true, true, _) => "wss",
        (false, true, _) => "ws",
        (_, _, true) => "h2",
        (true, _, _) => "https",
        (false, _, _) => "http",
    };
    let mut rec = AccessRecord::new(kind, &dp.config.log_name, conn.peer, timestamp(now));
    describe_request(&mut rec, &req, &conn);
    rec.trace_id = trace.header.clone();
    let html = prefers_html(req.headers());
    let head = req.method() == http::Method::HEAD;
    let received_bytes = Arc::new(AtomicU64::new(head_size(req.headers()) as u64));
    let mut ex = Exchange {
        dp,
        live,
        conn,
        trace,
        rec,
        received,
        html,
        head,
        route: None,
        set_cookies: Vec::new(),
    };
    let resp = ex.respond(req, received_bytes.clone()).await;
    Ok(ex.finish(resp, received_bytes))
}

impl Exchange {
    async fn respond(
        &mut self,
        mut req: Request<Incoming>,
        received_bytes: Arc<AtomicU64>,
    ) -> Response<Body> {
        let tls = self.conn.tls.is_some();
        let authority = match canonical::authority(req.uri(), req.headers(), tls) {
            Ok(a) => a,
            Err(refusal) => {
                // A callback without a host cannot be matched to the login it finishes.
                let reason = if refusal == Refusal::MissingHost && req.uri().path() == CALLBACK_PATH
                {
                    "AuthMissingHostHeader"
                } else {
                    refusal.reason()
                };
                return self.refuse(reason, refusal);
            }
        };
        let rules = &self.dp.config.path_rules;
        let path = match canonical::canonical_path(req.uri().path(), rules) {
            Ok(p) => p,
            Err(refusal) => return self.refuse(refusal.reason(), refusal),
        };
        let websocket = is_websocket_upgrade(req.headers());
        let config = &self.dp.config;
        canonical::clean_arrival(
            req.headers_mut(),
            &config.dropped_headers,
            config.underscores_in_headers,
        );
        let host = authority.host.clone();
        if let Some(answer) = self.public_keys(&path) {
            return answer;
        }
        let live = self.live.clone();
        let routes = &live.snapshot.routes;
        if path == BACKCHANNEL_LOGOUT_PATH && req.method() == http::Method::POST {
            let policies = routes.all_policies();
            if !policies.is_empty() {
                return self.backchannel_logout(req, &policies).await;
            }
        }
        if path == FRONTCHANNEL_LOGOUT_PATH && req.method() == http::Method::GET {
            let policies = routes.oidc_policies(&host);
            if !policies.is_empty() {
                return self.frontchannel_logout(&req, &host, &policies).await;
            }
        }
        let key = routes.match_key(&path);
        if routes.is_auth_path(&key) {
            let policies = routes.oidc_policies(&host);
            if key == CALLBACK_PATH && !policies.is_empty() {
                return self.callback(&req, &authority, &policies).await;
            }
            if let Some(policy) = policies.iter().find(|p| p.logout_path == key) {
                return self.logout(&req, &host, policy).await;
            }
        }
        let facts = RouteQuery {
            host: &host,
            path: &key,
            method: req.method(),
            headers: req.headers(),
            query: req.uri().query(),
            tls: self.conn.tls.is_some(),
        };
        let route = match routes.find_for(&facts) {
            Ok(Some(route)) => route.clone(),
            Ok(None) => {
                return self.error(
                    StatusCode::NOT_FOUND,
                    "NoMatchingRoute",
                    "No Ingress rule matches this host and path.",
                );
            }
            Err(unevaluable) => return self.unevaluable(&unevaluable),
        };
        self.rec.matched_rule_priority = route.priority.to_string();
        self.route = Some(route.clone());
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        if let (true, None, Some(port)) = (
            route.https_redirect,
            &self.conn.tls,
            self.dp.config.https_redirect_port,
        ) {
            let authority = if port == 443 {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            let location = format!("https://{authority}{path_and_query}");
            self.rec.add_action("redirect");
            self.rec.redirect_url = location.clone();
            return redirect(StatusCode::PERMANENT_REDIRECT, &location);
        }
        if let Some(guard) = route.guard_for(&key) {
            self.rec.add_action("authenticate");
            match &guard.policy {
                GuardPolicy::Broken(problem) => {
                    tracing::warn!(trace_id = %self.trace.root, rule = %guard.rule, %problem, "guarded route refused: its AuthRule is invalid");
                    return self.error(StatusCode::INTERNAL_SERVER_ERROR, "AuthRuleInvalid", "Login for this address is misconfigured; the operator can see why in the AuthRule's status or with `portcullis check`.");
                }
                GuardPolicy::Oidc(policy) => {
                    let at = Arrival {
                        authority: &authority,
                        path: &path,
                        path_and_query: &path_and_query,
                    };
                    if let Some(answer) = self.guard(&mut req, &at, policy).await {
                        return answer;
                    }
                }
            }
        }
        if let Some(to) = &route.filters.redirect {
            let location = redirect_location(to, &authority, &path, req.uri().query(), tls);
            self.rec.add_action("redirect");
            self.rec.redirect_url = location.clone();
            let status = StatusCode::from_u16(to.status).unwrap_or(StatusCode::FOUND);
            return redirect(status, &location);
        }
        route.filters.request_headers.apply(req.headers_mut());
        let (path_and_query, authority) = match &route.filters.rewrite {
            Some(rewrite) => rewritten(rewrite, &authority, &path, req.uri().query()),
            None => (path_and_query, authority),
        };
        let backend = pick(&route.backend);
        let mut resp = match backend {
            Backend::Unavailable { service, reason } => {
                self.rec.target_group_arn = service.clone();
                tracing::warn!(trace_id = %self.trace.root, ingress = %route.ingress, %reason, "route has no backend");
                self.error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "BackendUnavailable",
                    "The application behind this address has no running instances.",
                )
            }
            Backend::Invalid { reason } => {
                tracing::warn!(trace_id = %self.trace.root, route = %route.ingress, %reason, "route rule cannot be served");
                self.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "RouteInvalid",
                    "This address is misconfigured; the operator can see why in the route's status or with `portcullis check`.",
                )
            }
            Backend::Split(_) => unreachable!("pick returns one backend"),
            Backend::Service(upstream) => {
                self.rec.add_action("forward");
                let upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
                let (mut parts, body) = req.into_parts();
                if (!self.dp.config.forward_original_path || route.filters.rewrite.is_some())
                    && let Ok(uri) = path_and_query.parse::<http::Uri>()
                {
                    parts.uri = uri;
                }
                canonical::set_host(&mut parts.headers, &authority);
                set_forwarded(
                    &mut parts.headers,
                    self.conn.peer,
                    self.conn.local,
                    self.conn.tls.is_some(),
                    &host,
                    &self.dp.config.trusted_proxies,
                );
                if let Ok(v) = self.trace.header.parse() {
                    parts.headers.insert(trace::HEADER, v);
                }
                let body = CountingBody {
                    inner: body,
                    count: received_bytes,
                }
                .boxed_unsync();
                let out = Outgoing {
                    parts,
                    body,
                    upgrade,
                };
                let Some(balance) = self.live.balances.get(upstream.id).cloned() else {
                    return self.error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "BackendUnavailable",
                        "The application behind this address has no running instances.",
                    );
                };
                let sent = forward::forward(
                    &self.dp,
                    upstream,
                    &balance,
                    out,
                    self.received,
                    &mut self.rec,
                );
                let sent = match route.timeout {
                    Some(limit) => match tokio::time::timeout(limit, sent).await {
                        Ok(r) => r.map_err(Some),
                        Err(_) => Err(None),
                    },
                    None => sent.await.map_err(Some),
                };
                match sent {
                    Ok(resp) => resp,
                    Err(Some(e)) => self.error(e.status(), e.reason(), e.message()),
                    Err(None) => self.error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "RouteTimeout",
                        "The application behind this address did not answer in time.",
                    ),
                }
            }
        };
        route.filters.response_headers.apply(resp.headers_mut());
        resp
    }

    /// The signing keys at `--public-keys-path`, when this is that path.
    fn public_keys(&mut self, path: &str) -> Option<Response<Body>> {
        let base = self.dp.config.public_keys_path.as_deref()?;
        let (status, content_type, body) = crate::auth::identity::key_document(
            self.dp.auth.signing_key(),
            path.strip_prefix(base)?,
        )?;
        self.rec.add_action("fixed-response");
        let mut resp = Response::new(crate::proxy::pages::full(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        Some(resp)
    }

    /// A guarded request: `None` lets it through (with identity headers when it has a
    /// session), `Some` answers it here.
    async fn guard(
        &mut self,
        req: &mut Request<Incoming>,
        arrival: &Arrival<'_>,
        policy: &AuthPolicy,
    ) -> Option<Response<Body>> {
        let host = arrival.authority.host.as_str();
        let secure = self.conn.tls.is_some();
        if !secure && !self.conn.local.ip().is_loopback() {
            return Some(self.error(
                StatusCode::FORBIDDEN,
                "AuthRequiresHttps",
                "Login needs HTTPS; use the https:// address.",
            ));
        }
        let now = unix_now();
        if policy.bearer.is_some() && req.headers().contains_key(http::header::AUTHORIZATION) {
            // A request with a token is an API client's: it is never sent to a login,
            // and a session cookie beside a bad token does not rescue it.
            match self.bearer_credential(req) {
                Ok(Some(token)) => return self.bearer(req, arrival, policy, &token, now).await,
                Ok(None) => {}
                Err(refused) => return Some(*refused),
            }
        }
        let cookies = cookie_headers(req.headers());
        let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let auth = &self.dp.auth;
        let expired = match auth.session(policy, host, &cookies, now) {
            SessionState::Valid(session) => {
                if let Some(flow_id) = &session.flow_id {
                    self.dp.flows.first_request(flow_id, || Hop {
                        at: now_ms(),
                        hop: "first-request".into(),
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
                let who = (session.sub.as_str(), &session.claims, Source::Session);
                if let Some(refused) = self.authorize(req, arrival, policy, who) {
                    return Some(refused);
                }
                return self.pass_identity(req, policy, &session, now);
            }
            SessionState::Stale(stale) => match auth.refresh(policy, host, &stale, now).await {
                Ok(refreshed) => {
                    let session = refreshed.session;
                    if refreshed.performed {
                        self.dp.metrics.auth.refresh(&rule_label(policy), true);
                        tracing::info!(trace_id = %self.trace.root, rule = %policy.rule, sub = %session.sub, "session refreshed");
                    }
                    match auth.session_cookies(policy, host, &session, secure) {
                        Ok(cookies) => self.set_cookies = cookies,
                        Err(e) => return Some(self.login_error(&e)),
                    }
                    let who = (session.sub.as_str(), &session.claims, Source::Session);
                    if let Some(refused) = self.authorize(req, arrival, policy, who) {
                        return Some(refused);
                    }
                    return self.pass_identity(req, policy, &session, now);
                }
                Err(e) if matches!(*e, LoginError::Shared(_)) => {
                    tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, error = %e, "refresh not attempted: the shared state is unavailable");
                    return Some(self.login_error(&e));
                }
                Err(e) => {
                    // A failed refresh is a session that ended: log in again.
                    self.dp.metrics.auth.refresh(&rule_label(policy), false);
                    tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, reason = e.reason(), error = %e, "refresh failed");
                    true
                }
            },
            SessionState::Expired => true,
            SessionState::Unverifiable => {
                // Fail closed: a logout announced meanwhile could not be seen.
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, "session refused: the shared state (Redis) is unavailable");
                return Some(self.error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "AuthSharedStateUnavailable",
                    "Sessions cannot be checked right now; try again in a moment.",
                ));
            }
            SessionState::Invalid => {
                // Tampered, or minted for another rule or host: no session, but say so.
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, "session cookie refused: not sealed for this rule and host");
                self.rec.error_reason = "AuthInvalidCookie".into();
                false
            }
            SessionState::None => false,
        };
        // A CORS preflight carries no credentials by design; it passes only where the
        // rule says so, and only without a body.
        let preflight = req.method() == http::Method::OPTIONS
            && req.headers().contains_key("access-control-request-method");
        if preflight && policy.allow_preflight && req.body().is_end_stream() {
            self.rec.add_action("preflight");
            return None;
        }
        match policy.on_unauthenticated {
            OnUnauthenticatedRequest::Allow => return None,
            OnUnauthenticatedRequest::Deny if !expired => {
                let reason = if self.rec.error_reason == "AuthInvalidCookie" {
                    "AuthInvalidCookie"
                } else {
                    "AuthDenied"
                };
                let mut resp = self.error(
                    StatusCode::UNAUTHORIZED,
                    reason,
                    "This address needs a login session.",
                );
                offer_bearer(&mut resp, policy);
                return Some(resp);
            }
            _ => {}
        }
        let return_to = safe_return_path(arrival.path_and_query).to_owned();
        if !self.html {
            // Scripts cannot follow a login. Point them at this page: opened in a
            // browser, it starts a login with its own flow cookie.
            self.rec.error_reason = "AuthRequired".into();
            let body = serde_json::json!({"status": 401, "error": "AuthRequired", "loginUrl": return_to, "traceId": self.trace.root});
            let mut resp = Response::new(crate::proxy::pages::full(body.to_string()));
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            offer_bearer(&mut resp, policy);
            return Some(resp);
        }
        let redirect_uri = callback_uri(arrival.authority, secure);
        let at = Browser {
            host,
            redirect_uri: &redirect_uri,
            cookies: &cookies,
            now,
            secure,
        };
        match auth.begin(policy, &at, &return_to).await {
            Ok(login) => {
                let endpoint = login.location.split('?').next().unwrap_or_default();
                let hop = Hop {
                    at: now_ms(),
                    hop: "redirect".into(),
                    ok: true,
                    trace_id: self.trace.root.clone(),
                    detail: format!(
                        "to {endpoint} for {return_to}: client_id {}, redirect_uri {redirect_uri}, scope {:?}{}, nonce and PKCE S256",
                        policy.client_id,
                        policy.scope,
                        policy
                            .extra_params
                            .iter()
                            .map(|(k, v)| format!(", {k}={v}"))
                            .collect::<String>()
                    ),
                };
                (self.dp.flows).record(&login.flow_id, &rule_label(policy), host, hop);
                self.rec.redirect_url = login.location.clone();
                let mut resp = redirect(StatusCode::FOUND, &login.location);
                append_cookies(&mut resp, [login.set_cookie]);
                Some(resp)
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
                Some(self.login_error(&e))
            }
        }
    }

    /// The AuthRule's authorization for a logged-in user or a bearer token's client:
    /// `None` lets the request on, `Some` is the 403.
    fn authorize(
        &mut self,
        req: &Request<Incoming>,
        arrival: &Arrival<'_>,
        policy: &AuthPolicy,
        (sub, claims, source): (&str, &serde_json::Map<String, serde_json::Value>, Source),
    ) -> Option<Response<Body>> {
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
            path: arrival.path,
            host: &arrival.authority.host,
            headers,
            fold_case: self.live.snapshot.routes.fold_case,
        };
        let decision = authorization.decide(claims, &facts, source);
        if decision.allowed {
            return None;
        }
        // A refusal is a security event: logged at warn, like other refused logins.
        tracing::warn!(
            trace_id = %self.trace.root,
            rule = %policy.rule,
            refused_by = %decision.by,
            claims = ?decision.claims,
            error = decision.error.as_deref().unwrap_or("-"),
            %sub,
            source = source.as_str(),
            "request refused by the AuthRule's authorization"
        );
        Some(self.error(
            StatusCode::FORBIDDEN,
            "AuthForbidden",
            "Your account is logged in but may not open this address.",
        ))
    }

    /// The bearer token of the request, if it carries one. More than one
    /// `Authorization` header is refused (400): the backend could read another token
    /// than the one checked here.
    fn bearer_credential(
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
    async fn bearer(
        &mut self,
        req: &mut Request<Incoming>,
        arrival: &Arrival<'_>,
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
                return Some(self.bearer_refused(policy, &e));
            }
        };
        self.dp.metrics.auth.bearer(&rule, "");
        if let Some(refused) = self.authorize(
            req,
            arrival,
            policy,
            (&who.sub, &who.claims, Source::Bearer),
        ) {
            return Some(refused);
        }
        match (self.dp.auth).identity_of(policy, &who.sub, &who.claims, token, now) {
            Ok(identity) => {
                insert_identity(req.headers_mut(), &identity);
                None
            }
            Err(e) => Some(self.login_error(&e)),
        }
    }

    fn bearer_refused(&mut self, policy: &AuthPolicy, e: &BearerError) -> Response<Body> {
        tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, reason = e.reason(), error = %e, "bearer token refused");
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

    fn pass_identity(
        &mut self,
        req: &mut Request<Incoming>,
        policy: &AuthPolicy,
        session: &Session,
        now: i64,
    ) -> Option<Response<Body>> {
        match self.dp.auth.identity(policy, session, now) {
            Ok(identity) => {
                insert_identity(req.headers_mut(), &identity);
                None
            }
            Err(e) => Some(self.login_error(&e)),
        }
    }

    /// `/oauth2/idpresponse`: finish the flow of whichever of the host's AuthRules
    /// sealed the flow cookie.
    async fn callback(
        &mut self,
        req: &Request<Incoming>,
        authority: &Authority,
        policies: &[Arc<AuthPolicy>],
    ) -> Response<Body> {
        let host = authority.host.as_str();
        self.rec.add_action("authenticate");
        let secure = self.conn.tls.is_some();
        let cookies = cookie_headers(req.headers());
        let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let query = req.uri().query().unwrap_or("");
        let redirect_uri = callback_uri(authority, secure);
        let started = std::time::Instant::now();
        let mut outcome = None;
        let mut notes = Notes::default();
        for policy in policies {
            let at = Browser {
                host,
                redirect_uri: &redirect_uri,
                cookies: &cookies,
                now: unix_now(),
                secure,
            };
            notes = Notes::default();
            let result = self.dp.auth.callback(policy, &at, query, &mut notes).await;
            let foreign = matches!(result, Err(LoginError::Flow(FlowError::InvalidCookie)));
            outcome = Some((policy.clone(), result));
            if !foreign {
                break;
            }
        }
        if let Some((policy, result)) = &outcome {
            self.record_flow(
                policy,
                host,
                notes,
                result.as_ref().err().map(LoginError::reason),
            );
        }
        if let Some((policy, result)) = &outcome {
            let (status, reason) = match result {
                Ok(_) => (302, ""),
                Err(e) => (e.status(), e.reason()),
            };
            let seconds = started.elapsed().as_secs_f64();
            (self.dp.metrics.auth).login(&rule_label(policy), status, reason, seconds);
        }
        match outcome {
            Some((policy, Ok(done))) => {
                tracing::info!(trace_id = %self.trace.root, rule = %policy.rule, sub = %done.sub, "login completed");
                self.rec.redirect_url = done.location.clone();
                let mut resp = redirect(StatusCode::FOUND, &done.location);
                append_cookies(&mut resp, done.set_cookies);
                resp
            }
            Some((policy, Err(e))) => {
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, reason = e.reason(), error = %e, "login failed at the callback");
                self.login_error(&e)
            }
            None => self.error(
                StatusCode::NOT_FOUND,
                "NoMatchingRoute",
                "No Ingress rule matches this host and path.",
            ),
        }
    }

    /// A request whose route cannot be decided (an input a match must read is too
    /// long, or can be read two ways): refused, never given to the next route.
    fn unevaluable(&mut self, why: &Unevaluable) -> Response<Body> {
        tracing::info!(trace_id = %self.trace.root, input = why.input(), reason = why.reason(), "request refused: its route cannot be decided");
        let message = match why {
            Unevaluable::TooLong(_) => "The request's route depends on a value too long to check.",
            Unevaluable::Ambiguous(_) => {
                "The request's route depends on a header or query parameter it carries more than once."
            }
        };
        self.error(StatusCode::BAD_REQUEST, why.reason(), message)
    }

    /// A provider's back-channel logout: the token validated, every session it names
    /// ended. 200 when taken, 400 otherwise (the provider may retry).
    async fn backchannel_logout(
        &mut self,
        req: Request<Incoming>,
        policies: &[Arc<AuthPolicy>],
    ) -> Response<Body> {
        self.rec.add_action("authenticate");
        let body = http_body_util::Limited::new(req.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes());
        let form = body.map(|b| form_pairs(&String::from_utf8_lossy(&b)));
        let Some(token) = form.ok().and_then(|f| f.get("logout_token").cloned()) else {
            return self.error(
                StatusCode::BAD_REQUEST,
                "AuthInvalidLogoutToken",
                "The request carries no logout_token.",
            );
        };
        match self
            .dp
            .auth
            .backchannel_logout(policies, &token, unix_now())
            .await
        {
            Ok(who) => {
                tracing::info!(trace_id = %self.trace.root, sid = who.sid.as_deref().unwrap_or("-"), sub = who.sub.as_deref().unwrap_or("-"), "back-channel logout: sessions ended");
                let mut resp = Response::new(crate::proxy::pages::empty());
                resp.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                resp
            }
            Err(e @ LoginError::Shared(_)) => {
                // The provider retries a logout that was not taken.
                tracing::warn!(trace_id = %self.trace.root, error = %e, "back-channel logout not taken: the shared state is unavailable");
                self.login_error(&e)
            }
            Err(e) => {
                tracing::warn!(trace_id = %self.trace.root, error = %e, "back-channel logout token refused");
                self.error(
                    StatusCode::BAD_REQUEST,
                    "AuthInvalidLogoutToken",
                    "The logout token is not valid.",
                )
            }
        }
    }

    /// A provider's front-channel logout, loaded by its logout page (usually in an
    /// iframe): the sessions of that `sid` on this host end. A blank page either way,
    /// never cached.
    async fn frontchannel_logout(
        &mut self,
        req: &Request<Incoming>,
        host: &str,
        policies: &[Arc<AuthPolicy>],
    ) -> Response<Body> {
        self.rec.add_action("authenticate");
        let cookies = cookie_headers(req.headers());
        let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let query = req.uri().query().unwrap_or("");
        let secure = self.conn.tls.is_some();
        let done =
            (self.dp.auth).frontchannel_logout(policies, host, query, &cookies, secure, unix_now());
        match done.await {
            Ok(set_cookies) => {
                tracing::info!(trace_id = %self.trace.root, %host, own_session = !set_cookies.is_empty(), "front-channel logout: sessions ended");
                let mut resp = Response::new(crate::proxy::pages::full(
                    "<!DOCTYPE html><title>Logged out</title>",
                ));
                for (name, value) in [
                    (http::header::CACHE_CONTROL, "no-cache, no-store"),
                    (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                ] {
                    resp.headers_mut()
                        .insert(name, http::HeaderValue::from_static(value));
                }
                append_cookies(&mut resp, set_cookies);
                resp
            }
            Err(e) => {
                tracing::warn!(trace_id = %self.trace.root, %host, error = %e, "front-channel logout refused");
                self.login_error(&e)
            }
        }
    }

    /// The logout path of one of the host's AuthRules: clear its session, then on to
    /// the provider's logout (or the allowed target).
    async fn logout(
        &mut self,
        req: &Request<Incoming>,
        host: &str,
        policy: &AuthPolicy,
    ) -> Response<Body> {
        self.rec.add_action("authenticate");
        let cookies = cookie_headers(req.headers());
        let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let query = form_pairs(req.uri().query().unwrap_or(""));
        let requested = query.get("redirect").map(String::as_str);
        let secure = self.conn.tls.is_some();
        let out = (self.dp.auth)
            .logout(policy, host, &cookies, requested, secure)
            .await;
        self.dp.metrics.auth.logout(&rule_label(policy));
        tracing::info!(trace_id = %self.trace.root, rule = %policy.rule, sub = out.sub.as_deref().unwrap_or("-"), "logged out");
        self.rec.add_action("redirect");
        self.rec.redirect_url = out.location.clone();
        let mut resp = redirect(StatusCode::FOUND, &out.location);
        append_cookies(&mut resp, out.set_cookies);
        resp
    }

    /// The callback's hops into the flow record. A callback whose flow cookie did not
    /// open has no flow id; it is recorded under its trace id.
    fn record_flow(
        &self,
        policy: &AuthPolicy,
        host: &str,
        notes: Notes,
        failure: Option<&'static str>,
    ) {
        let id = notes
            .flow_id
            .unwrap_or_else(|| format!("callback-{}", self.trace.root));
        let rule = rule_label(policy);
        for n in notes.hops {
            let hop = Hop {
                at: n.at,
                hop: n.hop.into(),
                ok: n.ok,
                trace_id: self.trace.root.clone(),
                detail: n.detail,
            };
            self.dp.flows.record(&id, &rule, host, hop);
        }
        if let Some(reason) = failure {
            self.dp.flows.failed(&id, reason);
        }
    }

    /// A request head that backends could read differently from Portcullis: 400.
    fn refuse(&mut self, reason: &str, refusal: Refusal) -> Response<Body> {
        tracing::info!(trace_id = %self.trace.root, %refusal, "request refused");
        self.error(
            StatusCode::BAD_REQUEST,
            reason,
            "The request is malformed or ambiguous and was not forwarded.",
        )
    }

    fn login_error(&mut self, e: &LoginError) -> Response<Body> {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.error(status, e.reason(), e.public_message())
    }

    fn error(&mut self, status: StatusCode, reason: &str, message: &str) -> Response<Body> {
        self.rec.error_reason = reason.to_owned();
        if self.rec.actions_executed.is_empty() || self.rec.actions_executed == "authenticate" {
            self.rec.add_action("fixed-response");
        }
        let mut page = ErrorPage {
            status,
            reason,
            message,
            trace_id: &self.trace.root,
        }
        .render(self.html);
        if self.head {
            page.headers_mut().remove(http::header::CONTENT_TYPE);
        }
        page
    }

    /// Counts the response in the route's metrics and hands the access-log record to
    /// the body, which writes it once the last byte is sent.
    fn finish(
        mut self,
        mut resp: Response<Body>,
        received_bytes: Arc<AtomicU64>,
    ) -> Response<Body> {
        append_cookies(&mut resp, std::mem::take(&mut self.set_cookies));
        let status = resp.status().as_u16();
        let metrics = match &self.route {
            Some(r) => self
                .live
                .route_metrics
                .get(r.index)
                .unwrap_or(&self.live.unmatched),
            None => &self.live.unmatched,
        };
        metrics.observe(status, self.received.elapsed().as_secs_f64());
        self.rec.elb_status_code = status;
        let head = head_size(resp.headers()) as u64;
        let (parts, body) = resp.into_parts();
        let logged = LoggedBody {
            inner: body,
            sent: head,
            pending: Some(PendingLog {
                rec: self.rec,
                dp: self.dp,
                received_bytes,
            }),
        };
        Response::from_parts(parts, logged.boxed_unsync())
    }
}

/// An AuthRule as a metric label: `namespace/name`.
fn rule_label(policy: &AuthPolicy) -> String {
    format!("{}/{}", policy.rule.namespace, policy.rule.name)
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn cookie_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// Where the provider sends the browser back: this host, as the browser addressed it.
fn callback_uri(authority: &Authority, secure: bool) -> String {
    let scheme = if secure { "https" } else { "http" };
    format!("{scheme}://{}{CALLBACK_PATH}", authority.header)
}

fn insert_identity(headers: &mut HeaderMap, identity: &Identity) {
    for (name, value) in [
        ("x-amzn-oidc-accesstoken", identity.access_token.as_str()),
        ("x-amzn-oidc-identity", identity.sub.as_str()),
        ("x-amzn-oidc-data", &identity.data),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

/// A 401 on a rule that takes bearer tokens says so (RFC 6750), for API clients.
fn offer_bearer(resp: &mut Response<Body>, policy: &AuthPolicy) {
    if policy.bearer.is_some() {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
}

fn append_cookies(resp: &mut Response<Body>, cookies: impl IntoIterator<Item = String>) {
    for c in cookies {
        if let Ok(v) = http::HeaderValue::from_str(&c) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
    }
}

fn describe_request(rec: &mut AccessRecord, req: &Request<Incoming>, conn: &ConnInfo) {
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    let host = canonical::authority(req.uri(), req.headers(), conn.tls.is_some())
        .map_or_else(|_| conn.local.ip().to_string(), |a| a.host);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let version = match req.version() {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    rec.request = format!(
        "{} {scheme}://{host}:{}{path} {version}",
        req.method(),
        conn.local.port()
    );
    if let Some(ua) = req.headers().get(http::header::USER_AGENT) {
        rec.user_agent = String::from_utf8_lossy(ua.as_bytes()).into_owned();
    }
    if let Some(tls) = &conn.tls {
        rec.ssl_cipher = tls.cipher.clone();
        rec.ssl_protocol = tls.protocol.clone();
        rec.domain_name = tls.server_name.clone().unwrap_or_default();
        rec.chosen_cert_arn = tls.cert_source.clone().unwrap_or_default();
    }
}

fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 16
}

struct PendingLog {
    rec: AccessRecord,
    dp: Arc<DataPlane>,
    received_bytes: Arc<AtomicU64>,
}

/// The response body, counting what it sends; writes the access-log line when it
/// ends or is dropped (client gone), so `sent_bytes` and `time` are final.
struct LoggedBody {
    inner: Body,
    sent: u64,
    pending: Option<PendingLog>,
}

impl LoggedBody {
    fn write_log(&mut self) {
        if let Some(PendingLog {
            mut rec,
            dp,
            received_bytes,
        }) = self.pending.take()
        {
            rec.time = timestamp(jiff::Timestamp::now());
            rec.sent_bytes = self.sent;
            rec.received_bytes = received_bytes.load(Ordering::Relaxed);
            if !dp.log.write(&rec) {
                dp.metrics.access_log_dropped.inc();
            }
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.write_log(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.write_log();
    }
}

/// The request body on its way upstream, streamed, with its size counted.
struct CountingBody {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One backend of a weighted split, in proportion to the weights.
fn pick(backend: &Backend) -> &Backend {
    let Backend::Split(shares) = backend else {
        return backend;
    };
    let total: u64 = shares.iter().map(|(w, _)| u64::from(*w)).sum();
    let mut at = next_random() % total.max(1);
    for (weight, share) in shares {
        if at < u64::from(*weight) {
            return pick(share);
        }
        at -= u64::from(*weight);
    }
    &shares[0].1
}

/// A per-thread xorshift sequence: weighted splits need spread, not secrecy.
fn next_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// An HTTPRoute RequestRedirect's Location: each part as the filter sets it, else as
/// the request had it; the port is left out when it is the scheme's own.
fn redirect_location(
    redirect: &Redirect,
    authority: &canonical::Authority,
    path: &str,
    query: Option<&str>,
    tls: bool,
) -> String {
    let scheme = redirect
        .scheme
        .clone()
        .unwrap_or_else(|| if tls { "https" } else { "http" }.into());
    let host = redirect.hostname.as_deref().unwrap_or(&authority.host);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = redirect.port.or(if redirect.scheme.is_some() {
        None
    } else {
        authority.port
    });
    let path = redirect
        .path
        .as_ref()
        .map_or_else(|| path.to_owned(), |m| m.apply(path));
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}{path}{query}"),
        _ => format!("{scheme}://{host}{path}{query}"),
    }
}

/// The path and authority an HTTPRoute URLRewrite sends on.
fn rewritten(
    rewrite: &Rewrite,
    authority: &canonical::Authority,
    path: &str,
    query: Option<&str>,
) -> (String, canonical::Authority) {
    let path = rewrite
        .path
        .as_ref()
        .map_or_else(|| path.to_owned(), |m| m.apply(path));
    let mut authority = authority.clone();
    if let Some(host) = &rewrite.hostname {
        authority.host = host.clone();
        authority.port = None;
        authority.header = host.clone();
    }
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    (path_and_query, authority)
}
