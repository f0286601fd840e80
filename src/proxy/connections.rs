//! How many connections a listener keeps open, in all and per client address.
//!
//! Every accepted connection takes a slot; the slot goes when the connection's task
//! ends, or, for a WebSocket, when its tunnel does (a tunnel is never idle). As the listener nears its cap (nine tenths of it), each new connection asks
//! the keep-alive connection idle the longest to close (gracefully: hyper finishes
//! what it is writing); at the cap a new connection is admitted only when an idle one
//! makes room, else it is closed at once. A client at its own cap likewise makes
//! room from its own idle connections or is refused. Refusals and idle closes are
//! counted (`portcullis_connections_refused_total`, `portcullis_connections_closed_idle_total`)
//! and logged at most every ten seconds.
//!
//! The client address is a parameter: the socket's peer, or on a `--proxy-protocol`
//! listener the address the PROXY header names, so a connection is admitted only once
//! its header is read. Until then it is one of the listener's connections waiting for
//! a header: at most as many as the listener's cap, each for at most the header-read
//! timeout, apart from the open ones (a client cannot be told from another before its
//! header, and the load balancer's own address would reach any per-client cap at
//! once). Peers in `--trusted-proxies` aggregate many clients, so only the listener's
//! cap applies to them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::observe::RateLimitedLog;

/// The caps (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max: usize,
    pub per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max: 16_384,
            per_client: 512,
        }
    }
}

/// One open connection, as the tracker sees it.
pub struct Slot {
    id: u64,
    client: IpAddr,
    /// Requests answered so far; a connection that answered none is not "keep-alive".
    served: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds after the tracker's start when it last finished a request.
    idle_since: AtomicU64,
    closing: AtomicBool,
    /// The connection task waiting for `closing`, woken when it is set.
    close: AtomicWaker,
    exempt: bool,
}

impl Slot {
    /// A request began on this connection.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A request ended (its response headers are sent; the body may still stream).
    pub fn end(&self, tracker: &Connections) {
        self.served.fetch_add(1, Ordering::AcqRel);
        self.idle_since.store(tracker.now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn is_idle(&self) -> bool {
        self.served.load(Ordering::Acquire) > 0
            && self.in_flight.load(Ordering::Acquire) == 0
            && !self.closing.load(Ordering::Acquire)
    }

    /// Resolves when the tracker wants this connection closed. Only the connection's
    /// own task waits on its slot, so a waker in an atomic serves: it is polled at
    /// every wake-up of the connection, where a `Notify` would take a lock.
    pub fn close_requested(&self) -> CloseRequested<'_> {
        CloseRequested(self)
    }

    fn ask_to_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.wake();
    }
}

/// See [`Slot::close_requested`].
pub struct CloseRequested<'a>(&'a Slot);

impl std::future::Future for CloseRequested<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let slot = self.0;
        if slot.closing.load(Ordering::Acquire) {
            return std::task::Poll::Ready(());
        }
        slot.close.register(cx.waker());
        // Asked between the check and the registration: that wake found no waker.
        if slot.closing.load(Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// A connection's claim on its slot: the slot is given back when the last holder
/// drops it (the connection's task, or a WebSocket tunnel that outlives hyper's
/// connection).
pub struct Held {
    slot: Arc<Slot>,
    conns: Arc<Connections>,
}

pub type Hold = Arc<Held>;

impl Held {
    pub fn new(slot: Arc<Slot>, conns: Arc<Connections>) -> Hold {
        Arc::new(Self { slot, conns })
    }

    /// The connection became a tunnel: never idle from now on (it cannot be closed
    /// gracefully), still counted until the tunnel ends.
    pub fn tunnel(&self) {
        self.slot.begin();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.conns.release(&self.slot);
    }
}

/// Why a connection was refused: the label of the refusals counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Listener,
    Client,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Self::Listener => "max_connections",
            Self::Client => "max_connections_per_client",
        }
    }
}

#[derive(Default)]
struct Inner {
    slots: HashMap<u64, Arc<Slot>>,
    /// Open connections by client; an entry exists only while one is open, so this
    /// holds at most `slots.len()` entries.
    by_client: HashMap<IpAddr, usize>,
    closing: usize,
    next_id: u64,
}

/// The connections of one listener (shared by every worker accepting on it).
pub struct Connections {
    name: &'static str,
    limits: Limits,
    exempt: Vec<super::IpNet>,
    inner: Mutex<Inner>,
    /// Connections still waiting for their PROXY protocol header.
    waiting: Arc<Semaphore>,
    start: Instant,
    open: prometheus::IntGauge,
    refused: prometheus::IntCounterVec,
    closed_idle: prometheus::IntCounter,
    log: RateLimitedLog,
}

/// The metrics of every listener's tracker, registered once.
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub open: prometheus::IntGaugeVec,
    pub refused: prometheus::IntCounterVec,
    pub closed_idle: prometheus::IntCounterVec,
}

impl ConnectionMetrics {
    pub fn new() -> Self {
        let open = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("connections_open", "Open client connections, by listener"),
            &["listener"],
        )
        .expect("valid metric");
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "connections_refused_total",
                "Client connections closed at once because a cap was reached, by listener and cap (max_connections, max_connections_per_client)",
            ),
            &["listener", "reason"],
        )
        .expect("valid metric");
        let closed_idle = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "connections_closed_idle_total",
                "Idle keep-alive connections closed to make room as a connection cap neared, by listener",
            ),
            &["listener"],
        )
        .expect("valid metric");
        Self {
            open,
            refused,
            closed_idle,
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.open.clone()),
            Box::new(self.refused.clone()),
            Box::new(self.closed_idle.clone()),
        ]
    }
}

impl Default for ConnectionMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Connections {
    pub fn new(
        name: &'static str,
        limits: Limits,
        exempt: Vec<super::IpNet>,
        metrics: &ConnectionMetrics,
    ) -> Self {
        for cap in [Refused::Listener, Refused::Client] {
            metrics.refused.with_label_values(&[name, cap.label()]);
        }
        Self {
            name,
            limits,
            exempt,
            inner: Mutex::default(),
            waiting: Arc::new(Semaphore::new(match limits.max {
                0 => Semaphore::MAX_PERMITS,
                max => max,
            })),
            start: Instant::now(),
            open: metrics.open.with_label_values(&[name]),
            refused: metrics.refused.clone(),
            closed_idle: metrics.closed_idle.with_label_values(&[name]),
            log: RateLimitedLog::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A place for a connection waiting for its PROXY header (until the permit is
    /// dropped), or `None` when as many as the listener's cap are already waiting.
    pub fn wait_for_header(&self) -> Option<OwnedSemaphorePermit> {
        self.waiting.clone().try_acquire_owned().ok()
    }

    /// Takes a slot for a connection from `client`, or says which cap refused it. The
    /// slot must be given back with `release` when the connection ends.
    pub fn admit(&self, client: IpAddr) -> Result<Arc<Slot>, Refused> {
        let exempt = self.exempt.iter().any(|n| n.contains(client));
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let max = self.limits.max;
        if max > 0 {
            let usable = inner.slots.len() - inner.closing;
            // Nine tenths: begin closing idle keep-alive connections, one per accept.
            if usable >= max - max / 10 {
                self.close_idle(&mut inner, None);
            }
            let usable = inner.slots.len() - inner.closing;
            // Closing connections still hold sockets: allow an eighth over the cap
            // for them, never more.
            if usable >= max || inner.slots.len() > max + max / 8 {
                return Err(self.refuse(Refused::Listener, client));
            }
        }
        let per_client = self.limits.per_client;
        if per_client > 0 && !exempt {
            let open = inner.by_client.get(&client).copied().unwrap_or(0);
            if open >= per_client && !self.close_idle(&mut inner, Some(client)) {
                return Err(self.refuse(Refused::Client, client));
            }
        }
        inner.next_id += 1;
        let slot = Arc::new(Slot {
            id: inner.next_id,
            client,
            served: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close: AtomicWaker::new(),
            exempt,
        });
        inner.slots.insert(slot.id, slot.clone());
        if !exempt {
            *inner.by_client.entry(client).or_default() += 1;
        }
        self.open.set(inner.slots.len() as i64);
        Ok(slot)
    }

    /// Gives a connection's slot back.
    pub fn release(&self, slot: &Slot) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.slots.remove(&slot.id).is_none() {
            return;
        }
        if slot.closing.load(Ordering::Acquire) {
            inner.closing = inner.closing.saturating_sub(1);
        }
        if !slot.exempt
            && let Some(n) = inner.by_client.get_mut(&slot.client)
        {
            *n -= 1;
            if *n == 0 {
                inner.by_client.remove(&slot.client);
            }
        }
        self.open.set(inner.slots.len() as i64);
    }

    /// Asks the connection idle the longest (of `client`, when given) to close.
    fn close_idle(&self, inner: &mut Inner, client: Option<IpAddr>) -> bool {
        let oldest = inner
            .slots
            .values()
            .filter(|s| client.is_none_or(|c| s.client == c) && s.is_idle())
            .min_by_key(|s| s.idle_since.load(Ordering::Acquire))
            .cloned();
        let Some(slot) = oldest else {
            return false;
        };
        // Its slot still counts (for the client too) until it is gone: a client is
        // over its cap by at most the connections it is closing.
        slot.ask_to_close();
        inner.closing += 1;
        self.closed_idle.inc();
        true
    }

    fn refuse(&self, why: Refused, client: IpAddr) -> Refused {
        self.refused
            .with_label_values(&[self.name, why.label()])
            .inc();
        if self.log.allow() {
            let total = self
                .refused
                .with_label_values(&[self.name, why.label()])
                .get();
            tracing::warn!(
                listener = self.name,
                %client,
                cap = why.label(),
                max_connections = self.limits.max,
                max_connections_per_client = self.limits.per_client,
                refused_so_far = total,
                "a connection cap was reached: new connections are closed at once"
            );
        }
        why
    }

    /// Open connections, for tests.
    pub fn open(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn tracker(max: usize, per_client: usize) -> Connections {
        Connections::new(
            "test",
            Limits { max, per_client },
            vec!["10.9.0.0/16".parse().unwrap()],
            &ConnectionMetrics::new(),
        )
    }

    #[test]
    fn the_listener_cap_refuses_the_extra_connection() {
        let t = tracker(3, 0);
        let slots: Vec<_> = (1..=3).map(|i| t.admit(ip(i)).unwrap()).collect();
        assert_eq!(t.admit(ip(4)).err(), Some(Refused::Listener));
        t.release(&slots[0]);
        assert!(t.admit(ip(4)).is_ok(), "room again once one closes");
        assert_eq!(t.open(), 3);
    }

    #[test]
    fn an_idle_keep_alive_connection_makes_room_first() {
        let t = tracker(3, 0);
        let a = t.admit(ip(1)).unwrap();
        a.begin();
        a.end(&t);
        let _b = t.admit(ip(2)).unwrap();
        // Nine tenths of 3 is reached at 3 - 0: no early close yet.
        let _c = t.admit(ip(3)).unwrap();
        assert!(!a.closing.load(Ordering::Acquire));
        // At the cap: the idle one is asked to close, the new one comes in.
        let d = t.admit(ip(4)).unwrap();
        assert!(a.closing.load(Ordering::Acquire), "the idle one goes first");
        // Until it has gone, nothing else is idle: the next one is refused.
        d.begin();
        assert_eq!(t.admit(ip(5)).err(), Some(Refused::Listener));
        t.release(&a);
        assert_eq!(t.open(), 3);
        assert_eq!(t.closed_idle.get(), 1);
    }

    #[test]
    fn a_busy_connection_is_never_chosen_and_the_cap_holds() {
        let t = tracker(10, 0);
        let mut open = Vec::new();
        for i in 0..10 {
            let s = t.admit(ip(i)).unwrap();
            s.begin();
            open.push(s);
        }
        for i in 0..100 {
            assert!(t.admit(ip(i)).is_err());
        }
        assert!(open.iter().all(|s| !s.closing.load(Ordering::Acquire)));
        assert_eq!(t.open(), 10);
    }

    #[test]
    fn each_client_has_its_own_cap_and_trusted_proxies_are_exempt() {
        let t = tracker(0, 2);
        let a1 = t.admit(ip(1)).unwrap();
        let _a2 = t.admit(ip(1)).unwrap();
        assert_eq!(t.admit(ip(1)).err(), Some(Refused::Client));
        assert!(t.admit(ip(2)).is_ok(), "another client");
        // The client's own idle connection makes room for it.
        a1.begin();
        a1.end(&t);
        assert!(t.admit(ip(1)).is_ok());
        t.release(&a1);
        assert_eq!(t.admit(ip(1)).err(), Some(Refused::Client));
        let proxy = IpAddr::from([10, 9, 0, 1]);
        for _ in 0..10 {
            assert!(t.admit(proxy).is_ok());
        }
        // Released slots leave no entry behind.
        let t = tracker(0, 2);
        for i in 0..=255 {
            let s = t.admit(ip(i)).unwrap();
            t.release(&s);
        }
        assert!(t.inner.lock().unwrap().by_client.is_empty());
    }

    #[test]
    fn connections_waiting_for_a_proxy_header_are_capped_apart() {
        let t = tracker(2, 1);
        let first = t.wait_for_header().unwrap();
        let _second = t.wait_for_header().unwrap();
        assert!(t.wait_for_header().is_none(), "the listener's cap");
        // Waiting takes no slot: the open connections keep their own cap.
        assert!(t.admit(ip(1)).is_ok());
        drop(first);
        assert!(t.wait_for_header().is_some(), "room again once one is read");
    }
}
