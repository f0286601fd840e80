//! `portcullis explain logs` on recorded samples: Portcullis's own access log (from a
//! demo session with failed callbacks) and a real ALB's format.

use crate::common;

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
        report.starts_with("6 lines read, 5 failed requests."),
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
    assert!(!report.contains("not in ALB's format"), "{report}");
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
