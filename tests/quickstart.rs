//! The cluster quickstart (deploy/examples/quickstart/) finishes as its README says:
//! its files pass `portcullis check`, the API server takes them, the controller makes
//! the AuthRule Ready, and a login through the Ingress hands the demo app the
//! identity; the README's commands name files that exist. cert-manager is not in
//! the test control plane: its objects are checked for what Portcullis relies on (the
//! Secret the Ingress names), and the TLS Secret they would make is made here.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::cluster::{ControlPlane, apply, host_address, run_controller};
use common::idp::{Idp, log_in};
use common::*;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use portcullis::model::AuthRule;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DIR: &str = "deploy/examples/quickstart";
const HOST: &str = "app.localhost";

/// The files `kubectl apply -f deploy/examples/quickstart/` applies, in its order.
fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("{ROOT}/{DIR}"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The quickstart with the values the README says to put in: the provider's issuer,
/// client id and secret.
fn filled_in(issuer: &str) -> String {
    let mut all = String::new();
    for file in files() {
        all.push_str(&std::fs::read_to_string(file).unwrap());
        all.push_str("\n---\n");
    }
    let mut filled = all.clone();
    for (placeholder, value) in [
        ("https://login.example.com", issuer),
        ("clientId: my-app", "clientId: portcullis-test"),
        ("client-secret: change-me", "client-secret: test-secret"),
    ] {
        assert!(filled.contains(placeholder), "{placeholder}");
        filled = filled.replace(placeholder, value);
    }
    filled
}

#[test]
fn the_quickstart_passes_check_but_for_what_the_cluster_makes() {
    let (_, out) = run_with_stdin(&["check", "-f", DIR, "-o", "json"], "");
    let report: Value = serde_json::from_str(&out).unwrap();
    let problems: Vec<&Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        // The echo Pods give the Service its endpoints.
        .filter(|p| {
            !p["message"]
                .as_str()
                .unwrap()
                .ends_with("has no ready endpoints")
        })
        .collect();
    // cert-manager makes the TLS Secret from the Certificate.
    let reasons: BTreeSet<&str> = problems
        .iter()
        .map(|p| p["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, BTreeSet::from(["SecretNotFound"]), "{report:#}");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("apps/app-tls"),
        "{report:#}"
    );
    assert_eq!(report["summary"]["routes"], 1, "{report:#}");
    assert_eq!(report["summary"]["authRules"], 1, "{report:#}");

    // Each Certificate (self-signed for kind, ACME for a real cluster) makes the
    // Secret the Ingress serves.
    let ingress = documents(&PathBuf::from(format!("{ROOT}/{DIR}/50-ingress.yaml")));
    let tls_secret = &ingress[0]["spec"]["tls"][0]["secretName"];
    for file in ["40-certificate.yaml", "acme/certificate.yaml"] {
        let docs = documents(&PathBuf::from(format!("{ROOT}/{DIR}/{file}")));
        let certificate = docs
            .iter()
            .find(|d| d["kind"] == "Certificate")
            .unwrap_or_else(|| panic!("{file} has a Certificate"));
        assert_eq!(&certificate["spec"]["secretName"], tls_secret, "{file}");
        let issuer = &certificate["spec"]["issuerRef"]["name"];
        assert!(
            docs.iter()
                .any(|d| d["kind"] == "Issuer" && &d["metadata"]["name"] == issuer),
            "{file}: the Certificate's Issuer is in the file"
        );
    }
}

#[test]
fn the_quickstart_readme_names_files_that_exist() {
    let readme = std::fs::read_to_string(format!("{ROOT}/{DIR}/README.md")).unwrap();
    let mut named = 0;
    for block in readme.split("```sh").skip(1) {
        let block = block.split("```").next().unwrap();
        for word in block.split_whitespace() {
            let word = word.trim_end_matches(['\\', ';']);
            let local = word.starts_with("deploy/examples/")
                || word.starts_with("charts/")
                || (word.ends_with(".yaml") && !word.contains("://"));
            if !local {
                continue;
            }
            assert!(
                Path::new(ROOT).join(word).exists(),
                "{DIR}/README.md runs a command on {word}, which does not exist"
            );
            named += 1;
        }
    }
    assert!(named >= 8, "the README's commands name the files ({named})");
    for file in files() {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            readme.contains(&format!("]({name})")),
            "{DIR}/README.md does not list {name}"
        );
    }
}

#[tokio::test]
async fn the_quickstart_logs_in_on_a_real_api_server() {
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    apply(&admin, include_str!("../deploy/portcullis.yaml")).await;
    let controller = run_controller(&cp, "replica-a");
    let https = controller.https.expect("an HTTPS listener");
    let origin = format!("https://{HOST}");
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);

    let filled = filled_in(&idp.issuer);
    let (cert_manager, ours): (Vec<Value>, Vec<Value>) =
        serde_saphyr::from_multiple::<Value>(&filled)
            .unwrap()
            .into_iter()
            .filter(|d| !d.is_null())
            .partition(|d| {
                d["apiVersion"]
                    .as_str()
                    .unwrap()
                    .starts_with("cert-manager.io/")
            });
    assert_eq!(cert_manager.len(), 2, "the Issuer and the Certificate");
    for doc in &ours {
        apply(&admin, &serde_json::to_string(doc).unwrap()).await;
    }
    // What cert-manager and the kubelet would add: the TLS Secret and the echo Pod.
    let cert = common::tls::cert(&[HOST]);
    apply(&admin, &common::tls::tls_secret("app-tls", &cert)).await;
    let app = Backend::start_on("echo", host_address()).await;
    apply(
        &admin,
        &format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: echo-pod, namespace: apps, labels: {{kubernetes.io/service-name: echo}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
            app.addr.port(),
            app.addr.ip()
        ),
    )
    .await;

    // `kubectl -n apps get authrule`: READY True, ROUTES 1.
    let rules: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &ApiResource::erase::<AuthRule>(&()));
    eventually("the AuthRule sso is Healthy", || async {
        let rule = rules.get("sso").await.unwrap();
        crate::gitops::argo_health(&serde_json::to_value(&rule).unwrap()).0 == "Healthy"
    })
    .await;
    assert_eq!(
        rules.get("sso").await.unwrap().data["status"]["attachedRoutes"],
        1
    );

    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap()])
        .resolve(HOST, https)
        .build()
        .unwrap();
    // The README's curl, as a browser: 302 to the provider with the redirect URI to
    // register.
    let start = b
        .get(format!("{origin}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 302);
    let to_idp = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to_idp.starts_with(&idp.issuer)
            && to_idp.contains("redirect_uri=https%3A%2F%2Fapp.localhost%2Foauth2%2Fidpresponse"),
        "{to_idp}"
    );
    let callback = log_in(
        &b,
        &to_idp,
        &format!("{origin}/oauth2/idpresponse"),
        "quinn",
    )
    .await;
    assert_eq!(b.get(&callback.url).send().await.unwrap().status(), 302);
    let seen = common::app::seen_by_backend(&b, &format!("{origin}/")).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "quinn");
    assert!(seen["headers"]["x-amzn-oidc-data"].is_string());
}
