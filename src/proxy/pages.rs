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
