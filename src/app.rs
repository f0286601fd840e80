//! Wiring shared by `serve` and `run`: the listeners and the data plane, the keys, the
//! sources and (in a cluster) the controller.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use portcullis::auth::idp::IdpClient;
use portcullis::auth::login::Authenticator;
use portcullis::auth::shared::SharedState;
use portcullis::compile::CompileOptions;
use portcullis::controller::Controller;
use portcullis::controller::lease::LeaseConfig;
use portcullis::keys::{KeyText, Keys};
use portcullis::listen::{Listen, run_listeners};
use portcullis::observe::access_log::{AccessLog, LogFormat};
use portcullis::proxy::canonical::PathRules;
use portcullis::proxy::{DataPlane, ListenerName, ProxyConfig};
use portcullis::reload::{apply, watch_cluster, watch_files};
use portcullis::source::cluster::ClusterSource;
use portcullis::source::manifests::ManifestSource;

use crate::cli::{ProxyArgs, RunArgs, ServeArgs};

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal as _;
    // Colours for a person at a terminal, never in a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Alb => builder.init(),
    }
}

/// The listeners bound and the data plane made, before any configuration.
struct Started {
    dp: Arc<DataPlane>,
    bound: portcullis::listen::Bound,
}

async fn start_data_plane(args: &ProxyArgs, keys: Keys) -> anyhow::Result<Started> {
    if let Some(p) = &args.public_keys_path {
        anyhow::ensure!(
            p.starts_with('/') && p.trim_end_matches('/').len() > 1,
            "--public-keys-path {p:?} must be a path below / (e.g. /.well-known/portcullis-keys)"
        );
    }
    proxy_protocol_listeners(args)?;
    let bound = Listen {
        http: Some(args.http),
        https: args.https,
        https_offloaded: args.https_offloaded,
        admin: Some(args.admin),
    }
    .bind()
    .await?;
    let https_port = bound
        .https
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port());
    let config = proxy_config(args, https_port)?;
    let log = AccessLog::start(args.log_format, Box::new(std::io::stdout()));
    let idp = idp_client(args)?;
    let shared = shared_state(args)?;
    let auth = Authenticator::new(
        idp,
        keys.ring,
        keys.signing_keys,
        args.signer.clone(),
        shared,
    );
    auth.providers().spawn_refresher();
    let dp = DataPlane::new(config, log, auth);
    dp.spawn_flow_sweeper();
    let addresses = bound.describe();
    tracing::info!(%addresses, "listening");
    if let Some(path) = &args.ports_file {
        std::fs::write(path, addresses.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Started { dp, bound })
}

/// Every listener `--proxy-protocol` names must be served.
fn proxy_protocol_listeners(args: &ProxyArgs) -> anyhow::Result<()> {
    for name in &args.proxy_protocol {
        let (served, flag) = match name {
            ListenerName::Http => (true, "--http"),
            ListenerName::Https => (args.https.is_some(), "--https"),
            ListenerName::HttpsOffloaded => (args.https_offloaded.is_some(), "--https-offloaded"),
        };
        anyhow::ensure!(
            served,
            "--proxy-protocol names the {} listener, but there is none: add {flag} ADDR or drop {} from --proxy-protocol",
            name.as_str(),
            name.as_str()
        );
    }
    Ok(())
}

/// The data plane's settings from the command line; the redirect to HTTPS goes to the
/// bound HTTPS port unless one is named.
fn proxy_config(args: &ProxyArgs, https_port: Option<u16>) -> anyhow::Result<ProxyConfig> {
    Ok(ProxyConfig {
        log_name: args.log_name.clone(),
        trusted_proxies: args.trusted_proxies.clone(),
        https_redirect_port: if args.no_https_redirect {
            None
        } else {
            args.https_redirect_port.or(https_port)
        },
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        upstream_connect_timeout: Duration::from_secs(args.upstream_connect_timeout),
        upstream_response_timeout: Duration::from_secs(args.upstream_timeout),
        upstream_idle_timeout: Duration::from_secs(args.upstream_idle_timeout),
        public_keys_path: args
            .public_keys_path
            .as_ref()
            .map(|p| p.trim_end_matches('/').to_owned()),
        path_rules: PathRules {
            repeated_slashes: args.repeated_slashes,
            escaped_slashes: args.escaped_slashes,
            path_parameters: args.path_parameters,
        },
        forward_original_path: args.forward_original_path,
        expose_flows: args.expose_flows,
        underscores_in_headers: args.underscores_in_headers,
        proxy_protocol: args.proxy_protocol.clone(),
        connection_limits: portcullis::proxy::connections::Limits {
            max: args.max_connections,
            per_client: args.max_connections_per_client,
        },
        login_abandoned_after: Duration::from_secs(args.login_abandoned_after),
        dropped_headers: args
            .drop_request_headers
            .iter()
            .map(|h| {
                http::HeaderName::from_bytes(h.trim().as_bytes())
                    .with_context(|| format!("--drop-request-header {h:?} is not a header name"))
            })
            .collect::<anyhow::Result<_>>()?,
        ..ProxyConfig::default()
    })
}

/// Sessions and refreshes shared through Redis when `--redis-url` names one.
fn shared_state(args: &ProxyArgs) -> anyhow::Result<Arc<SharedState>> {
    Ok(match &args.redis_url {
        Some(url) => SharedState::redis(
            url,
            Duration::from_millis(args.redis_timeout_ms),
            args.redis_unavailable,
        )
        .with_context(|| format!("--redis-url {url:?}"))?,
        None => SharedState::in_process(),
    })
}

/// The client for identity providers: the system's CAs and `--idp-ca-file`.
fn idp_client(args: &ProxyArgs) -> anyhow::Result<IdpClient> {
    let extra_roots = match &args.idp_ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    Ok(IdpClient::with_extra_roots(
        Duration::from_secs(args.idp_timeout),
        extra_roots.as_deref(),
    )
    .context("loading the certificate authorities trusted for identity providers")?
    .with_token_dir(args.service_account_token_dir.clone()))
}

/// A channel that turns true on SIGTERM or Ctrl-C.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stopping: draining requests in flight");
        let _ = stop.send(true);
    });
    shutdown
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = CompileOptions {
        redis: args.proxy.redis_url.is_some(),
        ..args.manifests.class.compile_options()
    };
    let keys = keys(&args.proxy, None)?;
    let Started { dp, bound } = start_data_plane(&args.proxy, keys).await?;
    let mut source = ManifestSource::new(args.manifests.files.clone());
    apply(&dp, &source.read(), &options);
    let shutdown = stop_on_signal();
    tokio::spawn(watch_files(
        dp.clone(),
        source,
        options,
        Duration::from_millis(args.reload_interval_ms),
        shutdown.clone(),
    ));
    run_listeners(dp, bound, shutdown).await?;
    Ok(())
}

pub async fn run_in_cluster(args: RunArgs) -> anyhow::Result<()> {
    let options = CompileOptions {
        redis: args.proxy.redis_url.is_some(),
        ..args.class.compile_options()
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let both_files =
        args.proxy.session_keys_file.is_some() && args.proxy.signing_key_file.is_some();
    let secret = if both_files {
        None
    } else {
        Some(
            portcullis::keys::from_secret(client.clone(), &args.namespace, &args.keys_secret)
                .await?,
        )
    };
    let keys = keys(&args.proxy, secret)?;
    let Started { dp, bound } = start_data_plane(&args.proxy, keys).await?;
    let gateway_api = portcullis::source::cluster::gateway_api_installed(&client).await;
    if let Some(served) = gateway_api {
        tracing::info!(
            tls_routes = served.tls_routes,
            "Gateway API CRDs found: watching GatewayClasses, Gateways, HTTPRoutes, ReferenceGrants (and TLSRoutes when served)"
        );
    } else {
        tracing::warn!(
            "Gateway API CRDs are not installed (gateway.networking.k8s.io/v1 does not serve httproutes, gateways, gatewayclasses and referencegrants): only Ingresses are served; install the standard CRDs and restart Portcullis to serve Gateways and HTTPRoutes"
        );
    }
    if gateway_api.is_some_and(|served| !served.listener_sets) {
        tracing::info!(
            "the ListenerSet CRD is not installed: Gateways take listeners of their own spec only"
        );
    }
    let source = ClusterSource::start(client.clone(), gateway_api);
    if gateway_api.is_some_and(|served| !served.backend_tls_policies) {
        tracing::warn!(
            "the BackendTLSPolicy CRD is not installed: HTTPRoutes reach Services in the clear; install it and restart Portcullis to serve BackendTLSPolicies"
        );
    }
    let shutdown = stop_on_signal();
    let (published, watch_published) = tokio::sync::watch::channel(None);
    tokio::spawn(watch_cluster(
        dp.clone(),
        source,
        options,
        published,
        shutdown.clone(),
    ));
    let status = (!args.no_status).then(|| {
        let identity = args.identity.clone().unwrap_or_else(default_identity);
        let controller = Controller {
            client,
            context: dp.context(),
            namespace: args.namespace.clone(),
            lease: LeaseConfig::new(identity.clone()),
            identity,
            publish_service: args.publish_service.clone(),
            publish_address: args.publish_address.clone(),
        };
        tokio::spawn(controller.run(watch_published, shutdown.clone()))
    });
    run_listeners(dp, bound, shutdown).await?;
    if let Some(task) = status {
        // Give the Lease up so another replica takes over without waiting it out.
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "portcullis".into());
    format!("{host}-{}", std::process::id())
}

/// The keys: each from its file when given, else from `fallback` (the keys Secret in
/// a cluster), else made at start with a warning, since sessions then end on restart
/// and replicas cannot read each other's.
fn keys(args: &ProxyArgs, fallback: Option<KeyText>) -> anyhow::Result<Keys> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let generated = fallback.is_none();
    let source = if generated {
        "keys made at start"
    } else {
        "the keys Secret"
    };
    let fallback = match fallback {
        Some(text) => text,
        None => KeyText::generate()?,
    };
    let session_keys = match &args.session_keys_file {
        Some(p) => read(p)?,
        None => {
            if generated {
                tracing::warn!(
                    "no --session-keys-file: a session key was made at start, so sessions end when Portcullis restarts"
                );
            }
            fallback.session_keys
        }
    };
    let signing_key_pem = match &args.signing_key_file {
        Some(p) => read(p)?,
        None => {
            if generated {
                tracing::warn!(
                    "no --signing-key-file: the x-amzn-oidc-data key was made at start and changes on restart"
                );
            }
            fallback.signing_key_pem
        }
    };
    let described = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or(source.to_owned(), |p| p.display().to_string())
    };
    let optional = |file: &Option<PathBuf>, from_secret: Option<String>| match file {
        Some(p) => read(p).map(Some),
        None => Ok(from_secret),
    };
    let text = KeyText {
        session_keys,
        signing_key_pem,
        previous_signing_key_pem: optional(
            &args.previous_signing_key_file,
            fallback.previous_signing_key_pem,
        )?,
        next_signing_key_pem: optional(&args.next_signing_key_file, fallback.next_signing_key_pem)?,
    };
    Ok(text.parse(&format!(
        "{} and {}",
        described(&args.session_keys_file),
        described(&args.signing_key_file)
    ))?)
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
