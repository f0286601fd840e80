//! One canonical request, decided once on arrival: the path every later step routes,
//! guards and forwards on, the one authority the request is for, and the client's
//! hop-by-hop headers removed before Portcullis adds any of its own. Everything here
//! is a pure function of the request head, so every encoding an attacker may try is
//! tested without a server.

use http::Uri;
use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};

/// What to do with a construct that backends read in different ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ambiguity {
    /// Answer 400.
    Reject,
    /// Rewrite it to the form most backends read it as (then route, guard and forward
    /// that form).
    Normalize,
    /// Pass it through as it came. Only safe when every backend reads it exactly as
    /// Portcullis matches it (no decoding, no merging, no parameter stripping).
    Keep,
}

/// The path rules, as operators set them (Envoy's `normalize_path`, `merge_slashes`
/// and `path_with_escaped_slashes_action`, plus `;` parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRules {
    /// `//` inside a path. Normalize merges them into one.
    pub repeated_slashes: Ambiguity,
    /// `%2F` and `%5C` (and a raw `\`). Normalize reads each as `/`.
    pub escaped_slashes: Ambiguity,
    /// `;` parameters in a segment (`/admin;x/users`, `/..;/`). Normalize drops them,
    /// as Tomcat and Jetty do before routing.
    pub path_parameters: Ambiguity,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            repeated_slashes: Ambiguity::Normalize,
            escaped_slashes: Ambiguity::Reject,
            path_parameters: Ambiguity::Reject,
        }
    }
}

/// Why a request head was refused (400), with the reason the access log gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request target is not an absolute path")]
    NotAbsolutePath,
    #[error("the path has an invalid percent-encoding")]
    InvalidEncoding,
    #[error("the path holds a control character or NUL")]
    ControlCharacter,
    #[error("the path holds an encoded slash or a backslash")]
    EscapedSlash,
    #[error("the path holds repeated slashes")]
    RepeatedSlashes,
    #[error("the path holds ;-parameters")]
    PathParameter,
    #[error("the request names no host")]
    MissingHost,
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("the host is not a valid name or address")]
    InvalidHost,
    #[error("the request target's authority and the Host header disagree")]
    AuthorityMismatch,
}

impl Refusal {
    /// The access log's `error_reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAbsolutePath
            | Self::InvalidEncoding
            | Self::ControlCharacter
            | Self::EscapedSlash
            | Self::RepeatedSlashes
            | Self::PathParameter => "AmbiguousRequestPath",
            Self::MissingHost => "MissingHostHeader",
            Self::DuplicateHost | Self::InvalidHost | Self::AuthorityMismatch => "AmbiguousHost",
        }
    }
}

/// The request's one authority: the host routed on (lower case, no trailing dot) and
/// the `Host` value the backend receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: Option<u16>,
    /// `host` or `host:port` (a port only when it is not the scheme's default).
    pub header: String,
}

/// The request as every step after arrival reads it (route, guard, filters, forward),
/// decided once.
#[derive(Clone, Debug)]
pub struct CanonicalRequest {
    pub authority: Authority,
    /// The canonical path (`canonical_path`).
    pub path: String,
    /// The canonical path in lower case, under `--case-insensitive-paths`.
    pub folded: Option<String>,
    /// The canonical path with the query as sent.
    pub path_and_query: String,
    /// The client: the peer, or what a trusted proxy says it forwarded for; `None`
    /// when a trusted proxy's header names no address (admitted by no allow-list).
    pub client: Option<std::net::IpAddr>,
    /// This listener's own TLS (which Gateway listeners' routes apply).
    pub tls: bool,
    /// Whether the client used HTTPS: this listener's TLS, or what a `--trusted-proxy`
    /// that ended TLS in front says (`X-Forwarded-Proto`, `Forwarded: proto=`). What the
    /// guard, the callback and logout addresses, cookies' `Secure`, redirects and the
    /// backend's `X-Forwarded-Proto` go by.
    pub https: bool,
    pub websocket: bool,
}

impl CanonicalRequest {
    /// The path routes, guards and the login's paths are matched on.
    pub fn key(&self) -> &str {
        self.folded.as_deref().unwrap_or(&self.path)
    }
}

/// The canonical form of a path (no query): percent-encoded unreserved characters
/// decoded, dot segments removed, every other escape in upper case, and each
/// ambiguous construct rejected, normalised or kept as `rules` say.
pub fn canonical_path(raw: &str, rules: &PathRules) -> Result<String, Refusal> {
    if !raw.starts_with('/') {
        return Err(Refusal::NotAbsolutePath);
    }
    let bytes = raw.as_bytes();
    // Segments as they will be written out; a segment is canonical text.
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    // Inside a `;` parameter that is being dropped.
    let mut in_parameter = false;
    let mut i = 1;
    let end_segment = |current: &mut String, segments: &mut Vec<String>| {
        segments.push(std::mem::take(current));
    };
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        let (byte, escaped) = if b == b'%' {
            let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
            match (hex(i), hex(i + 1)) {
                (Some(h), Some(l)) => {
                    i += 2;
                    ((h * 16 + l) as u8, true)
                }
                _ => return Err(Refusal::InvalidEncoding),
            }
        } else {
            (b, false)
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(Refusal::ControlCharacter);
        }
        let slash_like = (escaped && (byte == b'/' || byte == b'\\')) || (!escaped && b == b'\\');
        if slash_like {
            match rules.escaped_slashes {
                Ambiguity::Reject => return Err(Refusal::EscapedSlash),
                Ambiguity::Normalize => {
                    in_parameter = false;
                    end_segment(&mut current, &mut segments);
                }
                Ambiguity::Keep if !in_parameter => {
                    current.push_str(if byte == b'/' { "%2F" } else { "%5C" })
                }
                Ambiguity::Keep => {}
            }
            continue;
        }
        if !escaped && b == b'/' {
            in_parameter = false;
            end_segment(&mut current, &mut segments);
            continue;
        }
        if in_parameter {
            continue;
        }
        if !escaped && b == b';' {
            match rules.path_parameters {
                Ambiguity::Reject => return Err(Refusal::PathParameter),
                Ambiguity::Normalize => in_parameter = true,
                Ambiguity::Keep => current.push(';'),
            }
            continue;
        }
        if is_unreserved(byte) || is_pchar_delimiter(byte) {
            current.push(byte as char);
        } else {
            // Everything else travels percent-encoded, in one spelling.
            current.push_str(&format!("%{byte:02X}"));
        }
    }
    end_segment(&mut current, &mut segments);
    join_segments(segments, rules)
}

/// Removes dot segments (RFC 3986 5.2.4) and empty ones, and writes the path.
fn join_segments(segments: Vec<String>, rules: &PathRules) -> Result<String, Refusal> {
    let count = segments.len();
    let mut out: Vec<String> = Vec::with_capacity(count);
    // Whether the path ends in a directory (a trailing slash, or a final dot segment).
    let mut trailing = false;
    for (n, seg) in segments.into_iter().enumerate() {
        let last = n + 1 == count;
        match seg.as_str() {
            "." => trailing = last,
            ".." => {
                out.pop();
                trailing = last;
            }
            "" if last => trailing = !out.is_empty() || n > 0,
            "" => match rules.repeated_slashes {
                Ambiguity::Reject => return Err(Refusal::RepeatedSlashes),
                Ambiguity::Normalize => {}
                Ambiguity::Keep => out.push(seg),
            },
            _ => {
                trailing = false;
                out.push(seg);
            }
        }
    }
    let mut path = String::with_capacity(out.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment may carry unencoded besides the unreserved ones (RFC 3986
/// `pchar`, less `;`). Their escapes are decoded too: frameworks (Spring, Go's
/// `net/http`, ASP.NET) decode `%40` and `%3A` before routing, and rule paths name
/// `@` and `:` plainly, so `/%40admin` must meet the guard of `/@admin`. `;` keeps its
/// escape: decoded, it would start a path parameter.
fn is_pchar_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

/// The one authority of a request: the Host header, the absolute-form target or the
/// HTTP/2 `:authority`, which must agree when more than one is given.
pub fn authority(uri: &Uri, headers: &HeaderMap, tls: bool) -> Result<Authority, Refusal> {
    let default_port = if tls { 443 } else { 80 };
    let mut hosts = headers.get_all(HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::DuplicateHost);
    }
    let from_header = match host_header {
        Some(v) if !v.is_empty() => Some(parse_authority(
            v.to_str().map_err(|_| Refusal::InvalidHost)?,
        )?),
        _ => None,
    };
    let from_target = match uri.authority() {
        Some(a) => {
            if !matches!(uri.scheme_str(), None | Some("http" | "https")) {
                return Err(Refusal::InvalidHost);
            }
            Some(parse_authority(a.as_str())?)
        }
        None => None,
    };
    let (host, port) = match (from_target, from_header) {
        (Some(t), Some(h)) => {
            let port = |p: Option<u16>| p.unwrap_or(default_port);
            if t.0 != h.0 || port(t.1) != port(h.1) {
                return Err(Refusal::AuthorityMismatch);
            }
            t
        }
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => return Err(Refusal::MissingHost),
    };
    let port = port.filter(|p| *p != default_port);
    let header = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    Ok(Authority { host, port, header })
}

/// `host[:port]` with a DNS name, IPv4 address or bracketed IPv6 address; no user
/// info. The host comes back in lower case without a trailing dot.
fn parse_authority(raw: &str) -> Result<(String, Option<u16>), Refusal> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(Refusal::InvalidHost)?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| Refusal::InvalidHost)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(Refusal::InvalidHost)?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if !crate::model::is_dns_name(host) {
            return Err(Refusal::InvalidHost);
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| Refusal::InvalidHost)?)
        }
        Some(_) => return Err(Refusal::InvalidHost),
    };
    Ok((host, port))
}

/// Headers no client may pass to a backend, besides the identity headers: frameworks
/// route on the first three, CGI servers turn `Proxy` into `HTTP_PROXY` (httpoxy).
/// The method-override headers make Symfony, Laravel and Express's `method-override`
/// read another method than the one routed and guarded.
pub const DEFAULT_DROPPED_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "proxy",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Every header whose name, with `_` read as `-`, starts with this is Portcullis's to set.
pub const IDENTITY_PREFIX: &str = "x-amzn-oidc-";

/// Whether a header name (with `_` read as `-`) is one of Portcullis's own: the
/// identity headers and the client-certificate headers.
fn is_ours(dashed: &str) -> bool {
    dashed.starts_with(IDENTITY_PREFIX) || dashed.starts_with(super::client_cert::MTLS_PREFIX)
}

/// Removes what describes the client's connection (hop-by-hop headers and every header
/// its `Connection` names) and the headers no client may send, before Portcullis adds
/// anything; so a client can never remove a header the proxy sets. Names are compared
/// with `_` read as `-` (CGI-style servers do); with `underscores` false every name
/// with `_` goes, as nginx does by default.
pub fn clean_arrival(headers: &mut HeaderMap, dropped: &[HeaderName], underscores: bool) {
    super::headers::strip_hop_by_hop(headers);
    // Answered here (hyper sends `100 Continue` as the body is read): a pod that saw it
    // could answer before the body and leave it on the connection to be read as the
    // next request.
    headers.remove(http::header::EXPECT);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            if n.contains('_') {
                let dashed = n.replace('_', "-");
                !underscores || is_ours(&dashed) || dropped.iter().any(|d| d.as_str() == dashed)
            } else {
                is_ours(n) || dropped.contains(name)
            }
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Sets the `Host` the backend receives to the request's canonical authority.
pub fn set_host(headers: &mut HeaderMap, authority: &Authority) {
    // Most often the client's own: kept, nothing to copy.
    if headers.get(HOST).map(HeaderValue::as_bytes) == Some(authority.header.as_bytes()) {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&authority.header) {
        headers.insert(HOST, v);
    }
}

#[cfg(test)]
mod tests;
