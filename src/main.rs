use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kube::CustomResourceExt as _;
use portcullis::auth::idp::IdpClient;
use portcullis::auth::login::Authenticator;
use portcullis::auth::shared::{SharedState, WhenUnavailable};
use portcullis::compile::{CompileOptions, compile};
use portcullis::controller::Controller;
use portcullis::controller::lease::LeaseConfig;
use portcullis::keys::{KeyText, Keys};
use portcullis::listen::{Listen, run_listeners};
use portcullis::model::AuthRule;
use portcullis::observe::access_log::{AccessLog, LogFormat};
use portcullis::proxy::canonical::{Ambiguity, DEFAULT_DROPPED_HEADERS, PathRules};
use portcullis::proxy::{DataPlane, IpNet, ProxyConfig};
use portcullis::reload::{apply, watch_cluster, watch_files};
use portcullis::source::cluster::ClusterSource;
use portcullis::source::manifests::ManifestSource;

/// Kubernetes ingress controller that logs people in at the edge (ALB authenticate-oidc compatible).
/// mimalloc's per-thread heaps: glibc's malloc (arena locks, consolidation of freed
/// chunks) was a tenth of the CPU of a proxied request and a third of a compile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[command(
        after_help = "Example:\n  portcullis serve -f deploy/examples/ --http 0.0.0.0:8080 --https 0.0.0.0:8443"
    )]
    Serve(Box<ServeArgs>),
    /// Load and compile manifests without serving; print every problem with the object,
    /// the field and the fix. Exits 0 when clean, 1 on errors, 3 on warnings only.
    #[command(
        after_help = "Examples:\n  portcullis check -f manifests/\n  helm template my-release charts/app | portcullis check -f - -o json"
    )]
    Check(CheckArgs),
    /// Run in a cluster: watch Ingress, IngressClass, AuthRule, Secret, Service and
    /// EndpointSlice through the Kubernetes API (in-cluster config or KUBECONFIG) and
    /// serve them. The container's entrypoint.
    #[command(
        after_help = "Example (outside a cluster, with a kubeconfig):\n  KUBECONFIG=~/.kube/config portcullis run --http 127.0.0.1:8080 --no-status"
    )]
    Run(Box<RunArgs>),
    /// Print the AuthRule CustomResourceDefinition as YAML.
    #[command(after_help = "Example:\n  portcullis crd | kubectl apply -f -")]
    Crd,
    /// Check AuthRules against their providers from here: discovery and issuer, keys,
    /// endpoints, client credentials, clock skew, and the redirect URIs to register.
    /// Reads manifest files with -f, else the cluster (in-cluster config or
    /// KUBECONFIG). Exits 1 when a check fails.
    #[command(
        after_help = "Examples:\n  portcullis diagnose --rule apps/sso\n  portcullis diagnose -f manifests/ --idp-ca-file corp-ca.pem"
    )]
    Diagnose(DiagnoseArgs),
    /// Explain what went wrong, from artefacts people bring.
    #[command(subcommand)]
    Explain(ExplainCommand),
    /// Run the whole login on this machine: a development OpenID provider, an echo
    /// backend that shows the identity headers, and the proxy guarding /auth*.
    #[command(
        after_help = "Example:\n  portcullis demo --port 8080   # then open http://localhost:8080/auth/"
    )]
    Demo(DemoArgs),
}

#[derive(Args)]
struct DiagnoseArgs {
    /// Manifest files or directories; without any, the cluster is read.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Only this AuthRule (`namespace/name`).
    #[arg(long)]
    rule: Option<String>,
    #[command(flatten)]
    class: ClassArgs,
    /// Seconds to wait for each answer of the provider.
    #[arg(long, default_value_t = 5)]
    idp_timeout: u64,
    /// PEM certificates of a private CA the provider's certificate chains to.
    #[arg(long, env = "PORTCULLIS_IDP_CA_FILE")]
    idp_ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ExplainCommand {
    /// Group the failed requests of ALB-format access logs (Portcullis's or a real
    /// ALB's) by error_reason, and explain each group with the likely fix.
    #[command(
        after_help = "Example:\n  kubectl logs -n portcullis-system -l app.kubernetes.io/name=portcullis | portcullis explain logs"
    )]
    Logs {
        /// A log file, or - (the default) for standard input, e.g. from `kubectl logs`.
        file: Option<PathBuf>,
    },
    /// Every reason Portcullis reports, with its status, usual cause and fix, as a
    /// Markdown table.
    #[command(after_help = "Example:\n  portcullis explain reasons > docs/troubleshooting.md")]
    Reasons,
    /// Read a browser's HAR export of a login (through Portcullis or a real ALB) and
    /// say which step broke and why.
    #[command(after_help = "Example:\n  portcullis explain har ~/Downloads/app.example.com.har")]
    Har {
        /// The .har file.
        file: PathBuf,
    },
    /// Rebuild one login's timeline from Portcullis's logs (all replicas, text or
    /// JSON).
    #[command(
        after_help = "Example (the reference from an error page):\n  kubectl logs -n portcullis-system -l app.kubernetes.io/name=portcullis | portcullis explain flow 1-6b0595e6-218072abd8411a33ba4b5bec"
    )]
    Flow {
        /// A flow id, or any trace id of the flow (the reference on an error page).
        id: String,
        /// A log file, or - (the default) for standard input.
        file: Option<PathBuf>,
    },
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
    #[command(flatten)]
    class: ClassArgs,
}

#[derive(Args)]
struct ClassArgs {
    /// The IngressClass name served even without an IngressClass object naming us.
    #[arg(long, env = "PORTCULLIS_INGRESS_CLASS", default_value = "portcullis")]
    ingress_class: String,
    /// Also serve Ingresses that name no IngressClass.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// namespace/name of a kubernetes.io/tls Secret used when no certificate matches SNI.
    #[arg(long)]
    default_certificate: Option<String>,
    /// Let Ingresses of any namespace add paths to any host. By default a host belongs
    /// to the namespace of its oldest Ingress, and other namespaces need its
    /// `portcullis.dev/share-host-with` annotation.
    #[arg(long, env = "PORTCULLIS_ALLOW_SHARED_HOSTS")]
    allow_shared_hosts: bool,
    /// Match Ingress paths, AuthRule path patterns and logout paths without regard to
    /// case, for backends that route that way (Express, ASP.NET, IIS).
    #[arg(long, env = "PORTCULLIS_CASE_INSENSITIVE_PATHS")]
    case_insensitive_paths: bool,
}

impl ClassArgs {
    fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            ingress_class: self.ingress_class.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            default_certificate: self.default_certificate.clone(),
            allow_shared_hosts: self.allow_shared_hosts,
            case_insensitive_paths: self.case_insensitive_paths,
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
    /// Output: text for people, json for machines (CI annotations).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: CheckOutput,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CheckOutput {
    Text,
    Json,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
    /// How often the manifest files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reload_interval_ms: u64,
    #[command(flatten)]
    proxy: ProxyArgs,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    class: ClassArgs,
    /// Secret (in --namespace) holding the session and signing keys; made with fresh
    /// keys when missing. Ignored when key files are given.
    #[arg(
        long,
        env = "PORTCULLIS_KEYS_SECRET",
        default_value = "portcullis-keys"
    )]
    keys_secret: String,
    /// The namespace Portcullis runs in (its keys Secret and leader Lease live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "portcullis-system")]
    namespace: String,
    /// This replica's name in the leader Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The controller's Service (`namespace/name`) whose load-balancer address served
    /// Ingresses get in `status.loadBalancer`.
    #[arg(long, env = "PORTCULLIS_PUBLISH_SERVICE")]
    publish_service: Option<String>,
    /// A fixed IP or host name for `status.loadBalancer` instead of the Service's.
    #[arg(long)]
    publish_address: Option<String>,
    /// Serve only; never write status or Events (no Lease either).
    #[arg(long)]
    no_status: bool,
    #[command(flatten)]
    proxy: ProxyArgs,
}

#[derive(Args)]
struct ProxyArgs {
    /// Plain HTTP listener.
    #[arg(long, env = "PORTCULLIS_HTTP", default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// HTTPS listener (certificates from the Ingresses' spec.tls Secrets).
    #[arg(long, env = "PORTCULLIS_HTTPS")]
    https: Option<SocketAddr>,
    /// Admin listener: /metrics, /healthz, /readyz, /keys, and /flows (to loopback
    /// peers only, unless --expose-flows).
    #[arg(long, env = "PORTCULLIS_ADMIN", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// Serve the login flow records (/flows: subjects, providers' errors) to any peer
    /// of the admin listener, not only loopback (kubectl port-forward).
    #[arg(long, env = "PORTCULLIS_EXPOSE_FLOWS")]
    expose_flows: bool,
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
    /// The `signer` field of x-amzn-oidc-data (ALB puts its load balancer ARN there);
    /// `{namespace}`, `{name}` and `{id}` stand for the AuthRule's, so each rule signs
    /// as itself.
    #[arg(long, env = "PORTCULLIS_SIGNER", default_value = portcullis::auth::identity::DEFAULT_SIGNER)]
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
    /// During a signing-key rollout: the key being replaced (PKCS#8 PEM), published at
    /// /keys and --public-keys-path beside the signing key but not used to sign, so
    /// replicas still signing with it are verified by keys any replica serves.
    #[arg(long, env = "PORTCULLIS_PREVIOUS_SIGNING_KEY_FILE")]
    previous_signing_key_file: Option<PathBuf>,
    /// During a signing-key rollout: the key that will replace the signing key,
    /// published (not used to sign) before the replicas switch to it.
    #[arg(long, env = "PORTCULLIS_NEXT_SIGNING_KEY_FILE")]
    next_signing_key_file: Option<PathBuf>,
    /// Seconds to wait for the identity provider (token, userinfo, discovery).
    #[arg(long, default_value_t = 5)]
    idp_timeout: u64,
    /// PEM certificates of a private certificate authority that identity providers'
    /// TLS certificates chain to (trusted besides the system's).
    #[arg(long, env = "PORTCULLIS_IDP_CA_FILE")]
    idp_ca_file: Option<PathBuf>,
    /// Open client connections allowed on each listener (HTTP, HTTPS); as nine tenths
    /// are reached the longest-idle keep-alive connections are closed, and at the cap
    /// a new connection is closed at once. 0: no cap.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = 16_384)]
    max_connections: usize,
    /// Open connections allowed per client address on each listener (peers in
    /// --trusted-proxies are exempt); the client's own idle keep-alive connections
    /// make room first. 0: no cap.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 512
    )]
    max_connections_per_client: usize,
    /// Also serve the x-amzn-oidc-data keys on every host at this path
    /// (`<path>/<kid>` PEM, `<path>` JWKS), e.g. /.well-known/portcullis-keys.
    #[arg(long)]
    public_keys_path: Option<String>,
    /// Repeated slashes in a path (`//admin`): normalize merges them, reject answers
    /// 400, keep passes them on (only when every backend keeps them too).
    #[arg(long, value_enum, default_value = "normalize")]
    repeated_slashes: Ambiguity,
    /// `%2F`, `%5C` and `\` in a path: reject answers 400, normalize reads each as `/`,
    /// keep passes them on encoded (only when no backend decodes them before routing).
    #[arg(long, value_enum, default_value = "reject")]
    escaped_slashes: Ambiguity,
    /// `;` parameters in a path segment (`/admin;x/users`): reject answers 400,
    /// normalize drops them (as Tomcat and Jetty read them), keep passes them on.
    #[arg(long, value_enum, default_value = "reject")]
    path_parameters: Ambiguity,
    /// Forward the path as the client sent it instead of the canonical path that was
    /// routed and guarded (for backends that need the original bytes).
    #[arg(long)]
    forward_original_path: bool,
    /// A client request header never forwarded (repeatable; replaces the default
    /// list). The x-amzn-oidc-* identity headers are always removed.
    #[arg(long = "drop-request-header", default_values_t = DEFAULT_DROPPED_HEADERS.iter().map(|h| h.to_string()))]
    drop_request_headers: Vec<String>,
    /// Forward client request headers with `_` in their names. By default they are
    /// dropped, as nginx does: CGI-style servers read `x_forwarded_host` as
    /// `X-Forwarded-Host`.
    #[arg(long)]
    underscores_in_headers: bool,
    /// Keep revocations (back- and front-channel logouts), used logout-token ids and
    /// refresh locks in Redis (`redis://host:6379/0`, `rediss://` for TLS), shared by
    /// every replica. Without it they live in each replica's memory.
    #[arg(long, env = "PORTCULLIS_REDIS_URL")]
    redis_url: Option<String>,
    /// Milliseconds to wait for Redis (connecting and each command).
    #[arg(long, default_value_t = 500)]
    redis_timeout_ms: u64,
    /// What sessions get while Redis cannot be reached: refuse answers 503 (a logout
    /// announced meanwhile could not be seen), allow serves them on the revocations
    /// known so far.
    #[arg(long, value_enum, default_value = "refuse")]
    redis_unavailable: WhenUnavailable,
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
        Command::Diagnose(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(diagnose(args))
        }
        Command::Explain(ExplainCommand::Logs { file }) => {
            let report = match file.filter(|f| f.as_os_str() != "-") {
                Some(path) => {
                    let f = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    portcullis::explain::logs::read(std::io::BufReader::new(f))
                }
                None => portcullis::explain::logs::read(std::io::stdin().lock()),
            };
            print!("{}", report.render());
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(ExplainCommand::Reasons) => {
            print!("{}", portcullis::observe::reasons::markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(ExplainCommand::Har { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let har: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let report = portcullis::explain::har::analyze(&har)?;
            print!("{}", report.render());
            Ok(if report.broke.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Explain(ExplainCommand::Flow { id, file }) => {
            use portcullis::explain::flow::rebuild;
            let flow = match file.filter(|f| f.as_os_str() != "-") {
                Some(path) => {
                    let f = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    rebuild(std::io::BufReader::new(f), &id)
                }
                None => rebuild(std::io::stdin().lock(), &id),
            };
            match flow {
                Some(flow) => {
                    print!("{}", flow.render());
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!(
                        "no flow-hop line names {id}; give the logs of every replica (flow hops are logged at info)"
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
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
            init_tracing(args.proxy.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(*args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            init_tracing(args.proxy.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_in_cluster(*args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn crd_yaml() -> anyhow::Result<String> {
    let crd = serde_json::to_value(AuthRule::crd())?;
    Ok(serde_saphyr::to_string(&crd)?)
}

/// Exit codes of `check`: problems of each severity tell apart.
const CHECK_ERRORS: u8 = 1;
const CHECK_WARNINGS: u8 = 3;

fn check(args: &CheckArgs) -> ExitCode {
    let objects = ManifestSource::new(args.manifests.files.clone()).read_once();
    let compiled = compile(&objects, &args.manifests.class.compile_options());
    let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = compiled.diagnostics.len() - errors;
    let routes = compiled.snapshot.routes.all.len();
    let rules = compiled.snapshot.auth_rules.len();
    let certificates = portcullis::compile::summary(&compiled.snapshot)["certificates"];
    match args.output {
        CheckOutput::Text => {
            for d in &compiled.diagnostics {
                println!("{d}");
            }
            println!(
                "{routes} routes, {rules} AuthRules, {certificates} certificates; {errors} errors, {warnings} warnings"
            );
        }
        CheckOutput::Json => {
            let problems: Vec<serde_json::Value> = compiled
                .diagnostics
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "severity": if d.is_error() { "error" } else { "warning" },
                        "kind": d.object.kind, "namespace": d.object.namespace, "name": d.object.name,
                        "field": d.field, "reason": d.reason, "message": d.message, "fix": d.fix,
                    })
                })
                .collect();
            let report = serde_json::json!({
                "problems": problems,
                "summary": {"routes": routes, "authRules": rules, "certificates": certificates, "errors": errors, "warnings": warnings},
            });
            println!("{report}");
        }
    }
    match (errors, warnings) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(CHECK_WARNINGS),
        _ => ExitCode::from(CHECK_ERRORS),
    }
}

fn init_tracing(format: LogFormat) {
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

async fn diagnose(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    use portcullis::provider_checks::{Outcome, diagnose, rules_in};
    let objects = if args.files.is_empty() {
        let client = kube::Client::try_default()
            .await
            .context("no -f given, and no cluster to read (in-cluster config or KUBECONFIG)")?;
        let gateway_api = portcullis::source::cluster::gateway_api_installed(&client).await;
        let source = ClusterSource::start(client, gateway_api);
        tokio::time::timeout(Duration::from_secs(30), source.wait_until_ready())
            .await
            .context("the cluster's objects could not be listed within 30 s")?;
        source.objects()
    } else {
        ManifestSource::new(args.files.clone()).read()
    };
    let compiled = compile(&objects, &args.class.compile_options());
    let extra_roots = match &args.idp_ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let idp = IdpClient::with_extra_roots(
        Duration::from_secs(args.idp_timeout),
        extra_roots.as_deref(),
    )?;
    let mut failed = false;
    let mut seen = 0;
    for (object, (policy, hosts)) in rules_in(&compiled.snapshot) {
        let name = format!("{}/{}", object.namespace, object.name);
        if args.rule.as_ref().is_some_and(|r| *r != name) {
            continue;
        }
        seen += 1;
        println!("AuthRule {name}");
        let usable = compiled
            .snapshot
            .auth_rules
            .get(&object)
            .is_some_and(|s| s.usable);
        let Some(policy) = policy else {
            failed = true;
            if usable {
                println!(
                    "FAIL  routes        the AuthRule guards no served route\n      fix: check spec.targetRefs, spec.paths and the Ingresses' class"
                );
                continue;
            }
            println!("FAIL  config        the AuthRule does not compile:");
            for d in compiled.diagnostics.iter().filter(|d| d.object == object) {
                println!("      {d}");
            }
            continue;
        };
        for c in diagnose(&idp, &policy, &hosts).await {
            failed |= c.outcome == Outcome::Fail;
            println!("{c}");
        }
        println!();
    }
    anyhow::ensure!(
        seen > 0,
        "no AuthRule to diagnose{}",
        args.rule.map(|r| format!(" named {r}")).unwrap_or_default()
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
        connection_limits: portcullis::proxy::connections::Limits {
            max: args.max_connections,
            per_client: args.max_connections_per_client,
        },
        dropped_headers: args
            .drop_request_headers
            .iter()
            .map(|h| {
                http::HeaderName::from_bytes(h.trim().as_bytes())
                    .with_context(|| format!("--drop-request-header {h:?} is not a header name"))
            })
            .collect::<anyhow::Result<_>>()?,
        ..ProxyConfig::default()
    };
    let log = AccessLog::start(args.log_format, Box::new(std::io::stdout()));
    let idp = idp_client(args)?;
    let shared = match &args.redis_url {
        Some(url) => SharedState::redis(
            url,
            Duration::from_millis(args.redis_timeout_ms),
            args.redis_unavailable,
        )
        .with_context(|| format!("--redis-url {url:?}"))?,
        None => SharedState::in_process(),
    };
    let auth = Authenticator::new(
        idp,
        keys.ring,
        keys.signing_keys,
        args.signer.clone(),
        shared,
    );
    auth.providers().spawn_refresher();
    let dp = DataPlane::new(config, log, auth);
    let addresses = bound.describe();
    tracing::info!(%addresses, "listening");
    if let Some(path) = &args.ports_file {
        std::fs::write(path, addresses.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Started { dp, bound })
}

/// The client for identity providers: the system's CAs and `--idp-ca-file`.
fn idp_client(args: &ProxyArgs) -> anyhow::Result<IdpClient> {
    let extra_roots = match &args.idp_ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    IdpClient::with_extra_roots(
        Duration::from_secs(args.idp_timeout),
        extra_roots.as_deref(),
    )
    .context("loading the certificate authorities trusted for identity providers")
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = args.manifests.class.compile_options();
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

async fn run_in_cluster(args: RunArgs) -> anyhow::Result<()> {
    let options = args.class.compile_options();
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
    if gateway_api {
        tracing::info!(
            "Gateway API CRDs found: watching GatewayClasses, Gateways, HTTPRoutes and ReferenceGrants"
        );
    } else {
        tracing::warn!(
            "Gateway API CRDs are not installed (gateway.networking.k8s.io/v1 does not serve httproutes, gateways, gatewayclasses and referencegrants): only Ingresses are served; install the standard CRDs and restart Portcullis to serve Gateways and HTTPRoutes"
        );
    }
    let source = ClusterSource::start(client.clone(), gateway_api);
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
            data_plane: dp.clone(),
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
