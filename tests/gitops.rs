//! GitOps health: the Argo CD health check of docs/gitops/authrule-health.lua, run by a
//! real Lua interpreter on statuses the controller's own planner writes, and the
//! fields Flux's kstatus reads (`Ready`, `status.observedGeneration`) in each of them.
//! The cluster tests run the same check on statuses read back from the API server.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use jiff::Timestamp;
use portcullis::compile::{CompileOptions, compile};
use portcullis::controller::plan::{Inputs, Write, plan};
use portcullis::diagnostics::ObjectRef;
use portcullis::source::manifests::{add_document, parse_documents};
use portcullis::store::Objects;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SCRIPT: &str = "docs/gitops/authrule-health.lua";
const HEALTH_KEY: &str = "resource.customizations.health.portcullis.dev_AuthRule";

/// A JSON value as a Lua table constructor, the way Argo CD hands objects to health
/// scripts (JSON null is an absent key).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for b in s.bytes() {
                match b {
                    b'"' | b'\\' => out.push_str(&format!("\\{}", b as char)),
                    0x20..=0x7e => out.push(b as char),
                    _ => out.push_str(&format!("\\{b:03}")),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_literal(&json!(k)), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Argo CD's verdict on `object`: the script's `hs.status` and `hs.message`.
pub fn argo_health(object: &Value) -> (String, String) {
    let script = std::fs::read_to_string(format!("{ROOT}/{SCRIPT}")).unwrap();
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_literal(object)
    );
    let out = std::process::Command::new("lua5.4")
        .args(["-e", &program])
        .output()
        .expect("lua5.4 runs the health check (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}

const APP: &str = r#"
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
metadata: {name: sso, namespace: apps, generation: 3, uid: uid-sso}
spec:
  targetRefs: [{name: web}]
  oidc: {issuer: "https://idp.test", clientId: app, clientSecretRef: {name: idp}}
"#;
const SECRET: &str = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n";

/// What the controller knows of the provider and the client credentials.
#[derive(Default)]
struct Provider {
    idp: Option<Result<(), String>>,
    credentials: Option<Result<(), String>>,
}

/// The AuthRule `sso` of `yaml` as the API server would hold it after the controller's
/// status write: metadata.generation and the planned status.
fn as_written(yaml: &str, provider: Provider) -> Value {
    let mut objects = Objects::default();
    for doc in parse_documents(yaml).unwrap() {
        add_document(&mut objects, doc, &ObjectRef::new("File", "", "test.yaml"));
    }
    let compiled = compile(&objects, &CompileOptions::default());
    let rule = ObjectRef::new("AuthRule", "apps", "sso");
    let idp = provider
        .idp
        .map(|r| (rule.clone(), r))
        .into_iter()
        .collect();
    let credentials = provider
        .credentials
        .map(|r| (rule.clone(), r))
        .into_iter()
        .collect();
    let writes = plan(&Inputs {
        objects: &objects,
        snapshot: &compiled.snapshot,
        gateway: &compiled.gateway_status,
        diagnostics: &compiled.diagnostics,
        idp: &idp,
        credentials: &credentials,
        failures: &BTreeMap::new(),
        abandoned: &BTreeMap::new(),
        own_writes: &HashMap::new(),
        own_unreadable: &HashMap::new(),
        own_gateway: &HashMap::new(),
        own_events: &Default::default(),
        publish_service: None,
        publish_address: None,
        now: Timestamp::from_second(1_800_000_000).unwrap(),
    });
    let status = writes
        .iter()
        .find_map(|w| match w {
            Write::AuthRuleStatus { object, status, .. } if *object == rule => {
                Some(serde_json::to_value(status).unwrap())
            }
            Write::UnreadableStatus { object, body, .. } if *object == rule => Some(body.clone()),
            _ => None,
        })
        .expect("a status for sso");
    json!({"metadata": {"name": "sso", "namespace": "apps", "generation": 3}, "status": status})
}

/// Flux's health check (kstatus) reads `Ready` and compares observedGeneration with
/// metadata.generation: every status the controller writes carries both.
fn assert_kstatus_fields(object: &Value, ready: &str) {
    let status = &object["status"];
    assert_eq!(
        status["observedGeneration"], object["metadata"]["generation"],
        "{status}"
    );
    let conditions = status["conditions"].as_array().unwrap();
    let found = conditions.iter().find(|c| c["type"] == "Ready");
    assert_eq!(
        found.map(|c| c["status"].clone()),
        Some(ready.into()),
        "{status}"
    );
}

#[test]
fn argo_health_follows_the_conditions_the_controller_writes() {
    let full = format!("{APP}{SECRET}");
    let checked = |idp: Result<(), String>| Provider {
        idp: Some(idp),
        credentials: Some(Ok(())),
    };
    let cases = [
        (
            as_written(&full, checked(Ok(()))),
            "True",
            "Healthy",
            "guarding 1 route(s)",
        ),
        (
            as_written(&full, Provider::default()),
            "True",
            "Progressing",
            "check the identity provider",
        ),
        (
            as_written(&full, checked(Err("connection refused".into()))),
            "True",
            "Degraded",
            "IdPReachable is False (IdPUnreachable): connection refused",
        ),
        (
            as_written(
                &full,
                Provider {
                    idp: Some(Ok(())),
                    credentials: Some(Err("invalid_client".into())),
                },
            ),
            "True",
            "Degraded",
            "CredentialsAccepted is False (InvalidClient): invalid_client",
        ),
        (
            as_written(APP, Provider::default()),
            "False",
            "Degraded",
            "ResolvedRefs is False",
        ),
        (
            as_written(
                &format!("{}{SECRET}", APP.replace("{name: web}", "{name: other}")),
                checked(Ok(())),
            ),
            "False",
            "Degraded",
            "False",
        ),
        (
            as_written(
                &format!(
                    "{}{SECRET}",
                    APP.replace("targetRefs: [{name: web}]", "targetRefs: 7")
                ),
                Provider::default(),
            ),
            "False",
            "Degraded",
            "Accepted is False (InvalidAuthRule)",
        ),
    ];
    for (object, ready, health, message) in cases {
        assert_kstatus_fields(&object, ready);
        let (status, said) = argo_health(&object);
        assert_eq!(status, health, "{said}\n{object:#}");
        assert!(said.contains(message), "{said:?} lacks {message:?}");
    }
}

#[test]
fn argo_health_waits_for_a_status_of_the_latest_spec() {
    let (status, message) = argo_health(&json!({"metadata": {"generation": 1}}));
    assert_eq!(
        (status.as_str(), message.contains("Waiting")),
        ("Progressing", true)
    );

    let mut healthy = as_written(
        &format!("{APP}{SECRET}"),
        Provider {
            idp: Some(Ok(())),
            credentials: Some(Ok(())),
        },
    );
    healthy["metadata"]["generation"] = 4.into();
    let (status, message) = argo_health(&healthy);
    assert_eq!(status, "Progressing");
    assert_eq!(message, "The controller has read generation 3 of 4");
}

/// docs/gitops.md's ConfigMap carries the tested script byte for byte, and the page
/// shows the Flux healthCheck for AuthRules.
#[test]
fn the_gitops_page_ships_the_tested_script() {
    let page = std::fs::read_to_string(format!("{ROOT}/docs/gitops.md")).unwrap();
    let script = std::fs::read_to_string(format!("{ROOT}/{SCRIPT}")).unwrap();
    let snippet = page
        .split("```yaml")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains(HEALTH_KEY))
        .expect("a yaml block with the health check");
    let config_map: Value = serde_saphyr::from_str(snippet).unwrap();
    assert_eq!(config_map["metadata"]["name"], "argocd-cm");
    assert_eq!(
        config_map["data"][HEALTH_KEY].as_str(),
        Some(script.as_str()),
        "the ConfigMap in docs/gitops.md differs from {SCRIPT}"
    );
    assert!(page.contains("healthChecks:") && page.contains("kind: AuthRule"));
    assert!(Path::new(&format!("{ROOT}/{SCRIPT}")).exists());
}

#[test]
fn lua_literals_keep_strings_exact() {
    let object = json!({"metadata": {"generation": 1}, "status": {"conditions": [{
        "type": "Accepted", "status": "False", "reason": "X",
        "message": "a \"quoted\" \\ back\nslash ü"}]}});
    let (status, message) = argo_health(&object);
    assert_eq!(status, "Degraded");
    assert_eq!(
        message,
        "Accepted is False (X): a \"quoted\" \\ back\nslash ü"
    );
}
