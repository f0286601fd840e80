//! A closed-loop HTTP/1.1 load generator for the session-rotation rung, which oha
//! cannot drive: request i carries cookie line i mod N of COOKIES_FILE, so N distinct
//! sessions rotate through the proxy. Both sides of the rung's ratio (one session, N
//! sessions) are measured with this tool. Prints one JSON object: requests per second,
//! p50 and p99 in milliseconds, and the count of each status.
//! Usage: bench_load ADDR HOST COOKIES_FILE SECONDS CONNECTIONS

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, host, cookies, secs, conns] = args.as_slice() else {
        panic!("usage: bench_load ADDR HOST COOKIES_FILE SECONDS CONNECTIONS");
    };
    let cookies: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(cookies)
            .expect("reading the cookies file")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    assert!(!cookies.is_empty(), "the cookies file has no line");
    let duration = Duration::from_secs(secs.parse().expect("SECONDS is a number"));
    let conns: usize = conns.parse().expect("CONNECTIONS is a number");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, host) = (addr.clone(), host.clone());
            let (cookies, next) = (cookies.clone(), next.clone());
            tokio::spawn(async move { connection(&addr, &host, &cookies, &next, deadline).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (l, s) = t.await.expect("a load task");
        latencies.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    let out = serde_json::json!({
        "requestsPerSec": latencies.len() as f64 / elapsed,
        "p50": pct(0.50),
        "p99": pct(0.99),
        "requests": latencies.len(),
        "sessions": cookies.len(),
        "statuses": statuses,
    });
    println!("{out}");
}

/// One keep-alive connection sending requests back to back until the deadline
/// (reconnecting if the server closes it). Returns latencies in microseconds and
/// the count of each status (`error` for a failed exchange).
async fn connection(
    addr: &str,
    host: &str,
    cookies: &[String],
    next: &AtomicUsize,
    deadline: Instant,
) -> (Vec<u32>, BTreeMap<String, u64>) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    'connect: while Instant::now() < deadline {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            *statuses.entry("error".into()).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            *statuses.entry("error".into()).or_default() += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let cookie = &cookies[next.fetch_add(1, Ordering::Relaxed) % cookies.len()];
            let req = Request::get("/")
                .header("host", host)
                .header("cookie", cookie.as_str())
                .body(Empty::<Bytes>::new())
                .expect("a valid request");
            let sent = Instant::now();
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    *statuses.entry("error".into()).or_default() += 1;
                    continue 'connect;
                }
            };
            let status = resp.status().as_u16().to_string();
            if resp.into_body().collect().await.is_err() {
                *statuses.entry("error".into()).or_default() += 1;
                continue 'connect;
            }
            latencies.push(sent.elapsed().as_micros() as u32);
            *statuses.entry(status).or_default() += 1;
        }
    }
    (latencies, statuses)
}
