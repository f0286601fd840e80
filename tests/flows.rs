//! Flow records: each login attempt hop by hop, found from the error page's reference
//! through the admin endpoint and through `portcullis explain flow` on the logs.

use crate::common;

use common::app::*;
use common::*;

async fn admin_get(p: &Portcullis, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{}{path}", p.admin))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `explain flow` on the process's log so far; the callback's lines are waited for
/// (stderr is read as it comes), the last of which is its warning.
fn explain_flow(p: &Portcullis, id: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(p.diagnostics.lock().unwrap().iter())
        .any(|l| l.contains(id) && l.contains("login failed at the callback"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning names {id}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let logs = p.diagnostics.lock().unwrap().join("\n");
    let (ok, out) = run_with_stdin(&["explain", "flow", id], &logs);
    assert!(ok, "explain flow {id} found nothing in:\n{logs}");
    out
}

#[tokio::test]
async fn a_failed_login_leads_from_its_reference_to_the_hop_that_broke() {
    let s = setup_rule(&[("IDP_FAULT", "userinfo-500")], AUTH_RULE, &[]).await;
    let b = browser(&s.proxy);
    let callback = callback_url(&b, &s.origin, "/reports", "lena").await;
    let page: serde_json::Value = b.get(&callback).send().await.unwrap().json().await.unwrap();
    let reference = page["traceId"].as_str().unwrap().to_owned();

    let (_, list) = admin_get(&s.proxy, "/flows").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["failedAt"], "userinfo", "{list}");

    let (status, timeline) = admin_get(&s.proxy, &format!("/flows/{reference}")).await;
    assert_eq!(status, 200);
    for hop in ["redirect", "callback", "flow-cookie", "token", "id-token"] {
        assert!(
            timeline.contains(&format!("ok   {hop}")),
            "{hop} in\n{timeline}"
        );
    }
    assert!(timeline.contains("FAIL userinfo"), "{timeline}");
    assert!(
        timeline.contains("broke at userinfo: AuthUserinfoEpRequestFailed"),
        "{timeline}"
    );
    assert!(timeline.contains("fix:"), "{timeline}");
    assert!(!timeline.contains("test-secret"), "no secrets in records");

    let rebuilt = explain_flow(&s.proxy, &reference);
    assert!(
        rebuilt.contains("broke at userinfo: AuthUserinfoEpRequestFailed"),
        "{rebuilt}"
    );
    assert!(
        rebuilt.contains("ok   redirect"),
        "the first hop, from its own log line: {rebuilt}"
    );

    // As `kubectl logs -l ... --tail=-1 --prefix` prints two replicas' lines.
    let tagged: String = s
        .proxy
        .diagnostics
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, line)| format!("[pod/portcullis-7d9f8-{}/portcullis] {line}\n", i % 2))
        .collect();
    let (ok, from_tagged) = run_with_stdin(&["explain", "flow", &reference], &tagged);
    assert!(ok, "{from_tagged}");
    assert_eq!(from_tagged, rebuilt, "the pod tags change nothing");
}

#[tokio::test]
async fn a_completed_login_records_its_first_authenticated_request() {
    let s = setup().await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "mia").await;
    b.get(format!("{}/after", s.origin)).send().await.unwrap();
    let (_, list) = admin_get(&s.proxy, "/flows").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(list[0]["completed"], true);
    let (_, timeline) = admin_get(&s.proxy, &format!("/flows/{id}")).await;
    assert!(timeline.contains("ok   session"), "{timeline}");
    assert!(
        timeline.contains("ok   first-request   GET /after with the session of mia"),
        "{timeline}"
    );
    assert!(timeline.ends_with("completed\n"), "{timeline}");
}

#[tokio::test]
async fn a_wrong_client_secret_and_a_wrong_issuer_each_name_their_hop() {
    let wrong_secret = AUTH_RULE.replace("client-secret: test-secret", "client-secret: not-it");
    let s = setup_rule(&[], &wrong_secret, &[]).await;
    let b = browser(&s.proxy);
    let callback = callback_url(&b, &s.origin, "/", "noa").await;
    let page: serde_json::Value = b.get(&callback).send().await.unwrap().json().await.unwrap();
    let (_, timeline) = admin_get(
        &s.proxy,
        &format!("/flows/{}", page["traceId"].as_str().unwrap()),
    )
    .await;
    assert!(
        timeline.contains("broke at token: AuthTokenEpRequestFailed"),
        "{timeline}"
    );
    assert!(
        timeline.contains("invalid_client"),
        "the provider's error: {timeline}"
    );

    // The issuer with a trailing slash is another issuer: discovery refuses it.
    s.manifests.write(
        "auth.yaml",
        &AUTH_RULE.replace("ISSUER", &format!("{}/", s.idp.issuer)),
    );
    let page = || async {
        let r = b
            .get(format!("{}/", s.origin))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    };
    eventually("the new issuer is in use", || async {
        page().await.contains("AuthIdpDiscoveryFailed")
    })
    .await;
    let html = page().await;
    let reference = html
        .split("Reference: <code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let (_, timeline) = admin_get(&s.proxy, &format!("/flows/{reference}")).await;
    assert!(
        timeline.contains("broke at redirect: AuthIdpDiscoveryFailed"),
        "{timeline}"
    );
    assert!(timeline.contains("fix:"), "{timeline}");
}

/// `issued 0.24 s ago ...` with the age as `N`, so the rest is compared exactly.
fn without_age(text: &str) -> String {
    regex_lite::Regex::new(r"issued [0-9.]+ (s|min) ago")
        .unwrap()
        .replace_all(text, "issued N ago")
        .into_owned()
}

const NO_COOKIES: &str = "issued N ago on this host to this client; the browser came back with no cookies at all: cookies blocked, private mode or another browser; nothing to change at the provider";

#[tokio::test]
async fn a_blocked_flow_cookie_and_a_fast_provider_clock_each_name_their_hop() {
    let s = setup_rule(&[("IDP_FAULT", "clock-ahead")], AUTH_RULE, &[]).await;
    let b = browser(&s.proxy);
    let url = callback_url(&b, &s.origin, "/", "olga").await;
    // A browser that blocks the flow cookie comes back without it.
    let bare = reqwest::Client::builder()
        .resolve("app.example.com", s.proxy.http)
        .build()
        .unwrap();
    let page: serde_json::Value = bare.get(&url).send().await.unwrap().json().await.unwrap();
    let (_, timeline) = admin_get(
        &s.proxy,
        &format!("/flows/{}", page["traceId"].as_str().unwrap()),
    )
    .await;
    assert!(
        timeline.contains("broke at flow-cookie: AuthMissingAWSALBAuthNonce"),
        "{timeline}"
    );
    assert!(
        without_age(&timeline).contains(NO_COOKIES),
        "what happened, from the flow record: {timeline}"
    );

    // A browser that keeps its cookie: the ID token is from five minutes ahead.
    let url = callback_url(&b, &s.origin, "/", "olga").await;
    let page: serde_json::Value = b.get(&url).send().await.unwrap().json().await.unwrap();
    let (_, timeline) = admin_get(
        &s.proxy,
        &format!("/flows/{}", page["traceId"].as_str().unwrap()),
    )
    .await;
    assert!(
        timeline.contains("broke at id-token: AuthInvalidIdToken"),
        "{timeline}"
    );
    assert!(timeline.contains("NTP"), "the fix: {timeline}");
}

/// A callback whose browser sent no cookies at all is no orphan: its `state` finds the
/// redirect that began it, and the error page, /flows and `explain flow` say what
/// happened instead of advice that does not apply.
#[tokio::test]
async fn a_callback_without_cookies_joins_the_redirect_that_began_it() {
    let s = setup().await;
    let b = browser(&s.proxy);
    let url = callback_url(&b, &s.origin, "/reports", "lena").await;
    let bare = reqwest::Client::builder()
        .resolve("app.example.com", s.proxy.http)
        .build()
        .unwrap();
    let resp = bare.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let page: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(page["error"], "AuthMissingAWSALBAuthNonce");
    assert_eq!(
        without_age(page["whatHappened"].as_str().unwrap()),
        NO_COOKIES,
        "{page}"
    );
    assert!(
        page.get("usualCause").is_none(),
        "the generic cause does not apply: {page}"
    );
    let reference = page["traceId"].as_str().unwrap();

    let (_, list) = admin_get(&s.proxy, "/flows").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|f| !f["id"].as_str().unwrap().starts_with("callback-")),
        "no orphan: {list}"
    );
    assert_eq!(list[0]["failedAt"], "flow-cookie", "{list}");
    let id = list[0]["id"].as_str().unwrap();

    let (_, timeline) = admin_get(&s.proxy, &format!("/flows/{reference}")).await;
    assert!(
        timeline.starts_with(&format!("flow {id}  rule apps/sso")),
        "{timeline}"
    );
    for hop in ["ok   redirect", "ok   callback", "FAIL flow-cookie"] {
        assert!(timeline.contains(hop), "{hop} in {timeline}");
    }
    assert!(
        without_age(&timeline).contains(&format!(
            "broke at flow-cookie: AuthMissingAWSALBAuthNonce: {NO_COOKIES}\n"
        )),
        "{timeline}"
    );
    assert!(!timeline.contains("usually:"), "{timeline}");
    assert!(
        !timeline.contains("Register https://"),
        "advice that does not apply: {timeline}"
    );

    let html = bare
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        without_age(&html).contains(&format!("What happened: {NO_COOKIES}")),
        "{html}"
    );

    let rebuilt = explain_flow(&s.proxy, reference);
    assert!(
        without_age(&rebuilt).contains(&format!(
            "broke at flow-cookie: AuthMissingAWSALBAuthNonce: {NO_COOKIES}\n"
        )),
        "the logs tell the same: {rebuilt}"
    );
    assert!(!rebuilt.contains("usually:"), "{rebuilt}");
}

/// A provider that refuses the client shows its own error page and never sends the
/// browser back. After `--login-abandoned-after`, the flow says so, the metric counts
/// it, and `diagnose` on the same manifests names the client id.
#[tokio::test]
async fn a_login_the_provider_refused_is_counted_abandoned_and_diagnose_says_why() {
    let refused = AUTH_RULE.replace("clientId: portcullis-test", "clientId: Portcullis-test");
    let s = setup_rule(&[], &refused, &["--login-abandoned-after", "1"]).await;
    let abandoned = || async {
        let metrics = s.proxy.metrics().await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with(r#"portcullis_auth_logins_abandoned_total{rule="apps/sso"} "#))
            .map(str::to_owned);
        line.and_then(|l| l.rsplit(' ').next()?.parse::<u32>().ok())
    };
    // The setup's own first request began a login that never goes on: one abandoned.
    eventually("the setup's login is counted abandoned", || async {
        abandoned().await == Some(1)
    })
    .await;
    let b = browser(&s.proxy);
    let start = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_provider = start.headers()["location"].to_str().unwrap().to_owned();
    let at_provider = b.get(&to_provider).send().await.unwrap();
    assert_eq!(at_provider.status(), 400, "the provider's own error page");

    eventually("the flow is counted abandoned", || async {
        abandoned().await == Some(2)
    })
    .await;
    let (_, list) = admin_get(&s.proxy, "/flows").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["failedAt"], "abandoned", "{list}");
    let id = list[0]["id"].as_str().unwrap();
    let (_, timeline) = admin_get(&s.proxy, &format!("/flows/{id}")).await;
    let advice = "never returned: the provider refused the client or redirect URI, or the user gave up — run `portcullis diagnose --rule apps/sso`";
    assert!(
        timeline.contains("broke at abandoned: AuthLoginAbandoned: sent to the provider ")
            && timeline.contains(advice),
        "{timeline}"
    );
    let (ok, diagnosed) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "diagnose",
                "--idp-timeout",
                "2",
                "--rule",
                "apps/sso",
                "--http-port",
            ])
            .arg(s.proxy.http.port().to_string())
            .arg("-f")
            .arg(s.manifests.path())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap())
    };
    assert!(!ok);
    assert!(
        diagnosed.contains("\n      fix: client `Portcullis-test` is unknown at the provider; client ids are case-sensitive"),
        "{diagnosed}"
    );
    assert_eq!(abandoned().await, Some(2), "each counted once");
}
