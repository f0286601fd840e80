//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/flows` (recent logins,
//! failed first) and `/flows/<flow or trace id>` (one as a timeline), and the public keys of
//! `x-amzn-oidc-data` (`/keys/<kid>` as PEM, `/keys` as a JWKS). Kept off the traffic
//! port so it can be firewalled apart.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::identity::key_document;
use crate::proxy::pages::full;
use crate::proxy::{Body, DataPlane};

pub async fn serve_admin(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let dp = dp.clone();
        tokio::spawn(async move {
            // Flow records name users and providers' errors: for this machine (and
            // `kubectl port-forward`) only, unless the operator opens them.
            let flows_open = peer.ip().to_canonical().is_loopback() || dp.config.expose_flows;
            let service = service_fn(move |req| answer(dp.clone(), req, flows_open));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn flows_summary(flows: &[crate::observe::flows::FlowRecord]) -> String {
    let items: Vec<serde_json::Value> = flows
        .iter()
        .map(|f| {
            serde_json::json!({
                "id": f.id,
                "rule": f.rule,
                "host": f.host,
                "started": f
                    .hops
                    .first()
                    .and_then(|h| jiff::Timestamp::from_millisecond(h.at).ok())
                    .map(|t| t.to_string()),
                "hops": f.hops.len(),
                "completed": f.completed(),
                "failedAt": f.failure().map(|h| &h.hop),
                "failure": f.failure().map(|h| &h.detail),
                "traceIds": f.hops.iter().map(|h| &h.trace_id).collect::<std::collections::BTreeSet<_>>(),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

async fn answer(
    dp: Arc<DataPlane>,
    req: Request<Incoming>,
    flows_open: bool,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let keys = path
        .strip_prefix("/keys")
        .or((path == "/.well-known/jwks.json").then_some(""))
        .and_then(|rest| key_document(dp.auth.signing_keys(), rest));
    let (status, content_type, body) = match (keys, path) {
        (Some(answer), _) => answer,
        (None, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            dp.metrics.render(),
        ),
        (None, p) if p.starts_with("/flows") && !flows_open => (
            StatusCode::FORBIDDEN,
            "text/plain",
            "flow records are served to loopback only (kubectl port-forward); start with --expose-flows to serve them here\n".to_string(),
        ),
        // Recent logins, failed first; one of them (by flow id or trace id) as a timeline.
        (None, "/flows") => (
            StatusCode::OK,
            "application/json",
            flows_summary(&dp.flows.recent()),
        ),
        (None, p) if p.starts_with("/flows/") => match dp.flows.find(&p["/flows/".len()..]) {
            Some(flow) if req.uri().query() == Some("format=json") => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&flow).unwrap_or_default(),
            ),
            Some(flow) => (StatusCode::OK, "text/plain; charset=utf-8", flow.render()),
            None => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "no such flow on this replica; try `portcullis explain flow ID` on the logs of all replicas\n".to_string(),
            ),
        },
        (None, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        (None, "/readyz") if dp.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        (None, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "waiting for the first configuration\n".to_string(),
        ),
        (None, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}
