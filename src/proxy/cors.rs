//! The HTTPRoute `CORS` filter on the request path: a preflight from an allowed origin
//! is answered here, and the backend's answer to an allowed origin gets the filter's
//! `Access-Control-*` headers. It runs after the route's guard, so it never answers a
//! preflight the guard refused, and a request without a session never reaches it.
//! The filter owns the route's CORS headers: whatever the backend sent is replaced.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};

use crate::compile::cors::{AllowedOrigin, Cors, HostPattern, split_origin};

/// The request's one `Origin`, when the policy allows it; `None` for no origin, two
/// of them, `null`, or one the policy does not list.
pub fn allowed_origin(cors: &Cors, headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all(ORIGIN).iter();
    let (Some(origin), None) = (all.next(), all.next()) else {
        return None;
    };
    let (scheme, host, port) = split_origin(origin.to_str().ok()?)?;
    if host.contains('*') {
        return None;
    }
    let admits = |allowed: &AllowedOrigin| match allowed {
        AllowedOrigin::Any => true,
        AllowedOrigin::Site {
            scheme: s,
            host: h,
            port: p,
        } => {
            *s == scheme
                && *p == port
                && match h {
                    HostPattern::Exact(name) => *name == host,
                    HostPattern::Under(suffix) => {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    }
                }
        }
    };
    cors.origins.iter().any(admits).then(|| origin.clone())
}

/// The headers of the answer to a preflight (`OPTIONS` with an `Origin` and an
/// `Access-Control-Request-Method`): the filter's `Access-Control-*` headers for an
/// allowed origin, none for another (the browser then refuses the request); `None`
/// for any other request, which goes on to the backend.
pub fn preflight(cors: &Cors, method: &Method, headers: &HeaderMap) -> Option<HeaderMap> {
    if !is_preflight(method, headers) {
        return None;
    }
    let requested = single(headers, &ACCESS_CONTROL_REQUEST_METHOD)?;
    let mut out = HeaderMap::new();
    out.insert(
        VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    let Some(origin) = allowed_origin(cors, headers) else {
        return Some(out);
    };
    allow(cors, origin, &mut out);
    // A wildcard answers with what was asked: `*` means nothing to a request with
    // credentials.
    out.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        cors.methods.clone().unwrap_or(requested),
    );
    let asked_headers = single(headers, &ACCESS_CONTROL_REQUEST_HEADERS);
    match (&cors.headers, asked_headers) {
        (Some(listed), _) if !listed.is_empty() => {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, listed.clone());
        }
        (None, Some(asked)) => {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked);
        }
        _ => {}
    }
    if let Some(age) = &cors.max_age {
        out.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
    }
    Some(out)
}

/// The backend's answer as the filter gives it: its own CORS headers gone, the
/// filter's in their place when the request's origin is allowed.
pub fn response(cors: &Cors, origin: Option<HeaderValue>, headers: &mut HeaderMap) {
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_MAX_AGE,
    ] {
        headers.remove(name);
    }
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        allow(cors, origin, headers);
    }
}

/// The origin echoed (never `*`, so the answer holds with or without credentials),
/// credentials and exposed headers.
fn allow(cors: &Cors, origin: HeaderValue, out: &mut HeaderMap) {
    out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.credentials {
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(expose) = &cors.expose {
        out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
}

/// Whether a request is a CORS preflight, as a browser sends one: `OPTIONS` with one
/// `Origin` and one non-empty `Access-Control-Request-Method`. The guard lets only
/// these through without a session (when an AuthRule allows preflights) and a CORS
/// filter answers exactly these, so no request is one to the guard and not to the
/// filter, which would send it on to the backend unauthenticated.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && single(headers, &ORIGIN).is_some()
        && single(headers, &ACCESS_CONTROL_REQUEST_METHOD).is_some_and(|m| !m.is_empty())
}

fn single(headers: &HeaderMap, name: &http::HeaderName) -> Option<HeaderValue> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::httproutes::HttpRouteRulesFiltersCors;

    fn policy(origins: &[&str], credentials: bool) -> Cors {
        crate::compile::cors::compile(&HttpRouteRulesFiltersCors {
            allow_origins: Some(origins.iter().map(|o| o.to_string()).collect()),
            allow_methods: Some(vec!["*".into()]),
            allow_headers: Some(vec!["*".into()]),
            allow_credentials: Some(credentials),
            ..Default::default()
        })
        .unwrap()
    }

    fn with_origin(origins: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for o in origins {
            h.append(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn origins_match_by_scheme_host_and_port_in_every_spelling() {
        let cors = policy(
            &[
                "https://www.foo.com",
                "https://*.bar.com",
                "http://x.test:8080",
            ],
            true,
        );
        for (origin, allowed) in [
            ("https://www.foo.com", true),
            ("HTTPS://WWW.FOO.COM", true),
            ("https://www.foo.com:443", true),
            ("https://www.foo.com:8443", false),
            ("http://www.foo.com", false),
            ("https://a.b.bar.com", true),
            ("https://bar.com", false),
            ("https://.bar.com", false),
            ("https://evilbar.com", false),
            ("https://www.foo.com.evil.test", false),
            ("http://x.test:8080", true),
            ("http://x.test", false),
            ("null", false),
            ("https://*.bar.com", false),
            ("https://user@www.foo.com", false),
        ] {
            let got = allowed_origin(&cors, &with_origin(&[origin])).is_some();
            assert_eq!(got, allowed, "{origin}");
        }
        let two = with_origin(&["https://www.foo.com", "https://www.foo.com"]);
        assert!(
            allowed_origin(&cors, &two).is_none(),
            "two origins are no origin"
        );
    }

    #[test]
    fn a_preflight_is_what_a_browser_sends_and_nothing_else() {
        let mut h = with_origin(&["https://app.test"]);
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("GET"),
        );
        assert!(is_preflight(&Method::OPTIONS, &h));
        assert!(!is_preflight(&Method::GET, &h));
        let mut twice = h.clone();
        twice.append(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert!(!is_preflight(&Method::OPTIONS, &twice));
        let mut empty = h.clone();
        empty.insert(ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static(""));
        assert!(!is_preflight(&Method::OPTIONS, &empty));
        let mut no_origin = h.clone();
        no_origin.remove(ORIGIN);
        assert!(!is_preflight(&Method::OPTIONS, &no_origin));
        let mut two_origins = h;
        two_origins.append(ORIGIN, HeaderValue::from_static("https://other.test"));
        assert!(!is_preflight(&Method::OPTIONS, &two_origins));
    }

    #[test]
    fn preflights_echo_what_a_wildcard_allows_and_never_answer_strangers() {
        let cors = policy(&["*"], true);
        let mut h = with_origin(&["https://other.test"]);
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        h.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-a, x-b"),
        );
        let out = preflight(&cors, &Method::OPTIONS, &h).unwrap();
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://other.test");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_HEADERS], "x-a, x-b");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(preflight(&cors, &Method::GET, &h).is_none());
        h.remove(ACCESS_CONTROL_REQUEST_METHOD);
        assert!(
            preflight(&cors, &Method::OPTIONS, &h).is_none(),
            "plain OPTIONS"
        );
        let strict = policy(&["https://www.foo.com"], false);
        let mut h = with_origin(&["https://foobar.com"]);
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("GET"),
        );
        let refused = preflight(&strict, &Method::OPTIONS, &h).expect("answered here");
        assert!(refused.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(refused.get(ACCESS_CONTROL_ALLOW_METHODS).is_none());
    }

    #[test]
    fn the_backends_cors_headers_are_replaced() {
        let cors = policy(&["https://www.foo.com"], false);
        let mut resp = HeaderMap::new();
        resp.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        resp.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        response(&cors, None, &mut resp);
        assert!(resp.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(resp.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        let origin = HeaderValue::from_static("https://www.foo.com");
        response(&cors, Some(origin), &mut resp);
        assert_eq!(resp[ACCESS_CONTROL_ALLOW_ORIGIN], "https://www.foo.com");
        assert!(resp.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }
}
