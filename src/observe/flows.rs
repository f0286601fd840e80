//! Flow records: one per login attempt, one entry per hop (redirect to the provider,
//! callback, flow-cookie check, token, ID token, userinfo, session, final redirect,
//! first authenticated request). Kept in memory for the admin endpoint and written to
//! the log, one line per hop with the flow id and trace id, so `explain flow` can
//! rebuild a flow whose hops landed on different replicas. Nothing secret is recorded.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::observe::reasons;

/// Flows kept in memory; the oldest go first.
const MAX_FLOWS: usize = 500;
const MAX_HOPS: usize = 24;
const MAX_DETAIL: usize = 512;
/// A flow's id and host as kept (both are short when real: a UUID, a host name).
const MAX_NAME: usize = 256;
/// The log target of hop lines, which `explain flow` looks for.
pub const LOG_TARGET: &str = "portcullis::flow";
/// The hop of a session's first request that passed.
pub const FIRST_REQUEST: &str = "first-request";
/// The hop of a session's request that authorization refused.
pub const AUTHORIZE: &str = "authorize";

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Hop {
    /// Unix milliseconds.
    pub at: i64,
    pub hop: String,
    pub ok: bool,
    pub trace_id: String,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlowRecord {
    pub id: String,
    pub rule: String,
    pub host: String,
    pub hops: Vec<Hop>,
    /// Why the login failed: the access log's and the metrics' `error_reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl FlowRecord {
    /// The first hop that failed.
    pub fn failure(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| !h.ok)
    }

    /// Whether the login reached its final redirect.
    pub fn logged_in(&self) -> bool {
        self.hops.iter().any(|h| h.hop == "final-redirect" && h.ok)
    }

    /// Whether the login reached its final redirect and nothing failed since (a
    /// refused first request, for one).
    pub fn completed(&self) -> bool {
        self.logged_in() && self.failure().is_none()
    }

    /// Whether the session's first request is on record, passed or refused.
    fn first_request_seen(&self) -> bool {
        self.hops
            .iter()
            .any(|h| h.hop == FIRST_REQUEST || h.hop == AUTHORIZE)
    }

    /// A timeline a person reads: one line per hop, then what broke and the fix.
    pub fn render(&self) -> String {
        let mut out = format!("flow {}  rule {}  host {}\n", self.id, self.rule, self.host);
        let start = self.hops.first().map_or(0, |h| h.at);
        for h in &self.hops {
            out.push_str(&format!(
                "  +{:>6} ms  {:<4} {:<15} {}  [{}]\n",
                h.at - start,
                if h.ok { "ok" } else { "FAIL" },
                h.hop,
                h.detail,
                h.trace_id
            ));
        }
        match self.failure() {
            Some(h) => {
                out.push_str(&format!("broke at {}: {}\n", h.hop, h.detail));
                let reason = h.detail.split([':', ' ']).next().unwrap_or_default();
                if let Some(r) = reasons::lookup(reason) {
                    out.push_str(&format!("  usually: {}\n  fix:     {}\n", r.cause, r.fix));
                }
            }
            None if self.completed() => out.push_str("completed\n"),
            None => out.push_str(
                "not finished: the browser has not come back (yet, or to another replica). If the provider showed an error page instead, the redirect_uri of the first hop is probably not registered there; `portcullis diagnose` prints the one to register\n",
            ),
        }
        out
    }
}

#[derive(Default)]
pub struct FlowLog {
    flows: Mutex<VecDeque<FlowRecord>>,
    /// Flows whose first authenticated request is still to be seen; when zero the
    /// request path skips the lock.
    awaiting_first_request: AtomicUsize,
}

impl FlowLog {
    /// Adds a hop to flow `id` (made if new) and writes the hop's log line.
    pub fn record(&self, id: &str, rule: &str, host: &str, hop: Hop) {
        // Debug-formatted strings are quoted and escaped in the text format, so a
        // detail with spaces stays one field for `explain flow`.
        tracing::info!(
            target: LOG_TARGET,
            flow_id = ?id,
            trace_id = ?hop.trace_id,
            rule = ?rule,
            host = ?host,
            hop = ?hop.hop,
            ok = hop.ok,
            detail = ?hop.detail,
            "flow hop"
        );
        if hop.hop == "final-redirect" && hop.ok {
            self.awaiting_first_request.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut flows) = self.flows.lock() else {
            return;
        };
        let hop = Hop {
            detail: hop.detail.chars().take(MAX_DETAIL).collect(),
            ..hop
        };
        if let Some(flow) = flows.iter_mut().find(|f| f.id == id) {
            if flow.hops.len() < MAX_HOPS {
                flow.hops.push(hop);
            }
            return;
        }
        if flows.len() >= MAX_FLOWS {
            flows.pop_front();
        }
        flows.push_back(FlowRecord {
            id: id.chars().take(MAX_NAME).collect(),
            rule: rule.to_owned(),
            host: host.chars().take(MAX_NAME).collect(),
            hops: vec![hop],
            reason: None,
        });
    }

    /// Marks flow `id` as failed with `reason`.
    pub fn failed(&self, id: &str, reason: &'static str) {
        if let Ok(mut flows) = self.flows.lock()
            && let Some(flow) = flows.iter_mut().find(|f| f.id == id)
        {
            flow.reason = Some(reason);
        }
    }

    /// Failed logins among the recent flows, by rule (`namespace/name`) and reason.
    pub fn failures(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, i32>> {
        let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i32>> =
            Default::default();
        if let Ok(flows) = self.flows.lock() {
            for f in flows.iter() {
                if let Some(reason) = f.reason {
                    *out.entry(f.rule.clone())
                        .or_default()
                        .entry(reason.to_owned())
                        .or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// Records the first request a flow's session made, once.
    pub fn first_request(&self, id: &str, hop: impl FnOnce() -> Hop) {
        if self.awaiting_first_request.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some((rule, host)) = self.take_first_request(id) {
            self.record(id, &rule, &host, hop());
        }
    }

    /// A request of flow `id`'s session that authorization refused: a failed
    /// `authorize` hop, on the flow's record and in the log under the request's trace
    /// id, so the 403's reference leads to the login and the refusal. When it is the
    /// session's first request, the login counts as failed with `reason`.
    pub fn refused(&self, id: &str, rule: &str, host: &str, hop: Hop, reason: &'static str) {
        let first = self.awaiting_first_request.load(Ordering::Relaxed) > 0
            && self.take_first_request(id).is_some();
        self.record(id, rule, host, hop);
        if first {
            self.failed(id, reason);
        }
    }

    /// The rule and host of flow `id` when its session's first request is still to
    /// be recorded, which it then is about to be.
    fn take_first_request(&self, id: &str) -> Option<(String, String)> {
        let pending = self.flows.lock().ok().and_then(|flows| {
            let f = flows.iter().find(|f| f.id == id)?;
            (f.logged_in() && !f.first_request_seen()).then(|| (f.rule.clone(), f.host.clone()))
        });
        if pending.is_some() {
            self.awaiting_first_request.fetch_sub(1, Ordering::Relaxed);
        }
        pending
    }

    /// Recent flows, failed ones first, newest first within each.
    pub fn recent(&self) -> Vec<FlowRecord> {
        let mut flows: Vec<FlowRecord> = self
            .flows
            .lock()
            .map(|f| f.iter().rev().cloned().collect())
            .unwrap_or_default();
        flows.sort_by_key(|f| f.failure().is_none());
        flows
    }

    /// The flow with this id, or the one a hop of which carried this trace id.
    pub fn find(&self, id_or_trace: &str) -> Option<FlowRecord> {
        let flows = self.flows.lock().ok()?;
        flows
            .iter()
            .find(|f| f.id == id_or_trace)
            .or_else(|| {
                flows
                    .iter()
                    .find(|f| f.hops.iter().any(|h| h.trace_id == id_or_trace))
            })
            .cloned()
    }
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(name: &str, ok: bool, trace: &str) -> Hop {
        Hop {
            at: now_ms(),
            hop: name.into(),
            ok,
            trace_id: trace.into(),
            detail: if ok {
                "fine".into()
            } else {
                "AuthInvalidIdToken: bad signature".into()
            },
        }
    }

    #[test]
    fn failed_flows_come_first_and_are_found_by_trace_id() {
        let log = FlowLog::default();
        log.record("a", "apps/sso", "h", hop("redirect", true, "1-a"));
        log.record("b", "apps/sso", "h", hop("redirect", true, "1-b"));
        log.record("b", "apps/sso", "h", hop("id-token", false, "1-b2"));
        let recent = log.recent();
        assert_eq!(recent[0].id, "b");
        assert_eq!(log.find("1-b2").unwrap().id, "b");
        let text = recent[0].render();
        assert!(text.contains("broke at id-token"), "{text}");
        assert!(text.contains("fix:"), "{text}");
        let unfinished = log.find("a").unwrap().render();
        assert!(unfinished.contains("redirect_uri"), "{unfinished}");
    }

    #[test]
    fn a_refused_first_request_fails_the_flow_and_later_ones_only_add_hops() {
        let log = FlowLog::default();
        log.record("a", "r", "h", hop("final-redirect", true, "1-a"));
        let refused = |trace: &str| Hop {
            detail: "AuthForbidden: GET /admin refused by spec.authorization.groups".into(),
            ..hop(AUTHORIZE, false, trace)
        };
        log.refused("a", "r", "h", refused("1-b"), "AuthForbidden");
        let a = log.find("1-b").unwrap();
        assert!(!a.completed() && a.logged_in());
        assert_eq!(a.reason, Some("AuthForbidden"));
        let text = a.render();
        assert!(text.contains("broke at authorize: AuthForbidden"), "{text}");
        assert!(text.contains("fix:"), "{text}");
        log.first_request("a", || hop(FIRST_REQUEST, true, "1-c"));
        log.refused("a", "r", "h", refused("1-d"), "AuthForbidden");
        let a = log.find("a").unwrap();
        assert!(
            a.hops.iter().all(|h| h.hop != FIRST_REQUEST),
            "the refusal was the first request"
        );
        assert_eq!(a.hops.len(), 3);
        assert_eq!(log.awaiting_first_request.load(Ordering::Relaxed), 0);
        // A later refusal of a session whose first request passed: a hop, not a
        // failed login.
        log.record("b", "r", "h", hop("final-redirect", true, "2-a"));
        log.first_request("b", || hop(FIRST_REQUEST, true, "2-b"));
        log.refused("b", "r", "h", refused("2-c"), "AuthForbidden");
        let b = log.find("2-c").unwrap();
        assert_eq!(b.reason, None);
        assert!(
            log.failures()
                .get("r")
                .is_some_and(|f| f["AuthForbidden"] == 1)
        );
    }

    #[test]
    fn the_first_request_is_recorded_once_and_only_for_completed_flows() {
        let log = FlowLog::default();
        log.record("a", "r", "h", hop("final-redirect", true, "1-a"));
        log.first_request("a", || hop("first-request", true, "1-c"));
        log.first_request("a", || hop("first-request", true, "1-d"));
        let a = log.find("a").unwrap();
        assert_eq!(
            a.hops.iter().filter(|h| h.hop == "first-request").count(),
            1
        );
    }
}
