use super::*;
use crate::compile::{CompileOptions, compile};
use crate::source::manifests::{add_document, parse_documents};
use std::sync::Arc;

const NOW: i64 = 1_800_000_000;

fn objects(yaml: &str) -> Objects {
    let mut objects = Objects::default();
    for doc in parse_documents(yaml).expect("test YAML parses") {
        add_document(&mut objects, doc, &ObjectRef::new("File", "", "test.yaml"));
    }
    // The API server gives every object a uid.
    for (i, rule) in objects.auth_rules.iter_mut().enumerate() {
        Arc::make_mut(rule).metadata.uid = Some(format!("uid-{i}"));
    }
    objects
}

const APP: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: apps}
spec:
  ingressClassName: portcullis
  rules:
  - host: app.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc, port: {number: 80}}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps, generation: 3}
spec:
  targetRefs: [{name: web}]
  oidc: {issuer: "https://idp.test", clientId: app, clientSecretRef: {name: idp}}
"#;
const SECRET: &str = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: s}
"#;

struct World {
    objects: Objects,
    snapshot: Snapshot,
    gateway: crate::compile::GatewayApiState,
    diagnostics: Vec<Diagnostic>,
    idp: BTreeMap<ObjectRef, Result<(), String>>,
    credentials: BTreeMap<ObjectRef, Result<(), String>>,
    failures: BTreeMap<String, BTreeMap<String, i32>>,
    abandoned: BTreeMap<String, i32>,
    own: HashMap<String, AuthRuleStatus>,
    publish_address: Option<&'static str>,
    now: i64,
}

impl World {
    fn new(yaml: &str) -> Self {
        let objects = objects(yaml);
        let compiled = compile(&objects, &CompileOptions::default());
        Self {
            objects,
            snapshot: compiled.snapshot,
            gateway: compiled.gateway_status,
            diagnostics: compiled.diagnostics,
            idp: BTreeMap::new(),
            credentials: BTreeMap::new(),
            failures: BTreeMap::new(),
            abandoned: BTreeMap::new(),
            own: HashMap::new(),
            publish_address: None,
            now: NOW,
        }
    }

    fn plan(&self) -> Vec<Write> {
        plan(&Inputs {
            objects: &self.objects,
            snapshot: &self.snapshot,
            gateway: &self.gateway,
            diagnostics: &self.diagnostics,
            idp: &self.idp,
            credentials: &self.credentials,
            failures: &self.failures,
            abandoned: &self.abandoned,
            own_writes: &self.own,
            own_unreadable: &HashMap::new(),
            own_gateway: &HashMap::new(),
            own_events: &Default::default(),
            publish_service: None,
            publish_address: self.publish_address,
            now: Timestamp::from_second(self.now).unwrap(),
        })
    }

    /// The plan's status for the rule, as if the API server now held it.
    fn write_back(&mut self, writes: &[Write]) {
        for w in writes {
            if let Write::AuthRuleStatus { uid, status, .. } = w {
                for rule in &mut self.objects.auth_rules {
                    if rule.metadata.uid.as_deref() == Some(uid) {
                        Arc::make_mut(rule).status = Some(status.clone());
                    }
                }
            }
        }
    }
}

fn status_of(writes: &[Write]) -> &AuthRuleStatus {
    writes
        .iter()
        .find_map(|w| match w {
            Write::AuthRuleStatus { status, .. } => Some(status),
            _ => None,
        })
        .expect("a status write")
}

fn condition<'s>(s: &'s AuthRuleStatus, kind: &str) -> (&'s str, &'s str) {
    let c = s.conditions.iter().find(|c| c.type_ == kind).expect(kind);
    (c.status.as_str(), c.reason.as_str())
}

fn events(writes: &[Write]) -> Vec<&str> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::Event { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_working_rule_is_accepted_resolved_and_ready() {
    let w = World::new(&format!("{APP}{SECRET}"));
    let writes = w.plan();
    let s = status_of(&writes);
    assert_eq!(condition(s, "Accepted"), ("True", "Accepted"));
    assert_eq!(condition(s, "ResolvedRefs"), ("True", "ResolvedRefs"));
    assert_eq!(condition(s, "Ready"), ("True", "Ready"));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.attached_routes, 1);
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );
    assert!(
        events(&writes).is_empty(),
        "nothing False, nothing to announce"
    );
}

#[test]
fn a_missing_secret_is_a_reference_problem_with_an_event() {
    let w = World::new(APP);
    let writes = w.plan();
    let s = status_of(&writes);
    assert_eq!(condition(s, "Accepted"), ("True", "Accepted"));
    assert_eq!(condition(s, "ResolvedRefs"), ("False", "SecretNotFound"));
    assert_eq!(condition(s, "Ready"), ("False", "Invalid"));
    assert_eq!(events(&writes), ["SecretNotFound"]);
    let message = &s.conditions[1].message;
    assert!(
        message.contains("spec.oidc.clientSecretRef")
            && message.contains("kubectl -n apps create secret"),
        "{message}"
    );
}

#[test]
fn a_bad_spec_is_not_accepted() {
    let w = World::new(&format!(
        "{}{SECRET}",
        APP.replace("https://idp.test", "ftp://idp.test")
    ));
    let s = status_of(&w.plan()).clone();
    assert_eq!(condition(&s, "Accepted"), ("False", "InvalidIssuer"));
    assert_eq!(condition(&s, "ResolvedRefs"), ("True", "ResolvedRefs"));
}

#[test]
fn a_rule_that_guards_nothing_is_not_ready() {
    let w = World::new(&format!(
        "{}{SECRET}",
        APP.replace("ingressClassName: portcullis", "ingressClassName: other")
    ));
    let s = status_of(&w.plan()).clone();
    assert_eq!(
        condition(&s, "ResolvedRefs"),
        ("True", "ResolvedRefs"),
        "a warning, not an error"
    );
    assert_eq!(condition(&s, "Ready"), ("False", "NoRoutes"));
}

#[test]
fn provider_health_and_login_failures_are_reported() {
    let mut w = World::new(&format!("{APP}{SECRET}"));
    let rule = ObjectRef::new("AuthRule", "apps", "sso");
    w.idp.insert(
        rule.clone(),
        Err("Discovery endpoint could not be reached".into()),
    );
    w.failures.insert(
        "apps/sso".into(),
        BTreeMap::from([("AuthInvalidGrantError".into(), 2)]),
    );
    let writes = w.plan();
    let s = status_of(&writes);
    assert_eq!(condition(s, "IdPReachable"), ("False", "IdPUnreachable"));
    assert_eq!(s.recent_login_failures["AuthInvalidGrantError"], 2);
    assert_eq!(events(&writes), ["IdPUnreachable", "LoginFailed"]);
    w.write_back(&writes);
    // Same count again: no new Event; one more: one Event.
    w.failures.insert(
        "apps/sso".into(),
        BTreeMap::from([("AuthInvalidGrantError".into(), 3)]),
    );
    w.idp.insert(rule, Ok(()));
    let writes = w.plan();
    assert_eq!(
        condition(status_of(&writes), "IdPReachable"),
        ("True", "DiscoveryLoaded")
    );
    assert_eq!(events(&writes), ["LoginFailed"]);
}

#[test]
fn abandoned_logins_are_written_when_their_count_changes_only() {
    let mut w = World::new(&format!("{APP}{SECRET}"));
    let first = w.plan();
    w.write_back(&first);
    assert!(status_of(&first).recent_abandoned_logins.is_none());
    w.abandoned.insert("apps/sso".into(), 2);
    let writes = w.plan();
    assert_eq!(
        status_of(&writes).recent_abandoned_logins,
        Some(crate::model::RecentCount {
            count: 2,
            window_seconds: 900
        })
    );
    assert!(events(&writes).is_empty(), "status only, no Event");
    w.write_back(&writes);
    assert!(w.plan().is_empty(), "the same count is not written again");
    w.abandoned.clear();
    let writes = w.plan();
    assert!(
        status_of(&writes).recent_abandoned_logins.is_none(),
        "out of the window"
    );
}

#[test]
fn nothing_is_written_when_nothing_changed_whatever_the_clock_says() {
    let mut w = World::new(APP);
    let first = w.plan();
    w.write_back(&first);
    w.now += 3600;
    assert!(
        w.plan().is_empty(),
        "same conditions an hour later: no write"
    );
    // The fix arrives: one write, and the transition time of what held is kept.
    let mut fixed = World::new(&format!("{APP}{SECRET}"));
    fixed.objects.auth_rules = w.objects.auth_rules.clone();
    fixed.now = w.now;
    let writes = fixed.plan();
    let s = status_of(&writes);
    let accepted = s.conditions.iter().find(|c| c.type_ == "Accepted").unwrap();
    assert_eq!(
        accepted.last_transition_time.0.as_second(),
        NOW,
        "Accepted held since the first write"
    );
    let resolved = s
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert_eq!(resolved.last_transition_time.0.as_second(), NOW + 3600);
}

#[test]
fn an_own_write_newer_than_the_watch_is_not_undone_or_repeated() {
    // The watch still shows the old status (Secret missing); this replica already
    // wrote the new one (Secret found) a moment ago.
    let mut w = World::new(APP);
    let old = w.plan();
    w.write_back(&old);
    let mut now = World::new(&format!("{APP}{SECRET}"));
    now.objects.auth_rules = w.objects.auth_rules.clone();
    let new = now.plan();
    let written = status_of(&new).clone();
    let uid = now.objects.auth_rules[0].metadata.uid.clone().unwrap();
    now.own.insert(uid, written);
    assert!(now.plan().is_empty(), "the lagging watch is not a change");
}

#[test]
fn served_ingresses_get_the_address_once() {
    let mut w = World::new(&format!("{APP}{SECRET}"));
    w.publish_address = Some("203.0.113.7");
    let writes = w.plan();
    let address = writes
        .iter()
        .find_map(|wr| match wr {
            Write::IngressAddress {
                object,
                load_balancer,
            } => Some((object.clone(), load_balancer.clone())),
            _ => None,
        })
        .expect("an address write");
    assert_eq!(address.0, ObjectRef::new("Ingress", "apps", "web"));
    for ingress in &mut w.objects.ingresses {
        Arc::make_mut(ingress).status = Some(k8s_openapi::api::networking::v1::IngressStatus {
            load_balancer: Some(address.1.clone()),
        });
    }
    assert!(
        !w.plan()
            .iter()
            .any(|wr| matches!(wr, Write::IngressAddress { .. }))
    );
}

#[test]
fn an_unreadable_rule_is_reported_once_per_error_and_generation() {
    let yaml = format!(
        "{SECRET}---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: bad, namespace: apps, generation: 3}}\nspec: {{targetRefs: 7}}\n"
    );
    let mut w = World::new(&yaml);
    let unreadable = |writes: &[Write]| {
        writes.iter().find_map(|wr| match wr {
            Write::UnreadableStatus {
                object,
                reported,
                body,
            } => Some((object.clone(), reported.clone(), body.clone())),
            _ => None,
        })
    };
    let (object, reported, body) = unreadable(&w.plan()).expect("an unreadable status");
    // Health checks (Argo CD's, Flux's kstatus) read Ready and observedGeneration.
    assert_eq!(body["observedGeneration"], 3, "{body}");
    let conditions = body["conditions"].as_array().unwrap();
    for kind in ["Accepted", "Ready"] {
        let c = conditions.iter().find(|c| c["type"] == kind).unwrap();
        assert_eq!(
            (&c["status"], &c["reason"], &c["observedGeneration"]),
            (&"False".into(), &"InvalidAuthRule".into(), &3.into()),
            "{kind}"
        );
    }
    let own = HashMap::from([(object, reported)]);
    let plan_again = |w: &World| {
        plan(&Inputs {
            objects: &w.objects,
            snapshot: &w.snapshot,
            gateway: &w.gateway,
            diagnostics: &w.diagnostics,
            idp: &w.idp,
            credentials: &w.credentials,
            failures: &w.failures,
            abandoned: &w.abandoned,
            own_writes: &w.own,
            own_unreadable: &own,
            own_gateway: &HashMap::new(),
            own_events: &Default::default(),
            publish_service: None,
            publish_address: None,
            now: Timestamp::from_second(NOW + 30).unwrap(),
        })
    };
    let again = plan_again(&w);
    assert!(again.is_empty(), "{again:?}");
    w.objects.unreadable_auth_rules[0].generation = Some(4);
    let edited = unreadable(&plan_again(&w)).expect("a new generation is reported");
    assert_eq!(edited.2["observedGeneration"], 4);
}

#[test]
fn a_refused_federated_credential_names_its_own_fix_not_a_secret() {
    let app = APP.replace(
        "clientSecretRef: {name: idp}",
        "tokenEndpointAuthMethod: private_key_jwt, serviceAccountTokenAudience: api://AzureADTokenExchange",
    );
    let mut w = World::new(&app);
    let rule = ObjectRef::new("AuthRule", "apps", "sso");
    w.credentials.insert(
        rule,
        Err("https://idp.test/token refused client app: 401 invalid_client".into()),
    );
    let writes = w.plan();
    let s = status_of(&writes);
    assert_eq!(condition(s, "Accepted"), ("True", "Accepted"));
    let message = &s
        .conditions
        .iter()
        .find(|c| c.type_ == "CredentialsAccepted")
        .unwrap()
        .message;
    assert!(message.contains("serviceAccountTokens"), "{message}");
    assert!(!message.contains("clientSecretRef"), "{message}");
}

#[test]
fn a_wrong_client_secret_is_a_false_condition_with_the_fix_until_it_is_accepted() {
    let mut w = World::new(&format!("{APP}{SECRET}"));
    let rule = ObjectRef::new("AuthRule", "apps", "sso");
    w.credentials.insert(
        rule.clone(),
        Err("https://idp.test/token refused client app: 401 invalid_client".into()),
    );
    let writes = w.plan();
    let s = status_of(&writes);
    assert_eq!(
        condition(s, "CredentialsAccepted"),
        ("False", "InvalidClient")
    );
    let message = &s
        .conditions
        .iter()
        .find(|c| c.type_ == "CredentialsAccepted")
        .unwrap()
        .message;
    assert!(message.contains("spec.oidc.clientSecretRef"), "{message}");
    assert_eq!(events(&writes), ["InvalidClient"]);
    w.write_back(&writes);
    w.credentials.insert(rule, Ok(()));
    let writes = w.plan();
    assert_eq!(
        condition(status_of(&writes), "CredentialsAccepted"),
        ("True", "ClientAccepted")
    );
    assert!(events(&writes).is_empty());
}
