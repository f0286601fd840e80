//! `portcullis serve`: manifests from files, compiled and served, re-read when they
//! change or on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::compile::{CompileOptions, compile, summary};
use crate::controller::Published;
use crate::diagnostics::Diagnostic;
use crate::proxy::{DataPlane, server};
use crate::source::cluster::ClusterSource;
use crate::source::manifests::ManifestSource;
use crate::store::Objects;

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

/// Compiles and installs, logging what changed in the diagnostics; returns what was
/// installed.
pub fn apply(
    dp: &DataPlane,
    objects: &Objects,
    options: &CompileOptions,
) -> (Arc<crate::compile::Snapshot>, Vec<Diagnostic>) {
    let compiled = compile(objects, options);
    let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
    for d in &compiled.diagnostics {
        if d.is_error() {
            tracing::error!(object = %d.object, field = %d.field, reason = d.reason, fix = %d.fix, "{}", d.message);
        } else {
            tracing::warn!(object = %d.object, field = %d.field, reason = d.reason, fix = %d.fix, "{}", d.message);
        }
    }
    dp.metrics
        .reloads
        .with_label_values(&[if errors == 0 { "clean" } else { "with_errors" }])
        .inc();
    dp.metrics.config_errors.set(errors as i64);
    tracing::info!(counts = ?summary(&compiled.snapshot), errors, "configuration installed");
    let snapshot = Arc::new(compiled.snapshot);
    dp.install(snapshot.clone());
    (snapshot, compiled.diagnostics)
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

/// Re-reads the manifests every `interval` and on SIGHUP, installing a new snapshot
/// when anything changed.
pub async fn watch_files(
    dp: Arc<DataPlane>,
    source: ManifestSource,
    options: CompileOptions,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let source = Arc::new(Mutex::new(source));
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = async { match hangup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => true,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let src = source.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut s = src.lock().unwrap_or_else(|p| p.into_inner());
            if forced {
                Some(s.read())
            } else {
                s.read_if_changed()
            }
        })
        .await;
        if let Ok(Some(objects)) = read {
            if forced {
                tracing::info!("SIGHUP: re-reading manifests");
            }
            apply(&dp, &objects, &options);
        }
    }
}

/// Installs a snapshot once every watch has listed (so `/readyz` turns ready on a
/// whole configuration), then again after each burst of changes.
pub async fn watch_cluster(
    dp: Arc<DataPlane>,
    source: ClusterSource,
    options: CompileOptions,
    published: watch::Sender<Option<Arc<Published>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = source.wait_until_ready() => {}
        _ = shutdown.wait_for(|s| *s) => return,
    }
    tracing::info!("every watch has listed: serving");
    loop {
        let objects = source.objects();
        let (snapshot, diagnostics) = apply(&dp, &objects, &options);
        published.send_replace(Some(Arc::new(Published {
            objects,
            diagnostics,
            snapshot,
        })));
        tokio::select! {
            _ = source.changed.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Changes come in bursts (an apply of many objects): take them together.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
