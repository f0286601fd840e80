//! The Gateway API conformance suite (`sigs.k8s.io/gateway-api/conformance`, built from
//! its Go module) judging `portcullis run` on a real API server. There is no kubelet
//! here, so a small node stand-in runs the suite's backends: for every Deployment it
//! starts that many `echo-basic` processes (the suite's own echo server, built from
//! the same module) with the Pod name and namespace they would have, writes those
//! Pods marked Ready (the suite waits for them) and an EndpointSlice per process for
//! each Service selecting them. A backend that mounts a Secret (the TLS echo servers)
//! gets that Secret's files written where its environment points. Each Pod has an
//! address of its own (`198.18.<run>.n`, made local with a route on `lo` for the run)
//! answering at the container ports, so EndpointSlices the suite builds from Pod IPs
//! reach the Pods. The Pods are on a Node whose kubelet is a stand-in too
//! (`kubelet`), serving each process's output as its Pod's log, which the mirror
//! tests read. Each Gateway gets a loopback address of its own
//! (`--gateway-addresses`, a range picked per run so runs in parallel do not meet),
//! where its listeners are opened at their ports: 80 and 443 mostly, so the run needs
//! root (or CAP_NET_BIND_SERVICE).
//!
//! The suite runs the GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS profiles: every test of the features the
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
const SKIPPED: &[(&str, &str)] = &[];

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
    /// The TLS port of a backend given certificate files (target port 8443).
    tls: Option<u16>,
    /// The Pod's own address, where the container ports reach the process.
    ip: std::net::Ipv4Addr,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for relay in &self.relays {
            relay.abort();
        }
    }
}

/// Where the Pods' addresses live: `198.18.<run>.0/24` (the benchmarking range, never
/// routed elsewhere), made local to this machine with an AnyIP route on `lo` for the
/// run, since the API server refuses loopback addresses in EndpointSlices and a Pod
/// of its own address is what HTTPRouteServiceTypes reaches. The route goes with it.
struct PodNetwork {
    cidr: String,
}

impl PodNetwork {
    fn add(run: u8) -> Self {
        let cidr = format!("198.18.{run}.0/24");
        let out = Command::new("ip")
            .args(["route", "replace", "local", &cidr, "dev", "lo"])
            .output()
            .expect("ip (iproute2)");
        assert!(
            out.status.success(),
            "the node stand-in routes {cidr} to this machine for its Pods (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PodNetwork { cidr }
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", "local", &self.cidr, "dev", "lo"])
            .output();
    }
}

/// The container ports of the suite's echo Pods: HTTP and h2c.
const CONTAINER_PORTS: [u16; 2] = [3000, 3001];

/// The Pod's network: `echo-basic` listens on every address at a port of its own (it
/// takes only a port), so the Pod's address answers at the container ports by
/// relaying each connection there. What the suite builds from Pod IPs (the manual
/// EndpointSlices of HTTPRouteServiceTypes) reaches the Pod as it would in a cluster.
fn relay_pod_ports(
    ip: std::net::Ipv4Addr,
    http: u16,
    h2c: u16,
) -> Vec<tokio::task::JoinHandle<()>> {
    CONTAINER_PORTS
        .into_iter()
        .zip([http, h2c])
        .map(|(port, to)| {
            let listener = std::net::TcpListener::bind((ip, port))
                .unwrap_or_else(|e| panic!("node stand-in: Pod address {ip}:{port}: {e}"));
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            })
        })
        .collect()
}

/// The node stand-in: Deployments become processes, Services get EndpointSlices.
struct Node {
    echo_basic: PathBuf,
    ip: std::net::IpAddr,
    /// Pod addresses are handed out from this run's [`PodNetwork`], one per process.
    pod_network: u8,
    pods_started: u32,
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
            // echo-basic's gRPC mode serves gRPC in the clear at HTTP_PORT (the
            // Services' targetPort 3000), which the slices below point at.
            let grpc = env.iter().any(|e| e == "GRPC_ECHO_SERVER");
            let replicas = spec.replicas.unwrap_or(1).clamp(1, 2) as usize;
            let key = (ns.clone(), name.clone());
            if !self.pods.contains_key(&key) {
                // Backends that serve TLS wait until the objects they mount exist.
                let Some(tls_env) = tls_backend_env(client, &ns, &name, spec).await else {
                    continue;
                };
                let mut echoes = Vec::new();
                for i in 0..replicas {
                    let (http, h2c) = (free_port(), free_port());
                    let tls = (!tls_env.is_empty()).then(free_port);
                    let pod = format!("{name}-sim-{i}");
                    let log = std::fs::File::create(kubelet::log_file(&self.logs, &ns, &pod))
                        .expect("the echo server's log file");
                    let mut command = Command::new(&self.echo_basic);
                    if grpc {
                        command.env("GRPC_ECHO_SERVER", "1");
                    }
                    command
                        // `deployment-<replicaset>-<pod>`, the shape the suite reads the
                        // backend's name from.
                        .env("POD_NAME", format!("{name}-sim-{i}"))
                        .env("NAMESPACE", &ns)
                        .env("HTTP_PORT", http.to_string())
                        .env("H2C_PORT", h2c.to_string())
                        .envs(tls_env.iter().map(|(k, v)| (k, v)));
                    if let Some(tls) = tls {
                        // echo-basic's HTTPS port, and its TCP echo server's two ports.
                        command
                            .env("HTTPS_PORT", tls.to_string())
                            .env("TLS_PORT", tls.to_string())
                            .env("TCP_PORT", http.to_string());
                    }
                    let child = command
                        .stdout(log)
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("echo-basic");
                    let n = self.pods_started;
                    self.pods_started += 1;
                    assert!(n < 254, "node stand-in: the Pod network is full");
                    let pod_ip = std::net::Ipv4Addr::new(198, 18, self.pod_network, 1 + n as u8);
                    let relays = relay_pod_ports(pod_ip, http, h2c);
                    echoes.push(Echo {
                        child,
                        http,
                        h2c,
                        tls,
                        ip: pod_ip,
                        relays,
                    });
                }
                self.pods.insert(key.clone(), echoes);
            }
            if !self.published.contains(&key) {
                let template = spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone());
                let pod_spec = PodSpec {
                    node_name: Some(kubelet::NODE.into()),
                    ..spec.template.spec.clone().unwrap_or_default()
                };
                let pods: Vec<(String, std::net::Ipv4Addr)> = self.pods[&key]
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (format!("{name}-sim-{i}"), e.ip))
                    .collect();
                if publish_pods(client, &ns, &pods, template, pod_spec).await {
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
                        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                        let target = match (&p.target_port, echo.tls) {
                            (Some(IntOrString::Int(3001)), _) => echo.h2c,
                            (Some(IntOrString::Int(8443)), Some(tls)) => tls,
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

/// The environment a backend's container sets with literal values (its certificate
/// files, `TCP_ECHO_SERVER`), each path under a Secret or ConfigMap volume's mount
/// pointing at a file written from that object, as the kubelet would mount it. Empty
/// for a backend without such volumes; `None` while an object it mounts is missing.
async fn tls_backend_env(
    client: &kube::Client,
    ns: &str,
    name: &str,
    spec: &k8s_openapi::api::apps::v1::DeploymentSpec,
) -> Option<Vec<(String, String)>> {
    let Some(pod) = spec.template.spec.as_ref() else {
        return Some(Vec::new());
    };
    let Some(container) = pod.containers.first() else {
        return Some(Vec::new());
    };
    let mounts_files =
        (pod.volumes.iter().flatten()).any(|v| v.secret.is_some() || v.config_map.is_some());
    if !mounts_files {
        return Some(Vec::new());
    }
    let dir = std::env::temp_dir()
        .join(format!("portcullis-conformance-{}", std::process::id()))
        .join(format!("{ns}-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let Some(value) = var.value.clone() else {
            continue;
        };
        let mounted = (container.volume_mounts.iter().flatten())
            .any(|m| value.starts_with(&format!("{}/", m.mount_path)));
        if !mounted {
            env.push((var.name.clone(), value));
            continue;
        }
        let bytes = mounted_file(client, ns, pod, container, &value).await?;
        let written = dir.join(&var.name);
        std::fs::write(&written, bytes).unwrap();
        env.push((var.name.clone(), written.display().to_string()));
    }
    Some(env)
}

/// The content of the file at `path` in `container`: the item of the Secret or
/// ConfigMap volume mounted there, read from the API server.
async fn mounted_file(
    client: &kube::Client,
    ns: &str,
    pod: &PodSpec,
    container: &k8s_openapi::api::core::v1::Container,
    path: &str,
) -> Option<Vec<u8>> {
    use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Secret};
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.starts_with(&format!("{}/", m.mount_path)))?;
    let file = &path[mount.mount_path.len() + 1..];
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    let key_of = |items: Option<&Vec<KeyToPath>>| {
        items
            .into_iter()
            .flatten()
            .find(|i| i.path == file)
            .map_or_else(|| file.to_owned(), |i| i.key.clone())
    };
    if let Some(s) = &volume.secret {
        let name = s.secret_name.as_deref()?;
        let secret = Api::<Secret>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .ok()?;
        Some(secret.data?.get(&key_of(s.items.as_ref()))?.0.clone())
    } else {
        let c = volume.config_map.as_ref()?;
        let map = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(&c.name)
            .await
            .ok()?;
        Some(
            map.data?
                .get(&key_of(c.items.as_ref()))?
                .clone()
                .into_bytes(),
        )
    }
}

/// The Pod objects of a Deployment's processes, Ready at their own addresses: the
/// suite waits for Ready Pods in its namespaces before it starts. There is no
/// kubelet, so nothing runs them; the processes do. False until every one is written.
async fn publish_pods(
    client: &kube::Client,
    ns: &str,
    pods_and_ips: &[(String, std::net::Ipv4Addr)],
    labels: Option<BTreeMap<String, String>>,
    spec: PodSpec,
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
    for (name, ip) in pods_and_ips {
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
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
    let pod_network = 20 + (std::process::id() % 200) as u8;
    let range = format!("127.{pod_network}.0.0/24");
    let probe = range.replace(".0/24", ".1");
    if let Err(e) = std::net::TcpListener::bind((probe.as_str(), 80)) {
        panic!(
            "the conformance suite opens the Gateways' listeners at port 80 and 443 (as root): {e}"
        );
    }
    let _pod_network = PodNetwork::add(pod_network);
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
        pod_network,
        pods_started: 0,
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
        Some(names) => format!("^TestConformance$/^({names})$"),
        None => "^TestConformance$".to_owned(),
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
                "GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS",
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
/// otherwise this run's is written over it, to be reviewed and committed.
fn check_kept_report(fresh: &str) {
    // The suite writes its profiles in no fixed order: compared by name, date aside.
    let comparable = |text: &str| -> Option<serde_json::Value> {
        let mut report: serde_json::Value = serde_saphyr::from_str(text).ok()?;
        let fields = report.as_object_mut()?;
        fields.remove("date");
        if let Some(profiles) = fields.get_mut("profiles").and_then(|p| p.as_array_mut()) {
            profiles.sort_by_key(|p| p["name"].as_str().unwrap_or_default().to_owned());
        }
        Some(report)
    };
    let kept = std::fs::read_to_string(REPORT).unwrap_or_default();
    if comparable(&kept).is_some() && comparable(&kept) == comparable(fresh) {
        return;
    }
    // Written, not failed: the passing list above is the contract, and a test outside
    // it that passes or fails by timing must not fail a run. The diff shows up in git.
    std::fs::write(REPORT, fresh).unwrap();
    eprintln!(
        "the conformance report changed; this run's is written to {REPORT}: review it (git diff) and commit it"
    );
}
