//! Prometheus metrics. Label handles are made once per route when a snapshot is
//! installed, so the request path only increments.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub upstream_errors: IntCounterVec,
    /// Copies for HTTPRoute `RequestMirror` filters, by what became of them.
    pub mirror_copies: IntCounterVec,
    /// Attempts an HTTPRoute `retry` sent again, by why (`status`, `connect`).
    pub upstream_retries: IntCounterVec,
    pub reloads: IntCounterVec,
    /// EndpointSlice changes swapped into upstreams without a compile.
    pub endpoint_updates: IntCounter,
    pub snapshot_routes: IntGauge,
    pub config_errors: IntGauge,
    /// 1 once a configuration is served (what `/readyz` says).
    pub ready: IntGauge,
    pub access_log_dropped: IntCounter,
    pub auth: AuthMetrics,
    pub status: StatusMetrics,
}

/// What the status-writing replica sends to the API server (all zero elsewhere).
#[derive(Clone)]
pub struct StatusMetrics {
    pub patches: IntCounterVec,
    pub latency: Histogram,
    pub queue: IntGauge,
    /// Plans made while leading, by whether they found anything to write
    /// (`writes`, `nothing`): a steady cluster counts only `nothing`.
    pub plans: IntCounterVec,
    /// Rounds of the leader election, by what this replica learnt (`leading`,
    /// `following`, `failed`).
    pub lease_rounds: IntCounterVec,
}

/// Every outcome of a status write, made at start so `rate()` sees each from zero.
const STATUS_RESULTS: [&str; 5] = ["ok", "error", "timeout", "not_leader", "dropped"];

/// ALB's authentication metrics (ELBAuthSuccess, ELBAuthFailure, ELBAuthError,
/// ELBAuthLatency, ELBAuthRefreshTokenSuccess, ELBAuthUserClaimsSizeExceeded), by
/// AuthRule. Logins are rare next to requests, so labels are looked up per event.
pub struct AuthMetrics {
    logins: IntCounterVec,
    login_latency: HistogramVec,
    refreshes: IntCounterVec,
    claims_size_exceeded: IntCounterVec,
    logouts: IntCounterVec,
    bearer_tokens: IntCounterVec,
    abandoned: IntCounterVec,
    session_bytes: HistogramVec,
}

/// Sealed session sizes: one cookie, ALB's four shards, then what only Redis holds.
const SESSION_BYTES_BUCKETS: &[f64] = &[
    512.0, 1024.0, 2048.0, 4000.0, 8000.0, 16000.0, 65536.0, 262144.0, 1048576.0,
];

impl AuthMetrics {
    /// A finished callback: `reason` is empty on success; a 4xx is a failure (the
    /// user or the browser), a 5xx an error (the provider or the configuration).
    pub fn login(&self, rule: &str, status: u16, reason: &str, seconds: f64) {
        let result = match (reason.is_empty(), status) {
            (true, _) => "success",
            (false, 400..=499) => "failure",
            _ => "error",
        };
        self.logins.with_label_values(&[rule, result, reason]).inc();
        self.login_latency
            .with_label_values(&[rule])
            .observe(seconds);
        if reason == "AuthUserinfoResponseSizeExceeded" {
            self.claims_size_exceeded.with_label_values(&[rule]).inc();
        }
    }

    pub fn refresh(&self, rule: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.refreshes.with_label_values(&[rule, result]).inc();
    }

    pub fn logout(&self, rule: &str) {
        self.logouts.with_label_values(&[rule]).inc();
    }

    /// The sealed size of a session a login made, by where it is kept.
    pub fn session_size(&self, store: &str, bytes: usize) {
        self.session_bytes
            .with_label_values(&[store])
            .observe(bytes as f64);
    }

    /// A login that sent the browser to the provider and saw no callback in time.
    pub fn abandoned(&self, rule: &str) {
        self.abandoned.with_label_values(&[rule]).inc();
    }

    /// A request with a bearer token: `reason` is empty when the token passed.
    pub fn bearer(&self, rule: &str, reason: &str) {
        let result = if reason.is_empty() {
            "success"
        } else {
            "failure"
        };
        self.bearer_tokens
            .with_label_values(&[rule, result, reason])
            .inc();
    }
}

/// The handles of one route (or of unmatched requests).
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [IntCounter; 5],
    latency: Histogram,
    labels: [String; 2],
}

impl RouteMetrics {
    /// The ingress (`namespace/name`) and route labels of its series.
    pub fn labels(&self) -> (&str, &str) {
        (&self.labels[0], &self.labels[1])
    }

    pub fn observe(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails for invalid metric names or duplicate registration: a programming error.
    r.expect("metric definitions are valid")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes a metric and registers it, handing back the handle that is counted on.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    made: prometheus::Result<C>,
) -> C {
    let metric = must(made);
    must(registry.register(Box::new(metric.clone())));
    metric
}

impl AuthMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            logins: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "auth_logins_total",
                        "Logins finished at the callback, by AuthRule, result (success, failure, error) and error_reason",
                    ),
                    &["rule", "result", "reason"],
                ),
            ),
            login_latency: registered(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "auth_login_duration_seconds",
                        "Time the callback spent with the provider (token, ID token, userinfo)",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["rule"],
                ),
            ),
            refreshes: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "auth_refreshes_total",
                        "Sessions renewed with their refresh token, by AuthRule and result",
                    ),
                    &["rule", "result"],
                ),
            ),
            claims_size_exceeded: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "auth_claims_size_exceeded_total",
                        "Logins refused because the user's claims exceed 11 KiB",
                    ),
                    &["rule"],
                ),
            ),
            logouts: registered(
                registry,
                IntCounterVec::new(
                    Opts::new("auth_logouts_total", "Logout requests, by AuthRule"),
                    &["rule"],
                ),
            ),
            bearer_tokens: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "auth_bearer_tokens_total",
                        "Requests with a bearer token, by AuthRule, result (success, failure) and error_reason",
                    ),
                    &["rule", "result", "reason"],
                ),
            ),
            abandoned: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "auth_logins_abandoned_total",
                        "Logins that sent the browser to the provider and saw no callback within --login-abandoned-after (the provider refused the client or redirect URI, or the user gave up), by AuthRule",
                    ),
                    &["rule"],
                ),
            ),
            session_bytes: registered(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "session_sealed_bytes",
                        "Sealed size of the sessions logins made, by store (cookie: at most 4 shards of 4000 bytes; redis: up to 1 MiB)",
                    )
                    .buckets(SESSION_BYTES_BUCKETS.to_vec()),
                    &["store"],
                ),
            ),
        }
    }
}

impl StatusMetrics {
    fn new(registry: &Registry) -> Self {
        let status = Self {
            patches: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "status_patches_total",
                        "Status patches and Events sent by the leader, by result",
                    ),
                    &["result"],
                ),
            ),
            latency: registered(
                registry,
                Histogram::with_opts(HistogramOpts::new(
                    "status_patch_seconds",
                    "Time of one status patch or Event",
                )),
            ),
            queue: registered(
                registry,
                IntGauge::new("status_queue_depth", "Status writes waiting to be sent"),
            ),
            plans: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "status_plans_total",
                        "Plans the leader made from the cluster's objects, by whether they found anything to write",
                    ),
                    &["result"],
                ),
            ),
            lease_rounds: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "leader_lease_rounds_total",
                        "Rounds of the leader election, by what this replica learnt",
                    ),
                    &["result"],
                ),
            ),
        };
        for result in STATUS_RESULTS {
            status.patches.with_label_values(&[result]);
        }
        for result in ["writes", "nothing"] {
            status.plans.with_label_values(&[result]);
        }
        for result in ["leading", "following", "failed"] {
            status.lease_rounds.with_label_values(&[result]);
        }
        status
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("portcullis".into()), None).expect("valid prefix");
        let ready = registered(
            &registry,
            IntGauge::new(
                "ready",
                "1 once a configuration is served (as /readyz), else 0",
            ),
        );
        Self {
            requests: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "requests_total",
                        "Requests answered, by Ingress, route and status class",
                    ),
                    &["ingress", "route", "status_class"],
                ),
            ),
            latency: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "request_duration_seconds",
                        "Time from request received to response headers sent",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["ingress", "route"],
                ),
            ),
            upstream_errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new("upstream_errors_total", "Failed upstream attempts, by kind"),
                    &["kind"],
                ),
            ),
            mirror_copies: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "mirror_requests_total",
                        "Request copies for RequestMirror filters, by result (sent, answered, failed, dropped_busy, dropped_body, dropped_no_endpoints)",
                    ),
                    &["result"],
                ),
            ),
            upstream_retries: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "upstream_retries_total",
                        "Requests sent again under an HTTPRoute retry, by cause (status, connect)",
                    ),
                    &["cause"],
                ),
            ),
            reloads: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "config_reloads_total",
                        "Snapshots compiled, by result (clean or with_errors)",
                    ),
                    &["result"],
                ),
            ),
            endpoint_updates: registered(
                &registry,
                IntCounter::new(
                    "endpoint_updates_total",
                    "EndpointSlice changes made live without a compile (upstream targets swapped)",
                ),
            ),
            snapshot_routes: registered(
                &registry,
                IntGauge::new("snapshot_routes", "Routes in the snapshot being served"),
            ),
            config_errors: registered(
                &registry,
                IntGauge::new(
                    "config_errors",
                    "Error diagnostics in the snapshot being served",
                ),
            ),
            ready,
            access_log_dropped: registered(
                &registry,
                IntCounter::new(
                    "access_log_dropped_total",
                    "Access-log lines dropped because the writer fell behind",
                ),
            ),
            auth: AuthMetrics::new(&registry),
            status: StatusMetrics::new(&registry),
            registry,
        }
    }

    /// Makes the series of an AuthRule that exist before its first event, so
    /// dashboards and `rate()` see them from zero.
    pub fn auth_rule(&self, rule: &str) {
        for result in ["success", "failure"] {
            self.auth.refreshes.with_label_values(&[rule, result]);
        }
        self.auth.logouts.with_label_values(&[rule]);
        self.auth.abandoned.with_label_values(&[rule]);
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn route(&self, ingress: &str, route: &str) -> RouteMetrics {
        let by_class =
            STATUS_CLASSES.map(|c| self.requests.with_label_values(&[ingress, route, c]));
        let latency = self.latency.with_label_values(&[ingress, route]);
        RouteMetrics {
            by_class,
            latency,
            labels: [ingress.to_owned(), route.to_owned()],
        }
    }

    /// Drops the series of a route that is gone, so removed routes do not linger.
    pub fn forget(&self, route: &RouteMetrics) {
        let [ingress, name] = &route.labels;
        for c in STATUS_CLASSES {
            let _ = self.requests.remove_label_values(&[ingress, name, c]);
        }
        let _ = self.latency.remove_label_values(&[ingress, name]);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
