//! `portcullis explain logs`: reads ALB-format access logs (Portcullis's or a real
//! ALB's), groups the failed requests by `error_reason`, and explains each group.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

use crate::observe::reasons;

/// Field positions in ALB's format (later fields, which newer ALBs append, are ignored).
const TIME: usize = 1;
const STATUS: usize = 8;
const REQUEST: usize = 12;
const TRACE_ID: usize = 17;
const ERROR_REASON: usize = 24;
/// Portcullis's own reason, after ALB's last field (`conn_trace_id`); a real ALB's
/// lines have none, or another field there in a later format.
const PORTCULLIS_REASON: usize = 30;
const MIN_FIELDS: usize = 25;

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
}

#[derive(Default, Debug)]
pub struct Report {
    pub lines: usize,
    pub unreadable: usize,
    pub failed: usize,
    /// By `error_reason`, or `status NNN` for failures without one.
    pub groups: BTreeMap<String, Group>,
}

/// Reads every line of `input`.
pub fn read(input: impl BufRead) -> Report {
    let mut report = Report::default();
    for line in input.lines().map_while(Result::ok) {
        let line = super::without_kubectl_prefix(&line);
        if line.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        let f = fields(line);
        if f.len() < MIN_FIELDS {
            report.unreadable += 1;
            continue;
        }
        let status = &f[STATUS];
        let reason = f
            .get(PORTCULLIS_REASON)
            .filter(|r| reasons::lookup(r).is_some())
            .unwrap_or(&f[ERROR_REASON]);
        let failed = status.starts_with(['4', '5']) || (reason != "-" && !reason.is_empty());
        if !failed {
            continue;
        }
        report.failed += 1;
        let key = if reason == "-" || reason.is_empty() {
            format!("status {status}")
        } else {
            reason.clone()
        };
        let group = report.groups.entry(key).or_default();
        group.count += 1;
        group.statuses.insert(status.clone());
        if let Some(host) = request_host(&f[REQUEST]) {
            group.hosts.insert(host);
        }
        if group.first.is_empty() {
            group.first = f[TIME].clone();
            group.example_trace = f[TRACE_ID].clone();
        }
        group.last = f[TIME].clone();
    }
    report
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
        let mut out = format!(
            "{} lines read, {} failed requests{}.\n",
            self.lines,
            self.failed,
            if self.unreadable > 0 {
                format!(", {} lines not in ALB's format", self.unreadable)
            } else {
                String::new()
            }
        );
        let mut groups: Vec<(&String, &Group)> = self.groups.iter().collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        for (key, g) in groups {
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
    fn hosts_come_from_the_request_url() {
        assert_eq!(
            request_host("GET https://app.example.com:443/x HTTP/1.1").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(request_host("- - -"), None);
    }
}
