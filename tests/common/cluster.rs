//! A real Kubernetes control plane for the tests (tests/apiserver/start.sh), and
//! server-side apply of manifests the way `kubectl apply --server-side` does it.

use std::path::PathBuf;
use std::process::Command;

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Scope, pinned_kind};

use super::TempDir;

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
        if let Ok(pids) = std::fs::read_to_string(self.dir.path().join("pids")) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
    }
}

/// Applies every document of `yaml` (server-side apply, field manager
/// `portcullis-tests`), retrying while a just-created CRD is not yet served.
pub async fn apply(client: &kube::Client, yaml: &str) {
    for doc in serde_saphyr::from_multiple::<serde_json::Value>(yaml).unwrap() {
        if doc.is_null() {
            continue;
        }
        let api_version = doc["apiVersion"].as_str().unwrap().to_owned();
        let kind = doc["kind"].as_str().unwrap().to_owned();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let mut last = String::new();
        for _ in 0..100 {
            match pinned_kind(client, &gvk).await {
                Ok((resource, caps)) => {
                    let api: Api<DynamicObject> = match caps.scope {
                        Scope::Namespaced => {
                            Api::namespaced_with(client.clone(), &namespace, &resource)
                        }
                        Scope::Cluster => Api::all_with(client.clone(), &resource),
                    };
                    let params = PatchParams::apply("portcullis-tests").force();
                    match api.patch(&name, &params, &Patch::Apply(&doc)).await {
                        Ok(_) => {
                            last.clear();
                            break;
                        }
                        Err(e) => last = format!("{e}"),
                    }
                }
                Err(e) => last = format!("{e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            last.is_empty(),
            "applying {kind} {namespace}/{name}: {last}"
        );
    }
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
