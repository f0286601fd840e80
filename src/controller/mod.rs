//! What the controller tells the cluster: AuthRule conditions, Ingress addresses and
//! Events. Every replica serves traffic; only the Lease holder writes.
//!
//! ```text
//!  compile ──▶ Published ──┐
//!  provider registry ──────┤   plan (pure)    apply (bounded queue,
//!  flow records ───────────┼──────────────▶ timeout per call, leadership
//!  own recent writes ──────┘   Vec<Write>     checked per call) ──▶ API server
//!  lease task ──▶ Leadership (deadline) ─────────────────┘
//! ```

pub mod apply;
pub mod lease;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use crate::auth::providers::{Health, ProviderKey};
use crate::compile::Snapshot;
use crate::context::Context;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::store::Objects;

/// Status is planned again this often, whatever changed.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How old a provider's last check may be before status reads it again.
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// Client credentials are checked when they change, and again this often.
const CREDENTIALS_EVERY: Duration = Duration::from_secs(300);
/// Logins counted abandoned bring status up to date at most this often (besides the
/// resync), so a provider refusing every login does not mean a write per login.
const ABANDONED_PLAN_EVERY: Duration = Duration::from_secs(5);

/// The last credentials check of each rule: what was checked (a digest of the client
/// id, secret, method and token endpoint), when, and the verdict.
type CredentialChecks =
    std::collections::HashMap<ObjectRef, ([u8; 32], std::time::Instant, Result<(), String>)>;

/// What one compile produced, as it was installed.
pub struct Published {
    pub objects: Objects,
    pub diagnostics: Vec<Diagnostic>,
    pub snapshot: Arc<Snapshot>,
    pub gateway_status: crate::compile::GatewayApiState,
}

pub struct Controller {
    pub client: kube::Client,
    /// The registry of providers and the flow records, shared with the request path.
    pub context: Context,
    /// Where the leader Lease lives.
    pub namespace: String,
    pub identity: String,
    /// The controller's Service, whose address Ingresses get (`namespace/name`).
    pub publish_service: Option<String>,
    /// A fixed address for Ingresses instead (IP or host name).
    pub publish_address: Option<String>,
    pub lease: lease::LeaseConfig,
}

impl Controller {
    /// Plans and writes status while this replica leads; gives the Lease up on
    /// shutdown.
    pub async fn run(
        self,
        mut published: watch::Receiver<Option<Arc<Published>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let metrics = self.context.status_metrics.clone();
        let (mut leadership, lease_task) = lease::spawn(
            leases,
            self.lease.clone(),
            metrics.lease_rounds.clone(),
            shutdown.clone(),
        );
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "portcullis".into(),
                instance: Some(self.identity.clone()),
            },
        );
        let plans = metrics.plans.clone();
        let applier = apply::spawn(
            self.client.clone(),
            recorder,
            leadership.clone(),
            self.lease.call_timeout,
            metrics,
        );
        let mut checked = CredentialChecks::new();
        let mut abandoned = self.context.flows.watch_abandoned();
        // When logins were counted abandoned: the next plan, no sooner than
        // ABANDONED_PLAN_EVERY after the last.
        let mut abandoned_due: Option<tokio::time::Instant> = None;
        let mut last_plan = tokio::time::Instant::now();
        let mut watching = true;
        loop {
            let due = abandoned_due;
            tokio::select! {
                r = published.changed() => if r.is_err() { break },
                _ = leadership.changed() => {}
                _ = tokio::time::sleep(RESYNC_EVERY) => {}
                r = abandoned.changed(), if due.is_none() && watching => {
                    match r {
                        Ok(()) => abandoned_due = Some(last_plan + ABANDONED_PLAN_EVERY),
                        Err(_) => watching = false,
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            abandoned_due = None;
            last_plan = tokio::time::Instant::now();
            if !leadership.holds() {
                continue;
            }
            let current = published.borrow_and_update().clone();
            if let Some(p) = current {
                let writes = self.plan(&p, &applier, &mut checked).await;
                let found = if writes.is_empty() {
                    "nothing"
                } else {
                    "writes"
                };
                plans.with_label_values(&[found]).inc();
                applier.send(writes);
            }
        }
        let _ = lease_task.await;
    }

    async fn plan(
        &self,
        p: &Published,
        applier: &apply::Applier,
        checked: &mut CredentialChecks,
    ) -> Vec<plan::Write> {
        let idp = self.provider_health(&p.snapshot).await;
        let credentials = self.credentials(&p.snapshot, checked).await;
        let failures = self.context.flows.failures();
        let abandoned = (self.context.flows)
            .abandoned_counts(crate::observe::flows::now_ms(), plan::ABANDONED_WINDOW);
        let (own_writes, own_unreadable, own_gateway, own_events) = match applier.own.lock() {
            Ok(mut own) => {
                let (writes, unreadable) = own.recent();
                (
                    writes,
                    unreadable,
                    own.recent_gateway(),
                    own.recent_events(),
                )
            }
            Err(_) => Default::default(),
        };
        plan::plan(&plan::Inputs {
            objects: &p.objects,
            snapshot: &p.snapshot,
            gateway: &p.gateway_status,
            diagnostics: &p.diagnostics,
            idp: &idp,
            credentials: &credentials,
            failures: &failures,
            abandoned: &abandoned,
            own_writes: &own_writes,
            own_unreadable: &own_unreadable,
            own_gateway: &own_gateway,
            own_events: &own_events,
            publish_service: self.publish_service.as_deref(),
            publish_address: self.publish_address.as_deref(),
            now: jiff::Timestamp::now(),
        })
    }

    /// Whether each rule's provider accepts its client credentials: asked with a
    /// made-up code when the credentials change, and every few minutes.
    async fn credentials(
        &self,
        snapshot: &Snapshot,
        checked: &mut CredentialChecks,
    ) -> BTreeMap<ObjectRef, Result<(), String>> {
        use crate::auth::credentials::{Credentials, client_credentials};
        let registry = &self.context.providers;
        checked.retain(|rule, _| snapshot.auth_rules.contains_key(rule));
        for (object, summary) in &snapshot.auth_rules {
            let Some(policy) = summary.policy.as_ref().filter(|p| p.login) else {
                continue;
            };
            let Ok(provider) = registry.get(&ProviderKey::of(policy)).await else {
                continue;
            };
            let token_endpoint = &provider.meta.token_endpoint;
            let method = format!("{:?}", policy.token_endpoint_auth_method);
            let digest = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                [
                    policy.client_id.as_str(),
                    &policy.client_secret,
                    &method,
                    token_endpoint,
                ]
                .join("\0")
                .as_bytes(),
            );
            let mut key = [0u8; 32];
            key.copy_from_slice(digest.as_ref());
            let fresh = checked
                .get(object)
                .is_some_and(|(k, at, _)| *k == key && at.elapsed() < CREDENTIALS_EVERY);
            if fresh {
                continue;
            }
            let verdict = match client_credentials(registry.client(), policy, token_endpoint).await
            {
                Credentials::Accepted => Ok(()),
                Credentials::Refused(why) => Err(why),
                Credentials::Unknown => continue,
            };
            checked.insert(object.clone(), (key, std::time::Instant::now(), verdict));
        }
        checked
            .iter()
            .map(|(rule, (_, _, verdict))| (rule.clone(), verdict.clone()))
            .collect()
    }

    /// Each compiled rule's provider, from the registry the request path uses.
    async fn provider_health(
        &self,
        snapshot: &Snapshot,
    ) -> BTreeMap<ObjectRef, Result<(), String>> {
        let registry = &self.context.providers;
        let mut out = BTreeMap::new();
        for (object, summary) in &snapshot.auth_rules {
            let Some(policy) = &summary.policy else {
                continue;
            };
            let health = match registry.check(&ProviderKey::of(policy), PROBE_EVERY).await {
                Health::Ok => Ok(()),
                Health::Failing(e) => Err(e.to_string()),
            };
            out.insert(object.clone(), health);
        }
        out
    }
}
