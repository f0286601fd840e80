//! The docs are checked like code: their relative links resolve (files and headings),
//! the manifests they show pass `portcullis check`, the files quickstart logs in as
//! written, and the `x-amzn-oidc-data` verification snippets (Python, Go, Node.js,
//! aws-jwt-verify) are run from the page against a header a running Portcullis made
//! after a real login at the certified provider.

use crate::common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use common::app::{browser, log_in_at, seen_by_backend, setup_rule};
use common::idp::{Idp, log_in};
use common::*;
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What a Markdown page holds that a test can check.
#[derive(Default)]
struct Page {
    links: Vec<String>,
    anchors: HashSet<String>,
    /// Fenced code blocks: the info string and the code.
    blocks: Vec<(String, String)>,
}

/// The README, the project's policy pages, the chart's README, every page under docs/
/// and the cluster quickstart's README.
fn pages() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [
        "README.md",
        "CHANGELOG.md",
        "SECURITY.md",
        "charts/portcullis/README.md",
    ]
    .iter()
    .map(|p| PathBuf::from(ROOT).join(p))
    .collect();
    paths.extend(markdown_under(&PathBuf::from(ROOT).join("docs")));
    paths.extend(markdown_under(
        &PathBuf::from(ROOT).join("deploy/examples/quickstart"),
    ));
    paths
}

/// The Markdown files under `dir` and its subdirectories, sorted.
fn markdown_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap();
    let mut page = Page::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<String> = None;
    let mut block: Option<(String, String)> = None;
    for event in Parser::new_ext(&text, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let slug = github_slug(&heading.take().unwrap_or_default());
                // GitHub numbers repeated headings: x, x-1, x-2.
                let n = seen.entry(slug.clone()).or_default();
                page.anchors.insert(match *n {
                    0 => slug,
                    n => format!("{slug}-{n}"),
                });
                *n += 1;
            }
            Event::Start(Tag::Link { dest_url, .. }) => page.links.push(dest_url.into_string()),
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                block = Some((info.into_string(), String::new()));
            }
            Event::End(TagEnd::CodeBlock) => page.blocks.extend(block.take()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
                if let Some((_, code)) = block.as_mut() {
                    code.push_str(&t);
                }
            }
            _ => {}
        }
    }
    page
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as `-`.
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn relative_links_in_the_readme_and_docs_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for path in pages() {
        let page = read(&path);
        let dir = path.parent().unwrap();
        for link in &page.links {
            if link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                path.clone()
            } else {
                dir.join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", path.display()));
                continue;
            }
            let is_page = target.extension().is_some_and(|e| e == "md");
            if !anchor.is_empty() && is_page && !read(&target).anchors.contains(anchor) {
                broken.push(format!("{}: {link} (no such heading)", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 20, "the links were found ({checked})");
}

/// Code blocks marked ```` ```yaml check [--flag=value ...] [Reason ...] ```` are
/// manifests `portcullis check` reads with exactly the named reasons, besides the ready
/// endpoints that Pods give a Service in a cluster.
#[test]
fn manifests_in_the_docs_pass_check() {
    let mut checked = 0;
    for path in pages() {
        for (info, code) in read(&path).blocks {
            let mut words = info.split_whitespace();
            if words.next() != Some("yaml") || words.next() != Some("check") {
                continue;
            }
            let (flags, expected): (Vec<&str>, Vec<&str>) =
                words.partition(|w| w.starts_with("--"));
            let mut args = vec!["check", "-f", "-", "-o", "json"];
            args.extend(flags);
            let (_, out) = run_with_stdin(&args, &code);
            let report: serde_json::Value = serde_json::from_str(&out)
                .unwrap_or_else(|_| panic!("{}: check printed {out}", path.display()));
            let reasons: BTreeSet<&str> = report["problems"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| {
                    !p["message"]
                        .as_str()
                        .unwrap()
                        .ends_with("has no ready endpoints")
                })
                .map(|p| p["reason"].as_str().unwrap())
                .collect();
            assert_eq!(
                reasons,
                expected.into_iter().collect(),
                "{}: a manifest block of the page: {report:#}",
                path.display()
            );
            assert!(
                report["summary"]["routes"].as_u64().unwrap() > 0,
                "{report}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "the marked manifests were found ({checked})");
}

/// Statements that contradicted the code once: each names a feature that has landed
/// (bearer tokens, Redis for replicas, HTTPRoute rewrites, Gateway API targets), so a
/// page saying otherwise is stale.
#[test]
fn no_page_denies_what_has_landed() {
    let stale = [
        (
            "not yet (main",
            "a feature marked as coming that may have landed",
        ),
        ("request rewriting, plugins", "HTTPRoute URLRewrite ships"),
        (
            "target that is not an Ingress, an `http://`",
            "targets may be HTTPRoutes and Gateways",
        ),
        ("Auto-generated derived type", "the CRD's description"),
    ];
    let mut found = Vec::new();
    let mut paths = pages();
    paths.push(PathBuf::from(ROOT).join("crds/authrule.yaml"));
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        // Phrases are matched across line breaks.
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for (phrase, why) in stale {
            if text.contains(phrase) {
                found.push(format!("{}: {phrase:?} ({why})", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "stale statements:\n{}", found.join("\n"));
}

/// Every AuthRule of the provider guides (docs/providers/*.md) passes `portcullis check`
/// beside the Ingress, Service and client Secret it names, so the examples stay valid as
/// the CRD changes.
#[test]
fn the_provider_guides_authrules_pass_check() {
    let mut checked = Vec::new();
    for path in markdown_under(&PathBuf::from(ROOT).join("docs/providers")) {
        for (info, code) in read(&path).blocks {
            if info.split_whitespace().next() != Some("yaml") || !code.contains("kind: AuthRule") {
                continue;
            }
            let rule: serde_json::Value = serde_saphyr::from_multiple::<serde_json::Value>(&code)
                .unwrap()
                .into_iter()
                .find(|d| d["kind"] == "AuthRule")
                .unwrap();
            assert_eq!(rule["metadata"]["namespace"], "apps", "{}", path.display());
            let secret = &rule["spec"]["oidc"]["clientSecretRef"];
            let fixture = format!(
                "{}{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: apps}}\nstringData: {{{}: s}}\n",
                ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
                service_yaml("svc", &["127.0.0.1:3000".parse().unwrap()]),
                secret["name"].as_str().unwrap(),
                secret["key"].as_str().unwrap_or("client-secret"),
            );
            let (_, out) = run_with_stdin(
                &["check", "-f", "-", "-o", "json"],
                &format!("{code}\n{fixture}"),
            );
            let report: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                report["problems"],
                serde_json::json!([]),
                "{}: {report:#}",
                path.display()
            );
            assert_eq!(report["summary"]["authRules"], 1, "{}", path.display());
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    for guide in [
        "entra-id.md",
        "okta.md",
        "google.md",
        "auth0.md",
        "dex.md",
        "cognito.md",
        "gitlab.md",
        "keycloak.md",
    ] {
        assert!(
            checked.iter().any(|c| c == guide),
            "{guide}: no AuthRule checked ({checked:?})"
        );
    }
}

/// Quickstart 2: deploy/examples/login.yaml with the provider's issuer, client and
/// secret put in where the README says, served on loopback, logs a user in and hands
/// the app the identity.
#[tokio::test]
async fn the_files_quickstart_logs_in_as_written() {
    let app = Backend::start("app").await;
    let example = std::fs::read_to_string(format!("{ROOT}/deploy/examples/login.yaml")).unwrap();
    let dir = TempDir::new("quickstart");
    let proxy = Portcullis::start(dir.path(), &[]);
    let origin = format!("http://localhost:{}", proxy.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    let edited = example
        .replace("https://login.example.com", &idp.issuer)
        .replace("clientId: my-app", "clientId: portcullis-test")
        .replace("client-secret: change-me", "client-secret: test-secret")
        .replace("3000", &app.addr.port().to_string());
    assert_ne!(edited, example);
    dir.write("login.yaml", &edited);
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    eventually("the example is served", || async {
        b.get(format!("{origin}/"))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| r.status() == 302)
    })
    .await;
    let start = b
        .get(format!("{origin}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_idp = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to_idp.contains("redirect_uri=http%3A%2F%2Flocalhost%3A"),
        "the redirect URI the README says to register: {to_idp}"
    );
    let callback = log_in(
        &b,
        &to_idp,
        &format!("{origin}/oauth2/idpresponse"),
        "quinn",
    )
    .await;
    assert_eq!(b.get(&callback.url).send().await.unwrap().status(), 302);
    let seen = seen_by_backend(&b, &format!("{origin}/")).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "quinn");
}

/// The snippet of `page` whose info string names `file` (```` ```python verify.py ````).
pub(crate) fn snippet(page: &str, file: &str) -> String {
    read(&PathBuf::from(ROOT).join(page))
        .blocks
        .into_iter()
        .find(|(info, _)| info.split_whitespace().nth(1) == Some(file))
        .unwrap_or_else(|| panic!("{page} has no snippet {file}"))
        .1
}

/// A verifier from the docs: a fresh command for each run, to which the token is added.
struct Verifier {
    name: &'static str,
    command: Box<dyn Fn() -> Command + Send>,
}

impl Verifier {
    fn run(&self, token: &str, signer: &str) -> Output {
        (self.command)()
            .arg(token)
            .env("EXPECTED_SIGNER", signer)
            .output()
            .unwrap()
    }
}

fn python(dir: &Path, code: &str, env: Vec<(String, String)>) -> Verifier {
    let python = PathBuf::from(ROOT).join(".cache/venv/bin/python");
    assert!(python.exists(), "run scripts/test.sh: it makes .cache/venv");
    let file = dir.join("verify_alb_data.py");
    std::fs::write(&file, code).unwrap();
    Verifier {
        name: "python",
        command: Box::new(move || {
            let mut c = Command::new(&python);
            c.arg(&file).envs(env.clone());
            c
        }),
    }
}

/// `go run` in a module of its own (tests/snippets/go.mod), standard library only.
fn go(dir: &Path, code: &str, env: Vec<(String, String)>) -> Verifier {
    let module = dir.join("go");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::copy(
        format!("{ROOT}/tests/snippets/go.mod"),
        module.join("go.mod"),
    )
    .unwrap();
    std::fs::write(module.join("verify_alb_data.go"), code).unwrap();
    Verifier {
        name: "go",
        command: Box::new(move || {
            let mut c = Command::new("go");
            c.current_dir(&module)
                .env("GOTOOLCHAIN", "local")
                .envs(env.clone())
                .args(["run", "."]);
            c
        }),
    }
}

/// Node.js, with tests/idp's packages (aws-jwt-verify) beside the file.
fn node(dir: &Path, name: &'static str, code: &str, env: Vec<(String, String)>) -> Verifier {
    let modules = dir.join("node_modules");
    if !modules.exists() {
        std::os::unix::fs::symlink(format!("{ROOT}/tests/idp/node_modules"), modules).unwrap();
    }
    let file = dir.join(name);
    std::fs::write(&file, code).unwrap();
    Verifier {
        name,
        command: Box::new(move || {
            let mut c = Command::new("node");
            c.arg(&file).envs(env.clone());
            c
        }),
    }
}

/// The same token with `sub` changed in its payload and the signature kept.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = "mallory".into();
    let payload = URL_SAFE.encode(payload.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

#[tokio::test]
async fn the_verification_snippets_of_coming_from_alb_verify_a_real_header() {
    let tls = common::tls::cert(&["localhost"]);
    let keys_path = "/.well-known/portcullis-keys";
    let args = [
        "--https",
        "127.0.0.1:0",
        "--public-keys-path",
        keys_path,
        "--default-certificate",
        "apps/localhost-tls",
    ];
    let rule = format!(
        "{}{}",
        common::app::AUTH_RULE,
        common::tls::tls_secret("localhost-tls", &tls)
    );
    let s = setup_rule(&[], &rule, &args).await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    let token = seen["headers"]["x-amzn-oidc-data"]
        .as_str()
        .unwrap()
        .to_owned();
    let template = portcullis::auth::identity::DEFAULT_SIGNER;
    let signer = portcullis::auth::identity::signer_for(template, "apps", "sso");
    let other = portcullis::auth::identity::signer_for(template, "other", "sso");

    let page = "docs/coming-from-alb.md";
    let dir = TempDir::new("snippets");
    dir.write("ca.pem", &tls.pem);
    let admin_keys = format!("http://{}/keys", s.proxy.admin);
    let public_keys = format!(
        "https://localhost:{}{keys_path}",
        s.proxy.https.unwrap().port()
    );
    let admin = vec![("KEYS_URL".to_owned(), admin_keys)];
    let verifiers = vec![
        python(
            dir.path(),
            &snippet(page, "verify_alb_data.py"),
            admin.clone(),
        ),
        go(
            dir.path(),
            &snippet(page, "verify_alb_data.go"),
            admin.clone(),
        ),
        node(
            dir.path(),
            "verify-alb-data.mjs",
            &snippet(page, "verify-alb-data.mjs"),
            admin,
        ),
        node(
            dir.path(),
            "verify-with-aws-jwt-verify.mjs",
            &snippet(page, "verify-with-aws-jwt-verify.mjs"),
            vec![
                ("KEYS_URL".into(), public_keys),
                ("ISSUER".into(), s.idp.issuer.clone()),
                ("CLIENT_ID".into(), "portcullis-test".into()),
                (
                    "NODE_EXTRA_CA_CERTS".into(),
                    dir.path().join("ca.pem").display().to_string(),
                ),
            ],
        ),
    ];
    let blocking = tokio::task::spawn_blocking(move || {
        for v in verifiers {
            let out = v.run(&token, &signer);
            assert!(
                out.status.success(),
                "{}: {}",
                v.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let claims: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("{}: {}", v.name, String::from_utf8_lossy(&out.stdout)));
            assert_eq!(
                (&claims["sub"], &claims["email"]),
                (&"alice".into(), &"alice@example.com".into()),
                "{}",
                v.name
            );
            let out = v.run(&token, &other);
            assert!(
                !out.status.success(),
                "{} accepted another rule's signer",
                v.name
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("refused"),
                "{}",
                v.name
            );
            let out = v.run(&tampered(&token), &signer);
            assert!(
                !out.status.success(),
                "{} accepted a changed payload",
                v.name
            );
        }
    });
    blocking.await.unwrap();
}
