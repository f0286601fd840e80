//! The cluster walkthrough as an operator does it, on the real API server: `helm
//! install` from charts/, an app with an AuthRule whose client secret is wrong, the
//! status and Event that name the fix, a failed login followed from its reference
//! through `explain flow` to the token step, the secret fixed without a restart, then
//! `helm upgrade` and `helm uninstall`. The README's cluster section follows these steps.

use crate::common;

use std::process::Command;

use common::app::{browser, log_in_at};
use common::cluster::{ControlPlane, apply};
use common::idp::{Idp, log_in};
use common::*;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use portcullis::model::AuthRule;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn helm(cp: &ControlPlane, args: &[&str]) -> String {
    let bin = Command::new(format!("{ROOT}/tests/apiserver/build.sh"))
        .output()
        .unwrap();
    let dir = String::from_utf8(bin.stdout).unwrap();
    let out = Command::new(format!("{}/helm", dir.trim()))
        .args(args)
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn app(issuer: &str, secret: &str, backend: std::net::SocketAddr) -> String {
    format!(
        r#"{ingress}---
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: apps}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-local, namespace: apps, labels: {{kubernetes.io/service-name: svc}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"]}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: idp, namespace: apps}}
stringData: {{client-secret: {secret}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: sso, namespace: apps}}
spec:
  targetRefs: [{{name: web}}]
  oidc:
    issuer: {issuer}
    clientId: portcullis-test
    clientSecretRef: {{name: idp}}
    scope: openid email profile
"#,
        ingress = ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
        port = backend.port(),
        ip = backend.ip(),
    )
}

fn condition(rule: &AuthRule, kind: &str) -> Option<(String, String, String)> {
    let c = rule
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_installs_fixes_a_wrong_secret_upgrades_and_uninstalls() {
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    // 1. helm install, as the README says (the image never runs here: no kubelet;
    //    the controller runs as a process under the chart's ServiceAccount).
    helm(
        &cp,
        &[
            "install",
            "portcullis",
            &format!("{ROOT}/charts/portcullis"),
            "-n",
            "portcullis-system",
            "--create-namespace",
        ],
    );
    let controller = Portcullis::launch_with_env(
        &[
            "run".as_ref(),
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--admin".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &[
            ("KUBECONFIG", cp.controller_kubeconfig().as_os_str()),
            ("POD_NAMESPACE", "portcullis-system".as_ref()),
            ("POD_NAME", "replica-a".as_ref()),
        ],
    );
    // 2. The app, with a client secret that is not the provider's.
    let backend = Backend::start_on("app", common::cluster::host_address()).await;
    let origin = format!("http://app.example.com:{}", controller.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    apply(
        &admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    )
    .await;
    apply(&admin, &app(&idp.issuer, "not-the-secret", backend.addr)).await;

    // 3. `kubectl get authrules`: the printer columns, through the API's Table form.
    let rules: Api<AuthRule> = Api::namespaced(admin.clone(), "apps");
    eventually("the AuthRule is ready", || async {
        rules
            .get("sso")
            .await
            .ok()
            .and_then(|r| condition(&r, "Ready"))
            .is_some_and(|c| c.0 == "True")
    })
    .await;
    let table: serde_json::Value = serde_json::from_str(
        &admin
            .request_text(
                http::Request::get("/apis/portcullis.dev/v1alpha1/namespaces/apps/authrules")
                    .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Issuer",
            "Unauthenticated",
            "Routes",
            "Ready",
            "Age"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "sso");
    assert_eq!(cells[1], idp.issuer.as_str());
    assert_eq!(cells[2], "authenticate");
    assert_eq!(cells[3], 1);
    assert_eq!(cells[4], "True");

    // 4. The condition and the Event name the wrong secret and the fix.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let refused = loop {
        let rule = rules.get("sso").await.unwrap();
        if let Some(c) = condition(&rule, "CredentialsAccepted") {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CredentialsAccepted condition"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(
        (refused.0.as_str(), refused.1.as_str()),
        ("False", "InvalidClient")
    );
    assert!(
        refused.2.contains("invalid_client") && refused.2.contains("spec.oidc.clientSecretRef"),
        "{}",
        refused.2
    );
    let events: Api<Event> = Api::namespaced(admin.clone(), "apps");
    eventually("an InvalidClient Event", || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidClient")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("clientSecretRef"))
            })
    })
    .await;

    // 5. A login fails; its reference leads through `explain flow` to the token step.
    let b = browser(&controller);
    let start = b
        .get(format!("{origin}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 302);
    let to_idp = start.headers()["location"].to_str().unwrap().to_owned();
    let callback = log_in(
        &b,
        &to_idp,
        &format!("{origin}/oauth2/idpresponse"),
        "alice",
    )
    .await;
    let failed = b.get(&callback.url).send().await.unwrap();
    assert_eq!(failed.status(), 500);
    let page: serde_json::Value = failed.json().await.unwrap();
    assert_eq!(page["error"], "AuthTokenEpRequestFailed");
    let reference = page["traceId"].as_str().unwrap().to_owned();
    // The flow's hops are logged as they happen; the last may land just after the
    // answer.
    let explain = || {
        let logs = controller.diagnostics.lock().unwrap().join("\n");
        run_with_stdin(&["explain", "flow", &reference, "-"], &logs)
    };
    eventually("the failed hop is in the log", || async {
        explain().1.contains("broke at token")
    })
    .await;
    let (ok, timeline) = explain();
    assert!(ok, "{timeline}");
    assert!(
        timeline.contains("broke at token") && timeline.contains("invalid_client"),
        "{timeline}"
    );
    assert!(
        timeline.contains("clientSecretRef"),
        "the fix names the Secret: {timeline}"
    );

    // 6. The secret fixed: the condition turns True without a restart, logins work.
    apply(&admin, &app(&idp.issuer, "test-secret", backend.addr)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let rule = rules.get("sso").await.unwrap();
        if condition(&rule, "CredentialsAccepted").is_some_and(|c| c.0 == "True") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CredentialsAccepted never turned True"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let fresh = browser(&controller);
    log_in_at(&fresh, &origin, "alice").await;

    // 7. helm upgrade, then helm uninstall: what stays is what the controller made
    //    (the keys Secret and the leader Lease) and the CRD (Helm never deletes those).
    helm(
        &cp,
        &[
            "upgrade",
            "portcullis",
            &format!("{ROOT}/charts/portcullis"),
            "-n",
            "portcullis-system",
            "--set",
            "replicaCount=1",
        ],
    );
    controller.terminate();
    helm(&cp, &["uninstall", "portcullis", "-n", "portcullis-system"]);
    let left = |kind: &str| helm_free_list(&cp, kind);
    assert_eq!(
        left("secrets"),
        ["portcullis-keys"],
        "the keys Secret stays, and only it"
    );
    for kind in [
        "serviceaccounts",
        "services",
        "deployments",
        "roles",
        "rolebindings",
        "configmaps",
        "poddisruptionbudgets",
    ] {
        let names = left(kind);
        assert!(
            names
                .iter()
                .all(|n| n == "kube-root-ca.crt" || n == "default"),
            "{kind} left behind: {names:?}"
        );
    }
}

/// Names of the objects of `kind` left in portcullis-system, read through the API.
fn helm_free_list(cp: &ControlPlane, kind: &str) -> Vec<String> {
    let group = match kind {
        "deployments" => "/apis/apps/v1",
        "roles" | "rolebindings" => "/apis/rbac.authorization.k8s.io/v1",
        "poddisruptionbudgets" => "/apis/policy/v1",
        _ => "/api/v1",
    };
    let rt = tokio::runtime::Handle::current();
    let list: serde_json::Value = tokio::task::block_in_place(|| {
        rt.block_on(async {
            let admin = cp.admin().await;
            let text = admin
                .request_text(
                    http::Request::get(format!("{group}/namespaces/portcullis-system/{kind}"))
                        .body(Vec::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            serde_json::from_str(&text).unwrap()
        })
    });
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}
