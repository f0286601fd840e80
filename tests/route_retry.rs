//! HTTPRoute `retry` against a real backend that fails on purpose, with raw bytes: a
//! held body is sent again byte for byte on a listed status, up to the attempts; a
//! streamed body (chunked, or past the bound) is never sent twice; unlisted statuses
//! are not retried; failed connections are.

use crate::common;
use crate::mirror::{Recorder, svc};

use common::*;

fn post(path: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("POST {path} HTTP/1.1\r\nHost: app.test\r\n{head}Connection: close\r\n\r\n")
            .into_bytes();
    out.extend_from_slice(body);
    out
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").into_bytes()
}

async fn retries(p: &Portcullis, cause: &str) -> f64 {
    let m = p.metrics().await;
    let v = metric_value(
        &m,
        &format!("portcullis_upstream_retries_total{{cause=\"{cause}\"}}"),
    );
    if v.is_nan() { 0.0 } else { v }
}

#[tokio::test]
async fn held_bodies_are_retried_on_listed_codes_streamed_ones_never() {
    let app = Recorder::start().await;
    // A port nothing listens on: every connection to it fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new("route-retry");
    dir.write(
        "all.yaml",
        &format!(
            r#"{EDGE_GATEWAY}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /down}}}}]
    retry: {{codes: [500], attempts: 2}}
    backendRefs: [{{name: gone, port: 80}}]
  - retry: {{codes: [500, 502], attempts: 2, backoff: 20ms}}
    backendRefs: [{{name: app, port: 80}}]
{}{}"#,
            svc("app", app.addr),
            svc("gone", closed)
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);

    // Without a body: two 500s, then 200 on the last attempt.
    let r = raw_exchange(p.http, &get("/a?fail=2")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "attempt 3"));
    assert_eq!(app.count("/a?fail=2"), 3);
    // The access log lists every attempt, as ALB lists the targets it tried.
    let line = p.log_line(|l| l.contains("/a?fail=2")).await;
    assert_eq!(alb_record(&line)["target_status_code_list"], "500 500 200");
    // Past the attempts: the last answer is the client's.
    let r = raw_exchange(p.http, &get("/b?fail=5")).await;
    assert_eq!((r.status, r.body.as_str()), (500, "attempt 3"));
    assert_eq!(app.count("/b?fail=5"), 3);
    // A status the rule does not list is not retried.
    let r = raw_exchange(p.http, &get("/c?fail=1&code=503")).await;
    assert_eq!(r.status, 503);
    assert_eq!(app.count("/c?fail=1&code=503"), 1);

    // A body with a declared length within the bound is held: every attempt carries
    // the same bytes.
    let r = raw_exchange(
        p.http,
        &post("/d?fail=1", "Content-Length: 11\r\n", b"hello world"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let attempts: Vec<_> = app
        .requests()
        .into_iter()
        .filter(|s| s.path == "/d?fail=1")
        .collect();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts.iter().all(|s| s.body == b"hello world"),
        "{attempts:?}"
    );

    // Streamed bodies are sent once, whatever the answer: chunked, in any spelling of
    // the framing, and a declared length past the bound.
    let chunked: [&[u8]; 3] = [
        b"Transfer-Encoding: chunked\r\n",
        b"transfer-encoding: Chunked\r\n",
        b"Transfer-Encoding:  chunked \r\n",
    ];
    for (i, te) in chunked.into_iter().enumerate() {
        let path = format!("/e{i}?fail=1");
        let head = String::from_utf8(te.to_vec()).unwrap();
        let r = raw_exchange(p.http, &post(&path, &head, b"5\r\nhello\r\n0\r\n\r\n")).await;
        assert_eq!(r.status, 500, "{path}: {}", r.body);
        assert_eq!(app.count(&path), 1, "{path}");
        assert_eq!(
            app.requests().iter().find(|s| s.path == path).unwrap().body,
            b"hello"
        );
    }
    let big = vec![b'y'; 64 * 1024 + 1];
    let head = format!("Content-Length: {}\r\n", big.len());
    let r = raw_exchange(p.http, &post("/f?fail=1", &head, &big)).await;
    assert_eq!(r.status, 500);
    assert_eq!(app.count("/f?fail=1"), 1);
    // A body that stops short of its declared length is not sent at all.
    let mut short = std::net::TcpStream::connect(p.http).unwrap();
    use std::io::Write as _;
    short
        .write_all(&post(
            "/g?fail=1",
            "Content-Length: 100\r\n",
            b"only a little",
        ))
        .unwrap();
    short.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    use std::io::Read as _;
    let _ = short.read_to_string(&mut answer);
    assert_eq!(app.count("/g?fail=1"), 0, "{answer}");

    let by_status = retries(&p, "status").await;
    assert_eq!(by_status, 2.0 + 2.0 + 1.0);

    // No connection to the backend: tried again, then 502.
    let r = raw_exchange(p.http, &get("/down")).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(retries(&p, "connect").await, 2.0);
}
