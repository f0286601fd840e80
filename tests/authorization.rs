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
    let diagnostics = s.proxy.diagnostics.lock().unwrap().join("\n");
    let refusal = diagnostics
        .lines()
        .find(|l| l.contains("refused by the AuthRule's authorization"))
        .expect("a log line for the refusal");
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
