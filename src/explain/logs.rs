//! `portcullis explain logs`: reads access logs (ALB's format or Portcullis's JSON;
//! Portcullis's or a real ALB's), groups the failed requests by `error_reason`, and
//! explains each group. The input may be whatever `kubectl logs` prints: lines that
//! are not access-log lines are skipped and counted, and Portcullis's own JSON log
//! lines that name a request's trace id (its reference) add what they say to that
//! request's group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;

use crate::observe::access_log::AccessRecord;
use crate::observe::reasons;

/// Field positions in ALB's format (later fields, which newer ALBs append, are ignored).
const TYPE: usize = 0;
const TIME: usize = 1;
const STATUS: usize = 8;
const REQUEST: usize = 12;
const TRACE_ID: usize = 17;
const ERROR_REASON: usize = 24;
/// Portcullis's own reason, after ALB's last field (`conn_trace_id`); a real ALB's
/// lines have none, or another field there in a later format.
const PORTCULLIS_REASON: usize = 30;
const MIN_FIELDS: usize = 25;
/// ALB's request types, the first field of every line.
const ACCESS_TYPES: [&str; 6] = ["http", "https", "h2", "grpcs", "ws", "wss"];
/// Trace ids of a group whose log lines are looked for.
const TRACES_PER_GROUP: usize = 20;
/// Log lines kept: per trace id, over all trace ids, and shown per group.
const LINES_PER_TRACE: usize = 4;
const MAX_TRACES_WITH_LINES: usize = 10_000;
const LINES_PER_GROUP: usize = 3;
const MAX_LINE_CHARS: usize = 400;

/// One line's fields, honouring quotes and backslash escapes.
pub fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.trim_end().chars().peekable();
    while chars.peek().is_some() {
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => field.extend(chars.next()),
                    '"' => break,
                    c => field.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ' ') {
                field.push(c);
            }
        }
        chars.next_if_eq(&' ');
        out.push(field);
    }
    out
}

#[derive(Default, Debug)]
pub struct Group {
    pub count: usize,
    pub statuses: BTreeSet<String>,
    pub hosts: BTreeSet<String>,
    pub first: String,
    pub last: String,
    pub example_trace: String,
    /// The first requests' trace ids (at most `TRACES_PER_GROUP`), without `Root=`.
    pub traces: Vec<String>,
}

#[derive(Default, Debug)]
pub struct Report {
    /// Access-log lines read.
    pub lines: usize,
    /// Other lines: application logs, kubectl's own words, anything else.
    pub skipped: usize,
    pub failed: usize,
    /// By `error_reason`, or `status NNN` for failures without one.
    pub groups: BTreeMap<String, Group>,
    /// What Portcullis's JSON log lines said, by trace id (bounded).
    logged: HashMap<String, Vec<String>>,
    /// What happened to a request, when a log line of the callback says (by trace id,
    /// bounded with `logged`).
    explained: HashMap<String, String>,
}

/// What one input line is.
#[derive(Debug, PartialEq)]
enum Line {
    /// An access-log line's fields, in ALB's order.
    Access(Vec<String>),
    /// One of Portcullis's JSON log lines naming a request: its trace id, what it says,
    /// and what happened to the request when the line says so.
    Logged {
        trace: String,
        text: String,
        what_happened: Option<String>,
    },
    Other,
}

/// Reads every line of `input`.
pub fn read(input: impl BufRead) -> Report {
    let mut report = Report::default();
    for line in input.lines().map_while(Result::ok) {
        if line.trim().is_empty() {
            continue;
        }
        match classify(&line) {
            Line::Access(f) => {
                report.lines += 1;
                report.add(&f);
            }
            Line::Logged {
                trace,
                text,
                what_happened,
            } => {
                report.skipped += 1;
                let room = report.logged.len() < MAX_TRACES_WITH_LINES;
                if let Some(what) = what_happened
                    && (room || report.logged.contains_key(&trace))
                {
                    report.explained.insert(trace.clone(), what);
                }
                if let Some(lines) = match report.logged.get_mut(&trace) {
                    Some(lines) => Some(lines),
                    None if room => Some(report.logged.entry(trace).or_default()),
                    None => None,
                } && lines.len() < LINES_PER_TRACE
                {
                    lines.push(text);
                }
            }
            Line::Other => report.skipped += 1,
        }
    }
    report
}

/// `line` without what `kubectl logs` puts before it: the `[pod/…/…] ` tag of
/// `--prefix` and the timestamp of `--timestamps`.
fn without_kubectl_additions(line: &str) -> &str {
    let line = super::without_kubectl_prefix(line);
    match line.split_once(' ') {
        Some((first, rest)) if first.parse::<jiff::Timestamp>().is_ok() => rest,
        _ => line,
    }
}

fn classify(line: &str) -> Line {
    let line = without_kubectl_additions(line);
    if line.trim_start().starts_with('{') {
        return json_line(line);
    }
    let f = fields(line);
    let status = f.get(STATUS).map_or("", String::as_str);
    let is_access = f.len() >= MIN_FIELDS
        && ACCESS_TYPES.contains(&f[TYPE].as_str())
        && f[TIME].parse::<jiff::Timestamp>().is_ok()
        && (status == "-" || (status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit())));
    if is_access {
        Line::Access(f)
    } else {
        Line::Other
    }
}

/// A JSON line: an access-log line of `--log-format json`, one of Portcullis's own log
/// lines (tracing's JSON) that names a trace id, or something else.
fn json_line(line: &str) -> Line {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_str(line.trim()) else {
        return Line::Other;
    };
    if v.contains_key("elb_status_code") && v.contains_key("trace_id") {
        let f = AccessRecord::field_names()
            .iter()
            .map(|name| {
                v.get(*name)
                    .and_then(|x| x.as_str())
                    .unwrap_or("-")
                    .to_owned()
            })
            .collect();
        return Line::Access(f);
    }
    let Some(fields) = v.get("fields").and_then(|f| f.as_object()) else {
        return Line::Other;
    };
    let text_of = |k: &str| {
        fields.get(k).map(|x| match x {
            serde_json::Value::String(s) => super::flow::unquote(s),
            other => other.to_string(),
        })
    };
    let Some(trace) = text_of("trace_id").filter(|t| !t.is_empty() && t != "-") else {
        return Line::Other;
    };
    let level = v.get("level").and_then(|l| l.as_str()).unwrap_or_default();
    let mut text = format!("{level} {}", text_of("message").unwrap_or_default());
    for key in ["rule", "hop", "reason", "error", "what_happened", "detail"] {
        if let Some(value) = text_of(key).filter(|x| x != "-") {
            text.push_str(&format!(" {key}={value}"));
        }
    }
    Line::Logged {
        trace,
        text: text.chars().take(MAX_LINE_CHARS).collect(),
        what_happened: text_of("what_happened")
            .filter(|x| x != "-")
            .map(|x| x.chars().take(MAX_LINE_CHARS).collect()),
    }
}

/// A trace id without ALB's `Root=` and whatever follows `;`.
fn trace_root(trace: &str) -> &str {
    let t = trace.strip_prefix("Root=").unwrap_or(trace);
    t.split(';').next().unwrap_or(t)
}

impl Report {
    /// One access-log line, counted in its group when it failed.
    fn add(&mut self, f: &[String]) {
        let status = &f[STATUS];
        let reason = f
            .get(PORTCULLIS_REASON)
            .filter(|r| reasons::lookup(r).is_some())
            .unwrap_or(&f[ERROR_REASON]);
        let failed = status.starts_with(['4', '5']) || (reason != "-" && !reason.is_empty());
        if !failed {
            return;
        }
        self.failed += 1;
        let key = if reason == "-" || reason.is_empty() {
            format!("status {status}")
        } else {
            reason.clone()
        };
        let group = self.groups.entry(key).or_default();
        group.count += 1;
        group.statuses.insert(status.clone());
        if let Some(host) = request_host(&f[REQUEST]) {
            group.hosts.insert(host);
        }
        if group.first.is_empty() {
            group.first = f[TIME].clone();
            group.example_trace = f[TRACE_ID].clone();
        }
        if group.traces.len() < TRACES_PER_GROUP {
            group.traces.push(trace_root(&f[TRACE_ID]).to_owned());
        }
        group.last = f[TIME].clone();
    }

    /// What the log lines said of a group's requests, with their trace ids.
    fn logged_for(&self, group: &Group) -> Vec<String> {
        group
            .traces
            .iter()
            .filter_map(|t| Some((t, self.logged.get(t)?)))
            .flat_map(|(t, lines)| lines.iter().map(move |l| format!("{l} [{t}]")))
            .take(LINES_PER_GROUP)
            .collect()
    }
}

/// The host of `"GET https://host:443/path HTTP/1.1"`.
fn request_host(request: &str) -> Option<String> {
    let url = request.split(' ').nth(1)?;
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    Some(host.to_owned())
}

impl Report {
    /// The groups, largest first, each with its explanation.
    pub fn render(&self) -> String {
        let mut groups: Vec<(&String, &Group)> = self.groups.iter().collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let logged: Vec<Vec<String>> = groups.iter().map(|(_, g)| self.logged_for(g)).collect();
        let used: usize = logged.iter().map(Vec::len).sum();
        let mut out = format!(
            "{} access-log lines read, {} failed requests.",
            self.lines, self.failed
        );
        if self.skipped > 0 {
            out.push_str(&format!(
                " {} other lines skipped (not access-log lines){}.",
                self.skipped,
                if used > 0 {
                    format!("; {used} of Portcullis's log lines add what they say to the requests they name")
                } else {
                    String::new()
                }
            ));
        }
        out.push('\n');
        for ((key, g), logged) in groups.into_iter().zip(logged) {
            let statuses: Vec<&str> = g.statuses.iter().map(String::as_str).collect();
            let hosts: Vec<&str> = g.hosts.iter().map(String::as_str).collect();
            out.push_str(&format!(
                "\n{key}: {} request(s), status {}, host(s) {}\n  from {} to {}; for example trace {}\n",
                g.count,
                statuses.join("/"),
                if hosts.is_empty() { "-".into() } else { hosts.join(", ") },
                g.first,
                g.last,
                g.example_trace
            ));
            for line in logged {
                out.push_str(&format!("  Logged:        {line}\n"));
            }
            // Every request of the group has its own explanation: the catalogue's
            // usual cause would only contradict it.
            let explained: Vec<&String> = g
                .traces
                .iter()
                .filter_map(|t| self.explained.get(t))
                .collect();
            if explained.len() == g.count {
                let distinct: BTreeSet<&String> = explained.into_iter().collect();
                for what in distinct.into_iter().take(LINES_PER_GROUP) {
                    out.push_str(&format!("  What happened: {what}\n"));
                }
                continue;
            }
            match reasons::lookup(key) {
                Some(r) => out.push_str(&format!(
                    "  What happened: {}\n  Usually:       {}\n  Fix:           {}\n",
                    r.summary, r.cause, r.fix
                )),
                None => out.push_str(&format!("  {}\n", status_advice(&statuses))),
            }
        }
        out
    }
}

fn status_advice(statuses: &[&str]) -> &'static str {
    match statuses.first().copied().unwrap_or_default() {
        "561" => {
            "Status 561: the provider returned an error during authentication (ALB's own code); the provider's logs say why."
        }
        s if s.starts_with('5') => {
            "Server errors without a reason come from the backend itself: see target_status_code and the backend's logs."
        }
        _ => "Client errors without a reason come from the backend itself (its own 4xx answers).",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_spaces_and_escapes() {
        let f = fields(r#"h2 "a b" "say \"hi\"" - "#);
        assert_eq!(f, ["h2", "a b", "say \"hi\"", "-"]);
    }

    #[test]
    fn only_access_log_lines_are_read_as_such() {
        let alb = include_str!("../../tests/data/portcullis-access.log")
            .lines()
            .next()
            .unwrap();
        assert!(matches!(classify(alb), Line::Access(_)));
        let stamped = format!("2026-11-24T13:35:49.768074123Z {alb}");
        assert_eq!(
            classify(&stamped),
            classify(alb),
            "kubectl logs --timestamps"
        );
        for other in [
            "2026-11-24T13:35:49.782580Z  WARN portcullis::proxy::handler: login failed at the callback trace_id=1-6b0592b5-a4b9e3147e9546d1de2e6469 rule=apps/sso reason=AuthMissingAWSALBAuthNonce error=the browser did not send the login's flow cookie (blocked or expired cookie, or another browser) a b c d e f g h i j",
            "Error from server (NotFound): pods \"portcullis-0\" not found",
            "{\"not\": \"ours\"}",
            "{broken json",
        ] {
            assert_eq!(classify(other), Line::Other, "{other}");
        }
        let json_access = r#"{"type":"http","time":"2026-11-24T13:35:49.768074Z","elb_status_code":"401","trace_id":"Root=1-a","request":"GET http://h:80/ HTTP/1.1","error_reason":"AuthMissingAWSALBAuthNonce"}"#;
        let Line::Access(f) = classify(json_access) else {
            panic!("an access line")
        };
        assert_eq!(
            (f[STATUS].as_str(), f[ERROR_REASON].as_str()),
            ("401", "AuthMissingAWSALBAuthNonce")
        );
        let logged = r#"{"timestamp":"2026-11-24T13:35:49.78Z","level":"WARN","fields":{"message":"login failed at the callback","trace_id":"1-a","rule":"apps/sso","what_happened":"issued 0.24 s ago"},"target":"portcullis::proxy::handler::endpoints"}"#;
        assert_eq!(
            classify(logged),
            Line::Logged {
                trace: "1-a".into(),
                text: "WARN login failed at the callback rule=apps/sso what_happened=issued 0.24 s ago".into(),
                what_happened: Some("issued 0.24 s ago".into()),
            }
        );
        let hop = r#"{"level":"INFO","fields":{"message":"flow hop","trace_id":"\"1-a\"","hop":"\"flow-cookie\""},"target":"portcullis::flow"}"#;
        assert!(matches!(classify(hop), Line::Logged { trace, .. } if trace == "1-a"));
    }

    #[test]
    fn hosts_come_from_the_request_url() {
        assert_eq!(
            request_host("GET https://app.example.com:443/x HTTP/1.1").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(request_host("- - -"), None);
    }
}
