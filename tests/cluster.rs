//! `portcullis run` against a real API server (etcd and kube-apiserver built from
//! their Go modules): the chart's manifests applied as rendered, the controller under
//! the chart's RBAC, and a login through an Ingress and AuthRule made through the API.

mod common;

use common::app::{AUTH_RULE, log_in_at};
use common::cluster::{ControlPlane, apply, host_address};
use common::idp::Idp;
use common::*;

const RENDERED: &str = include_str!("../deploy/portcullis.yaml");

/// The chart's objects, then the controller as the chart's ServiceAccount.
async fn install(cp: &ControlPlane) -> Portcullis {
    apply(&cp.admin().await, RENDERED).await;
    let kubeconfig = cp.controller_kubeconfig();
    Portcullis::launch_with_env(
        &[
            "run".as_ref(),
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--admin".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("POD_NAMESPACE", "portcullis-system".as_ref()),
        ],
    )
}

#[tokio::test]
async fn a_login_through_an_ingress_and_authrule_made_through_the_api() {
    let cp = ControlPlane::start();
    let controller = install(&cp).await;
    let backend = Backend::start_on("app", host_address()).await;
    let origin = format!("http://app.example.com:{}", controller.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    let admin = cp.admin().await;
    apply(
        &admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    )
    .await;
    apply(
        &admin,
        &format!(
            "{}{}{}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &[backend.addr]),
            AUTH_RULE.replace("ISSUER", &idp.issuer)
        ),
    )
    .await;

    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", controller.http)
        .build()
        .unwrap();
    eventually("the controller guards the Ingress", || async {
        b.get(format!("{origin}/"))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| r.status() == 302)
    })
    .await;
    log_in_at(&b, &origin, "kate").await;
    let seen: serde_json::Value = b
        .get(format!("{origin}/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "kate");
}
