//! `portcullis explain flow ID`: rebuilds a login's timeline from log lines (text or
//! JSON, e.g. `kubectl logs -l app.kubernetes.io/name=portcullis --tail=-1 --prefix`), whichever
//! replicas its hops landed on. ID is a flow id or any trace id of the flow.

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::observe::flows::{FlowRecord, Hop, LOG_TARGET};

/// The hop fields of one log line, if it is a flow-hop line.
#[derive(Debug, PartialEq)]
pub struct HopLine {
    pub flow_id: String,
    pub rule: String,
    pub host: String,
    pub hop: Hop,
}

pub fn parse_line(line: &str) -> Option<HopLine> {
    let line = strip_ansi(line);
    let line = super::without_kubectl_prefix(&line);
    if !line.contains(LOG_TARGET) {
        return None;
    }
    let (timestamp, fields) = if line.trim_start().starts_with('{') {
        json_fields(line)?
    } else {
        text_fields(line)
    };
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let at = timestamp
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .unwrap_or(0);
    Some(HopLine {
        flow_id: fields.get("flow_id")?.clone(),
        rule: get("rule"),
        host: get("host"),
        hop: Hop {
            at,
            hop: get("hop"),
            ok: get("ok") == "true",
            trace_id: get("trace_id"),
            detail: get("detail"),
        },
    })
}

/// The flow `id` (a flow id or one of its trace ids) rebuilt from `input`.
pub fn rebuild(input: impl BufRead, id: &str) -> Option<FlowRecord> {
    let lines: Vec<HopLine> = input
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| parse_line(&l))
        .collect();
    let flow_id = lines
        .iter()
        .find(|l| l.flow_id == id || l.hop.trace_id == id)?
        .flow_id
        .clone();
    let mut hops: Vec<&HopLine> = lines.iter().filter(|l| l.flow_id == flow_id).collect();
    hops.sort_by_key(|l| l.hop.at);
    let first = hops.first()?;
    Some(FlowRecord {
        id: flow_id.clone(),
        rule: first.rule.clone(),
        host: first.host.clone(),
        hops: hops.iter().map(|l| l.hop.clone()).collect(),
        ..FlowRecord::default()
    })
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-11-24T13:35:49.78Z  INFO portcullis::flow: flow hop flow_id="a" ok=true ...`
/// (a `kubectl logs --prefix` tag before it is removed first).
fn text_fields(line: &str) -> (String, BTreeMap<String, String>) {
    let timestamp = line
        .split_whitespace()
        .find(|w| w.len() >= 20 && w.as_bytes()[4] == b'-' && w.contains('T'))
        .unwrap_or_default()
        .to_owned();
    let rest = line.split_once("flow hop").map_or("", |(_, r)| r);
    let mut fields = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next().is_none() {
            break;
        }
        let value = if chars.next_if_eq(&'"').is_some() {
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect()
        };
        fields.insert(key.trim().to_owned(), value);
    }
    (timestamp, fields)
}

/// tracing-subscriber's JSON: `{"timestamp":..,"fields":{..},"target":..}`.
fn json_fields(line: &str) -> Option<(String, BTreeMap<String, String>)> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let timestamp = v["timestamp"].as_str().unwrap_or_default().to_owned();
    let fields = v["fields"]
        .as_object()?
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => unquote(s),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    Some((timestamp, fields))
}

/// A Debug-formatted string (`"a \"b\""`) back to its text.
pub(super) fn unquote(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        serde_json::from_str::<String>(s).unwrap_or_else(|_| s[1..s.len() - 1].to_owned())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_with_colours_and_quoted_details_parse() {
        let line = "\u{1b}[2m2026-11-24T13:35:49.782580Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mportcullis::flow\u{1b}[0m\u{1b}[2m:\u{1b}[0m flow hop \u{1b}[3mflow_id\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"f1\" \u{1b}[3mtrace_id\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"1-a\" \u{1b}[3mhop\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"token\" \u{1b}[3mok\u{1b}[0m\u{1b}[2m=\u{1b}[0mfalse \u{1b}[3mdetail\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"AuthTokenEpRequestFailed: refused \\\"x\\\"\"";
        let parsed = parse_line(line).unwrap();
        assert_eq!(parsed.flow_id, "f1");
        assert_eq!(parsed.hop.hop, "token");
        assert!(!parsed.hop.ok);
        assert_eq!(parsed.hop.detail, "AuthTokenEpRequestFailed: refused \"x\"");
        assert!(parsed.hop.at > 0);
    }

    #[test]
    fn json_lines_parse() {
        let line = r#"{"timestamp":"2026-11-24T13:35:49.782580Z","level":"INFO","fields":{"message":"flow hop","flow_id":"\"f1\"","trace_id":"\"1-a\"","hop":"\"redirect\"","ok":true,"detail":"\"to x\""},"target":"portcullis::flow"}"#;
        let parsed = parse_line(line).unwrap();
        assert_eq!((parsed.flow_id.as_str(), parsed.hop.ok), ("f1", true));
        assert_eq!(parsed.hop.detail, "to x");
    }
}
