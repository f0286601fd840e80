//! HTTP/2 frames written by hand, for tests that send exactly the bytes an attacker
//! (or a slow client) would.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every h2 connection with prior knowledge starts with.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HPACK's integer with an `n`-bit prefix (RFC 7541 §5.1), the prefix's other bits
/// in `first`.
pub fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Every field as a literal without indexing, its name and value as given (no
/// Huffman, no lower-casing, no table): exactly the bytes an attacker chooses.
pub fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// The frames (type, flags) the peer sends on stream 1, acknowledging its SETTINGS,
/// until the stream ends, is reset, or the connection goes away (GOAWAY included).
pub async fn frames_of_stream_1(tcp: &mut TcpStream) -> Vec<(u8, u8)> {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if tcp.read_exact(&mut head).await.is_err() {
            return frames;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return frames;
        }
        if kind == SETTINGS && flags & 0x1 == 0 {
            let _ = tcp.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
        }
        if kind == GOAWAY {
            frames.push((kind, flags));
            return frames;
        }
        if stream == 1 {
            frames.push((kind, flags));
            if kind == RST_STREAM || flags & END_STREAM != 0 {
                return frames;
            }
        }
    }
}
