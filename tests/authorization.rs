//! Who may pass once logged in: claim rules in CEL and the short forms, through the
//! certified provider's real login.

use crate::common;

use common::app::*;
use common::*;

const RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    clientSecretRef: {name: idp}
    scope: openid email profile
  authorization:
    defaultAction: Deny
    rules:
    - name: alice-everywhere
      when: "claims.email == 'alice@example.com' && source == 'session'"
      action: Allow
    - name: others-read-docs
      paths: ["/docs*"]
      when: "request.method == 'GET' && claims.email.endsWith('@example.com')"
      action: Allow
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: test-secret}
"#;

#[tokio::test]
async fn a_claim_rule_lets_one_user_in_and_refuses_another_with_403() {
    let s = setup_rule(&[], RULE, &[]).await;
    let alice = browser(&s.proxy);
    log_in_at(&alice, &s.origin, "alice").await;
    let seen = seen_by_backend(&alice, &format!("{}/admin", s.origin)).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice");

    let bob = browser(&s.proxy);
    log_in_at(&bob, &s.origin, "bob").await;
    let refused = bob
        .get(format!("{}/admin", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let page = refused.text().await.unwrap();
    assert!(page.contains("AuthForbidden"), "{page}");
    // The same user may read the docs: the path rule.
    let docs = seen_by_backend(&bob, &format!("{}/docs/intro", s.origin)).await;
    assert_eq!(docs["headers"]["x-amzn-oidc-identity"], "bob");
    // The log says which rule refused and which claims it read, never their values.
    let line = s.proxy.log_line(|l| l.contains("AuthForbidden")).await;
    assert_eq!(alb_record(&line)["elb_status_code"], "403");
    let refusal = s
        .proxy
        .diagnostic_line(|l| l.contains("refused by the AuthRule's authorization"))
        .await;
    assert!(refusal.contains("refused_by=defaultAction"), "{refusal}");
    assert!(
        !refusal.contains("bob@example.com"),
        "no claim values: {refusal}"
    );
}

#[tokio::test]
async fn an_expression_that_does_not_compile_closes_the_route() {
    let broken = RULE.replace(
        "claims.email == 'alice@example.com' && source == 'session'",
        "claims.email ==",
    );
    let s = setup_rule_unchecked(&broken).await;
    let r = client()
        .get(s.1.url("/"))
        .header("host", "app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let (ok, out) = run_with_stdin(&["check", "-f", s.0.path().to_str().unwrap()], "");
    assert!(!ok);
    assert!(
        out.contains("spec.authorization.rules[0].when") && out.contains("line 1, column"),
        "{out}"
    );
}

/// The app and a rule that never becomes a working guard (no provider needed).
async fn setup_rule_unchecked(rule: &str) -> (TempDir, Portcullis, Backend) {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("authz");
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &[backend.addr]),
            rule.replace("ISSUER", "http://127.0.0.1:9")
        ),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    (dir, proxy, backend)
}

/// Groups where real providers put them: the test provider's accounts carry them only
/// in the ID token (`token-*`), as one space-separated string (`spaced-*`), as Entra
/// ID's overage (`overage-user`), or differently in the ID token and userinfo
/// (`split-admin`).
const GROUPS_RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    clientSecretRef: {name: idp}
    scope: SCOPE
  authorization:
    groups: [admins, staff]
    defaultAction: Deny
    rules:
    - name: admins
      paths: ["/admin*"]
      when: "'admins' in claims.groups"
      action: Allow
    - name: staff-elsewhere
      when: "!request.path.startsWith('/admin')"
      action: Allow
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: test-secret}
"#;

/// A browser logged in as `user`.
async fn logged_in(s: &Setup, user: &str) -> reqwest::Client {
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, user).await;
    b
}

/// Status and body of a browser's GET of `path`.
async fn open(b: &reqwest::Client, s: &Setup, path: &str) -> (u16, String) {
    let r = b
        .get(format!("{}{path}", s.origin))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The payload of the `x-amzn-oidc-data` the backend received.
fn data_payload(seen: &serde_json::Value) -> serde_json::Value {
    use base64::Engine as _;
    let data = seen["headers"]["x-amzn-oidc-data"].as_str().unwrap();
    let payload = data.split('.').nth(1).unwrap().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn groups_the_provider_puts_only_in_the_id_token_admit_members_and_refuse_others() {
    let s = setup_rule(
        &[],
        &GROUPS_RULE.replace("SCOPE", "openid email profile"),
        &[],
    )
    .await;
    let (admin, spaced, staff, spaced_staff) = tokio::join!(
        logged_in(&s, "token-admin"),
        logged_in(&s, "spaced-admin"),
        logged_in(&s, "token-staff"),
        logged_in(&s, "spaced-staff"),
    );
    // Members of admins by the ID token alone, as an array or as one string.
    for b in [&admin, &spaced] {
        let (status, body) = open(b, &s, "/admin/users").await;
        assert_eq!(status, 200, "{body}");
    }
    let seen = seen_by_backend(&admin, &format!("{}/admin/users", s.origin)).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "token-admin");
    let data = data_payload(&seen);
    assert_eq!(data["email"], "token-admin@example.com");
    assert!(
        data.get("groups").is_none(),
        "x-amzn-oidc-data keeps ALB's userinfo-only payload: {data}"
    );
    // Staff, by the ID token or by a userinfo string, pass the short form but are
    // refused /admin by the rule; "administrators" is not "admins".
    for b in [&staff, &spaced_staff] {
        assert_eq!(open(b, &s, "/docs").await.0, 200);
        let (status, body) = open(b, &s, "/admin/users").await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("\"AuthForbidden\""), "{body}");
    }
    // No groups at all: refused by the short form, and the log says the claim is
    // absent from both sources, never a value.
    let carol = logged_in(&s, "carol").await;
    let (status, body) = open(&carol, &s, "/docs").await;
    assert_eq!(status, 403, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let detail = page["detail"].as_str().unwrap();
    assert!(
        detail.contains("spec.authorization.groups")
            && detail.contains("groups (not in your login)"),
        "{detail}"
    );
    assert!(!detail.contains("carol@example.com"), "{detail}");
    let line = refusal_line(&s, "carol").await;
    assert!(
        line.contains("groups (absent from the ID token and userinfo)"),
        "{line}"
    );
    assert!(line.contains("release it to this client"), "{line}");
    assert!(!line.contains("carol@example.com"), "no values: {line}");
}

#[tokio::test]
async fn an_overage_and_differing_sources_are_reported_as_what_they_are() {
    let s = setup_rule(
        &[],
        &GROUPS_RULE.replace("SCOPE", "openid email profile"),
        &[],
    )
    .await;
    let (overage, split) =
        tokio::join!(logged_in(&s, "overage-user"), logged_in(&s, "split-admin"));
    let (status, body) = open(&overage, &s, "/docs").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"AuthClaimsOverage\""), "{body}");
    let line = refusal_line(&s, "overage-user").await;
    assert!(line.contains("_claim_names"), "{line}");
    assert!(line.contains("app roles"), "{line}");
    s.proxy
        .log_line(|l| l.contains("AuthClaimsOverage") && l.contains(" 403 "))
        .await;
    // Userinfo's value wins where both have the claim, and the log says they differ.
    let (status, body) = open(&split, &s, "/admin").await;
    assert_eq!(status, 403, "{body}");
    let line = refusal_line(&s, "split-admin").await;
    assert!(
        line.contains("different values; userinfo's is used")
            && line.contains("mappings of it differ"),
        "{line}"
    );
}

#[tokio::test]
async fn the_data_header_carries_the_id_tokens_claims_when_the_rule_asks() {
    let rule = GROUPS_RULE.replace("SCOPE", "openid email profile");
    let s = setup_rule(&[], &rule, &[]).await;
    let admin = logged_in(&s, "token-admin").await;
    let with_token = rule.replace(
        "  authorization:",
        "  identityHeaders: {claimsFrom: IdTokenAndUserInfo}\n  authorization:",
    );
    s.manifests
        .write("auth.yaml", &with_token.replace("ISSUER", &s.idp.issuer));
    let url = format!("{}/admin", s.origin);
    eventually("x-amzn-oidc-data carries the ID token's groups", || async {
        let seen = seen_by_backend(&admin, &url).await;
        data_payload(&seen).get("groups") == Some(&serde_json::json!(["staff", "admins"]))
    })
    .await;
    let data = data_payload(&seen_by_backend(&admin, &url).await);
    assert_eq!(data["email"], "token-admin@example.com");
    for bookkeeping in ["nonce", "at_hash", "aud", "iat", "auth_time"] {
        assert!(data.get(bookkeeping).is_none(), "{bookkeeping}: {data}");
    }
}

#[tokio::test]
async fn groups_from_the_id_token_survive_a_refresh() {
    let rule = GROUPS_RULE.replace(
        "scope: SCOPE",
        "scope: openid email profile offline_access\n    authenticationRequestExtraParams: {prompt: consent}",
    );
    let s = setup_rule(&[("IDP_ACCESS_TOKEN_TTL", "2")], &rule, &[]).await;
    let admin = logged_in(&s, "token-admin").await;
    let url = format!("{}/admin", s.origin);
    assert_eq!(seen_by_backend(&admin, &url).await["path"], "/admin");
    eventually("the session is refreshed", || async {
        seen_by_backend(&admin, &url).await;
        s.proxy
            .metrics()
            .await
            .contains(r#"portcullis_auth_refreshes_total{result="success",rule="apps/sso"} 1"#)
    })
    .await;
    // The refreshed session reads the new ID token's groups (and its sub was checked).
    let seen = seen_by_backend(&admin, &url).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "token-admin");
}

/// The diagnostic line of the refusal of `user`'s request.
async fn refusal_line(s: &Setup, user: &str) -> String {
    let sub = format!("sub={user} ");
    s.proxy
        .diagnostic_line(|l| {
            l.contains("refused by the AuthRule's authorization") && l.contains(&sub)
        })
        .await
}

/// A 403 explains itself: the page names the rule and the claims it read, and its
/// reference leads (admin endpoint, or `explain flow` on the logs) to the login's
/// flow record, which ends in the failed `authorize` hop with where each claim came
/// from and what to change at the provider. Names only, never values.
#[tokio::test]
async fn a_refused_first_request_is_the_flows_failed_authorize_hop() {
    let s = setup_rule(
        &[],
        &GROUPS_RULE.replace("SCOPE", "openid email profile"),
        &[],
    )
    .await;
    let staff = logged_in(&s, "token-staff").await;
    let (status, body) = open(&staff, &s, "/admin/users").await;
    assert_eq!(status, 403, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["detail"],
        "Refused by spec.authorization.defaultAction (no rule allowed the request). \
         Checked: groups (in your login, without a match). \
         Your login carries: email, email_verified, groups, name, sub."
    );
    let reference = page["traceId"].as_str().unwrap();

    let admin = |path: String| async move {
        reqwest::get(format!("http://{}{path}", s.proxy.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let list: serde_json::Value = serde_json::from_str(&admin("/flows".into()).await).unwrap();
    assert_eq!(list[0]["failedAt"], "authorize", "{list}");
    assert_eq!(list[0]["completed"], false, "{list}");
    let timeline = admin(format!("/flows/{reference}")).await;
    let rebuilt = {
        let logs = s.proxy.diagnostics.lock().unwrap().join("\n");
        let (ok, out) = run_with_stdin(&["explain", "flow", reference], &logs);
        assert!(ok, "{out}");
        out
    };
    for text in [&timeline, &rebuilt] {
        for expected in [
            "only in the ID token: groups",
            "spec.identityHeaders.claimsFrom: IdTokenAndUserInfo",
            "ok   final-redirect",
            "FAIL authorize",
            "broke at authorize: AuthForbidden: GET /admin/users refused by \
             spec.authorization.defaultAction (no rule allowed the request); \
             checked groups (present from the ID token only, no match); \
             claims present: email, email_verified, groups, name, sub",
            "fix:     `portcullis explain flow <reference>`",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        assert!(!text.contains("token-staff@example.com"), "{text}");
        assert!(!text.contains("completed\n"), "{text}");
    }
    // A later request that passes adds nothing: the refusal was the first request.
    assert_eq!(open(&staff, &s, "/docs").await.0, 200);
    let timeline = admin(format!("/flows/{reference}")).await;
    assert!(!timeline.contains("first-request"), "{timeline}");
}
