//! Header rules of the request path: hop-by-hop removal and the forwarding headers.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE,
};

use super::IpNet;

const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
];

/// Removes the headers that describe one connection, not the message, including every
/// header the `Connection` header names, except the forwarding headers: whether those
/// are kept is the trusted-proxy rule's to say (`set_forwarded`), and a client must not
/// drop what a trusted proxy appended (its address in `X-Forwarded-For`) by naming it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, and a removal costs a lookup even when the
    // header is absent: one pass over the names says whether there is anything to do.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !is_forwarding_header(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    // Read before `TE` goes with the rest (and after, when `Connection` named it).
    let keep_trailers = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    remove_where(headers, is_hop_by_hop);
    if keep_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || HOP_BY_HOP.contains(&name.as_str())
}

/// Removes every header named one of `names` (lower case), also when written with `_`
/// for `-` (CGI and WSGI servers read those as the same name): headers Portcullis sets
/// itself reach the backend only with its value.
pub fn remove_named<'a>(headers: &mut HeaderMap, names: impl IntoIterator<Item = &'a HeaderName>) {
    let names: Vec<&HeaderName> = names.into_iter().collect();
    if names.is_empty() {
        return;
    }
    remove_where(headers, |k| {
        let n = k.as_str();
        names
            .iter()
            .any(|c| c.as_str() == n || (n.contains('_') && c.as_str() == n.replace('_', "-")))
    });
}

/// Removes every header whose name `matches`; the names are gathered first, since the
/// map cannot change while its keys are read (no allocation when none matches).
fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&HeaderName) -> bool) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| matches(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let websocket = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    connection_upgrade && websocket
}

/// Headers by which a proxy in front tells the backend who the client is and how it
/// connected. Frameworks believe them (Spring's ForwardedHeaderFilter, Werkzeug's
/// ProxyFix, Rack, "real IP" modules), so only a trusted peer may send them; from
/// anyone else they go, along with every `x-forwarded-*`.
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-original-host",
    "x-host",
    "front-end-https",
    "x-scheme",
    "x-url-scheme",
    "true-client-ip",
    "cf-connecting-ip",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
];

/// `X-Forwarded-*` and the other headers by which a proxy describes the client.
pub(crate) fn is_forwarding_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-forwarded-") || FORWARDING_HEADERS.contains(&n)
}

/// Sets `X-Forwarded-For/Proto/Host/Port` and `X-Real-IP`. A trusted peer's values are
/// kept (its address is appended to `X-Forwarded-For`); from anyone else, every
/// forwarding header is removed and Portcullis's own set. `X-Forwarded-Proto` is always
/// `https`, the scheme the request was guarded as (`forwarded_https`), so the backend
/// never reads a different one.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    conn: &ConnValues,
    https: bool,
    host: &str,
    trusted: &[IpNet],
) {
    let peer_ip = conn.ip;
    let is_trusted = trusted.iter().any(|n| n.contains(peer_ip));
    if !is_trusted {
        remove_where(headers, is_forwarding_header);
    }
    // Room for the five at once: one growth of the map instead of one per insert.
    headers.reserve(5);
    let xff = HeaderName::from_static("x-forwarded-for");
    // Every line a trusted proxy sent, in order (as `client_ip` reads them): a proxy
    // may add its own line instead of appending to the client's.
    let prior: Vec<&str> = match is_trusted {
        true => headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
        false => Vec::new(),
    };
    let forwarded_for = match prior.is_empty() {
        false => value_of(format_args!("{}, {peer_ip}", prior.join(", "))),
        true => Some(conn.ip_value.clone()),
    };
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    let replace_all = !is_trusted;
    let values = [
        ("x-forwarded-for", forwarded_for, true),
        ("x-forwarded-proto", Some(proto), true),
        (
            "x-forwarded-host",
            HeaderValue::from_str(host).ok(),
            replace_all,
        ),
        (
            "x-forwarded-port",
            Some(conn.port_value.clone()),
            replace_all,
        ),
        ("x-real-ip", Some(conn.ip_value.clone()), replace_all),
    ];
    for (name, value, replace) in values {
        let name = HeaderName::from_static(name);
        if let Some(v) = value
            && (replace || !headers.contains_key(&name))
        {
            headers.insert(name, v);
        }
    }
}

/// What a connection's forwarding headers say of it, rendered on its first request
/// and shared by the rest (a clone of a value shares its bytes).
#[derive(Clone, Debug)]
pub struct ConnValues {
    /// The client's address, as a trusted proxy's list and the backend read it.
    ip: IpAddr,
    ip_value: HeaderValue,
    port_value: HeaderValue,
}

impl ConnValues {
    /// `peer` is the client, `port` the port it connected to.
    pub fn new(peer: SocketAddr, port: u16) -> Self {
        let ip = peer.ip().to_canonical();
        let render = |args| value_of(args).unwrap_or(HeaderValue::from_static(""));
        Self {
            ip,
            ip_value: render(format_args!("{ip}")),
            port_value: render(format_args!("{port}")),
        }
    }
}

/// A header value formatted on the stack: one allocation (the value's own bytes), not
/// a `String` and then a copy of it, on every request.
fn value_of(args: std::fmt::Arguments<'_>) -> Option<HeaderValue> {
    use std::io::Write;
    let mut buf = [0u8; 128];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if cursor.write_fmt(args).is_ok() {
        let len = cursor.position() as usize;
        return HeaderValue::from_bytes(&buf[..len]).ok();
    }
    // Longer than the stack buffer (a trusted proxy's long X-Forwarded-For).
    HeaderValue::from_str(&std::fmt::format(args)).ok()
}

/// Whether the client reached the first proxy over HTTPS, as a trusted peer says in
/// `X-Forwarded-Proto` or in `Forwarded`'s `proto=`: `None` when the peer is not a
/// trusted proxy or names no scheme. Every value it sends (each header, each element)
/// must say the same; values that disagree, or a scheme other than http(s)/ws(s), read
/// as plain HTTP, which a guarded route refuses rather than taking a session or token
/// over a leg that may be clear text.
pub fn forwarded_https(headers: &HeaderMap, peer: SocketAddr, trusted: &[IpNet]) -> Option<bool> {
    let peer_ip = peer.ip().to_canonical();
    if !trusted.iter().any(|n| n.contains(peer_ip)) {
        return None;
    }
    let mut said: Option<bool> = None;
    for scheme in forwarded_schemes(headers) {
        let https = match scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("https" | "wss") => true,
            Some("http" | "ws") => false,
            _ => return Some(false),
        };
        if said.is_some_and(|s| s != https) {
            return Some(false);
        }
        said = Some(https);
    }
    said
}

/// Every scheme named in `X-Forwarded-Proto` and in `Forwarded`'s `proto=`; `None`
/// for a value that cannot be read.
fn forwarded_schemes(headers: &HeaderMap) -> Vec<Option<String>> {
    let text = |v: &HeaderValue| v.to_str().ok().map(str::to_owned);
    let mut schemes: Vec<Option<String>> = Vec::new();
    for value in headers.get_all("x-forwarded-proto") {
        match text(value) {
            Some(v) => schemes.extend(v.split(',').map(|s| Some(s.trim().to_owned()))),
            None => schemes.push(None),
        }
    }
    for value in headers.get_all("forwarded") {
        let Some(v) = text(value) else {
            schemes.push(None);
            continue;
        };
        for element in rfc7239::parse(&v) {
            match element {
                Ok(e) => schemes.extend(e.protocol.map(|p| Some(p.trim_matches('"').to_owned()))),
                Err(_) => schemes.push(None),
            }
        }
    }
    schemes
}

/// The client's address, as a source allow-list reads it: the socket peer, or, when
/// the peer is a trusted proxy, the right-most address of `X-Forwarded-For` that is
/// not itself a trusted proxy (each trusted hop appends the address it saw; what lies
/// left of the first untrusted one, the client wrote). `None` when that entry is not
/// an address: no allow-list admits it.
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer_ip) {
        return Some(peer_ip);
    }
    let mut client = peer_ip;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .flat_map(|v| {
            // A value that is not text counts as one entry that is not an address.
            v.to_str().unwrap_or("-").rsplit(',')
        });
    for hop in hops {
        let hop = hop.trim();
        // `1.2.3.4`, `2001:db8::1`, or with a port: `1.2.3.4:5`, `[2001:db8::1]:5`.
        let ip = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))?
            .to_canonical();
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(h[TE], "trailers");
    }

    #[test]
    fn te_named_by_connection_goes_whole() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("te"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn each_hop_by_hop_header_goes_even_alone() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "te",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-kept", HeaderValue::from_static("1"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, ["x-kept"], "{name}");
        }
    }

    #[test]
    fn named_headers_go_in_every_spelling_and_every_copy() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-auth-request-email", "a"),
            ("X-Auth-Request-Email", "b"),
            ("x_auth_request_email", "c"),
            ("X_Auth-Request_Email", "d"),
            ("x-auth-request-emails", "kept"),
            ("x-auth-request-user", "kept"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        remove_named(&mut h, [&HeaderName::from_static("x-auth-request-email")]);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["x-auth-request-emails", "x-auth-request-user"]);
    }

    /// `set_forwarded` for an HTTPS request from `peer`, with 203.0.113.0/24 trusted.
    fn forwarded_by_trusted_proxy(h: &mut HeaderMap, peer: SocketAddr) {
        let trusted = ["203.0.113.0/24".parse().unwrap()];
        set_forwarded(
            h,
            &ConnValues::new(peer, 443),
            true,
            "app.example.com",
            &trusted,
        );
    }

    #[test]
    fn forwarded_headers_are_replaced_unless_the_peer_is_trusted() {
        let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(
            &mut h,
            &ConnValues::new(peer, 443),
            false,
            "app.example.com",
            &[],
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-forwarded-host"], "app.example.com");

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS, http"));
        forwarded_by_trusted_proxy(&mut h, peer);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_trusted_proxys_forwarded_for_lines_are_all_kept_in_order() {
        let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        forwarded_by_trusted_proxy(&mut h, peer);
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["6.6.6.6, 1.2.3.4, 5.6.7.8, 203.0.113.9"]);
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let outsider: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(
            client_ip(&xff(&["10.1.1.1"]), outsider, &trusted),
            ip("203.0.113.9"),
            "an untrusted peer's X-Forwarded-For does not count"
        );
        assert_eq!(client_ip(&xff(&[]), proxy, &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_ip(&xff(&["10.9.9.9, 198.51.100.1"]), proxy, &trusted),
            ip("198.51.100.1"),
            "the right-most untrusted address, not what the client wrote before it"
        );
        assert_eq!(
            client_ip(&xff(&["198.51.100.1, 10.0.0.7"]), proxy, &trusted),
            ip("198.51.100.1"),
            "trusted hops are skipped"
        );
        assert_eq!(
            client_ip(&xff(&["198.51.100.1", "10.0.0.7:443"]), proxy, &trusted),
            ip("198.51.100.1"),
            "repeated headers are one list; ports are dropped"
        );
        assert_eq!(
            client_ip(&xff(&["[2001:db8::1]:443"]), proxy, &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(&xff(&["::ffff:198.51.100.1"]), proxy, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(&xff(&["unknown"]), proxy, &trusted),
            None,
            "no address, no pass"
        );
        assert_eq!(
            client_ip(&xff(&["junk, 198.51.100.1"]), proxy, &trusted),
            ip("198.51.100.1"),
            "what lies beyond the client is not read"
        );
    }

    #[test]
    fn only_a_trusted_peer_says_the_client_used_https_and_every_value_must_agree() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let says = |pairs: &[(&str, &str)]| forwarded_https(&with(pairs), proxy, &trusted);
        assert_eq!(
            forwarded_https(&with(&[("x-forwarded-proto", "https")]), stranger, &trusted),
            None
        );
        assert_eq!(says(&[]), None, "a trusted peer that names no scheme");
        assert_eq!(says(&[("x-forwarded-proto", "https")]), Some(true));
        assert_eq!(says(&[("x-forwarded-proto", "HTTPS")]), Some(true));
        assert_eq!(says(&[("x-forwarded-proto", "http")]), Some(false));
        assert_eq!(
            says(&[("forwarded", "for=198.51.100.1;proto=https")]),
            Some(true)
        );
        assert_eq!(
            says(&[("forwarded", "for=198.51.100.1;proto=\"https\"")]),
            Some(true)
        );
        assert_eq!(
            says(&[("forwarded", "proto=https"), ("x-forwarded-proto", "https")]),
            Some(true)
        );
        for disagreeing in [
            &[("x-forwarded-proto", "https, http")][..],
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-proto", "http"),
            ],
            &[("forwarded", "proto=https,proto=http")],
            &[("forwarded", "proto=https"), ("x-forwarded-proto", "http")],
            &[("x-forwarded-proto", "https"), ("forwarded", "for")],
            &[("x-forwarded-proto", "")],
            &[("x-forwarded-proto", "ftp")],
            &[("x-forwarded-proto", "https;")],
        ] {
            assert_eq!(says(disagreeing), Some(false), "{disagreeing:?}");
        }
    }
}
