//! What each stage of an unguarded request costs: every stage function of the request
//! path run in a loop on one request's inputs (time and heap allocations per call),
//! then whole requests through the real listener, data plane and upstream pool, on
//! one keep-alive connection to a backend that answers from a fixed buffer (so the
//! allocations counted per request are the proxy's).
//! Usage: bench_stages [ITERATIONS]   (default 200000; whole requests: a tenth of it)

use std::alloc::{GlobalAlloc, Layout};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use portcullis::auth::identity::SigningKey;
use portcullis::auth::idp::IdpClient;
use portcullis::auth::login::Authenticator;
use portcullis::auth::sealed::KeyRing;
use portcullis::compile::{CompileOptions, RouteQuery, compile};
use portcullis::observe::access_log::{AccessLog, AccessRecord, LogFormat, timestamp};
use portcullis::observe::metrics::Metrics;
use portcullis::observe::trace::TraceId;
use portcullis::proxy::canonical::{self, PathRules};
use portcullis::proxy::headers::{
    ConnValues, client_ip, forwarded_https, remove_named, set_forwarded,
};
use portcullis::proxy::server::{Listener, serve};
use portcullis::proxy::{DataPlane, ListenerName, ProxyConfig};
use portcullis::source::manifests::{add_document, parse_documents};
use portcullis::store::Objects;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary's allocator, counting the calls that allocate.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { INNER.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MANIFESTS: &str = include_str!("../bench/one-route.yaml");

/// What oha sends.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: bench.local\r\nuser-agent: oha/1.4.5\r\naccept: */*\r\naccept-encoding: gzip, br, zstd, deflate\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 128\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

struct Row {
    stage: &'static str,
    ns: f64,
    allocations: f64,
}

/// Runs `f` `n` times: nanoseconds and allocations per call.
fn measure(stage: &'static str, n: u64, mut f: impl FnMut()) -> Row {
    for _ in 0..n / 10 {
        f();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let elapsed = start.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    Row {
        stage,
        ns: elapsed.as_nanos() as f64 / n as f64,
        allocations: allocations as f64 / n as f64,
    }
}

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("bench.local"));
    headers.insert("user-agent", HeaderValue::from_static("oha/1.4.5"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    headers.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, br, zstd, deflate"),
    );
    headers
}

fn objects(backend: SocketAddr) -> Objects {
    let text = MANIFESTS.replace("BACKEND_PORT", &backend.port().to_string());
    let file = portcullis::diagnostics::ObjectRef::new("File", "", "bench");
    let mut objects = Objects::default();
    for doc in parse_documents(&text).expect("the manifests parse") {
        add_document(&mut objects, doc, &file);
    }
    objects
}

fn stages(n: u64) -> Vec<Row> {
    let config = ProxyConfig::default();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let uri: Uri = "/".parse().unwrap();
    let headers = request_headers();
    let compiled = compile(&objects(peer), &CompileOptions::default());
    let routes = &compiled.snapshot.routes;
    let route = routes.find("bench.local", "/").expect("the route").clone();
    let metrics = Metrics::new();
    let route_metrics = metrics.route("default/bench", &route.label());
    let now = jiff::Timestamp::now();
    let mut record = AccessRecord::new("http", "portcullis", peer, timestamp(now));
    record.request = "GET http://bench.local:80/ HTTP/1.1".into();
    record.user_agent = "oha/1.4.5".into();
    record.trace_id = TraceId::for_request(&headers, 0).header;
    let mut rows = vec![
        measure("trace id (a fresh Root=)", n, || {
            std::hint::black_box(TraceId::for_request(&headers, 1_765_000_000));
        }),
        measure("access record and its timestamp", n, || {
            let now = jiff::Timestamp::now();
            std::hint::black_box(AccessRecord::new(
                "http",
                "portcullis",
                peer,
                timestamp(now),
            ));
        }),
    ];
    let rules = PathRules::default();
    rows.push(measure("canonicalise (authority, path, client)", n, || {
        let https = forwarded_https(&headers, peer, &config.trusted_proxies).unwrap_or(false);
        let authority = canonical::authority(&uri, &headers, https).unwrap();
        let path = canonical::canonical_path(uri.path(), &rules).unwrap();
        let client = client_ip(&headers, peer, &config.trusted_proxies);
        let key = routes.match_key(&path).into_owned();
        std::hint::black_box((authority, path, client, key));
    }));
    let mut clean = headers.clone();
    rows.push(measure("clean arriving headers", n, || {
        canonical::clean_arrival(
            &mut clean,
            &config.dropped_headers,
            config.underscores_in_headers,
        );
    }));
    rows.push(measure("route (host, then path)", n, || {
        let query = RouteQuery {
            host: "bench.local",
            path: "/",
            method: &Method::GET,
            headers: &headers,
            query: None,
            tls: false,
            https: false,
            client: Some(peer.ip()),
            socket: None,
        };
        std::hint::black_box(routes.find_for(&query).unwrap());
    }));
    let mut guarded = headers.clone();
    rows.push(measure("guard (none here) and claim names", n, || {
        std::hint::black_box(route.guard_for("/"));
        remove_named(&mut guarded, route.claim_header_names());
    }));
    let authority = canonical::authority(&uri, &headers, false).unwrap();
    let copy = measure("(a copy of the request headers)", n, || {
        std::hint::black_box(headers.clone());
    });
    let trace_header = record.trace_id.clone();
    // Rendered once per connection.
    let conn_values = ConnValues::new(peer, 80);
    let mut edit = measure("header work (host, forwarded, trace)", n, || {
        let mut h = headers.clone();
        canonical::set_host(&mut h, &authority);
        set_forwarded(
            &mut h,
            &conn_values,
            false,
            "bench.local",
            &config.trusted_proxies,
        );
        if let Ok(v) = trace_header.parse::<HeaderValue>() {
            h.insert(HeaderName::from_static("x-amzn-trace-id"), v);
        }
        std::hint::black_box(h);
    });
    edit.ns -= copy.ns;
    edit.allocations -= copy.allocations;
    rows.push(edit);
    rows.push(measure("access-log line (ALB format)", n, || {
        std::hint::black_box(record.alb_line());
    }));
    rows.push(measure("metrics (count and latency)", n, || {
        route_metrics.observe(200, 0.000_4);
    }));
    rows
}

fn data_plane() -> Arc<DataPlane> {
    let idp = IdpClient::new(Duration::from_secs(5)).expect("an HTTP client");
    let ring = KeyRing::new(&[vec![7; 32]]).expect("a 32-byte key");
    let key = SigningKey::generate().expect("a signing key");
    let auth = Authenticator::new(
        idp,
        ring,
        key,
        "bench".into(),
        portcullis::auth::shared::SharedState::in_process(),
    );
    let log = AccessLog::start(LogFormat::Alb, Box::new(std::io::sink()));
    DataPlane::new(ProxyConfig::default(), log, auth)
}

/// Answers every request on every connection with `RESPONSE`, reading into one
/// buffer per connection.
async fn backend(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut filled = 0;
            loop {
                let Ok(n) = stream.read(&mut buf[filled..]).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                filled += n;
                while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    if stream.write_all(RESPONSE).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
            }
        });
    }
}

/// Whole requests on one keep-alive connection: nanoseconds and allocations each.
async fn whole_requests(n: u64) -> Row {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let objects = objects(upstream.local_addr().unwrap());
    tokio::spawn(backend(upstream));
    let dp = data_plane();
    portcullis::reload::apply(&dp, &objects, &CompileOptions::default());
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let listener = Listener::new(&dp, ListenerName::Http, None);
    tokio::spawn(serve(dp, socket, listener, shutdown));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut one = async || {
        client.write_all(REQUEST).await.unwrap();
        let mut filled = 0;
        loop {
            filled += client.read(&mut buf[filled..]).await.unwrap();
            if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n")
                && filled >= end + 4 + 128
            {
                assert!(buf.starts_with(b"HTTP/1.1 200"), "the proxy answered 200");
                return;
            }
        }
    };
    for _ in 0..n / 10 {
        one().await;
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..n {
        one().await;
    }
    let elapsed = start.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    Row {
        stage: "whole request, client to backend and back (one thread)",
        ns: elapsed.as_nanos() as f64 / n as f64,
        allocations: allocations as f64 / n as f64,
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut rows = stages(n);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rows.push(runtime.block_on(whole_requests((n / 10).max(1000))));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| stage | ns per call | allocations per call |");
    println!("|---|---|---|");
    for r in rows {
        println!("| {} | {:.0} | {:.1} |", r.stage, r.ns, r.allocations);
    }
}
