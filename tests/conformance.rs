//! The Gateway API conformance suite (`sigs.k8s.io/gateway-api/conformance`, built from
//! its Go module) judging `portcullis run` on a real API server. There is no kubelet
//! here, so a small node stand-in runs the suite's backends: for every Deployment it
//! starts that many `echo-basic` processes (the suite's own echo server, built from
//! the same module) with the Pod name and namespace they would have, writes those
//! Pods marked Ready (the suite waits for them) and an EndpointSlice per process for
//! each Service selecting them. The Pods are on a Node whose kubelet is a stand-in
//! too (`kubelet`), serving each process's output as its Pod's log, which the
//! mirror tests read. Each Gateway gets a loopback address of its own
//! (`--gateway-addresses`, a range picked per run so runs in parallel do not meet),
//! where its listeners are opened at their ports: 80 and 443 mostly, so the run needs
//! root (or CAP_NET_BIND_SERVICE).
//!
//! The suite runs the GATEWAY-HTTP profile: every test of the features the
//! GatewayClass claims but those in `SKIPPED`, and writes upstream's
//! `ConformanceReport`, kept as `conformance/report-<version>.yaml`. The tests listed in
//! `tests/gateway/conformance-passing.txt` (the README lists them) must pass; a report
//! that differs from the kept one (its `date` aside) is written over it, to be reviewed
//! and committed, without failing the run (a test outside the list may pass or fail by
//! timing). `PORTCULLIS_CONFORMANCE=NameA|NameB` runs only those tests (no report
//! kept); `PORTCULLIS_CONFORMANCE_FEATURES=FeatureA,FeatureB` claims more features for
//! the run, to see what their tests need. The suite's whole output is saved and its
//! path printed.

use crate::common;

mod kubelet;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::cluster::{ControlPlane, apply, gateway_crds, host_address};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;

const RENDERED: &str = include_str!("../deploy/portcullis.yaml");
const PASSING: &str = include_str!("gateway/conformance-passing.txt");
/// The upstream report of the last full run, kept in the repository.
const REPORT: &str = "conformance/report-v1.6.3.yaml";
/// Tests of claimed features this stand-in cannot run, and why (the report lists them
/// as skipped).
const SKIPPED: &[(&str, &str)] = &[(
    "HTTPRouteServiceTypes",
    "builds EndpointSlices from the backends' Pod IP addresses; without a kubelet there are no Pods (the kind run covers it)",
)];

fn built() -> PathBuf {
    let out = Command::new("tests/gateway/build-conformance.sh")
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/gateway/build-conformance.sh");
    assert!(
        out.status.success(),
        "building the conformance suite failed"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One backend process standing in for a Pod.
struct Echo {
    child: Child,
    http: u16,
    h2c: u16,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node stand-in: Deployments become processes, Services get EndpointSlices.
struct Node {
    echo_basic: PathBuf,
    ip: std::net::IpAddr,
    pods: HashMap<(String, String), Vec<Echo>>,
    written: HashMap<(String, String), String>,
    /// Deployments whose Pod objects are written and Ready.
    published: std::collections::HashSet<(String, String)>,
    /// Each process's output, which the kubelet stand-in serves as its Pod's log.
    logs: PathBuf,
}

impl Node {
    async fn sync(&mut self, client: &kube::Client) {
        let Ok(deployments) = Api::<Deployment>::all(client.clone())
            .list(&Default::default())
            .await
        else {
            return;
        };
        let mut labels: Vec<((String, String), BTreeMap<String, String>)> = Vec::new();
        for d in deployments {
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            let name = d.metadata.name.clone().unwrap_or_default();
            let Some(spec) = d.spec.as_ref() else {
                continue;
            };
            let env: Vec<String> = spec
                .template
                .spec
                .iter()
                .flat_map(|p| &p.containers)
                .flat_map(|c| c.env.iter().flatten())
                .map(|e| e.name.clone())
                .collect();
            // Only the plain HTTP echo servers: TLS, gRPC and TCP backends need files
            // and protocols the stand-in does not provide.
            if env
                .iter()
                .any(|e| e.starts_with("TLS_") || e == "GRPC_ECHO_SERVER" || e == "TCP_ECHO_SERVER")
            {
                continue;
            }
            let replicas = spec.replicas.unwrap_or(1).clamp(1, 2) as usize;
            let key = (ns.clone(), name.clone());
            if !self.pods.contains_key(&key) {
                let mut echoes = Vec::new();
                for i in 0..replicas {
                    let (http, h2c) = (free_port(), free_port());
                    let pod = format!("{name}-sim-{i}");
                    let log = std::fs::File::create(kubelet::log_file(&self.logs, &ns, &pod))
                        .expect("the echo server's log file");
                    let child = Command::new(&self.echo_basic)
                        // `deployment-<replicaset>-<pod>`, the shape the suite reads the
                        // backend's name from.
                        .env("POD_NAME", format!("{name}-sim-{i}"))
                        .env("NAMESPACE", &ns)
                        .env("HTTP_PORT", http.to_string())
                        .env("H2C_PORT", h2c.to_string())
                        .stdout(log)
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("echo-basic");
                    echoes.push(Echo { child, http, h2c });
                }
                self.pods.insert(key.clone(), echoes);
            }
            if !self.published.contains(&key) {
                let template = spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone());
                let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
                // On the kubelet stand-in's Node, so the API server serves their logs.
                pod_spec.node_name = Some(kubelet::NODE.into());
                let names: Vec<String> = (0..replicas).map(|i| format!("{name}-sim-{i}")).collect();
                if publish_pods(client, &ns, &names, template, pod_spec, self.ip).await {
                    self.published.insert(key.clone());
                }
            }
            labels.push((
                key,
                spec.template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default(),
            ));
        }
        let Ok(services) = Api::<Service>::all(client.clone())
            .list(&Default::default())
            .await
        else {
            return;
        };
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let Some((key, _)) = labels.iter().find(|((dns, _), l)| {
                *dns == ns && selector.iter().all(|(k, v)| l.get(k) == Some(v))
            }) else {
                continue;
            };
            let Some(echoes) = self.pods.get(key) else {
                continue;
            };
            let mut yaml = String::new();
            for (i, echo) in echoes.iter().enumerate() {
                let ports: Vec<String> = spec
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| {
                        let target = match &p.target_port {
                            Some(
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                                    3001,
                                ),
                            ) => echo.h2c,
                            _ => echo.http,
                        };
                        format!(
                            "{{name: \"{}\", port: {target}}}",
                            p.name.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                yaml.push_str(&format!(
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-sim{i}, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n",
                    ports.join(", "),
                    self.ip
                ));
            }
            let skey = (ns.clone(), name.clone());
            if self.written.get(&skey) != Some(&yaml) {
                apply(client, &yaml).await;
                self.written.insert(skey, yaml);
            }
        }
    }
}

/// The Pod objects of a Deployment's processes, Ready at this machine's address: the
/// suite waits for Ready Pods in its namespaces before it starts. There is no
/// kubelet, so nothing runs them; the processes do. False until every one is written.
async fn publish_pods(
    client: &kube::Client,
    ns: &str,
    names: &[String],
    labels: Option<BTreeMap<String, String>>,
    spec: PodSpec,
    ip: std::net::IpAddr,
) -> bool {
    use kube::api::{Patch, PatchParams, PostParams};
    // The ServiceAccount admission wants the account a controller would have made.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = accounts.create(&PostParams::default(), &account).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    for name in names {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: labels.clone(),
                ..Default::default()
            },
            spec: Some(spec.clone()),
            status: None,
        };
        if let Err(e) = pods.create(&PostParams::default(), &pod).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 409)
        {
            eprintln!("node stand-in: Pod {ns}/{name}: {e}");
            return false;
        }
        if let Err(e) = pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            eprintln!("node stand-in: Pod {ns}/{name} status: {e}");
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_conformance_suite_passes_its_listed_tests() {
    let ip = host_address();
    // A loopback range of this run's own, which its Gateways' listeners are opened in.
    let range = format!("127.{}.0.0/24", 20 + std::process::id() % 200);
    let probe = range.replace(".0/24", ".1");
    if let Err(e) = std::net::TcpListener::bind((probe.as_str(), 80)) {
        panic!(
            "the conformance suite opens the Gateways' listeners at port 80 and 443 (as root): {e}"
        );
    }
    let out = built();
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    apply(&admin, &gateway_crds()).await;
    apply(&admin, RENDERED).await;
    apply(
        &admin,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: portcullis.dev/gateway-controller}\n",
    )
    .await;
    let kubeconfig = cp.controller_kubeconfig();
    let address = ip.to_string();
    let _proxy = Portcullis::launch_with_env(
        &[
            "run".as_ref(),
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--https".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--gateway-addresses".as_ref(),
            range.as_ref(),
            "--admin".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--publish-address".as_ref(),
            address.as_ref(),
        ],
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("POD_NAMESPACE", "portcullis-system".as_ref()),
            ("POD_NAME", "conformance".as_ref()),
        ],
    );
    let echo_logs = TempDir::new("echo-logs");
    let kubelet = kubelet::Kubelet::start(ip, echo_logs.path().to_owned()).await;
    kubelet.register(&admin, ip).await;
    let mut node = Node {
        echo_basic: out.join("echo-basic"),
        ip,
        pods: HashMap::new(),
        written: HashMap::new(),
        published: Default::default(),
        logs: echo_logs.path().to_owned(),
    };
    let node_client = admin.clone();
    let node_task = tokio::spawn(async move {
        loop {
            node.sync(&node_client).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });

    // The suite reads the features to test from the GatewayClass status.
    let classes: Api<kube::api::DynamicObject> = Api::all_with(
        admin.clone(),
        &kube::api::ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: "v1".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "GatewayClass".into(),
            plural: "gatewayclasses".into(),
        },
    );
    eventually("the GatewayClass lists its features", || async {
        classes
            .get("portcullis")
            .await
            .is_ok_and(|c| c.data["status"]["supportedFeatures"].is_array())
    })
    .await;
    let passing: Vec<&str> = PASSING
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // PORTCULLIS_CONFORMANCE: test names joined by `|`; the whole profile when unset.
    let chosen = std::env::var("PORTCULLIS_CONFORMANCE").ok();
    let run = match chosen.as_deref() {
        Some(names) => format!("TestConformance/^({names})$"),
        None => "TestConformance".to_owned(),
    };
    // Claimed features come from the GatewayClass status (the suite reads them there);
    // PORTCULLIS_CONFORMANCE_FEATURES adds some for one run.
    let extra = std::env::var("PORTCULLIS_CONFORMANCE_FEATURES").unwrap_or_default();
    let mut feature_args = Vec::new();
    if !extra.is_empty() {
        let class = classes.get("portcullis").await.unwrap();
        let mut features: Vec<String> = class.data["status"]["supportedFeatures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect();
        features.extend(extra.split(',').map(str::to_owned));
        feature_args = vec!["-supported-features".to_owned(), features.join(",")];
    }
    let keep_report = chosen.is_none() && extra.is_empty();
    let skipped: Vec<&str> = SKIPPED.iter().map(|(name, _)| *name).collect();
    let report = std::env::temp_dir().join(format!(
        "portcullis-conformance-{}.yaml",
        std::process::id()
    ));
    let started = std::time::Instant::now();
    let admin_kubeconfig = cp.admin_kubeconfig();
    let report_arg = report.display().to_string();
    let usable = range.replace(".0/24", ".250");
    let suite = tokio::task::spawn_blocking(move || {
        Command::new(out.join("conformance.test"))
            .args([
                "-test.run",
                &run,
                "-test.v",
                "-test.timeout",
                "40m",
                "-gateway-class",
                "portcullis",
                "-allow-crds-mismatch",
                "-conformance-profiles",
                "GATEWAY-HTTP",
                "-skip-tests",
                &skipped.join(","),
                "-cleanup-base-resources=false",
                "-organization",
                "portcullis-dev",
                "-project",
                "portcullis",
                "-url",
                "https://github.com/portcullis-dev/portcullis",
                "-version",
                env!("CARGO_PKG_VERSION"),
                "-contact",
                "https://github.com/portcullis-dev/portcullis/issues",
                "-report-output",
                &report_arg,
                // GatewayStaticAddresses: one of the run's range, and one outside it.
                "-usable-address",
                &usable,
                "-unusable-address",
                "198.51.100.7",
            ])
            .args(&feature_args)
            .env("KUBECONFIG", admin_kubeconfig)
            .output()
            .expect("conformance.test")
    })
    .await
    .unwrap();
    node_task.abort();
    eprintln!("the suite ran for {:?}", started.elapsed());
    let log = String::from_utf8_lossy(&suite.stdout);
    let saved =
        std::env::temp_dir().join(format!("portcullis-conformance-{}.log", std::process::id()));
    std::fs::write(&saved, log.as_bytes()).unwrap();
    eprintln!("the suite's output: {}", saved.display());
    let results: Vec<(String, bool)> = log
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (ok, rest) = if let Some(r) = l.strip_prefix("--- PASS: TestConformance/") {
                (true, r)
            } else if let Some(r) = l.strip_prefix("--- FAIL: TestConformance/") {
                (false, r)
            } else {
                return None;
            };
            let name = rest.split_whitespace().next()?;
            (!name.contains('/')).then(|| (name.to_owned(), ok))
        })
        .collect();
    for (name, ok) in &results {
        eprintln!("{} {name}", if *ok { "PASS" } else { "FAIL" });
    }
    if chosen.is_some() {
        return;
    }
    for name in &passing {
        let got = results.iter().find(|(n, _)| n == name);
        assert!(
            got.is_some_and(|(_, ok)| *ok),
            "conformance test {name} did not pass ({got:?}); the suite's output ends:\n{}",
            log.lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if keep_report {
        let fresh = std::fs::read_to_string(&report).expect("the suite wrote its report");
        check_kept_report(&fresh);
    }
}

/// The kept report stays as it is when only its `date` differs from this run's;
/// otherwise this run's is written over it and the test fails, to be reviewed.
fn check_kept_report(fresh: &str) {
    let without_date = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with("date:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let kept = std::fs::read_to_string(REPORT).unwrap_or_default();
    if without_date(&kept) == without_date(fresh) {
        return;
    }
    // Written, not failed: the passing list above is the contract, and a test outside
    // it that passes or fails by timing must not fail a run. The diff shows up in git.
    std::fs::write(REPORT, fresh).unwrap();
    eprintln!(
        "the conformance report changed; this run's is written to {REPORT}: review it (git diff) and commit it"
    );
}
