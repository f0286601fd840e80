//! `portcullis explain logs` on recorded samples (Portcullis's own access log from a
//! demo session with failed callbacks, and a real ALB's format) and on what
//! `kubectl logs` prints of a running Portcullis: access-log lines mixed with its
//! diagnostic log, text or JSON.

use crate::common;

use common::app::*;

use std::process::Command;

fn explain_logs(input: &str) -> String {
    let (ok, out) = common::run_with_stdin(&["explain", "logs", "-"], input);
    assert!(ok);
    out
}

/// The block of the report about `reason`.
fn block<'a>(report: &'a str, reason: &str) -> &'a str {
    let start = report
        .find(&format!("\n{reason}: "))
        .unwrap_or_else(|| panic!("{reason} missing from:\n{report}"));
    let rest = &report[start + 1..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

#[test]
fn a_real_albs_log_is_grouped_by_reason_most_frequent_first() {
    let report = explain_logs(include_str!("data/alb-access.log"));
    assert!(
        report.starts_with("6 access-log lines read, 5 failed requests.\n"),
        "{report}"
    );
    let nonce = block(&report, "AuthMissingAWSALBAuthNonce");
    assert!(
        nonce.contains("2 request(s), status 401, host(s) shop.example.com"),
        "{nonce}"
    );
    assert!(
        nonce.contains("/oauth2/idpresponse exactly at the provider"),
        "{nonce}"
    );
    assert!(
        report.find("AuthMissingAWSALBAuthNonce") < report.find("AuthInvalidIdToken"),
        "the largest group first"
    );
    assert!(block(&report, "AuthTokenEpRequestTimeout").contains("status 500"));
    assert!(block(&report, "AuthInvalidIdToken").contains("issuer"));
    assert!(block(&report, "status 502").contains("backend"));
}

#[test]
fn portcullis_own_log_names_each_failure_and_its_trace() {
    let report = explain_logs(include_str!("data/portcullis-access.log"));
    let missing = block(&report, "AuthMissingAWSALBAuthNonce");
    assert!(missing.contains("for example trace Root=1-"), "{missing}");
    assert!(block(&report, "AuthInvalidCookie").contains("replicas do not share keys"));
    assert!(block(&report, "AuthRequired").contains("loginUrl"));
    assert!(!report.contains("skipped"), "{report}");
}

/// What `kubectl logs -l ... --tail=-1 --prefix` prints: each line tagged with its pod.
#[test]
fn lines_tagged_by_kubectl_logs_prefix_read_as_the_bare_log() {
    let bare = include_str!("data/portcullis-access.log");
    let tagged: String = bare
        .lines()
        .enumerate()
        .map(|(i, line)| format!("[pod/portcullis-7d9f8-{}/portcullis] {line}\n", i % 2))
        .collect();
    assert_eq!(explain_logs(&tagged), explain_logs(bare));
}

/// A login whose browser came back without cookies, through a real Portcullis: its
/// access log (stdout) and diagnostic log (stderr) as `kubectl logs --prefix` mixes
/// them for two pods, with kubectl's own complaints in between.
async fn mixed_kubectl_logs(args: &[&str]) -> (Setup, String) {
    let s = setup_rule(&[], AUTH_RULE, args).await;
    let b = browser(&s.proxy);
    let url = callback_url(&b, &s.origin, "/", "ida").await;
    let bare = reqwest::Client::builder()
        .resolve("app.example.com", s.proxy.http)
        .build()
        .unwrap();
    let page: serde_json::Value = bare.get(&url).send().await.unwrap().json().await.unwrap();
    let trace = page["traceId"].as_str().unwrap().to_owned();
    s.proxy.log_line(|l| l.contains(&trace)).await;
    s.proxy
        .diagnostic_line(|l| l.contains(&trace) && l.contains("login failed at the callback"))
        .await;
    let access = s.proxy.access_log.lock().unwrap().clone();
    let diagnostics = s.proxy.diagnostics.lock().unwrap().clone();
    let mut mixed = String::from("Defaulted container \"portcullis\" out of: portcullis, init\n");
    for (i, line) in diagnostics.iter().chain(&access).enumerate() {
        mixed.push_str(&format!(
            "[pod/portcullis-7d9f8-{}/portcullis] {line}\n",
            i % 2
        ));
    }
    mixed.push_str("error: unexpected EOF\n");
    (s, mixed)
}

#[tokio::test]
async fn kubectl_logs_mixing_text_logs_with_the_access_log_groups_only_requests() {
    let (s, mixed) = mixed_kubectl_logs(&[]).await;
    let access = s.proxy.access_log.lock().unwrap().clone();
    let skipped = s.proxy.diagnostics.lock().unwrap().len() + 2;
    assert!(skipped > 2, "the diagnostic log has lines");
    let report = explain_logs(&mixed);
    assert!(
        report.starts_with(&format!(
            "{} access-log lines read, 1 failed requests. {skipped} other lines skipped (not access-log lines).\n",
            access.len()
        )),
        "{report}"
    );
    let groups = |r: &str| r.split_once('\n').unwrap().1.to_owned();
    assert_eq!(
        groups(&report),
        groups(&explain_logs(&access.join("\n"))),
        "the same groups as the access log alone"
    );
    assert!(
        block(&report, "AuthMissingAWSALBAuthNonce").contains("1 request(s), status 401"),
        "{report}"
    );
}

#[tokio::test]
async fn portcullis_json_log_lines_add_what_they_say_to_the_request_they_name() {
    let (s, mixed) = mixed_kubectl_logs(&["--log-format", "json"]).await;
    let access = s.proxy.access_log.lock().unwrap().len();
    let skipped = s.proxy.diagnostics.lock().unwrap().len() + 2;
    let report = explain_logs(&mixed);
    assert!(
        report.starts_with(&format!(
            "{access} access-log lines read, 1 failed requests. {skipped} other lines skipped (not access-log lines); 3 of Portcullis's log lines add what they say to the requests they name.\n"
        )),
        "JSON access-log lines are read as access-log lines: {report}"
    );
    let nonce = block(&report, "AuthMissingAWSALBAuthNonce");
    assert!(
        nonce.contains("  Logged:        INFO flow hop rule=apps/sso hop=callback "),
        "{nonce}"
    );
    assert!(
        nonce.contains("  Logged:        WARN login failed at the callback rule=AuthRule apps/sso reason=AuthMissingAWSALBAuthNonce error=the browser did not send the login's flow cookie"),
        "{nonce}"
    );
    let what = nonce
        .lines()
        .find_map(|l| l.strip_prefix("  What happened: "))
        .unwrap_or_else(|| panic!("{nonce}"));
    assert!(
        what.starts_with("issued ")
            && what.ends_with(" ago on this host to this client; the browser came back with no cookies at all: cookies blocked, private mode or another browser; nothing to change at the provider"),
        "what the log says happened to this request: {nonce}"
    );
    assert!(
        !nonce.contains("Register https://"),
        "not the catalogue's advice, which does not apply: {nonce}"
    );
}

fn explain_har(name: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["explain", "har"])
        .arg(format!(
            "{}/tests/data/har/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn a_recorded_login_har_shows_every_step_passing() {
    let (ok, out) = explain_har("login-ok.har");
    assert!(ok, "{out}");
    for step in [
        "initial request",
        "provider login",
        "callback",
        "final redirect",
        "authenticated request",
    ] {
        assert!(out.contains(&format!("ok   {step}")), "{step} in\n{out}");
    }
    assert!(out.ends_with("the login completed\n"));
}

#[test]
fn broken_logins_name_the_step_and_the_cause() {
    let (ok, out) = explain_har("flow-cookie-blocked.har");
    assert!(!ok);
    assert!(
        out.contains(
            "broke at callback: the flow cookie was not sent back: the browser blocked it"
        ),
        "{out}"
    );

    let (_, out) = explain_har("provider-error.har");
    assert!(
        out.contains(
            "broke at callback: the provider sent the browser back with error=access_denied"
        ),
        "{out}"
    );

    let (_, out) = explain_har("redirect-loop.har");
    assert!(out.contains("broke at redirect loop"), "{out}");
    assert!(out.contains("never sent the session cookie back"), "{out}");
}

#[test]
fn a_refusal_after_the_login_names_the_rule_the_claims_and_the_next_step() {
    let (ok, out) = explain_har("forbidden.har");
    assert!(!ok);
    for expected in [
        "ok   callback",
        "FAIL authenticated request",
        "broke at authenticated request: the first request after the login answered 403 (AuthForbidden): \
         Refused by rule \"admins\". Checked: groups (not in your login).",
        "portcullis explain flow 1-6a1f3c2e-5b0d4e7a9c1f2b3d4e5f6a7b on the logs",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
}
