//! A real Kubernetes control plane for the tests (tests/apiserver/start.sh), and
//! server-side apply of manifests the way `kubectl apply --server-side` does it.

use std::path::PathBuf;
use std::process::Command;

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Scope, pinned_kind};

use super::{Portcullis, TempDir};

pub struct ControlPlane {
    pub dir: TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ControlPlane {
    pub fn start() -> Self {
        let dir = TempDir::new("apiserver");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apiserver/start.sh");
        let out = Command::new(script)
            .arg(dir.path())
            .output()
            .expect("running start.sh");
        assert!(
            out.status.success(),
            "the control plane did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The controller's identity: the chart's ServiceAccount, so its RBAC applies.
    pub fn controller_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("controller.kubeconfig")
    }

    pub async fn admin(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.admin_kubeconfig()).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn kill(&self) {
        self.stop_apiserver();
        if let Ok(pids) = std::fs::read_to_string(self.dir.path().join("pids")) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
    }

    /// Kills kube-apiserver at once, as a crashed control-plane node would go (etcd
    /// keeps the data), and waits until it is gone.
    pub fn stop_apiserver(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("apiserver.pid")) {
            let pid = pid.trim().to_owned();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            // Gone, or a zombie whose parent (the start script) is no longer there to reap it.
            let alive = |pid: &str| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    !stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            };
            while alive(&pid) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// Starts kube-apiserver again on the same port and waits until it answers.
    pub async fn start_apiserver(&self) {
        let spawn = || {
            let child = Command::new(self.dir.path().join("apiserver.sh"))
                .spawn()
                .expect("starting kube-apiserver");
            std::fs::write(
                self.dir.path().join("apiserver.pid"),
                child.id().to_string(),
            )
            .unwrap();
            child
        };
        let mut child = spawn();
        let admin = self.admin().await;
        for _ in 0..900 {
            if admin.apiserver_version().await.is_ok() {
                // Reaped when it exits, so a later stop sees it gone.
                std::thread::spawn(move || child.wait());
                return;
            }
            // Its port, free while it was down, may have gone to an outgoing
            // connection's source port for a moment: start it again.
            if child.try_wait().ok().flatten().is_some() {
                child = spawn();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let log =
            std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "kube-apiserver did not come back in 90 s; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

/// Applies every document of `yaml` (server-side apply, field manager
/// `portcullis-tests`), retrying while a just-created CRD is not yet served.
pub async fn apply(client: &kube::Client, yaml: &str) {
    for doc in documents(yaml) {
        let mut last = String::new();
        for _ in 0..100 {
            match apply_one(client, &doc).await {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            last.is_empty(),
            "applying {}: {last}",
            doc["metadata"]["name"]
        );
    }
}

/// Applies one document once; the API server's refusal comes back as text.
pub async fn try_apply(client: &kube::Client, yaml: &str) -> Result<(), String> {
    for doc in documents(yaml) {
        apply_one(client, &doc).await?;
    }
    Ok(())
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

async fn apply_one(client: &kube::Client, doc: &serde_json::Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let (resource, caps) = pinned_kind(client, &gvk).await.map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply("portcullis-tests").force();
    api.patch(name, &params, &Patch::Apply(doc))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// This machine's first non-loopback IPv4 address: the API server refuses loopback
/// endpoints in EndpointSlices, as it would for a Pod.
pub fn host_address() -> std::net::IpAddr {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
        .expect("a non-loopback IPv4 address for the test backend")
}

/// `portcullis run` as the chart's ServiceAccount (its RBAC applies), listening on
/// ephemeral loopback ports and publishing 192.0.2.80 as the Ingress and Gateway address.
pub fn run_controller(cp: &ControlPlane, identity: &str) -> Portcullis {
    run_controller_with(cp, identity, &[])
}

/// As `run_controller`, with more arguments.
pub fn run_controller_with(cp: &ControlPlane, identity: &str, extra: &[&str]) -> Portcullis {
    let kubeconfig = cp.controller_kubeconfig();
    let mut args: Vec<&std::ffi::OsStr> = [
        "run",
        "--http",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--https",
        "127.0.0.1:0",
        "--publish-address",
        "192.0.2.80",
    ]
    .iter()
    .map(|a| a.as_ref())
    .collect();
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    Portcullis::launch_with_env(
        &args,
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("POD_NAMESPACE", "portcullis-system".as_ref()),
            ("POD_NAME", identity.as_ref()),
        ],
    )
}

/// The CustomResourceDefinitions of the Gateway API standard channel, from the
/// `sigs.k8s.io/gateway-api` Go module (`tests/gateway/crds.sh`).
pub fn gateway_crds() -> String {
    let out = Command::new("tests/gateway/crds.sh")
        .output()
        .expect("tests/gateway/crds.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap();
    let mut all = String::new();
    for entry in std::fs::read_dir(dir.trim()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if text.contains("kind: CustomResourceDefinition") {
            all.push_str("\n---\n");
            all.push_str(&text);
        }
    }
    all
}

/// The value of counter `name{result="<result>"}` on `p`'s /metrics.
pub async fn counter(p: &Portcullis, name: &str, result: &str) -> f64 {
    let series = format!("portcullis_{name}{{result=\"{result}\"}}");
    let value = super::metric_value(&p.metrics().await, &series);
    assert!(!value.is_nan(), "no {series} in /metrics");
    value
}

/// Makes the leader `p` look at the cluster again (a new, unreferenced Service in
/// `apps` is a change it watches) and waits until it has made a plan that found
/// nothing to write: the cluster's status is what Portcullis would write. A leader
/// that keeps finding writes never gets there, and this times out.
pub async fn settled(p: &Portcullis, admin: &kube::Client) {
    static NUDGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NUDGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let before = counter(p, "status_plans_total", "nothing").await;
    apply(
        admin,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: nudge-{n}, namespace: apps}}\nspec: {{ports: [{{port: 80}}]}}\n"
        ),
    )
    .await;
    super::eventually("the leader plans and finds nothing to write", || async {
        counter(p, "status_plans_total", "nothing").await > before
    })
    .await;
}

/// Waits until replica `p` has had a round of the leader election after this call in
/// which it learnt `result` (`leading`, `following`).
pub async fn lease_round(p: &Portcullis, result: &str) {
    let before = counter(p, "leader_lease_rounds_total", result).await;
    super::eventually(&format!("a lease round: {result}"), || async {
        counter(p, "leader_lease_rounds_total", result).await > before
    })
    .await;
}
