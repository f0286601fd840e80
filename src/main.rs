use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kube::CustomResourceExt as _;
use portcullis::auth::identity::SigningKey;
use portcullis::auth::idp::IdpClient;
use portcullis::auth::login::Authenticator;
use portcullis::auth::sealed::KeyRing;
use portcullis::compile::{CompileOptions, compile};
use portcullis::model::AuthRule;
use portcullis::observe::access_log::{AccessLog, LogFormat};
use portcullis::proxy::{DataPlane, IpNet, ProxyConfig};
use portcullis::serve::{Listen, apply, run_listeners, watch_files};
use portcullis::source::manifests::ManifestSource;

/// Kubernetes ingress controller that logs people in at the edge (ALB authenticate-oidc compatible).
#[derive(Parser)]
#[command(name = "portcullis", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic for the Ingress, AuthRule, Secret, Service and EndpointSlice
    /// manifests in files; re-read them when they change or on SIGHUP.
    Serve(Box<ServeArgs>),
    /// Load and compile manifests without serving; print every problem with the object,
    /// the field and the fix. Exits 1 when anything is invalid.
    Check(CheckArgs),
    /// Print the AuthRule CustomResourceDefinition as YAML.
    Crd,
    /// Run the whole login on this machine: a development OpenID provider, an echo
    /// backend that shows the identity headers, and the proxy guarding /auth*.
    Demo(DemoArgs),
}

#[derive(Args)]
struct DemoArgs {
    /// The proxy's port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    ports_file: Option<PathBuf>,
}

#[derive(Args)]
struct ManifestArgs {
    /// A manifest file or a directory of them (repeatable; multi-document YAML).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The IngressClass name served even without an IngressClass object naming us.
    #[arg(long, env = "PORTCULLIS_INGRESS_CLASS", default_value = "portcullis")]
    ingress_class: String,
    /// Also serve Ingresses that name no IngressClass.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// namespace/name of a kubernetes.io/tls Secret used when no certificate matches SNI.
    #[arg(long)]
    default_certificate: Option<String>,
}

impl ManifestArgs {
    fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            ingress_class: self.ingress_class.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            default_certificate: self.default_certificate.clone(),
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
    /// Plain HTTP listener.
    #[arg(long, env = "PORTCULLIS_HTTP", default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// HTTPS listener (certificates from the Ingresses' spec.tls Secrets).
    #[arg(long, env = "PORTCULLIS_HTTPS")]
    https: Option<SocketAddr>,
    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "PORTCULLIS_ADMIN", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// Port that HTTP-to-HTTPS redirects point at (default: the --https port).
    #[arg(long)]
    https_redirect_port: Option<u16>,
    /// Don't redirect HTTP to HTTPS for hosts that have a certificate.
    #[arg(long)]
    no_https_redirect: bool,
    /// Access-log format.
    #[arg(long, value_enum, default_value = "alb")]
    log_format: LogFormat,
    /// Name in the access log's `elb` field.
    #[arg(long, default_value = "portcullis")]
    log_name: String,
    /// Peer address or CIDR whose X-Forwarded-* headers are trusted (repeatable).
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<IpNet>,
    /// Seconds to wait for an upstream's response headers.
    #[arg(long, default_value_t = 60)]
    upstream_timeout: u64,
    /// Seconds to wait for an upstream connection.
    #[arg(long, default_value_t = 5)]
    upstream_connect_timeout: u64,
    /// Seconds a client has to send its request headers.
    #[arg(long, default_value_t = 30)]
    header_read_timeout: u64,
    /// How often the manifest files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reload_interval_ms: u64,
    /// The `signer` field of x-amzn-oidc-data (ALB puts its load balancer ARN there).
    #[arg(
        long,
        env = "PORTCULLIS_SIGNER",
        default_value = "arn:aws:elasticloadbalancing:local:000000000000:loadbalancer/app/portcullis/0000000000000000"
    )]
    signer: String,
    /// Session keys: one base64-encoded 32-byte key a line, newest first (older lines
    /// still open existing sessions). Without it a key is made at start, and sessions
    /// end when Portcullis restarts.
    #[arg(long, env = "PORTCULLIS_SESSION_KEYS_FILE")]
    session_keys_file: Option<PathBuf>,
    /// The P-256 key (PKCS#8 PEM) that signs x-amzn-oidc-data. Without it a key is made
    /// at start.
    #[arg(long, env = "PORTCULLIS_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// Seconds to wait for the identity provider (token, userinfo, discovery).
    #[arg(long, default_value_t = 5)]
    idp_timeout: u64,
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    ports_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            print!("{}", crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => Ok(check(&args)),
        Command::Demo(args) => {
            init_tracing(LogFormat::Alb);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(portcullis::demo::run(portcullis::demo::DemoOptions {
                port: args.port,
                ports_file: args.ports_file,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            init_tracing(args.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(*args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn crd_yaml() -> anyhow::Result<String> {
    let crd = serde_json::to_value(AuthRule::crd())?;
    Ok(serde_saphyr::to_string(&crd)?)
}

fn check(args: &CheckArgs) -> ExitCode {
    let objects = ManifestSource::new(args.manifests.files.clone()).read();
    let compiled = compile(&objects, &args.manifests.compile_options());
    for d in &compiled.diagnostics {
        println!("{d}");
    }
    let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = compiled.diagnostics.len() - errors;
    println!(
        "{} routes, {} AuthRules, {} certificates; {errors} errors, {warnings} warnings",
        compiled.snapshot.routes.all.len(),
        compiled.snapshot.auth_rules.len(),
        portcullis::compile::summary(&compiled.snapshot)["certificates"],
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Alb => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = args.manifests.compile_options();
    let bound = Listen {
        http: Some(args.http),
        https: args.https,
        admin: Some(args.admin),
    }
    .bind()
    .await?;
    let https_port = bound
        .https
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port());
    let config = ProxyConfig {
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
        ..ProxyConfig::default()
    };
    let log = AccessLog::start(args.log_format, Box::new(std::io::stdout()));
    let dp = DataPlane::new(config, log, authenticator(&args)?);
    let mut source = ManifestSource::new(args.manifests.files.clone());
    apply(&dp, &source.read(), &options);

    let addresses = bound.describe();
    tracing::info!(%addresses, "listening");
    if let Some(path) = &args.ports_file {
        std::fs::write(path, addresses.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(watch_files(
        dp.clone(),
        source,
        options,
        Duration::from_millis(args.reload_interval_ms),
        shutdown.clone(),
    ));
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stopping: draining requests in flight");
        let _ = stop.send(true);
    });
    run_listeners(Arc::clone(&dp), bound, shutdown).await?;
    Ok(())
}

/// Keys from files when given; otherwise made at start, with a warning, because
/// sessions then end on restart and replicas cannot read each other's.
fn authenticator(args: &ServeArgs) -> anyhow::Result<Authenticator> {
    let session_keys = match &args.session_keys_file {
        Some(path) => read_session_keys(path)?,
        None => {
            use aws_lc_rs::rand::SecureRandom as _;
            let mut key = vec![0u8; 32];
            aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            tracing::warn!(
                "no --session-keys-file: a session key was made at start, so sessions end when Portcullis restarts"
            );
            vec![key]
        }
    };
    let ring = KeyRing::new(&session_keys).context("session keys must be 32 bytes each")?;
    let signing_key = match &args.signing_key_file {
        Some(path) => SigningKey::from_pem(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a P-256 PKCS#8 PEM key", path.display()))?,
        None => {
            tracing::warn!(
                "no --signing-key-file: the x-amzn-oidc-data key was made at start and changes on restart"
            );
            SigningKey::generate()?
        }
    };
    let idp = IdpClient::new(Duration::from_secs(args.idp_timeout))
        .context("loading the system's certificate authorities")?;
    Ok(Authenticator::new(
        idp,
        ring,
        signing_key,
        args.signer.clone(),
    ))
}

fn read_session_keys(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    use base64::Engine as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let keys: Vec<Vec<u8>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            base64::engine::general_purpose::STANDARD
                .decode(l)
                .with_context(|| format!("{}: a line is not base64", path.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        !keys.is_empty(),
        "{} holds no key (one base64 32-byte key a line; e.g. `head -c32 /dev/urandom | base64`)",
        path.display()
    );
    Ok(keys)
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
