//! TLS passed through (TLSRoutes). The ClientHello is read only for its server name,
//! bounded in size and in time; the name picks the route, and the bytes read, then
//! everything after, go to one of the route's endpoints unchanged, both ways, until
//! either side closes. Nothing is decrypted here, so no HTTP is ever served on such a
//! socket. A ClientHello without a server name, one no route takes, or a route whose
//! backend does not resolve: the connection is closed.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::proxy_protocol::Prefixed;
use super::{ConnInfo, DataPlane, Live};
use crate::compile::Backend;

/// The most a client may send before its ClientHello is whole: a ClientHello fits one
/// TLS record (16 KiB) in practice, post-quantum key shares included.
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;

/// Why a connection was closed before any endpoint was asked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the client closed before its ClientHello was whole")]
    Closed,
    #[error("the ClientHello is larger than {MAX_CLIENT_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("not a TLS ClientHello: {0}")]
    NotTls(String),
    #[error("the ClientHello names no server")]
    NoServerName,
}

/// Reads up to the end of the ClientHello: every byte read (to be sent on as it
/// came), and the server name it asks for.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Vec<u8>, String), Refusal> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let room = MAX_CLIENT_HELLO_BYTES - seen.len();
        if room == 0 {
            return Err(Refusal::TooLarge);
        }
        let n = stream
            .read(&mut chunk[..room.min(4096)])
            .await
            .map_err(|_| Refusal::Closed)?;
        if n == 0 {
            return Err(Refusal::Closed);
        }
        seen.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            acceptor
                .read_tls(&mut fresh)
                .map_err(|e| Refusal::NotTls(e.to_string()))?;
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_owned);
                return name.map(|n| (seen, n)).ok_or(Refusal::NoServerName);
            }
            Err((e, _)) => return Err(Refusal::NotTls(e.to_string())),
        }
    }
}

/// One connection to a passthrough socket, until either side closes or `stop` turns
/// true.
pub async fn serve(
    dp: Arc<DataPlane>,
    mut client: Prefixed<TcpStream>,
    conn: &ConnInfo,
    mut stop: watch::Receiver<bool>,
) {
    let peer = conn.peer;
    let Some(socket) = conn.socket else {
        return;
    };
    let limit = dp.config.tls_handshake_timeout;
    let (hello, server_name) =
        match tokio::time::timeout(limit, read_client_hello(&mut client)).await {
            Ok(Ok(read)) => read,
            Ok(Err(why)) => {
                tracing::debug!(%peer, %socket, error = %why, "passthrough connection closed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, %socket, "passthrough ClientHello timed out");
                return;
            }
        };
    let Some(mut upstream) = connect(&dp, socket, &server_name).await else {
        tracing::debug!(%peer, %socket, server_name, "no passthrough route takes this server name");
        return;
    };
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    tokio::select! {
        ended = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "passthrough connection ended with an error");
            }
        }
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// A connection to an endpoint of the route `server_name` picks on `socket`, or
/// `None` (the client's connection is closed).
async fn connect(
    dp: &DataPlane,
    socket: std::net::SocketAddr,
    server_name: &str,
) -> Option<TcpStream> {
    let (balance, index) = {
        let live = dp.live.load();
        let route = live.snapshot.passthrough.find(socket, server_name)?;
        let balance = endpoints(&live, &route.backend)?;
        let index = balance.pick(dp.now_ms(), None)?;
        (balance, index)
    };
    let target = &balance.targets()[index];
    let connecting = TcpStream::connect(target.as_str());
    match tokio::time::timeout(dp.config.upstream_connect_timeout, connecting).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        failed => {
            let backoff = dp.config.failure_backoff.as_millis() as u64;
            balance.mark_failed(index, dp.now_ms() + backoff);
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            tracing::warn!(%target, error, "passthrough endpoint connection failed");
            None
        }
    }
}

/// The live endpoints of the Service a weighted pick of `backend` lands on.
fn endpoints(live: &Live, backend: &Backend) -> Option<Arc<super::balance::Balance>> {
    match super::handler::filters::pick(backend).0 {
        Backend::Service(upstream) => live.balances.get(upstream.id).map(|h| h.load()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first flight of a real TLS client for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn the_server_name_is_read_and_every_byte_kept() {
        let hello = client_hello("abc.example.com");
        let mut sent = hello.clone();
        sent.extend_from_slice(b"after the hello");
        // One byte at a time: a ClientHello split over many reads is read whole.
        let mut stream = tokio_test_reader(&sent);
        let (seen, name) = read_client_hello(&mut stream).await.unwrap();
        assert_eq!(name, "abc.example.com");
        assert!(
            seen.starts_with(&hello),
            "the bytes read are forwarded as sent"
        );
    }

    #[tokio::test]
    async fn what_is_not_a_named_client_hello_is_refused() {
        // An IP address is never sent as a server name.
        let unnamed = client_hello("192.0.2.1");
        let got = read_client_hello(&mut unnamed.as_slice()).await;
        assert_eq!(got.unwrap_err(), Refusal::NoServerName);
        let plain = b"GET / HTTP/1.1\r\nHost: abc.example.com\r\n\r\n";
        let got = read_client_hello(&mut plain.as_slice()).await;
        assert!(matches!(got, Err(Refusal::NotTls(_))), "{got:?}");
        let hello = client_hello("abc.example.com");
        let cut = &hello[..hello.len() - 1];
        assert_eq!(
            read_client_hello(&mut &cut[..]).await.unwrap_err(),
            Refusal::Closed
        );
        // A ClientHello that claims to go on for 64 KiB, record after record: cut off
        // at the bound, never buffered whole.
        let mut endless = Vec::new();
        for i in 0..4 {
            endless.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00]);
            let start = endless.len();
            endless.resize(start + 0x4000, 0);
            if i == 0 {
                endless[start..start + 4].copy_from_slice(&[0x01, 0x00, 0xff, 0xf0]);
            }
        }
        let got = read_client_hello(&mut endless.as_slice()).await;
        assert_eq!(got.unwrap_err(), Refusal::TooLarge);
    }

    /// A reader that hands out one byte per read.
    fn tokio_test_reader(bytes: &[u8]) -> impl AsyncRead + Unpin + '_ {
        struct OneByOne<'a>(&'a [u8]);
        impl AsyncRead for OneByOne<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if let Some((first, rest)) = self.0.split_first() {
                    buf.put_slice(&[*first]);
                    self.0 = rest;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        OneByOne(bytes)
    }
}
