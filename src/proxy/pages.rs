//! The short pages Portcullis answers with itself: an error page that shows the
//! status, the reason in plain words and the trace id (HTML for browsers, JSON for
//! scripts), and redirects.

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// Browsers ask for `text/html` when navigating; scripts and API clients do not.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// Whether the request is a browser's top-level navigation, the only kind a login
/// redirect can serve: `Sec-Fetch-Mode: navigate` where the browser sends it; never
/// with `X-Requested-With` (XHR libraries); otherwise an `Accept` naming `text/html`.
/// A `fetch()` or XHR that follows a redirect to the provider fails on CORS, so those
/// get a 401 naming the login URL instead.
pub fn is_navigation(headers: &HeaderMap) -> bool {
    if headers.contains_key("x-requested-with") {
        return false;
    }
    let mut modes = headers.get_all("sec-fetch-mode").iter();
    match (modes.next(), modes.next()) {
        (Some(mode), None) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        (Some(_), Some(_)) => false,
        (None, _) => prefers_html(headers),
    }
}

/// What an error page says.
pub struct ErrorPage<'a> {
    pub status: StatusCode,
    /// Machine-readable reason (ALB's `error_reason` where there is one).
    pub reason: &'a str,
    /// One sentence a person can act on.
    pub message: &'a str,
    /// What was checked, when that helps the person (never a secret or a claim value).
    pub detail: Option<&'a str>,
    pub trace_id: &'a str,
    /// What happened to this very request, when Portcullis knows (a callback found by
    /// its state): said instead of the reason's usual cause.
    pub what_happened: Option<&'a str>,
}

impl ErrorPage<'_> {
    pub fn render(&self, html: bool) -> Response<Body> {
        let (content_type, body) = if html {
            ("text/html; charset=utf-8", self.html())
        } else {
            ("application/json", self.json())
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// What usually causes this reason, from the catalogue `explain` uses too.
    fn cause(&self) -> Option<&'static str> {
        crate::observe::reasons::lookup(self.reason).map(|r| r.cause)
    }

    fn json(&self) -> String {
        let mut body = serde_json::json!({
            "status": self.status.as_u16(),
            "error": self.reason,
            "message": self.message,
            "traceId": self.trace_id,
        });
        match (self.what_happened, self.cause()) {
            (Some(what), _) => body["whatHappened"] = what.into(),
            (None, Some(cause)) => body["usualCause"] = cause.into(),
            (None, None) => {}
        }
        if let Some(detail) = self.detail {
            body["detail"] = detail.into();
        }
        body.to_string()
    }

    fn html(&self) -> String {
        let title = format!(
            "{} {}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("")
        );
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}}\
             code{{background:#eee;padding:.1em .3em}}</style></head><body>\
             <h1>{title}</h1><p>{}</p>{}<p>Reason: <code>{}</code>{}</p>\
             <p>Reference: <code>{}</code></p><p><small>Give this reference to the operator; it finds this request in the logs.</small></p>\
             </body></html>",
            html_escape(self.message),
            self.detail
                .map(|d| format!("<p>{}</p>", html_escape(d)))
                .unwrap_or_default(),
            html_escape(self.reason),
            match (self.what_happened, self.cause()) {
                (Some(what), _) => format!(". What happened: {}", html_escape(what)),
                (None, Some(c)) => format!(". Usually: {}", html_escape(c)),
                (None, None) => String::new(),
            },
            html_escape(self.trace_id)
        )
    }
}

/// A gRPC call: its client reads only `grpc-status`, never a page.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Portcullis's own answer to a gRPC call, in gRPC's terms: HTTP 200 with no body and
/// `grpc-status` in the headers (a "trailers-only" response), the code read from the
/// HTTP status as gRPC's own mapping reads a proxy's, and the reason and trace id in
/// `grpc-message`. The answer's other headers (a challenge, cookies, `Retry-After`)
/// are kept.
pub fn grpc_answer(resp: Response<Body>, reason: &str, trace_id: &str) -> Response<Body> {
    let code = grpc_code(resp.status());
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::OK;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(LOCATION);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts.headers.insert("grpc-status", HeaderValue::from(code));
    let message = grpc_percent_encode(&format!("{reason} (reference {trace_id})"));
    if let Ok(v) = HeaderValue::from_str(&message) {
        parts.headers.insert("grpc-message", v);
    }
    Response::from_parts(parts, empty())
}

/// gRPC's reading of an HTTP status from an intermediary
/// (`doc/http-grpc-status-mapping.md` in grpc/grpc).
fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
fn grpc_percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_top_level_navigations_are_sent_to_a_login() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            is_navigation(&h)
        };
        assert!(with(&[("accept", "text/html,application/xhtml+xml")]));
        assert!(with(&[("sec-fetch-mode", "navigate"), ("accept", "*/*")]));
        assert!(!with(&[("accept", "application/json")]));
        assert!(!with(&[("accept", "*/*")]));
        assert!(!with(&[
            ("sec-fetch-mode", "cors"),
            ("accept", "text/html")
        ]));
        assert!(!with(&[
            ("sec-fetch-mode", "no-cors"),
            ("accept", "text/html")
        ]));
        assert!(!with(&[
            ("x-requested-with", "XMLHttpRequest"),
            ("accept", "text/html")
        ]));
        assert!(!with(&[
            ("x-requested-with", "XMLHttpRequest"),
            ("sec-fetch-mode", "navigate")
        ]));
        assert!(!with(&[
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-mode", "cors")
        ]));
    }

    #[test]
    fn grpc_calls_get_a_status_never_a_page() {
        let mut headers = HeaderMap::new();
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc-web", true),
            ("application/json", false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&headers), grpc, "{ct}");
        }
        for (status, code) in [
            (401, "16"),
            (403, "7"),
            (404, "12"),
            (503, "14"),
            (500, "2"),
        ] {
            let mut page = Response::new(full("<html>"));
            *page.status_mut() = StatusCode::from_u16(status).unwrap();
            page.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            page.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            let answer = grpc_answer(page, "AuthRequired", "1-a% é");
            assert_eq!(answer.status(), StatusCode::OK);
            assert_eq!(answer.headers()["grpc-status"], code);
            assert_eq!(answer.headers()["content-type"], "application/grpc");
            assert_eq!(answer.headers()["www-authenticate"], "Bearer");
            assert_eq!(
                answer.headers()["grpc-message"],
                "AuthRequired (reference 1-a%25 %C3%A9)"
            );
            assert!(http_body::Body::is_end_stream(answer.body()));
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = ErrorPage {
            status: StatusCode::BAD_GATEWAY,
            reason: "X",
            message: "<script>",
            detail: Some("<b>groups</b>"),
            trace_id: "1-a",
            what_happened: None,
        };
        assert!(page.html().contains("&lt;script&gt;"));
        assert!(page.html().contains("<p>&lt;b&gt;groups&lt;/b&gt;</p>"));
        let json: serde_json::Value = serde_json::from_str(&page.json()).unwrap();
        assert_eq!(json["traceId"], "1-a");
        assert_eq!(json["status"], 502);
        assert_eq!(json["detail"], "<b>groups</b>");
    }

    #[test]
    fn what_happened_replaces_the_usual_cause() {
        let page = ErrorPage {
            status: StatusCode::UNAUTHORIZED,
            reason: "AuthMissingAWSALBAuthNonce",
            message: "m",
            detail: None,
            trace_id: "1-a",
            what_happened: Some("no cookies at all <b>"),
        };
        let json: serde_json::Value = serde_json::from_str(&page.json()).unwrap();
        assert_eq!(json["whatHappened"], "no cookies at all <b>");
        assert!(json.get("usualCause").is_none());
        let html = page.html();
        assert!(
            html.contains("What happened: no cookies at all &lt;b&gt;"),
            "{html}"
        );
        assert!(!html.contains("Usually"), "{html}");
    }
}
