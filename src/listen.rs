//! The listeners: bind them (so `--ports-file` can say where), then serve traffic,
//! TLS and the admin endpoints on them until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::{DataPlane, ListenerName, server};
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    PortsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot start a data-plane worker: {source}")]
    Worker { source: std::io::Error },
}

pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub https_offloaded: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

pub struct Bound {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub https_offloaded: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, ServeError> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| ServeError::Bind { addr, source }),
    }
}

impl Listen {
    pub async fn bind(&self) -> Result<Bound, ServeError> {
        Ok(Bound {
            http: bind(self.http).await?,
            https: bind(self.https).await?,
            https_offloaded: bind(self.https_offloaded).await?,
            admin: bind(self.admin).await?,
        })
    }
}

impl Bound {
    /// The addresses actually bound (port 0 resolved), as JSON for `--ports-file`.
    pub fn describe(&self) -> serde_json::Value {
        let addr = |l: &Option<TcpListener>| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.to_string())
        };
        serde_json::json!({
            "http": addr(&self.http),
            "https": addr(&self.https),
            "https_offloaded": addr(&self.https_offloaded),
            "admin": addr(&self.admin),
        })
    }
}

/// Serves the bound listeners until `shutdown` turns true, then drains.
///
/// The data-plane listeners are served by one single-threaded runtime per core, all
/// accepting on the same listening sockets: a connection, its requests and the
/// upstream connections they use then live on one thread, with no wake-ups across
/// cores and no work stealing. The admin listener stays on the caller's runtime.
pub async fn run_listeners(
    dp: Arc<DataPlane>,
    bound: Bound,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let tls = match &bound.https {
        Some(_) => Some(Arc::new(crate::proxy::tls::TlsConfigs::new(dp.clone())?)),
        None => None,
    };
    let http = bound.http.map(into_std).transpose()?;
    let https = bound.https.map(into_std).transpose()?;
    let offloaded = bound.https_offloaded.map(into_std).transpose()?;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..dp.workers() {
        let copy = |l: &Option<std::net::TcpListener>| {
            l.as_ref().map(std::net::TcpListener::try_clone).transpose()
        };
        let listeners = WorkerListeners {
            http: copy(&http),
            https: copy(&https),
            offloaded: copy(&offloaded),
        };
        let (dp, tls, shutdown) = (dp.clone(), tls.clone(), shutdown.clone());
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("worker-{worker}"))
            .spawn(move || {
                let _ = done.send(serve_worker(worker, dp, listeners, tls, shutdown));
            })
            .map_err(|source| ServeError::Worker { source })?;
        tasks.spawn(async move { finished.await.unwrap_or(Ok(())) });
    }
    // The workers hold the sockets now: the last one to stop closes them.
    drop((http, https, offloaded));
    if let Some(l) = bound.admin {
        let admin = crate::admin::serve_admin(dp.clone(), l, shutdown.clone());
        tasks.spawn(async move {
            admin.await;
            Ok(())
        });
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One worker's handles on the shared listening sockets.
struct WorkerListeners {
    http: std::io::Result<Option<std::net::TcpListener>>,
    https: std::io::Result<Option<std::net::TcpListener>>,
    offloaded: std::io::Result<Option<std::net::TcpListener>>,
}

fn into_std(l: TcpListener) -> Result<std::net::TcpListener, ServeError> {
    let addr = l
        .local_addr()
        .map_err(|source| ServeError::Worker { source })?;
    l.into_std()
        .map_err(|source| ServeError::Bind { addr, source })
}

/// A worker thread: its own current-thread runtime serving the listeners until
/// shutdown and drain.
fn serve_worker(
    worker: usize,
    dp: Arc<DataPlane>,
    listeners: WorkerListeners,
    tls: Option<Arc<crate::proxy::tls::TlsConfigs>>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Worker { source })?;
    let err = |source| ServeError::Worker { source };
    let http = listeners.http.map_err(err)?;
    let https = listeners.https.map_err(err)?;
    let offloaded = listeners.offloaded.map_err(err)?;
    crate::proxy::set_worker(worker);
    runtime.block_on(async move {
        let register = |l: std::net::TcpListener| TcpListener::from_std(l).map_err(err);
        let serve = |socket: Option<std::net::TcpListener>, name, tls| {
            let (dp, shutdown) = (dp.clone(), shutdown.clone());
            let socket = socket.map(register).transpose();
            async move {
                if let Some(socket) = socket? {
                    let listener = server::Listener::new(&dp, name, tls);
                    server::serve(dp, socket, listener, shutdown).await;
                }
                Ok::<(), ServeError>(())
            }
        };
        let plain = serve(http, ListenerName::Http, None);
        let secure = serve(https, ListenerName::Https, tls);
        let offloaded = serve(offloaded, ListenerName::HttpsOffloaded, None);
        let (a, b, c) = tokio::join!(plain, secure, offloaded);
        a.and(b).and(c)
    })
}
