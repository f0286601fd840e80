//! Sending a request to a Service's endpoints: pooled connections (HTTP/1.1 unless the
//! Service asks for HTTP/2, in the clear unless it asks for TLS), passive failure
//! marking, one retry on another endpoint for a request without a body whose
//! connection failed, and WebSocket tunnels after a `101`.

use std::time::Instant;

use http::header::{CONNECTION, HOST, HeaderValue, UPGRADE};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version, request};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::balance::Balance;
use super::clients::{Pools, SendFailure};
use super::headers::strip_hop_by_hop;
use super::pages::empty;
use super::pool::UpstreamBody;
use super::{Body, DataPlane};
use crate::compile::{Transport, Upstream};
use crate::observe::access_log::AccessRecord;

/// Why forwarding failed, with the status and reason the client and log get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// No connection to any endpoint (refused, unreachable, connect timeout).
    Connect,
    /// The endpoint accepted the request but sent no response headers in time.
    Timeout,
    /// The connection broke or the response was not HTTP.
    Response,
    /// The client's body, read whole before sending (for a mirror or a retry), broke
    /// off or was malformed: nothing was sent.
    ClientBody,
}

impl ForwardError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Connect | Self::Response => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ClientBody => StatusCode::BAD_REQUEST,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Connect => "TargetConnectionError",
            Self::Timeout => "TargetResponseTimeout",
            Self::Response => "TargetResponseError",
            Self::ClientBody => "RequestBodyIncomplete",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Connect => "The application behind this address could not be reached.",
            Self::Timeout => "The application behind this address did not answer in time.",
            Self::Response => "The application behind this address sent no valid response.",
            Self::ClientBody => {
                "The request's body broke off before its end and was not forwarded."
            }
        }
    }
}

pub struct Outgoing {
    pub parts: request::Parts,
    pub body: Body,
    /// The client's side of a WebSocket upgrade.
    pub upgrade: Option<OnUpgrade>,
    /// The client connection's slot, held by a WebSocket tunnel for as long as it runs.
    pub hold: Option<super::connections::Hold>,
}

/// Where an upstream's requests go: its balancer state and its connections.
#[derive(Clone, Copy)]
pub struct Way<'a> {
    pub balance: &'a Balance,
    pub pools: &'a Pools,
}

pub async fn forward(
    dp: &DataPlane,
    upstream: &Upstream,
    way: Way<'_>,
    out: Outgoing,
    received: Instant,
    rec: &mut AccessRecord,
) -> Result<Response<Body>, ForwardError> {
    let Outgoing {
        mut parts,
        body,
        upgrade,
        hold,
    } = out;
    let balance = way.balance;
    rec.target_group_arn = upstream.name.clone();
    prepare_headers(&mut parts, upgrade.is_some(), &upstream.transport);
    // Only a request without a body can be sent twice, and only another endpoint helps.
    let retryable = body.is_end_stream() && balance.targets().len() > 1;
    let mut body = Some(body);
    let mut spare = Some(parts);
    // Space-separated as the access log writes them, built in place: one allocation
    // each, not a list of strings joined afterwards.
    let mut tried = String::new();
    let mut statuses = String::new();
    let mut last = None;
    let mut result = Err(ForwardError::Connect);
    // Each clock read serves twice (the end of one span, the start of the next), and
    // the first pick uses the request's arrival: reads cost in a virtual machine.
    let mut clock = received;
    for _attempt in 0..2 {
        let Some(index) = balance.pick(dp.ms_at(clock), last) else {
            break;
        };
        let target = &balance.targets()[index];
        let attempt = if retryable {
            spare.clone()
        } else {
            spare.take()
        };
        let Some(parts) = attempt else { break };
        let mut req = Request::from_parts(parts, body.take().unwrap_or_else(empty));
        if upstream.transport.version.is_h2() {
            let Ok(uri) = h2_uri(target, req.uri(), req.headers(), &upstream.transport) else {
                return Err(ForwardError::Connect);
            };
            *req.uri_mut() = uri;
            // `:authority` carries the host now.
            req.headers_mut().remove(HOST);
        }
        let sent = Instant::now();
        rec.request_processing_time = sent.duration_since(received).as_secs_f64();
        rec.target_port = target.clone();
        push_listed(&mut tried, target);
        let outcome = tokio::time::timeout(
            dp.config.upstream_response_timeout,
            way.pools.send(dp.worker(), target, req),
        )
        .await;
        clock = Instant::now();
        rec.target_processing_time = clock.duration_since(sent).as_secs_f64();
        result = judge_outcome(dp, upstream, balance, index, outcome, &mut statuses);
        last = Some(index);
        let again = matches!(result, Err(ForwardError::Connect)) && retryable;
        if !again {
            break;
        }
    }
    rec.target_port_list = tried;
    rec.target_status_code_list = statuses;
    let resp = result?;
    rec.target_status_code = resp.status().as_u16().to_string();
    let resp = finish_response(resp, upgrade, hold);
    rec.response_processing_time = clock.elapsed().as_secs_f64();
    Ok(resp)
}

fn push_listed(list: &mut String, item: &str) {
    if !list.is_empty() {
        list.push(' ');
    }
    list.push_str(item);
}

type Sent = Result<Result<Response<UpstreamBody>, SendFailure>, tokio::time::error::Elapsed>;

/// What one attempt came to, counted and logged; a connection that failed marks its
/// endpoint so the balancer passes it over for the failure backoff.
fn judge_outcome(
    dp: &DataPlane,
    upstream: &Upstream,
    balance: &Balance,
    index: usize,
    outcome: Sent,
    statuses: &mut String,
) -> Result<Response<UpstreamBody>, ForwardError> {
    let target = &balance.targets()[index];
    match outcome {
        Ok(Ok(resp)) => {
            push_listed(statuses, resp.status().as_str());
            Ok(resp)
        }
        Ok(Err(SendFailure {
            connect: true,
            error: e,
        })) => {
            push_listed(statuses, "-");
            balance.mark_failed(
                index,
                dp.now_ms() + dp.config.failure_backoff.as_millis() as u64,
            );
            dp.metrics
                .upstream_errors
                .with_label_values(&["connect"])
                .inc();
            tracing::warn!(target = %target, upstream = %upstream.name, error = %e, "upstream connection failed");
            Err(ForwardError::Connect)
        }
        Ok(Err(SendFailure { error: e, .. })) => {
            push_listed(statuses, "-");
            dp.metrics
                .upstream_errors
                .with_label_values(&["response"])
                .inc();
            tracing::warn!(target = %target, upstream = %upstream.name, error = %e, "upstream response failed");
            Err(ForwardError::Response)
        }
        Err(_) => {
            push_listed(statuses, "-");
            dp.metrics
                .upstream_errors
                .with_label_values(&["timeout"])
                .inc();
            Err(ForwardError::Timeout)
        }
    }
}

/// The URI of a request over HTTP/2: the scheme to the pod, and the client's host as
/// the authority (`:authority`, which takes the place of `Host`; without a host, the
/// pod's address); the pod is chosen by the pool. Over HTTP/1.1 the pool sends the
/// path and query alone.
fn h2_uri(
    target: &str,
    uri: &Uri,
    headers: &http::HeaderMap,
    transport: &Transport,
) -> Result<Uri, http::Error> {
    // A clone shares the request's bytes: no copy, and no second parse.
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let scheme = if transport.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    Uri::builder()
        .scheme(scheme)
        .authority(host.unwrap_or(target))
        .path_and_query(path)
        .build()
}

/// Upstream requests are HTTP/1.1 unless the Service asks for HTTP/2. The client's
/// hop-by-hop headers went on arrival; a WebSocket upgrade gets the two it needs back.
fn prepare_headers(parts: &mut request::Parts, websocket: bool, transport: &Transport) {
    if websocket {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
    }
    parts.version = if transport.version.is_h2() {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
}

fn finish_response(
    mut resp: Response<UpstreamBody>,
    client_upgrade: Option<OnUpgrade>,
    hold: Option<super::connections::Hold>,
) -> Response<Body> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, client_upgrade) {
        (true, Some(client_side)) => {
            let upstream_side = hyper::upgrade::on(&mut resp);
            if let Some(h) = &hold {
                h.tunnel();
            }
            tokio::spawn(tunnel(client_side, upstream_side, hold));
            let (mut parts, _) = resp.into_parts();
            let upgrade_value = parts.headers.get(UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(
                UPGRADE,
                upgrade_value.unwrap_or(HeaderValue::from_static("websocket")),
            );
            Response::from_parts(parts, empty())
        }
        _ => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
        }
    }
}

async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, _hold: Option<super::connections::Hold>) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "websocket tunnel closed");
    }
}
