//! The kubelet's log endpoint, stood in for: the suite reads the mirror backends'
//! Pod logs (`kubectl logs`), which the API server fetches from the kubelet of the
//! Pod's Node. The node stand-in registers a Node whose kubelet is this HTTPS server,
//! puts its Pods on it, and writes each `echo-basic` process's output to a file this
//! server answers with.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Node;
use kube::Api;

/// The Node the stand-in's Pods run on.
pub const NODE: &str = "portcullis-sim";

pub struct Kubelet {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a Pod's output is written and read from.
pub fn log_file(dir: &Path, ns: &str, pod: &str) -> PathBuf {
    dir.join(format!("{ns}_{pod}.log"))
}

impl Kubelet {
    /// Serves `GET /containerLogs/<ns>/<pod>/<container>` from `dir` on `ip`. The API
    /// server checks no kubelet certificate unless given a CA, so a self-signed one
    /// does.
    pub async fn start(ip: std::net::IpAddr, dir: PathBuf) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = acceptor(&ip.to_string());
        let dir = Arc::new(dir);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, dir) = (acceptor.clone(), dir.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| logs(dir.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { port, task }
    }

    /// Registers the Node, its kubelet at this server.
    pub async fn register(&self, client: &kube::Client, ip: std::net::IpAddr) {
        use kube::api::{Patch, PatchParams, PostParams};
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": NODE},
        }))
        .unwrap();
        let _ = nodes.create(&PostParams::default(), &node).await;
        let status = serde_json::json!({"status": {
            "addresses": [{"type": "InternalIP", "address": ip.to_string()}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        nodes
            .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("the stand-in Node's status");
    }
}

async fn logs(
    dir: Arc<PathBuf>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let parts: Vec<&str> = req.uri().path().split('/').collect();
    let answer = match parts.as_slice() {
        ["", "containerLogs", ns, pod, _container] => std::fs::read(log_file(&dir, ns, pod)).ok(),
        _ => None,
    };
    Ok(match answer {
        Some(text) => Response::new(Full::new(Bytes::from(text))),
        None => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"no such log")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

fn acceptor(host: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
