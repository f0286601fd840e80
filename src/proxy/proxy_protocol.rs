//! The PROXY protocol (v1 text, v2 binary) on the listeners named in `--proxy-protocol`.
//!
//! A load balancer that ends the client's TCP connection (an AWS NLB with a TLS
//! listener or IP targets, GCP's and Azure's proxies, HAProxy) writes the client's
//! address in a header before anything else, before a TLS ClientHello too. On such a
//! listener every connection must start with one: without it, or with a header that
//! is malformed, too large, cut short or too slow, the connection is closed before any
//! TLS or HTTP, counted (`portcullis_proxy_protocol_refused_total`) and logged. The
//! header is parsed by the `ppp` crate; reading it is bounded by `MAX_HEADER` bytes
//! here and by the caller's timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ppp::v1::{self, BinaryParseError};
use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::observe::RateLimitedLog;

/// The largest header accepted. A v1 line is at most 107 bytes; a v2 header is 16
/// bytes, the addresses (36 for IPv6) and the load balancer's TLVs (AWS's endpoint id,
/// Azure's link id, HAProxy's TLS details: tens to a few hundred bytes).
pub const MAX_HEADER: usize = 1024;

/// The v1 header's first bytes.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The longest v1 line, `\r\n` included.
const V1_MAX: usize = 107;

/// A v2 header's fixed part: signature (12), version and command, family and
/// protocol, and the length of the rest (2).
const V2_FIXED: usize = 16;

/// What a header says of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proxied {
    /// The client's address; `None` for a v2 LOCAL header (the load balancer's own
    /// health check), v1 `UNKNOWN` and address families other than IP: the socket's
    /// peer stands, as the protocol says.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the load balancer's listener).
    pub destination: Option<SocketAddr>,
}

/// Why a connection was closed before its header was read whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The connection did not start with a PROXY header at all.
    Missing,
    /// It started like one, but the header does not parse.
    Malformed,
    /// A v1 line over 107 bytes or a v2 header over `MAX_HEADER`.
    TooLarge,
    /// The peer closed the connection, or it broke, part way through the header.
    Truncated,
    /// The peer closed the connection without sending a byte (a TCP health check).
    Empty,
    /// The header did not arrive within the header-read timeout.
    Timeout,
    /// As many connections as the listener's cap were already waiting for theirs.
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Self::Missing,
        Self::Malformed,
        Self::TooLarge,
        Self::Truncated,
        Self::Empty,
        Self::Timeout,
        Self::Busy,
    ];

    /// The `reason` label of the refusals counter and the log's `problem`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Truncated => "truncated",
            Self::Empty => "empty",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
        }
    }
}

/// What the bytes read so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes.
    Header {
        proxied: Proxied,
        len: usize,
    },
    /// The start of a header: more bytes are needed.
    Incomplete,
    Refused(Refusal),
}

/// Reads `buf`, the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Parsed {
    let v2_prefix = v2::PROTOCOL_PREFIX;
    if buf.starts_with(v2_prefix) || v2_prefix.starts_with(buf) {
        return parse_v2(buf);
    }
    let start = &buf[..buf.len().min(V1_PREFIX.len())];
    if !V1_PREFIX.starts_with(start) {
        return Parsed::Refused(Refusal::Missing);
    }
    parse_v1(buf)
}

/// The client's and the load balancer's addresses, as a header names them.
fn addresses(
    source: (impl Into<std::net::IpAddr>, u16),
    destination: (impl Into<std::net::IpAddr>, u16),
) -> Proxied {
    Proxied {
        source: Some(SocketAddr::new(source.0.into(), source.1)),
        destination: Some(SocketAddr::new(destination.0.into(), destination.1)),
    }
}

/// A header that names no client (v2 LOCAL, v1 UNKNOWN, v2's other families).
const UNNAMED: Proxied = Proxied {
    source: None,
    destination: None,
};

fn parse_v2(buf: &[u8]) -> Parsed {
    match v2::Header::try_from(buf) {
        Ok(header) => {
            let proxied = match (header.command, header.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => addresses(
                    (a.source_address, a.source_port),
                    (a.destination_address, a.destination_port),
                ),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => addresses(
                    (a.source_address, a.source_port),
                    (a.destination_address, a.destination_port),
                ),
                _ => UNNAMED,
            };
            Parsed::Header {
                proxied,
                len: header.len(),
            }
        }
        // The fixed part names the length: refuse at once what will not fit.
        Err(v2::ParseError::Partial(_, payload)) if V2_FIXED + payload > MAX_HEADER => {
            Parsed::Refused(Refusal::TooLarge)
        }
        Err(v2::ParseError::Partial(..) | v2::ParseError::Incomplete(_)) => Parsed::Incomplete,
        Err(_) => Parsed::Refused(Refusal::Malformed),
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    // A line is judged once it has ended: the parser takes a line cut after a space
    // for a wrong one, and one that lacks a field for a partial one.
    let ended = match buf.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(end) => end + 1 < buf.len() || buf[end] == b'\n',
        None => false,
    };
    if !ended {
        return match buf.len() >= V1_MAX {
            true => Parsed::Refused(Refusal::TooLarge),
            false => Parsed::Incomplete,
        };
    }
    let header = match v1::Header::try_from(buf) {
        Ok(header) => header,
        Err(BinaryParseError::Parse(v1::ParseError::HeaderTooLong)) => {
            return Parsed::Refused(Refusal::TooLarge);
        }
        Err(_) => return Parsed::Refused(Refusal::Malformed),
    };
    let proxied = match header.addresses {
        v1::Addresses::Tcp4(a) => addresses(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        v1::Addresses::Tcp6(a) => addresses(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        v1::Addresses::Unknown => UNNAMED,
    };
    Parsed::Header {
        proxied,
        len: header.header.len(),
    }
}

/// Reads a connection's header: what it says and the bytes read past it (the start of
/// the TLS handshake or the request). Reads at most `MAX_HEADER` bytes; the caller
/// bounds the time.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Proxied, Vec<u8>), Refusal> {
    let mut buf = [0u8; MAX_HEADER];
    let mut filled = 0;
    loop {
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) if filled == 0 => return Err(Refusal::Empty),
            Ok(0) | Err(_) => return Err(Refusal::Truncated),
            Ok(n) => n,
        };
        filled += n;
        match parse(&buf[..filled]) {
            Parsed::Header { proxied, len } => return Ok((proxied, buf[len..filled].to_vec())),
            Parsed::Incomplete if filled == MAX_HEADER => return Err(Refusal::TooLarge),
            Parsed::Incomplete => {}
            Parsed::Refused(why) => return Err(why),
        }
    }
}

/// A client's stream with the bytes read past its PROXY header put back in front.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(inner: S, prefix: Vec<u8>) -> Self {
        Self {
            prefix,
            read: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl Prefixed<tokio::net::TcpStream> {
    /// The next bytes a read will return, without taking them: what is left of the
    /// prefix, else what the socket holds (waiting for at least one byte; 0 at EOF).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.prefix[self.read..];
        if rest.is_empty() {
            return self.inner.peek(buf).await;
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

impl<S> Prefixed<S> {
    /// Puts bytes read from the stream back in front of it, to be read again.
    pub fn unread(mut self, bytes: &[u8]) -> Self {
        let mut prefix = bytes.to_vec();
        prefix.extend_from_slice(&self.prefix[self.read..]);
        self.prefix = prefix;
        self.read = 0;
        self
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refused headers, counted by listener and reason and logged at most every ten
/// seconds (a scan or a load balancer without PROXY protocol sends many).
pub struct Refusals {
    counter: prometheus::IntCounterVec,
    log: RateLimitedLog,
}

impl Refusals {
    pub fn new() -> Self {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "proxy_protocol_refused_total",
                "Connections to a --proxy-protocol listener closed before any TLS or HTTP because their PROXY header was missing, malformed, too large, truncated, empty, too slow, or too many were waiting (reason), by listener",
            ),
            &["listener", "reason"],
        )
        .expect("valid metric");
        Self {
            counter,
            log: RateLimitedLog::default(),
        }
    }

    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.counter.clone())
    }

    /// Shows every reason of `listener` at 0 from the start.
    pub fn register_listener(&self, listener: &str) {
        for why in Refusal::ALL {
            self.counter.with_label_values(&[listener, why.label()]);
        }
    }

    pub fn record(&self, listener: &str, peer: SocketAddr, why: Refusal) {
        let counter = self.counter.with_label_values(&[listener, why.label()]);
        counter.inc();
        // A connection that sends nothing is how TCP health checks look: counted only.
        if why == Refusal::Empty {
            tracing::debug!(listener, %peer, "connection closed before its PROXY header");
            return;
        }
        if self.log.allow() {
            tracing::warn!(
                listener,
                %peer,
                problem = why.label(),
                reason = "ProxyProtocolHeaderRefused",
                refused_so_far = counter.get(),
                "connection closed: a --proxy-protocol listener needs a valid PROXY protocol header before anything else (is PROXY protocol on at the load balancer, and does anything reach this port around it?)"
            );
        }
    }
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_put_back_are_read_again_before_the_rest_of_the_prefix() {
        use tokio::io::AsyncReadExt;
        let mut stream = Prefixed::new(&b"world"[..], b"hello ".to_vec());
        let mut first = [0u8; 3];
        stream.read_exact(&mut first).await.unwrap();
        let mut stream = stream.unread(&first);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = v2::PROTOCOL_PREFIX.to_vec();
        b.push(0x20 | command);
        b.push(family | 0x01);
        b.extend((payload.len() as u16).to_be_bytes());
        b.extend(payload);
        b
    }

    fn header(source: &str, destination: &str, len: usize) -> Parsed {
        Parsed::Header {
            proxied: Proxied {
                source: Some(source.parse().unwrap()),
                destination: Some(destination.parse().unwrap()),
            },
            len,
        }
    }

    #[test]
    fn v1_lines_name_the_client() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5123 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(line), header("203.0.113.7:5123", "10.0.0.1:443", 42));
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 5123 443\r\n";
        assert_eq!(
            parse(line),
            header("[2001:db8::7]:5123", "[2001:db8::1]:443", line.len())
        );
        let unknown = parse(b"PROXY UNKNOWN\r\n");
        assert!(
            matches!(
                unknown,
                Parsed::Header {
                    proxied: Proxied { source: None, .. },
                    len: 15
                }
            ),
            "{unknown:?}"
        );
    }

    #[test]
    fn v2_headers_name_the_client_unless_local() {
        let mut v4 = vec![203, 0, 113, 7, 10, 0, 0, 1];
        v4.extend(5123u16.to_be_bytes());
        v4.extend(443u16.to_be_bytes());
        // A TLV after the addresses (AWS's endpoint id) is read past.
        let mut with_tlv = v4.clone();
        with_tlv.extend([0xEA, 0, 3, 1, b'v', b'p']);
        let bytes = v2(1, 0x10, &with_tlv);
        assert_eq!(
            parse(&bytes),
            header("203.0.113.7:5123", "10.0.0.1:443", 16 + 18)
        );
        let mut v6 = Vec::new();
        v6.extend(
            "2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend([0x14, 0x03, 0x01, 0xbb]);
        assert_eq!(
            parse(&v2(1, 0x20, &v6)),
            header("[2001:db8::7]:5123", "[2001:db8::1]:443", 52)
        );
        let local = parse(&v2(0, 0x10, &v4));
        assert!(
            matches!(
                local,
                Parsed::Header {
                    proxied: Proxied { source: None, .. },
                    len: 28
                }
            ),
            "{local:?}"
        );
    }

    #[test]
    fn the_start_of_a_header_waits_for_the_rest() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5123 443\r\n";
        for end in 0..line.len() {
            assert_eq!(parse(&line[..end]), Parsed::Incomplete, "{end} bytes");
        }
        let bytes = v2(1, 0x10, &[0; 12]);
        for end in 0..bytes.len() {
            assert_eq!(parse(&bytes[..end]), Parsed::Incomplete, "{end} bytes");
        }
    }

    #[test]
    fn anything_else_is_refused_by_class() {
        let refused = |b: &[u8]| match parse(b) {
            Parsed::Refused(why) => Some(why),
            _ => None,
        };
        assert_eq!(refused(b"GET / HTTP/1.1\r\n"), Some(Refusal::Missing));
        assert_eq!(
            refused(b"\x16\x03\x01\x02\x00"),
            Some(Refusal::Missing),
            "a ClientHello"
        );
        assert_eq!(
            refused(b"proxy TCP4"),
            Some(Refusal::Missing),
            "case matters"
        );
        assert_eq!(
            refused(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"),
            Some(Refusal::Malformed)
        );
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4\r\n"),
            Some(Refusal::Malformed),
            "cut short"
        );
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
            Some(Refusal::Malformed)
        );
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
            Some(Refusal::Malformed)
        );
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4 2001:db8::1 1 2\r\n"),
            Some(Refusal::Malformed)
        );
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n"),
            Some(Refusal::Malformed)
        );
        // 107 bytes is the longest line, `\r\n` included.
        let line = |n: usize| format!("PROXY UNKNOWN {}\r\n", "x".repeat(n - 16));
        assert!(matches!(
            parse(line(107).as_bytes()),
            Parsed::Header { len: 107, .. }
        ));
        assert_eq!(refused(line(108).as_bytes()), Some(Refusal::TooLarge));
        assert_eq!(
            refused(&line(300).as_bytes()[..120]),
            Some(Refusal::TooLarge),
            "unended"
        );
        assert_eq!(refused(&[b'x'; 0][..]), None);
        // v2: a bad version, command or family; a length short of the addresses.
        let mut bad = v2(1, 0x10, &[0; 12]);
        bad[12] = 0x31;
        assert_eq!(refused(&bad), Some(Refusal::Malformed));
        bad[12] = 0x2F;
        assert_eq!(refused(&bad), Some(Refusal::Malformed));
        assert_eq!(refused(&v2(1, 0x40, &[0; 12])), Some(Refusal::Malformed));
        assert_eq!(refused(&v2(1, 0x10, &[0; 4])), Some(Refusal::Malformed));
        // A length past the bound is refused on the fixed part alone.
        let mut huge = v2(1, 0x10, &[0; 12]);
        huge[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert_eq!(refused(&huge[..28]), Some(Refusal::TooLarge));
    }

    #[tokio::test]
    async fn the_bytes_after_the_header_are_given_back() {
        let sent = b"PROXY TCP4 203.0.113.7 10.0.0.1 5123 443\r\nGET / HTTP/1.1\r\n\r\n".to_vec();
        let mut reader = &sent[..];
        let (proxied, rest) = read_header(&mut reader).await.unwrap();
        assert_eq!(proxied.source, Some("203.0.113.7:5123".parse().unwrap()));
        let mut stream = Prefixed::new(tokio::io::empty(), rest);
        let mut after = String::new();
        stream.read_to_string(&mut after).await.unwrap();
        assert_eq!(after, "GET / HTTP/1.1\r\n\r\n");
        let mut empty: &[u8] = b"";
        assert_eq!(read_header(&mut empty).await, Err(Refusal::Empty));
        let mut cut: &[u8] = b"PROXY TCP4 203.0.113.7";
        assert_eq!(read_header(&mut cut).await, Err(Refusal::Truncated));
    }
}
