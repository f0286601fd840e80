//! Listeners: accept TCP (and TLS), serve HTTP/1.1, h2 and h2c with upgrades, and
//! drain in-flight requests on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::client_cert::ClientCert;
use super::connections::{Connections, Held, Hold, Slot};
use super::proxy_protocol::{self, Prefixed, Refusal};
use super::tls::{Picked, TlsConfigs, openssl_cipher_name, protocol_name};
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

/// One data-plane listener, as its accept loop serves it.
pub struct Listener {
    pub name: super::ListenerName,
    /// TLS ended here (`--https`).
    pub tls: Option<Arc<TlsConfigs>>,
    /// Connections start with a PROXY protocol header (`--proxy-protocol`).
    pub proxy_protocol: bool,
    /// A Gateway's own socket: only that Gateway's routes serve it.
    pub socket: Option<SocketAddr>,
    /// TLS passes through this socket to TLSRoutes' endpoints: no HTTP is served.
    pub passthrough: bool,
}

impl Listener {
    pub fn new(dp: &DataPlane, name: super::ListenerName, tls: Option<Arc<TlsConfigs>>) -> Self {
        Self {
            name,
            tls,
            proxy_protocol: dp.config.proxy_protocol.contains(&name),
            socket: None,
            passthrough: false,
        }
    }

    /// A Gateway listener's socket (`--gateway-addresses`), counted with the flag
    /// listener of its protocol (a passthrough one with HTTPS); PROXY protocol is the
    /// flag listeners' alone.
    pub fn gateway(socket: crate::compile::GatewaySocket, tls: Arc<TlsConfigs>) -> Self {
        let (name, tls) = if socket.passthrough {
            (super::ListenerName::Https, None)
        } else if socket.tls {
            (super::ListenerName::Https, Some(tls))
        } else {
            (super::ListenerName::Http, None)
        };
        Self {
            name,
            tls,
            proxy_protocol: false,
            socket: Some(socket.addr),
            passthrough: socket.passthrough,
        }
    }

    fn connections(&self, dp: &DataPlane) -> Arc<Connections> {
        match self.name {
            super::ListenerName::Http => dp.http_connections.clone(),
            super::ListenerName::Https => dp.https_connections.clone(),
            super::ListenerName::HttpsOffloaded => dp.offloaded_connections.clone(),
        }
    }
}

/// What every connection task of a listener shares.
struct Shared {
    dp: Arc<DataPlane>,
    listener: Listener,
    conns: Arc<Connections>,
    builder: auto::Builder<TokioExecutor>,
}

/// Serves `listener` (HTTP, h2c, or HTTPS with certificates from the live snapshot)
/// until `shutdown` turns true, then drains.
pub async fn serve(
    dp: Arc<DataPlane>,
    socket: TcpListener,
    listener: Listener,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection task holds a sender; draining waits until all are dropped.
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let shared = Arc::new(Shared {
        builder: builder(&dp),
        conns: listener.connections(&dp),
        dp,
        listener,
    });
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
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
            port: local.port(),
            tls: None,
            tls_offloaded: shared.listener.name == super::ListenerName::HttpsOffloaded,
            socket: shared.listener.socket,
        };
        let (shared, alive, stop) = (shared.clone(), alive.clone(), shutdown.clone());
        if shared.listener.proxy_protocol {
            accept_proxied(shared, stream, conn, alive, stop);
            continue;
        }
        // Closed at once when refused: no TLS handshake, no HTTP, nothing remembered.
        let Ok(slot) = shared.conns.admit(peer.ip()) else {
            continue;
        };
        tokio::spawn(async move {
            serve_admitted(&shared, slot, Prefixed::new(stream, Vec::new()), conn, stop).await;
            drop(alive);
        });
    }
    drop(socket);
    drop(alive);
    if tokio::time::timeout(DRAIN_TIMEOUT, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// A connection to a `--proxy-protocol` listener: it waits apart for its header
/// (refused at once when too many do), then is admitted as the client the header
/// names and served.
fn accept_proxied(
    shared: Arc<Shared>,
    stream: TcpStream,
    conn: ConnInfo,
    alive: tokio::sync::mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
) {
    let Some(waiting) = shared.conns.wait_for_header() else {
        let name = shared.listener.name.as_str();
        shared
            .dp
            .proxy_refusals
            .record(name, conn.peer, Refusal::Busy);
        return;
    };
    tokio::spawn(async move {
        let proxied = read_proxy_header(&shared, stream, conn, stop.clone()).await;
        drop(waiting);
        if let Some((stream, conn)) = proxied
            && let Ok(slot) = shared.conns.admit(conn.peer.ip())
        {
            serve_admitted(&shared, slot, stream, conn, stop).await;
        }
        drop(alive);
    });
}

/// Reads the connection's PROXY header within the header-read timeout: the stream
/// with the bytes read past it, and the connection as the header describes it.
/// `None` (the connection is closed, the refusal counted) without a valid one.
async fn read_proxy_header(
    shared: &Shared,
    mut stream: TcpStream,
    mut conn: ConnInfo,
    mut stop: watch::Receiver<bool>,
) -> Option<(Prefixed<TcpStream>, ConnInfo)> {
    let limit = shared.dp.config.header_read_timeout;
    let read = tokio::select! {
        read = tokio::time::timeout(limit, proxy_protocol::read_header(&mut stream)) => read,
        _ = stop.wait_for(|s| *s) => return None,
    };
    let refused = match read {
        Ok(Ok((proxied, rest))) => {
            // `::ffff:203.0.113.7` is 203.0.113.7: one client, one entry in the caps.
            if let Some(source) = proxied.source {
                conn.peer = SocketAddr::new(source.ip().to_canonical(), source.port());
            }
            if let Some(destination) = proxied.destination {
                conn.port = destination.port();
            }
            return Some((Prefixed::new(stream, rest), conn));
        }
        Ok(Err(why)) => why,
        Err(_) => Refusal::Timeout,
    };
    let name = shared.listener.name.as_str();
    shared.dp.proxy_refusals.record(name, conn.peer, refused);
    None
}

/// An admitted connection: its TLS handshake, if any, then HTTP until it ends; the
/// slot goes back once a WebSocket tunnel, if any, has ended too.
async fn serve_admitted(
    shared: &Shared,
    slot: Arc<Slot>,
    stream: Prefixed<TcpStream>,
    conn: ConnInfo,
    stop: watch::Receiver<bool>,
) {
    let hold = Held::new(slot.clone(), shared.conns.clone());
    if shared.listener.passthrough {
        // Never idle: a byte stream cannot be closed gracefully between requests.
        hold.tunnel();
        // Boxed, as the TLS branch below: a connection's task is as large as its
        // largest branch, and every idle plain connection would carry that size.
        Box::pin(super::passthrough::serve(
            shared.dp.clone(),
            stream,
            &conn,
            stop,
        ))
        .await;
        drop(hold);
        return;
    }
    let watch = Watch {
        slot: &slot,
        conns: shared.conns.clone(),
        hold: hold.clone(),
        stop,
    };
    match &shared.listener.tls {
        None => {
            let dp = shared.dp.clone();
            serve_connection(dp, &shared.builder, TokioIo::new(stream), conn, watch).await
        }
        Some(configs) => Box::pin(serve_tls(shared, configs, stream, conn, watch)).await,
    }
    drop(hold);
}

/// A TLS connection: the handshake within its timeout, then its requests.
async fn serve_tls(
    shared: &Shared,
    configs: &TlsConfigs,
    stream: Prefixed<TcpStream>,
    conn: ConnInfo,
    watch: Watch<'_>,
) {
    let dp = shared.dp.clone();
    let peer = conn.peer;
    let timeout = dp.config.tls_handshake_timeout;
    let socket = shared.listener.socket;
    match tokio::time::timeout(timeout, handshake(configs, socket, stream)).await {
        Ok(Ok((tls_stream, client_auth))) => {
            let Some(conn) = with_tls_info(&dp, conn, &tls_stream, client_auth) else {
                tracing::debug!(%peer, "client certificate cannot be read");
                return;
            };
            let io = TokioIo::new(tls_stream);
            serve_connection(dp, &shared.builder, io, conn, watch).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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
    conns: Arc<Connections>,
    hold: Hold,
    stop: watch::Receiver<bool>,
}

/// The TLS handshake under the configuration the ClientHello's server name picks (on a
/// Gateway's `socket`, the socket's own): the stream, and the key of the
/// client-certificate setting it was made under.
async fn handshake(
    configs: &TlsConfigs,
    socket: Option<SocketAddr>,
    stream: Prefixed<TcpStream>,
) -> std::io::Result<(TlsStream<Prefixed<TcpStream>>, Picked)> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let picked = match socket {
        Some(addr) => configs.for_gateway_socket(addr),
        None => configs.for_server_name(start.client_hello().server_name()),
    };
    let Some((picked, config)) = picked else {
        return Err(std::io::Error::other("no TLS configuration"));
    };
    Ok((start.into_stream(config).await?, picked))
}

/// What the request path knows of the TLS session; `None` when a certificate the
/// handshake verified cannot be read for its headers (the connection is closed).
fn with_tls_info(
    dp: &DataPlane,
    mut conn: ConnInfo,
    stream: &TlsStream<Prefixed<TcpStream>>,
    picked: Picked,
) -> Option<ConnInfo> {
    let (_, session) = stream.get_ref();
    let live = dp.live.load();
    let client_cert = match session.peer_certificates() {
        Some(chain) if !chain.is_empty() => {
            Some(Arc::new(ClientCert::read(chain, picked.verifies)?))
        }
        _ => None,
    };
    let server_name = session.server_name().map(str::to_owned);
    let certs = match conn.socket {
        Some(addr) => live.snapshot.gateway_tls.get(&addr).map(|t| &t.certs),
        None => Some(&live.snapshot.certs),
    };
    let cert_source = certs
        .and_then(|c| c.find(server_name.as_deref()))
        .map(|c| c.source.clone());
    conn.tls = Some(TlsInfo {
        server_name,
        cipher: session
            .negotiated_cipher_suite()
            .map_or_else(|| "-".into(), |s| openssl_cipher_name(s.suite())),
        protocol: protocol_name(session.protocol_version()),
        cert_source,
        client_auth: picked.key,
        client_cert,
    });
    Some(conn)
}

async fn serve_connection<I>(
    dp: Arc<DataPlane>,
    builder: &auto::Builder<TokioExecutor>,
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
    let conns = watch.conns.clone();
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
