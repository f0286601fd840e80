//! The benchmark's backend: answers every request with a fixed body over HTTP/1.1.
//! Usage: bench_backend ADDR [BODY_BYTES]
//! With `BENCH_CAPTURE_HEADERS=FILE` it writes the `x-amzn-oidc-*` headers of the
//! first request that carries them to FILE (`name: value` lines), so a bare
//! pass-through can be made to send the same bytes as Portcullis's guarded route.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18081".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(128);
    let body = Bytes::from(vec![b'x'; size]);
    let capture = std::env::var_os("BENCH_CAPTURE_HEADERS").map(std::path::PathBuf::from);
    let captured = Arc::new(AtomicBool::new(capture.is_none()));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("binding the backend");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, capture, captured) = (body.clone(), capture.clone(), captured.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                if !captured.load(Ordering::Relaxed)
                    && req.headers().contains_key("x-amzn-oidc-data")
                    && !captured.swap(true, Ordering::Relaxed)
                    && let Some(path) = &capture
                {
                    write_identity_headers(path, req.headers());
                }
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The request's `x-amzn-oidc-*` headers, written whole before the file appears.
fn write_identity_headers(path: &std::path::Path, headers: &hyper::HeaderMap) {
    let mut text = String::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-amzn-oidc-") {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or_default()));
        }
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).expect("writing the captured headers");
    std::fs::rename(&partial, path).expect("moving the captured headers into place");
}
