//! The chart's Grafana dashboard and alert rules: valid for the tools that load them
//! (promtool from the Prometheus Go module, a JSON schema of the dashboard), and built
//! only from metrics Portcullis really exports.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tool_dir(script: &str) -> PathBuf {
    let out = Command::new(format!("{ROOT}/{script}")).output().unwrap();
    assert!(out.status.success(), "{script}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The chart rendered with the dashboard and the alerts on, one document per object.
fn rendered() -> Vec<serde_json::Value> {
    let helm = tool_dir("tests/apiserver/build.sh").join("helm");
    let out = Command::new(helm)
        .args([
            "template",
            "p",
            &format!("{ROOT}/charts/portcullis"),
            "--kube-version",
            "1.33.0",
        ])
        .args([
            "--set",
            "metrics.dashboard.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    portcullis::source::manifests::parse_documents(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn promtool_check_rules(groups: &serde_json::Value) -> (bool, String) {
    let dir = TempDir::new("rules");
    dir.write(
        "rules.json",
        &serde_json::json!({ "groups": groups }).to_string(),
    );
    let out = Command::new(tool_dir("tests/tools/build-promtool.sh").join("promtool"))
        .args(["check", "rules"])
        .arg(dir.path().join("rules.json"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The dashboard's expressions, once it passed its schema.
fn dashboard_expressions() -> Vec<String> {
    let out = Command::new(format!("{ROOT}/.cache/venv/bin/python"))
        .arg(format!("{ROOT}/tests/py/check_dashboard.py"))
        .arg(format!(
            "{ROOT}/charts/portcullis/dashboards/portcullis.json"
        ))
        .arg(format!("{ROOT}/tests/py/grafana-dashboard.schema.json"))
        .output()
        .expect("run scripts/test.sh first (it installs jsonschema into .cache/venv)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn alert_rules() -> serde_json::Value {
    rendered()
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("the PrometheusRule")["spec"]["groups"]
        .clone()
}

#[test]
fn the_alert_rules_and_dashboard_queries_pass_promtool() {
    let groups = alert_rules();
    let (ok, text) = promtool_check_rules(&groups);
    assert!(ok, "{text}");
    assert!(text.contains("3 rules found"), "{text}");
    // Every panel query, as a recording rule, through the same PromQL parser.
    let rules: Vec<serde_json::Value> = dashboard_expressions()
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("portcullis:panel{i}"), "expr": e.replace("$__rate_interval", "5m")}))
        .collect();
    let (ok, text) =
        promtool_check_rules(&serde_json::json!([{ "name": "panels", "rules": rules }]));
    assert!(ok, "{text}");
    // A broken expression would be caught: the check is not vacuous.
    let (ok, _) = promtool_check_rules(
        &serde_json::json!([{ "name": "x", "rules": [{"record": "x:y", "expr": "sum by (rule (rate(x[5m]))"}] }]),
    );
    assert!(!ok);
}

#[test]
fn the_chart_ships_the_dashboard_file_for_the_grafana_sidecar() {
    let docs = rendered();
    let map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the dashboard ConfigMap");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: serde_json::Value =
        serde_json::from_str(map["data"]["portcullis.json"].as_str().unwrap()).unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{ROOT}/charts/portcullis/dashboards/portcullis.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(shipped, file);
}

/// Every `portcullis_*` metric a panel or an alert names appears on `/metrics` of a
/// process that served some traffic and a failed login.
#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("metrics");
    let dead = std::net::SocketAddr::new("127.0.0.3".parse().unwrap(), backend.addr.port());
    dir.write(
        "all.yaml",
        &[
            ingress_yaml("web", &[("app.test", "/", "svc"), ("app.test", "/dead", "dead")], ""),
            service_yaml("svc", &[backend.addr]),
            service_yaml("dead", &[dead]),
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: sso, namespace: apps}\nspec:\n  targetRefs: [{name: web}]\n  paths: [\"/private*\"]\n  oidc: {issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {name: idp}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n".into(),
        ]
        .concat(),
    );
    let p = Portcullis::start(dir.path(), &[]);
    for req in [
        &b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"[..],
        b"GET /dead HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET /private HTTP/1.1\r\nHost: app.test\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
        b"GET /oauth2/idpresponse?code=c&state=s HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    ] {
        raw_exchange(p.http, req).await;
    }
    let exported: BTreeSet<String> = p
        .metrics()
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_owned()
        })
        .collect();
    let mut used: Vec<String> = dashboard_expressions();
    used.extend(
        alert_rules()[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_owned()),
    );
    let mut names = BTreeSet::new();
    for expr in &used {
        for (i, _) in expr.match_indices("portcullis_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name.trim_end_matches("_bucket").to_owned());
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        assert!(
            exported.contains(name),
            "{name} is not exported; /metrics has {exported:?}"
        );
    }
}
