//! What the controller tells the cluster: AuthRule conditions, Ingress addresses and
//! Events. Only the Lease holder writes; every replica serves traffic. Status is
//! written with server-side apply under one field manager, transition times are kept
//! while a condition holds, and unchanged status is never written, so status writes
//! never wake anyone's reconcile loop for nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::watch;

use crate::auth::providers::{Health, ProviderKey, Registry};
use crate::compile::{AuthRuleSummary, Snapshot};
use crate::diagnose::rules_in;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{AuthRule, AuthRuleStatus, GROUP};
use crate::observe::flows::FlowRecord;
use crate::proxy::DataPlane;
use crate::store::Objects;

pub const FIELD_MANAGER: &str = "portcullis-controller";
const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Status is also re-checked this often, whatever changed.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// What one compile produced, for the status writer.
pub struct Published {
    pub objects: Objects,
    pub diagnostics: Vec<Diagnostic>,
    pub snapshot: Arc<Snapshot>,
}

/// The conditions of one AuthRule, from its diagnostics and what the compile made of
/// it. `previous` supplies the transition times of conditions that did not change.
/// What the writer knows beyond the compile: whether the provider answered, and the
/// recent login failures by reason.
#[derive(Default)]
pub struct Observed {
    pub idp: Option<Result<(), String>>,
    pub failures: BTreeMap<String, i32>,
}

pub fn auth_rule_status(
    generation: Option<i64>,
    summary: Option<&AuthRuleSummary>,
    diagnostics: &[&Diagnostic],
    previous: Option<&AuthRuleStatus>,
    observed: &Observed,
    now: Timestamp,
) -> AuthRuleStatus {
    let is_ref = |d: &&&Diagnostic| {
        d.field.starts_with("spec.oidc.clientSecretRef") || d.field.starts_with("spec.targetRefs")
    };
    let errors: Vec<&&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    let spec_problem = errors.iter().find(|d| !is_ref(d));
    let ref_problem = errors.iter().find(|d| is_ref(d));
    let explain = |d: &Diagnostic| format!("{}: {} (fix: {})", d.field, d.message, d.fix);
    let accepted = match spec_problem {
        Some(d) => ("False", d.reason.to_owned(), explain(d)),
        None => ("True", "Accepted".into(), "the spec is valid".into()),
    };
    let resolved = match ref_problem {
        Some(d) => ("False", d.reason.to_owned(), explain(d)),
        None => (
            "True",
            "ResolvedRefs".into(),
            "the client Secret and every target Ingress were found".into(),
        ),
    };
    let attached = summary.map_or(0, |s| s.attached_routes);
    let ready = match summary {
        Some(s) if s.usable && attached > 0 => (
            "True",
            "Ready".into(),
            format!("guarding {attached} route(s)"),
        ),
        Some(s) if s.usable => (
            "False",
            "NoRoutes".into(),
            "no served Ingress route matches the targets and paths".into(),
        ),
        _ => (
            "False",
            "Invalid".into(),
            "the routes it targets answer 500 AuthRuleInvalid until the problems above are fixed"
                .into(),
        ),
    };
    let condition = |kind: &str, (status, reason, message): (&str, String, String)| {
        let kept = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
            .filter(|c| c.status == status && c.reason == reason)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason,
            message,
            observed_generation: generation,
            last_transition_time: kept.unwrap_or(Time(now)),
        }
    };
    let mut conditions = vec![
        condition("Accepted", accepted),
        condition("ResolvedRefs", resolved),
        condition("Ready", ready),
    ];
    if let Some(idp) = &observed.idp {
        conditions.push(condition(
            "IdPReachable",
            match idp {
                Ok(()) => (
                    "True",
                    "DiscoveryLoaded".into(),
                    "the discovery document and keys load".into(),
                ),
                Err(e) => (
                    "False",
                    "IdPUnreachable".into(),
                    format!("{e} (logins in progress keep the last good discovery; fix: run `portcullis diagnose` on this rule)"),
                ),
            },
        ));
    }
    AuthRuleStatus {
        conditions,
        observed_generation: generation,
        attached_routes: attached as i32,
        recent_login_failures: observed.failures.clone(),
    }
}

pub struct StatusWriter {
    pub client: kube::Client,
    /// Whose flow records give the recent login failures.
    pub data_plane: Arc<DataPlane>,
    /// Where the leader Lease lives.
    pub namespace: String,
    pub identity: String,
    /// The controller's Service, whose address Ingresses get (`namespace/name`).
    pub publish_service: Option<String>,
    /// A fixed address for Ingresses instead (IP or host name).
    pub publish_address: Option<String>,
}

impl StatusWriter {
    /// Writes status while this replica holds the Lease; gives the Lease up on shutdown.
    pub async fn run(
        self,
        mut published: watch::Receiver<Option<Arc<Published>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let lease = LeaderLease {
            api: Api::namespaced(self.client.clone(), &self.namespace),
            name: "portcullis-leader".into(),
            identity: self.identity.clone(),
        };
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "portcullis".into(),
                instance: Some(self.identity.clone()),
            },
        );
        let mut leading = false;
        let mut dirty = true;
        let mut written = Written::default();
        let mut probes = Probes::default();
        let mut last_write = tokio::time::Instant::now();
        let mut last_renew: Option<tokio::time::Instant> = None;
        loop {
            // Renewed on its own schedule, not on every change of the configuration.
            let now_leading = if last_renew.is_some_and(|t| t.elapsed() < RENEW_EVERY) {
                leading
            } else {
                last_renew = Some(tokio::time::Instant::now());
                match lease.acquire_or_renew().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "leader Lease: cannot renew; not writing status");
                        false
                    }
                }
            };
            if now_leading != leading {
                tracing::info!(identity = %self.identity, leading = now_leading, "leader Lease changed hands");
            }
            let became_leader = now_leading && !leading;
            leading = now_leading;
            if leading && (became_leader || dirty || last_write.elapsed() >= RESYNC_EVERY) {
                let current = published.borrow_and_update().clone();
                if let Some(p) = current {
                    let rules = rules_in(&p.snapshot);
                    probes
                        .refresh(self.data_plane.auth.providers(), &rules)
                        .await;
                    self.write_all(&p, &rules, &recorder, &mut written, &probes)
                        .await;
                    last_write = tokio::time::Instant::now();
                    dirty = false;
                }
            }
            let stopping = tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => false,
                r = published.changed() => {
                    dirty = true;
                    // The watch loop is gone only when the process is stopping.
                    r.is_err()
                }
                r = shutdown.wait_for(|s| *s) => r.is_ok(),
            };
            if stopping {
                if leading {
                    lease.release().await;
                }
                return;
            }
        }
    }

    async fn write_all(
        &self,
        p: &Published,
        rules: &Rules,
        recorder: &Recorder,
        written: &mut Written,
        probes: &Probes,
    ) {
        let flows = self.data_plane.flows.recent();
        let now = Timestamp::now();
        let mut by_object: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
        for d in &p.diagnostics {
            by_object.entry(&d.object).or_default().push(d);
        }
        for rule in &p.objects.auth_rules {
            let object = ObjectRef::new(
                "AuthRule",
                rule.metadata.namespace.as_deref().unwrap_or_default(),
                rule.metadata.name.as_deref().unwrap_or_default(),
            );
            let diags = by_object.get(&object).map(Vec::as_slice).unwrap_or(&[]);
            let uid = rule.metadata.uid.clone().unwrap_or_default();
            // The watch may not have delivered our own last write yet: trust that
            // write for a while, so a stale copy never looks like a change.
            let recent = written.recent(&uid);
            let label = format!("{}/{}", object.namespace, object.name);
            let observed = Observed {
                idp: rules
                    .get(&object)
                    .and_then(|(policy, _)| policy.as_ref())
                    .and_then(|policy| probes.get(policy)),
                failures: failures_by_reason(&flows, &label),
            };
            let status = auth_rule_status(
                rule.metadata.generation,
                p.snapshot.auth_rules.get(&object),
                diags,
                recent.or(rule.status.as_ref()),
                &observed,
                now,
            );
            if rule.status.as_ref() == Some(&status) || recent == Some(&status) {
                continue;
            }
            if let Err(e) = self.patch_rule_status(&object, &status).await {
                tracing::warn!(object = %object, error = %e, "cannot write AuthRule status");
                continue;
            }
            self.announce(recorder, rule, &status).await;
            written.insert(uid, status);
        }
        for unreadable in &p.objects.unreadable_auth_rules {
            let status = json!({"conditions": [{
                "type": "Accepted", "status": "False", "reason": "InvalidAuthRule",
                "message": format!("{} (fix: compare it with `kubectl explain authrule.spec`)", unreadable.error),
                "lastTransitionTime": Time(now),
            }]});
            let _ = self.patch_status_json(&unreadable.object, status).await;
        }
        self.publish_ingress_addresses(p).await;
    }

    async fn patch_rule_status(
        &self,
        object: &ObjectRef,
        status: &AuthRuleStatus,
    ) -> Result<(), kube::Error> {
        self.patch_status_json(object, serde_json::to_value(status).unwrap_or_default())
            .await
    }

    async fn patch_status_json(
        &self,
        object: &ObjectRef,
        status: serde_json::Value,
    ) -> Result<(), kube::Error> {
        let api: Api<AuthRule> = Api::namespaced(self.client.clone(), &object.namespace);
        let body = json!({
            "apiVersion": format!("{GROUP}/v1alpha1"),
            "kind": "AuthRule",
            "status": status,
        });
        api.patch_status(
            &object.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map(|_| ())
    }

    /// An Event for each condition that is newly False, with the fix in the note.
    async fn announce(&self, recorder: &Recorder, rule: &AuthRule, status: &AuthRuleStatus) {
        let was_false = |kind: &str| {
            rule.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == kind && c.status == "False")
            })
        };
        for c in &status.conditions {
            if c.status != "False" || c.type_ == "Ready" || was_false(&c.type_) {
                continue;
            }
            let event = Event {
                type_: EventType::Warning,
                reason: c.reason.clone(),
                note: Some(c.message.chars().take(1000).collect()),
                action: "Compile".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference(rule)).await {
                tracing::warn!(error = %e, "cannot record an Event");
            }
        }
        // Login failures: one Event per reason whose count grew, not one per request.
        let before = rule.status.as_ref().map(|s| &s.recent_login_failures);
        for (reason, count) in &status.recent_login_failures {
            if before
                .and_then(|b| b.get(reason))
                .is_some_and(|n| n >= count)
            {
                continue;
            }
            let advice = crate::explain::reasons::lookup(reason).map_or(String::new(), |r| {
                format!(" Usually: {} Fix: {}", r.cause, r.fix)
            });
            let event = Event {
                type_: EventType::Warning,
                reason: "LoginFailed".into(),
                note: Some(
                    format!("{count} recent login(s) failed with {reason}.{advice}")
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: "Login".into(),
                secondary: None,
            };
            let _ = recorder.publish(&event, &reference(rule)).await;
        }
    }

    /// Every served Ingress gets the controller's address in `status.loadBalancer`.
    async fn publish_ingress_addresses(&self, p: &Published) {
        let Some(address) = self.address().await else {
            return;
        };
        let served: BTreeSet<&ObjectRef> =
            p.snapshot.routes.all.iter().map(|r| &r.ingress).collect();
        for ingress in &p.objects.ingresses {
            let object = ObjectRef::new(
                "Ingress",
                ingress.metadata.namespace.as_deref().unwrap_or_default(),
                ingress.metadata.name.as_deref().unwrap_or_default(),
            );
            if !served.contains(&object) {
                continue;
            }
            let current = ingress
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref());
            if current == Some(&address) {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &object.namespace);
            let body = json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "status": {"loadBalancer": address},
            });
            if let Err(e) = api
                .patch_status(
                    &object.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await
            {
                tracing::warn!(object = %object, error = %e, "cannot write Ingress status");
            }
        }
    }

    async fn address(&self) -> Option<IngressLoadBalancerStatus> {
        let entry = |value: &str| {
            if value.parse::<std::net::IpAddr>().is_ok() {
                IngressLoadBalancerIngress {
                    ip: Some(value.into()),
                    ..Default::default()
                }
            } else {
                IngressLoadBalancerIngress {
                    hostname: Some(value.into()),
                    ..Default::default()
                }
            }
        };
        if let Some(fixed) = &self.publish_address {
            return Some(IngressLoadBalancerStatus {
                ingress: Some(vec![entry(fixed)]),
            });
        }
        let (namespace, name) = self.publish_service.as_deref()?.split_once('/')?;
        let service = Api::<Service>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .ok()??;
        let from_lb: Vec<IngressLoadBalancerIngress> = service
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip.or(i.hostname))
            .map(|v| entry(&v))
            .collect();
        let addresses = if from_lb.is_empty() {
            service
                .spec
                .and_then(|s| s.external_ips)
                .unwrap_or_default()
                .iter()
                .map(|v| entry(v))
                .collect()
        } else {
            from_lb
        };
        (!addresses.is_empty()).then_some(IngressLoadBalancerStatus {
            ingress: Some(addresses),
        })
    }
}

fn reference(rule: &AuthRule) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{GROUP}/v1alpha1")),
        kind: Some("AuthRule".into()),
        name: rule.metadata.name.clone(),
        namespace: rule.metadata.namespace.clone(),
        uid: rule.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Failed logins of `rule` among the recent flows, by reason.
pub fn failures_by_reason(flows: &[FlowRecord], rule: &str) -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    for hop in flows
        .iter()
        .filter(|f| f.rule == rule)
        .filter_map(FlowRecord::failure)
    {
        let reason = hop.detail.split(':').next().unwrap_or_default();
        if !reason.is_empty() {
            *out.entry(reason.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// How often each provider is checked for the IdPReachable condition.
const PROBE_EVERY: Duration = Duration::from_secs(30);

/// Each AuthRule with its policy (when it compiled) and the hosts it guards.
type Rules = BTreeMap<ObjectRef, (Option<Arc<crate::compile::AuthPolicy>>, Vec<String>)>;

/// The last check of each provider configuration (discovery and keys), from the
/// provider registry the data plane uses.
#[derive(Default)]
struct Probes(std::collections::HashMap<ProviderKey, Result<(), String>>);

impl Probes {
    async fn refresh(&mut self, registry: &Registry, rules: &Rules) {
        let keys: BTreeSet<ProviderKey> = rules
            .values()
            .filter_map(|(policy, _)| policy.as_deref().map(ProviderKey::of))
            .collect();
        self.0.clear();
        for key in keys {
            let result = match registry.check(&key, PROBE_EVERY).await {
                Health::Ok => Ok(()),
                Health::Failing(e) => Err(e.to_string()),
            };
            self.0.insert(key, result);
        }
    }

    fn get(&self, policy: &crate::compile::AuthPolicy) -> Option<Result<(), String>> {
        self.0.get(&ProviderKey::of(policy)).cloned()
    }
}

/// The status last written per AuthRule (by uid), with when.
#[derive(Default)]
struct Written(std::collections::HashMap<String, (AuthRuleStatus, std::time::Instant)>);

/// How long our own write is trusted over the watch's copy.
const TRUST_OWN_WRITE: Duration = Duration::from_secs(20);

impl Written {
    fn recent(&self, uid: &str) -> Option<&AuthRuleStatus> {
        self.0
            .get(uid)
            .filter(|(_, at)| at.elapsed() < TRUST_OWN_WRITE)
            .map(|(s, _)| s)
    }

    fn insert(&mut self, uid: String, status: AuthRuleStatus) {
        self.0.retain(|_, (_, at)| at.elapsed() < TRUST_OWN_WRITE);
        self.0.insert(uid, (status, std::time::Instant::now()));
    }
}

/// A coordination.k8s.io Lease held by renewing it; taken over once it lapses.
struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderLease {
    async fn acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let lapsed = spec.holder_identity.is_none()
            || spec.renew_time.as_ref().is_none_or(|t| {
                let duration = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS);
                t.0.as_second() + i64::from(duration) < now.0.as_second()
            });
        if !mine && !lapsed {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        spec.renew_time = Some(now);
        // The resourceVersion in `lease` makes this a compare-and-swap.
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Lets another replica take over at once instead of after the Lease lapses.
    async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::flows::Hop;

    fn flow(rule: &str, failure: Option<&str>) -> FlowRecord {
        FlowRecord {
            id: "f".into(),
            rule: rule.into(),
            host: "h".into(),
            hops: vec![Hop {
                at: 0,
                hop: "token".into(),
                ok: failure.is_none(),
                trace_id: "1-a".into(),
                detail: failure.unwrap_or("fine").into(),
            }],
        }
    }

    #[test]
    fn failures_are_counted_per_rule_and_reason() {
        let flows = [
            flow("apps/sso", Some("AuthTokenEpRequestFailed: refused")),
            flow("apps/sso", Some("AuthTokenEpRequestFailed: refused")),
            flow("apps/sso", None),
            flow("apps/other", Some("AuthInvalidIdToken: iss")),
        ];
        let counts = failures_by_reason(&flows, "apps/sso");
        assert_eq!(
            counts,
            BTreeMap::from([("AuthTokenEpRequestFailed".into(), 2)])
        );
    }

    #[test]
    fn transition_times_hold_while_a_condition_does() {
        let summary = AuthRuleSummary {
            generation: Some(1),
            attached_routes: 1,
            usable: true,
        };
        let earlier = Timestamp::from_second(1_000).unwrap();
        let first = auth_rule_status(
            Some(1),
            Some(&summary),
            &[],
            None,
            &Observed::default(),
            earlier,
        );
        let later = Timestamp::from_second(2_000).unwrap();
        let observed = Observed {
            idp: Some(Err("down".into())),
            ..Observed::default()
        };
        let second = auth_rule_status(Some(1), Some(&summary), &[], Some(&first), &observed, later);
        let time = |s: &AuthRuleStatus, kind: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == kind)
                .map(|c| c.last_transition_time.0)
        };
        assert_eq!(time(&second, "Ready"), Some(earlier), "Ready held");
        assert_eq!(time(&second, "IdPReachable"), Some(later), "new condition");
    }
}
