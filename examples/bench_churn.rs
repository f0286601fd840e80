//! The churn benchmark's cluster side, against a real API server (bench/churn.sh
//! starts one and `portcullis run`). The API server refuses loopback addresses in
//! EndpointSlices and the benchmark sends traffic only on loopback, so the route under
//! load (app0) is an ExternalName Service for `localhost`, and the changed slices
//! hold addresses nobody dials.
//!   setup KUBECONFIG APPS RULES BACKEND_PORT
//!       the CRD, 100 namespaces, APPS Ingresses (host appN.example.com), Services and
//!       EndpointSlices, RULES AuthRules with their Secrets.
//!   latency KUBECONFIG LOG_FILE TIMES
//!       changes app1's EndpointSlice TIMES times and reads, from Portcullis's log, when
//!       each change was installed (the "configuration installed" line is written once
//!       the new snapshot is live): the time from the API server's answer to then.
//!   churn KUBECONFIG APPS RATE SECONDS
//!       changes RATE EndpointSlices a second, round the apps, for SECONDS.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt as _};
use portcullis::model::AuthRule;
use serde::de::DeserializeOwned;
use serde_json::json;

const NAMESPACES: usize = 100;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).expect("missing argument") };
    let num = |i: usize| -> u64 { arg(i).parse().expect("a number") };
    let client = client(arg(1)).await;
    match arg(0) {
        "setup" => setup(client, num(2) as usize, num(3) as usize, num(4) as u16).await,
        "latency" => latency(client, arg(2), num(3) as usize).await,
        "churn" => churn(client, num(2) as usize, num(3), num(4)).await,
        other => panic!("unknown mode {other}"),
    }
}

async fn client(kubeconfig: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a kubeconfig that works");
    Client::try_from(config).expect("a client")
}

fn ns(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

fn from<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// An address for app `i` that nobody dials (the measured route is app0's).
fn unused_address(i: usize, generation: u64) -> String {
    format!(
        "10.{}.{}.{}",
        (generation % 200) + 1,
        i / 256 % 256,
        i % 256
    )
}

async fn setup(client: Client, apps: usize, rules: usize, backend: u16) {
    let started = Instant::now();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &AuthRule::crd())
        .await
        .expect("creating the AuthRule CRD");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for n in 0..NAMESPACES {
        let _ = namespaces
            .create(
                &PostParams::default(),
                &from(json!({"metadata": {"name": format!("ns{n}")}})),
            )
            .await;
    }
    // The CRD is served a moment after it is created.
    let rules_api = |n: &str| Api::<AuthRule>::namespaced(client.clone(), n);
    for _ in 0..100 {
        if rules_api("ns0").list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = (0..apps).map(|i| {
        let client = client.clone();
        async move {
            let n = ns(i);
            let pp = PostParams::default();
            let (service, port) = if i == 0 {
                let spec = json!({"type": "ExternalName", "externalName": "localhost",
                                  "ports": [{"name": "http", "port": backend}]});
                (spec, backend)
            } else {
                (json!({"ports": [{"name": "http", "port": 80}]}), 80)
            };
            Api::<Service>::namespaced(client.clone(), &n)
                .create(&pp, &from(json!({
                    "metadata": {"name": format!("app{i}")},
                    "spec": service
                })))
                .await
                .expect("creating a Service");
            Api::<EndpointSlice>::namespaced(client.clone(), &n)
                .create(&pp, &from(json!({
                    "metadata": {"name": format!("app{i}-1"), "labels": {"kubernetes.io/service-name": format!("app{i}")}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 8080}],
                    "endpoints": [{"addresses": [unused_address(i, 0)]}]
                })))
                .await
                .expect("creating an EndpointSlice");
            Api::<Ingress>::namespaced(client.clone(), &n)
                .create(&pp, &from(json!({
                    "metadata": {"name": format!("app{i}")},
                    "spec": {"ingressClassName": "portcullis", "rules": [{
                        "host": format!("app{i}.example.com"),
                        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": format!("app{i}"), "port": {"number": port}}}}]}
                    }]}
                })))
                .await
                .expect("creating an Ingress");
            // The measured route (app0) stays unguarded; the rules guard the next ones.
            if (1..=rules).contains(&i) {
                Api::<Secret>::namespaced(client.clone(), &n)
                    .create(&pp, &from(json!({
                        "metadata": {"name": format!("idp{i}")},
                        "stringData": {"client-secret": format!("s{i}")}
                    })))
                    .await
                    .expect("creating a Secret");
                Api::<AuthRule>::namespaced(client.clone(), &n)
                    .create(&pp, &from(json!({
                        "apiVersion": "portcullis.dev/v1alpha1", "kind": "AuthRule",
                        "metadata": {"name": format!("sso{i}")},
                        "spec": {"targetRefs": [{"name": format!("app{i}")}],
                                 "oidc": {"issuer": "https://idp.example.com", "clientId": format!("app{i}"), "clientSecretRef": {"name": format!("idp{i}")}}}
                    })))
                    .await
                    .expect("creating an AuthRule");
            }
        }
    });
    futures_util::stream::iter(jobs)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!(
        "created {apps} Ingresses, Services and EndpointSlices and {rules} AuthRules with their Secrets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// app1's slice: one endpoint, ready or not.
async fn set_app1_ready(client: &Client, ready: bool) {
    Api::<EndpointSlice>::namespaced(client.clone(), &ns(1))
        .patch(
            "app1-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": [unused_address(1, 0)], "conditions": {"ready": ready}}]})),
        )
        .await
        .expect("patching app1's EndpointSlice");
}

/// The time of each "configuration installed" line of the log so far.
fn installs(log: &str) -> Vec<jiff::Timestamp> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("configuration installed"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

async fn latency(client: Client, log: &str, times: usize) {
    let mut results = Vec::new();
    for k in 0..times {
        let before = installs(log).len();
        set_app1_ready(&client, k % 2 == 1).await;
        let answered = jiff::Timestamp::now();
        let waited = Instant::now();
        let installed = loop {
            if let Some(t) = installs(log).get(before) {
                break Some(*t);
            }
            if waited.elapsed() > Duration::from_secs(10) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        match installed {
            Some(t) => results.push(t.duration_since(answered).as_secs_f64() * 1000.0),
            None => println!("change {k} was not installed after 10 s"),
        }
        // Let the next change stand alone, not coalesce with this one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    results.sort_by(f64::total_cmp);
    if let (Some(median), Some(max)) = (results.get(results.len() / 2), results.last()) {
        println!(
            "one EndpointSlice change, from the API server's answer to live on the data plane: median {median:.1} ms, max {max:.1} ms over {} changes (target < 50 ms)",
            results.len()
        );
    }
}

async fn churn(client: Client, apps: usize, rate: u64, secs: u64) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k = 0u64;
    let mut sent = Vec::new();
    // Each change on its own task: the rate holds even when the API server is slow.
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        k += 1;
        let i = 1 + (k as usize * 7919) % (apps - 1);
        let client = client.clone();
        sent.push(tokio::spawn(async move {
            Api::<EndpointSlice>::namespaced(client, &ns(i))
                .patch(
                    &format!("app{i}-1"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"endpoints": [{"addresses": [unused_address(i, k)]}]})),
                )
                .await
                .is_ok()
        }));
    }
    let (mut done, mut failed) = (0u64, 0u64);
    for task in sent {
        match task.await {
            Ok(true) => done += 1,
            _ => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "churn: {done} EndpointSlice changes in {elapsed:.1} s ({:.0}/s), {failed} refused by the API server",
        done as f64 / elapsed
    );
}
