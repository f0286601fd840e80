//! AuthRule status: conditions, attached routes, recent login failures and abandoned
//! logins, policy ancestors, and a Warning Event for each condition that turns False.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::json;

use crate::compile::AuthRuleSummary;
use crate::diagnostics::{Category, Diagnostic, ObjectRef};
use crate::model::{
    AuthRule, AuthRuleStatus, GATEWAY_CONTROLLER_NAME, GROUP, ParentReference,
    PolicyAncestorStatus, RecentCount,
};
use crate::store::UnreadableAuthRule;

/// How far back `recentAbandonedLogins` counts: a login's own window.
pub const ABANDONED_WINDOW: std::time::Duration = std::time::Duration::from_secs(900);

use super::{Inputs, Write};

/// Status (and Events) for every AuthRule, readable or not.
pub(super) fn plan(input: &Inputs<'_>) -> Vec<Write> {
    let mut by_object: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
    for d in input.diagnostics {
        by_object.entry(&d.object).or_default().push(d);
    }
    let mut writes = Vec::new();
    for rule in &input.objects.auth_rules {
        let object = ObjectRef::new(
            "AuthRule",
            rule.metadata.namespace.as_deref().unwrap_or_default(),
            rule.metadata.name.as_deref().unwrap_or_default(),
        );
        let uid = rule.metadata.uid.clone().unwrap_or_default();
        let diags = by_object.get(&object).map(Vec::as_slice).unwrap_or(&[]);
        let label = format!("{}/{}", object.namespace, object.name);
        let observed = Observed {
            idp: input.idp.get(&object).cloned(),
            credentials: input.credentials.get(&object).cloned(),
            failures: input.failures.get(&label).cloned().unwrap_or_default(),
            abandoned: input.abandoned.get(&label).copied().unwrap_or_default(),
        };
        let recent = input.own_writes.get(&uid);
        let current = recent.or(rule.status.as_ref());
        let mut status = auth_rule_status(
            rule.metadata.generation,
            input.snapshot.auth_rules.get(&object),
            diags,
            current,
            &observed,
            input.now,
        );
        status.ancestors = ancestors(
            input.gateway.policy_ancestors.get(&object),
            &status,
            current,
        );
        if rule
            .status
            .as_ref()
            .is_some_and(|s| same_status(s, &status))
            || recent.is_some_and(|s| same_status(s, &status))
        {
            continue;
        }
        writes.extend(events(rule, current, &status));
        writes.push(Write::AuthRuleStatus {
            object,
            uid,
            status,
        });
    }
    for unreadable in &input.objects.unreadable_auth_rules {
        let reported = format!("{:?} {}", unreadable.generation, unreadable.error);
        if input.own_unreadable.get(&unreadable.object) == Some(&reported) {
            continue;
        }
        writes.push(Write::UnreadableStatus {
            object: unreadable.object.clone(),
            reported,
            body: unreadable_status(unreadable, input.now),
        });
    }
    writes
}

/// The status of an AuthRule that does not parse: not accepted and not ready, for
/// the generation read, so GitOps health checks (Argo CD, Flux's kstatus) see it fail
/// rather than wait or pass.
fn unreadable_status(unreadable: &UnreadableAuthRule, now: Timestamp) -> serde_json::Value {
    let generation = unreadable.generation;
    let condition = |kind: &str, message: String| {
        let mut c = json!({
            "type": kind, "status": "False", "reason": "InvalidAuthRule", "message": message,
            "lastTransitionTime": Time(now),
        });
        if let Some(g) = generation {
            c["observedGeneration"] = g.into();
        }
        c
    };
    let mut status = json!({"conditions": [
        condition(
            "Accepted",
            format!("{} (fix: compare it with `kubectl explain authrule.spec`)", unreadable.error),
        ),
        condition(
            "Ready",
            "the routes it targets answer 500 AuthRuleInvalid until the spec is fixed".into(),
        ),
    ]});
    if let Some(g) = generation {
        status["observedGeneration"] = g.into();
    }
    status
}

/// One PolicyAncestorStatus per Gateway the rule's Gateway API targets reach; its
/// Accepted condition follows the rule's own.
fn ancestors(
    gateways: Option<&Vec<ParentReference>>,
    status: &AuthRuleStatus,
    previous: Option<&AuthRuleStatus>,
) -> Vec<PolicyAncestorStatus> {
    let Some(accepted) = status.conditions.iter().find(|c| c.type_ == "Accepted") else {
        return Vec::new();
    };
    gateways
        .into_iter()
        .flatten()
        .map(|gateway| {
            let mut condition = accepted.clone();
            let kept = previous
                .and_then(|p| p.ancestors.iter().find(|a| a.ancestor_ref == *gateway))
                .and_then(|a| a.conditions.iter().find(|c| c.type_ == "Accepted"))
                .filter(|c| c.status == condition.status && c.reason == condition.reason)
                .map(|c| c.last_transition_time.clone());
            if let Some(time) = kept {
                condition.last_transition_time = time;
            }
            PolicyAncestorStatus {
                ancestor_ref: gateway.clone(),
                controller_name: GATEWAY_CONTROLLER_NAME.into(),
                conditions: vec![condition],
            }
        })
        .collect()
}

/// What the controller knows beyond the compile.
#[derive(Default)]
pub struct Observed {
    pub idp: Option<Result<(), String>>,
    pub credentials: Option<Result<(), String>>,
    pub failures: BTreeMap<String, i32>,
    /// Logins counted abandoned in the last `ABANDONED_WINDOW`.
    pub abandoned: i32,
}

/// A condition's status, reason and message.
type Verdict = (&'static str, String, String);

/// The conditions of one AuthRule. `previous` supplies the transition times of
/// conditions that did not change.
pub fn auth_rule_status(
    generation: Option<i64>,
    summary: Option<&AuthRuleSummary>,
    diagnostics: &[&Diagnostic],
    previous: Option<&AuthRuleStatus>,
    observed: &Observed,
    now: Timestamp,
) -> AuthRuleStatus {
    let accepted = diagnosed(
        diagnostics,
        Category::Spec,
        ("True", "Accepted".into(), "the spec is valid".into()),
    );
    let resolved = diagnosed(
        diagnostics,
        Category::Reference,
        (
            "True",
            "ResolvedRefs".into(),
            "the client Secret and every target Ingress were found".into(),
        ),
    );
    let condition =
        |kind: &str, verdict: Verdict| new_condition(kind, verdict, previous, generation, now);
    let mut conditions = vec![
        condition("Accepted", accepted),
        condition("ResolvedRefs", resolved),
        condition("Ready", ready(summary)),
    ];
    if let Some(idp) = &observed.idp {
        conditions.push(condition("IdPReachable", idp_reachable(idp)));
    }
    if let Some(credentials) = &observed.credentials {
        conditions.push(condition(
            "CredentialsAccepted",
            credentials_accepted(credentials, summary.and_then(|s| s.policy.as_deref())),
        ));
    }
    AuthRuleStatus {
        conditions,
        observed_generation: generation,
        attached_routes: summary.map_or(0, |s| s.attached_routes) as i32,
        recent_login_failures: observed.failures.clone(),
        recent_abandoned_logins: (observed.abandoned > 0).then_some(RecentCount {
            count: observed.abandoned,
            window_seconds: ABANDONED_WINDOW.as_secs() as i64,
        }),
        ancestors: Vec::new(),
    }
}

/// The condition a category of diagnostics decides: the first error of the category
/// makes it False, with the fix; none leaves it `ok`.
fn diagnosed(diagnostics: &[&Diagnostic], category: Category, ok: Verdict) -> Verdict {
    let error = diagnostics
        .iter()
        .find(|d| d.is_error() && d.category == category);
    match error {
        Some(d) => (
            "False",
            d.reason.to_owned(),
            format!("{}: {} (fix: {})", d.field, d.message, d.fix),
        ),
        None => ok,
    }
}

fn ready(summary: Option<&AuthRuleSummary>) -> Verdict {
    let attached = summary.map_or(0, |s| s.attached_routes);
    match summary {
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
    }
}

fn idp_reachable(idp: &Result<(), String>) -> Verdict {
    match idp {
        Ok(()) => (
            "True",
            "DiscoveryLoaded".into(),
            "the discovery document and keys load".into(),
        ),
        Err(e) => (
            "False",
            "IdPUnreachable".into(),
            format!(
                "{e} (logins in progress keep the last good discovery; fix: run `portcullis diagnose` on this rule)"
            ),
        ),
    }
}

fn credentials_accepted(
    credentials: &Result<(), String>,
    policy: Option<&crate::compile::AuthPolicy>,
) -> Verdict {
    use crate::auth::client_assertion::ClientCredential;
    let fix = match policy.map(|p| &p.credential) {
        Some(ClientCredential::Key(_)) => {
            "register the public key of spec.oidc.clientKeyRef (`portcullis client-jwks` prints it) for the client at the provider"
        }
        Some(ClientCredential::ServiceAccountToken(_)) => {
            "have the provider trust Portcullis's ServiceAccount token with spec.oidc.serviceAccountTokenAudience for the client (a federated credential), and mount that token for this namespace (chart value serviceAccountTokens)"
        }
        _ => {
            "put the client secret registered at the provider into the Secret named by spec.oidc.clientSecretRef"
        }
    };
    match credentials {
        Ok(()) => (
            "True",
            "ClientAccepted".into(),
            "the token endpoint accepts the client's credentials".into(),
        ),
        Err(e) => (
            "False",
            "InvalidClient".into(),
            format!(
                "{e} (fix: {fix}, or correct spec.oidc.clientId or tokenEndpointAuthMethod; logins fail with AuthTokenEpRequestFailed until then)"
            ),
        ),
    }
}

/// A condition that keeps its previous transition time while its status and reason
/// stay the same.
fn new_condition(
    kind: &str,
    (status, reason, message): Verdict,
    previous: Option<&AuthRuleStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
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
}

/// Equal but for the conditions' transition times.
pub fn same_status(a: &AuthRuleStatus, b: &AuthRuleStatus) -> bool {
    let bare = |s: &AuthRuleStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    bare(a) == bare(b)
}

/// A Warning Event for each condition that turned False, with the fix in the note, and
/// one per login-failure reason whose count grew (not one per request).
fn events(rule: &AuthRule, before: Option<&AuthRuleStatus>, status: &AuthRuleStatus) -> Vec<Write> {
    let was_false = |kind: &str| {
        before.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == kind && c.status == "False")
        })
    };
    let mut out = Vec::new();
    for c in &status.conditions {
        if c.status != "False" || c.type_ == "Ready" || was_false(&c.type_) {
            continue;
        }
        out.push(Write::Event {
            regarding: reference(rule),
            warning: true,
            reason: c.reason.clone(),
            note: c.message.chars().take(1000).collect(),
            action: "Compile",
            once: None,
        });
    }
    let counted = before.map(|s| &s.recent_login_failures);
    for (reason, count) in &status.recent_login_failures {
        if counted
            .and_then(|b| b.get(reason))
            .is_some_and(|n| n >= count)
        {
            continue;
        }
        let advice = crate::observe::reasons::lookup(reason).map_or(String::new(), |r| {
            format!(" Usually: {} Fix: {}", r.cause, r.fix)
        });
        out.push(Write::Event {
            regarding: reference(rule),
            warning: true,
            reason: "LoginFailed".into(),
            note: format!("{count} recent login(s) failed with {reason}.{advice}")
                .chars()
                .take(1000)
                .collect(),
            action: "Login",
            once: None,
        });
    }
    out
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
