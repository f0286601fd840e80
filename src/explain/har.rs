//! `portcullis explain har`: reads a browser's HAR export of a login (through
//! Portcullis or a real ALB), finds its steps and says which one broke and why.

use serde_json::Value;

use crate::model::CALLBACK_PATH;
use crate::observe::reasons;

/// Browsers drop a cookie whose name and value exceed this.
const MAX_COOKIE_BYTES: usize = 4096;
const MAX_SKEW_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum HarError {
    #[error("not a HAR file: {0}")]
    NotHar(String),
}

/// One request of the HAR, reduced to what the analysis reads.
struct Entry {
    url: String,
    status: u64,
    started: String,
    request_cookies: Vec<String>,
    set_cookies: Vec<(String, usize)>,
    location: String,
    date: Option<String>,
    text: String,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum StepState {
    Ok,
    Failed,
    NotReached,
}

#[derive(Debug)]
pub struct Step {
    pub name: &'static str,
    pub state: StepState,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct HarReport {
    pub steps: Vec<Step>,
    /// The step that broke, why, and the fix.
    pub broke: Option<(String, String, String)>,
    pub notes: Vec<String>,
}

fn header<'a>(headers: &'a Value, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|h| h["value"].as_str())
}

fn entries(har: &Value) -> Result<Vec<Entry>, HarError> {
    let list = har["log"]["entries"]
        .as_array()
        .ok_or_else(|| HarError::NotHar("no log.entries".into()))?;
    Ok(list
        .iter()
        .map(|e| {
            let req = &e["request"];
            let resp = &e["response"];
            let mut request_cookies: Vec<String> = req["cookies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect();
            for h in header(&req["headers"], "cookie") {
                request_cookies.extend(
                    h.split(';')
                        .filter_map(|p| Some(p.split_once('=')?.0.trim().to_owned())),
                );
            }
            let set_cookies = header(&resp["headers"], "set-cookie")
                .flat_map(|v| v.split('\n'))
                .filter_map(|c| {
                    let pair = c.split(';').next()?;
                    Some((pair.split_once('=')?.0.trim().to_owned(), pair.len()))
                })
                .collect();
            let location = resp["redirectURL"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .or_else(|| {
                    header(&resp["headers"], "location")
                        .next()
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            Entry {
                url: req["url"].as_str().unwrap_or_default().to_owned(),
                status: resp["status"].as_u64().unwrap_or(0),
                started: e["startedDateTime"].as_str().unwrap_or_default().to_owned(),
                request_cookies,
                set_cookies,
                location,
                date: header(&resp["headers"], "date").next().map(str::to_owned),
                text: resp["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }
        })
        .collect())
}

fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    &url[..end]
}

fn path(url: &str) -> &str {
    let rest = &url[origin(url).len()..];
    rest.split('?').next().unwrap_or("")
}

fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| crate::form::form_decode(v))
    })
}

/// What an error page (ours, HTML or JSON) names.
#[derive(Default)]
struct Page {
    reason: Option<String>,
    reference: Option<String>,
    /// What was checked (an authorization refusal's rule and claim names).
    detail: Option<String>,
}

fn page_reason(text: &str) -> Page {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let get = |k: &str| v[k].as_str().map(str::to_owned);
        return Page {
            reason: get("error"),
            reference: get("traceId"),
            detail: get("detail"),
        };
    }
    let code_after = |label: &str| {
        let i = text.find(label)? + label.len();
        let rest = &text[i..];
        let start = rest.find("<code>")? + 6;
        Some(rest[start..start + rest[start..].find('<')?].to_owned())
    };
    // `<h1>..</h1><p>message</p><p>detail</p><p>Reason: ...`
    let detail = || {
        let after_title = &text[text.find("</h1><p>")? + 8..];
        let rest = &after_title[after_title.find("</p>")? + 4..];
        let body = rest
            .strip_prefix("<p>")
            .filter(|r| !r.starts_with("Reason:"))?;
        Some(html_unescape(&body[..body.find("</p>")?]))
    };
    Page {
        reason: code_after("Reason:"),
        reference: code_after("Reference:"),
        detail: detail(),
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The step that broke, why, and the fix.
type Broke = (String, String, String);

/// Where the login under analysis began, read from its redirect to the provider.
struct LoginStart {
    app: String,
    idp: String,
    state: String,
    redirect_uri: String,
}

impl LoginStart {
    fn of(first: &Entry) -> Self {
        let to_idp = &first.location;
        Self {
            app: origin(&first.url).to_owned(),
            idp: origin(to_idp).to_owned(),
            state: param(to_idp, "state").unwrap_or_default(),
            redirect_uri: param(to_idp, "redirect_uri").unwrap_or_default(),
        }
    }
}

pub fn analyze(har: &Value) -> Result<HarReport, HarError> {
    let entries = entries(har)?;
    let mut report = HarReport::default();
    // Exports without sensitive data drop Cookie and Set-Cookie alike.
    let has_cookies = entries
        .iter()
        .any(|e| !e.request_cookies.is_empty() || !e.set_cookies.is_empty());
    if !has_cookies {
        report.notes.push("the HAR has no request cookies (exported without sensitive data?), so cookie checks are skipped".into());
    }
    clock_skew(&entries, &mut report);
    if let Err(broke) = follow_login(&entries, has_cookies, &mut report) {
        report.broke = Some(broke);
    }
    Ok(report)
}

/// Follows the last login of the HAR step by step, up to the step that broke.
fn follow_login(entries: &[Entry], has_cookies: bool, report: &mut HarReport) -> Result<(), Broke> {
    let starts = login_starts(entries);
    let &start = starts.last().ok_or_else(|| no_login_start(entries))?;
    let first = &entries[start];
    let login = LoginStart::of(first);
    report.steps.push(initial_step(first, &login.idp));
    if starts.len() >= 3 {
        return Err(redirect_loop(
            entries,
            &login.app,
            starts.len(),
            has_cookies,
        ));
    }
    if !login.redirect_uri.is_empty() && origin(&login.redirect_uri) != login.app {
        report.notes.push(format!(
            "redirect_uri {} is not on {}, where the login began",
            login.redirect_uri, login.app
        ));
    }
    provider_login(&entries[start + 1..], &login, report)?;
    let Some(cb) = entries[start + 1..]
        .iter()
        .position(|e| path(&e.url) == CALLBACK_PATH)
        .map(|i| start + 1 + i)
    else {
        return Err((
            "callback".into(),
            "the browser never came back from the provider".into(),
            "finish the login at the provider; if its page shows an error, fix that first".into(),
        ));
    };
    let callback = &entries[cb];
    if let Some((why, fix)) = callback_failure(callback, &login, has_cookies) {
        report.steps.push(Step {
            name: "callback",
            state: StepState::Failed,
            detail: why.clone(),
        });
        return Err(("callback".into(), why, fix));
    }
    callback_cookies(callback, report)?;
    after_callback(&entries[cb + 1..], callback, &login.app, report)
}

/// The redirects to a provider's authorization endpoint: each began a login.
fn login_starts(entries: &[Entry]) -> Vec<usize> {
    (0..entries.len())
        .filter(|&i| {
            let e = &entries[i];
            (300..400).contains(&e.status)
                && e.location.contains("response_type=code")
                && e.location.contains("state=")
        })
        .collect()
}

fn no_login_start(entries: &[Entry]) -> Broke {
    let scripted = entries
        .iter()
        .any(|e| e.status == 401 && e.text.contains("AuthRequired"));
    let why = if scripted {
        "a script's request got 401 AuthRequired; scripts cannot follow a login"
    } else {
        "no redirect to a provider's authorization endpoint"
    };
    ("initial request".into(), why.into(), "open the guarded page itself in the browser; check that the route is guarded (`kubectl get authrules`)".into())
}

fn initial_step(first: &Entry, idp: &str) -> Step {
    let flow_cookie = first
        .set_cookies
        .iter()
        .any(|(n, _)| n.starts_with("AWSALBAuthNonce"));
    Step {
        name: "initial request",
        state: StepState::Ok,
        detail: format!(
            "{} answered {} to {idp}{}",
            first.url,
            first.status,
            if flow_cookie {
                " with the flow cookie"
            } else {
                ""
            }
        ),
    }
}

fn redirect_loop(entries: &[Entry], app: &str, starts: usize, has_cookies: bool) -> Broke {
    let app_cookie = entries.iter().filter(|e| origin(&e.url) == app).any(|e| {
        e.request_cookies
            .iter()
            .any(|c| c.starts_with("AWSELBAuthSessionCookie"))
    });
    let why = format!(
        "the login started {starts} times: each return to the application began a new login"
    );
    let fix = if has_cookies && !app_cookie {
        "the browser never sent the session cookie back: check that it is not too large, that a Secure cookie is not used over http, and that the app's host name stays the same".to_owned()
    } else {
        "check that the session is accepted: `explain logs` on the access log shows AuthInvalidCookie when it is not".to_owned()
    };
    ("redirect loop".into(), why, fix)
}

/// The provider's pages, after the redirect to it.
fn provider_login(
    after: &[Entry],
    login: &LoginStart,
    report: &mut HarReport,
) -> Result<(), Broke> {
    let idp = &login.idp;
    let at_idp: Vec<&Entry> = after
        .iter()
        .filter(|e| origin(&e.url) == idp.as_str())
        .collect();
    let refused = at_idp.iter().find(|e| e.status >= 400);
    report.steps.push(Step {
        name: "provider login",
        state: if refused.is_some() {
            StepState::Failed
        } else if at_idp.is_empty() {
            StepState::NotReached
        } else {
            StepState::Ok
        },
        detail: format!("{} request(s) to {idp}", at_idp.len()),
    });
    let Some(e) = refused else {
        return Ok(());
    };
    let redirect_uri = &login.redirect_uri;
    let why = if e.text.contains("redirect_uri") {
        format!(
            "the provider refused the login with {}: redirect_uri {redirect_uri} is not registered",
            e.status
        )
    } else {
        format!("the provider answered {} at {}", e.status, path(&e.url))
    };
    Err((
        "provider login".into(),
        why,
        format!("register {redirect_uri} for the client at the provider"),
    ))
}

/// Why the callback failed, and the fix: first what the browser brought back, then
/// what Portcullis answered.
fn callback_failure(
    callback: &Entry,
    login: &LoginStart,
    has_cookies: bool,
) -> Option<(String, String)> {
    let app = login.app.as_str();
    if let Some(error) = param(&callback.url, "error") {
        let description = param(&callback.url, "error_description").unwrap_or_default();
        return Some((
            format!("the provider sent the browser back with error={error} {description}"),
            "see why at the provider (a denied consent, a client not allowed for this user, ...)"
                .into(),
        ));
    }
    if param(&callback.url, "state").as_deref() != Some(login.state.as_str()) {
        return Some(("the callback's state is not this login's (another login's callback, or a replayed one)".into(), "start again from the application in one tab".into()));
    }
    if has_cookies
        && !callback
            .request_cookies
            .iter()
            .any(|c| c.starts_with("AWSALBAuthNonce"))
    {
        let why = if origin(&callback.url) != app {
            format!(
                "the flow cookie was not sent: the browser came back to {}, not {app} where the cookie was set",
                origin(&callback.url)
            )
        } else {
            "the flow cookie was not sent back: the browser blocked it (third-party or SameSite cookie settings, private mode) or it expired".into()
        };
        return Some((
            why,
            reasons::lookup("AuthMissingAWSALBAuthNonce").map_or(String::new(), |r| r.fix.into()),
        ));
    }
    (callback.status >= 400).then(|| callback_error_page(callback))
}

/// What the callback's error page names, explained.
fn callback_error_page(callback: &Entry) -> (String, String) {
    let Page {
        reason, reference, ..
    } = page_reason(&callback.text);
    let reason = reason.unwrap_or_else(|| format!("status {}", callback.status));
    let entry = reasons::lookup(&reason);
    (
        format!(
            "{} at the callback: {reason}{}{}",
            callback.status,
            entry.map_or(String::new(), |r| format!(" ({})", r.summary)),
            reference.map_or(String::new(), |r| format!("; reference {r}"))
        ),
        entry.map_or("look the reference up in the access log".into(), |r| {
            r.fix.into()
        }),
    )
}

/// The session cookies the callback set, which browsers drop when too large.
fn callback_cookies(callback: &Entry, report: &mut HarReport) -> Result<(), Broke> {
    let oversize: Vec<&(String, usize)> = callback
        .set_cookies
        .iter()
        .filter(|(_, len)| *len > MAX_COOKIE_BYTES)
        .collect();
    report.steps.push(Step {
        name: "callback",
        state: if oversize.is_empty() {
            StepState::Ok
        } else {
            StepState::Failed
        },
        detail: format!(
            "{} answered {}, setting {} cookie(s)",
            CALLBACK_PATH,
            callback.status,
            callback.set_cookies.len()
        ),
    });
    if let Some((name, len)) = oversize.first() {
        return Err((
            "callback".into(),
            format!("cookie {name} is {len} bytes; browsers drop cookies over {MAX_COOKIE_BYTES}"),
            "shrink the session: fewer scopes or claims".into(),
        ));
    }
    Ok(())
}

/// The first request back at the application after the callback.
fn after_callback(
    rest: &[Entry],
    callback: &Entry,
    app: &str,
    report: &mut HarReport,
) -> Result<(), Broke> {
    let back = rest.iter().find(|e| origin(&e.url) == app);
    match back {
        Some(e) if (200..400).contains(&e.status) && !(300..400).contains(&e.status) => {
            report.steps.push(Step {
                name: "final redirect",
                state: StepState::Ok,
                detail: format!("to {}", callback.location),
            });
            report.steps.push(Step {
                name: "authenticated request",
                state: StepState::Ok,
                detail: format!("{} answered {}", e.url, e.status),
            });
        }
        Some(e) => {
            report.steps.push(Step {
                name: "authenticated request",
                state: StepState::Failed,
                detail: format!("{} answered {}", e.url, e.status),
            });
            return Err(refused_after_login(e));
        }
        None => report.notes.push("the HAR ends at the callback".into()),
    }
    Ok(())
}

/// Why the first request after the login failed: for an authorization refusal, what
/// the page says was checked and where to look next.
fn refused_after_login(e: &Entry) -> Broke {
    let page = page_reason(&e.text);
    let why = format!(
        "the first request after the login answered {}{}{}",
        e.status,
        page.reason
            .as_deref()
            .map_or(String::new(), |r| format!(" ({r})")),
        page.detail
            .as_deref()
            .map_or(String::new(), |d| format!(": {d}"))
    );
    let authorization = matches!(
        page.reason.as_deref(),
        Some("AuthForbidden" | "AuthClaimsOverage")
    );
    let fix = match (
        authorization,
        page.reason.as_deref().and_then(reasons::lookup),
    ) {
        (true, Some(r)) => format!(
            "{} (portcullis explain flow {} on the logs)",
            r.fix,
            page.reference.as_deref().unwrap_or("<reference>")
        ),
        _ => "check the backend, and that the session cookie was sent".into(),
    };
    ("authenticated request".into(), why, fix)
}

fn clock_skew(entries: &[Entry], report: &mut HarReport) {
    for e in entries {
        let (Some(date), Ok(started)) = (e.date.as_deref(), e.started.parse::<jiff::Timestamp>())
        else {
            continue;
        };
        let Ok(server) = jiff::fmt::rfc2822::parse(date) else {
            continue;
        };
        let skew = server.timestamp().as_second() - started.as_second();
        if skew.abs() > MAX_SKEW_SECS {
            report.notes.push(format!("{} is {skew:+} s off the browser's clock; ID tokens fail beyond 60 s of skew between Portcullis and the provider", origin(&e.url)));
            return;
        }
    }
}

impl HarReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            let mark = match s.state {
                StepState::Ok => "ok  ",
                StepState::Failed => "FAIL",
                StepState::NotReached => "--  ",
            };
            out.push_str(&format!("{mark} {:<22} {}\n", s.name, s.detail));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        match &self.broke {
            Some((step, why, fix)) => {
                out.push_str(&format!("broke at {step}: {why}\n  fix: {fix}\n"))
            }
            None => out.push_str("the login completed\n"),
        }
        out
    }
}
