//! Opens COUNT keep-alive connections to ADDR, sends one request on each (so the
//! server has read a request and written a response on every one), then holds them
//! idle, printing `ready N` once all are open, until stdin closes.
//! Usage: bench_idle ADDR HOST COUNT

use std::io::BufRead;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, host, count] = args.as_slice() else {
        panic!("usage: bench_idle ADDR HOST COUNT");
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-idle\r\n\r\n");
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match exchange(addr, request.as_bytes()).await {
            Ok(stream) => open.push(stream),
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("bench_idle: {e}");
                }
            }
        }
    }
    println!("ready {} (failed {failed})", open.len());
    // Hold the connections until whoever started us is done measuring.
    let _ = tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines() {}).await;
    drop(open);
}

/// Connects, sends one request and reads its whole response (headers and a body of
/// the announced length), leaving the connection open.
async fn exchange(addr: &str, request: &[u8]) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                if !head.starts_with("http/1.1 200") {
                    return Err(std::io::Error::other(format!(
                        "answered {}",
                        head.lines().next().unwrap_or("")
                    )));
                }
                return Ok(stream);
            }
        }
    }
}
