//! ALB's `conditions.<name>` annotations: more conditions for the rules whose backend
//! is Service `<name>`, read as AWS's controller reads them. `http-header`,
//! `http-request-method`, `query-string` and `source-ip` narrow the rule (each holds
//! when one of its values matches; all must hold); `host-header` and `path-pattern`
//! add hosts and paths the rule also serves, as AWS's controller puts them in one
//! condition with the rule's own host and path.
//!
//! Wildcard values (`*`, `?`) become anchored, case-insensitive expressions with every
//! other character escaped; `regexValues` are ALB's expressions, searched for. Both are
//! compiled with the bounds of every route expression. A condition that cannot be read
//! closes the rule; a request whose condition cannot be told (a header or query
//! parameter sent twice, no client address) is refused, never given to the next rule.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::alb_actions::{Problem, fold_keys};
use super::alb_annotations::{PREFIX, annotation_field};
use super::snapshot::{Eval, MAX_REGEX_INPUT, RouteQuery, Unevaluable};

/// ALB's limit on a condition value.
const MAX_VALUE_LEN: usize = 128;
/// Values one condition may list (ALB allows 3 per condition, 5 per rule).
const MAX_VALUES: usize = 5;

/// A condition a request must meet, from `conditions.<name>`.
#[derive(Clone, Debug)]
pub enum AlbCondition {
    /// `host-header` values that are neither a name nor `*.` and a name (`www.*`,
    /// expressions): the request's host (lower case) matches one.
    Host(regex_lite::Regex),
    /// `http-header`: the header, present once, matches one value.
    Header {
        name: http::HeaderName,
        value: regex_lite::Regex,
    },
    /// `http-request-method`: one of these.
    Methods(Vec<http::Method>),
    /// `query-string`: one pair matches (a key of `None` matches any key).
    Query(Vec<QueryMatch>),
    /// `source-ip`: the client address is in one range.
    Sources(Vec<ipnet::IpNet>),
    /// The ALB listener the rule is on: `true` HTTPS, `false` HTTP, as the client
    /// connected (`listen-ports`, and a redirect left off the listener it would loop
    /// on).
    Listener(bool),
}

#[derive(Clone, Debug)]
pub struct QueryMatch {
    pub key: Option<regex_lite::Regex>,
    pub value: regex_lite::Regex,
}

impl PartialEq for AlbCondition {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl AlbCondition {
    pub fn eval(&self, req: &RouteQuery<'_>) -> Eval {
        match self {
            AlbCondition::Host(r) => Ok(r.is_match(req.host)),
            AlbCondition::Header { name, value } => header(req.headers, name, value),
            AlbCondition::Methods(methods) => Ok(methods.contains(req.method)),
            AlbCondition::Query(matches) => query(req.query, matches),
            AlbCondition::Sources(nets) => match req.client {
                Some(ip) => Ok(nets.iter().any(|n| n.contains(&ip.to_canonical()))),
                None => Err(Unevaluable::Ambiguous("source address".into())),
            },
            AlbCondition::Listener(https) => Ok(req.https == *https),
        }
    }
}

fn text_eval(r: &regex_lite::Regex, value: &[u8], what: impl Fn() -> String) -> Eval {
    let Ok(text) = std::str::from_utf8(value) else {
        return Err(Unevaluable::Ambiguous(what()));
    };
    if text.len() > MAX_REGEX_INPUT {
        return Err(Unevaluable::TooLong(what()));
    }
    Ok(r.is_match(text))
}

fn header(headers: &http::HeaderMap, name: &http::HeaderName, value: &regex_lite::Regex) -> Eval {
    let what = || format!("header {name}");
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(false),
        (Some(v), None) => text_eval(value, v.as_bytes(), what),
        (Some(_), Some(_)) => Err(Unevaluable::Ambiguous(what())),
    }
}

/// One of the pairs matches. A key that matches two parameters of the request (one
/// name sent twice, or two names alike but for case) cannot be read one way.
fn query(query: Option<&str>, matches: &[QueryMatch]) -> Eval {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut undecided = None;
    for m in matches {
        let eval = match &m.key {
            None => pairs.iter().try_fold(false, |found, (_, v)| {
                Ok(found || text_eval(&m.value, v.as_bytes(), || "query string".into())?)
            }),
            Some(key) => {
                let mut hits = pairs.iter().filter(|(k, _)| key.is_match(k));
                match (hits.next(), hits.next()) {
                    (None, _) => Ok(false),
                    (Some((k, v)), None) => {
                        text_eval(&m.value, v.as_bytes(), || format!("query parameter {k}"))
                    }
                    (Some((k, _)), Some(_)) => {
                        Err(Unevaluable::Ambiguous(format!("query parameter {k}")))
                    }
                }
            }
        };
        match eval {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => {
                undecided.get_or_insert(e);
            }
        }
    }
    undecided.map_or(Ok(false), Err)
}

/// Hosts a `host-header` condition adds to its rule.
#[derive(Debug, Default, PartialEq)]
pub struct ExtraHosts {
    /// Names and `*.` wildcards, served as the rule's host is.
    pub names: Vec<String>,
    /// The other values, as one condition on a rule of any host.
    pub matching: Option<AlbCondition>,
}

/// Paths a `path-pattern` condition adds to its rule.
#[derive(Debug, PartialEq)]
pub enum ExtraPaths {
    Patterns(Vec<String>),
    Expressions(Vec<String>),
}

/// What `conditions.<name>` asks of the rules whose backend is `<name>`.
#[derive(Debug, Default)]
pub struct RuleConditions {
    pub conditions: Vec<AlbCondition>,
    pub hosts: Option<ExtraHosts>,
    pub paths: Option<ExtraPaths>,
}

/// The annotation key of the conditions of `name`.
pub fn key(name: &str) -> String {
    format!("{PREFIX}conditions.{name}")
}

pub fn field(name: &str) -> String {
    annotation_field(&format!("conditions.{name}"))
}

const FIX: &str = r#"a JSON list, e.g. [{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Canary","values":["true"]}},{"field":"source-ip","sourceIpConfig":{"values":["10.0.0.0/8"]}}]"#;

fn problem(message: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        fix: FIX.into(),
    }
}

/// The conditions the annotations give the rules of `service`, if any. `fold`: paths
/// are matched in lower case.
pub fn conditions_for(
    annotations: Option<&BTreeMap<String, String>>,
    service: &str,
) -> Result<Option<RuleConditions>, Problem> {
    match annotations.and_then(|a| a.get(&key(service))) {
        Some(value) => parse(value).map(Some),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionJson {
    field: String,
    #[serde(default, rename = "hostheaderconfig")]
    host: Option<ValuesJson>,
    #[serde(default, rename = "httpheaderconfig")]
    header: Option<HeaderJson>,
    #[serde(default, rename = "httprequestmethodconfig")]
    method: Option<ValuesJson>,
    #[serde(default, rename = "pathpatternconfig")]
    path: Option<ValuesJson>,
    #[serde(default, rename = "querystringconfig")]
    query: Option<QueryJson>,
    #[serde(default, rename = "sourceipconfig")]
    source: Option<ValuesJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValuesJson {
    #[serde(default)]
    values: Vec<String>,
    #[serde(default, rename = "regexvalues")]
    regex_values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderJson {
    #[serde(rename = "httpheadername")]
    name: String,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default, rename = "regexvalues")]
    regex_values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryJson {
    #[serde(default)]
    values: Vec<PairJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairJson {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: String,
}

/// A conditions annotation's JSON, with field names in any case.
pub fn parse(value: &str) -> Result<RuleConditions, Problem> {
    let raw: serde_json::Value = serde_json::from_str(value).map_err(|e| {
        problem(format!(
            "not the JSON AWS Load Balancer Controller reads: {e}"
        ))
    })?;
    let folded = fold_keys(raw).map_err(problem)?;
    let list: Vec<ConditionJson> = serde_path_to_error::deserialize(folded)
        .map_err(|e| problem(super::alb_actions::shape_error(&e)))?;
    let mut out = RuleConditions::default();
    for (i, c) in list.into_iter().enumerate() {
        add(&mut out, c).map_err(|e| problem(format!("[{i}]: {e}")))?;
    }
    Ok(out)
}

fn add(out: &mut RuleConditions, c: ConditionJson) -> Result<(), String> {
    let missing = |config: &str| format!("field {} needs {config}", c.field);
    match c.field.as_str() {
        "host-header" => {
            let v = c.host.ok_or_else(|| missing("hostHeaderConfig"))?;
            let hosts = extra_hosts(one_kind(&v.values, &v.regex_values)?)?;
            if out.hosts.replace(hosts).is_some() {
                return Err("host-header is given twice; ALB takes one per rule".into());
            }
        }
        "path-pattern" => {
            let v = c.path.ok_or_else(|| missing("pathPatternConfig"))?;
            let paths = match one_kind(&v.values, &v.regex_values)? {
                Values::Wildcards(p) => ExtraPaths::Patterns(p.to_vec()),
                Values::Expressions(p) => ExtraPaths::Expressions(p.to_vec()),
            };
            if out.paths.replace(paths).is_some() {
                return Err("path-pattern is given twice; ALB takes one per rule".into());
            }
        }
        "http-header" => {
            let h = c.header.ok_or_else(|| missing("httpHeaderConfig"))?;
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("httpHeaderName {:?} is not a header name", h.name))?;
            if name == http::header::HOST {
                return Err("the Host header is matched with host-header, not http-header".into());
            }
            let value = matcher(one_kind(&h.values, &h.regex_values)?)?;
            out.conditions.push(AlbCondition::Header { name, value });
        }
        "http-request-method" => {
            let v = c.method.ok_or_else(|| missing("httpRequestMethodConfig"))?;
            let Values::Wildcards(names) = one_kind(&v.values, &v.regex_values)? else {
                return Err("http-request-method takes values, not regexValues".into());
            };
            let methods = names
                .iter()
                .map(|m| {
                    http::Method::from_bytes(m.as_bytes())
                        .map_err(|_| format!("method {m:?} is not an HTTP method"))
                })
                .collect::<Result<_, _>>()?;
            out.conditions.push(AlbCondition::Methods(methods));
        }
        "query-string" => {
            let q = c.query.ok_or_else(|| missing("queryStringConfig"))?;
            out.conditions
                .push(AlbCondition::Query(query_matches(q.values)?));
        }
        "source-ip" => {
            let v = c.source.ok_or_else(|| missing("sourceIpConfig"))?;
            let Values::Wildcards(ranges) = one_kind(&v.values, &v.regex_values)? else {
                return Err("source-ip takes values, not regexValues".into());
            };
            let nets = ranges
                .iter()
                .map(|r| {
                    r.trim()
                        .parse::<ipnet::IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|_| {
                            format!(
                                "{r:?} is not a CIDR range (a single address is 203.0.113.7/32)"
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
            out.conditions.push(AlbCondition::Sources(nets));
        }
        other => {
            return Err(format!(
                "field {other:?} is not host-header, path-pattern, http-header, http-request-method, query-string or source-ip"
            ));
        }
    }
    Ok(())
}

/// `values` (wildcards) or `regexValues` (expressions), exactly one of them, each
/// bounded.
enum Values<'a> {
    Wildcards(&'a [String]),
    Expressions(&'a [String]),
}

fn one_kind<'a>(values: &'a [String], regex: &'a [String]) -> Result<Values<'a>, String> {
    let chosen = match (values.is_empty(), regex.is_empty()) {
        (false, true) => Values::Wildcards(values),
        (true, false) => Values::Expressions(regex),
        (true, true) => return Err("values or regexValues must be given".into()),
        (false, false) => return Err("give values or regexValues, not both".into()),
    };
    let list = match chosen {
        Values::Wildcards(l) | Values::Expressions(l) => l,
    };
    if list.len() > MAX_VALUES {
        return Err(format!("{} values; at most {MAX_VALUES}", list.len()));
    }
    if let Some(v) = list
        .iter()
        .find(|v| v.len() > MAX_VALUE_LEN || v.is_empty())
    {
        return Err(format!(
            "value {v:?} is empty or longer than {MAX_VALUE_LEN} characters"
        ));
    }
    Ok(chosen)
}

/// Wildcards as one anchored expression (`*` any run, `?` one character, the rest
/// escaped), or expressions joined as alternatives; without regard to case.
fn matcher(values: Values<'_>) -> Result<regex_lite::Regex, String> {
    let program = match values {
        Values::Wildcards(globs) => format!(
            "^(?:{})$",
            globs.iter().map(|g| glob(g)).collect::<Vec<_>>().join("|")
        ),
        Values::Expressions(exprs) => exprs
            .iter()
            .map(|e| format!("(?:{e})"))
            .collect::<Vec<_>>()
            .join("|"),
    };
    super::gateway::bounded_search_regex(&program, true)
        .map_err(|e| format!("the values do not compile: {e}"))
}

/// A wildcard value as an expression; `\*` and `\?` are the characters themselves,
/// as ALB reads them.
fn glob(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '*' => {
                out.push_str(".*");
                continue;
            }
            '?' => {
                out.push('.');
                continue;
            }
            '\\' => chars.next().unwrap_or('\\'),
            c => c,
        };
        out.push_str(&regex_lite::escape(literal.encode_utf8(&mut [0; 4])));
    }
    out
}

fn query_matches(pairs: Vec<PairJson>) -> Result<Vec<QueryMatch>, String> {
    if pairs.is_empty() || pairs.len() > MAX_VALUES {
        return Err(format!("query-string takes 1 to {MAX_VALUES} values"));
    }
    pairs
        .into_iter()
        .map(|p| {
            let long = |s: &str| s.is_empty() || s.len() > MAX_VALUE_LEN;
            if long(&p.value) || p.key.as_deref().is_some_and(long) {
                return Err(format!(
                    "query pair {:?}={:?}: each part is 1 to {MAX_VALUE_LEN} characters",
                    p.key.as_deref().unwrap_or(""),
                    p.value
                ));
            }
            let one = |s: &String| matcher(Values::Wildcards(std::slice::from_ref(s)));
            Ok(QueryMatch {
                key: p.key.as_ref().map(one).transpose()?,
                value: one(&p.value)?,
            })
        })
        .collect()
}

/// Names and `*.`-wildcards are served as hosts; other wildcards and expressions
/// become one condition on a rule of any host.
fn extra_hosts(values: Values<'_>) -> Result<ExtraHosts, String> {
    let mut hosts = ExtraHosts::default();
    let mut other: Vec<String> = Vec::new();
    match values {
        Values::Expressions(_) => {
            hosts.matching = Some(AlbCondition::Host(matcher(values)?));
            return Ok(hosts);
        }
        Values::Wildcards(list) => {
            for v in list {
                let v = v.trim_end_matches('.').to_ascii_lowercase();
                let name = v.strip_prefix("*.").unwrap_or(&v);
                if crate::model::is_dns_name(name) {
                    hosts.names.push(v);
                } else if v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b'?'))
                {
                    other.push(v);
                } else {
                    return Err(format!("host {v:?} is not a host name or wildcard"));
                }
            }
        }
    }
    if !other.is_empty() {
        hosts.matching = Some(AlbCondition::Host(matcher(Values::Wildcards(&other))?));
    }
    Ok(hosts)
}

impl super::alb_actions::Backends<'_> {
    /// The `conditions.<name>` of a rule whose backend is Service `<name>`, or the
    /// closing of the rule when they cannot be read (reported once per name).
    pub(super) fn conditions(
        &mut self,
        backend: &k8s_openapi::api::networking::v1::IngressBackend,
        rule: &str,
        diags: &mut Vec<crate::diagnostics::Diagnostic>,
    ) -> Result<Option<RuleConditions>, std::sync::Arc<super::snapshot::Closed>> {
        let Some(name) = backend.service.as_ref().map(|s| s.name.as_str()) else {
            return Ok(None);
        };
        match conditions_for(self.annotations, name) {
            Ok(read) => Ok(read),
            Err(p) => {
                let message = format!(
                    "{}; the rules whose backend is {name} answer 500 AnnotationInvalid until it is fixed",
                    p.message
                );
                if self.reported.insert(key(name)) {
                    diags.push(crate::diagnostics::Diagnostic::error(
                        self.object,
                        &field(name),
                        "InvalidAnnotation",
                        message.clone(),
                        p.fix,
                    ));
                }
                Err(std::sync::Arc::new(super::snapshot::Closed {
                    reason: "AnnotationInvalid",
                    problem: format!("{} {rule}: {message}", self.object),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_of<'a>(
        headers: &'a http::HeaderMap,
        method: &'a http::Method,
        query: Option<&'a str>,
        client: Option<std::net::IpAddr>,
    ) -> RouteQuery<'a> {
        RouteQuery {
            host: "app.example.com",
            path: "/",
            method,
            headers,
            query,
            tls: true,
            https: true,
            client,
            socket: None,
        }
    }

    fn one(json: &str) -> AlbCondition {
        let mut c = parse(json).unwrap_or_else(|p| panic!("{json}: {}", p.message));
        assert_eq!(c.conditions.len(), 1, "{json}");
        c.conditions.remove(0)
    }

    #[test]
    fn the_documentation_examples_read() {
        let examples = [
            r#"[{"field":"host-header","hostHeaderConfig":{"values":["anno.example.com"]}}]"#,
            r#"[{"field":"path-pattern","pathPatternConfig":{"values":["/anno/path2"]}}]"#,
            r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName": "HeaderName", "values":["HeaderValue1", "HeaderValue2"]}}]"#,
            r#"[{"field":"http-request-method","httpRequestMethodConfig":{"Values":["GET", "HEAD"]}}]"#,
            r#"[{"field":"query-string","queryStringConfig":{"values":[{"key":"paramA","value":"valueA1"},{"key":"paramA","value":"valueA2"}]}}]"#,
            r#"[{"field":"source-ip","sourceIpConfig":{"values":["192.168.0.0/16", "172.16.0.0/16"]}}]"#,
            r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName": "HeaderName", "values":["HeaderValue"]}},{"field":"query-string","queryStringConfig":{"values":[{"key":"paramA","value":"valueA"}]}},{"field":"query-string","queryStringConfig":{"values":[{"key":"paramB","value":"valueB"}]}}]"#,
            r#"[{ "field": "http-header", "httpHeaderConfig": { "httpHeaderName": "User-Agent", "regexValues": [ ".+Chrome.+" ] } }]"#,
            r#"[{ "field": "path-pattern", "pathPatternConfig": { "regexValues": [ "^/api/?(.*)$" ] } }]"#,
            r#"[{ "field": "host-header", "hostHeaderConfig": { "regexValues": [ "^(.+)\\.example\\.com" ] } }]"#,
        ];
        for json in examples {
            parse(json).unwrap_or_else(|p| panic!("{json}: {}", p.message));
        }
        let hosts = parse(examples[0]).unwrap().hosts.unwrap();
        assert_eq!(hosts.names, ["anno.example.com"]);
        assert_eq!(
            parse(examples[1]).unwrap().paths,
            Some(ExtraPaths::Patterns(vec!["/anno/path2".into()]))
        );
    }

    #[test]
    fn headers_match_one_value_without_regard_to_case_and_refuse_two_copies() {
        let c = one(
            r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Tier","values":["gold*","a?c","x.y"]}}]"#,
        );
        let get = http::Method::GET;
        let eval = |values: &[&[u8]]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append("x-tier", http::HeaderValue::from_bytes(v).unwrap());
            }
            c.eval(&query_of(&headers, &get, None, None))
        };
        assert_eq!(eval(&[b"GOLD-plus"]), Ok(true));
        assert_eq!(eval(&[b"abc"]), Ok(true));
        assert_eq!(eval(&[b"abbc"]), Ok(false));
        assert_eq!(eval(&[b"xzy"]), Ok(false), "a dot is a dot");
        assert_eq!(eval(&[b"x.y"]), Ok(true));
        assert_eq!(eval(&[]), Ok(false));
        assert!(matches!(
            eval(&[b"gold", b"silver"]),
            Err(Unevaluable::Ambiguous(_))
        ));
        assert!(matches!(
            eval(&[b"gold\xff"]),
            Err(Unevaluable::Ambiguous(_))
        ));
        let long = format!("gold{}", "x".repeat(MAX_REGEX_INPUT));
        assert!(matches!(
            eval(&[long.as_bytes()]),
            Err(Unevaluable::TooLong(_))
        ));
    }

    #[test]
    fn query_pairs_match_decoded_and_refuse_a_key_sent_twice() {
        let c = one(
            r#"[{"field":"query-string","queryStringConfig":{"values":[{"key":"mode","value":"beta"},{"value":"canary*"}]}}]"#,
        );
        let get = http::Method::GET;
        let headers = http::HeaderMap::new();
        let eval = |q: &str| c.eval(&query_of(&headers, &get, Some(q), None));
        assert_eq!(eval("mode=beta"), Ok(true));
        assert_eq!(eval("MODE=BETA"), Ok(true));
        assert_eq!(eval("m%6Fde=b%65ta"), Ok(true));
        assert_eq!(eval("x=canary-7"), Ok(true));
        assert_eq!(eval("mode=alpha"), Ok(false));
        assert!(eval("mode=beta&mode=alpha").is_err());
        assert!(eval("mode=alpha&Mode=beta").is_err());
        let literal = one(
            r#"[{"field":"query-string","queryStringConfig":{"values":[{"key":"q","value":"a\\*b"}]}}]"#,
        );
        let escaped = |q: &str| literal.eval(&query_of(&headers, &get, Some(q), None));
        assert_eq!(escaped("q=a*b"), Ok(true));
        assert_eq!(escaped("q=axxb"), Ok(false), "an escaped star is a star");
        assert_eq!(
            eval("mode=beta&mode=alpha&x=canary"),
            Ok(true),
            "one pair holds"
        );
    }

    #[test]
    fn methods_and_sources_are_sets() {
        let get = http::Method::GET;
        let post = http::Method::POST;
        let headers = http::HeaderMap::new();
        let m = one(
            r#"[{"field":"http-request-method","httpRequestMethodConfig":{"values":["GET","HEAD"]}}]"#,
        );
        assert_eq!(m.eval(&query_of(&headers, &get, None, None)), Ok(true));
        assert_eq!(m.eval(&query_of(&headers, &post, None, None)), Ok(false));
        let s = one(
            r#"[{"field":"source-ip","sourceIPConfig":{"values":["10.0.0.0/8","2001:db8::/32"]}}]"#,
        );
        let at = |ip: &str| s.eval(&query_of(&headers, &get, None, Some(ip.parse().unwrap())));
        assert_eq!(at("10.1.2.3"), Ok(true));
        assert_eq!(at("::ffff:10.1.2.3"), Ok(true));
        assert_eq!(at("2001:db8::1"), Ok(true));
        assert_eq!(at("192.168.0.1"), Ok(false));
        assert!(s.eval(&query_of(&headers, &get, None, None)).is_err());
    }

    #[test]
    fn hosts_become_names_or_one_condition() {
        let c = parse(
            r#"[{"field":"host-header","hostHeaderConfig":{"values":["Anno.Example.com","*.apps.example.com","www.*"]}}]"#,
        )
        .unwrap();
        let hosts = c.hosts.unwrap();
        assert_eq!(hosts.names, ["anno.example.com", "*.apps.example.com"]);
        let Some(AlbCondition::Host(r)) = hosts.matching else {
            panic!()
        };
        assert!(r.is_match("www.example.org") && !r.is_match("api.example.org"));
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        for (json, says) in [
            (r#"{"field":"source-ip"}"#, "expected a sequence"),
            (r#"[{"field":"source-ip""#, "JSON"),
            (r#"[{"field":"cookie"}]"#, "cookie"),
            (
                r#"[{"field":"source-ip","sourceIpConfig":{"values":["10.0.0.1"]}}]"#,
                "CIDR",
            ),
            (r#"[{"field":"source-ip"}]"#, "sourceIpConfig"),
            (
                r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X","values":["a"],"regexValues":["b"]}}]"#,
                "not both",
            ),
            (
                r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X","regexValues":["(a"]}}]"#,
                "compile",
            ),
            (
                r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"Host","values":["a"]}}]"#,
                "host-header",
            ),
            (
                r#"[{"field":"http-request-method","httpRequestMethodConfig":{"values":["GE T"]}}]"#,
                "method",
            ),
            (
                r#"[{"field":"query-string","queryStringConfig":{"values":[]}}]"#,
                "1 to",
            ),
            (
                r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X","values":["a"],"valuez":["b"]}}]"#,
                "valuez",
            ),
            (
                r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X","values":["1","2","3","4","5","6"]}}]"#,
                "at most",
            ),
        ] {
            let p = parse(json).expect_err(json);
            assert!(p.message.contains(says), "{json}: {}", p.message);
        }
    }
}
