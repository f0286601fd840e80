//! What ALB's annotations answer themselves: the redirect to HTTPS of
//! `ssl-redirect`, and a rule's `actions.<name>` redirect or fixed response.

use super::*;
use crate::compile::alb_actions::{AlbAnswer, RequestUrl};
use crate::compile::alb_transforms::{AlbRewrite, RewriteError};
use crate::proxy::pages::{empty, full};

impl Exchange {
    /// `ssl-redirect`, and an action that only moves the request to HTTPS: answered
    /// to a plain-HTTP request before any login, as ALB answers them on its HTTP
    /// listener. A request a trusted proxy says came over HTTPS is not redirected
    /// (TLS ended in front of Portcullis), nor is the redirect's protocol read as
    /// plain for it.
    pub(super) fn alb_upgrade(
        &mut self,
        route: &Route,
        at: &CanonicalRequest,
        req: &Request<Incoming>,
    ) -> Option<Response<Body>> {
        if at.https {
            return None;
        }
        if let Some(port) = route.alb.ssl_redirect {
            let host = &at.authority.host;
            let authority = if port == 443 {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            let location = format!("https://{authority}{}", at.path_and_query);
            self.rec.add_action("redirect");
            self.rec.redirect_url = location.clone();
            return Some(redirect(StatusCode::MOVED_PERMANENTLY, &location));
        }
        let answer = route.alb.answer.as_ref()?;
        match answer.as_ref() {
            AlbAnswer::Redirect(r) if r.upgrades_only() => {
                Some(self.alb_answer(answer, at, req.uri().query()))
            }
            _ => None,
        }
    }

    /// The path-and-query and authority a rule's `transforms` give the backend; a
    /// rewrite that cannot be made is answered (500, or 400 for a URL too long for
    /// the expression).
    pub(super) fn alb_rewritten(
        &mut self,
        rewrite: &AlbRewrite,
        at: &CanonicalRequest,
    ) -> Result<(String, Authority), Box<Response<Body>>> {
        match rewrite.apply(&at.path_and_query, &at.authority.host) {
            Ok((path_and_query, host)) if host == at.authority.host => {
                Ok((path_and_query, at.authority.clone()))
            }
            Ok((path_and_query, host)) => Ok((
                path_and_query,
                Authority {
                    header: host.clone(),
                    host,
                    port: None,
                },
            )),
            Err(RewriteError::TooLong) => Err(Box::new(
                self.unevaluable(&crate::compile::Unevaluable::TooLong("url".into())),
            )),
            Err(RewriteError::Failed(why)) => {
                tracing::warn!(trace_id = %self.trace.root, %why, "a transforms rewrite failed");
                Err(Box::new(self.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "RouteInvalid",
                    "This address's rewrite produced no valid request; the operator can see why in the log.",
                )))
            }
        }
    }

    /// A rule's action: its redirect, over the request's own parts, or its fixed
    /// response.
    pub(super) fn alb_answer(
        &mut self,
        answer: &AlbAnswer,
        at: &CanonicalRequest,
        query: Option<&str>,
    ) -> Response<Body> {
        match answer {
            AlbAnswer::Redirect(r) => {
                let https = at.https;
                let url = RequestUrl {
                    tls: https,
                    host: &at.authority.host,
                    port: at.authority.port.unwrap_or(if https { 443 } else { 80 }),
                    path: &at.path,
                    query,
                };
                let location = r.location(&url);
                self.rec.add_action("redirect");
                self.rec.redirect_url = location.clone();
                let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
                redirect(status, &location)
            }
            AlbAnswer::Fixed(f) => {
                self.rec.add_action("fixed-response");
                let body = if self.head {
                    empty()
                } else {
                    full(f.body.clone())
                };
                let mut resp = Response::new(body);
                *resp.status_mut() =
                    StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if let Ok(v) = http::HeaderValue::from_str(&f.content_type) {
                    resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
                }
                resp
            }
        }
    }
}
