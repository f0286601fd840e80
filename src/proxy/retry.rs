//! HTTPRoute `retry`: a request whose body Portcullis held whole is sent again when
//! the backend answers one of the rule's codes or no connection could be made, up to
//! the rule's attempts, at least its backoff apart. A streamed body is never sent
//! twice (the caller only comes here with a held one); the route's timeout bounds
//! every attempt and wait together.

use std::time::Instant;

use bytes::Bytes;
use http::{Response, request};

use super::forward::{self, ForwardError, Outgoing, Way};
use super::pages::full;
use super::{Body, DataPlane};
use crate::compile::Upstream;
use crate::compile::retry::Retry;
use crate::observe::access_log::AccessRecord;

/// Why an attempt's outcome is tried again, if it is.
pub fn retry_cause(
    policy: &Retry,
    outcome: &Result<Response<Body>, ForwardError>,
) -> Option<&'static str> {
    match outcome {
        Ok(resp) if policy.retries_status(resp.status().as_u16()) => Some("status"),
        Err(ForwardError::Connect) => Some("connect"),
        _ => None,
    }
}

pub struct Attempts<'a> {
    pub dp: &'a DataPlane,
    pub upstream: &'a Upstream,
    pub way: Way<'a>,
    pub policy: &'a Retry,
    pub received: Instant,
}

impl Attempts<'_> {
    /// Sends the request (`parts` and its whole `body`) until an answer is not one
    /// to retry or the attempts are spent; the last outcome is the client's.
    pub async fn send(
        self,
        parts: request::Parts,
        body: Bytes,
        rec: &mut AccessRecord,
    ) -> Result<Response<Body>, ForwardError> {
        let mut retried = 0;
        // Every attempt's targets and statuses, as ALB lists them in the access log.
        let mut tried = Vec::new();
        let mut statuses = Vec::new();
        loop {
            let out = Outgoing {
                parts: parts.clone(),
                body: full(body.clone()),
                upgrade: None,
                hold: None,
            };
            let outcome =
                forward::forward(self.dp, self.upstream, self.way, out, self.received, rec).await;
            tried.push(std::mem::take(&mut rec.target_port_list));
            statuses.push(std::mem::take(&mut rec.target_status_code_list));
            rec.target_port_list = tried.join(" ");
            rec.target_status_code_list = statuses.join(" ");
            let cause = retry_cause(self.policy, &outcome);
            let Some(cause) = cause.filter(|_| retried < self.policy.attempts) else {
                return outcome;
            };
            // The answer to retry is dropped unread: its connection is not reused.
            drop(outcome);
            retried += 1;
            self.dp
                .metrics
                .upstream_retries
                .with_label_values(&[cause])
                .inc();
            tokio::time::sleep(self.policy.backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn listed_codes_and_failed_connections_are_retried_nothing_else() {
        let policy = Retry {
            codes: vec![500, 503],
            attempts: 2,
            backoff: std::time::Duration::ZERO,
        };
        let answer = |status: u16| -> Result<Response<Body>, ForwardError> {
            let mut r = Response::new(super::super::pages::empty());
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(r)
        };
        assert_eq!(retry_cause(&policy, &answer(500)), Some("status"));
        assert_eq!(retry_cause(&policy, &answer(503)), Some("status"));
        assert_eq!(retry_cause(&policy, &answer(502)), None);
        assert_eq!(retry_cause(&policy, &answer(200)), None);
        assert_eq!(
            retry_cause(&policy, &Err(ForwardError::Connect)),
            Some("connect")
        );
        // The request may have reached the backend: neither is sent again.
        assert_eq!(retry_cause(&policy, &Err(ForwardError::Response)), None);
        assert_eq!(retry_cause(&policy, &Err(ForwardError::Timeout)), None);
    }
}
