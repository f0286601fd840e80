//! The data plane against real servers: `portcullis serve` as a process, real backends
//! on loopback, real HTTP/1.1, h2c, WebSocket and TLS clients.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn backend_name(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.unwrap();
    v["backend"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn routes_by_host_and_path_and_answers_404_elsewhere() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = TempDir::new("routes");
    let rules = [
        ("app.example.com", "/", "svc-a"),
        ("app.example.com", "/b", "svc-b"),
        ("*.example.com", "/", "svc-b"),
    ];
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}",
            ingress_yaml("web", &rules, ""),
            service_yaml("svc-a", &[a.addr]),
            service_yaml("svc-b", &[b.addr])
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let c = client();
    let get =
        |host: &'static str, path: &'static str| c.get(p.url(path)).header("host", host).send();
    assert_eq!(
        backend_name(get("app.example.com", "/").await.unwrap()).await,
        "a"
    );
    assert_eq!(
        backend_name(get("app.example.com", "/b/c").await.unwrap()).await,
        "b"
    );
    assert_eq!(
        backend_name(get("app.example.com", "/bc").await.unwrap()).await,
        "a"
    );
    assert_eq!(
        backend_name(get("x.example.com", "/").await.unwrap()).await,
        "b"
    );
    let missing = get("other.org", "/").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "NoMatchingRoute");
    assert!(body["traceId"].as_str().unwrap().starts_with("1-"));
}

#[tokio::test]
async fn request_headers_are_cleaned_and_traced() {
    let OneRoute {
        backend: _a,
        manifests: _dir,
        proxy: p,
    } = one_route("headers").await;
    let resp = client()
        .get(p.url("/x?q=1"))
        .header("host", "app.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("x-amzn-oidc-identity", "admin")
        .header("X-Amzn-Oidc-Data", "forged")
        .header("x_amzn_oidc_accesstoken", "forged")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = resp.json().await.unwrap();
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/x?q=1");
    assert_eq!(h["host"], "app.example.com");
    for forged in [
        "x-amzn-oidc-identity",
        "x-amzn-oidc-data",
        "x_amzn_oidc_accesstoken",
        "x-hop",
    ] {
        assert!(h.get(forged).is_none(), "{forged} reached the backend: {h}");
    }
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], p.http.port().to_string());
    let trace = h["x-amzn-trace-id"].as_str().unwrap().to_owned();
    assert!(trace.starts_with("Root=1-"), "{trace}");
    let line = p.log_line(|l| l.contains("/x?q=1")).await;
    assert_eq!(
        alb_record(&line)["trace_id"],
        trace,
        "the log carries the id the backend saw"
    );
}

#[tokio::test]
async fn access_log_fields_are_where_alb_puts_them() {
    let a = Backend::start("a").await;
    let dir = TempDir::new("log");
    let rules = [
        ("app.example.com", "/", "svc-a"),
        ("app.example.com", "/down", "svc-none"),
    ];
    dir.write(
        "all.yaml",
        &format!(
            "{}{}",
            ingress_yaml("web", &rules, ""),
            service_yaml("svc-a", &[a.addr])
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let c = client();
    c.post(p.url("/form"))
        .header("host", "app.example.com")
        .header("user-agent", "tester \"quoted\"")
        .body("0123456789")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let line = p.log_line(|l| l.contains("/form")).await;
    let r = alb_record(&line);
    assert_eq!(r["type"], "http");
    assert!(
        r["time"].ends_with('Z') && r["time"].len() == 27,
        "{}",
        r["time"]
    );
    assert_eq!(r["elb"], "portcullis");
    assert!(r["client:port"].starts_with("127.0.0.1:"));
    assert_eq!(r["target:port"], a.addr.to_string());
    for t in [
        "request_processing_time",
        "target_processing_time",
        "response_processing_time",
    ] {
        let v: f64 = r[t].parse().unwrap();
        assert!((0.0..5.0).contains(&v), "{t}={v}");
    }
    assert_eq!(r["elb_status_code"], "200");
    assert_eq!(r["target_status_code"], "200");
    assert!(r["received_bytes"].parse::<u64>().unwrap() >= 10);
    assert!(r["sent_bytes"].parse::<u64>().unwrap() > 50);
    assert_eq!(
        r["request"],
        format!(
            "POST http://app.example.com:{}/form HTTP/1.1",
            p.http.port()
        )
    );
    assert_eq!(r["user_agent"], "tester \"quoted\"");
    assert_eq!(
        (r["ssl_cipher"].as_str(), r["ssl_protocol"].as_str()),
        ("-", "-")
    );
    assert_eq!(r["target_group_arn"], "apps/svc-a:80");
    assert_eq!(
        r["matched_rule_priority"], "2",
        "/down is longer, so / is the second rule"
    );
    assert_eq!(r["actions_executed"], "forward");
    assert_eq!(
        (r["redirect_url"].as_str(), r["error_reason"].as_str()),
        ("-", "-")
    );
    assert_eq!(r["target:port_list"], a.addr.to_string());
    assert_eq!(r["target_status_code_list"], "200");

    let down = c
        .get(p.url("/down"))
        .header("host", "app.example.com")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 503);
    let page = down.text().await.unwrap();
    let line = p.log_line(|l| l.contains("/down")).await;
    let r = alb_record(&line);
    assert_eq!(r["portcullis_reason"], "BackendUnavailable");
    assert_eq!(r["error_reason"], "-", "not one of ALB's codes");
    assert_eq!(r["target:port"], "-");
    assert_eq!(r["request_processing_time"], "-1");
    assert_eq!(r["actions_executed"], "fixed-response");
    let root = r["trace_id"].trim_start_matches("Root=").to_owned();
    assert!(
        page.contains(&root),
        "the error page shows the trace id the log has"
    );

    let metrics = p.metrics().await;
    assert!(metrics.contains(r#"portcullis_requests_total{ingress="apps/web",route="app.example.com/",status_class="2xx"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"portcullis_requests_total{ingress="apps/web",route="app.example.com/down",status_class="5xx"} 1"#));
}

/// Writes `pieces` one after another, each given time to arrive on its own, as a slow
/// client's segments would.
async fn write_slowly(stream: &mut tokio::net::TcpStream, pieces: &[&[u8]]) {
    stream.set_nodelay(true).unwrap();
    for piece in pieces {
        // The proxy may refuse and close before it has read everything.
        if stream.write_all(piece).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A plain connection's protocol is told from its first bytes however they arrive: an
/// HTTP/1 request a few bytes at a time (its first byte alone already says HTTP/1), the
/// h2 preface cut at every place a reader could stop, an HTTP/1 request that starts
/// like the preface; a connection that sends nothing, or only part of the preface, is
/// closed after the header-read timeout without reaching the backend.
#[tokio::test]
async fn a_connections_protocol_is_told_from_its_first_bytes_however_they_arrive() {
    use common::h2::*;
    let OneRoute {
        backend: _a,
        manifests: _dir,
        proxy: p,
    } = one_route_with("first-bytes", &["--header-read-timeout", "1"]).await;

    let request = b"GET /bytewise HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n";
    let mut tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
    write_slowly(&mut tcp, &[&request[..1], &request[1..5], &request[5..]]).await;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = parse_response(&answer);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains(r#""path":"/bytewise""#),
        "{}",
        answer.body
    );

    // `PRI * HTTP/1.1` starts like the preface and is HTTP/1 from its ninth byte.
    let pri = b"PRI * HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
    let mut tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
    write_slowly(&mut tcp, &[&pri[..3], &pri[3..]]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let answer = parse_response(&answer);
    assert!((400..500).contains(&answer.status), "{}", answer.head);

    for cut in [1, 3, 9, 16, 23] {
        let path = format!("/preface-cut-at-{cut}");
        let fields: &[(&[u8], &[u8])] = &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"app.example.com"),
            (b":path", path.as_bytes()),
        ];
        let mut rest = PREFACE[cut..].to_vec();
        rest.extend(frame(SETTINGS, 0, 0, &[]));
        rest.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &hpack(fields)));
        let mut tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
        write_slowly(&mut tcp, &[&PREFACE[..cut], &rest]).await;
        let frames = tokio::time::timeout(Duration::from_secs(10), frames_of_stream_1(&mut tcp))
            .await
            .expect("the proxy answers the stream");
        assert_eq!(
            frames.first().map(|f| f.0),
            Some(HEADERS),
            "cut at {cut}: {frames:?}"
        );
        let line = p
            .log_line(|l| l.contains(&format!("{path} HTTP/2.0")))
            .await;
        let r = alb_record(&line);
        assert_eq!(
            (r["type"].as_str(), r["elb_status_code"].as_str()),
            ("h2", "200"),
            "{line}"
        );
    }

    for (what, sent) in [
        ("nothing", &b""[..]),
        ("part of the preface", &PREFACE[..10]),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "{what}: {read:?} {rest:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{what}: closed early"
        );
    }
    let metrics = p.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_requests_total{ingress="apps/web",route="app.example.com/",status_class="2xx"} 6"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn h2c_and_websocket_pass_through() {
    let OneRoute {
        backend: _a,
        manifests: _dir,
        proxy: p,
    } = one_route("proto").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("app.example.com", p.http)
        .build()
        .unwrap();
    let resp = h2
        .get(format!("http://app.example.com:{}/h2", p.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(backend_name(resp).await, "a");
    let line = p.log_line(|l| l.contains("/h2 HTTP/2.0")).await;
    assert_eq!(alb_record(&line)["type"], "h2");

    let mut stream = tokio::net::TcpStream::connect(p.http).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    let line = p.log_line(|l| l.contains("/ws HTTP/1.1")).await;
    let r = alb_record(&line);
    assert_eq!(
        (r["type"].as_str(), r["elb_status_code"].as_str()),
        ("ws", "101")
    );
    // The tunnel still counts against the connection cap until it ends.
    drop(h2);
    wait_open(&p, 1.0).await;
    drop(stream);
    wait_open(&p, 0.0).await;
}

/// A Service with two endpoints on one port: a backend on 127.0.0.1 and nothing on
/// 127.0.0.3.
async fn one_live_one_dead(dir: &TempDir) -> Backend {
    let b = Backend::start("b").await;
    let addrs = [
        b.addr,
        std::net::SocketAddr::new("127.0.0.3".parse().unwrap(), b.addr.port()),
    ];
    dir.write(
        "all.yaml",
        &format!(
            "{}{}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &addrs)
        ),
    );
    b
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_and_bodyless_requests_retry() {
    let dir = TempDir::new("retry");
    let _b = one_live_one_dead(&dir).await;
    let p = Portcullis::start(dir.path(), &[]);
    let c = client();
    for _ in 0..6 {
        let resp = c
            .get(p.url("/"))
            .header("host", "app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let line = p
        .log_line(|l| alb_fields(l).get(25).is_some_and(|t| t.contains(' ')))
        .await;
    let r = alb_record(&line);
    assert_eq!(
        r["target_status_code_list"], "- 200",
        "first try refused, retry answered: {line}"
    );
}

#[tokio::test]
async fn changing_manifests_switches_routes_with_no_failed_request_under_load() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = TempDir::new("reload");
    let services = format!(
        "{}{}",
        service_yaml("svc-a", &[a.addr]),
        service_yaml("svc-b", &[b.addr])
    );
    dir.write("services.yaml", &services);
    dir.write(
        "ingress.yaml",
        &ingress_yaml("web", &[("app.example.com", "/", "svc-a")], ""),
    );
    let p = Arc::new(Portcullis::start(dir.path(), &[]));
    let (ok, failed, saw_b) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (p, ok, failed, saw_b) = (p.clone(), ok.clone(), failed.clone(), saw_b.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < stop_at {
                match c
                    .get(p.url("/"))
                    .header("host", "app.example.com")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if backend_name(r).await == "b" {
                            saw_b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    dir.write(
        "ingress.yaml",
        &ingress_yaml("web", &[("app.example.com", "/", "svc-b")], ""),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    dir.write(
        "ingress.yaml",
        &ingress_yaml(
            "web",
            &[
                ("app.example.com", "/", "svc-b"),
                ("app.example.com", "/new", "svc-a"),
            ],
            "",
        ),
    );
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed, saw_b) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        saw_b.load(Ordering::Relaxed),
    );
    println!("reload under load: {ok} ok, {failed} failed, {saw_b} served by the new backend");
    assert_eq!(failed, 0);
    assert!(saw_b > 0 && ok > saw_b, "traffic moved from a to b");
    let resp = client()
        .get(p.url("/new"))
        .header("host", "app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(backend_name(resp).await, "a");
}

#[tokio::test]
async fn a_broken_authrule_fails_its_routes_closed_and_leaves_others_alone() {
    let a = Backend::start("a").await;
    let dir = TempDir::new("broken");
    let rule = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: guarded}]
  oidc: {issuer: "https://idp.example.com", clientId: app, clientSecretRef: {name: missing}}
"#;
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}{rule}",
            ingress_yaml("guarded", &[("secure.example.com", "/", "svc-a")], ""),
            ingress_yaml("open", &[("open.example.com", "/", "svc-a")], ""),
            service_yaml("svc-a", &[a.addr])
        ),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let c = client();
    let guarded = c
        .get(p.url("/"))
        .header("host", "secure.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(guarded.status(), 500);
    let body: serde_json::Value = guarded.json().await.unwrap();
    assert_eq!(body["error"], "AuthRuleInvalid");
    let open = c
        .get(p.url("/"))
        .header("host", "open.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
}

#[test]
fn check_names_the_object_the_field_and_the_fix() {
    let dir = TempDir::new("check");
    dir.write(
        "bad.yaml",
        r#"
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc: {issuer: "https://idp.example.com", clientId: app, clientSecretRef: {name: idp-client}}
---
apiVersion: v1
kind: Secret
metadata: {name: idp-client, namespace: apps}
stringData: {secret: x}
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-f"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("error: AuthRule apps/sso spec.oidc.clientSecretRef.key: Secret apps/idp-client has no key client-secret"), "{text}");
    assert!(
        text.contains("fix: add key client-secret to Secret apps/idp-client"),
        "{text}"
    );
    assert!(
        text.contains("error: AuthRule apps/sso spec.targetRefs[0]: Ingress apps/web not found"),
        "{text}"
    );

    let good = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "check",
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/basic.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let OneRoute {
        backend: _a,
        manifests: _dir,
        proxy: mut p,
    } = one_route("drain").await;
    let url = p.url("/slow");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .header("host", "app.example.com")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        client()
            .get(p.url("/"))
            .header("host", "app.example.com")
            .send()
            .await
            .is_err(),
        "no new connections after SIGTERM"
    );
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the request in flight completes"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "portcullis did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut buf = vec![0u8; 64];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let OneRoute {
        backend: _a,
        manifests: _dir,
        proxy: p,
    } = one_route("limits").await;
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let status = raw_status(
        p.http,
        format!("GET / HTTP/1.1\r\nHost: app.example.com\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        status.starts_with("HTTP/1.1 431"),
        "150 header fields: {status:?}"
    );
    let huge = "y".repeat(100 * 1024);
    let status = raw_status(
        p.http,
        format!("GET / HTTP/1.1\r\nHost: app.example.com\r\nx-big: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        status.starts_with("HTTP/1.1 431") || status.is_empty(),
        "100 KiB header: {status:?}"
    );
    // However the bytes arrive: a read that lands the rest of an oversized head at
    // once must not carry it past the limit (64 KiB by default).
    let head = format!("GET / HTTP/1.1\r\nHost: app.example.com\r\nx-big: {huge}\r\n\r\n");
    for cut in [1, 8 * 1024, 60 * 1024, 64 * 1024 - 10] {
        let mut tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
        write_slowly(
            &mut tcp,
            &[&head.as_bytes()[..cut], &head.as_bytes()[cut..]],
        )
        .await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        let status = parse_response(&answer).status;
        assert!(status == 431 || answer.is_empty(), "cut at {cut}: {status}");
    }
    let under = "y".repeat(60 * 1024);
    let status = raw_status(
        p.http,
        format!(
            "GET / HTTP/1.1\r\nHost: app.example.com\r\nx-big: {under}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "60 KiB header: {status:?}"
    );
    let ok = raw_status(
        p.http,
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
}

/// A failing endpoint stays skipped when a new snapshot comes for an unrelated reason
/// (a Secret changed): requests with a body, which are never retried, keep away from it.
#[tokio::test]
async fn a_failing_endpoint_stays_marked_across_an_unrelated_reload() {
    let dir = TempDir::new("marks");
    let _b = one_live_one_dead(&dir).await;
    let p = Portcullis::start(dir.path(), &[]);
    let c = client();
    let get = || c.get(p.url("/")).header("host", "app.example.com").send();
    // Two bodiless requests: one of them meets the dead endpoint (and retries).
    for _ in 0..2 {
        assert_eq!(get().await.unwrap().status(), 200);
    }
    dir.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: unrelated, namespace: apps}\nstringData: {k: v}\n",
    );
    eventually("the unrelated Secret is compiled in", || async {
        let m = p.metrics().await;
        m.contains(r#"portcullis_config_reloads_total{result="clean"} 2"#)
    })
    .await;
    for i in 0..6 {
        let resp = c
            .post(p.url("/"))
            .header("host", "app.example.com")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "request {i} with a body met the dead endpoint"
        );
    }
}

/// Reads one HTTP/1.1 response (Content-Length or chunked) from a kept-alive stream.
async fn read_one_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let lower = head.to_ascii_lowercase();
            let length = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match length {
                Some(n) if body.len() >= n => return text,
                None if body.ends_with("0\r\n\r\n") => return text,
                _ => {}
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before the response ended: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server closed `stream` (EOF or reset) within a few seconds, and what it
/// sent before.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    (false, got)
}

const OPEN_HTTP: &str = "portcullis_connections_open{listener=\"http\"}";

async fn wait_open(proxy: &Portcullis, n: f64) {
    eventually(&format!("{n} connections open"), || async {
        metric_value(&proxy.metrics().await, OPEN_HTTP) == n
    })
    .await;
}

/// `--max-connections 4`: as the cap is reached the idle keep-alive connection is
/// closed to make room; once every connection is busy, the extra one is closed at
/// once, counted and logged.
#[tokio::test]
async fn the_connection_cap_closes_idle_keep_alive_first_then_refuses() {
    let OneRoute {
        backend: _a,
        manifests: _dir,
        proxy,
    } = one_route_with(
        "conn-cap",
        &[
            "--max-connections",
            "4",
            "--max-connections-per-client",
            "0",
        ],
    )
    .await;
    let addr = proxy.http;
    let close = b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n";
    eventually("the route is served", || async {
        raw_exchange(addr, close).await.status == 200
    })
    .await;
    wait_open(&proxy, 0.0).await;

    // A: one request, then idle on keep-alive.
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    a.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await
        .unwrap();
    assert!(read_one_response(&mut a).await.starts_with("HTTP/1.1 200"));
    // B, C, D: open, mid-request (no request line yet).
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    wait_open(&proxy, 4.0).await;
    // E, the fifth: A makes room.
    let e = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (closed, _) = closed_by_server(&mut a).await;
    assert!(closed, "the idle keep-alive connection was closed first");
    wait_open(&proxy, 4.0).await;
    // F: nothing is idle: refused, closed without a byte.
    let mut f = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = f
        .write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await;
    let (closed, sent) = closed_by_server(&mut f).await;
    assert!(
        closed && sent.is_empty(),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "portcullis_connections_refused_total{listener=\"http\",reason=\"max_connections\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "portcullis_connections_closed_idle_total{listener=\"http\"}"
        ),
        1.0
    );
    let log = proxy.diagnostics.lock().unwrap().join("\n");
    assert!(log.contains("a connection cap was reached"), "{log}");
    // The others still work.
    busy.push(e);
    busy[3]
        .write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_one_response(&mut busy[3])
            .await
            .starts_with("HTTP/1.1 200")
    );
    busy[0]
        .write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_one_response(&mut busy[0])
            .await
            .starts_with("HTTP/1.1 200")
    );
}
