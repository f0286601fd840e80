//! `portcullis run` against a real API server (etcd and kube-apiserver built from
//! their Go modules): the chart's manifests applied as rendered, the controller under
//! the chart's RBAC, and a login through an Ingress and AuthRule made through the API.

use crate::common;

use common::app::{AUTH_RULE, log_in_at, seen_by_backend};
use common::cluster::{
    ControlPlane, apply, host_address, lease_round, run_controller, settled, try_apply,
};
use common::idp::Idp;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use portcullis::model::AuthRule;

const RENDERED: &str = include_str!("../deploy/portcullis.yaml");
/// The application the kind test deploys too.
const SCENARIO: &str = include_str!("scenario/app.yaml");

fn endpoint_slice(service: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-local, namespace: apps, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        addr.port(),
        addr.ip()
    )
}

/// The chart's objects, then the controller as the chart's ServiceAccount.
async fn install(cp: &ControlPlane) -> Portcullis {
    apply(&cp.admin().await, RENDERED).await;
    run_controller(cp, "replica-a")
}

#[tokio::test]
async fn a_login_through_an_ingress_and_authrule_made_through_the_api() {
    let cp = ControlPlane::start();
    let controller = install(&cp).await;
    let backend = Backend::start_on("app", host_address()).await;
    let origin = format!("http://app.example.com:{}", controller.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    let admin = cp.admin().await;
    apply(&admin, &SCENARIO.replace("ISSUER", &idp.issuer)).await;
    // No kubelet here: the backend is a local process, listed by hand.
    apply(&admin, &endpoint_slice("svc", backend.addr)).await;

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
    let seen = seen_by_backend(&b, &format!("{origin}/")).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "kate");

    // Status, written by the Lease holder.
    let rules: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &ApiResource::erase::<AuthRule>(&()));
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "apps");
    eventually(
        "the AuthRule is Ready and the Ingress has an address",
        || async {
            let rule = rules.get("sso").await.unwrap();
            let ingress = ingresses.get("web").await.unwrap();
            condition(&rule, "Ready").is_some_and(|c| c["status"] == "True")
                && ingress
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .is_some_and(|i| i[0].ip.as_deref() == Some("192.0.2.80"))
        },
    )
    .await;
    let rule = rules.get("sso").await.unwrap();
    assert_eq!(rule.data["status"]["attachedRoutes"], 1);
    assert_eq!(
        rule.data["status"]["observedGeneration"],
        rule.metadata.generation.unwrap()
    );
    for kind in ["Accepted", "ResolvedRefs", "IdPReachable"] {
        assert_eq!(condition(&rule, kind).unwrap()["status"], "True", "{kind}");
    }
    let (health, message) = crate::gitops::argo_health(&serde_json::to_value(&rule).unwrap());
    assert_eq!(
        health, "Healthy",
        "docs/gitops.md's Argo CD check: {message}"
    );

    // The API server goes away: traffic keeps flowing on the last snapshot.
    cp.stop_apiserver();
    let seen = seen_by_backend(&b, &format!("{origin}/")).await;
    assert_eq!(
        seen["headers"]["x-amzn-oidc-identity"], "kate",
        "served without the API"
    );
    cp.start_apiserver().await;
    let fresh = Backend::start_on("app2", host_address()).await;
    apply(&cp.admin().await, &endpoint_slice("svc", fresh.addr)).await;
    eventually("changes made after the restart are served", || async {
        let r = b.get(format!("{origin}/")).send().await;
        match r {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["backend"] == "app2"),
            Err(_) => false,
        }
    })
    .await;
}

fn condition(rule: &DynamicObject, kind: &str) -> Option<serde_json::Value> {
    rule.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

#[tokio::test]
async fn status_names_the_missing_secret_and_clears_when_it_appears() {
    let cp = ControlPlane::start();
    let p = install(&cp).await;
    let admin = cp.admin().await;
    apply(
        &admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    )
    .await;
    let backend = Backend::start_on("app", host_address()).await;
    let without_secret = AUTH_RULE
        .replace("ISSUER", "https://login.example.com")
        .split("---\napiVersion: v1\nkind: Secret")
        .next()
        .unwrap()
        .to_owned();
    let manifests = format!(
        "{}{}{}",
        ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
        service_yaml("svc", &[backend.addr]),
        without_secret
    );
    apply(&admin, &manifests).await;
    let rules: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &ApiResource::erase::<AuthRule>(&()));

    // The CRD's validation rules stop what can never work at the API server.
    let refused = try_apply(
        &admin,
        &without_secret
            .replace("name: sso", "name: wrong")
            .replace("[{name: web}]", "[{kind: Service, name: web}]"),
    )
    .await
    .unwrap_err();
    assert!(refused.contains("targets are Ingresses"), "{refused}");

    eventually("ResolvedRefs is False", || async {
        let rule = rules.get("sso").await.unwrap();
        condition(&rule, "ResolvedRefs").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let rule = rules.get("sso").await.unwrap();
    let resolved = condition(&rule, "ResolvedRefs").unwrap();
    let message = resolved["message"].as_str().unwrap();
    assert!(
        message.contains("idp") && message.contains("fix:"),
        "{message}"
    );
    assert_eq!(condition(&rule, "Ready").unwrap()["status"], "False");
    assert!(
        condition(&rule, "IdPReachable").is_none(),
        "a rule that does not compile has no provider to check yet"
    );
    let (health, said) = crate::gitops::argo_health(&serde_json::to_value(&rule).unwrap());
    assert_eq!(health, "Degraded", "{said}");
    assert!(
        said.starts_with("ResolvedRefs is False") && said.contains("idp"),
        "{said}"
    );
    let accepted_since = condition(&rule, "Accepted").unwrap()["lastTransitionTime"].clone();

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), "apps");
    eventually("an Event on the AuthRule carries the fix", || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("sso")
                    && e.note.as_deref().is_some_and(|n| n.contains("fix:"))
            })
    })
    .await;

    // Once status has settled, the same manifests again change nothing (no new
    // generation), and the controller writes nothing in answer.
    let controller_write = |rule: &DynamicObject| {
        let status_entry = rule
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .find(|m| m.manager.as_deref() == Some("portcullis-controller"));
        (
            rule.metadata.generation,
            rule.data["status"].clone(),
            status_entry.and_then(|m| m.time.clone()),
        )
    };
    settled(&p, &admin).await;
    let before = controller_write(&rules.get("sso").await.unwrap());
    apply(&admin, &manifests).await;
    settled(&p, &admin).await;
    let after = controller_write(&rules.get("sso").await.unwrap());
    assert_eq!(after, before, "no drift, no status churn");

    apply(
        &admin,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n",
    )
    .await;
    eventually("ResolvedRefs turns True", || async {
        let rule = rules.get("sso").await.unwrap();
        condition(&rule, "ResolvedRefs").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let rule = rules.get("sso").await.unwrap();
    let idp = condition(&rule, "IdPReachable")
        .unwrap_or_else(|| panic!("the provider is checked: {}", rule.data["status"]));
    assert_eq!(
        idp["status"], "False",
        "login.example.com is not reachable here"
    );
    assert!(
        idp["message"].as_str().unwrap().contains("diagnose"),
        "{idp}"
    );
    let (health, said) = crate::gitops::argo_health(&serde_json::to_value(&rule).unwrap());
    assert_eq!(health, "Degraded", "{said}");
    assert!(said.starts_with("IdPReachable is False"), "{said}");
    assert_eq!(
        condition(&rule, "Accepted").unwrap()["lastTransitionTime"],
        accepted_since,
        "a condition that held keeps its transition time"
    );
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("portcullis-leader")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// Waits for replica-a to lead, starts replica-b, and checks a still leads.
async fn second_replica_while_a_leads(cp: &ControlPlane, leases: &Api<Lease>) -> Portcullis {
    eventually("replica-a holds the Lease", || async {
        lease_holder(leases).await.as_deref() == Some("replica-a")
    })
    .await;
    let second = run_controller(cp, "replica-b");
    eventually("replica-b has read the Lease", || async {
        common::cluster::counter(&second, "leader_lease_rounds_total", "following").await >= 1.0
    })
    .await;
    assert_eq!(
        lease_holder(leases).await.as_deref(),
        Some("replica-a"),
        "one leader at a time"
    );
    second
}

#[tokio::test]
async fn the_lease_moves_to_another_replica_when_the_leader_stops() {
    let cp = ControlPlane::start();
    let first = install(&cp).await;
    let leases: Api<Lease> = Api::namespaced(cp.admin().await, "portcullis-system");
    let holder = || lease_holder(&leases);
    let second = second_replica_while_a_leads(&cp, &leases).await;
    first.terminate();
    eventually("replica-b takes the Lease over", || async {
        holder().await.as_deref() == Some("replica-b")
    })
    .await;
    drop(second);
}

#[tokio::test]
async fn a_renewed_tls_secret_is_served_without_a_restart() {
    use common::tls::{cert, tls_client, tls_secret};
    let cp = ControlPlane::start();
    let controller = install(&cp).await;
    let https = controller.https.unwrap();
    let admin = cp.admin().await;
    apply(
        &admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    )
    .await;
    let backend = Backend::start_on("app", host_address()).await;
    let (first, renewed) = (cert(&["app.example.com"]), cert(&["app.example.com"]));
    let tls = "  tls: [{hosts: [app.example.com], secretName: app-tls}]\n";
    apply(
        &admin,
        &format!(
            "{}{}{}",
            tls_secret("app-tls", &first),
            ingress_yaml("web", &[("app.example.com", "/", "svc")], tls),
            service_yaml("svc", &[backend.addr])
        ),
    )
    .await;
    let url = format!("https://app.example.com:{}/", https.port());
    let served_with = |c: &common::tls::TestCert| {
        let client = tls_client(c, &["app.example.com"], https);
        let url = url.clone();
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    };
    eventually("the Secret's certificate is served", || served_with(&first)).await;
    apply(&admin, &tls_secret("app-tls", &renewed)).await;
    eventually("the renewed certificate is served", || {
        served_with(&renewed)
    })
    .await;
    assert!(!served_with(&first).await, "the old certificate is gone");
}

/// A TCP relay to the API server that can be cut: while cut, open connections are
/// dropped and new ones hang unanswered, as behind a partition.
struct Relay {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let (cut2, live2) = (cut.clone(), live.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    held.push(inbound);
                    continue;
                }
                held.clear();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                live2.lock().unwrap().push(relay);
            }
        });
        Self {
            addr,
            cut,
            live,
            task,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for relay in self.live.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// The leader is cut off from the API server for longer than the Lease: the other
/// replica takes over, and the old leader, once it can reach the API server again,
/// writes nothing (every Event about rules made after the handover is the new
/// leader's). The relay runs while the test thread waits for processes: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_longer_than_its_lease_stops_writing_and_another_takes_over() {
    use k8s_openapi::api::events::v1::Event;
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    apply(&admin, RENDERED).await;
    apply(
        &admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    )
    .await;
    let kubeconfig = std::fs::read_to_string(cp.controller_kubeconfig()).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .unwrap()
        .to_owned();
    let relay = Relay::start(server.parse().unwrap()).await;
    let relayed = TempDir::new("relayed");
    relayed.write(
        "kubeconfig",
        &kubeconfig.replace(&server, &relay.addr.to_string()),
    );
    let mut a = Portcullis::launch_with_env(
        &[
            "run".as_ref(),
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--admin".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &[
            ("KUBECONFIG", relayed.path().join("kubeconfig").as_os_str()),
            ("POD_NAMESPACE", "portcullis-system".as_ref()),
            ("POD_NAME", "replica-a".as_ref()),
        ],
    );
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "portcullis-system");
    let holder = || lease_holder(&leases);
    let _b = second_replica_while_a_leads(&cp, &leases).await;

    relay.cut();
    let cut_at = std::time::Instant::now();
    let deadline = cut_at + std::time::Duration::from_secs(45);
    while holder().await.as_deref() != Some("replica-b") {
        assert!(
            std::time::Instant::now() < deadline,
            "replica-b never took over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The last renewal came up to 5 s before the cut; the Lease lasts 15 s from it.
    let took = cut_at.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(9),
        "taken over after {took:?}: before the Lease could have lapsed"
    );
    let rule = |name: &str| {
        format!(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  targetRefs: [{{name: web}}]\n  oidc: {{issuer: \"https://idp.example.com\", clientId: app, clientSecretRef: {{name: missing}}}}\n"
        )
    };
    apply(&admin, &rule("during-cut")).await;
    relay.mend();
    // replica-a reconnects, reads the Lease, and must not write; then more changes.
    lease_round(&a, "following").await;
    apply(&admin, &rule("after-cut")).await;
    let events: Api<Event> = Api::namespaced(admin.clone(), "apps");
    let reporters = || async {
        let list = events.list(&Default::default()).await.unwrap();
        let mut by_rule: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter_map(|e| Some((e.regarding?.name?, e.reporting_instance.unwrap_or_default())))
            .collect();
        by_rule.sort();
        by_rule
    };
    eventually("the new leader reports both rules", || async {
        let seen = reporters().await;
        ["during-cut", "after-cut"]
            .iter()
            .all(|r| seen.iter().any(|(name, _)| name == r))
    })
    .await;
    // One more round in which replica-a follows: anything it might have sent is in.
    lease_round(&a, "following").await;
    for (name, instance) in reporters().await {
        assert_eq!(
            instance, "replica-b",
            "an Event about {name} came from {instance}"
        );
    }
    assert_eq!(holder().await.as_deref(), Some("replica-b"));
    assert!(a.exited().is_none(), "the old leader keeps serving traffic");
}

/// Requests `host` over raw sockets until `stop`; the statuses seen, and how many
/// answers came from the backend.
fn hammer(
    addr: std::net::SocketAddr,
    host: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, std::collections::BTreeMap<u16, usize>)> {
    let request = format!("GET /orders HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tokio::spawn(async move {
        let (mut reached, mut statuses) = (0, std::collections::BTreeMap::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let answer = raw_exchange(addr, request.as_bytes()).await;
            reached += usize::from(answer.backend().is_some());
            *statuses.entry(answer.status).or_insert(0) += 1;
        }
        (reached, statuses)
    })
}

fn order_ingress(name: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: apps, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: portcullis\n  rules:\n  - host: {name}.test\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"
    )
}

fn order_rule(name: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  targetRefs: [{{name: {name}}}]\n  oidc: {{issuer: \"https://idp.example.com\", clientId: app, clientSecretRef: {{name: idp}}}}\n{extra}"
    )
}

/// Applies `first`, then (after `between`, if any) `second`, while a client requests
/// `name.test`; returns how many requests reached the backend once the route is
/// guarded (401).
async fn apply_in_order(
    admin: &kube::Client,
    addr: std::net::SocketAddr,
    name: &str,
    (first, second): (&str, &str),
    between: Option<&str>,
) -> usize {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = hammer(addr, &format!("{name}.test"), stop.clone());
    apply(admin, first).await;
    if let Some(status) = between {
        // A sync wave: the Ingress is live on its own for a while.
        let probe = format!("GET / HTTP/1.1\r\nHost: {name}.test\r\nConnection: close\r\n\r\n");
        eventually("the Ingress is served on its own", || async {
            raw_exchange(addr, probe.as_bytes())
                .await
                .body
                .contains(status)
        })
        .await;
    }
    apply(admin, second).await;
    let probe = format!("GET / HTTP/1.1\r\nHost: {name}.test\r\nConnection: close\r\n\r\n");
    eventually("the route is guarded", || async {
        raw_exchange(addr, probe.as_bytes()).await.status == 401
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reached, statuses) = load.await.unwrap();
    println!("{name}: {reached} reached the backend; statuses {statuses:?}");
    reached
}

/// Helm and Argo CD create built-in kinds before custom resources: the Ingress lands
/// before its AuthRule. A route that names its rule (or any route, under
/// `--require-auth-rule`) answers 503 until the rule attaches, whatever the order and
/// however long between, and stays closed when the API server refuses the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_creation_order_serves_a_guarded_app_before_its_rule() {
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    apply(&admin, RENDERED).await;
    let controller =
        common::cluster::run_controller_with(&cp, "replica-a", &["--require-auth-rule"]);
    let backend = Backend::start_on("app", host_address()).await;
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: apps}\nspec:\n  ports: [{name: http, port: 80}]\n";
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n";
    apply(
        &admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    )
    .await;
    apply(
        &admin,
        &format!(
            "{service}---\n{}{secret}",
            endpoint_slice("svc", backend.addr)
        ),
    )
    .await;
    let addr = controller.http;
    let named = |n: &str| format!("\"portcullis.dev/auth-rule\": {n}");

    // One apply in Helm's order, then a sync wave's gap, for a route that names its
    // rule and for one that relies on --require-auth-rule alone.
    for (name, annotations) in [("one", named("one")), ("two", String::new())] {
        let objects = (&*order_ingress(name, &annotations), &*order_rule(name, ""));
        assert_eq!(apply_in_order(&admin, addr, name, objects, None).await, 0);
    }
    for (name, annotations) in [("three", named("three")), ("four", String::new())] {
        let objects = (&*order_ingress(name, &annotations), &*order_rule(name, ""));
        let waiting = Some("AuthRulePending");
        assert_eq!(
            apply_in_order(&admin, addr, name, objects, waiting).await,
            0
        );
    }

    // A rule the API server refuses never arrives: the route stays closed, and the
    // Ingress's Events say why.
    apply(&admin, &order_ingress("five", &named("five"))).await;
    let refused = order_rule(
        "five",
        "  bearer: {issuer: \"http://idp.example.com\", audiences: [api]}\n",
    );
    let refusal = try_apply(&admin, &refused).await.unwrap_err();
    assert!(refusal.contains("https://"), "{refusal}");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), "apps");
    eventually("the Ingress has an AuthRulePending Event", || async {
        events.list(&Default::default()).await.is_ok_and(|list| {
            list.items.iter().any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("five")
                    && e.reason.as_deref() == Some("AuthRulePending")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("AuthRule apps/five"))
            })
        })
    })
    .await;
    let probe = b"GET /orders HTTP/1.1\r\nHost: five.test\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(addr, probe).await;
    assert_eq!(answer.status, 503, "{}", answer.head);
    assert!(answer.body.contains("AuthRulePending"), "{}", answer.body);
    assert!(answer.backend().is_none());

    // A route marked public is served without a rule.
    apply(
        &admin,
        &order_ingress("six", "\"portcullis.dev/auth\": none"),
    )
    .await;
    let probe = b"GET / HTTP/1.1\r\nHost: six.test\r\nConnection: close\r\n\r\n";
    eventually("the public route is served", || async {
        raw_exchange(addr, probe).await.backend().is_some()
    })
    .await;
}

/// A login that goes to the provider and never comes back (the provider refused the
/// client id, or the user gave up) shows on the AuthRule's status after
/// `--login-abandoned-after`, written by the Lease holder.
#[tokio::test]
async fn abandoned_logins_show_on_the_authrule_status() {
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    apply(&admin, RENDERED).await;
    let controller =
        common::cluster::run_controller_with(&cp, "replica-a", &["--login-abandoned-after", "1"]);
    let backend = Backend::start_on("app", host_address()).await;
    let origin = format!("http://app.example.com:{}", controller.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    apply(&admin, &SCENARIO.replace("ISSUER", &idp.issuer)).await;
    apply(&admin, &endpoint_slice("svc", backend.addr)).await;
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", controller.http)
        .build()
        .unwrap();
    let start_login = || async {
        b.get(format!("{origin}/"))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| r.status() == 302)
    };
    // The first redirect to the provider is a login that never comes back.
    eventually("the controller guards the Ingress", start_login).await;
    let rules: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &ApiResource::erase::<AuthRule>(&()));
    let abandoned = || async {
        let rule = rules.get("sso").await.unwrap();
        rule.data["status"]["recentAbandonedLogins"].clone()
    };
    eventually("status counts one abandoned login", || async {
        abandoned().await == serde_json::json!({"count": 1, "windowSeconds": 900})
    })
    .await;
    assert!(start_login().await);
    eventually("status counts two", || async {
        abandoned().await["count"] == 2
    })
    .await;
}

#[tokio::test]
async fn a_bearer_only_rule_and_a_cookie_domain_another_namespace_serves_report_status() {
    let cp = ControlPlane::start();
    let controller = install(&cp).await;
    let idp = Idp::start(&[]);
    let admin = cp.admin().await;
    let backend = Backend::start_on("app", host_address()).await;
    let namespaces = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n";
    apply(&admin, namespaces).await;
    let rule = |name: &str, target: &str, rest: &str| {
        format!(
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  targetRefs: [{{name: {target}}}]\n{rest}"
        )
    };
    let bearer = format!(
        "  bearer: {{issuer: \"{}\", audiences: [\"https://api.example.com\"]}}\n",
        idp.issuer
    );
    let login = format!(
        "  oidc: {{issuer: \"{}\", clientId: portcullis-test, clientSecretRef: {{name: idp}}}}\n",
        idp.issuer
    );
    let manifests = format!(
        "{}{}{}{}{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: apps}}\nstringData: {{client-secret: test-secret}}\n",
        ingress_yaml("api", &[("api.example.com", "/", "svc")], ""),
        ingress_yaml("web", &[("web.example.com", "/", "svc")], ""),
        service_yaml("svc", &[backend.addr]),
        rule("api", "api", &bearer),
        rule(
            "web",
            "web",
            &format!("{login}  session: {{cookieDomain: example.com}}\n")
        ),
    );
    apply(&admin, &manifests).await;
    // Neither a login nor tokens: refused by the API server.
    let refused = try_apply(&admin, &rule("nothing", "api", ""))
        .await
        .unwrap_err();
    assert!(refused.contains("set spec.oidc"), "{refused}");

    let rules: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &ApiResource::erase::<AuthRule>(&()));
    let status = |c: Option<serde_json::Value>| {
        c.map(|c| {
            (
                c["status"].clone(),
                c["reason"].clone(),
                c["message"].clone(),
            )
        })
    };
    eventually(
        "the bearer-only rule is Ready and its issuer's keys load",
        || async {
            let api = rules.get("api").await.unwrap();
            status(condition(&api, "Ready")).is_some_and(|(s, _, _)| s == "True")
                && status(condition(&api, "IdPReachable")).is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    let api = rules.get("api").await.unwrap();
    assert!(
        condition(&api, "CredentialsAccepted").is_none(),
        "no client to check"
    );
    let no_token = raw_exchange(
        controller.http,
        b"GET / HTTP/1.1\r\nHost: api.example.com\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(no_token.status, 401, "{}", no_token.head);
    assert!(
        no_token
            .head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );

    // Another namespace serves a host under web's cookie domain: web is refused.
    eventually("web is Ready", || async {
        let web = rules.get("web").await.unwrap();
        status(condition(&web, "Ready")).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let intruder = format!(
        "{}{}",
        ingress_yaml("x", &[("x.example.com", "/", "svc")], ""),
        service_yaml("svc", &[backend.addr])
    )
    .replace("namespace: apps", "namespace: other");
    apply(&admin, &intruder).await;
    eventually(
        "web is not Accepted, naming the field and the route",
        || async {
            let web = rules.get("web").await.unwrap();
            status(condition(&web, "Accepted")).is_some_and(|(s, r, m)| {
                s == "False"
                    && r == "CookieDomainNotOwned"
                    && m.as_str().is_some_and(|m| {
                        m.contains("spec.session.cookieDomain") && m.contains("other/x")
                    })
            })
        },
    )
    .await;
    let closed = raw_exchange(
        controller.http,
        b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(closed.status, 500, "{}", closed.head);
    assert!(closed.body.contains("AuthRuleInvalid"), "{}", closed.body);
}

/// `spec.session.store: redis` on a controller run without `--redis-url`: the AuthRule
/// is not accepted (the field and the fix in its status) and its route stays closed.
#[tokio::test]
async fn sessions_in_redis_without_redis_are_not_accepted() {
    let cp = ControlPlane::start();
    let p = install(&cp).await;
    let admin = cp.admin().await;
    let backend = Backend::start_on("app", host_address()).await;
    let rule = AUTH_RULE
        .replace("ISSUER", "https://login.example.com")
        .replace("  oidc:", "  session: {store: redis}\n  oidc:");
    let manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: apps}}\n---\n{}{}{}",
        ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
        service_yaml("svc", &[backend.addr]),
        rule
    );
    apply(&admin, &manifests).await;
    let rules: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "apps", &ApiResource::erase::<AuthRule>(&()));
    eventually("Accepted is False", || async {
        let rule = rules.get("sso").await.unwrap();
        condition(&rule, "Accepted").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let rule = rules.get("sso").await.unwrap();
    let accepted = condition(&rule, "Accepted").unwrap();
    assert_eq!(accepted["reason"], "SessionStoreUnavailable", "{accepted}");
    let message = accepted["message"].as_str().unwrap();
    assert!(
        message.contains("spec.session.store")
            && message.contains("--redis-url")
            && message.contains("store: cookie"),
        "{message}"
    );
    assert_eq!(condition(&rule, "Ready").unwrap()["status"], "False");
    let closed = client()
        .get(format!("http://{}/", p.http))
        .header("host", "app.example.com")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 500, "closed, not open");
    assert!(closed.text().await.unwrap().contains("AuthRuleInvalid"));
}

/// Which test backend answered `host`'s `/`, or the status when none did.
async fn answered_by(c: &reqwest::Client, p: &Portcullis, host: &str) -> String {
    let r = c.get(p.url("/")).header("host", host).send().await.unwrap();
    match r.status().as_u16() {
        200 => r.json::<serde_json::Value>().await.unwrap()["backend"]
            .as_str()
            .unwrap()
            .to_owned(),
        s => s.to_string(),
    }
}

const PLAIN_APP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n---
apiVersion: v1\nkind: Service\nmetadata: {name: one, namespace: apps}\nspec: {ports: [{name: http, port: 80}]}\n---
apiVersion: v1\nkind: Service\nmetadata: {name: two, namespace: apps}\nspec: {ports: [{name: http, port: 80}]}\n";

fn plain_ingress(service: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: plain, namespace: apps}}\nspec:\n  ingressClassName: portcullis\n  rules:\n  - host: plain.example.com\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]\n"
    )
}

/// Applies an EndpointSlice change and waits until Portcullis has swapped it in.
async fn change_endpoints(p: &Portcullis, admin: &kube::Client, slice: &str) {
    let series = "portcullis_endpoint_updates_total";
    let before = metric_value(&p.metrics().await, series);
    apply(admin, slice).await;
    eventually("the EndpointSlice change is swapped in", || async {
        metric_value(&p.metrics().await, series) > before
    })
    .await;
}

#[tokio::test]
async fn endpoint_changes_are_live_without_a_compile_and_never_outlive_their_service_or_route() {
    let cp = ControlPlane::start();
    let controller = install(&cp).await;
    let (a, b, c) = (
        Backend::start_on("a", host_address()).await,
        Backend::start_on("b", host_address()).await,
        Backend::start_on("c", host_address()).await,
    );
    let admin = cp.admin().await;
    apply(&admin, PLAIN_APP).await;
    apply(&admin, &plain_ingress("one")).await;
    apply(&admin, &endpoint_slice("one", a.addr)).await;
    let web = client();
    let host = "plain.example.com";
    eventually("the route is served by a", || async {
        answered_by(&web, &controller, host).await == "a"
    })
    .await;

    // Endpoints alone: swapped into the route's upstream, no compile needed.
    change_endpoints(&controller, &admin, &endpoint_slice("one", b.addr)).await;
    assert_eq!(answered_by(&web, &controller, host).await, "b");
    let not_ready = endpoint_slice("one", b.addr)
        .replace("addresses: [", "conditions: {ready: false}, addresses: [");
    change_endpoints(&controller, &admin, &not_ready).await;
    assert_eq!(
        answered_by(&web, &controller, host).await,
        "503",
        "no ready endpoint"
    );
    change_endpoints(&controller, &admin, &endpoint_slice("one", b.addr)).await;
    assert_eq!(
        answered_by(&web, &controller, host).await,
        "b",
        "ready again"
    );

    // The Service goes: its EndpointSlice stays, and must not bring it back.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(admin.clone(), "apps");
    services.delete("one", &Default::default()).await.unwrap();
    eventually("a deleted Service is not served", || async {
        answered_by(&web, &controller, host).await == "503"
    })
    .await;
    change_endpoints(&controller, &admin, &endpoint_slice("one", c.addr)).await;
    assert_eq!(
        answered_by(&web, &controller, host).await,
        "503",
        "an EndpointSlice of a deleted Service"
    );
    apply(&admin, PLAIN_APP).await;
    eventually("the Service is back, with its endpoints", || async {
        answered_by(&web, &controller, host).await == "c"
    })
    .await;

    // The route moves to another Service: the old one's endpoints are not used again.
    apply(&admin, &endpoint_slice("two", a.addr)).await;
    apply(&admin, &plain_ingress("two")).await;
    eventually("the route moved to Service two", || async {
        answered_by(&web, &controller, host).await == "a"
    })
    .await;
    change_endpoints(&controller, &admin, &endpoint_slice("one", b.addr)).await;
    for _ in 0..4 {
        assert_eq!(answered_by(&web, &controller, host).await, "a");
    }
}
