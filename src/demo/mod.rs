//! `portcullis demo`: the whole login on one machine with nothing else installed. A
//! development OpenID provider and an echo backend run beside the proxy, all on
//! loopback, with `/auth*` guarded as in ALB's walkthrough.

pub mod echo;
pub mod provider;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::auth::identity::{IdentityError, SigningKey};
use crate::auth::idp::IdpClient;
use crate::auth::login::Authenticator;
use crate::auth::sealed::KeyRing;
use crate::compile::CompileOptions;
use crate::diagnostics::ObjectRef;
use crate::listen::{Bound, ServeError, run_listeners};
use crate::observe::access_log::{AccessLog, LogFormat};
use crate::proxy::{Body, DataPlane, ProxyConfig};
use crate::reload::apply;
use crate::source::manifests::{add_document, parse_documents};
use crate::store::Objects;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot listen on 127.0.0.1:{port}: {source} (pick another with --port)")]
    Bind { port: u16, source: std::io::Error },
    #[error("keys: {0}")]
    Keys(#[from] IdentityError),
    #[error("the system's certificate store: {0}")]
    Client(String),
    #[error("writing {path}: {source}")]
    PortsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub struct DemoOptions {
    /// The proxy's port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Where to write the bound addresses as JSON.
    pub ports_file: Option<std::path::PathBuf>,
}

async fn loopback(port: u16) -> Result<TcpListener, DemoError> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| DemoError::Bind { port, source })
}

/// Runs the provider, the echo backend and the proxy until the process is stopped.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    let proxy = loopback(options.port).await?;
    let admin = loopback(0).await?;
    let port = proxy
        .local_addr()
        .map_err(|source| DemoError::Bind {
            port: options.port,
            source,
        })?
        .port();
    let origins = [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ];
    let provider = provider::DevProvider::start(
        loopback(0).await?,
        origins
            .iter()
            .map(|o| format!("{o}/oauth2/idpresponse"))
            .collect(),
        origins.iter().map(|o| format!("{o}/")).collect(),
    )?;
    let backend = loopback(0).await?;
    let backend_addr = backend
        .local_addr()
        .map_err(|source| DemoError::Bind { port: 0, source })?;
    echo::start(backend);

    let objects = demo_objects(&provider, backend_addr, &origins);
    let auth = demo_authenticator()?;
    let log = AccessLog::start(LogFormat::Alb, Box::new(std::io::stdout()));
    let dp = DataPlane::new(ProxyConfig::default(), log, auth);
    dp.spawn_flow_sweeper();
    let options_compile = CompileOptions {
        ingress_class: "portcullis".into(),
        ..CompileOptions::default()
    };
    apply(&dp, &objects, &options_compile);

    let bound = Bound {
        http: Some(proxy),
        https: None,
        https_offloaded: None,
        admin: Some(admin),
    };
    let addresses = bound.describe();
    if let Some(path) = &options.ports_file {
        std::fs::write(path, addresses.to_string()).map_err(|source| DemoError::PortsFile {
            path: path.clone(),
            source,
        })?;
    }
    print_banner(
        &origins[0],
        &provider.issuer,
        addresses["admin"].as_str().unwrap_or("-"),
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    run_listeners(dp, bound, shutdown).await?;
    Ok(())
}

/// The demo's AuthRule, Ingress and Services, read as `-f` would read them.
fn demo_objects(
    provider: &provider::DevProvider,
    backend_addr: std::net::SocketAddr,
    origins: &[String],
) -> Objects {
    let mut objects = Objects::default();
    let text = manifests(
        &provider.issuer,
        backend_addr,
        &provider.client_secret,
        origins,
    );
    let source = ObjectRef::new("File", "", "demo");
    for doc in parse_documents(&text).unwrap_or_default() {
        add_document(&mut objects, doc, &source);
    }
    objects
}

/// An authenticator with fresh keys: demo sessions do not outlive the process.
fn demo_authenticator() -> Result<Authenticator, DemoError> {
    let mut session_key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut session_key).map_err(|_| IdentityError::Random)?;
    let auth = Authenticator::new(
        IdpClient::new(std::time::Duration::from_secs(5))
            .map_err(|e| DemoError::Client(e.to_string()))?,
        KeyRing::new(&[session_key.to_vec()]).ok_or(IdentityError::Random)?,
        SigningKey::generate()?,
        crate::auth::identity::DEFAULT_SIGNER.into(),
        crate::auth::shared::SharedState::in_process(),
    );
    auth.providers().spawn_refresher();
    Ok(auth)
}

fn print_banner(origin: &str, issuer: &str, admin: &str) {
    eprintln!(
        "\nPortcullis demo: everything on this machine, development use only.\n\n  Open   {origin}/auth   and log in with any name (no password).\n  Open   {origin}/       to see an unguarded page.\n\n  provider  {issuer}  (development only, loopback)\n  metrics   http://{admin}/metrics\n  keys      http://{admin}/keys\n\nAccess log lines follow. Stop with Ctrl-C.\n"
    );
}

/// Request bodies of the demo's servers (login and token forms) are small.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A request with its body read (up to `MAX_FORM_BYTES`).
pub struct Received {
    pub parts: http::request::Parts,
    pub body: Bytes,
}

/// Serves HTTP/1.1 on `listener` with `handler` until the task is dropped.
pub async fn serve<H, F>(listener: TcpListener, handler: Arc<H>)
where
    H: Fn(Received) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = match Limited::new(body, MAX_FORM_BYTES).collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    Ok::<_, Infallible>(handler(Received { parts, body }).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The manifests the demo serves: every host to the echo backend, `/auth*` guarded by
/// the development provider.
pub fn manifests(
    issuer: &str,
    backend: std::net::SocketAddr,
    client_secret: &str,
    origins: &[String],
) -> String {
    let home: Vec<String> = origins.iter().map(|o| format!("\"{o}/\"")).collect();
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: echo, namespace: demo}}
spec:
  ingressClassName: portcullis
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: echo, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: demo}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: demo
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: demo, namespace: demo}}
spec:
  targetRefs: [{{name: echo}}]
  paths: ["/auth*"]
  oidc:
    issuer: {issuer}
    clientId: {client_id}
    clientSecretRef: {{name: demo-idp}}
    scope: openid email profile
  logout: {{postLogoutRedirectUris: [{home}]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: demo-idp, namespace: demo}}
stringData: {{client-secret: {client_secret}}}
"#,
        port = backend.port(),
        ip = backend.ip(),
        client_id = provider::DEMO_CLIENT_ID,
        home = home.join(", "),
    )
}
