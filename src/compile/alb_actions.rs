//! ALB's `actions.<name>` annotations: a rule whose backend is Service `<name>` with
//! port name `use-annotation` takes the annotation's action instead of a Service: a
//! redirect, a fixed response, or a weighted forward to Services. The JSON is read as
//! AWS's controller reads it (Go's `encoding/json`: field names in any case, so the
//! `{"Type": "redirect", "RedirectConfig": ...}` of older manifests works too).
//!
//! An action that cannot be read closes the rules that use it (500
//! `AnnotationInvalid`); it never leaves them to the next rule.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use k8s_openapi::api::networking::v1::{IngressBackend, IngressServiceBackend, ServiceBackendPort};
use serde::Deserialize;

use super::alb_annotations::{PREFIX, annotation_field};
use super::backend_protocol::ProtocolFrom;
use super::backends::{Index, UpstreamCache};
use super::snapshot::{Backend, Closed};
use crate::diagnostics::{Diagnostic, ObjectRef};

/// The port name that makes a backend an action.
pub const USE_ANNOTATION: &str = "use-annotation";
/// ALB's limit on a fixed response's body.
pub const MAX_MESSAGE_BODY: usize = 1024;
/// ALB's limit on each part of a redirect.
const MAX_REDIRECT_PART: usize = 128;
/// ALB's fixed-response content types.
const CONTENT_TYPES: &[&str] = &[
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

/// What a rule answers itself, instead of forwarding.
#[derive(Clone, Debug, PartialEq)]
pub enum AlbAnswer {
    Redirect(AlbRedirect),
    Fixed(FixedResponse),
}

#[derive(Clone, Debug, PartialEq)]
pub struct FixedResponse {
    pub status: u16,
    /// With `; charset=utf-8`.
    pub content_type: String,
    pub body: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
}

/// A redirect as ALB's `redirectConfig` gives it: each part a template over the
/// request's own parts (`#{protocol}`, `#{host}`, `#{port}`, `#{path}` without its
/// leading `/`, `#{query}`); a part left out keeps the request's value.
#[derive(Clone, Debug, PartialEq)]
pub struct AlbRedirect {
    /// `None`: the request's (`#{protocol}` too).
    pub protocol: Option<Protocol>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    pub status: u16,
}

/// The request's own parts, as a redirect reads them.
pub struct RequestUrl<'a> {
    pub tls: bool,
    /// Lower case, no port.
    pub host: &'a str,
    /// The port the client addressed (the scheme's own when it named none).
    pub port: u16,
    /// The canonical path.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl AlbRedirect {
    /// The `Location`. The protocol is never lowered from HTTPS to HTTP, which ALB
    /// refuses; the port is left out when it is the scheme's own.
    pub fn location(&self, req: &RequestUrl<'_>) -> String {
        let https = match self.protocol {
            Some(Protocol::Https) => true,
            Some(Protocol::Http) | None => req.tls,
        };
        let scheme = if https { "https" } else { "http" };
        let port_text = req.port.to_string();
        let keywords = [
            ("protocol", if req.tls { "https" } else { "http" }),
            ("host", req.host),
            ("port", port_text.as_str()),
            ("path", req.path.strip_prefix('/').unwrap_or(req.path)),
            ("query", req.query.unwrap_or_default()),
        ];
        let fill = |part: &Option<String>, own: &str| {
            part.as_deref()
                .map_or_else(|| own.to_owned(), |t| substitute(t, &keywords))
        };
        let host = fill(&self.host, req.host);
        let port = fill(&self.port, &port_text);
        let path = fill(&self.path, req.path);
        let query = fill(&self.query, req.query.unwrap_or_default());
        let default_port = if https { "443" } else { "80" };
        let authority = if port == default_port {
            host
        } else {
            format!("{host}:{port}")
        };
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{scheme}://{authority}{path}{query}")
    }

    /// Whether the redirect only moves the request to HTTPS, to the same host, path
    /// and query: it tells no one anything, so it is answered before any login, as
    /// ALB answers it on its HTTP listener (where it has no login).
    pub fn upgrades_only(&self) -> bool {
        self.protocol == Some(Protocol::Https) && self.keeps_host_path_query()
    }

    fn keeps_host_path_query(&self) -> bool {
        let keeps = |part: &Option<String>, own: &str| part.as_deref().is_none_or(|p| p == own);
        keeps(&self.host, "#{host}")
            && keeps(&self.path, "/#{path}")
            && keeps(&self.query, "#{query}")
    }

    /// Whether the redirect would send a request on this kind of connection to the
    /// same URL (a loop): AWS's controller leaves such a rule off that listener, so
    /// the next rule serves it. Ports are read as the schemes' own (80, 443).
    pub fn loops_on(&self, tls: bool) -> bool {
        let same_scheme = match self.protocol {
            None | Some(Protocol::Http) => true,
            Some(Protocol::Https) => tls,
        };
        let same_port = match self.port.as_deref() {
            None | Some("#{port}") => true,
            Some("443") => tls,
            Some("80") => !tls,
            Some(_) => false,
        };
        same_scheme && same_port && self.keeps_host_path_query()
    }
}

/// Replaces each `#{keyword}` of `template` once, left to right; what a value
/// brings in is never read as a keyword.
fn substitute(template: &str, keywords: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("#{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let found = after.find('}').and_then(|end| {
            let name = &after[..end];
            keywords
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v, end))
        });
        match found {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("#{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One Service of a weighted forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub service: String,
    /// A port number, or the Service port's name.
    pub port: ServicePort,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicePort {
    Number(i32),
    Name(String),
}

/// What an action annotation asks for.
#[derive(Debug, PartialEq)]
pub enum Action {
    Answer(AlbAnswer),
    Forward {
        shares: Vec<Share>,
        /// `targetGroupStickinessConfig.enabled`: not given here (reported).
        sticky: bool,
    },
}

/// Why an action annotation cannot be used: the problem and its fix.
#[derive(Debug, PartialEq)]
pub struct Problem {
    pub message: String,
    pub fix: String,
}

fn problem(message: impl Into<String>, fix: &str) -> Problem {
    Problem {
        message: message.into(),
        fix: fix.into(),
    }
}

/// The annotation key of action `name`.
pub fn key(name: &str) -> String {
    format!("{PREFIX}actions.{name}")
}

/// The field of action `name`, for diagnostics.
pub fn field(name: &str) -> String {
    annotation_field(&format!("actions.{name}"))
}

/// The action the annotations name for `service`, or why there is none usable.
pub fn action_for(
    annotations: Option<&BTreeMap<String, String>>,
    service: &str,
) -> Result<Action, Problem> {
    let Some(value) = annotations.and_then(|a| a.get(&key(service))) else {
        return Err(problem(
            format!(
                "the backend is Service {service:?} with port use-annotation, but the Ingress has no annotation {}",
                key(service)
            ),
            r#"add the action, e.g. {"type":"fixed-response","fixedResponseConfig":{"statusCode":"404"}}, or point the backend at a real Service port"#,
        ));
    };
    parse(value)
}

const JSON_FIX: &str = r#"e.g. {"type":"redirect","redirectConfig":{"protocol":"HTTPS","port":"443","statusCode":"HTTP_301"}}, {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"down"}} or {"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"a","servicePort":80,"weight":90},{"serviceName":"b","servicePort":80,"weight":10}]}}"#;

/// An action's JSON, with field names in any case.
pub fn parse(value: &str) -> Result<Action, Problem> {
    let raw: serde_json::Value = serde_json::from_str(value).map_err(|e| {
        problem(
            format!("not the JSON AWS Load Balancer Controller reads: {e}"),
            JSON_FIX,
        )
    })?;
    let folded = fold_keys(raw).map_err(|e| problem(e, JSON_FIX))?;
    let json: ActionJson =
        serde_path_to_error::deserialize(folded).map_err(|e| problem(shape_error(&e), JSON_FIX))?;
    match json.kind.as_str() {
        "redirect" => redirect(json.redirect).map(|r| Action::Answer(AlbAnswer::Redirect(r))),
        "fixed-response" => fixed(json.fixed).map(|f| Action::Answer(AlbAnswer::Fixed(f))),
        "forward" => forward(
            json.forward,
            json.target_group_arn.or(json.target_group_name),
        ),
        other => Err(problem(
            format!("type {other:?} is not redirect, fixed-response or forward"),
            JSON_FIX,
        )),
    }
}

/// Where the JSON does not have the shape AWS's controller reads, and why (field
/// names as folded to lower case).
pub(super) fn shape_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    match e.path().to_string().as_str() {
        "." => format!(
            "not the shape AWS Load Balancer Controller reads: {}",
            e.inner()
        ),
        path => format!("{path}: {}", e.inner()),
    }
}

/// Object keys in lower case, as Go matches them to fields; two keys that differ
/// only in case are refused (Go would take either).
pub(super) fn fold_keys(value: serde_json::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let lower = k.to_ascii_lowercase();
                if out.contains_key(&lower) {
                    return Err(format!(
                        "field {k:?} is given twice (names differ only in case)"
                    ));
                }
                out.insert(lower, fold_keys(v)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(fold_keys).collect::<Result<_, _>>()?)
        }
        other => other,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, rename = "targetgrouparn")]
    target_group_arn: Option<String>,
    #[serde(default, rename = "targetgroupname")]
    target_group_name: Option<String>,
    #[serde(default, rename = "fixedresponseconfig")]
    fixed: Option<FixedJson>,
    #[serde(default, rename = "redirectconfig")]
    redirect: Option<RedirectJson>,
    #[serde(default, rename = "forwardconfig")]
    forward: Option<ForwardJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedJson {
    #[serde(default, rename = "contenttype")]
    content_type: Option<String>,
    #[serde(default, rename = "messagebody")]
    message_body: Option<String>,
    #[serde(default, rename = "statuscode")]
    status_code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectJson {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    port: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default, rename = "statuscode")]
    status_code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardJson {
    #[serde(default, rename = "targetgroups")]
    target_groups: Vec<TupleJson>,
    #[serde(default, rename = "targetgroupstickinessconfig")]
    stickiness: Option<StickinessJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TupleJson {
    #[serde(default, rename = "targetgrouparn")]
    target_group_arn: Option<String>,
    #[serde(default, rename = "targetgroupname")]
    target_group_name: Option<String>,
    #[serde(default, rename = "servicename")]
    service_name: Option<String>,
    #[serde(default, rename = "serviceport")]
    service_port: Option<serde_json::Value>,
    #[serde(default)]
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StickinessJson {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, rename = "durationseconds")]
    #[allow(dead_code)]
    duration_seconds: Option<i64>,
}

fn fixed(config: Option<FixedJson>) -> Result<FixedResponse, Problem> {
    const FIX: &str = r#"e.g. "fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"down for maintenance"}"#;
    let config = config.ok_or_else(|| problem("fixed-response needs fixedResponseConfig", FIX))?;
    let status: u16 = config.status_code.parse().unwrap_or(0);
    if !matches!(status / 100, 2 | 4 | 5) {
        return Err(problem(
            format!(
                "fixedResponseConfig.statusCode {:?} is not a 2XX, 4XX or 5XX code",
                config.status_code
            ),
            FIX,
        ));
    }
    let content_type = config.content_type.unwrap_or_else(|| "text/plain".into());
    if !CONTENT_TYPES.contains(&content_type.as_str()) {
        return Err(problem(
            format!(
                "fixedResponseConfig.contentType {content_type:?} is not one ALB sends ({})",
                CONTENT_TYPES.join(", ")
            ),
            FIX,
        ));
    }
    let body = config.message_body.unwrap_or_default();
    if body.len() > MAX_MESSAGE_BODY {
        return Err(problem(
            format!(
                "fixedResponseConfig.messageBody is {} bytes; ALB allows {MAX_MESSAGE_BODY}",
                body.len()
            ),
            FIX,
        ));
    }
    Ok(FixedResponse {
        status,
        content_type: format!("{content_type}; charset=utf-8"),
        body: Bytes::from(body),
    })
}

fn redirect(config: Option<RedirectJson>) -> Result<AlbRedirect, Problem> {
    const FIX: &str = r##"e.g. "redirectConfig":{"protocol":"HTTPS","port":"443","host":"#{host}","path":"/#{path}","query":"#{query}","statusCode":"HTTP_301"}"##;
    let config = config.ok_or_else(|| problem("redirect needs redirectConfig", FIX))?;
    let status = match config.status_code.as_str() {
        "HTTP_301" => 301,
        "HTTP_302" => 302,
        other => {
            return Err(problem(
                format!("redirectConfig.statusCode {other:?} is not HTTP_301 or HTTP_302"),
                FIX,
            ));
        }
    };
    let protocol = match config.protocol.as_deref() {
        None | Some("#{protocol}") => None,
        Some("HTTP") => Some(Protocol::Http),
        Some("HTTPS") => Some(Protocol::Https),
        Some(other) => {
            return Err(problem(
                format!("redirectConfig.protocol {other:?} is not HTTP, HTTPS or #{{protocol}}"),
                FIX,
            ));
        }
    };
    let bad = |message: String| Err(problem(message, FIX));
    if let Some(port) = config.port.as_deref()
        && port != "#{port}"
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return bad(format!(
            "redirectConfig.port {port:?} is not a port from 1 to 65535 or #{{port}}"
        ));
    }
    let host = part("host", config.host, &["host"], |b| {
        b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
    })?;
    let path = part("path", config.path, &["host", "path", "port"], |b| {
        b.is_ascii_graphic() && b != b'?' && b != b'#'
    })?;
    if path.as_deref().is_some_and(|p| !p.starts_with('/')) {
        return bad("redirectConfig.path must start with /".into());
    }
    let query = part(
        "query",
        config.query,
        &["protocol", "host", "port", "path", "query"],
        |b| b.is_ascii_graphic() && b != b'#',
    )?;
    Ok(AlbRedirect {
        protocol,
        host,
        port: config.port,
        path,
        query,
        status,
    })
}

/// A part of a redirect: at most 128 characters, only the keywords ALB allows in it,
/// and otherwise only characters `allowed` (no spaces or controls: it becomes a
/// header).
fn part(
    name: &str,
    value: Option<String>,
    keywords: &[&str],
    allowed: impl Fn(u8) -> bool,
) -> Result<Option<String>, Problem> {
    const FIX: &str = "write each part of redirectConfig as ALB takes it: host, path (from /), port and query, with #{host}, #{path}, #{port}, #{query} and #{protocol} where ALB allows them";
    let Some(value) = value else {
        return Ok(None);
    };
    if value.len() > MAX_REDIRECT_PART {
        return Err(problem(
            format!("redirectConfig.{name} is longer than {MAX_REDIRECT_PART} characters"),
            FIX,
        ));
    }
    let mut rest = value.as_str();
    let mut literal = String::new();
    while let Some(at) = rest.find("#{") {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err(problem(
                format!("redirectConfig.{name} {value:?} has an unclosed #{{"),
                FIX,
            ));
        };
        if !keywords.contains(&&after[..end]) {
            return Err(problem(
                format!(
                    "redirectConfig.{name} may hold only {}, not #{{{}}}",
                    keywords
                        .iter()
                        .map(|k| format!("#{{{k}}}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    &after[..end]
                ),
                FIX,
            ));
        }
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if let Some(c) = literal.bytes().find(|b| !allowed(*b)) {
        return Err(problem(
            format!(
                "redirectConfig.{name} {value:?} holds {:?}, which it may not",
                c as char
            ),
            FIX,
        ));
    }
    if name == "host" && value.is_empty() {
        return Err(problem("redirectConfig.host is empty", FIX));
    }
    Ok(Some(value))
}

fn forward(config: Option<ForwardJson>, target_group: Option<String>) -> Result<Action, Problem> {
    const FIX: &str = r#"forward to Services of the Ingress's namespace: "forwardConfig":{"targetGroups":[{"serviceName":"a","servicePort":80,"weight":90},{"serviceName":"b","servicePort":"http","weight":10}]}"#;
    if let Some(group) = target_group {
        return Err(problem(
            format!(
                "target group {group:?} lives outside the cluster; Portcullis forwards only to Services"
            ),
            FIX,
        ));
    }
    let config = config.ok_or_else(|| problem("forward needs forwardConfig", FIX))?;
    if config.target_groups.is_empty() {
        return Err(problem("forwardConfig.targetGroups is empty", FIX));
    }
    let several = config.target_groups.len() > 1;
    let mut shares = Vec::new();
    for (i, t) in config.target_groups.into_iter().enumerate() {
        let at = format!("forwardConfig.targetGroups[{i}]");
        if let Some(group) = t.target_group_arn.or(t.target_group_name) {
            return Err(problem(
                format!(
                    "{at}: target group {group:?} lives outside the cluster; Portcullis forwards only to Services"
                ),
                FIX,
            ));
        }
        let service = t
            .service_name
            .filter(|s| !s.is_empty())
            .ok_or_else(|| problem(format!("{at} names no serviceName"), FIX))?;
        let port = match t.service_port {
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(ServicePort::Number),
            // `"80"` is the number, as AWS's controller reads it.
            Some(serde_json::Value::String(s)) => Some(match s.parse::<i32>() {
                Ok(n) => ServicePort::Number(n),
                Err(_) => ServicePort::Name(s),
            }),
            _ => None,
        }
        .ok_or_else(|| {
            problem(
                format!("{at} needs servicePort, a number or a port name"),
                FIX,
            )
        })?;
        let weight = match t.weight {
            None if several => {
                return Err(problem(
                    format!(
                        "{at} has no weight; every target group needs one when there are several"
                    ),
                    FIX,
                ));
            }
            None => 1,
            Some(w) => u32::try_from(w)
                .ok()
                .filter(|w| *w <= 999)
                .ok_or_else(|| problem(format!("{at}.weight {w} is not from 0 to 999"), FIX))?,
        };
        shares.push(Share {
            service,
            port,
            weight,
        });
    }
    if shares.iter().all(|s| s.weight == 0) {
        return Err(problem("every target group has weight 0", FIX));
    }
    Ok(Action::Forward {
        shares,
        sticky: config.stickiness.is_some_and(|s| s.enabled == Some(true)),
    })
}

/// A path's backend as the data plane serves it.
pub(super) struct Resolved {
    pub backend: Backend,
    pub answer: Option<Arc<AlbAnswer>>,
    /// A redirect that would send requests of one listener to themselves is left off
    /// that listener (`Some(https)`: only on the other one).
    pub listener: Option<bool>,
    /// The action cannot be used: the rule answers this error.
    pub closed: Option<Arc<Closed>>,
}

/// Resolves the backends of one Ingress: Service ports, and actions for port name
/// `use-annotation`. Each broken action is reported once, on its annotation.
pub(super) struct Backends<'a> {
    pub index: &'a Index<'a>,
    pub upstreams: &'a mut UpstreamCache,
    pub object: &'a ObjectRef,
    pub annotations: Option<&'a BTreeMap<String, String>>,
    pub reported: HashSet<String>,
}

impl Backends<'_> {
    /// `None`: the rule is left out, since its redirect sends every request to itself
    /// (reported).
    pub fn resolve(
        &mut self,
        backend: &IngressBackend,
        field: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Resolved> {
        let action = backend
            .service
            .as_ref()
            .filter(|s| s.port.as_ref().and_then(|p| p.name.as_deref()) == Some(USE_ANNOTATION));
        let Some(service) = action else {
            let namespace = &self.object.namespace;
            let from = ProtocolFrom::Alb(self.annotations);
            let backend = self.upstreams.resolve(
                self.index,
                namespace,
                backend,
                from,
                self.object,
                field,
                diags,
            );
            return Some(Resolved::forward(backend));
        };
        let name = service.name.as_str();
        match action_for(self.annotations, name) {
            Ok(Action::Answer(answer)) => self.answer(answer, name, field, diags),
            Ok(Action::Forward { shares, sticky }) => {
                if sticky && self.reported.insert(name.to_owned()) {
                    diags.push(Diagnostic::warning(
                        self.object,
                        &self::field(name),
                        "AnnotationNotHonoured",
                        "targetGroupStickinessConfig is not honoured: each request picks its Service by weight anew".into(),
                        "remove the stickiness, or keep a client on one version by other means (a header condition)".into(),
                    ));
                }
                Some(Resolved::forward(self.split(&shares, field, diags)))
            }
            Err(p) => {
                let message = format!(
                    "{}; the rules that use action {name} answer 500 AnnotationInvalid until it is fixed",
                    p.message
                );
                if self.reported.insert(name.to_owned()) {
                    diags.push(Diagnostic::error(
                        self.object,
                        &self::field(name),
                        "InvalidAnnotation",
                        message.clone(),
                        p.fix,
                    ));
                }
                Some(Resolved {
                    closed: Some(Arc::new(Closed {
                        reason: "AnnotationInvalid",
                        problem: format!("{} {field}: {message}", self.object),
                    })),
                    ..Resolved::forward(Backend::Invalid {
                        reason: format!("action {name} cannot be used"),
                    })
                })
            }
        }
    }

    fn answer(
        &mut self,
        answer: AlbAnswer,
        name: &str,
        field: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Resolved> {
        let listener = match &answer {
            AlbAnswer::Redirect(r) => match (r.loops_on(true), r.loops_on(false)) {
                (true, true) => {
                    diags.push(Diagnostic::warning(
                        self.object,
                        field,
                        "RedirectLoop",
                        format!("action {name} redirects every request to itself; AWS's controller leaves such a rule out, and so does Portcullis"),
                        "change the redirect's protocol, host, port or path".into(),
                    ));
                    return None;
                }
                (true, false) => Some(false),
                (false, true) => Some(true),
                (false, false) => None,
            },
            AlbAnswer::Fixed(_) => None,
        };
        Some(Resolved {
            backend: Backend::Invalid {
                reason: format!("answered by action {name}"),
            },
            answer: Some(Arc::new(answer)),
            listener,
            closed: None,
        })
    }

    /// The shares as one backend: each Service port resolved as a path's would be.
    fn split(&mut self, shares: &[Share], field: &str, diags: &mut Vec<Diagnostic>) -> Backend {
        let mut resolved: Vec<(u32, Backend)> = Vec::new();
        for share in shares {
            let port = match &share.port {
                ServicePort::Number(n) => ServiceBackendPort {
                    number: Some(*n),
                    name: None,
                },
                ServicePort::Name(n) => ServiceBackendPort {
                    number: None,
                    name: Some(n.clone()),
                },
            };
            let backend = IngressBackend {
                service: Some(IngressServiceBackend {
                    name: share.service.clone(),
                    port: Some(port),
                }),
                resource: None,
            };
            let namespace = &self.object.namespace;
            let from = ProtocolFrom::Alb(self.annotations);
            let b = self.upstreams.resolve(
                self.index,
                namespace,
                &backend,
                from,
                self.object,
                field,
                diags,
            );
            resolved.push((share.weight, b));
        }
        match resolved.as_slice() {
            [(_, only)] => only.clone(),
            _ => Backend::Split(resolved.into_iter().filter(|(w, _)| *w > 0).collect()),
        }
    }
}

impl Resolved {
    fn forward(backend: Backend) -> Self {
        Self {
            backend,
            answer: None,
            listener: None,
            closed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> AlbAnswer {
        match parse(json) {
            Ok(Action::Answer(a)) => a,
            other => panic!("{json}: {other:?}"),
        }
    }

    fn redirect_of(json: &str) -> AlbRedirect {
        match answer(json) {
            AlbAnswer::Redirect(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn url<'a>(tls: bool, path: &'a str, query: Option<&'a str>) -> RequestUrl<'a> {
        RequestUrl {
            tls,
            host: "app.example.com",
            port: if tls { 443 } else { 80 },
            path,
            query,
        }
    }

    #[test]
    fn the_classic_ssl_redirect_action_reads_in_any_case() {
        let r = redirect_of(
            r#"{"Type": "redirect", "RedirectConfig": { "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}"#,
        );
        assert_eq!(r.status, 301);
        assert_eq!(
            r.location(&url(false, "/a/b", Some("x=1"))),
            "https://app.example.com/a/b?x=1"
        );
        assert!(r.upgrades_only());
        assert!(r.loops_on(true), "left off the HTTPS listener");
        assert!(!r.loops_on(false));
    }

    #[test]
    fn placeholders_fill_each_part_once() {
        let r = redirect_of(
            r##"{"type":"redirect","redirectConfig":{"host":"www.#{host}","path":"/new/#{path}/#{port}","query":"#{query}&from=#{protocol}","statusCode":"HTTP_302"}}"##,
        );
        assert_eq!(r.status, 302);
        assert_eq!(
            r.location(&url(false, "/old/page", Some("a=1"))),
            "http://www.app.example.com/new/old/page/80?a=1&from=http"
        );
        // What the request brings in is never read as a keyword.
        assert_eq!(
            r.location(&url(true, "/%23%7Bhost%7D", Some("q=#{host}"))),
            "https://www.app.example.com/new/%23%7Bhost%7D/443?q=#{host}&from=https"
        );
        assert!(!r.loops_on(true) && !r.loops_on(false));
        assert!(!r.upgrades_only());
    }

    #[test]
    fn a_redirect_keeps_what_it_does_not_name_and_never_lowers_https() {
        let to_eks = redirect_of(
            r#"{"type":"redirect","redirectConfig":{"host":"aws.amazon.com","path":"/eks/","port":"443","protocol":"HTTPS","query":"k=v","statusCode":"HTTP_302"}}"#,
        );
        assert_eq!(
            to_eks.location(&url(false, "/eks", None)),
            "https://aws.amazon.com/eks/?k=v"
        );
        let plain = redirect_of(
            r#"{"type":"redirect","redirectConfig":{"protocol":"HTTP","path":"/moved","statusCode":"HTTP_301"}}"#,
        );
        assert_eq!(
            plain.location(&url(true, "/x", Some("a=b"))),
            "https://app.example.com/moved?a=b"
        );
        let port = redirect_of(
            r#"{"type":"redirect","redirectConfig":{"port":"8443","protocol":"HTTPS","statusCode":"HTTP_301"}}"#,
        );
        assert_eq!(
            port.location(&url(false, "/", None)),
            "https://app.example.com:8443/"
        );
    }

    #[test]
    fn fixed_responses_are_bounded() {
        assert_eq!(
            answer(
                r#"{"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"503 error text"}}"#
            ),
            AlbAnswer::Fixed(FixedResponse {
                status: 503,
                content_type: "text/plain; charset=utf-8".into(),
                body: Bytes::from_static(b"503 error text"),
            })
        );
        let too_long = format!(
            r#"{{"type":"fixed-response","fixedResponseConfig":{{"statusCode":"200","messageBody":"{}"}}}}"#,
            "x".repeat(MAX_MESSAGE_BODY + 1)
        );
        assert!(parse(&too_long).unwrap_err().message.contains("1024"));
        for bad in [
            r#"{"type":"fixed-response","fixedResponseConfig":{"statusCode":"302"}}"#,
            r#"{"type":"fixed-response","fixedResponseConfig":{"statusCode":"200","contentType":"image/png"}}"#,
            r#"{"type":"fixed-response"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weighted_forwards_name_services() {
        let json = r#"{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"service-1","servicePort":"http","weight":20},{"serviceName":"service-2","servicePort":80,"weight":20},{"serviceName":"service-3","servicePort":"8080","weight":0}],"targetGroupStickinessConfig":{"enabled":true,"durationSeconds":200}}}"#;
        let Ok(Action::Forward { shares, sticky }) = parse(json) else {
            panic!()
        };
        assert!(sticky);
        assert_eq!(shares[0].port, ServicePort::Name("http".into()));
        assert_eq!(shares[1].port, ServicePort::Number(80));
        assert_eq!(shares[2].port, ServicePort::Number(8080));
        assert_eq!(
            shares.iter().map(|s| s.weight).collect::<Vec<_>>(),
            [20, 20, 0]
        );
    }

    #[test]
    fn what_cannot_be_read_is_refused_with_the_field() {
        for (json, says) in [
            (r#"{"type":"redirect""#, "JSON"),
            (r#"{"type":"teleport"}"#, "teleport"),
            (
                r#"{"type":"redirect","redirectConfig":{"statusCode":"HTTP_307"}}"#,
                "HTTP_307",
            ),
            (
                r#"{"type":"redirect","redirectConfig":{"protocol":"ftp","statusCode":"HTTP_301"}}"#,
                "protocol",
            ),
            (
                r#"{"type":"redirect","redirectConfig":{"port":"99999","statusCode":"HTTP_301"}}"#,
                "port",
            ),
            (
                r#"{"type":"redirect","redirectConfig":{"host":"a b","statusCode":"HTTP_301"}}"#,
                "host",
            ),
            (
                r##"{"type":"redirect","redirectConfig":{"host":"#{path}.x","statusCode":"HTTP_301"}}"##,
                "#{host}",
            ),
            (
                r#"{"type":"redirect","redirectConfig":{"path":"no-slash","statusCode":"HTTP_301"}}"#,
                "start with /",
            ),
            (
                "{\"type\":\"redirect\",\"redirectConfig\":{\"path\":\"/a\\r\\nSet-Cookie: x\",\"statusCode\":\"HTTP_301\"}}",
                "path",
            ),
            (
                r#"{"type":"redirect","redirectConfig":{"statuscode":"HTTP_301","hots":"x"}}"#,
                "hots",
            ),
            (r#"{"type":"redirect","Type":"redirect"}"#, "twice"),
            (
                r#"{"type":"forward","targetGroupARN":"arn:aws:elasticloadbalancing:x"}"#,
                "outside the cluster",
            ),
            (
                r#"{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"a","servicePort":80},{"serviceName":"b","servicePort":80,"weight":1}]}}"#,
                "weight",
            ),
            (
                r#"{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"a","servicePort":80,"weight":0}]}}"#,
                "weight 0",
            ),
            (
                r#"{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"a"}]}}"#,
                "servicePort",
            ),
        ] {
            let p = parse(json).expect_err(json);
            assert!(p.message.contains(says), "{json}: {}", p.message);
        }
    }
}
