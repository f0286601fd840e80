//! Heap bytes each idle keep-alive connection keeps, by allocation size: COUNT
//! connections each carry one request and then sit idle, and the live allocations
//! that appeared are listed by size (the sizes name their owners: hyper's 8 KiB read
//! and write buffers, the connection task, per-connection state). The server is
//! Portcullis's real listener and data plane, or a bare hyper server for the floor
//! hyper itself sets; the client is blocking sockets on another thread, so it adds
//! nothing to the heap.
//! Usage: bench_idle_bytes portcullis|hyper-http1|hyper-auto [COUNT]   (default 2000)

use std::alloc::{GlobalAlloc, Layout};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::auth::identity::SigningKey;
use portcullis::auth::idp::IdpClient;
use portcullis::auth::login::Authenticator;
use portcullis::auth::sealed::KeyRing;
use portcullis::compile::CompileOptions;
use portcullis::observe::access_log::{AccessLog, LogFormat};
use portcullis::proxy::server::{Listener, serve};
use portcullis::proxy::{DataPlane, ListenerName, ProxyConfig};
use portcullis::source::manifests::{add_document, parse_documents};
use portcullis::store::Objects;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Live allocations by size, in 8-byte steps up to 64 KiB; the last slot holds the
/// larger ones, whose bytes `LARGE_BYTES` keeps.
const SLOTS: usize = 8 * 1024;
static LIVE: [AtomicI64; SLOTS + 1] = [const { AtomicI64::new(0) }; SLOTS + 1];
static LARGE_BYTES: AtomicI64 = AtomicI64::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn note(size: usize, sign: i64) {
    let slot = size.div_ceil(8).min(SLOTS);
    LIVE[slot].fetch_add(sign, Ordering::Relaxed);
    if slot == SLOTS {
        LARGE_BYTES.fetch_add(sign * size as i64, Ordering::Relaxed);
    }
}

/// The binary's allocator, counting live allocations by size.
struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 1);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(layout.size(), -1);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 1);
        unsafe { INNER.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(layout.size(), -1);
        note(new_size, 1);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> Vec<i64> {
    LIVE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

fn live_bytes(counts: &[i64]) -> i64 {
    let small: i64 = counts[..SLOTS]
        .iter()
        .enumerate()
        .map(|(slot, n)| n * 8 * slot as i64)
        .sum();
    small + LARGE_BYTES.load(Ordering::Relaxed)
}

const MANIFESTS: &str = include_str!("../bench/one-route.yaml");

/// What bench_idle sends.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: bench-idle\r\n\r\n";
const BODY: &[u8] = &[b'x'; 128];

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
    // Every connection comes from 127.0.0.1: no per-client cap.
    let config = ProxyConfig {
        connection_limits: portcullis::proxy::connections::Limits {
            max: 0,
            per_client: 0,
        },
        ..ProxyConfig::default()
    };
    DataPlane::new(config, log, auth)
}

/// A backend answering every request with `BODY` on a connection of its own.
async fn backend(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut filled = 0;
            while let Ok(n) = stream.read(&mut buf[filled..]).await {
                if n == 0 {
                    return;
                }
                filled += n;
                while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 128\r\n\r\n";
                    if stream.write_all(head).await.is_err()
                        || stream.write_all(BODY).await.is_err()
                    {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
            }
        });
    }
}

async fn portcullis_server(socket: tokio::net::TcpListener) {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let text = MANIFESTS.replace(
        "BACKEND_PORT",
        &upstream.local_addr().unwrap().port().to_string(),
    );
    tokio::spawn(backend(upstream));
    let file = portcullis::diagnostics::ObjectRef::new("File", "", "bench");
    let mut objects = Objects::default();
    for doc in parse_documents(&text).expect("the manifests parse") {
        add_document(&mut objects, doc, &file);
    }
    let dp = data_plane();
    portcullis::reload::apply(&dp, &objects, &CompileOptions::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let listener = Listener::new(&dp, ListenerName::Http, None);
    serve(dp, socket, listener, shutdown).await;
    drop(stop);
}

/// A bare hyper server answering `BODY`, HTTP/1 only or through hyper-util's auto
/// builder (HTTP/1 and h2c) as Portcullis serves.
async fn hyper_server(socket: tokio::net::TcpListener, auto: bool) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(BODY))))
            });
            let io = TokioIo::new(stream);
            if auto {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection_with_upgrades(io, service).await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
    }
}

/// One request on a new connection, its whole response read; the connection is kept.
fn exchange(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream.write_all(REQUEST).expect("sending the request");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("reading the response");
        assert!(n > 0, "the server closed before answering");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
            && buf.len() >= end + 4 + BODY.len()
        {
            assert!(buf.starts_with(b"HTTP/1.1 200"), "the server answered 200");
            return stream;
        }
    }
}

/// Waits until the live heap stops changing (the server has gone idle on every
/// connection).
fn settled() -> Vec<i64> {
    let mut last = live();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = live();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "portcullis".into());
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    socket.set_nonblocking(true).unwrap();
    let server_mode = mode.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let socket = tokio::net::TcpListener::from_std(socket).unwrap();
            match server_mode.as_str() {
                "portcullis" => portcullis_server(socket).await,
                "hyper-http1" => hyper_server(socket, false).await,
                "hyper-auto" => hyper_server(socket, true).await,
                other => panic!("unknown mode {other}"),
            }
        });
    });
    // Warm up: the first connections build what every later one shares (the
    // upstream connection, the runtime's slabs).
    drop((0..50).map(|_| exchange(addr)).collect::<Vec<_>>());
    let mut open = Vec::with_capacity(count);
    let before = settled();
    for _ in 0..count {
        open.push(exchange(addr));
    }
    let after = settled();
    report(&mode, count, &before, &after);
    drop(open);
}

fn report(mode: &str, count: usize, before: &[i64], after: &[i64]) {
    let per = |bytes: i64| bytes as f64 / count as f64;
    let total = per(live_bytes(after) - live_bytes(before));
    println!("{mode}: {total:.0} heap bytes per idle connection ({count} connections)");
    println!("| allocation size (bytes) | allocations per connection | bytes per connection |");
    println!("|---|---|---|");
    let mut rows: Vec<(usize, f64)> = (0..SLOTS)
        .map(|slot| (slot * 8, per(after[slot] - before[slot])))
        .filter(|(_, n)| n.abs() >= 0.05)
        .collect();
    rows.sort_by(|a, b| (b.1 * b.0 as f64).total_cmp(&(a.1 * a.0 as f64)));
    for (size, n) in rows {
        println!("| {size} | {n:.2} | {:.0} |", n * size as f64);
    }
    let large = after[SLOTS] - before[SLOTS];
    if large != 0 {
        println!("| > 64 KiB | {:.2} | (in the total) |", per(large));
    }
}
