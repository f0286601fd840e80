//! Ingresses written for the AWS Load Balancer Controller log people in unchanged: only
//! `alb.ingress.kubernetes.io/auth-*` annotations and their Secret, through the
//! certified provider.

use crate::common;

use common::app::{browser, log_in_at, seen_by_backend};
use common::idp::Idp;
use common::*;

fn annotated(issuer: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/auth-type: oidc
    alb.ingress.kubernetes.io/auth-idp-oidc: '{{"issuer":"{issuer}","secretName":"oidc-client"}}'
    alb.ingress.kubernetes.io/auth-scope: openid email profile
    alb.ingress.kubernetes.io/auth-session-cookie: my-session
    alb.ingress.kubernetes.io/auth-session-timeout: "3600"
    alb.ingress.kubernetes.io/auth-on-unauthenticated-request: authenticate
{extra}spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: oidc-client, namespace: apps}}
stringData: {{clientID: portcullis-test, clientSecret: test-secret}}
"#
    )
}

#[tokio::test]
async fn an_ingress_with_only_alb_annotations_logs_a_user_in() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-annotations");
    dir.write("svc.yaml", &service_yaml("svc", &[backend.addr]));
    let proxy = Portcullis::start(dir.path(), &[]);
    let origin = format!("http://app.example.com:{}", proxy.http.port());
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &format!("{origin}/oauth2/idpresponse"))]);
    dir.write("app.yaml", &annotated(&idp.issuer, ""));
    let b = browser(&proxy);
    eventually("the annotations guard the route", || async {
        b.get(format!("{origin}/"))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| r.status() == 302)
    })
    .await;
    log_in_at(&b, &origin, "carol").await;
    let seen = seen_by_backend(&b, &format!("{origin}/")).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "carol");
    let cookie = seen["headers"]["cookie"].as_str().unwrap();
    // A flow cookie of the probe above may ride along; the session is the named one.
    let names: Vec<&str> = cookie
        .split("; ")
        .filter_map(|c| c.split_once('=').map(|(n, _)| n))
        .collect();
    assert!(
        names.contains(&"my-session-0"),
        "auth-session-cookie names the cookie: {names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("AWSELBAuthSessionCookie")),
        "{names:?}"
    );
}

#[test]
fn check_names_the_broken_annotation_and_warns_of_foreign_ones() {
    let dir = TempDir::new("alb-check");
    let broken = annotated(
        "https://idp.example.com",
        "    nginx.ingress.kubernetes.io/rewrite-target: /\n",
    )
    .replace(
        r#""secretName":"oidc-client""#,
        r#""secretname":"oidc-client""#,
    );
    dir.write(
        "all.yaml",
        &format!(
            "{broken}{}",
            service_yaml("svc", &["127.0.0.1:9".parse().unwrap()])
        ),
    );
    let (ok, out) = run_with_stdin(&["check", "-f", dir.path().to_str().unwrap()], "");
    assert!(!ok, "{out}");
    assert!(
        out.contains("metadata.annotations[alb.ingress.kubernetes.io/auth-idp-oidc]")
            && out.contains("secretName"),
        "{out}"
    );
    assert!(
        out.contains("metadata.annotations[alb.ingress.kubernetes.io/scheme]"),
        "{out}"
    );
    assert!(
        out.contains("nginx.ingress.kubernetes.io/rewrite-target")
            && out.contains("IgnoredAnnotation"),
        "{out}"
    );

    let bad_issuer = annotated("http://idp.example.com", "");
    dir.write(
        "all.yaml",
        &format!(
            "{bad_issuer}{}",
            service_yaml("svc", &["127.0.0.1:9".parse().unwrap()])
        ),
    );
    let (ok, out) = run_with_stdin(&["check", "-f", dir.path().to_str().unwrap()], "");
    assert!(!ok);
    assert!(
        out.contains("metadata.annotations[alb.ingress.kubernetes.io/auth-idp-oidc].issuer"),
        "the spec field is named as the annotation it came from: {out}"
    );
}

/// Annotations that ask for a login Portcullis cannot set up (the Secret they name is
/// missing, the JSON is broken, Cognito) close the Ingress's routes: an attacker's
/// request gets 500 and never reaches the backend, instead of passing without a login.
#[tokio::test]
async fn broken_login_annotations_close_the_routes_instead_of_opening_them() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-broken");
    dir.write("svc.yaml", &service_yaml("svc", &[backend.addr]));
    let proxy = Portcullis::start(dir.path(), &[]);
    let request = b"GET /admin HTTP/1.1\r\nHost: app.example.com\r\nAccept: text/html\r\nConnection: close\r\n\r\n";
    let good = annotated("https://idp.example.com", "");
    for broken in [
        good.replace("secretName\":\"oidc-client", "secretName\":\"missing"),
        good.replace(
            "alb.ingress.kubernetes.io/auth-idp-oidc: '{",
            "alb.ingress.kubernetes.io/auth-idp-oidc: '{,",
        ),
        good.replace("auth-type: oidc", "auth-type: cognito"),
    ] {
        // The route is served first without any annotation, so the next answer comes
        // from the broken one and not from a route that is not there yet.
        dir.write(
            "app.yaml",
            &broken.replace("alb.ingress.kubernetes.io/auth-", "x-"),
        );
        eventually("the unguarded route is served", || async {
            raw_exchange(proxy.http, request).await.backend().is_some()
        })
        .await;
        dir.write("app.yaml", &broken);
        eventually("the broken annotations close the route", || async {
            raw_exchange(proxy.http, request).await.status == 500
        })
        .await;
        let answer = raw_exchange(proxy.http, request).await;
        assert!(answer.backend().is_none(), "{}", answer.body);
        assert!(answer.body.contains("AuthRuleInvalid"), "{}", answer.body);
    }
}
