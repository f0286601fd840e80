//! Sends planned writes to the API server: a bounded queue, one worker, a timeout on
//! every call, and leadership checked at the moment each call is made (a replica that
//! lost the Lease writes nothing more, whatever is still queued).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::json;
use tokio::sync::mpsc;

use super::lease::Leadership;
use super::plan::Write;
use crate::diagnostics::ObjectRef;
use crate::model::{AuthRule, AuthRuleStatus, GROUP};
use crate::observe::metrics::StatusMetrics;

pub const FIELD_MANAGER: &str = "portcullis-controller";
/// Writes waiting beyond this are dropped; the next plan asks for them again.
pub const QUEUE_BOUND: usize = 1024;
/// How long a status this replica wrote stands for the object's status while the
/// watch may still deliver an older copy.
const TRUST_OWN_WRITE: Duration = Duration::from_secs(20);
/// A route Event that still holds is told again after this long.
const REPEAT_ROUTE_EVENT: Duration = Duration::from_secs(3600);

/// What this replica wrote lately, so a plan does not mistake a lagging watch for a
/// change.
#[derive(Default)]
pub struct OwnWrites {
    statuses: HashMap<String, (AuthRuleStatus, Instant)>,
    unreadable: HashMap<ObjectRef, String>,
    gateway: HashMap<ObjectRef, (serde_json::Value, Instant)>,
    /// Route Events sent, so each is told once an hour while it holds.
    events: HashMap<super::plan::RouteEvent, Instant>,
}

impl OwnWrites {
    pub fn recent(&mut self) -> (HashMap<String, AuthRuleStatus>, HashMap<ObjectRef, String>) {
        self.statuses
            .retain(|_, (_, at)| at.elapsed() < TRUST_OWN_WRITE);
        let statuses = self
            .statuses
            .iter()
            .map(|(uid, (s, _))| (uid.clone(), s.clone()))
            .collect();
        (statuses, self.unreadable.clone())
    }

    /// Route Events sent within the last hour.
    pub fn recent_events(&mut self) -> std::collections::HashSet<super::plan::RouteEvent> {
        self.events
            .retain(|_, at| at.elapsed() < REPEAT_ROUTE_EVENT);
        self.events.keys().cloned().collect()
    }

    /// Gateway API status written lately, by object.
    pub fn recent_gateway(&mut self) -> HashMap<ObjectRef, serde_json::Value> {
        self.gateway
            .retain(|_, (_, at)| at.elapsed() < TRUST_OWN_WRITE);
        self.gateway
            .iter()
            .map(|(o, (v, _))| (o.clone(), v.clone()))
            .collect()
    }
}

/// The sending end of the queue.
#[derive(Clone)]
pub struct Applier {
    queue: mpsc::Sender<Write>,
    metrics: StatusMetrics,
    pub own: Arc<Mutex<OwnWrites>>,
}

impl Applier {
    /// Queues `writes`; what does not fit is dropped (and counted) for the next plan.
    pub fn send(&self, writes: Vec<Write>) {
        for w in writes {
            match self.queue.try_send(w) {
                Ok(()) => self.metrics.queue.inc(),
                Err(_) => self.metrics.patches.with_label_values(&["dropped"]).inc(),
            }
        }
    }
}

/// Starts the worker.
pub fn spawn(
    client: kube::Client,
    recorder: Recorder,
    leadership: Leadership,
    call_timeout: Duration,
    metrics: StatusMetrics,
) -> Applier {
    let (tx, mut rx) = mpsc::channel::<Write>(QUEUE_BOUND);
    let own: Arc<Mutex<OwnWrites>> = Arc::default();
    let worker = Worker {
        client,
        recorder,
        leadership,
        call_timeout,
        metrics: metrics.clone(),
        own: own.clone(),
    };
    tokio::spawn(async move {
        while let Some(write) = rx.recv().await {
            worker.metrics.queue.dec();
            worker.send(write).await;
        }
    });
    Applier {
        queue: tx,
        metrics,
        own,
    }
}

struct Worker {
    client: kube::Client,
    recorder: Recorder,
    leadership: Leadership,
    call_timeout: Duration,
    metrics: StatusMetrics,
    own: Arc<Mutex<OwnWrites>>,
}

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl Worker {
    async fn send(&self, write: Write) {
        // Checked now, not when the write was planned; the call may not outlast it.
        let Some(remaining) = self.leadership.remaining() else {
            self.metrics
                .patches
                .with_label_values(&["not_leader"])
                .inc();
            return;
        };
        let started = Instant::now();
        let limit = remaining.min(self.call_timeout);
        let result = tokio::time::timeout(limit, self.call(&write)).await;
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        let label = match result {
            Ok(Ok(())) => {
                self.remember(write);
                "ok"
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, write = describe(&write), "status write failed");
                "error"
            }
            Err(_) => {
                tracing::warn!(timeout = ?limit, write = describe(&write), "status write timed out");
                "timeout"
            }
        };
        self.metrics.patches.with_label_values(&[label]).inc();
    }

    async fn call(&self, write: &Write) -> Result<(), ApplyError> {
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        match write {
            Write::AuthRuleStatus { object, status, .. } => {
                let body = serde_json::to_value(status).unwrap_or_default();
                self.patch_rule(object, body, &apply).await
            }
            Write::UnreadableStatus { object, body, .. } => {
                self.patch_rule(object, body.clone(), &apply).await
            }
            Write::IngressAddress {
                object,
                load_balancer,
            } => {
                let api: Api<k8s_openapi::api::networking::v1::Ingress> =
                    Api::namespaced(self.client.clone(), &object.namespace);
                let body = json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "Ingress",
                    "status": {"loadBalancer": load_balancer},
                });
                api.patch_status(&object.name, &apply, &Patch::Apply(body))
                    .await?;
                Ok(())
            }
            Write::GatewayApiStatus {
                object,
                kind,
                status,
            } => {
                let body = json!({
                    "apiVersion": format!("{}/v1", crate::model::GATEWAY_GROUP),
                    "kind": kind,
                    "status": status,
                });
                let patch = Patch::Apply(body);
                match *kind {
                    "GatewayClass" => {
                        let api: Api<gateway_api::gatewayclasses::GatewayClass> =
                            Api::all(self.client.clone());
                        api.patch_status(&object.name, &apply, &patch).await?;
                    }
                    "Gateway" => {
                        let api: Api<gateway_api::gateways::Gateway> =
                            Api::namespaced(self.client.clone(), &object.namespace);
                        api.patch_status(&object.name, &apply, &patch).await?;
                    }
                    "TLSRoute" => {
                        let api: Api<gateway_api::tlsroutes::TlsRoute> =
                            Api::namespaced(self.client.clone(), &object.namespace);
                        api.patch_status(&object.name, &apply, &patch).await?;
                    }
                    "ListenerSet" => {
                        let api: Api<gateway_api::listenersets::ListenerSet> =
                            Api::namespaced(self.client.clone(), &object.namespace);
                        api.patch_status(&object.name, &apply, &patch).await?;
                    }
                    "GRPCRoute" => {
                        let api: Api<gateway_api::grpcroutes::GrpcRoute> =
                            Api::namespaced(self.client.clone(), &object.namespace);
                        api.patch_status(&object.name, &apply, &patch).await?;
                    }
                    "BackendTLSPolicy" => {
                        let api: Api<gateway_api::backendtlspolicies::BackendTlsPolicy> =
                            Api::namespaced(self.client.clone(), &object.namespace);
                        api.patch_status(&object.name, &apply, &patch).await?;
                    }
                    _ => {
                        let api: Api<gateway_api::httproutes::HttpRoute> =
                            Api::namespaced(self.client.clone(), &object.namespace);
                        api.patch_status(&object.name, &apply, &patch).await?;
                    }
                }
                Ok(())
            }
            Write::Event {
                regarding,
                warning,
                reason,
                note,
                action,
                ..
            } => {
                let event = Event {
                    type_: if *warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: reason.clone(),
                    note: Some(note.clone()),
                    action: (*action).into(),
                    secondary: None,
                };
                self.recorder.publish(&event, regarding).await?;
                Ok(())
            }
        }
    }

    async fn patch_rule(
        &self,
        object: &ObjectRef,
        status: serde_json::Value,
        apply: &PatchParams,
    ) -> Result<(), ApplyError> {
        let api: Api<AuthRule> = Api::namespaced(self.client.clone(), &object.namespace);
        let body = json!({
            "apiVersion": format!("{GROUP}/v1alpha1"),
            "kind": "AuthRule",
            "status": status,
        });
        api.patch_status(&object.name, apply, &Patch::Apply(body))
            .await?;
        Ok(())
    }

    fn remember(&self, write: Write) {
        let Ok(mut own) = self.own.lock() else {
            return;
        };
        match write {
            Write::AuthRuleStatus { uid, status, .. } => {
                own.statuses.insert(uid, (status, Instant::now()));
            }
            Write::UnreadableStatus {
                object, reported, ..
            } => {
                own.unreadable.insert(object, reported);
            }
            Write::GatewayApiStatus { object, status, .. } => {
                own.gateway.insert(object, (status, Instant::now()));
            }
            Write::Event {
                once: Some(key), ..
            } => {
                own.events.insert(key, Instant::now());
            }
            _ => {}
        }
    }
}

fn describe(write: &Write) -> String {
    match write {
        Write::AuthRuleStatus { object, .. } | Write::UnreadableStatus { object, .. } => {
            format!("status of {object}")
        }
        Write::IngressAddress { object, .. } => format!("address of {object}"),
        Write::GatewayApiStatus { object, .. } => format!("status of {object}"),
        Write::Event { reason, .. } => format!("Event {reason}"),
    }
}
