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

use super::canonical::{self, Authority, CanonicalRequest, Refusal};
use super::cors;
use super::forward::{self, Outgoing};
use super::headers::{
    client_ip, forwarded_https, is_websocket_upgrade, remove_named, set_forwarded,
};
use super::pages::{ErrorPage, grpc_answer, is_grpc, is_navigation, prefers_html, redirect};
use super::{Body, BoxError, ConnInfo, DataPlane, Live};
use crate::auth::bearer::{BearerError, bearer_token, challenge};
use crate::auth::claims::{Provenance, RefusalReport};
use crate::auth::flow::FlowError;
use crate::auth::guard::{self as auth_guard, Entry};
use crate::auth::login::{Browser, CALLBACK_PATH, Identity, LoginError, Notes};
use crate::auth::redirect::safe_return_path;
use crate::auth::refusal::Refusal as GuardRefusal;
use crate::auth::session::Session;
use crate::compile::authorization::{Decision, RequestFacts, Source};
use crate::compile::bearer::BearerPolicy;
use crate::compile::claim_headers::NotSent;
use crate::compile::{
    AuthPolicy, Backend, GuardPolicy, HeaderEdits, Redirect, Rewrite, Route, RouteQuery,
    Unevaluable,
};
use crate::diagnostics::ObjectRef;
use crate::form::form_pairs;
use crate::model::{BACKCHANNEL_LOGOUT_PATH, FRONTCHANNEL_LOGOUT_PATH};
use crate::observe::access_log::{AccessRecord, timestamp};
use crate::observe::flows::{AUTHORIZE, FIRST_REQUEST, Hop, Return, Sent, explain_return, now_ms};
use crate::observe::trace::{self, TraceId};

mod alb;
mod body;
mod deliver;
mod endpoints;
pub(crate) mod filters;
mod guard;
mod mtls;

use body::{CountingBody, LoggedBody, PendingLog};
use filters::{pick, redirect_location, rewritten};

/// Where a request goes after filters: the path and query, and the authority the
/// backend sees.
struct Target {
    path_and_query: String,
    authority: Authority,
    websocket: bool,
    /// The client's scheme (the backend's `X-Forwarded-Proto`).
    https: bool,
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
    /// A gRPC call: Portcullis's own answers are given as a `grpc-status`.
    grpc: bool,
    /// The response is the backend's, not Portcullis's own.
    from_backend: bool,
    route: Option<Arc<Route>>,
    /// Cookies to set on the response whatever it is (a refreshed session).
    set_cookies: Vec<String>,
    /// The route's claim headers for this request's user (`spec.claimHeaders`).
    claim_headers: Vec<(http::HeaderName, http::HeaderValue)>,
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
    let kind = match (conn.https(), websocket, req.version() == Version::HTTP_2) {
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
    let grpc = is_grpc(req.headers());
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
        grpc,
        from_backend: false,
        route: None,
        set_cookies: Vec::new(),
        claim_headers: Vec::new(),
    };
    let resp = ex.respond(req, received_bytes.clone()).await;
    Ok(ex.finish(resp, received_bytes))
}

impl Exchange {
    /// canonicalise → the login's own endpoints → route → admit → guard → filters →
    /// forward; the access log is written by `finish`.
    async fn respond(
        &mut self,
        mut req: Request<Incoming>,
        received_bytes: Arc<AtomicU64>,
    ) -> Response<Body> {
        let at = match self.canonicalise(&mut req) {
            Ok(at) => at,
            Err(refused) => return *refused,
        };
        if let Some(refused) = self.misdirected(&at) {
            return refused;
        }
        if let Some(policies) = self.backchannel(&req, &at) {
            return Box::pin(self.backchannel_logout(req, &policies)).await;
        }
        if let Some(answer) = self.endpoint(&req, &at).await {
            return answer;
        }
        let route = match self.route(&req, &at) {
            Ok(route) => route,
            Err(answer) => return *answer,
        };
        if let Some(answer) = self.admit(&route, &at) {
            return answer;
        }
        if let Some(answer) = self.alb_upgrade(&route, &at, &req) {
            return answer;
        }
        // The route's claim headers are Portcullis's alone: whatever the client sent is
        // gone before the guard, and its expressions, read the request.
        remove_named(req.headers_mut(), route.claim_header_names());
        if let Some(answer) = self.guard_route(&mut req, &route, &at).await {
            return answer;
        }
        // After the guard: the filter answers only preflights the guard let through,
        // and never a request the guard refused.
        let cors = route.filters.cors.clone();
        if let Some(answer) = cors.as_deref().and_then(|c| self.cors_preflight(c, &req)) {
            return answer;
        }
        let origin = cors
            .as_deref()
            .and_then(|c| cors::allowed_origin(c, req.headers()));
        // ALB runs a rule's login before its action, so an action answers only here.
        if let Some(answer) = &route.alb.answer {
            return self.alb_answer(answer, &at, req.uri().query());
        }
        if let Some(to) = &route.filters.redirect {
            let query = req.uri().query();
            let location = redirect_location(to, &at.authority, &at.path, query, at.https);
            self.rec.add_action("redirect");
            self.rec.redirect_url = location.clone();
            let status = StatusCode::from_u16(to.status).unwrap_or(StatusCode::FOUND);
            return redirect(status, &location);
        }
        route.filters.request_headers.apply(req.headers_mut());
        // After the route's own header filters, which cannot write them either.
        remove_named(req.headers_mut(), route.claim_header_names());
        for (name, value) in std::mem::take(&mut self.claim_headers) {
            req.headers_mut().insert(name, value);
        }
        self.client_cert_headers(req.headers_mut());
        let mut resp = self.send_to_backend(req, &route, at, received_bytes).await;
        route.filters.response_headers.apply(resp.headers_mut());
        if let Some(cors) = &cors {
            cors::response(cors, origin, resp.headers_mut());
        }
        resp
    }

    /// The one reading of the request every later step uses; what cannot be read one
    /// way is refused here (400).
    fn canonicalise(
        &mut self,
        req: &mut Request<Incoming>,
    ) -> Result<CanonicalRequest, Box<Response<Body>>> {
        let tls = self.conn.tls.is_some();
        let config = &self.dp.config;
        let forwarded = forwarded_https(req.headers(), self.conn.peer, &config.trusted_proxies);
        // TLS here, TLS ended by the load balancer in front of --https-offloaded, or
        // what a trusted proxy says.
        let https = forwarded.unwrap_or(self.conn.https());
        let authority = match canonical::authority(req.uri(), req.headers(), https) {
            Ok(a) => a,
            Err(refusal) => {
                // A callback without a host cannot be matched to the login it finishes.
                let reason = if refusal == Refusal::MissingHost && req.uri().path() == CALLBACK_PATH
                {
                    "AuthMissingHostHeader"
                } else {
                    refusal.reason()
                };
                return Err(Box::new(self.refuse(reason, refusal)));
            }
        };
        let path = match canonical::canonical_path(req.uri().path(), &config.path_rules) {
            Ok(p) => p,
            Err(refusal) => return Err(Box::new(self.refuse(refusal.reason(), refusal))),
        };
        let websocket = is_websocket_upgrade(req.headers());
        canonical::clean_arrival(
            req.headers_mut(),
            &config.dropped_headers,
            config.underscores_in_headers,
        );
        // Read before any forwarding header is changed; routes with a source
        // allow-list admit only this address, their login endpoints included.
        let client = client_ip(req.headers(), self.conn.peer, &config.trusted_proxies);
        // Only a folded key needs a copy of its own.
        let folded = match self.live.snapshot.routes.match_key(&path) {
            std::borrow::Cow::Owned(folded) => Some(folded),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        Ok(CanonicalRequest {
            authority,
            path,
            folded,
            path_and_query,
            client,
            tls,
            https,
            websocket,
        })
    }

    /// The rules a back-channel logout may be for, when this is one (the provider
    /// posts it to any host).
    fn backchannel(
        &self,
        req: &Request<Incoming>,
        at: &CanonicalRequest,
    ) -> Option<Vec<Arc<AuthPolicy>>> {
        if at.path != BACKCHANNEL_LOGOUT_PATH || req.method() != http::Method::POST {
            return None;
        }
        Some(self.live.snapshot.routes.all_policies()).filter(|p| !p.is_empty())
    }

    /// The login's own addresses (keys, front-channel logout, callback, logout),
    /// answered before routing. Their futures are boxed: each holds a call to the
    /// provider, and unboxed they would make every request's future as large, and
    /// moved whole at each level it is awaited through.
    async fn endpoint(
        &mut self,
        req: &Request<Incoming>,
        at: &CanonicalRequest,
    ) -> Option<Response<Body>> {
        if let Some(answer) = self.public_keys(&at.path) {
            return Some(answer);
        }
        let live = self.live.clone();
        let routes = &live.snapshot.routes;
        let host = at.authority.host.as_str();
        if at.path == FRONTCHANNEL_LOGOUT_PATH && req.method() == http::Method::GET {
            let policies = routes.oidc_policies(host, at.client, self.conn.socket);
            if !policies.is_empty() {
                return Some(Box::pin(self.frontchannel_logout(req, at, &policies)).await);
            }
        }
        if !routes.is_auth_path(at.key()) {
            return None;
        }
        let policies = routes.oidc_policies(host, at.client, self.conn.socket);
        if at.key() == CALLBACK_PATH && !policies.is_empty() {
            return Some(Box::pin(self.callback(req, at, &policies)).await);
        }
        let policy = policies.iter().find(|p| p.logout_path == at.key())?;
        Some(Box::pin(self.logout(req, at, policy)).await)
    }

    /// The route for the request's host, path and conditions (404 without one).
    fn route(
        &mut self,
        req: &Request<Incoming>,
        at: &CanonicalRequest,
    ) -> Result<Arc<Route>, Box<Response<Body>>> {
        let facts = RouteQuery {
            host: &at.authority.host,
            path: at.key(),
            method: req.method(),
            headers: req.headers(),
            query: req.uri().query(),
            tls: at.tls,
            https: at.https,
            client: at.client,
            socket: self.conn.socket,
        };
        let route = match self.live.snapshot.routes.find_for(&facts) {
            Ok(Some(route)) => route.clone(),
            Ok(None) => {
                return Err(Box::new(self.error(
                    StatusCode::NOT_FOUND,
                    "NoMatchingRoute",
                    "No Ingress rule matches this host and path.",
                )));
            }
            Err(unevaluable) => return Err(Box::new(self.unevaluable(&unevaluable))),
        };
        self.rec.matched_rule_priority = route.priority.to_string();
        self.route = Some(route.clone());
        Ok(route)
    }

    /// The one place a guard's refusal becomes a response.
    fn refused(&mut self, refusal: GuardRefusal) -> Response<Body> {
        self.refused_with(refusal, None)
    }

    /// A guard's refusal with what was checked, for the person at the browser.
    fn refused_with(&mut self, refusal: GuardRefusal, detail: Option<&str>) -> Response<Body> {
        let status =
            StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = self.page(status, refusal.reason(), refusal.message(), detail);
        if let Some(seconds) = refusal.retry_after() {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static(seconds),
            );
        }
        resp
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

    /// Who may connect at all, whether the route may be served, and the redirect to
    /// HTTPS: before any login or backend.
    fn admit(&mut self, route: &Route, at: &CanonicalRequest) -> Option<Response<Body>> {
        if let Some(sources) = &route.sources
            && !sources.admits(at.client)
        {
            tracing::info!(trace_id = %self.trace.root, ingress = %route.ingress, client = ?at.client, "request refused: the source address is not in the Ingress's inbound-cidrs");
            return Some(self.error(
                StatusCode::FORBIDDEN,
                "SourceNotAllowed",
                "This address is not open to your network.",
            ));
        }
        if let Some(closed) = &route.closed {
            tracing::warn!(trace_id = %self.trace.root, ingress = %route.ingress, problem = %closed.problem, "route closed: an access-control annotation cannot be honoured");
            return Some(self.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                closed.reason,
                "This address asks for an access control Portcullis cannot give, so it is closed; the operator can see why in the Ingress's events or with `portcullis check`.",
            ));
        }
        let port = self.dp.config.https_redirect_port?;
        if !route.https_redirect || at.https {
            return None;
        }
        let host = &at.authority.host;
        let authority = if port == 443 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let location = format!("https://{authority}{}", at.path_and_query);
        self.rec.add_action("redirect");
        self.rec.redirect_url = location.clone();
        Some(redirect(StatusCode::PERMANENT_REDIRECT, &location))
    }

    /// The route's guard for this path, if any: `None` lets the request on (with
    /// identity headers when it has a session or token).
    async fn guard_route(
        &mut self,
        req: &mut Request<Incoming>,
        route: &Route,
        at: &CanonicalRequest,
    ) -> Option<Response<Body>> {
        let guard = route.guard_for(at.key())?;
        self.rec.add_action("authenticate");
        let loopback = self.conn.local.ip().is_loopback();
        match auth_guard::entry(&guard.policy, at.https, loopback) {
            Entry::Refuse(refusal) => {
                match &guard.policy {
                    GuardPolicy::Broken(problem) => {
                        tracing::warn!(trace_id = %self.trace.root, rule = %guard.rule, %problem, "guarded route refused: its AuthRule is invalid")
                    }
                    GuardPolicy::Pending(problem) => {
                        tracing::warn!(trace_id = %self.trace.root, route = %route.ingress, %problem, "guarded route refused: its AuthRule has not attached yet")
                    }
                    _ => {}
                }
                Some(self.refused(refusal))
            }
            // Boxed, as the login endpoints: see `endpoint`.
            Entry::BearerOnly(bearer) => Box::pin(self.bearer_only(req, &guard.rule, bearer)).await,
            Entry::Login(policy) => Box::pin(self.guard(req, at, policy)).await,
        }
    }

    /// The rewritten request to the route's backend (or the answer of a backend that
    /// cannot be reached).
    async fn send_to_backend(
        &mut self,
        mut req: Request<Incoming>,
        route: &Route,
        at: CanonicalRequest,
        received_bytes: Arc<AtomicU64>,
    ) -> Response<Body> {
        let (path_and_query, authority) = match (&route.filters.rewrite, &route.alb.rewrite) {
            (Some(rewrite), _) => rewritten(rewrite, &at.authority, &at.path, req.uri().query()),
            (None, Some(rewrite)) => match self.alb_rewritten(rewrite, &at) {
                Ok(target) => target,
                Err(answer) => return *answer,
            },
            (None, None) => (at.path_and_query, at.authority),
        };
        let (backend, edits) = pick(&route.backend);
        if let Some(edits) = edits {
            edits.apply(req.headers_mut());
        }
        match backend {
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
            Backend::Split(_) | Backend::Edited { .. } => {
                unreachable!("pick returns one backend")
            }
            Backend::Service(upstream) => {
                let target = Target {
                    path_and_query,
                    authority,
                    websocket: at.websocket,
                    https: at.https,
                };
                self.forward_to(req, route, upstream, target, received_bytes)
                    .await
            }
        }
    }

    async fn forward_to(
        &mut self,
        mut req: Request<Incoming>,
        route: &Route,
        upstream: &Arc<crate::compile::Upstream>,
        target: Target,
        received_bytes: Arc<AtomicU64>,
    ) -> Response<Body> {
        self.rec.add_action("forward");
        let upgrade = target.websocket.then(|| hyper::upgrade::on(&mut req));
        let hold = target
            .websocket
            .then(|| req.extensions().get::<super::connections::Hold>().cloned())
            .flatten();
        let (mut parts, body) = req.into_parts();
        let rewrites = route.filters.rewrite.is_some() || route.alb.rewrite.is_some();
        if (!self.dp.config.forward_original_path || rewrites)
            && let Ok(uri) = target.path_and_query.parse::<http::Uri>()
        {
            parts.uri = uri;
        }
        canonical::set_host(&mut parts.headers, &target.authority);
        set_forwarded(
            &mut parts.headers,
            self.conn.forwarded(),
            target.https,
            &target.authority.host,
            &self.dp.config.trusted_proxies,
        );
        if let Ok(v) = self.trace.header.parse() {
            parts.headers.insert(trace::HEADER, v);
        }
        let out = deliver::Unsent {
            parts,
            body,
            upgrade,
            hold,
            received_bytes,
        };
        let balance = self.live.balances.get(upstream.id).map(|h| h.load());
        let pools = self.live.pools.get(upstream.id).cloned();
        let (Some(balance), Some(pools)) = (balance.filter(|b| !b.targets().is_empty()), pools)
        else {
            self.rec.target_group_arn = upstream.name.clone();
            tracing::warn!(trace_id = %self.trace.root, ingress = %route.ingress, service = %upstream.name, "route has no backend: the Service has no ready endpoints");
            return self.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "BackendUnavailable",
                "The application behind this address has no running instances.",
            );
        };
        let way = forward::Way {
            balance: &balance,
            pools: &pools,
        };
        let sent = self.deliver(route, upstream, way, out);
        let sent = match route.timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(r) => r.map_err(Some),
                Err(_) => Err(None),
            },
            None => sent.await.map_err(Some),
        };
        match sent {
            Ok(resp) => {
                self.from_backend = true;
                resp
            }
            Err(Some(e)) => self.error(e.status(), e.reason(), e.message()),
            Err(None) => self.error(
                StatusCode::GATEWAY_TIMEOUT,
                "RouteTimeout",
                "The application behind this address did not answer in time.",
            ),
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
        self.login_error_because(e, None)
    }

    /// A failed login's page; `what_happened`, when the flow record tells, replaces the
    /// reason's usual cause.
    fn login_error_because(
        &mut self,
        e: &LoginError,
        what_happened: Option<&str>,
    ) -> Response<Body> {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.page_with(status, e.reason(), e.public_message(), None, what_happened)
    }

    fn error(&mut self, status: StatusCode, reason: &str, message: &str) -> Response<Body> {
        self.page(status, reason, message, None)
    }

    fn page(
        &mut self,
        status: StatusCode,
        reason: &str,
        message: &str,
        detail: Option<&str>,
    ) -> Response<Body> {
        self.page_with(status, reason, message, detail, None)
    }

    /// An error page; `what_happened`, when Portcullis knows it, replaces the reason's
    /// usual cause.
    fn page_with(
        &mut self,
        status: StatusCode,
        reason: &str,
        message: &str,
        detail: Option<&str>,
        what_happened: Option<&str>,
    ) -> Response<Body> {
        self.rec.error_reason = reason.to_owned();
        if self.rec.actions_executed.is_empty() || self.rec.actions_executed == "authenticate" {
            self.rec.add_action("fixed-response");
        }
        let mut page = ErrorPage {
            status,
            reason,
            message,
            detail,
            trace_id: &self.trace.root,
            what_happened,
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
        // Counted and logged as the HTTP status the answer stands for.
        let status = resp.status().as_u16();
        if self.grpc && !self.from_backend {
            let reason = match self.rec.error_reason.as_str() {
                "" => resp.status().canonical_reason().unwrap_or("Refused"),
                reason => reason,
            };
            resp = grpc_answer(resp, reason, &self.trace.root);
        }
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

fn cookie_headers(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// Where the provider sends the browser back: this host, as the browser addressed it.
fn callback_uri(authority: &Authority, secure: bool) -> String {
    let scheme = if secure { "https" } else { "http" };
    format!("{scheme}://{}{CALLBACK_PATH}", authority.header)
}

fn append_cookies(resp: &mut Response<Body>, cookies: impl IntoIterator<Item = String>) {
    for c in cookies {
        if let Ok(v) = http::HeaderValue::from_str(&c) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
    }
}

fn describe_request(rec: &mut AccessRecord, req: &Request<Incoming>, conn: &ConnInfo) {
    let scheme = if conn.https() { "https" } else { "http" };
    let host = canonical::authority(req.uri(), req.headers(), conn.https())
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
        conn.port
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
