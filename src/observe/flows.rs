//! Flow records: one per login attempt, one entry per hop (redirect to the provider,
//! callback, flow-cookie check, token, ID token, userinfo, session, final redirect,
//! first authenticated request). Kept in memory for the admin endpoint and written to
//! the log, one line per hop with the flow id and trace id, so `explain flow` can
//! rebuild a flow whose hops landed on different replicas. Nothing secret is recorded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use serde::Serialize;

use crate::observe::reasons;

/// Flows kept in memory; the oldest go first (and their entries in the state index).
const MAX_FLOWS: usize = 500;
const MAX_HOPS: usize = 24;
const MAX_DETAIL: usize = 512;
/// A flow's id and host as kept (both are short when real: a UUID, a host name).
const MAX_NAME: usize = 256;
/// The log target of hop lines, which `explain flow` looks for.
pub const LOG_TARGET: &str = "portcullis::flow";
/// How long a login that sent the browser to the provider waits for the callback
/// before it counts as abandoned, unless `--login-abandoned-after` says otherwise.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(120);
/// The hop a flow gets when it is counted abandoned.
pub const ABANDONED: &str = "abandoned";
/// Its reason, in the catalogue.
pub const ABANDONED_REASON: &str = "AuthLoginAbandoned";
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

/// What the redirect to the provider asked for, for explanations of what came back.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub client_id: String,
    pub redirect_uri: String,
}

/// A keyed hash of a login's `state`: what the state index is keyed by.
type StateTag = [u8; 16];

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FlowRecord {
    pub id: String,
    pub rule: String,
    pub host: String,
    pub hops: Vec<Hop>,
    /// Why the login failed: the access log's and the metrics' `error_reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// For a flow that began on this replica: what its redirect sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
    #[serde(skip)]
    pub(crate) state_tag: Option<StateTag>,
}

impl FlowRecord {
    /// The first hop that failed. Being counted abandoned is not a failure once the
    /// browser came back after all.
    pub fn failure(&self) -> Option<&Hop> {
        let last = self.hops.len().saturating_sub(1);
        self.hops
            .iter()
            .enumerate()
            .find(|(i, h)| !h.ok && (h.hop != ABANDONED || *i == last))
            .map(|(_, h)| h)
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

    /// Whether the browser went to the provider and has not come back (yet).
    fn waiting(&self) -> bool {
        self.sent.is_some() && self.hops.len() == 1 && self.hops[0].hop == "redirect"
    }

    /// Whether the flow was counted abandoned and nothing came since.
    pub fn abandoned(&self) -> bool {
        self.hops.last().is_some_and(|h| h.hop == ABANDONED)
    }

    /// Whether the failing hop's detail already says what happened, from this record:
    /// a flow-cookie check of a callback found by its state carries the explanation
    /// of what came back, which the catalogue's usual cause would contradict.
    fn explained(&self, failed: &Hop) -> bool {
        failed.hop == "flow-cookie" && self.hops.iter().any(|h| h.hop == "redirect")
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
                if let Some(r) = reasons::lookup(reason).filter(|_| !self.explained(h)) {
                    out.push_str(&format!("  usually: {}\n  fix:     {}\n", r.cause, r.fix));
                }
            }
            None if self.completed() => out.push_str("completed\n"),
            None => out.push_str(&self.unfinished()),
        }
        out
    }

    fn unfinished(&self) -> String {
        if self.hops.last().is_some_and(|h| h.hop == "returned") {
            return format!(
                "the callback reached another replica: `portcullis explain flow {}` on every replica's logs shows the whole login\n",
                self.id
            );
        }
        let diagnose = format!("`portcullis diagnose --rule {}`", self.rule);
        match &self.sent {
            Some(sent) => format!(
                "not finished: the browser has not come back from the provider (yet, or to another replica). If the provider showed an error page instead, it refused client `{}` or the redirect URI {}; {diagnose} sends the same login and shows the provider's answer\n",
                sent.client_id, sent.redirect_uri
            ),
            None => format!(
                "not finished: the browser has not come back (yet, or to another replica). If the provider showed an error page instead, it refused the client or the redirect_uri of the first hop; {diagnose} sends the same login and shows the provider's answer\n"
            ),
        }
    }
}

/// How a callback came back, as the flow-cookie check saw it.
pub struct Return<'a> {
    /// Unix milliseconds.
    pub at: i64,
    pub host: &'a str,
    /// Whether it came over TLS.
    pub secure: bool,
    /// The rule (`namespace/name`) that answered it.
    pub rule: &'a str,
    /// How many cookies the browser sent.
    pub cookies: usize,
    /// The flow-cookie check's reason.
    pub reason: &'static str,
}

/// What happened to a login whose callback did not match its flow cookie, from its
/// flow record: when and where it began, for whom, and what the browser sent back.
/// Differences of host, scheme and rule are named only when there are some.
pub fn explain_return(flow: &FlowRecord, back: &Return<'_>) -> String {
    let began = flow.hops.first().map_or(back.at, |h| h.at);
    let ago = ago(back.at - began);
    let same_host = flow.host == back.host;
    let place = if same_host {
        "on this host".to_owned()
    } else {
        format!(
            "on {}, but the browser came back to {} (the flow cookie stays with {}: open the app by one host name)",
            flow.host, back.host, flow.host
        )
    };
    let sent = flow.sent.as_ref();
    // The page the browser gets says this too: another rule is not named there.
    let client = match (flow.rule == back.rule, sent) {
        (true, _) => "to this client".to_owned(),
        (false, Some(s)) => format!("by another rule of this host (client {})", s.client_id),
        (false, None) => "by another rule of this host".to_owned(),
    };
    let scheme = if back.secure { "https" } else { "http" };
    let scheme_changed = sent.filter(|s| !s.redirect_uri.starts_with(&format!("{scheme}://")));
    let scheme_note = scheme_changed.map_or(String::new(), |s| {
        format!(
            "; the provider was asked to send it back to {} but it came over {scheme}",
            s.redirect_uri
        )
    });
    let what = match back.reason {
        "AuthMissingAWSALBAuthNonce" if back.cookies == 0 => {
            "the browser came back with no cookies at all: cookies blocked, private mode or another browser".to_owned()
        }
        "AuthMissingAWSALBAuthNonce" => format!(
            "the browser came back with {} other cookie(s) but not this login's flow cookie: blocked (third-party or SameSite settings) or cleared during the login",
            back.cookies
        ),
        "AuthLoginWindowExpired" => {
            "the login took longer than its 15 minutes: start again from the application".to_owned()
        }
        "AuthInvalidStateParam" => {
            "the browser sent another login's flow cookie under this login's name".to_owned()
        }
        _ => "the browser sent this login's flow cookie back altered: it does not open with this replica's keys".to_owned(),
    };
    let provider_fine = same_host
        && scheme_changed.is_none()
        && matches!(
            back.reason,
            "AuthMissingAWSALBAuthNonce" | "AuthLoginWindowExpired"
        );
    format!(
        "issued {ago} ago {place} {client}; {what}{scheme_note}{}",
        if provider_fine {
            "; nothing to change at the provider"
        } else {
            ""
        }
    )
}

/// A duration in the unit a person reads it in.
fn ago(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..10_000 => format!("{:.2} s", ms as f64 / 1000.0),
        10_000..120_000 => format!("{} s", ms / 1000),
        _ => format!("{} min", ms / 60_000),
    }
}

pub struct FlowLog {
    flows: Mutex<Flows>,
    /// Flows whose first authenticated request is still to be seen; when zero the
    /// request path skips the lock.
    awaiting_first_request: AtomicUsize,
    /// Keys the state index: made at start, it never leaves the process, so states
    /// are not kept in memory in the clear.
    state_key: hmac::Key,
    /// Milliseconds a flow waits for its callback before it counts as abandoned.
    abandon_after_ms: i64,
    /// How many flows were counted abandoned: the status writer watches it.
    abandoned_total: tokio::sync::watch::Sender<u64>,
}

/// The records, and their ids by the keyed hash of their state, for callbacks that
/// lost their flow cookie. An index entry goes when its record goes.
#[derive(Default)]
struct Flows {
    records: VecDeque<FlowRecord>,
    by_state: HashMap<StateTag, String>,
}

impl Default for FlowLog {
    fn default() -> Self {
        Self::new(DEFAULT_ABANDON_AFTER)
    }
}

/// A flow counted abandoned: its rule, for the metric.
pub struct Abandoned {
    pub rule: String,
}

impl FlowLog {
    pub fn new(abandon_after: Duration) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // The index only finds diagnostics; a fixed key (the random generator failing
        // at start) would still find them.
        let state_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &[0; 32]));
        Self {
            flows: Default::default(),
            awaiting_first_request: AtomicUsize::new(0),
            state_key,
            abandon_after_ms: abandon_after.as_millis().min(i64::MAX as u128) as i64,
            abandoned_total: tokio::sync::watch::channel(0).0,
        }
    }

    /// Changes each time flows are counted abandoned.
    pub fn watch_abandoned(&self) -> tokio::sync::watch::Receiver<u64> {
        self.abandoned_total.subscribe()
    }

    fn tag(&self, state: &str) -> StateTag {
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&hmac::sign(&self.state_key, state.as_bytes()).as_ref()[..16]);
        tag
    }

    /// Records a flow's redirect to the provider, keeping what it sent and a keyed
    /// hash of its `state`.
    pub fn begun(&self, id: &str, rule: &str, host: &str, hop: Hop, state: &str, sent: Sent) {
        let tag = self.tag(state);
        self.insert(id, rule, host, hop, Some((tag, sent)));
    }

    /// Adds a hop to flow `id` (made if new) and writes the hop's log line.
    pub fn record(&self, id: &str, rule: &str, host: &str, hop: Hop) {
        self.insert(id, rule, host, hop, None);
    }

    fn insert(&self, id: &str, rule: &str, host: &str, hop: Hop, began: Option<(StateTag, Sent)>) {
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
        if let Some(flow) = flows.records.iter_mut().find(|f| f.id == id) {
            if flow.hops.len() < MAX_HOPS {
                flow.hops.push(hop);
            }
            return;
        }
        if flows.records.len() >= MAX_FLOWS
            && let Some(old) = flows.records.pop_front()
            && let Some(tag) = old.state_tag
        {
            flows.by_state.remove(&tag);
        }
        let id: String = id.chars().take(MAX_NAME).collect();
        let (state_tag, sent) = began.map_or((None, None), |(t, s)| (Some(t), Some(s)));
        if let Some(tag) = state_tag {
            flows.by_state.insert(tag, id.clone());
        }
        flows.records.push_back(FlowRecord {
            id,
            rule: rule.to_owned(),
            host: host.chars().take(MAX_NAME).collect(),
            hops: vec![hop],
            reason: None,
            sent,
            state_tag,
        });
    }

    /// The flow whose redirect sent this `state`, if it began on this replica and is
    /// still kept.
    pub fn by_state(&self, state: &str) -> Option<FlowRecord> {
        let tag = self.tag(state);
        let flows = self.flows.lock().ok()?;
        let id = flows.by_state.get(&tag)?;
        flows.records.iter().find(|f| &f.id == id).cloned()
    }

    /// Marks flow `id` as failed with `reason`.
    pub fn failed(&self, id: &str, reason: &'static str) {
        if let Ok(mut flows) = self.flows.lock()
            && let Some(flow) = flows.records.iter_mut().find(|f| f.id == id)
        {
            flow.reason = Some(reason);
        }
    }

    /// The flows that sent the browser to the provider longer ago than the abandon
    /// time and saw no callback here since.
    pub fn overdue(&self, now_ms: i64) -> Vec<String> {
        self.flows.lock().map_or_else(
            |_| Vec::new(),
            |flows| {
                (flows.records.iter())
                    .filter(|f| f.waiting() && now_ms - f.hops[0].at >= self.abandon_after_ms)
                    .map(|f| f.id.clone())
                    .collect()
            },
        )
    }

    /// Records that flow `id`'s callback reached another replica, so it is not
    /// abandoned.
    pub fn returned_elsewhere(&self, id: &str, now_ms: i64) {
        let Some(found) = self.waiting_flow(id) else {
            return;
        };
        let hop = Hop {
            at: now_ms,
            hop: "returned".into(),
            ok: true,
            trace_id: found.hops[0].trace_id.clone(),
            detail: "the callback reached another replica".into(),
        };
        self.record(id, &found.rule, &found.host, hop);
    }

    fn waiting_flow(&self, id: &str) -> Option<FlowRecord> {
        let flows = self.flows.lock().ok()?;
        (flows.records.iter())
            .find(|f| f.id == id && f.waiting())
            .cloned()
    }

    /// Counts the flows `ids` abandoned, those of them still waiting: each gets an
    /// `abandoned` hop (and its log line). Returns them, for the metric.
    pub fn abandon(&self, now_ms: i64, ids: &[String]) -> Vec<Abandoned> {
        let due: Vec<FlowRecord> = ids.iter().filter_map(|id| self.waiting_flow(id)).collect();
        if !due.is_empty() {
            self.abandoned_total.send_modify(|n| *n += due.len() as u64);
        }
        due.into_iter()
            .map(|f| {
                let hop = Hop {
                    at: now_ms,
                    hop: ABANDONED.into(),
                    ok: false,
                    trace_id: f.hops[0].trace_id.clone(),
                    detail: format!(
                        "{ABANDONED_REASON}: sent to the provider {} ago, never returned: the provider refused the client or redirect URI, or the user gave up — run `portcullis diagnose --rule {}`",
                        ago(now_ms - f.hops[0].at),
                        f.rule
                    ),
                };
                self.record(&f.id, &f.rule, &f.host, hop);
                Abandoned { rule: f.rule }
            })
            .collect()
    }

    /// `abandon` of every overdue flow: for a replica that is the only one.
    pub fn sweep(&self, now_ms: i64) -> Vec<Abandoned> {
        self.abandon(now_ms, &self.overdue(now_ms))
    }

    /// Flows counted abandoned in the last `window` among the recent ones, by rule
    /// (`namespace/name`).
    pub fn abandoned_counts(&self, now_ms: i64, window: Duration) -> BTreeMap<String, i32> {
        let since = now_ms - window.as_millis().min(i64::MAX as u128) as i64;
        let mut out = BTreeMap::new();
        if let Ok(flows) = self.flows.lock() {
            for f in flows.records.iter().filter(|f| f.abandoned()) {
                if f.hops.last().is_some_and(|h| h.at >= since) {
                    *out.entry(f.rule.clone()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// Failed logins among the recent flows, by rule (`namespace/name`) and reason.
    pub fn failures(&self) -> BTreeMap<String, BTreeMap<String, i32>> {
        let mut out: BTreeMap<String, BTreeMap<String, i32>> = Default::default();
        if let Ok(flows) = self.flows.lock() {
            for f in flows.records.iter() {
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
            let f = flows.records.iter().find(|f| f.id == id)?;
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
            .map(|f| f.records.iter().rev().cloned().collect())
            .unwrap_or_default();
        flows.sort_by_key(|f| f.failure().is_none());
        flows
    }

    /// The flow with this id, or the one a hop of which carried this trace id.
    pub fn find(&self, id_or_trace: &str) -> Option<FlowRecord> {
        let flows = self.flows.lock().ok()?;
        flows
            .records
            .iter()
            .find(|f| f.id == id_or_trace)
            .or_else(|| {
                flows
                    .records
                    .iter()
                    .find(|f| f.hops.iter().any(|h| h.trace_id == id_or_trace))
            })
            .cloned()
    }

    /// Records and index entries kept (for the tests of their bounds).
    pub fn kept(&self) -> (usize, usize) {
        self.flows
            .lock()
            .map_or((0, 0), |f| (f.records.len(), f.by_state.len()))
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

    fn sent() -> Sent {
        Sent {
            client_id: "web".into(),
            redirect_uri: "https://h/oauth2/idpresponse".into(),
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
        assert!(
            unfinished.contains("`portcullis diagnose --rule apps/sso`"),
            "{unfinished}"
        );
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

    #[test]
    fn a_flow_without_its_callback_is_abandoned_once_after_the_wait() {
        let log = FlowLog::new(Duration::from_secs(120));
        let start = now_ms();
        let redirect = Hop {
            at: start,
            ..hop("redirect", true, "1-a")
        };
        log.begun("a", "apps/sso", "h", redirect.clone(), "state-a", sent());
        log.begun(
            "b",
            "apps/sso",
            "h",
            Hop {
                trace_id: "1-b".into(),
                ..redirect
            },
            "state-b",
            sent(),
        );
        log.record("b", "apps/sso", "h", hop("callback", true, "1-b2"));
        assert!(log.sweep(start + 119_000).is_empty(), "not yet");
        let abandoned = log.sweep(start + 125_000);
        assert_eq!(abandoned.len(), 1, "b came back");
        assert_eq!(abandoned[0].rule, "apps/sso");
        assert!(log.sweep(start + 300_000).is_empty(), "counted once");
        let a = log.find("a").unwrap();
        assert!(a.abandoned());
        let text = a.render();
        assert!(
            text.contains("broke at abandoned: AuthLoginAbandoned: sent to the provider 2 min ago, never returned: the provider refused the client or redirect URI, or the user gave up — run `portcullis diagnose --rule apps/sso`"),
            "{text}"
        );
        let counts = log.abandoned_counts(start + 125_000, Duration::from_secs(900));
        assert_eq!(counts.get("apps/sso"), Some(&1));
        assert!(
            log.abandoned_counts(start + 125_000 + 901_000, Duration::from_secs(900))
                .is_empty(),
            "out of the window"
        );
        assert!(
            log.failures().is_empty(),
            "abandoned is not a failed callback"
        );

        // The browser comes back after all: no longer abandoned, and not a failure.
        log.record("a", "apps/sso", "h", hop("callback", true, "1-a2"));
        let a = log.find("a").unwrap();
        assert!(!a.abandoned() && a.failure().is_none());
    }

    #[test]
    fn a_flow_whose_callback_reached_another_replica_is_not_abandoned() {
        let log = FlowLog::new(Duration::from_secs(1));
        let start = now_ms();
        let redirect = Hop {
            at: start,
            ..hop("redirect", true, "1-a")
        };
        log.begun("a", "apps/sso", "h", redirect, "state-a", sent());
        assert_eq!(log.overdue(start + 2_000), ["a"]);
        log.returned_elsewhere("a", start + 2_000);
        assert!(log.overdue(start + 3_000).is_empty());
        assert!(log.abandon(start + 3_000, &["a".into()]).is_empty());
        let a = log.find("a").unwrap();
        assert!(a.failure().is_none() && !a.abandoned());
        assert!(
            a.render().contains("the callback reached another replica"),
            "{}",
            a.render()
        );
    }

    #[test]
    fn a_callback_finds_its_flow_by_state_and_the_index_stays_bounded() {
        let log = FlowLog::default();
        log.begun(
            "first",
            "apps/sso",
            "h",
            hop("redirect", true, "1-a"),
            "state-0",
            sent(),
        );
        assert_eq!(log.by_state("state-0").unwrap().id, "first");
        assert!(log.by_state("state-1").is_none());
        for i in 1..=MAX_FLOWS + 10 {
            let id = format!("f{i}");
            log.begun(
                &id,
                "apps/sso",
                "h",
                hop("redirect", true, "1-x"),
                &format!("state-{i}"),
                sent(),
            );
        }
        assert_eq!(log.kept(), (MAX_FLOWS, MAX_FLOWS));
        assert!(log.by_state("state-0").is_none(), "gone with its record");
        assert_eq!(
            log.by_state(&format!("state-{MAX_FLOWS}")).unwrap().id,
            format!("f{MAX_FLOWS}")
        );
    }

    fn back(reason: &'static str, cookies: usize) -> Return<'static> {
        Return {
            at: 1_240,
            host: "h",
            secure: true,
            rule: "apps/sso",
            cookies,
            reason,
        }
    }

    fn began() -> FlowRecord {
        FlowRecord {
            id: "a".into(),
            rule: "apps/sso".into(),
            host: "h".into(),
            hops: vec![Hop {
                at: 1_000,
                ..hop("redirect", true, "1-a")
            }],
            sent: Some(sent()),
            ..FlowRecord::default()
        }
    }

    #[test]
    fn what_came_back_is_explained_from_the_record() {
        let flow = began();
        assert_eq!(
            explain_return(&flow, &back("AuthMissingAWSALBAuthNonce", 0)),
            "issued 0.24 s ago on this host to this client; the browser came back with no cookies at all: cookies blocked, private mode or another browser; nothing to change at the provider"
        );
        let some = explain_return(&flow, &back("AuthMissingAWSALBAuthNonce", 3));
        assert!(
            some.contains("with 3 other cookie(s) but not this login's flow cookie"),
            "{some}"
        );
        let elsewhere = Return {
            host: "www.h",
            secure: false,
            rule: "apps/other",
            ..back("AuthMissingAWSALBAuthNonce", 0)
        };
        let text = explain_return(&flow, &elsewhere);
        assert!(
            text.contains("on h, but the browser came back to www.h"),
            "{text}"
        );
        assert!(
            text.contains("by another rule of this host (client web)"),
            "{text}"
        );
        assert!(!text.contains("apps/sso"), "no rule name on a page: {text}");
        assert!(text.contains("came over http"), "{text}");
        assert!(!text.contains("nothing to change"), "{text}");
        let same = explain_return(&flow, &back("AuthMissingAWSALBAuthNonce", 0));
        assert!(
            !same.contains("came over") && !same.contains("came back to"),
            "{same}"
        );
    }
}
