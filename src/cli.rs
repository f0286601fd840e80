//! The command line: every subcommand and flag, as `--help` shows them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use portcullis::auth::shared::WhenUnavailable;
use portcullis::compile::CompileOptions;
use portcullis::observe::access_log::LogFormat;
use portcullis::proxy::canonical::{Ambiguity, DEFAULT_DROPPED_HEADERS};
use portcullis::proxy::{IpNet, ListenerName};

/// Kubernetes ingress controller that logs people in at the edge (ALB authenticate-oidc compatible).
#[derive(Parser)]
#[command(name = "portcullis", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Print the AuthRule CustomResourceDefinition as YAML, or its field reference.
    #[command(
        after_help = "Examples:\n  portcullis crd | kubectl apply -f -\n  portcullis crd --markdown > docs/reference/authrule.md"
    )]
    Crd(CrdArgs),
    /// Check AuthRules against their providers from here: discovery and issuer, keys,
    /// endpoints, client credentials, clock skew, and a real login per redirect URI the
    /// rule's logins send (the provider's login page passes; its error page or error
    /// redirect fails with its words and the fix). No credentials are entered. Reads
    /// manifest files with -f, else the cluster (in-cluster config or KUBECONFIG).
    /// Exits 1 when a check fails.
    #[command(
        after_help = "Examples:\n  portcullis diagnose --rule apps/sso\n  portcullis diagnose -f manifests/ --idp-ca-file corp-ca.pem"
    )]
    Diagnose(DiagnoseArgs),
    /// Explain what went wrong, from artefacts people bring.
    #[command(subcommand)]
    Explain(ExplainCommand),
    /// Print the public JWKS of a private key (PEM) for `private_key_jwt`: what to
    /// register at the provider for a client whose AuthRule names the key in
    /// `spec.oidc.clientKeyRef`. The `kid` is the key's RFC 7638 thumbprint, as in
    /// the client assertions Portcullis signs.
    #[command(
        after_help = "Example:\n  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out client.key\n  portcullis client-jwks -f client.key > client-jwks.json"
    )]
    ClientJwks(ClientJwksArgs),
    /// Run the whole login on this machine: a development OpenID provider, an echo
    /// backend that shows the identity headers, and the proxy guarding /auth*.
    #[command(
        after_help = "Example:\n  portcullis demo --port 8080   # then open http://localhost:8080/auth/"
    )]
    Demo(DemoArgs),
}

#[derive(Args)]
pub struct ClientJwksArgs {
    /// The PEM private key file (RSA or P-256).
    #[arg(short = 'f', long = "filename")]
    pub key: PathBuf,
}

#[derive(Args)]
pub struct CrdArgs {
    /// Print every field with its type, default and description as Markdown instead.
    #[arg(long)]
    pub markdown: bool,
}

#[derive(Args)]
pub struct DiagnoseArgs {
    /// Manifest files or directories; without any, the cluster is read.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Only this AuthRule (`namespace/name`).
    #[arg(long)]
    pub rule: Option<String>,
    #[command(flatten)]
    pub class: ClassArgs,
    /// Seconds to wait for each answer of the provider.
    #[arg(long, default_value_t = 5)]
    pub idp_timeout: u64,
    /// PEM certificates of a private CA the provider's certificate chains to.
    #[arg(long, env = "PORTCULLIS_IDP_CA_FILE")]
    pub idp_ca_file: Option<PathBuf>,
    /// Where the ServiceAccount tokens of federated client credentials are mounted
    /// (as for `run`); the credentials check of such a rule reads its token there.
    #[arg(
        long,
        env = "PORTCULLIS_SERVICE_ACCOUNT_TOKEN_DIR",
        default_value = portcullis::auth::client_assertion::DEFAULT_TOKEN_DIR
    )]
    pub service_account_token_dir: PathBuf,
    /// The port browsers reach the hosts on over plain HTTP (the Service's, not the
    /// container's): it is part of the redirect URI logins send.
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// The port browsers reach the hosts on over HTTPS.
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
}

#[derive(Subcommand)]
pub enum ExplainCommand {
    /// Group the failed requests of ALB-format access logs (Portcullis's or a real
    /// ALB's) by error_reason, and explain each group with the likely fix.
    #[command(
        after_help = "Example (--tail=-1: with -l, kubectl logs shows only the last 10 lines of each pod otherwise):\n  kubectl logs -n portcullis-system -l app.kubernetes.io/name=portcullis --tail=-1 --prefix | portcullis explain logs"
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
        after_help = "Example (the reference from an error page; --tail=-1: with -l, kubectl logs shows only the last 10 lines of each pod otherwise):\n  kubectl logs -n portcullis-system -l app.kubernetes.io/name=portcullis --tail=-1 --prefix | portcullis explain flow 1-6b0595e6-218072abd8411a33ba4b5bec"
    )]
    Flow {
        /// A flow id, or any trace id of the flow (the reference on an error page).
        id: String,
        /// A log file, or - (the default) for standard input.
        file: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct DemoArgs {
    /// The proxy's port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    pub ports_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ManifestArgs {
    /// A manifest file or a directory of them (repeatable; multi-document YAML).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub class: ClassArgs,
}

#[derive(Args)]
pub struct ClassArgs {
    /// The IngressClass name served even without an IngressClass object naming us.
    #[arg(long, env = "PORTCULLIS_INGRESS_CLASS", default_value = "portcullis")]
    pub ingress_class: String,
    /// Also serve Ingresses that name no IngressClass.
    #[arg(long)]
    pub watch_ingress_without_class: bool,
    /// namespace/name of a kubernetes.io/tls Secret used when no certificate matches SNI.
    #[arg(long)]
    pub default_certificate: Option<String>,
    /// Let Ingresses of any namespace add paths to any host. By default a host belongs
    /// to the namespace of its oldest Ingress, and other namespaces need its
    /// `portcullis.dev/share-host-with` annotation.
    #[arg(long, env = "PORTCULLIS_ALLOW_SHARED_HOSTS")]
    pub allow_shared_hosts: bool,
    /// Match Ingress paths, AuthRule path patterns and logout paths without regard to
    /// case, for backends that route that way (Express, ASP.NET, IIS).
    #[arg(long, env = "PORTCULLIS_CASE_INSENSITIVE_PATHS")]
    pub case_insensitive_paths: bool,
    /// Close (503 AuthRulePending) every route that no AuthRule guards, unless its
    /// Ingress or HTTPRoute is annotated `portcullis.dev/auth: none`.
    #[arg(long, env = "PORTCULLIS_REQUIRE_AUTH_RULE")]
    pub require_auth_rule: bool,
    /// ALB access-control annotations Portcullis cannot honour whose difference is
    /// accepted for every Ingress (comma separated: scheme, wafv2-acl-arn,
    /// wafv2-acl-name, waf-acl-id, shield-advanced-protection, security-groups,
    /// security-group-prefix-lists, frontend-nlb-security-groups,
    /// mutual-authentication), e.g. `scheme` when Portcullis itself is reachable only
    /// from the private network. Per Ingress: `portcullis.dev/accept-alb-differences`.
    #[arg(long, env = "PORTCULLIS_ACCEPT_ALB_DIFFERENCES", value_delimiter = ',')]
    pub accept_alb_differences: Vec<String>,
    /// An address range (CIDR) each Gateway gets an address of its own from: its
    /// listeners are opened there at their own ports (any port; binding below 1024
    /// needs CAP_NET_BIND_SERVICE), its status shows the address, and its routes serve
    /// nowhere else. The range must be local to this machine (a loopback range, or
    /// addresses routed to it). Without it, every Gateway is served on --http and
    /// --https by protocol, whatever its listeners' ports.
    #[arg(long, env = "PORTCULLIS_GATEWAY_ADDRESSES", value_name = "CIDR")]
    pub gateway_addresses: Option<ipnet::IpNet>,
    /// Client certificates on the HTTPS listener, for hosts whose Ingress sets none (and
    /// clients that send no SNI): off; passthrough (asked for, passed on unverified in
    /// X-Amzn-Mtls-Clientcert); verify (the handshake refuses a client without one
    /// --trust-store vouches for). Per Ingress: `portcullis.dev/mutual-authentication`.
    #[arg(
        long,
        env = "PORTCULLIS_MUTUAL_AUTHENTICATION",
        value_enum,
        default_value = "off"
    )]
    pub mutual_authentication: MtlsMode,
    /// namespace/name of the trust store of --mutual-authentication verify: a Secret
    /// (PEM CA certificates in ca.crt, CRLs in ca.crl) or a ConfigMap (ca-bundle.crt).
    #[arg(
        long,
        env = "PORTCULLIS_TRUST_STORE",
        required_if_eq("mutual_authentication", "verify")
    )]
    pub trust_store: Option<String>,
    /// With --mutual-authentication verify, accept a client certificate that has
    /// expired (or is not valid yet) when it is otherwise valid.
    #[arg(long, env = "PORTCULLIS_IGNORE_CLIENT_CERTIFICATE_EXPIRY")]
    pub ignore_client_certificate_expiry: bool,
}

/// What the HTTPS listener asks of clients' certificates by default.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MtlsMode {
    Off,
    Passthrough,
    Verify,
}

impl ClassArgs {
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            ingress_class: self.ingress_class.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            default_certificate: self.default_certificate.clone(),
            allow_shared_hosts: self.allow_shared_hosts,
            case_insensitive_paths: self.case_insensitive_paths,
            require_auth_rule: self.require_auth_rule,
            accept_alb_differences: self.accept_alb_differences.clone(),
            gateway_addresses: self.gateway_addresses.map(|n| n.trunc()),
            redis: false,
            mutual_authentication: self.mutual_authentication(),
        }
    }

    fn mutual_authentication(&self) -> Option<portcullis::compile::mtls::Setting> {
        use portcullis::compile::mtls::Setting;
        match self.mutual_authentication {
            MtlsMode::Off => None,
            MtlsMode::Passthrough => Some(Setting::Passthrough),
            MtlsMode::Verify => Some(Setting::Verify {
                trust_store: self.trust_store.clone().unwrap_or_default(),
                ignore_expiry: self.ignore_client_certificate_expiry,
                advertise_ca_names: false,
            }),
        }
    }
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Output: text for people, json for machines (CI annotations).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: CheckOutput,
    /// The Redis the deployment runs with (its --redis-url): AuthRules with
    /// spec.session.store: redis are errors without one. Only its presence is checked.
    #[arg(long, env = "PORTCULLIS_REDIS_URL")]
    pub redis_url: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CheckOutput {
    Text,
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// How often the manifest files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub reload_interval_ms: u64,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub class: ClassArgs,
    /// Secret (in --namespace) holding the session and signing keys; made with fresh
    /// keys when missing. Ignored when key files are given.
    #[arg(
        long,
        env = "PORTCULLIS_KEYS_SECRET",
        default_value = "portcullis-keys"
    )]
    pub keys_secret: String,
    /// The namespace Portcullis runs in (its keys Secret and leader Lease live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "portcullis-system")]
    pub namespace: String,
    /// This replica's name in the leader Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The controller's Service (`namespace/name`) whose load-balancer address served
    /// Ingresses get in `status.loadBalancer`.
    #[arg(long, env = "PORTCULLIS_PUBLISH_SERVICE")]
    pub publish_service: Option<String>,
    /// A fixed IP or host name for `status.loadBalancer` instead of the Service's.
    #[arg(long)]
    pub publish_address: Option<String>,
    /// Serve only; never write status or Events (no Lease either).
    #[arg(long)]
    pub no_status: bool,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Args)]
pub struct ProxyArgs {
    /// Plain HTTP listener.
    #[arg(long, env = "PORTCULLIS_HTTP", default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
    /// HTTPS listener (certificates from the Ingresses' spec.tls Secrets).
    #[arg(long, env = "PORTCULLIS_HTTPS")]
    pub https: Option<SocketAddr>,
    /// Plain listener for HTTPS whose TLS a load balancer in front ended (an AWS NLB
    /// TLS listener with an ACM certificate): its requests count as HTTPS (guards serve
    /// them, no redirect to HTTPS, X-Forwarded-Proto: https). Only that load balancer
    /// may reach it.
    #[arg(long, env = "PORTCULLIS_HTTPS_OFFLOADED")]
    pub https_offloaded: Option<SocketAddr>,
    /// Listeners whose connections start with a PROXY protocol header, v1 or v2
    /// (comma separated: http, https, https-offloaded): its source address is the
    /// client's everywhere (X-Forwarded-For, access log, inbound-cidrs, per-client
    /// caps). A connection without a valid header is closed. Only the load balancer
    /// that writes the header may reach these listeners.
    #[arg(
        long,
        env = "PORTCULLIS_PROXY_PROTOCOL",
        value_delimiter = ',',
        value_enum
    )]
    pub proxy_protocol: Vec<ListenerName>,
    /// Admin listener: /metrics, /healthz, /readyz, /keys, and /flows (to loopback
    /// peers only, unless --expose-flows).
    #[arg(long, env = "PORTCULLIS_ADMIN", default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Serve the login flow records (/flows: subjects, providers' errors) to any peer
    /// of the admin listener, not only loopback (kubectl port-forward).
    #[arg(long, env = "PORTCULLIS_EXPOSE_FLOWS")]
    pub expose_flows: bool,
    /// Port that HTTP-to-HTTPS redirects point at (default: the --https port).
    #[arg(long)]
    pub https_redirect_port: Option<u16>,
    /// Don't redirect HTTP to HTTPS for hosts that have a certificate.
    #[arg(long)]
    pub no_https_redirect: bool,
    /// Access-log format.
    #[arg(long, value_enum, default_value = "alb")]
    pub log_format: LogFormat,
    /// Name in the access log's `elb` field.
    #[arg(long, default_value = "portcullis")]
    pub log_name: String,
    /// Peer address or CIDR whose forwarding headers are trusted (repeatable): its
    /// X-Forwarded-For names the client, and its X-Forwarded-Proto or Forwarded
    /// proto=https makes the request HTTPS (TLS ended at that load balancer).
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<IpNet>,
    /// Seconds to wait for an upstream's response headers.
    #[arg(long, default_value_t = 60)]
    pub upstream_timeout: u64,
    /// Seconds to wait for an upstream connection.
    #[arg(long, default_value_t = 5)]
    pub upstream_connect_timeout: u64,
    /// Seconds a connection to a pod is kept open unused before it is closed. Keep it
    /// below the pods' own keep-alive timeout (Node.js: 5 s), so a pod never closes
    /// a connection just as a request is sent on it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_idle_timeout: u64,
    /// Seconds a client has to send its request headers (and, on a --proxy-protocol
    /// listener, its PROXY header before them).
    #[arg(long, default_value_t = 30)]
    pub header_read_timeout: u64,
    /// The `signer` field of x-amzn-oidc-data (ALB puts its load balancer ARN there);
    /// `{namespace}`, `{name}` and `{id}` stand for the AuthRule's, so each rule signs
    /// as itself.
    #[arg(long, env = "PORTCULLIS_SIGNER", default_value = portcullis::auth::identity::DEFAULT_SIGNER)]
    pub signer: String,
    /// Session keys: one base64-encoded 32-byte key a line, newest first (older lines
    /// still open existing sessions). Without it a key is made at start, and sessions
    /// end when Portcullis restarts.
    #[arg(long, env = "PORTCULLIS_SESSION_KEYS_FILE")]
    pub session_keys_file: Option<PathBuf>,
    /// The P-256 key (PKCS#8 PEM) that signs x-amzn-oidc-data. Without it a key is made
    /// at start.
    #[arg(long, env = "PORTCULLIS_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// During a signing-key rollout: the key being replaced (PKCS#8 PEM), published at
    /// /keys and --public-keys-path beside the signing key but not used to sign, so
    /// replicas still signing with it are verified by keys any replica serves.
    #[arg(long, env = "PORTCULLIS_PREVIOUS_SIGNING_KEY_FILE")]
    pub previous_signing_key_file: Option<PathBuf>,
    /// During a signing-key rollout: the key that will replace the signing key,
    /// published (not used to sign) before the replicas switch to it.
    #[arg(long, env = "PORTCULLIS_NEXT_SIGNING_KEY_FILE")]
    pub next_signing_key_file: Option<PathBuf>,
    /// Seconds to wait for the identity provider (token, userinfo, discovery).
    #[arg(long, default_value_t = 5)]
    pub idp_timeout: u64,
    /// PEM certificates of a private certificate authority that identity providers'
    /// TLS certificates chain to (trusted besides the system's).
    #[arg(long, env = "PORTCULLIS_IDP_CA_FILE")]
    pub idp_ca_file: Option<PathBuf>,
    /// Where ServiceAccount tokens for federated client credentials are mounted: an
    /// AuthRule of namespace N with `serviceAccountTokenAudience: A` sends the token
    /// in `<dir>/N/<A percent-encoded>`, read afresh at each token request.
    #[arg(
        long,
        env = "PORTCULLIS_SERVICE_ACCOUNT_TOKEN_DIR",
        default_value = portcullis::auth::client_assertion::DEFAULT_TOKEN_DIR
    )]
    pub service_account_token_dir: PathBuf,
    /// Open client connections allowed on each listener (HTTP, HTTPS); as nine tenths
    /// are reached the longest-idle keep-alive connections are closed, and at the cap
    /// a new connection is closed at once. 0: no cap.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// Open connections allowed per client address on each listener (peers in
    /// --trusted-proxies are exempt); the client's own idle keep-alive connections
    /// make room first. 0: no cap.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 512
    )]
    pub max_connections_per_client: usize,
    /// Also serve the x-amzn-oidc-data keys on every host at this path
    /// (`<path>/<kid>` PEM, `<path>` JWKS), e.g. /.well-known/portcullis-keys.
    #[arg(long)]
    pub public_keys_path: Option<String>,
    /// Repeated slashes in a path (`//admin`): normalize merges them, reject answers
    /// 400, keep passes them on (only when every backend keeps them too).
    #[arg(long, value_enum, default_value = "normalize")]
    pub repeated_slashes: Ambiguity,
    /// `%2F`, `%5C` and `\` in a path: reject answers 400, normalize reads each as `/`,
    /// keep passes them on encoded (only when no backend decodes them before routing).
    #[arg(long, value_enum, default_value = "reject")]
    pub escaped_slashes: Ambiguity,
    /// `;` parameters in a path segment (`/admin;x/users`): reject answers 400,
    /// normalize drops them (as Tomcat and Jetty read them), keep passes them on.
    #[arg(long, value_enum, default_value = "reject")]
    pub path_parameters: Ambiguity,
    /// Forward the path as the client sent it instead of the canonical path that was
    /// routed and guarded (for backends that need the original bytes).
    #[arg(long)]
    pub forward_original_path: bool,
    /// A client request header never forwarded (repeatable; replaces the default
    /// list). The x-amzn-oidc-* identity headers are always removed.
    #[arg(long = "drop-request-header", default_values_t = DEFAULT_DROPPED_HEADERS.iter().map(|h| h.to_string()))]
    pub drop_request_headers: Vec<String>,
    /// Forward client request headers with `_` in their names. By default they are
    /// dropped, as nginx does: CGI-style servers read `x_forwarded_host` as
    /// `X-Forwarded-Host`.
    #[arg(long)]
    pub underscores_in_headers: bool,
    /// Keep revocations (back- and front-channel logouts), used logout-token ids and
    /// refresh locks in Redis (`redis://host:6379/0`, `rediss://` for TLS), shared by
    /// every replica, and the sessions of AuthRules with `spec.session.store: redis`.
    /// Without it they live in each replica's memory.
    #[arg(long, env = "PORTCULLIS_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Milliseconds to wait for Redis (connecting and each command).
    #[arg(long, default_value_t = 500)]
    pub redis_timeout_ms: u64,
    /// What sessions get while Redis cannot be reached: refuse answers 503 (a logout
    /// announced meanwhile could not be seen), allow serves them on the revocations
    /// known so far. Sessions kept in Redis (`spec.session.store: redis`) get 503
    /// either way.
    #[arg(long, value_enum, default_value = "refuse")]
    pub redis_unavailable: WhenUnavailable,
    /// Seconds a login that sent the browser to the provider waits for the callback
    /// before it counts as abandoned: its flow record, the metric
    /// portcullis_auth_logins_abandoned_total and the AuthRule's
    /// status.recentAbandonedLogins then show it (the provider refused the client or
    /// redirect URI, or the user gave up).
    #[arg(long, env = "PORTCULLIS_LOGIN_ABANDONED_AFTER", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_abandoned_after: u64,
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    pub ports_file: Option<PathBuf>,
}
