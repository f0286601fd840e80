//! The churn benchmark's cluster side, against a real API server (bench/churn.sh
//! starts one and `portcullis run`):
//!   setup KUBECONFIG APPS RULES BACKEND_PORT
//!       the CRD, 100 namespaces, APPS Ingresses (host appN.example.com), Services and
//!       EndpointSlices, RULES AuthRules with their Secrets; app0's slice points at
//!       127.0.0.1:BACKEND_PORT, the others at addresses nobody dials.
//!   latency KUBECONFIG PROXY_ADDR PORT_A PORT_B TIMES
//!       moves app0's slice between two backends (they answer with bodies of different
//!       lengths) and times each change from the API server's answer to the first
//!       response from the new backend through Portcullis.
//!   churn KUBECONFIG APPS RATE SECONDS PORT_A PORT_B
//!       changes RATE EndpointSlices a second (app0's between its two live backends,
//!       the rest to other unused addresses) for SECONDS.

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
        "latency" => {
            latency(
                client,
                arg(2),
                num(3) as u16,
                num(4) as u16,
                num(5) as usize,
            )
            .await
        }
        "churn" => {
            churn(
                client,
                num(2) as usize,
                num(3),
                num(4),
                num(5) as u16,
                num(6) as u16,
            )
            .await
        }
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
            let (address, port) = if i == 0 {
                ("127.0.0.1".to_string(), backend)
            } else {
                (unused_address(i, 0), 8080)
            };
            Api::<Service>::namespaced(client.clone(), &n)
                .create(&pp, &from(json!({
                    "metadata": {"name": format!("app{i}")},
                    "spec": {"ports": [{"name": "http", "port": 80}]}
                })))
                .await
                .expect("creating a Service");
            Api::<EndpointSlice>::namespaced(client.clone(), &n)
                .create(&pp, &from(json!({
                    "metadata": {"name": format!("app{i}-1"), "labels": {"kubernetes.io/service-name": format!("app{i}")}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": port}],
                    "endpoints": [{"addresses": [address]}]
                })))
                .await
                .expect("creating an EndpointSlice");
            Api::<Ingress>::namespaced(client.clone(), &n)
                .create(&pp, &from(json!({
                    "metadata": {"name": format!("app{i}")},
                    "spec": {"ingressClassName": "portcullis", "rules": [{
                        "host": format!("app{i}.example.com"),
                        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": format!("app{i}"), "port": {"number": 80}}}}]}
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

async fn move_app0(client: &Client, port: u16) {
    Api::<EndpointSlice>::namespaced(client.clone(), "ns0")
        .patch(
            "app0-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"ports": [{"name": "http", "port": port}]})),
        )
        .await
        .expect("patching app0's EndpointSlice");
}

/// The length of the body app0 answers with through Portcullis.
async fn body_length(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> Option<usize> {
    use http_body_util::BodyExt as _;
    let req = hyper::Request::get("/")
        .header("host", "app0.example.com")
        .body(http_body_util::Empty::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let ok = resp.status() == 200;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    ok.then_some(body.len())
}

async fn latency(client: Client, proxy: &str, port_a: u16, port_b: u16, times: usize) {
    let stream = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connecting to Portcullis");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 connection");
    tokio::spawn(conn);
    let before = body_length(&mut sender).await;
    let mut lengths = vec![before.expect("app0 answers through Portcullis")];
    let mut results = Vec::new();
    for k in 0..times {
        let port = if k % 2 == 0 { port_b } else { port_a };
        let old = *lengths.last().unwrap_or(&0);
        move_app0(&client, port).await;
        let applied = Instant::now();
        let seen = loop {
            match body_length(&mut sender).await {
                Some(len) if len != old => break Some(applied.elapsed()),
                _ if applied.elapsed() > Duration::from_secs(10) => break None,
                _ => {}
            }
        };
        match seen {
            Some(t) => results.push(t),
            None => println!("change {k} was not live after 10 s"),
        }
        lengths.push(body_length(&mut sender).await.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    results.sort();
    let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    if let (Some(median), Some(max)) = (results.get(results.len() / 2), results.last()) {
        println!(
            "one EndpointSlice change live on the data plane: median {} ms, max {} ms over {} changes (target < 50 ms)",
            ms(median),
            ms(max),
            results.len()
        );
    }
}

async fn churn(client: Client, apps: usize, rate: u64, secs: u64, port_a: u16, port_b: u16) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut done = 0u64;
    let mut failed = 0u64;
    let mut k = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        k += 1;
        let result = if k.is_multiple_of(10) {
            let port = if (k / 10).is_multiple_of(2) {
                port_a
            } else {
                port_b
            };
            Api::<EndpointSlice>::namespaced(client.clone(), "ns0")
                .patch(
                    "app0-1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"ports": [{"name": "http", "port": port}]})),
                )
                .await
        } else {
            let i = 1 + (k as usize * 7919) % (apps - 1);
            Api::<EndpointSlice>::namespaced(client.clone(), &ns(i))
                .patch(
                    &format!("app{i}-1"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"endpoints": [{"addresses": [unused_address(i, k)]}]})),
                )
                .await
        };
        match result {
            Ok(_) => done += 1,
            Err(_) => failed += 1,
        }
    }
    println!(
        "churn: {done} EndpointSlice changes in {:.1} s ({:.0}/s), {failed} refused by the API server",
        started.elapsed().as_secs_f64(),
        done as f64 / started.elapsed().as_secs_f64()
    );
}
