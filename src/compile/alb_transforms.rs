//! ALB's `transforms.<name>` annotations: the rules whose backend is Service `<name>`
//! rewrite the URL (path and query) or the Host header the backend receives, by
//! regular expression, after routing and the login decided on the request as sent.
//! As on ALB: no match leaves the request as it is; a rewrite whose result is not a
//! path or a host name answers 500.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::alb_actions::{Problem, fold_keys, shape_error};
use super::alb_annotations::{PREFIX, annotation_field};
use super::snapshot::{Closed, MAX_REGEX_INPUT};

/// One rewrite: the first match of `regex` becomes `replace` (`$1` and `${1}` name
/// groups).
#[derive(Clone, Debug)]
pub struct Rewrite {
    regex: regex_lite::Regex,
    /// In `regex_lite`'s syntax (`${1}`), whatever ALB's spelling.
    replace: String,
}

/// What a rule's transforms change.
#[derive(Clone, Debug, Default)]
pub struct AlbRewrite {
    pub url: Option<Rewrite>,
    pub host: Option<Rewrite>,
}

/// Why a request's rewrite cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewriteError {
    /// The URL or host is longer than an expression may read.
    TooLong,
    /// The result is not a path (with its query) or not a host name.
    Failed(String),
}

impl AlbRewrite {
    /// The path-and-query and host the backend receives.
    pub fn apply(
        &self,
        path_and_query: &str,
        host: &str,
    ) -> Result<(String, String), RewriteError> {
        let url = match &self.url {
            Some(r) => r.apply(path_and_query)?,
            None => path_and_query.to_owned(),
        };
        if !url.starts_with('/') || url.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(RewriteError::Failed(format!("{url:?} is not a path")));
        }
        let host = match &self.host {
            Some(r) => r.apply(host)?.to_ascii_lowercase(),
            None => host.to_owned(),
        };
        if !crate::model::is_dns_name(&host) {
            return Err(RewriteError::Failed(format!("{host:?} is not a host name")));
        }
        Ok((url, host))
    }
}

impl Rewrite {
    fn apply(&self, value: &str) -> Result<String, RewriteError> {
        if value.len() > MAX_REGEX_INPUT {
            return Err(RewriteError::TooLong);
        }
        Ok(self
            .regex
            .replace(value, self.replace.as_str())
            .into_owned())
    }
}

pub fn key(name: &str) -> String {
    format!("{PREFIX}transforms.{name}")
}

pub fn field(name: &str) -> String {
    annotation_field(&format!("transforms.{name}"))
}

const FIX: &str = r#"a JSON list, e.g. [{"type":"url-rewrite","urlRewriteConfig":{"rewrites":[{"regex":"^\\/api\\/(.+)$","replace":"/$1"}]}}]"#;

fn problem(message: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        fix: FIX.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, rename = "urlrewriteconfig")]
    url: Option<RewritesJson>,
    #[serde(default, rename = "hostheaderrewriteconfig")]
    host: Option<RewritesJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewritesJson {
    #[serde(default)]
    rewrites: Vec<RewriteJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewriteJson {
    regex: String,
    #[serde(default)]
    replace: String,
}

/// A transforms annotation's JSON, with field names in any case.
pub fn parse(value: &str) -> Result<AlbRewrite, Problem> {
    let raw: serde_json::Value = serde_json::from_str(value).map_err(|e| {
        problem(format!(
            "not the JSON AWS Load Balancer Controller reads: {e}"
        ))
    })?;
    let folded = fold_keys(raw).map_err(problem)?;
    let list: Vec<TransformJson> =
        serde_path_to_error::deserialize(folded).map_err(|e| problem(shape_error(&e)))?;
    let mut out = AlbRewrite::default();
    for (i, t) in list.into_iter().enumerate() {
        let (config, slot, name) = match t.kind.as_str() {
            "url-rewrite" => (t.url, &mut out.url, "urlRewriteConfig"),
            "host-header-rewrite" => (t.host, &mut out.host, "hostHeaderRewriteConfig"),
            other => {
                return Err(problem(format!(
                    "[{i}]: type {other:?} is not url-rewrite or host-header-rewrite"
                )));
            }
        };
        let rewrites = config
            .ok_or_else(|| problem(format!("[{i}]: {} needs {name}", t.kind)))?
            .rewrites;
        let [rewrite] = <[RewriteJson; 1]>::try_from(rewrites).map_err(|_| {
            problem(format!(
                "[{i}]: {name}.rewrites holds one rewrite, as on ALB"
            ))
        })?;
        if slot.is_some() {
            return Err(problem(format!("[{i}]: {} is given twice", t.kind)));
        }
        *slot = Some(compile(&rewrite).map_err(|e| problem(format!("[{i}]: {e}")))?);
    }
    Ok(out)
}

fn compile(rewrite: &RewriteJson) -> Result<Rewrite, String> {
    if rewrite.replace.len() > 128 {
        return Err("replace is longer than the 128 characters ALB allows".into());
    }
    let regex = super::gateway::bounded_search_regex(&rewrite.regex, false)
        .map_err(|e| format!("regex {:?} does not compile: {e}", rewrite.regex))?;
    Ok(Rewrite {
        regex,
        replace: group_names(&rewrite.replace),
    })
}

/// ALB's `$1` followed by letters means group 1 and then the letters; in
/// `regex_lite` it would name a group `1abc`, so numbers are braced.
fn group_names(replace: &str) -> String {
    let mut out = String::with_capacity(replace.len() + 4);
    let mut chars = replace.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

impl super::alb_actions::Backends<'_> {
    /// The `transforms.<name>` of a rule whose backend is Service `<name>`, or the
    /// closing of the rule when they cannot be read (reported once per name).
    pub(super) fn transforms(
        &mut self,
        backend: &k8s_openapi::api::networking::v1::IngressBackend,
        rule: &str,
        diags: &mut Vec<crate::diagnostics::Diagnostic>,
    ) -> Result<Option<Arc<AlbRewrite>>, Arc<Closed>> {
        let Some(name) = backend.service.as_ref().map(|s| s.name.as_str()) else {
            return Ok(None);
        };
        let annotations: Option<&BTreeMap<String, String>> = self.annotations;
        let Some(value) = annotations.and_then(|a| a.get(&key(name))) else {
            return Ok(None);
        };
        match parse(value) {
            Ok(rewrite) => Ok(Some(Arc::new(rewrite))),
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
                Err(Arc::new(Closed {
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

    #[test]
    fn the_documentation_examples_rewrite() {
        let url = parse(
            r#"[{"type": "url-rewrite", "urlRewriteConfig": {"rewrites": [{"regex": "^\\/api\\/(.+)$", "replace": "/$1"}]}}]"#,
        )
        .unwrap();
        assert_eq!(
            url.apply("/api/items?x=1", "app.example.com"),
            Ok(("/items?x=1".into(), "app.example.com".into()))
        );
        assert_eq!(
            url.apply("/other", "app.example.com"),
            Ok(("/other".into(), "app.example.com".into())),
            "no match: unchanged"
        );
        let host = parse(
            r#"[{"Type": "host-header-rewrite", "HostHeaderRewriteConfig": {"Rewrites": [{"Regex": "^(.+)\\.example\\.com$", "Replace": "$1.example.org"}]}}]"#,
        )
        .unwrap();
        assert_eq!(
            host.apply("/", "shop.example.com"),
            Ok(("/".into(), "shop.example.org".into()))
        );
    }

    #[test]
    fn a_group_number_ends_at_its_digits() {
        assert_eq!(group_names("/v$1abc/$12"), "/v${1}abc/${12}");
        let r = parse(
            r#"[{"type":"url-rewrite","urlRewriteConfig":{"rewrites":[{"regex":"^/(a)(b)$","replace":"/$2x$1"}]}}]"#,
        )
        .unwrap();
        assert_eq!(r.apply("/ab", "h.example").unwrap().0, "/bxa");
    }

    #[test]
    fn results_that_are_not_paths_or_hosts_fail() {
        let url = parse(
            r#"[{"type":"url-rewrite","urlRewriteConfig":{"rewrites":[{"regex":"^/(.*)$","replace":"$1"}]}}]"#,
        )
        .unwrap();
        assert!(matches!(
            url.apply("/x", "h.example"),
            Err(RewriteError::Failed(_))
        ));
        let host = parse(
            r#"[{"type":"host-header-rewrite","hostHeaderRewriteConfig":{"rewrites":[{"regex":"^.*$","replace":"a b"}]}}]"#,
        )
        .unwrap();
        assert!(matches!(
            host.apply("/", "h.example"),
            Err(RewriteError::Failed(_))
        ));
        let long = format!("/{}", "a".repeat(MAX_REGEX_INPUT));
        assert_eq!(url.apply(&long, "h.example"), Err(RewriteError::TooLong));
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        for (json, says) in [
            (r#"[{"type":"url-rewrite"}]"#, "urlRewriteConfig"),
            (r#"[{"type":"path-rewrite"}]"#, "path-rewrite"),
            (
                r#"[{"type":"url-rewrite","urlRewriteConfig":{"rewrites":[]}}]"#,
                "one rewrite",
            ),
            (
                r#"[{"type":"url-rewrite","urlRewriteConfig":{"rewrites":[{"regex":"(","replace":"/"}]}}]"#,
                "compile",
            ),
        ] {
            let p = parse(json).expect_err(json);
            assert!(p.message.contains(says), "{json}: {}", p.message);
        }
    }
}
