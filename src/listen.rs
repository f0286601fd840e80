//! The listeners: bind them (so `--ports-file` can say where), then serve traffic,
//! TLS and the admin endpoints on them until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::{DataPlane, server};
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
}

pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

pub struct Bound {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
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
        serde_json::json!({ "http": addr(&self.http), "https": addr(&self.https), "admin": addr(&self.admin) })
    }
}

/// Serves the bound listeners until `shutdown` turns true, then drains.
pub async fn run_listeners(
    dp: Arc<DataPlane>,
    bound: Bound,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = bound.http {
        tasks.spawn(server::serve_http(dp.clone(), l, shutdown.clone()));
    }
    if let Some(l) = bound.https {
        let config = crate::proxy::tls::server_config(dp.clone())?;
        tasks.spawn(server::serve_https(dp.clone(), l, config, shutdown.clone()));
    }
    if let Some(l) = bound.admin {
        tasks.spawn(crate::admin::serve_admin(dp.clone(), l, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
