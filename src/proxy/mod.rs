//! The data plane: accept, route, (auth), forward, log. It reads the current snapshot
//! once per request, so installing a new one never blocks or drops a request.

pub mod balance;
pub mod canonical;
pub mod client_cert;
mod clients;
pub mod connections;
pub mod cors;
mod forward;
pub mod handler;
pub mod headers;
pub mod mirror;
pub mod pages;
pub mod passthrough;
mod pool;
pub mod proxy_protocol;
pub mod retry;
pub mod server;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

use crate::auth::login::Authenticator;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::compile::Snapshot;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{Metrics, RouteMetrics};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Name in the access log's `elb` field.
    pub log_name: String,
    /// Peers whose `X-Forwarded-*` headers are believed (e.g. a cloud load balancer).
    pub trusted_proxies: Vec<IpNet>,
    /// Port of the HTTPS listener, for redirects; `None` when there is none.
    pub https_redirect_port: Option<u16>,
    pub header_read_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_concurrent_streams: u32,
    /// How long a target is skipped after a failed connection.
    pub failure_backoff: Duration,
    /// A path on every host that serves the `x-amzn-oidc-data` keys (`<path>/<kid>`
    /// as PEM, `<path>` as a JWKS) to backends that cannot reach the admin listener.
    pub public_keys_path: Option<String>,
    /// How ambiguous paths are handled (see `canonical`).
    pub path_rules: canonical::PathRules,
    /// Forward the path as the client sent it instead of the canonical path.
    pub forward_original_path: bool,
    /// Client headers never forwarded (the identity headers always go too).
    pub dropped_headers: Vec<http::HeaderName>,
    /// Serve `/flows` on the admin listener to any peer, not only loopback.
    pub expose_flows: bool,
    /// Forward client headers with `_` in their names (dropped by default).
    pub underscores_in_headers: bool,
    /// Open connections allowed per listener and per client address.
    pub connection_limits: connections::Limits,
    /// How long a login waits for its callback before it counts as abandoned.
    pub login_abandoned_after: Duration,
    /// Listeners whose connections start with a PROXY protocol header.
    pub proxy_protocol: Vec<ListenerName>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            log_name: "portcullis".into(),
            trusted_proxies: Vec::new(),
            https_redirect_port: None,
            header_read_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_concurrent_streams: 256,
            failure_backoff: Duration::from_secs(10),
            public_keys_path: None,
            path_rules: canonical::PathRules::default(),
            forward_original_path: false,
            dropped_headers: canonical::DEFAULT_DROPPED_HEADERS
                .iter()
                .map(|n| http::HeaderName::from_static(n))
                .collect(),
            expose_flows: false,
            underscores_in_headers: false,
            connection_limits: connections::Limits::default(),
            login_abandoned_after: crate::observe::flows::DEFAULT_ABANDON_AFTER,
            proxy_protocol: Vec::new(),
        }
    }
}

/// A data-plane listener, by the name flags and metric labels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListenerName {
    /// `--http`.
    Http,
    /// `--https`.
    Https,
    /// `--https-offloaded`: plain TCP whose TLS a load balancer in front ended.
    HttpsOffloaded,
}

impl ListenerName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::HttpsOffloaded => "https-offloaded",
        }
    }
}

/// An address range: `10.0.0.0/8`, `::1/128`, or a single address. Parsed and matched
/// by the `ipnet` crate, as the Ingresses' `inbound-cidrs` are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self(addr.into()));
        }
        match s.split_once('/') {
            Some((addr, _)) if addr.parse::<IpAddr>().is_ok() => s
                .parse()
                .map(Self)
                .map_err(|_| format!("{s:?} has an invalid prefix length")),
            _ => Err(format!("{s:?} is not an IP address or CIDR range")),
        }
    }
}

impl IpNet {
    /// An IPv4 peer carried as IPv6 (`::ffff:10.0.0.1`) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// The snapshot being served, with the metric handles of its routes.
pub struct Live {
    pub snapshot: Arc<Snapshot>,
    pub route_metrics: Vec<RouteMetrics>,
    pub unmatched: RouteMetrics,
    /// Live targets and balancer state of each upstream, by `Upstream::id`.
    pub balances: Vec<Arc<balance::BackendHandle>>,
    /// The connections of each upstream, by `Upstream::id`.
    pub pools: Vec<Arc<clients::Pools>>,
}

/// Everything the request path shares.
pub struct DataPlane {
    pub live: ArcSwap<Live>,
    pub ready: AtomicBool,
    pub config: ProxyConfig,
    pub metrics: Metrics,
    pub log: AccessLog,
    /// How many data-plane workers serve traffic: one per core.
    workers: usize,
    /// The connections to the pods by way of speaking to them, kept across snapshots
    /// while some upstream still speaks that way.
    pools: std::sync::Mutex<HashMap<crate::compile::Transport, Arc<clients::Pools>>>,
    pub auth: Authenticator,
    pub flows: Arc<crate::observe::flows::FlowLog>,
    /// Live targets and balancer state by upstream name, kept across snapshots.
    balances: std::sync::Mutex<HashMap<String, Arc<balance::BackendHandle>>>,
    started: Instant,
    /// Open connections of each listener, shared by every worker accepting on it.
    pub http_connections: Arc<connections::Connections>,
    pub https_connections: Arc<connections::Connections>,
    pub offloaded_connections: Arc<connections::Connections>,
    /// Connections refused for their PROXY protocol header.
    pub proxy_refusals: proxy_protocol::Refusals,
    /// The sockets of Gateways with addresses of their own.
    pub gateway_sockets: crate::gateway_sockets::GatewaySockets,
}

impl DataPlane {
    pub fn new(config: ProxyConfig, log: AccessLog, auth: Authenticator) -> Arc<Self> {
        let metrics = Metrics::new();
        let unmatched = metrics.route("-", "-");
        let live = Live {
            snapshot: Arc::new(Snapshot::default()),
            route_metrics: Vec::new(),
            unmatched,
            balances: Vec::new(),
            pools: Vec::new(),
        };
        // The system RNG seeds itself on first use (tens of ms); pay that at start-up,
        // not on the first request.
        let _ = crate::observe::trace::TraceId::for_request(&http::HeaderMap::new(), 0);
        let _ = metrics
            .registry()
            .register(Box::new(auth.providers().health_metric()));
        let _ = metrics
            .registry()
            .register(Box::new(auth.shared().health_metric()));
        for c in auth.shared().bound_metrics() {
            let _ = metrics.registry().register(c);
        }
        let connection_metrics = connections::ConnectionMetrics::new();
        for c in connection_metrics.collectors() {
            let _ = metrics.registry().register(c);
        }
        let tracker = |name| {
            Arc::new(connections::Connections::new(
                name,
                config.connection_limits,
                config.trusted_proxies.clone(),
                &connection_metrics,
            ))
        };
        let (http_connections, https_connections) = (tracker("http"), tracker("https"));
        let offloaded_connections = tracker("https-offloaded");
        let proxy_refusals = proxy_protocol::Refusals::new();
        let _ = metrics.registry().register(proxy_refusals.collector());
        for listener in &config.proxy_protocol {
            proxy_refusals.register_listener(listener.as_str());
        }
        let flows = Arc::new(crate::observe::flows::FlowLog::new(
            config.login_abandoned_after,
        ));
        Arc::new(Self {
            live: ArcSwap::from_pointee(live),
            ready: AtomicBool::new(false),
            config,
            metrics,
            log,
            workers: workers(),
            pools: Default::default(),
            auth,
            flows,
            balances: Default::default(),
            started: Instant::now(),
            http_connections,
            https_connections,
            offloaded_connections,
            proxy_refusals,
            gateway_sockets: Default::default(),
        })
    }

    /// Counts logins abandoned at the provider, a few times per abandon time, for as
    /// long as the data plane lives; closes idle connections to the pods as it goes.
    pub fn spawn_flow_sweeper(self: &Arc<Self>) {
        let every = (self.config.login_abandoned_after / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        let dp = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(dp) = dp.upgrade() else {
                    return;
                };
                // First: the flows' sweep may wait on the shared state.
                dp.sweep_pools();
                dp.sweep_flows().await;
            }
        });
    }

    /// Closes connections to the pods idle past `--upstream-idle-timeout`.
    fn sweep_pools(&self) {
        let now = Instant::now();
        let pools: Vec<_> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for pool in pools {
            pool.sweep(now);
        }
    }

    /// Overdue flows are abandoned unless another replica saw their callback (noted in
    /// the shared state); when that cannot be asked, they wait for the next sweep.
    async fn sweep_flows(&self) {
        use crate::observe::flows::now_ms;
        let overdue = self.flows.overdue(now_ms());
        if overdue.is_empty() {
            return;
        }
        let abandoned = match self.auth.shared().callbacks_noted(&overdue).await {
            Ok(None) => overdue,
            Ok(Some(noted)) => {
                let (back, gone): (Vec<_>, Vec<_>) =
                    overdue.into_iter().zip(noted).partition(|(_, n)| *n);
                for (id, _) in back {
                    self.flows.returned_elsewhere(&id, now_ms());
                }
                gone.into_iter().map(|(id, _)| id).collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, "abandoned logins not counted now: the shared state cannot be asked");
                return;
            }
        };
        for a in self.flows.abandon(now_ms(), &abandoned) {
            self.metrics.auth.abandoned(&a.rule);
        }
    }

    /// What the controller shares with the request path.
    pub fn context(&self) -> crate::context::Context {
        crate::context::Context {
            providers: self.auth.providers().clone(),
            flows: self.flows.clone(),
            status_metrics: self.metrics.status.clone(),
        }
    }

    /// Swaps in a new snapshot whole; requests in flight finish on the old one.
    pub fn install(&self, snapshot: Arc<Snapshot>) {
        let old = self.live.load();
        // Keyed by the old handles' own labels: nothing is copied for routes that stay.
        let previous: HashMap<(&str, &str), usize> = old
            .route_metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (m.labels(), i))
            .collect();
        let mut kept = vec![false; old.route_metrics.len()];
        let route_metrics: Vec<RouteMetrics> = snapshot
            .routes
            .all
            .iter()
            .map(|r| {
                let ingress = format!("{}/{}", r.ingress.namespace, r.ingress.name);
                let label = r.label();
                match previous.get(&(ingress.as_str(), label.as_str())) {
                    Some(&i) if !kept[i] => {
                        kept[i] = true;
                        old.route_metrics[i].clone()
                    }
                    _ => self.metrics.route(&ingress, &label),
                }
            })
            .collect();
        for (m, _) in old.route_metrics.iter().zip(&kept).filter(|(_, k)| !**k) {
            self.metrics.forget(m);
        }
        self.metrics
            .snapshot_routes
            .set(snapshot.routes.all.len() as i64);
        let unmatched = old.unmatched.clone();
        // Held until the snapshot is live, so an endpoint update sees it with its handles.
        let mut kept = self.balances.lock().unwrap_or_else(|e| e.into_inner());
        let balances = balances_for(&mut kept, &snapshot);
        let pools = self.pools_for(&snapshot);
        for rule in snapshot.auth_rules.keys() {
            if !old.snapshot.auth_rules.contains_key(rule) {
                self.metrics
                    .auth_rule(&format!("{}/{}", rule.namespace, rule.name));
            }
        }
        self.live.store(Arc::new(Live {
            snapshot,
            route_metrics,
            unmatched,
            balances,
            pools,
        }));
        drop(kept);
        self.ready.store(true, Ordering::Release);
        self.metrics.ready.set(1);
    }

    /// Only EndpointSlices changed: the targets of every upstream that follows them are
    /// read again from `slices` and swapped in where they differ, without a new
    /// snapshot. Returns how many upstreams changed.
    pub fn update_endpoints(&self, slices: &[Arc<EndpointSlice>]) -> usize {
        // Held so that an install cannot interleave and leave a handle on older targets.
        let _kept = self.balances.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.load();
        let index = crate::compile::SliceIndex::new(slices);
        let mut changed = 0;
        for up in &live.snapshot.routes.upstreams {
            let (Some(source), Some(handle)) = (&up.endpoints, live.balances.get(up.id)) else {
                continue;
            };
            if handle.set_targets(&index.ready_targets(source)) {
                changed += 1;
            }
        }
        changed
    }

    /// The connections of each of the snapshot's upstreams: those of its transport,
    /// kept from before when another upstream spoke that way already.
    fn pools_for(&self, snapshot: &Snapshot) -> Vec<Arc<clients::Pools>> {
        let mut kept = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        let list = snapshot
            .routes
            .upstreams
            .iter()
            .map(|up| {
                next.entry(up.transport.clone())
                    .or_insert_with(|| match kept.get(&up.transport) {
                        Some(p) => p.clone(),
                        None => Arc::new(clients::Pools::new(
                            &self.config,
                            &up.transport,
                            self.workers,
                        )),
                    })
                    .clone()
            })
            .collect();
        *kept = next;
        list
    }

    /// How many data-plane workers serve traffic: one per core.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The data-plane worker this runs on (the first one off the workers).
    fn worker(&self) -> usize {
        WORKER.with(std::cell::Cell::get) % self.workers
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Milliseconds since start: the clock for failure marks.
    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `t` in milliseconds since the data plane started.
    fn ms_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_millis() as u64
    }
}

/// The handle of each of the snapshot's upstreams: the kept one, holding the
/// compiled targets (with the marks of those still there), else a new one.
fn balances_for(
    kept: &mut HashMap<String, Arc<balance::BackendHandle>>,
    snapshot: &Snapshot,
) -> Vec<Arc<balance::BackendHandle>> {
    let mut next = HashMap::with_capacity(snapshot.routes.upstreams.len());
    let list = snapshot
        .routes
        .upstreams
        .iter()
        .map(|up| {
            // Upstreams of one Service port that speak to it differently share its targets.
            if let Some(h) = next.get(&up.name) {
                return Arc::clone(h);
            }
            let handle = match kept.remove(&up.name) {
                Some(h) => {
                    h.set_targets(&up.targets);
                    h
                }
                None => Arc::new(balance::BackendHandle::new(&up.targets)),
            };
            next.insert(up.name.clone(), handle.clone());
            handle
        })
        .collect();
    *kept = next;
    list
}

// rustls asks its certificate resolver to be Debug; the data plane has nothing worth printing.
impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataPlane")
    }
}

thread_local! {
    /// The data-plane worker this thread is (0 on threads that are none).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as data-plane worker `index`.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// One data-plane worker per core the process may run on.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// What the request path knows of the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client: the socket's peer, or the address its PROXY protocol header names.
    pub peer: SocketAddr,
    /// The socket's own address (on loopback, guards serve plain HTTP).
    pub local: SocketAddr,
    /// The port the client connected to: the PROXY header's destination (the load
    /// balancer's listener), else `local`'s.
    pub port: u16,
    pub tls: Option<TlsInfo>,
    /// A load balancer in front ended TLS for this connection (`--https-offloaded`).
    pub tls_offloaded: bool,
    /// The Gateway socket the connection came in on (`--gateway-addresses`): only
    /// the routes of that Gateway's listeners serve it. `None`: a flag listener.
    pub socket: Option<SocketAddr>,
    /// Its forwarding header values, rendered on its first request (after a PROXY
    /// header has named the client).
    pub forwarded: std::sync::OnceLock<headers::ConnValues>,
}

impl ConnInfo {
    /// The client spoke HTTPS: to Portcullis, or to the load balancer that ended TLS.
    pub fn https(&self) -> bool {
        self.tls.is_some() || self.tls_offloaded
    }

    pub fn forwarded(&self) -> &headers::ConnValues {
        self.forwarded
            .get_or_init(|| headers::ConnValues::new(self.peer, self.port))
    }
}

#[derive(Clone, Debug)]
pub struct TlsInfo {
    pub server_name: Option<String>,
    pub cipher: String,
    pub protocol: String,
    pub cert_source: Option<String>,
    /// The key of the client-certificate setting the handshake was made under
    /// (`HostAuth::key`): a request for a host with another one is refused.
    pub client_auth: u64,
    /// The certificate the client presented, if any.
    pub client_cert: Option<Arc<client_cert::ClientCert>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges_match_by_prefix() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped IPv6 peers count"
        );
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let odd: IpNet = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains("192.168.1.200".parse().unwrap()));
        assert!(!odd.contains("192.168.1.100".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }
}
