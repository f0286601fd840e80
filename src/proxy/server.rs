//! Listeners: accept TCP (and TLS), serve HTTP/1.1, h2 and h2c with upgrades, and
//! drain in-flight requests on shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
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

/// hyper's connection builders, one per protocol. Portcullis tells a connection's
/// protocol itself (from ALPN, else from its first bytes) so that hyper's HTTP/1 read
/// buffer stays at its first 8 KiB: hyper-util's builder that tells them apart hands
/// the bytes it read back as a short first read, after which the buffer doubles and
/// keeps that size for the connection's life.
struct Builders {
    http1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(dp: &DataPlane) -> Self {
        let cfg = &dp.config;
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes.max(8192))
            // The read buffer's cap is checked only while a head is incomplete: one
            // read that lands the rest of an oversized head would pass it. This is
            // checked on the parsed head, however the bytes arrived.
            .max_header_size(cfg.max_header_bytes)
            .max_headers(cfg.max_headers);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(cfg.max_header_bytes as u32)
            .max_concurrent_streams(cfg.max_concurrent_streams)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        Self { http1, h2 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    H2,
}

/// What every h2 connection with prior knowledge starts with (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's protocol, told from its first bytes: h2 when they are the preface,
/// HTTP/1 as soon as they cannot begin it. `None` while they are only a beginning of
/// the preface (or nothing).
fn protocol_from(start: &[u8]) -> Option<Protocol> {
    let n = start.len().min(H2_PREFACE.len());
    if n == 0 {
        None
    } else if start[..n] != H2_PREFACE[..n] {
        Some(Protocol::Http1)
    } else {
        (n == H2_PREFACE.len()).then_some(Protocol::H2)
    }
}

/// A TLS connection's protocol, from what ALPN agreed; `None` without ALPN.
fn protocol_from_alpn(alpn: Option<&[u8]>) -> Option<Protocol> {
    match alpn? {
        b"h2" => Some(Protocol::H2),
        b"http/1.1" => Some(Protocol::Http1),
        _ => None,
    }
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
    builders: Builders,
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
        builders: Builders::new(&dp),
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
            forwarded: Default::default(),
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
    let mut watch = Watch {
        slot: &slot,
        conns: shared.conns.clone(),
        hold: hold.clone(),
        stop,
    };
    match &shared.listener.tls {
        None => {
            let dp = shared.dp.clone();
            let limit = dp.config.header_read_timeout;
            let told = first_bytes(peek_protocol(stream), limit, &mut watch).await;
            if let Some((stream, protocol)) = told {
                serve_connection(dp, &shared.builders, stream, protocol, conn, watch).await
            }
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
    mut watch: Watch<'_>,
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
            let alpn = protocol_from_alpn(tls_stream.get_ref().1.alpn_protocol());
            let stream = Prefixed::new(tls_stream, Vec::new());
            let told = match alpn {
                Some(protocol) => Some((stream, protocol)),
                None => {
                    let limit = dp.config.header_read_timeout;
                    first_bytes(read_protocol(stream), limit, &mut watch).await
                }
            };
            if let Some((stream, protocol)) = told {
                serve_connection(dp, &shared.builders, stream, protocol, conn, watch).await
            }
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Waits, within the header-read timeout (as hyper waits for a request head), for a
/// connection's protocol to be told from its first bytes. `None` closes the
/// connection: no byte in time, the client closed, or shutdown or the connection
/// tracker asked it to go.
async fn first_bytes<S>(
    told: impl Future<Output = Option<(Prefixed<S>, Protocol)>>,
    limit: Duration,
    watch: &mut Watch<'_>,
) -> Option<(Prefixed<S>, Protocol)> {
    tokio::select! {
        told = tokio::time::timeout(limit, told) => told.ok()?,
        _ = watch.slot.close_requested() => None,
        _ = watch.stop.wait_for(|s| *s) => None,
    }
}

/// A plain connection's protocol from its first bytes, peeked so that hyper reads
/// them with the rest of the request; a beginning of the h2 preface is read on.
async fn peek_protocol(stream: Prefixed<TcpStream>) -> Option<(Prefixed<TcpStream>, Protocol)> {
    let mut start = [0u8; H2_PREFACE.len()];
    let n = stream.peek(&mut start).await.ok()?;
    match protocol_from(&start[..n]) {
        Some(protocol) => Some((stream, protocol)),
        // At EOF, or a peek would return the same bytes at once: reading waits.
        None if n > 0 => read_protocol(stream).await,
        None => None,
    }
}

/// A connection's protocol from the first bytes read off it, read until they tell it
/// and then put back to be read again.
async fn read_protocol<S: AsyncRead + Unpin>(
    mut stream: Prefixed<S>,
) -> Option<(Prefixed<S>, Protocol)> {
    let mut start = [0u8; H2_PREFACE.len()];
    let mut read = 0;
    loop {
        let more = stream.read(&mut start[read..]).await.ok()?;
        if more == 0 {
            return None;
        }
        read += more;
        if let Some(protocol) = protocol_from(&start[..read]) {
            return Some((stream.unread(&start[..read]), protocol));
        }
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

async fn serve_connection<S>(
    dp: Arc<DataPlane>,
    builders: &Builders,
    stream: Prefixed<S>,
    protocol: Protocol,
    conn: ConnInfo,
    watch: Watch<'_>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
    let io = TokioIo::new(stream);
    let Watch { slot, stop, .. } = watch;
    let ended = match protocol {
        Protocol::Http1 => {
            let connection = builders.http1.serve_connection(io, service).with_upgrades();
            drive(connection, |c| c.graceful_shutdown(), slot, stop).await
        }
        // Boxed: a task is as large as its largest branch, and every idle HTTP/1
        // connection would carry the h2 connection's size.
        Protocol::H2 => {
            let connection = builders.h2.serve_connection(io, service);
            Box::pin(drive(connection, |c| c.graceful_shutdown(), slot, stop)).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Runs a connection until it ends; asked to close (shutdown, or the tracker making
/// room), hyper finishes the response it is writing (HTTP/1.1) or the streams open
/// (h2, after GOAWAY), then ends it.
async fn drive<C>(
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    slot: &Slot,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => return ended,
        _ = slot.close_requested() => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    graceful_shutdown(connection.as_mut());
    connection.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_http1_from_its_first_byte() {
        for start in [
            &b"G"[..],
            b"GET / HTTP/1.1\r\n",
            b"POST",
            b"\x16\x03\x01",
            b"pri ",
        ] {
            assert_eq!(protocol_from(start), Some(Protocol::Http1), "{start:?}");
        }
        // Departs from the preface only at its last byte.
        let mut near = *H2_PREFACE;
        near[23] = b'X';
        assert_eq!(protocol_from(&near), Some(Protocol::Http1));
    }

    #[test]
    fn a_whole_preface_is_h2_and_a_beginning_of_one_is_not_yet_told() {
        assert_eq!(protocol_from(H2_PREFACE), Some(Protocol::H2));
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(protocol_from(&more), Some(Protocol::H2));
        for n in 0..H2_PREFACE.len() {
            assert_eq!(protocol_from(&H2_PREFACE[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn alpn_names_the_protocol() {
        assert_eq!(protocol_from_alpn(Some(b"h2")), Some(Protocol::H2));
        assert_eq!(protocol_from_alpn(Some(b"http/1.1")), Some(Protocol::Http1));
        assert_eq!(protocol_from_alpn(Some(b"h3")), None);
        assert_eq!(protocol_from_alpn(None), None);
    }
}
