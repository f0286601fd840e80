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
    // Also for Gateway HTTPS listeners, which come and go with the configuration.
    let tls = Arc::new(crate::proxy::tls::TlsConfigs::new(dp.clone())?);
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
        let gateway_sockets = dp.gateway_sockets.subscribe();
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("worker-{worker}"))
            .spawn(move || {
                let served = (listeners, gateway_sockets);
                let _ = done.send(serve_worker(worker, dp, served, tls, shutdown));
            })
            .map_err(|source| ServeError::Worker { source })?;
        tasks.spawn(async move { finished.await.unwrap_or(Ok(())) });
    }
    // The workers hold the sockets now: the last one to stop closes them.
    drop((http, https, offloaded));
    let (closing, mut stop) = (dp.clone(), shutdown.clone());
    tasks.spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        closing.gateway_sockets.close_all();
        Ok(())
    });
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
    (listeners, gateway_sockets): (WorkerListeners, GatewayFeed),
    tls: Arc<crate::proxy::tls::TlsConfigs>,
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
        let secure = serve(https, ListenerName::Https, Some(tls.clone()));
        let offloaded = serve(offloaded, ListenerName::HttpsOffloaded, None);
        let gateways = serve_gateway_sockets(dp.clone(), gateway_sockets, tls, shutdown.clone());
        let (a, b, c, ()) = tokio::join!(plain, secure, offloaded, gateways);
        a.and(b).and(c)
    })
}

type GatewayFeed = watch::Receiver<Vec<Arc<crate::gateway_sockets::Served>>>;

/// One worker's share of the Gateways' own sockets: each one the feed lists is
/// accepted on until it is stopped; at shutdown, once every one has drained.
async fn serve_gateway_sockets(
    dp: Arc<DataPlane>,
    mut feed: GatewayFeed,
    tls: Arc<crate::proxy::tls::TlsConfigs>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut serving: Vec<Arc<crate::gateway_sockets::Served>> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let listed = feed.borrow_and_update().clone();
        serving.retain(|s| listed.iter().any(|l| Arc::ptr_eq(l, s)));
        for served in listed {
            if serving.iter().any(|s| Arc::ptr_eq(s, &served)) {
                continue;
            }
            let socket = served.listener.try_clone().and_then(TcpListener::from_std);
            let socket = match socket {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(address = %served.socket.addr, error = %e, "a worker cannot accept on a Gateway socket");
                    continue;
                }
            };
            let listener = server::Listener::gateway(served.socket, tls.clone());
            tasks.spawn(server::serve(
                dp.clone(),
                socket,
                listener,
                served.stopped(),
            ));
            serving.push(served);
        }
        tokio::select! {
            changed = feed.changed() => if changed.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    while tasks.join_next().await.is_some() {}
}
