//! The benchmark's baseline: the least a hyper reverse proxy can do (no routing, no
//! header rules, no logging), to show what Portcullis's own work costs.
//! Usage: bench_passthrough LISTEN_ADDR UPSTREAM_ADDR [HEADERS_FILE]
//! HEADERS_FILE (`name: value` lines) is added to every request: with the identity
//! headers Portcullis sends, the pass-through carries the guarded route's bytes.

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18082".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:18081".into());
    let added = std::sync::Arc::new(args.next().map(|p| added_headers(&p)).unwrap_or_default());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("binding the pass-through");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, upstream, added) = (client.clone(), upstream.clone(), added.clone());
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let path = req
                    .uri()
                    .path_and_query()
                    .map_or("/".to_string(), |p| p.to_string());
                *req.uri_mut() = format!("http://{upstream}{path}")
                    .parse()
                    .expect("valid upstream URI");
                for (name, value) in added.iter() {
                    req.headers_mut().insert(name.clone(), value.clone());
                }
                client.request(req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn added_headers(path: &str) -> Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)> {
    let text = std::fs::read_to_string(path).expect("reading the headers file");
    text.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| {
            (
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                hyper::header::HeaderValue::from_str(value).expect("a header value"),
            )
        })
        .collect()
}
