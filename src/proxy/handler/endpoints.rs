//! The login's own addresses, answered before routing: the callback, logout, the
//! provider's back- and front-channel logouts, and the signing keys.

use super::*;

impl Exchange {
    /// The signing keys at `--public-keys-path`, when this is that path.
    pub(super) fn public_keys(&mut self, path: &str) -> Option<Response<Body>> {
        let base = self.dp.config.public_keys_path.as_deref()?;
        let (status, content_type, body) = crate::auth::identity::key_document(
            self.dp.auth.signing_keys(),
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

    /// `/oauth2/idpresponse`: finish the flow of whichever of the host's AuthRules
    /// sealed the flow cookie.
    pub(super) async fn callback(
        &mut self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policies: &[Arc<AuthPolicy>],
    ) -> Response<Body> {
        let authority = &arrival.authority;
        let host = authority.host.as_str();
        self.rec.add_action("authenticate");
        let secure = arrival.https;
        let cookies = cookie_headers(req.headers());
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
        let mut what_happened = None;
        if let Some((policy, result)) = &outcome {
            if let Err(LoginError::Flow(e)) = result {
                let at = Browser {
                    host,
                    redirect_uri: &redirect_uri,
                    cookies: &cookies,
                    now: unix_now(),
                    secure,
                };
                what_happened = self.find_flow_start(policy, *e, query, &at, &mut notes);
            }
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
                let store = policy.spec.session.store.label();
                (self.dp.metrics.auth).session_size(store, done.session_bytes);
                tracing::info!(trace_id = %self.trace.root, rule = %policy.rule, sub = %done.sub, session_bytes = done.session_bytes, store, "login completed");
                self.rec.redirect_url = done.location.clone();
                let mut resp = redirect(StatusCode::FOUND, &done.location);
                append_cookies(&mut resp, done.set_cookies);
                resp
            }
            Some((policy, Err(e))) => {
                tracing::warn!(trace_id = %self.trace.root, rule = %policy.rule, reason = e.reason(), error = %e, what_happened = what_happened.as_deref().unwrap_or("-"), "login failed at the callback");
                self.login_error_because(&e, what_happened.as_deref())
            }
            None => self.error(
                StatusCode::NOT_FOUND,
                "NoMatchingRoute",
                "No Ingress rule matches this host and path.",
            ),
        }
    }

    /// A provider's back-channel logout: the token validated, every session it names
    /// ended. 200 when taken, 400 otherwise (the provider may retry).
    pub(super) async fn backchannel_logout(
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
    pub(super) async fn frontchannel_logout(
        &mut self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policies: &[Arc<AuthPolicy>],
    ) -> Response<Body> {
        let host = arrival.authority.host.as_str();
        self.rec.add_action("authenticate");
        let cookies = cookie_headers(req.headers());
        let query = req.uri().query().unwrap_or("");
        let secure = arrival.https;
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
    pub(super) async fn logout(
        &mut self,
        req: &Request<Incoming>,
        arrival: &CanonicalRequest,
        policy: &AuthPolicy,
    ) -> Response<Body> {
        let host = arrival.authority.host.as_str();
        self.rec.add_action("authenticate");
        let cookies = cookie_headers(req.headers());
        let query = form_pairs(req.uri().query().unwrap_or(""));
        let requested = query.get("redirect").map(String::as_str);
        let secure = arrival.https;
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

    /// A callback whose flow cookie did not match finds the flow its `state` began
    /// (on this replica) by the keyed hash the redirect kept: its hops join that flow,
    /// and the failed check says what happened instead of the generic error. Returns
    /// that explanation.
    fn find_flow_start(
        &self,
        policy: &AuthPolicy,
        e: FlowError,
        query: &str,
        at: &Browser<'_>,
        notes: &mut Notes,
    ) -> Option<String> {
        use FlowError::*;
        let unmatched = matches!(e, MissingCookie | InvalidCookie | StateMismatch | Expired);
        if !unmatched || notes.flow_id.is_some() {
            return None;
        }
        let state = form_pairs(query).remove("state")?;
        let flow = self.dp.flows.by_state(&state)?;
        let back = Return {
            at: now_ms(),
            host: at.host,
            secure: at.secure,
            rule: &rule_label(policy),
            cookies: cookie_count(at.cookies),
            reason: e.reason(),
        };
        let explanation = explain_return(&flow, &back);
        if let Some(check) = notes.hops.iter_mut().rfind(|n| n.hop == "flow-cookie") {
            check.detail = format!("{}: {explanation}", e.reason());
        }
        notes.flow_id = Some(flow.id);
        Some(explanation)
    }

    /// The callback's hops into the flow record. A callback whose flow cookie did not
    /// open has no flow id; it is recorded under its trace id. With shared state, the
    /// replica that sent the redirect learns that the browser came back.
    pub(super) fn record_flow(
        &self,
        policy: &AuthPolicy,
        host: &str,
        notes: Notes,
        failure: Option<&'static str>,
    ) {
        if let Some(id) = &notes.flow_id
            && self.dp.auth.shared().is_shared()
        {
            let (shared, id) = (self.dp.auth.shared().clone(), id.clone());
            let keep = std::time::Duration::from_secs(crate::auth::flow::LOGIN_WINDOW_SECS as u64);
            // Off the request path: the redirect's replica asks at its next sweep.
            tokio::spawn(async move {
                if let Err(e) = shared.note_callback(&id, keep).await {
                    tracing::debug!(error = %e, "the callback could not be noted in the shared state");
                }
            });
        }
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
}

/// How many cookies the browser sent, over all its `Cookie` headers.
fn cookie_count(headers: &[&str]) -> usize {
    headers
        .iter()
        .flat_map(|h| h.split(';'))
        .filter(|pair| !pair.trim().is_empty())
        .count()
}
