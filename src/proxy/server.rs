//! Listeners: accept TCP (and TLS), serve HTTP/1.1, h2 and h2c with upgrades, and
//! drain in-flight requests on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use rustls::ServerConfig;

use super::connections::{Connections, Held, Hold, Slot};
use super::tls::{openssl_cipher_name, protocol_name};
use super::{ConnInfo, DataPlane, TlsInfo, handler};

/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

fn builder(dp: &DataPlane) -> auto::Builder<TokioExecutor> {
    let cfg = &dp.config;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .max_headers(cfg.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.max_header_bytes as u32)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Serves plain HTTP (and h2c) on `listener` until `shutdown` turns true.
pub async fn serve_http(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let conns = dp.http_connections.clone();
    accept_loop(dp, listener, None, conns, shutdown).await
}

/// Serves HTTPS on `listener` with certificates from the live snapshot.
pub async fn serve_https(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    let conns = dp.https_connections.clone();
    accept_loop(
        dp,
        listener,
        Some(TlsAcceptor::from(config)),
        conns,
        shutdown,
    )
    .await
}

async fn accept_loop(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection task holds a sender; draining waits until all are dropped.
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let builder = Arc::new(builder(&dp));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The client's address: the socket's peer (a PROXY protocol header's, once
        // that is read).
        let slot = match conns.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(_) => {
                // Closed at once: no TLS handshake, no HTTP, nothing remembered.
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let conn = ConnInfo {
            peer,
            local,
            tls: None,
        };
        let (dp, builder, tls) = (dp.clone(), builder.clone(), tls.clone());
        let (alive, stop) = (alive.clone(), shutdown.clone());
        let hold = Held::new(slot.clone(), conns.clone());
        tokio::spawn(async move {
            let watch = Watch {
                slot: &slot,
                hold: hold.clone(),
                stop,
            };
            match tls {
                None => serve_connection(dp, builder, TokioIo::new(stream), conn, watch).await,
                Some(acceptor) => {
                    let timeout = dp.config.tls_handshake_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = with_tls_info(&dp, conn, &tls_stream);
                            serve_connection(dp, builder, TokioIo::new(tls_stream), conn, watch)
                                .await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            // The slot goes back once a WebSocket tunnel, if any, has ended too.
            drop(hold);
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(DRAIN_TIMEOUT, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// A request in flight on a connection (so it is not idle), until dropped.
struct Busy(Arc<Slot>, Arc<Connections>);

impl Busy {
    fn new(slot: Arc<Slot>, conns: Arc<Connections>) -> Self {
        slot.begin();
        Self(slot, conns)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end(&self.1);
    }
}

/// What ends a connection early: shutdown, or the tracker making room.
struct Watch<'a> {
    slot: &'a Arc<Slot>,
    hold: Hold,
    stop: watch::Receiver<bool>,
}

fn with_tls_info(
    dp: &DataPlane,
    mut conn: ConnInfo,
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
) -> ConnInfo {
    let (_, session) = stream.get_ref();
    let server_name = session.server_name().map(str::to_owned);
    let cert_source = dp
        .live
        .load()
        .snapshot
        .certs
        .find(server_name.as_deref())
        .map(|c| c.source.clone());
    conn.tls = Some(TlsInfo {
        server_name,
        cipher: session
            .negotiated_cipher_suite()
            .map_or_else(|| "-".into(), |s| openssl_cipher_name(s.suite())),
        protocol: protocol_name(session.protocol_version()),
        cert_source,
    });
    conn
}

async fn serve_connection<I>(
    dp: Arc<DataPlane>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    conn: ConnInfo,
    watch: Watch<'_>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let peer = conn.peer;
    let slot = watch.slot.clone();
    let hold = watch.hold.clone();
    let conns = if conn.tls.is_some() {
        dp.https_connections.clone()
    } else {
        dp.http_connections.clone()
    };
    // Boxed: hyper keeps room for one request future per connection for as long as the
    // connection lives, so an idle keep-alive connection would hold a whole request's
    // state machine. Boxed, it holds a pointer, and the state exists only per request.
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let (dp, conn, slot, conns) = (dp.clone(), conn.clone(), slot.clone(), conns.clone());
        req.extensions_mut().insert(hold.clone());
        Box::pin(async move {
            let _busy = Busy::new(slot, conns);
            handler::handle(dp, conn, req).await
        })
    });
    let connection = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    let mut connection = std::pin::pin!(connection);
    let Watch { slot, mut stop, .. } = watch;
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        _ = slot.close_requested() => None,
        _ = stop.wait_for(|s| *s) => None,
    };
    // Asked to close: hyper finishes the response it is writing (HTTP/1.1) or the
    // streams open (h2, after GOAWAY), then ends the connection.
    let ended = match ended {
        Some(ended) => ended,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
