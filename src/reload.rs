//! From objects to what is served: compile and install once, or again whenever the
//! manifest files or the cluster's objects change (publishing each install to the
//! controller).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::compile::{CompileOptions, compile, summary};
use crate::controller::Published;
use crate::diagnostics::Diagnostic;
use crate::proxy::DataPlane;
use crate::source::cluster::ClusterSource;
use crate::source::manifests::ManifestSource;
use crate::store::Objects;

/// Compiles and installs, logging what changed in the diagnostics; returns what was
/// installed.
pub fn apply(dp: &DataPlane, objects: &Objects, options: &CompileOptions) -> Installed {
    let compiled = compile(objects, options);
    let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
    for d in &compiled.diagnostics {
        if d.is_error() {
            tracing::error!(object = %d.object, field = %d.field, reason = d.reason, fix = %d.fix, "{}", d.message);
        } else {
            tracing::warn!(object = %d.object, field = %d.field, reason = d.reason, fix = %d.fix, "{}", d.message);
        }
    }
    let counts = format!("{:?}", summary(&compiled.snapshot));
    let snapshot = Arc::new(compiled.snapshot);
    dp.install(snapshot.clone());
    // After the routes are live, so a new socket's first request finds them.
    let unbound = dp.gateway_sockets.sync(&snapshot.gateway_sockets);
    let mut gateway_status = compiled.gateway_status;
    crate::compile::mark_unbound(&mut gateway_status, &unbound);
    // Counted and logged once live, so the line's time is when traffic sees the change.
    dp.metrics
        .reloads
        .with_label_values(&[if errors == 0 { "clean" } else { "with_errors" }])
        .inc();
    dp.metrics.config_errors.set(errors as i64);
    tracing::info!(counts = %counts, errors, "configuration installed");
    Installed {
        snapshot,
        diagnostics: compiled.diagnostics,
        gateway_status,
    }
}

/// What `apply` installed, and what it leaves for the controller.
pub struct Installed {
    pub snapshot: Arc<crate::compile::Snapshot>,
    pub diagnostics: Vec<Diagnostic>,
    /// With the listeners whose sockets could not be bound marked so.
    pub gateway_status: crate::compile::GatewayApiState,
}

/// Reads the objects and `apply`s them on a blocking thread: a compile of a large
/// cluster takes tens of milliseconds, which on an async worker would stall what else
/// it runs (watches, the admin listener).
pub async fn apply_off_workers(
    dp: Arc<DataPlane>,
    read: impl FnOnce() -> Objects + Send + 'static,
    options: CompileOptions,
) -> Option<(Objects, Installed)> {
    let work = tokio::task::spawn_blocking(move || {
        let objects = read();
        let installed = apply(&dp, &objects, &options);
        (objects, installed)
    });
    match work.await {
        Ok(done) => Some(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down.
        Err(_) => None,
    }
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
            apply_off_workers(dp.clone(), move || objects, options.clone()).await;
        }
    }
}

/// How long the published state (diagnostics, statuses) may lag endpoint changes that
/// were swapped in without a compile: then a full compile catches it up.
const PUBLISH_ENDPOINTS_AFTER: Duration = Duration::from_secs(2);

/// Installs a snapshot once every watch has listed (so `/readyz` turns ready on a
/// whole configuration), then again after each burst of changes. A burst of
/// EndpointSlice changes alone swaps upstream targets in place instead (milliseconds
/// at 10,000 Services, against a whole compile); a compile follows within
/// `PUBLISH_ENDPOINTS_AFTER`, so statuses and diagnostics catch up.
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
    let source = Arc::new(source);
    loop {
        // Whatever changed before this read is in the compile.
        source.take_changes();
        let src = source.clone();
        let Some((objects, installed)) =
            apply_off_workers(dp.clone(), move || src.objects(), options.clone()).await
        else {
            return;
        };
        published.send_replace(Some(Arc::new(Published {
            objects,
            diagnostics: installed.diagnostics,
            snapshot: installed.snapshot,
            gateway_status: installed.gateway_status,
        })));
        // Changes that arrive while a compile runs are taken together by the next one
        // (the notification holds one permit), so a burst costs a compile or two, and
        // a single change is live after one compile, not after a fixed wait.
        let mut unpublished: Option<tokio::time::Instant> = None;
        loop {
            let catch_up = async {
                match unpublished {
                    Some(since) => tokio::time::sleep_until(since + PUBLISH_ENDPOINTS_AFTER).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = source.changed.notified() => {}
                _ = catch_up => break,
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let changes = source.take_changes();
            if changes.other {
                break;
            }
            if changes.slices {
                let src = source.clone();
                if !update_endpoints_off_workers(dp.clone(), src).await {
                    return;
                }
                unpublished.get_or_insert_with(tokio::time::Instant::now);
            }
        }
    }
}

/// Swaps in the targets of the EndpointSlices the store holds, on a blocking thread
/// (it reads every slice); false when the runtime is shutting down.
async fn update_endpoints_off_workers(dp: Arc<DataPlane>, source: Arc<ClusterSource>) -> bool {
    let work = tokio::task::spawn_blocking(move || {
        let slices = source.endpoint_slices();
        let changed = dp.update_endpoints(&slices);
        dp.metrics.endpoint_updates.inc();
        // Logged once live, as a compile's install is.
        tracing::info!(
            upstreams = changed,
            "configuration installed: endpoints only"
        );
    });
    match work.await {
        Ok(()) => true,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => false,
    }
}
