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

fn explain_flow(p: &Portcullis, id: &str) -> String {
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
    assert!(timeline.contains("cookie settings"), "the fix: {timeline}");

    // The same browser, with its cookie: the ID token is from five minutes ahead.
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
