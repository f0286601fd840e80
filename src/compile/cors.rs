//! The HTTPRoute `CORS` filter as the data plane applies it: which origins, methods
//! and headers a route lets other sites use. Origins are read once here, so a request
//! is matched without parsing the configuration again.

use gateway_api::httproutes::HttpRouteRulesFiltersCors;
use http::HeaderValue;

/// An allowed origin: any, or a scheme, a host (exact, or a `*.` suffix covering any
/// number of labels) and a port (the scheme's default when none is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigin {
    Any,
    Site {
        scheme: String,
        host: HostPattern,
        port: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`: the suffix with its leading dot.
    Under(String),
}

/// A route's CORS policy.
#[derive(Clone, Debug)]
pub struct Cors {
    pub origins: Vec<AllowedOrigin>,
    /// `None`: `*` (any method).
    pub methods: Option<HeaderValue>,
    /// `None`: `*` (any header); empty: none beyond the safelisted ones.
    pub headers: Option<HeaderValue>,
    pub expose: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub credentials: bool,
}

/// The policy of a `cors` filter, or what in it cannot be served.
pub fn compile(spec: &HttpRouteRulesFiltersCors) -> Result<Cors, String> {
    let origins = spec
        .allow_origins
        .iter()
        .flatten()
        .map(|o| allowed_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    let methods = list_or_any(spec.allow_methods.as_deref(), "allowMethods")?;
    let headers = list_or_any(spec.allow_headers.as_deref(), "allowHeaders")?;
    let expose =
        match list_or_any(spec.expose_headers.as_deref(), "exposeHeaders")? {
            // `*` exposes every header only to requests without credentials.
            None if spec.allow_credentials != Some(true) => Some(HeaderValue::from_static("*")),
            None => return Err(
                "exposeHeaders \"*\" cannot be combined with allowCredentials: name the headers"
                    .into(),
            ),
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v),
        };
    let max_age = spec
        .max_age
        .filter(|s| *s > 0)
        .map(|s| HeaderValue::from(s as u32));
    Ok(Cors {
        origins,
        methods,
        headers,
        expose,
        max_age,
        credentials: spec.allow_credentials == Some(true),
    })
}

/// The names joined by `, `; `None` when the list holds `*`.
fn list_or_any(names: Option<&[String]>, field: &str) -> Result<Option<HeaderValue>, String> {
    let names = names.unwrap_or_default();
    if names.iter().any(|n| n == "*") {
        return Ok(None);
    }
    for n in names {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(format!("{field} has {n:?}, which is not a token"));
        }
    }
    HeaderValue::from_str(&names.join(", "))
        .map(Some)
        .map_err(|_| format!("{field} cannot be a header value"))
}

/// `*`, or `scheme://host[:port]` with an optional leading `*` label in the host.
fn allowed_origin(raw: &str) -> Result<AllowedOrigin, String> {
    if raw == "*" {
        return Ok(AllowedOrigin::Any);
    }
    let bad =
        || format!("allowOrigins has {raw:?}, which is neither \"*\" nor scheme://host[:port]");
    let (scheme, host, port) = split_origin(raw).ok_or_else(bad)?;
    let host = match host.strip_prefix('*') {
        Some(rest) if rest.starts_with('.') && !rest.contains('*') => {
            HostPattern::Under(rest.to_owned())
        }
        Some(_) => return Err(bad()),
        None if host.contains('*') => return Err(bad()),
        None => HostPattern::Exact(host),
    };
    Ok(AllowedOrigin::Site { scheme, host, port })
}

/// An origin's scheme and host in lower case and its port (the scheme's default when
/// none is written); `None` when it is not `scheme://host[:port]`.
pub fn split_origin(raw: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = raw.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    // An IPv6 literal keeps its colons inside brackets.
    let port_at = match rest.rfind(']') {
        Some(close) => rest[close..].find(':').map(|i| close + i),
        None => rest.rfind(':'),
    };
    let (host, port) = match port_at {
        Some(i) => {
            let p = &rest[i + 1..];
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (&rest[..i], p.parse::<u16>().ok().filter(|p| *p > 0)?)
        }
        None => (rest, default_port(&scheme)?),
    };
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"-.*[]:".contains(&b);
    if host.is_empty() || !host.bytes().all(valid) {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_read_with_default_ports_and_wildcards() {
        assert_eq!(allowed_origin("*"), Ok(AllowedOrigin::Any));
        assert_eq!(
            allowed_origin("https://*.bar.com"),
            Ok(AllowedOrigin::Site {
                scheme: "https".into(),
                host: HostPattern::Under(".bar.com".into()),
                port: 443
            })
        );
        assert_eq!(
            allowed_origin("HTTP://Foo.com:8080"),
            Ok(AllowedOrigin::Site {
                scheme: "http".into(),
                host: HostPattern::Exact("foo.com".into()),
                port: 8080
            })
        );
        for bad in [
            "foo.com",
            "https://a.*.com",
            "https://*bar.com",
            "https://x:0",
            "https://x:99999",
            "https://",
            "https://a b",
        ] {
            assert!(allowed_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_join_and_wildcards_stay_wildcards() {
        let spec = HttpRouteRulesFiltersCors {
            allow_origins: Some(vec!["https://www.foo.com".into()]),
            allow_methods: Some(vec!["GET".into(), "OPTIONS".into()]),
            allow_headers: Some(vec!["*".into()]),
            expose_headers: Some(vec!["x-a".into(), "x-b".into()]),
            max_age: Some(3600),
            allow_credentials: Some(true),
        };
        let cors = compile(&spec).unwrap();
        assert_eq!(cors.methods.unwrap(), "GET, OPTIONS");
        assert!(cors.headers.is_none());
        assert_eq!(cors.expose.unwrap(), "x-a, x-b");
        assert_eq!(cors.max_age.unwrap(), "3600");
        let smuggled = HttpRouteRulesFiltersCors {
            allow_headers: Some(vec!["x-a\r\nx-b".into()]),
            ..spec
        };
        assert!(compile(&smuggled).is_err());
    }
}
