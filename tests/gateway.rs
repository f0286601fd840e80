//! Gateway API against a real API server: the upstream standard CRDs installed, a
//! Gateway and HTTPRoutes applied, traffic routed by path, header and weight, a
//! ReferenceGrant needed and honoured, one route rule guarded by an AuthRule (a login
//! through the certified provider) while its sibling stays open, and every status
//! written once.

use crate::common;

use common::app::{callback_url, seen_by_backend};
use common::cluster::{ControlPlane, apply, gateway_crds, host_address, run_controller};
use common::idp::Idp;
use common::*;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use portcullis::model::AuthRule;

const RENDERED: &str = include_str!("../deploy/portcullis.yaml");

fn service(ns: &str, name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-local, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {}}}]
endpoints: [{{addresses: ["{}"]}}]
"#,
        addr.port(),
        addr.ip()
    )
}

const GATEWAY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Namespace
metadata: {name: data}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
"#;

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: apps}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [shop.example.com]
  rules:
  - name: admin
    matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: web, port: 80}]
  - name: beta
    matches: [{path: {type: PathPrefix, value: /}, headers: [{name: x-beta, value: "yes"}]}]
    backendRefs: [{name: api, port: 80}]
  - name: split
    backendRefs: [{name: web, port: 80, weight: 1}, {name: api, port: 80, weight: 1}]
  - name: ops
    matches: [{path: {type: PathPrefix, value: /ops}, method: POST}]
    backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reports, namespace: apps}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [reports.example.com]
  rules:
  - backendRefs: [{name: store, namespace: data, port: 80}]
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: test-secret}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: admins, namespace: apps}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: admin}
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop, sectionName: ops}
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    clientSecretRef: {name: idp}
"#;

const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reports-from-apps, namespace: data}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service, name: store}]
"#;

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn condition<'a>(conditions: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}

fn is_true(conditions: &serde_json::Value, kind: &str) -> bool {
    condition(conditions, kind).is_some_and(|c| c["status"] == "True")
}

#[tokio::test]
async fn gateway_and_httproutes_route_guard_and_report() {
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    apply(&admin, &gateway_crds()).await;
    apply(&admin, RENDERED).await;
    let proxy = run_controller(&cp, "replica-a");
    let web = Backend::start_on("web", host_address()).await;
    let api = Backend::start_on("api", host_address()).await;
    let store = Backend::start_on("store", host_address()).await;
    let origin = format!("http://shop.example.com:{}", proxy.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    apply(&admin, GATEWAY).await;
    apply(
        &admin,
        &format!(
            "{}{}{}{}",
            service("apps", "web", web.addr),
            service("apps", "api", api.addr),
            service("data", "store", store.addr),
            ROUTES.replace("ISSUER", &idp.issuer)
        ),
    )
    .await;

    let open = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("shop.example.com", proxy.http)
        .resolve("reports.example.com", proxy.http)
        .build()
        .unwrap();
    let backend_of = |resp: reqwest::Response| async move {
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        v["backend"].as_str().unwrap_or_default().to_owned()
    };
    eventually("the HTTPRoute is served", || async {
        open.get(format!("{origin}/x"))
            .header("x-beta", "yes")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // By header: the beta rule wins over the split for the same prefix.
    for _ in 0..5 {
        let r = open
            .get(format!("{origin}/x"))
            .header("x-beta", "yes")
            .send()
            .await
            .unwrap();
        assert_eq!(backend_of(r).await, "api");
    }
    // By weight: 1:1 between web and api.
    let mut to_web = 0;
    for _ in 0..60 {
        let r = open.get(format!("{origin}/page")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        if backend_of(r).await == "web" {
            to_web += 1;
        }
    }
    assert!(
        (15..=45).contains(&to_web),
        "60 requests split 1:1 sent {to_web} to web"
    );

    // By path: /admin is the guarded rule; its sibling rules stay open. (The AuthRule
    // arrives through its own watch, so wait for it as for the routes.)
    eventually("the AuthRule guards the admin rule", || async {
        open.get(format!("{origin}/admin/"))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| r.status() == 302)
    })
    .await;
    let r = open
        .get(format!("{origin}/admin/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r.headers().get("location").cloned();
    assert_eq!(
        status,
        302,
        "the admin rule sends a browser to log in: {}",
        r.text().await.unwrap_or_default()
    );
    let location = location.unwrap();
    assert!(location.to_str().unwrap().starts_with(&idp.issuer));

    // The login, through the certified provider, for the guarded rule.
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("shop.example.com", proxy.http)
        .build()
        .unwrap();
    let callback = callback_url(&b, &origin, "/admin/", "kate").await;
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 302);
    let seen = seen_by_backend(&b, &format!("{origin}/admin/")).await;
    assert_eq!(seen["backend"], "web");
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "kate");

    // A backend in another namespace: refused (500) until a ReferenceGrant allows it.
    let reports = "http://reports.example.com".to_owned() + &format!(":{}", proxy.http.port());
    let r = open.get(format!("{reports}/")).send().await.unwrap();
    assert_eq!(r.status(), 500, "no ReferenceGrant yet");
    let routes: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &resource("HTTPRoute", "httproutes"));
    eventually("the route reports RefNotPermitted", || async {
        let route = routes.get("reports").await.unwrap();
        condition(
            &route.data["status"]["parents"][0]["conditions"],
            "ResolvedRefs",
        )
        .is_some_and(|c| c["reason"] == "RefNotPermitted")
    })
    .await;
    apply(&admin, GRANT).await;
    eventually("the granted backend is served", || async {
        match open.get(format!("{reports}/")).send().await {
            Ok(r) if r.status() == 200 => backend_of(r).await == "store",
            _ => false,
        }
    })
    .await;

    // Status: class, gateway with its listener, routes, and the policy's ancestor.
    let classes: Api<DynamicObject> =
        Api::all_with(admin.clone(), &resource("GatewayClass", "gatewayclasses"));
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "infra", &resource("Gateway", "gateways"));
    let rules: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &ApiResource::erase::<AuthRule>(&()));
    eventually("every status is written", || async {
        let class = classes.get("portcullis").await.unwrap();
        let gw = gateways.get("edge").await.unwrap();
        let shop = routes.get("shop").await.unwrap();
        let reports = routes.get("reports").await.unwrap();
        let rule = rules.get("admins").await.unwrap();
        is_true(&class.data["status"]["conditions"], "Accepted")
            && is_true(&gw.data["status"]["conditions"], "Programmed")
            && gw.data["status"]["listeners"][0]["attachedRoutes"] == 2
            && is_true(&shop.data["status"]["parents"][0]["conditions"], "Accepted")
            && is_true(
                &shop.data["status"]["parents"][0]["conditions"],
                "ResolvedRefs",
            )
            && is_true(
                &reports.data["status"]["parents"][0]["conditions"],
                "ResolvedRefs",
            )
            && rule.data["status"]["ancestors"][0]["ancestorRef"]["name"] == "edge"
            // A GET to /ops reaches the open catch-all: the guarded POST rule is
            // reported as shadowed, in a condition the CRD's schema accepts.
            && condition(
                &shop.data["status"]["parents"][0]["conditions"],
                "portcullis.dev/GuardsHold",
            )
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "GuardShadowed")
    })
    .await;
    let gw = gateways.get("edge").await.unwrap();
    assert_eq!(gw.data["status"]["addresses"][0]["value"], "192.0.2.80");
    let listener = &gw.data["status"]["listeners"][0];
    for kind in ["Accepted", "ResolvedRefs", "Programmed"] {
        assert!(
            is_true(&listener["conditions"], kind),
            "listener {kind}: {listener}"
        );
    }
    assert_eq!(
        condition(&listener["conditions"], "Conflicted").unwrap()["status"],
        "False"
    );
    assert_eq!(listener["supportedKinds"][0]["kind"], "HTTPRoute");
    let shop = routes.get("shop").await.unwrap();
    assert_eq!(
        shop.data["status"]["parents"][0]["controllerName"],
        "portcullis.dev/gateway-controller"
    );

    // Written once: nothing changes while nothing else does.
    let versions = || async {
        (
            classes
                .get("portcullis")
                .await
                .unwrap()
                .metadata
                .resource_version,
            gateways
                .get("edge")
                .await
                .unwrap()
                .metadata
                .resource_version,
            routes.get("shop").await.unwrap().metadata.resource_version,
            routes
                .get("reports")
                .await
                .unwrap()
                .metadata
                .resource_version,
            rules.get("admins").await.unwrap().metadata.resource_version,
        )
    };
    let before = versions().await;
    // Traffic makes the controller look again (flows, failure counts); it must find
    // nothing to write.
    for _ in 0..10 {
        let _ = open.get(format!("{origin}/page")).send().await;
    }
    common::cluster::settled(&proxy, &admin).await;
    assert_eq!(versions().await, before, "no status was rewritten");
}
