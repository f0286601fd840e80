//! The real OpenID provider (npm `oidc-provider`, installed by scripts/test.sh from
//! tests/idp/package-lock.json) and a browser-like walk through its login pages.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Idp {
    child: Child,
    pub issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Starts the provider on an ephemeral port; `env` tunes it (IDP_* variables).
    pub fn start(env: &[(&str, &str)]) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/idp");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "run `npm ci --prefix tests/idp` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(format!("{dir}/server.mjs"))
            .arg("0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting node");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Keep reading: a closed pipe would kill the provider at its next write.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let started: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the provider did not start: {line:?}"));
        Self {
            child,
            issuer: started["issuer"].as_str().unwrap().to_owned(),
        }
    }
}

/// What a login's last redirect carried back to the redirect URI.
pub struct Callback {
    pub url: String,
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// Follows redirects and submits the provider's forms (login `user`, any password,
/// consent) until the browser is sent to a URL starting with `redirect_uri`.
pub async fn log_in(
    browser: &reqwest::Client,
    start: &str,
    redirect_uri: &str,
    user: &str,
) -> Callback {
    walk(browser, start, redirect_uri, user).await
}

/// Follows the provider's logout (confirming it) until the browser is sent to a URL
/// starting with `post_logout_uri`; returns that URL.
pub async fn log_out(browser: &reqwest::Client, start: &str, post_logout_uri: &str) -> String {
    walk(browser, start, post_logout_uri, "").await.url
}

/// Confirms the provider's logout at `start` and returns the front-channel logout
/// URLs its logout page loads in iframes (what a browser would then load).
pub async fn log_out_front_channel(browser: &reqwest::Client, start: &str) -> Vec<String> {
    let start = reqwest::Url::parse(start).unwrap();
    let page = browser
        .get(start.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (action, mut fields) =
        parse_form(&page).unwrap_or_else(|| panic!("no logout form at {start}: {page}"));
    fields.push(("logout".into(), "yes".into()));
    let done = browser
        .post(start.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    let page = done.text().await.unwrap();
    page.split("<iframe")
        .skip(1)
        .filter_map(|tag| attr(tag, "src"))
        .map(|src| src.replace("&amp;", "&"))
        .collect()
}

async fn walk(browser: &reqwest::Client, start: &str, redirect_uri: &str, user: &str) -> Callback {
    let mut next = reqwest::Url::parse(start).unwrap();
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..12 {
        let resp = match form.take() {
            Some(fields) => browser
                .post(next.clone())
                .form(&fields)
                .send()
                .await
                .unwrap(),
            None => browser.get(next.clone()).send().await.unwrap(),
        };
        if resp.status().is_redirection() {
            let location = resp.headers()["location"].to_str().unwrap().to_owned();
            let target = next.join(&location).unwrap();
            if target.as_str().starts_with(redirect_uri) {
                let q = |k: &str| {
                    target
                        .query_pairs()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.into_owned())
                };
                return Callback {
                    code: q("code"),
                    state: q("state"),
                    error: q("error"),
                    url: target.to_string(),
                };
            }
            next = target;
            continue;
        }
        let page = resp.text().await.unwrap();
        let (action, mut fields) = parse_form(&page)
            .unwrap_or_else(|| panic!("no form and no redirect at {next}: {page}"));
        if page.contains("name=\"login\"") {
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "any".into()));
        }
        if page.contains("name=\"logout\"") {
            fields.push(("logout".into(), "yes".into()));
        }
        next = next.join(&action).unwrap();
        form = Some(fields);
    }
    panic!("the provider did not send the browser to {redirect_uri}");
}

/// The first form's action and hidden fields.
fn parse_form(page: &str) -> Option<(String, Vec<(String, String)>)> {
    let form = &page[page.find("<form")?..];
    let action = attr(&form[..form.find('>')?], "action")?;
    let fields = form
        .split("<input")
        .skip(1)
        .filter(|i| i.contains("type=\"hidden\""))
        .filter_map(|i| Some((attr(i, "name")?, attr(i, "value").unwrap_or_default())))
        .collect();
    Some((action.replace("&amp;", "&"), fields))
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    Some(tag[start..start + tag[start..].find('"')?].to_owned())
}
