//! What the integration tests share: real backend servers on loopback, the
//! `portcullis` binary started on ephemeral ports, and an ALB log-line parser.
#![allow(dead_code)]

pub mod app;
pub mod cluster;
pub mod h2;
pub mod idp;
pub mod keycloak;
pub mod redis;
pub mod tls;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend that answers every request with JSON describing it (its own name, the
/// method, path and headers it received), and echoes bytes after a WebSocket upgrade.
pub struct Backend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &'static str) -> Self {
        Self::start_on(name, std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    pub async fn start_on(name: &'static str, ip: std::net::IpAddr) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(move |req| describe(name, req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

async fn describe(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let upgrade = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v == "websocket");
    if upgrade {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    if req.uri().path().starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
            )
        })
        .collect();
    // Every copy of every header, in order: `headers` keeps one value per name.
    let header_list: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    let (method, path) = (
        req.method().to_string(),
        req.uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let json = serde_json::json!({"backend": name, "method": method, "path": path, "headers": headers, "headerList": header_list, "bodyBytes": body});
    Ok(Response::new(Full::new(Bytes::from(json.to_string()))))
}

/// `portcullis serve` as a process, on ephemeral ports, killed on drop.
pub struct Portcullis {
    child: Child,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub https_offloaded: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub access_log: Arc<Mutex<Vec<String>>>,
    /// Its stderr: the diagnostic log, with the flow-hop lines.
    pub diagnostics: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Portcullis {
    pub fn start(manifests: &Path, extra: &[&str]) -> Self {
        let mut args: Vec<&std::ffi::OsStr> = vec!["serve".as_ref(), "-f".as_ref()];
        args.push(manifests.as_os_str());
        args.extend(
            [
                "--http",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--reload-interval-ms",
                "100",
            ]
            .map(std::ffi::OsStr::new),
        );
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        Self::launch(&args)
    }

    /// Runs the binary with `args` plus `--ports-file`, and waits until it listens.
    pub fn launch(args: &[&std::ffi::OsStr]) -> Self {
        Self::launch_with_env(args, &[])
    }

    pub fn launch_with_env(args: &[&std::ffi::OsStr], env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let dir = TempDir::new("run");
        let ports = dir.path().join("ports.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .envs(env.iter().copied())
            .arg("--ports-file")
            .arg(&ports)
            .env("PORTCULLIS_LOG", "warn,portcullis::flow=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting portcullis");
        let diagnostics = Arc::new(Mutex::new(Vec::new()));
        let sink = diagnostics.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                sink.lock().unwrap().push(line);
            }
        });
        let access_log = Arc::new(Mutex::new(Vec::new()));
        let sink = access_log.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let described: serde_json::Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Ok(v) = serde_json::from_str(&text)
            {
                break v;
            }
            assert!(Instant::now() < deadline, "portcullis did not start");
            assert!(
                child.try_wait().unwrap().is_none(),
                "portcullis exited at start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let addr = |k: &str| described[k].as_str().map(|s| s.parse().unwrap());
        Self {
            child,
            http: addr("http").unwrap(),
            https: addr("https"),
            https_offloaded: addr("https_offloaded"),
            admin: addr("admin").unwrap(),
            access_log,
            diagnostics,
            _dir: dir,
        }
    }

    /// Sends SIGTERM, as Kubernetes does when it stops a Pod.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// The resident memory of the process (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Waits until an access-log line satisfies `pred` and returns it.
    pub async fn log_line(&self, pred: impl Fn(&str) -> bool) -> String {
        wait_for_line(&self.access_log, "access-log", pred).await
    }

    /// Waits until a diagnostic (stderr) line satisfies `pred` and returns it: the
    /// proxy's log reaches the test through a pipe, after the response may have.
    pub async fn diagnostic_line(&self, pred: impl Fn(&str) -> bool) -> String {
        wait_for_line(&self.diagnostics, "diagnostic", pred).await
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

async fn wait_for_line(
    lines: &Mutex<Vec<String>>,
    kind: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| pred(l)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no matching {kind} line in {:#?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series (`name{labels}`, exactly as exported) in a /metrics text;
/// NaN when it is not there.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Runs the binary with `args` and `input` on stdin; returns whether it exited 0 and
/// its stdout.
pub fn run_with_stdin(args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

/// A client that follows no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Waits until `check` holds, polling; panics with `what` after 10 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("portcullis-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes atomically (rename), as editors and config management do.
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.0.join(name)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Service with one EndpointSlice pointing at `addr`.
pub fn service_yaml(name: &str, addrs: &[SocketAddr]) -> String {
    let port = addrs.first().map_or(1, |a| a.port());
    let endpoints: String = addrs
        .iter()
        .map(|a| format!("- addresses: [\"{}\"]\n", a.ip()))
        .collect();
    assert!(addrs.iter().all(|a| a.port() == port), "one port per slice");
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{endpoints}"
    )
}

/// An Ingress with one rule per `(host, path, service)`.
pub fn ingress_yaml(name: &str, rules: &[(&str, &str, &str)], extra_spec: &str) -> String {
    let mut yaml = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  ingressClassName: portcullis\n{extra_spec}  rules:\n"
    );
    for (host, path, service) in rules {
        yaml.push_str(&format!(
            "  - host: \"{host}\"\n    http:\n      paths:\n      - {{path: \"{path}\", pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    yaml
}

/// Splits an ALB access-log line into its fields, honouring quotes.
pub fn alb_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    while chars.peek().is_some() {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => field.extend(chars.next()),
                    '"' => break,
                    c => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        chars.next_if_eq(&' ');
        fields.push(field);
    }
    fields
}

/// ALB's field names in order, then Portcullis's own reason.
pub const ALB_FIELDS: [&str; 31] = [
    "type",
    "time",
    "elb",
    "client:port",
    "target:port",
    "request_processing_time",
    "target_processing_time",
    "response_processing_time",
    "elb_status_code",
    "target_status_code",
    "received_bytes",
    "sent_bytes",
    "request",
    "user_agent",
    "ssl_cipher",
    "ssl_protocol",
    "target_group_arn",
    "trace_id",
    "domain_name",
    "chosen_cert_arn",
    "matched_rule_priority",
    "request_creation_time",
    "actions_executed",
    "redirect_url",
    "error_reason",
    "target:port_list",
    "target_status_code_list",
    "classification",
    "classification_reason",
    "conn_trace_id",
    "portcullis_reason",
];

pub fn alb_record(line: &str) -> std::collections::HashMap<&'static str, String> {
    let fields = alb_fields(line);
    assert_eq!(fields.len(), ALB_FIELDS.len(), "field count of {line}");
    ALB_FIELDS.iter().copied().zip(fields).collect()
}

/// One backend behind `app.example.com/`, served by a fresh Portcullis.
pub struct OneRoute {
    pub backend: Backend,
    pub manifests: TempDir,
    pub proxy: Portcullis,
}

pub async fn one_route(tag: &str) -> OneRoute {
    one_route_with(tag, &[]).await
}

/// `one_route`, Portcullis started with `args` as well.
pub async fn one_route_with(tag: &str, args: &[&str]) -> OneRoute {
    let backend = Backend::start("a").await;
    let manifests = TempDir::new(tag);
    let yaml = format!(
        "{}{}",
        ingress_yaml("web", &[("app.example.com", "/", "svc-a")], ""),
        service_yaml("svc-a", &[backend.addr])
    );
    manifests.write("all.yaml", &yaml);
    let proxy = Portcullis::start(manifests.path(), args);
    OneRoute {
        backend,
        manifests,
        proxy,
    }
}

/// Verifies `x-amzn-oidc-data` with Node's crypto (OpenSSL) and the PEM key, as ALB's
/// documented verifiers do; returns the decoded header and payload.
pub fn verify_alb_data(token: &str, pem: &str) -> Result<serde_json::Value, String> {
    let dir = TempDir::new("alb-data");
    dir.write("key.pem", pem);
    let out = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/idp/verify-alb-data.mjs"
        ))
        .arg(token)
        .arg(dir.path().join("key.pem"))
        .output()
        .expect("running node");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A response read off a raw socket: the status code, the head and the body.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// What the echo backend saw, when the request reached it.
    pub fn backend(&self) -> Option<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .filter(|v| v.get("backend").is_some())
    }
}

/// Sends `request` exactly as given (it should ask for `Connection: close`) and reads
/// the whole response, undoing chunked encoding.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

/// A whole HTTP/1.1 response as read off a socket (nothing read: status 0).
pub fn parse_response(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    RawResponse {
        status,
        head: head.to_owned(),
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The GatewayClass `portcullis` and its Gateway `apps/edge`, one HTTP listener at port
/// 80: what the Gateway API tests from files attach their routes to.
pub const EDGE_GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: portcullis.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: apps}\nspec:\n  gatewayClassName: portcullis\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";
