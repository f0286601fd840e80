//! The demo's backend: a page showing what it received, the identity headers first
//! and `x-amzn-oidc-data` decoded, the way an application behind ALB would see them.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use http::{Response, StatusCode};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use super::provider::{escape, html};
use super::{Received, serve};
use crate::proxy::Body;

pub fn start(listener: TcpListener) {
    let handler = Arc::new(|req: Received| async move { page(&req) });
    tokio::spawn(serve(listener, handler));
}

fn page(req: &Received) -> Response<Body> {
    let headers: Map<String, Value> = req
        .parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    let identity = headers.get("x-amzn-oidc-identity").and_then(Value::as_str);
    let data = headers
        .get("x-amzn-oidc-data")
        .and_then(Value::as_str)
        .map(decode_data);
    let path = req.parts.uri.path();
    let summary = match identity {
        Some(user) => format!(
            "<p>Logged in as <strong>{}</strong>. <a href=\"/oauth2/logout\">Log out</a></p>",
            escape(user)
        ),
        None if path.starts_with("/auth") => {
            "<p>No identity headers: login is not guarding this path.</p>".into()
        }
        None => {
            "<p>This path is not guarded. Open <a href=\"/auth\">/auth</a> to log in.</p>".into()
        }
    };
    let pretty = |v: &Value| escape(&serde_json::to_string_pretty(v).unwrap_or_default());
    let body = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Echo: {path}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto}}pre{{background:#f4f4f4;padding:1rem;overflow:auto}}</style></head>
<body><h1>Echo backend</h1>{summary}
<h2>x-amzn-oidc-data, decoded</h2><pre id="data">{data}</pre>
<h2>Request headers</h2><pre id="headers">{headers}</pre></body></html>"#,
        path = escape(path),
        data = data.as_ref().map_or("(none)".into(), pretty),
        headers = pretty(&Value::Object(headers.clone())),
    );
    html(StatusCode::OK, body)
}

/// The JWS header and payload of `x-amzn-oidc-data` (padded base64url, as ALB's).
fn decode_data(token: &str) -> Value {
    let part = |i: usize| -> Value {
        token
            .split('.')
            .nth(i)
            .and_then(|p| URL_SAFE.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    serde_json::json!({ "header": part(0), "payload": part(1) })
}
