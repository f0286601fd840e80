//! Connections to the pods: kept open and reused between requests, closed after
//! `--upstream-idle-timeout`, and a connection the pod closed while it lay idle is
//! never a failed request. The pod here is a raw socket server, so what it counts and
//! reads is exactly what Portcullis sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::*;

/// What the pod saw: one entry per connection, the request heads read on it and
/// whether Portcullis has closed it.
#[derive(Default)]
struct Seen {
    connections: Vec<Conn>,
}

#[derive(Default, Clone)]
struct Conn {
    heads: Vec<String>,
    closed_by_peer: bool,
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A pod giving `answer` to each request head (bodyless requests only); with
/// `close_after_each`, it closes the connection after every response without saying
/// so (no `Connection: close`), as a pod whose keep-alive timeout ran out does.
async fn pod(answer: &'static [u8], close_after_each: bool) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let index = {
                let mut s = record.lock().unwrap();
                s.connections.push(Conn::default());
                s.connections.len() - 1
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        record.lock().unwrap().connections[index].closed_by_peer = true;
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        record.lock().unwrap().connections[index].heads.push(head);
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if close_after_each {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn serve(dir: &TempDir, pod: SocketAddr, args: &[&str]) -> Portcullis {
    let yaml = format!(
        "{}{}",
        ingress_yaml("web", &[("app.example.com", "/", "svc-a")], ""),
        service_yaml("svc-a", &[pod])
    );
    dir.write("all.yaml", &yaml);
    Portcullis::start(dir.path(), args)
}

fn connections(seen: &Mutex<Seen>) -> Vec<Conn> {
    seen.lock().unwrap().connections.clone()
}

/// Requests in turn on one client connection (so on one worker of Portcullis, each
/// of which keeps its own pod connections), each answered 200.
async fn in_turn(p: &Portcullis, n: usize) {
    let c = client();
    for i in 0..n {
        let resp = c
            .get(p.url(&format!("/n/{i}?q={i}")))
            .header("host", "app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        resp.bytes().await.unwrap();
    }
}

#[tokio::test]
async fn pod_connections_are_reused_then_closed_once_idle_past_the_timeout() {
    let (addr, seen) = pod(OK, false).await;
    let dir = TempDir::new("pool-reuse");
    // The idle sweep runs a few times per `--login-abandoned-after`.
    let p = serve(
        &dir,
        addr,
        &[
            "--upstream-idle-timeout",
            "1",
            "--login-abandoned-after",
            "1",
        ],
    );
    in_turn(&p, 5).await;
    let conns = connections(&seen);
    assert_eq!(conns.len(), 1, "five requests in turn share one connection");
    // Origin form: the pod reads the path and query, never the pod's own address.
    for (i, head) in conns[0].heads.iter().enumerate() {
        let line = head.lines().next().unwrap();
        assert_eq!(line, format!("GET /n/{i}?q={i} HTTP/1.1"));
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nhost: app.example.com"),
            "{head}"
        );
    }
    eventually("the idle connection is closed by Portcullis", || async {
        connections(&seen)[0].closed_by_peer
    })
    .await;
    let resp = raw_exchange(
        p.http,
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        connections(&seen).len(),
        2,
        "a new connection after the close"
    );
}

#[tokio::test]
async fn a_connection_the_pod_closed_while_idle_fails_no_request() {
    let (addr, seen) = pod(OK, true).await;
    let dir = TempDir::new("pool-closed");
    let p = serve(&dir, addr, &[]);
    let c = client();
    for i in 0..20 {
        let resp = c
            .get(p.url(&format!("/{i}")))
            .header("host", "app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
    }
    let conns = connections(&seen);
    assert_eq!(conns.len(), 20, "a connection per request");
    assert!(conns.iter().all(|c| c.heads.len() == 1));
    eventually("twenty answers from the pod in the access log", || async {
        let log = p.access_log.lock().unwrap().join("\n");
        log.matches(" 200 200 ").count() == 20
    })
    .await;
}

/// `Expect: 100-continue` is answered by Portcullis and never reaches the pod: a pod
/// that saw it could answer before the body and leave the body on the connection, to
/// be read as the next client's request.
#[tokio::test]
async fn expect_continue_is_answered_here_and_not_forwarded() {
    let one = one_route_with("expect", &[]).await;
    for expect in ["100-continue", "100-Continue", "something-else"] {
        let mut stream = tokio::net::TcpStream::connect(one.proxy.http)
            .await
            .unwrap();
        let head = format!(
            "POST /up HTTP/1.1\r\nHost: app.example.com\r\nExpect: {expect}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        if expect.eq_ignore_ascii_case("100-continue") {
            let mut interim = [0u8; 25];
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                stream.read_exact(&mut interim),
            )
            .await
            .expect("an interim answer in time")
            .unwrap();
            assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        stream.write_all(b"hello").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut buf),
        )
        .await;
        let resp = parse_response(&buf);
        assert_eq!(resp.status, 200, "{expect}: {}", resp.head);
        let seen = resp.backend().expect("the backend answered");
        assert_eq!(seen["bodyBytes"], 5, "{expect}");
        let names: Vec<&str> = seen["headerList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"expect"), "{expect}: {names:?}");
    }
}

/// A response that ends in trailers, or has no body at all, frees its connection as
/// one with a body does.
#[tokio::test]
async fn connections_are_reused_after_trailers_and_empty_answers() {
    let answers: [&'static [u8]; 3] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ];
    for answer in answers {
        let (addr, seen) = pod(answer, false).await;
        let dir = TempDir::new("pool-ends");
        let p = serve(&dir, addr, &[]);
        in_turn(&p, 3).await;
        assert_eq!(
            connections(&seen).len(),
            1,
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
}
