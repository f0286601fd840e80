//! A real Keycloak (the Quarkus distribution and a Java 25 runtime, which
//! tests/keycloak/build.sh fetches), started once for the whole test binary on a free
//! loopback port with the realm of tests/keycloak/realm.json; its Admin REST API; and a
//! browser's walk through its login form.
//!
//! The server outlives every test that uses it and dies with the test process: it is
//! spawned by a thread that never ends, with `PR_SET_PDEATHSIG`, so the kernel sends it
//! SIGTERM when the process goes, however it goes.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::idp::Callback;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const REALM: &str = "portcullis";
/// The master realm's administrator, made at the first start (an in-memory database).
const ADMIN: (&str, &str) = ("admin", "admin-password");
/// The first start of a fresh distribution also builds it (Quarkus augmentation), and
/// CI starts it on a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(480);

pub struct Keycloak {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The realm's issuer, `<base>/realms/portcullis`.
    pub issuer: String,
}

static KEYCLOAK: OnceCell<Result<Keycloak, String>> = OnceCell::const_new();

/// The test binary's Keycloak, started by the first test that asks.
pub async fn keycloak() -> &'static Keycloak {
    match KEYCLOAK.get_or_init(start).await {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

/// The last lines Keycloak printed, and its exit status once it has one.
#[derive(Default)]
struct Output {
    lines: VecDeque<String>,
    exited: Option<String>,
}

impl Output {
    fn tail(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        lines.join("\n")
    }
}

/// Starts Keycloak on a free port, and again on another if something took that port
/// between choosing it and Keycloak's bind (a start that failed so costs seconds).
async fn start() -> Result<Keycloak, String> {
    let dist = dist_dir()?;
    let mut attempt = 1;
    loop {
        match start_on(&dist, free_port()).await {
            Err(Failed::PortTaken(why)) if attempt < 3 => {
                eprintln!(
                    "Keycloak's port was taken (attempt {attempt}), choosing another:\n{why}"
                );
                attempt += 1;
            }
            Err(Failed::PortTaken(why) | Failed::Other(why)) => return Err(why),
            Ok(keycloak) => return Ok(keycloak),
        }
    }
}

enum Failed {
    PortTaken(String),
    Other(String),
}

impl From<String> for Failed {
    fn from(why: String) -> Self {
        Failed::Other(why)
    }
}

async fn start_on(dist: &std::path::Path, port: u16) -> Result<Keycloak, Failed> {
    let base = format!("http://127.0.0.1:{port}");
    let issuer = format!("{base}/realms/{REALM}");
    let import = dist.join("keycloak/data/import");
    std::fs::create_dir_all(&import).map_err(|e| e.to_string())?;
    // A rename, so a second test binary starting at the same moment reads a whole file.
    let staged = import.join(format!(".realm-{}.json.tmp", std::process::id()));
    std::fs::copy(format!("{ROOT}/tests/keycloak/realm.json"), &staged)
        .and_then(|_| std::fs::rename(&staged, import.join("portcullis-realm.json")))
        .map_err(|e| e.to_string())?;
    let output = spawn(dist, port)?;
    let began = Instant::now();
    // A deadline per request: whatever took the port may accept and never answer,
    // and only a loop that comes round sees that Keycloak has exited.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    loop {
        if let Ok(r) = http.get(&discovery).send().await
            && r.status() == 200
        {
            let doc: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            if doc["issuer"] != issuer.as_str() {
                return Err(Failed::Other(format!(
                    "Keycloak's issuer is {}, not {issuer}",
                    doc["issuer"]
                )));
            }
            eprintln!(
                "Keycloak answered discovery {:?} after it was started",
                began.elapsed()
            );
            return Ok(Keycloak { base, issuer });
        }
        if let Some(failed) = not_starting(&output.lock().unwrap(), began) {
            return Err(failed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Why Keycloak will not answer, once that is known.
fn not_starting(out: &Output, began: Instant) -> Option<Failed> {
    if let Some(status) = &out.exited {
        let why = format!("Keycloak exited ({status}):\n{}", out.tail());
        // "Port already bound: <port>: Address already in use"; this port is the only
        // one it binds in this mode.
        return Some(if out.lines.iter().any(|l| l.contains("already in use")) {
            Failed::PortTaken(why)
        } else {
            Failed::Other(why)
        });
    }
    (began.elapsed() > START_DEADLINE).then(|| {
        Failed::Other(format!(
            "Keycloak did not start in {START_DEADLINE:?}:\n{}",
            out.tail()
        ))
    })
}

/// Runs tests/keycloak/build.sh (nothing to do once .cache has it) for the directory
/// with `keycloak/` and `java/`.
fn dist_dir() -> Result<PathBuf, String> {
    let out = Command::new(format!("{ROOT}/tests/keycloak/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("tests/keycloak/build.sh: {e}"))?;
    if !out.status.success() {
        return Err("tests/keycloak/build.sh failed (scripts/test.sh runs it)".into());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kc.sh start-dev`: development mode (HTTP, no theme caching), an in-memory database
/// (a fresh realm each run), a local cache, and a modest heap. No health or metrics
/// endpoints: they would open a management port (9000), which another checkout's run
/// may hold; readiness is the realm's discovery document.
fn command(dist: &std::path::Path, port: u16) -> Command {
    let mut cmd = Command::new(dist.join("keycloak/bin/kc.sh"));
    cmd.args(["start-dev", "--import-realm"])
        .arg(format!("--http-port={port}"))
        .arg("--http-host=127.0.0.1")
        .arg(format!("--hostname=http://127.0.0.1:{port}"))
        .args(["--db=dev-mem", "--cache=local"])
        .env("JAVA_HOME", dist.join("java"))
        .env("JAVA_OPTS_KC_HEAP", "-Xms64m -Xmx512m")
        // The client compiler alone: it starts on about half the CPU time (20 s instead
        // of 36 s here), and the tests make a few dozen requests.
        .env("JAVA_OPTS_APPEND", "-XX:TieredStopAtLevel=1")
        .env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN.0)
        .env("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Starts Keycloak from a thread that lives as long as the process (the death signal
/// follows the spawning thread, not the process) and keeps its last output lines.
fn spawn(dist: &std::path::Path, port: u16) -> Result<Arc<Mutex<Output>>, String> {
    let output = Arc::new(Mutex::new(Output::default()));
    let (started, result) = std::sync::mpsc::channel();
    let mut cmd = command(dist, port);
    let keeper = output.clone();
    std::thread::Builder::new()
        .name("keycloak".into())
        .spawn(move || {
            let mut child = match cmd.spawn() {
                Ok(child) => child,
                Err(e) => return started.send(Err(format!("starting kc.sh: {e}"))).unwrap(),
            };
            keep_lines(child.stdout.take().unwrap(), keeper.clone());
            keep_lines(child.stderr.take().unwrap(), keeper.clone());
            started.send(Ok(())).unwrap();
            let status = child.wait();
            keeper.lock().unwrap().exited = Some(format!("{status:?}"));
        })
        .map_err(|e| e.to_string())?;
    result.recv().map_err(|e| e.to_string())??;
    Ok(output)
}

fn keep_lines(stream: impl Read + Send + 'static, output: Arc<Mutex<Output>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut out = output.lock().unwrap();
            if out.lines.len() == 200 {
                out.lines.pop_front();
            }
            out.lines.push_back(line);
        }
    });
}

impl Keycloak {
    /// A bearer token of the master realm's administrator (they live a minute, so
    /// each call takes a fresh one).
    async fn admin_token(&self) -> String {
        let r = reqwest::Client::new()
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.base
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", ADMIN.0),
                ("password", ADMIN.1),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "admin login: {:?}", r.text().await);
        let body: serde_json::Value = r.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A request to the realm's Admin REST API (`path` after `/admin/realms/portcullis`).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let url = format!("{}/admin/realms/{REALM}{path}", self.base);
        let mut req = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(self.admin_token().await);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.unwrap()
    }

    async fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = self.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// Registers `client` (a ClientRepresentation) and returns the secret Keycloak
    /// made for it, as an administrator copies it from the Credentials tab.
    pub async fn register_client(&self, client: &serde_json::Value) -> String {
        let r = self
            .admin(reqwest::Method::POST, "/clients", Some(client))
            .await;
        assert_eq!(
            r.status(),
            201,
            "registering {client}: {:?}",
            r.text().await
        );
        let id = self.client_uuid(client["clientId"].as_str().unwrap()).await;
        let secret = self
            .admin_json(&format!("/clients/{id}/client-secret"))
            .await;
        secret["value"].as_str().unwrap().to_owned()
    }

    async fn client_uuid(&self, client_id: &str) -> String {
        let found = self
            .admin_json(&format!("/clients?clientId={client_id}"))
            .await;
        found[0]["id"].as_str().unwrap().to_owned()
    }

    /// The user's id: `sub` in Keycloak's tokens.
    pub async fn user_id(&self, username: &str) -> String {
        let found = self
            .admin_json(&format!("/users?username={username}&exact=true"))
            .await;
        found[0]["id"].as_str().unwrap().to_owned()
    }

    /// Ends one session, as "Sign out" on the Sessions tab of the admin console does.
    /// Keycloak sends its back-channel logouts before it answers.
    pub async fn end_session(&self, session_id: &str) {
        let path = format!("/sessions/{session_id}");
        let r = self.admin(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(r.status(), 204, "DELETE {path}: {:?}", r.text().await);
    }
}

/// Follows redirects from `start` and fills in Keycloak's login form as `username`,
/// until the browser is sent to a URL starting with `redirect_uri`. A browser that
/// still has a Keycloak session goes through without a form.
pub async fn log_in(
    browser: &reqwest::Client,
    start: &str,
    redirect_uri: &str,
    username: &str,
) -> Callback {
    let mut next = reqwest::Url::parse(start).unwrap();
    let mut form: Option<Vec<(&str, String)>> = None;
    for _ in 0..8 {
        let resp = match form.take() {
            Some(fields) => browser.post(next.clone()).form(&fields).send().await,
            None => browser.get(next.clone()).send().await,
        }
        .unwrap();
        if resp.status().is_redirection() {
            let location = resp.headers()["location"].to_str().unwrap();
            next = next.join(location).unwrap();
            if next.as_str().starts_with(redirect_uri) {
                return callback(next);
            }
            continue;
        }
        let page = resp.text().await.unwrap();
        let action = login_form_action(&page)
            .unwrap_or_else(|| panic!("no login form and no redirect at {next}:\n{page}"));
        next = next.join(&action).unwrap();
        form = Some(vec![
            ("username", username.to_owned()),
            ("password", format!("{username}-password")),
            ("credentialId", String::new()),
        ]);
    }
    panic!("Keycloak did not send the browser to {redirect_uri}");
}

/// The login form's `action` (Keycloak's `kc-form-login`), unescaped.
pub fn login_form_action(page: &str) -> Option<String> {
    let form = regex_lite::Regex::new(r#"<form\s[^>]*id="kc-form-login"[^>]*>"#).unwrap();
    let action = regex_lite::Regex::new(r#"\saction="([^"]*)""#).unwrap();
    let tag = form.find(page)?.as_str();
    let raw = action.captures(tag)?.get(1)?.as_str();
    Some(raw.replace("&amp;", "&"))
}

fn callback(url: reqwest::Url) -> Callback {
    let q = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    Callback {
        code: q("code"),
        state: q("state"),
        error: q("error"),
        url: url.to_string(),
    }
}
