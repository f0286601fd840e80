//! Listeners: accept TCP (and TLS), serve HTTP/1.1, h2 and h2c with upgrades, and
//! drain in-flight requests on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use rustls::ServerConfig;

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
    accept_loop(dp, listener, None, shutdown).await
}

/// Serves HTTPS on `listener` with certificates from the live snapshot.
pub async fn serve_https(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(dp, listener, Some(TlsAcceptor::from(config)), shutdown).await
}

async fn accept_loop(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let conn = ConnInfo {
            peer,
            local,
            tls: None,
        };
        let (dp, builder, tls) = (dp.clone(), builder.clone(), tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(dp, builder, TokioIo::new(stream), conn, watcher).await,
                Some(acceptor) => {
                    let timeout = dp.config.tls_handshake_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = with_tls_info(&dp, conn, &tls_stream);
                            serve_connection(dp, builder, TokioIo::new(tls_stream), conn, watcher)
                                .await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
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
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let peer = conn.peer;
    // Boxed: hyper keeps room for one request future per connection for as long as the
    // connection lives, so an idle keep-alive connection would hold a whole request's
    // state machine. Boxed, it holds a pointer, and the state exists only per request.
    let service = service_fn(move |req| Box::pin(handler::handle(dp.clone(), conn.clone(), req)));
    let connection = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
