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

// Gateways with addresses of their own (`--gateway-addresses`), from files, attacked
// with raw bytes on their own sockets.

/// A loopback range of this test's own (runs and tests in parallel do not meet) and
/// the first addresses in it.
fn own_range(test: u8) -> (String, [std::net::IpAddr; 3]) {
    let second = 100 + std::process::id() % 100;
    let range = format!("127.{second}.{test}.0/24");
    let ip = |last: u8| format!("127.{second}.{test}.{last}").parse().unwrap();
    (range, [ip(10), ip(11), ip(12)])
}

const FILE_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: portcullis.dev/gateway-controller}\n";

/// A Gateway in `apps` at `ip` with `listeners` (flow YAML, one per item).
fn own_gateway(name: &str, ip: std::net::IpAddr, listeners: &[String]) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  gatewayClassName: portcullis\n  addresses: [{{type: IPAddress, value: \"{ip}\"}}]\n  listeners:\n{}",
        listeners
            .iter()
            .map(|l| format!("  - {l}\n"))
            .collect::<String>()
    )
}

/// An HTTPRoute in `apps` through `parent` (flow YAML) to Service `backend`.
fn own_route(name: &str, parent: &str, backend: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  parentRefs: [{parent}]\n  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
    )
}

fn get_host(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Which backend answered (`None`: Portcullis answered itself), and the status (0:
/// nothing listens there).
async fn reached(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Option<String>) {
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        return (0, None);
    }
    let r = raw_exchange(addr, request).await;
    let backend = r
        .backend()
        .and_then(|b| b["backend"].as_str().map(str::to_owned));
    (r.status, backend)
}

#[tokio::test]
async fn each_gateway_is_served_on_its_own_address_and_port_and_only_there() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (range, [ip_a, ip_b, ip_c]) = own_range(1);
    // Taken before Portcullis starts: Gateway c's listener cannot be opened.
    let occupied = std::net::TcpListener::bind((ip_c, 8080)).unwrap();
    let http = |port: u16| format!("{{name: l{port}, port: {port}, protocol: HTTP}}");
    let objects = |b_listeners: &[String]| {
        format!(
            "{FILE_CLASS}{}{}{}{}{}{}{}",
            own_gateway("a", ip_a, &[http(8080)]),
            own_gateway("b", ip_b, b_listeners),
            own_gateway("c", ip_c, &[http(8080)]),
            own_route("to-a", "{name: a}", "a"),
            own_route("to-b", "{name: b}", "b"),
            service_yaml("a", &[a.addr]),
            service_yaml("b", &[b.addr]),
        )
    };
    let dir = TempDir::new("gateway-addresses");
    dir.write("all.yaml", &objects(&[http(8080)]));
    let p = Portcullis::start(dir.path(), &["--gateway-addresses", &range]);
    let at = |ip, port| std::net::SocketAddr::new(ip, port);
    eventually("both Gateways are served", || async {
        reached(at(ip_b, 8080), &get_host("any.test"))
            .await
            .1
            .is_some()
    })
    .await;
    // The same port and host, told apart by address alone.
    assert_eq!(
        reached(at(ip_a, 8080), &get_host("any.test")).await,
        (200, Some("a".into()))
    );
    assert_eq!(
        reached(at(ip_b, 8080), &get_host("any.test")).await,
        (200, Some("b".into()))
    );
    // Neither Gateway's routes are on the flag listener.
    assert_eq!(reached(p.http, &get_host("any.test")).await, (404, None));
    // The port that could not be opened is reported; the others serve all the same.
    let reported = || {
        p.diagnostics.lock().unwrap().iter().any(|l| {
            l.contains("cannot listen for a Gateway listener") && l.contains(&ip_c.to_string())
        })
    };
    eventually("the unbound socket is logged", || async { reported() }).await;
    drop(occupied);

    // A listener added at another port opens; the one removed closes.
    dir.write("all.yaml", &objects(&[http(8081)]));
    eventually("b moved to port 8081", || async {
        reached(at(ip_b, 8081), &get_host("any.test"))
            .await
            .1
            .as_deref()
            == Some("b")
            && tokio::net::TcpStream::connect(at(ip_b, 8080))
                .await
                .is_err()
    })
    .await;
    assert_eq!(
        reached(at(ip_a, 8080), &get_host("any.test")).await,
        (200, Some("a".into())),
        "a's socket stays through b's change"
    );
}

/// One Gateway address and port with three listeners: no hostname (open), a
/// wildcard (open) and a named host whose routes an AuthRule guards. However the
/// client spells the named host, its request belongs to the named listener: the
/// guard answers, and the wildcard's and host-less listener's routes never do.
#[tokio::test]
async fn a_named_listener_keeps_its_host_in_every_spelling() {
    let open = Backend::start("open").await;
    let wild = Backend::start("wild").await;
    let abc = Backend::start("abc").await;
    let (range, [ip, _, _]) = own_range(2);
    let port = 8080;
    let listeners = [
        format!("{{name: open, port: {port}, protocol: HTTP}}"),
        format!("{{name: wild, port: {port}, protocol: HTTP, hostname: \"*.example.com\"}}"),
        format!("{{name: abc, port: {port}, protocol: HTTP, hostname: abc.example.com}}"),
    ];
    let dir = TempDir::new("gateway-isolation");
    dir.write(
        "all.yaml",
        &format!(
            "{FILE_CLASS}{}{}{}{}{}{}{}---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: abc-users, namespace: apps}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: iso, sectionName: abc}}]\n  oidc: {{issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {{name: idp}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: apps}}\nstringData: {{client-secret: s}}\n",
            own_gateway("iso", ip, &listeners),
            own_route("to-open", "{name: iso, sectionName: open}", "open"),
            own_route("to-wild", "{name: iso, sectionName: wild}", "wild"),
            own_route("to-abc", "{name: iso, sectionName: abc}", "abc"),
            service_yaml("open", &[open.addr]),
            service_yaml("wild", &[wild.addr]),
            service_yaml("abc", &[abc.addr]),
        ),
    );
    let _p = Portcullis::start(dir.path(), &["--gateway-addresses", &range]);
    let gw = std::net::SocketAddr::new(ip, port);
    eventually("the Gateway is served", || async {
        reached(gw, &get_host("bar.com")).await.1.is_some()
    })
    .await;
    assert_eq!(
        reached(gw, &get_host("bar.com")).await,
        (200, Some("open".into()))
    );
    for host in ["bar.example.com", "BAR.example.com.", "x.y.example.com"] {
        assert_eq!(
            reached(gw, &get_host(host)).await,
            (200, Some("wild".into())),
            "{host}"
        );
    }
    let named = [
        "abc.example.com".to_owned(),
        "ABC.Example.COM".to_owned(),
        "abc.example.com.".to_owned(),
        format!("abc.example.com:{port}"),
        format!("abc.example.com.:{port}"),
        "abc.example.com:80".to_owned(),
        "aBc.ExAmPlE.cOm.:80".to_owned(),
    ];
    for host in &named {
        assert_eq!(
            reached(gw, &get_host(host)).await,
            (401, None),
            "Host: {host}"
        );
    }
    // The request target's authority is the host; one that disagrees is refused.
    let absolute = [
        "GET http://abc.example.com/ HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n",
        "GET http://ABC.example.com./ HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n",
        "GET http://abc.example.com/ HTTP/1.1\r\nHost: bar.com\r\nConnection: close\r\n\r\n",
        "GET http://bar.com/ HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: abc.example.com\r\nHost: bar.com\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: bar.com\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n",
    ];
    for request in absolute {
        let (status, backend) = reached(gw, request.as_bytes()).await;
        assert!(
            backend.is_none() && matches!(status, 400 | 401),
            "{request:?}: {status} {backend:?}"
        );
    }
    // h2 (prior knowledge): :authority is the host, and a Host header that disagrees
    // is refused.
    for (authority, host) in [
        ("abc.example.com", None),
        ("ABC.EXAMPLE.COM.", None),
        ("bar.com", Some("abc.example.com")),
        ("abc.example.com", Some("bar.com")),
    ] {
        let (status, backend) = h2_reached(gw, authority, host).await;
        assert!(
            backend.is_none() && matches!(status, 400 | 401),
            ":authority {authority}, Host {host:?}: {status} {backend:?}"
        );
    }
    assert_eq!(
        h2_reached(gw, "bar.example.com", None).await,
        (200, Some("wild".into()))
    );
}

/// One h2c request with prior knowledge: which backend answered, and the status.
async fn h2_reached(
    addr: std::net::SocketAddr,
    authority: &str,
    host: Option<&str>,
) -> (u16, Option<String>) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(format!("http://{authority}/"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    if let Some(h) = host {
        req.headers_mut().insert("host", h.parse().unwrap());
    }
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let backend = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["backend"].as_str().map(str::to_owned));
    (status, backend)
}
