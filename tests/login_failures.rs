//! Logins that fail, each with ALB's status and `error_reason`: a provider that
//! misbehaves or goes away, and browsers that send back what they should not. Every
//! failure shows its reason and trace id, and the access log carries the same.

use crate::common;

use common::app::*;
use common::*;

/// The response is `status` with `reason` in the JSON error and in its access-log line.
async fn assert_reason(p: &Portcullis, resp: reqwest::Response, status: u16, reason: &str) {
    assert_eq!(resp.status(), status, "for {reason}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], reason, "{body}");
    let cause = body["whatHappened"]
        .as_str()
        .or(body["usualCause"].as_str());
    assert!(
        cause.is_some_and(|c| c.len() > 20),
        "the page says what happened, or what usually causes it: {body}"
    );
    let trace = body["traceId"].as_str().unwrap().to_owned();
    assert!(trace.starts_with("1-"), "{body}");
    let line = p.log_line(|l| l.contains(&trace)).await;
    let r = alb_record(&line);
    assert_eq!(r["portcullis_reason"], reason, "{line}");
    let known = portcullis::observe::access_log::ALB_REASONS.contains(&reason);
    let alb = if known { reason } else { "-" };
    assert_eq!(r["error_reason"], alb, "ALB's own codes only: {line}");
    assert_eq!(r["elb_status_code"], status.to_string().as_str());
}

/// A provider with one fault, the login through it, and the callback's answer.
async fn login_against_fault(fault: &str, args: &[&str], status: u16, reason: &str) -> Setup {
    let s = setup_rule(&[("IDP_FAULT", fault)], AUTH_RULE, args).await;
    let b = browser(&s.proxy);
    let callback = callback_url(&b, &s.origin, "/", "ivan").await;
    let resp = b.get(&callback).send().await.unwrap();
    assert_reason(&s.proxy, resp, status, reason).await;
    let result = if status >= 500 { "error" } else { "failure" };
    let metrics = s.proxy.metrics().await;
    let line = format!(
        r#"portcullis_auth_logins_total{{reason="{reason}",result="{result}",rule="apps/sso"}} 1"#
    );
    assert!(metrics.contains(&line), "{line} in {metrics}");
    s
}

#[tokio::test]
async fn userinfo_failing_is_auth_userinfo_ep_request_failed() {
    login_against_fault("userinfo-500", &[], 500, "AuthUserinfoEpRequestFailed").await;
}

#[tokio::test]
async fn userinfo_slower_than_the_timeout_is_auth_userinfo_ep_request_timeout() {
    login_against_fault(
        "userinfo-slow",
        &["--idp-timeout", "1"],
        500,
        "AuthUserinfoEpRequestTimeout",
    )
    .await;
}

#[tokio::test]
async fn claims_over_11_kib_are_auth_userinfo_response_size_exceeded() {
    let s = login_against_fault(
        "userinfo-huge",
        &[],
        500,
        "AuthUserinfoResponseSizeExceeded",
    )
    .await;
    let metrics = s.proxy.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_auth_claims_size_exceeded_total{rule="apps/sso"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_id_token_changed_after_signing_is_auth_invalid_id_token() {
    login_against_fault("id-token-tampered", &[], 401, "AuthInvalidIdToken").await;
}

#[tokio::test]
async fn a_provider_gone_mid_login_fails_that_login_and_keeps_existing_sessions() {
    let s = setup().await;
    let settled = browser(&s.proxy);
    log_in_at(&settled, &s.origin, "judy").await;
    let b = browser(&s.proxy);
    let callback = callback_url(&b, &s.origin, "/", "ivan").await;

    let Setup {
        idp, proxy, origin, ..
    } = s;
    drop(idp);
    let resp = b.get(&callback).send().await.unwrap();
    assert_reason(&proxy, resp, 500, "AuthTokenEpRequestFailed").await;

    let page = b
        .get(&callback)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Reference: <code>1-"),
        "browsers see the reference: {page}"
    );
    let seen = seen_by_backend(&settled, &format!("{origin}/")).await;
    assert_eq!(
        seen["headers"]["x-amzn-oidc-identity"], "judy",
        "a session needs no provider until it must be refreshed"
    );
}

#[tokio::test]
async fn callbacks_that_do_not_match_their_flow_get_albs_reasons() {
    let s = setup().await;
    let b = browser(&s.proxy);
    let start = |path: &'static str| {
        b.get(format!("{}{path}", s.origin))
            .header("accept", "text/html")
            .send()
    };
    let flow = |resp: &reqwest::Response| {
        let location = reqwest::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let cookie = resp.headers()["set-cookie"].to_str().unwrap();
        let (name, rest) = cookie.split_once('=').unwrap();
        (
            state,
            name.to_owned(),
            rest.split(';').next().unwrap().to_owned(),
        )
    };
    let (state_a, name_a, value_a) = flow(&start("/a").await.unwrap());
    let (state_b, name_b, _) = flow(&start("/b").await.unwrap());
    assert_ne!(state_a, state_b);
    // A bare client, so only the cookies written here are sent.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", s.proxy.http)
        .build()
        .unwrap();
    let callback = |query: String, cookie: String| {
        bare.get(format!("{}/oauth2/idpresponse?{query}", s.origin))
            .header("cookie", cookie)
            .send()
    };

    let swapped = callback(
        format!("code=x&state={state_b}"),
        format!("{name_b}={value_a}"),
    );
    assert_reason(
        &s.proxy,
        swapped.await.unwrap(),
        401,
        "AuthInvalidStateParam",
    )
    .await;
    let tampered = callback(
        format!("code=x&state={state_b}"),
        format!("{name_b}=AAAA{}", &value_a[4..]),
    );
    let tampered = tampered.await.unwrap();
    assert_eq!(tampered.status(), 401);
    let body: serde_json::Value = tampered.json().await.unwrap();
    assert_eq!(body["error"], "AuthInvalidAWSALBAuthNonce");
    assert!(
        body["whatHappened"]
            .as_str()
            .unwrap()
            .ends_with("on this host to this client; the browser sent this login's flow cookie back altered: it does not open with this replica's keys"),
        "the state names the login whose cookie came back altered: {body}"
    );

    let own = format!("{name_a}={value_a}");
    let no_code = callback(format!("state={state_a}"), own.clone());
    assert_reason(
        &s.proxy,
        no_code.await.unwrap(),
        401,
        "AuthMissingCodeParam",
    )
    .await;
    let denied = callback(format!("state={state_a}&error=access_denied"), own.clone());
    assert_reason(
        &s.proxy,
        denied.await.unwrap(),
        401,
        "AuthInvalidGrantError",
    )
    .await;
    let broken = callback(format!("state={state_a}&error=server_error"), own.clone());
    assert_reason(
        &s.proxy,
        broken.await.unwrap(),
        561,
        "AuthInvalidGrantError",
    )
    .await;

    // A session cookie that is not ours: no session, a new login, and the log says why.
    let forged = bare
        .get(format!("{}/forged-session", s.origin))
        .header("accept", "text/html")
        .header(
            "cookie",
            "AWSELBAuthSessionCookie-0=AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 302);
    let line = s.proxy.log_line(|l| l.contains("/forged-session")).await;
    assert_eq!(alb_record(&line)["error_reason"], "AuthInvalidCookie");

    // HTTP/1.0 lets a client leave out Host; a callback cannot be matched without it.
    let mut raw = tokio::net::TcpStream::connect(s.proxy.http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"GET /oauth2/idpresponse?state=x&code=y HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains("AuthMissingHostHeader"), "{answer}");
}
