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
        "    nginx.ingress.kubernetes.io/rewrite-target: /\n    alb.ingress.kubernetes.io/target-type: ip\n",
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
        out.contains("metadata.annotations[alb.ingress.kubernetes.io/target-type]"),
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

/// An Ingress for ALB (internet-facing, one path to Service svc) with these
/// annotations, each line indented by four spaces.
fn for_alb(annotations: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
{annotations}spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}
"#
    )
}

/// A JWT access token from the provider (client_credentials for the API).
async fn access_token(issuer: &str) -> String {
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("portcullis-test", Some("test-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
            ("scope", "api:read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {resp}"))
        .to_owned()
}

/// `GET /api/items` for app.example.com with `headers` (each ending in CRLF).
fn get_with(headers: &str) -> Vec<u8> {
    format!(
        "GET /api/items HTTP/1.1\r\nHost: app.example.com\r\n{headers}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// `jwt-validation` alone guards every path with bearer tokens: without one, or with
/// a forged, re-signed-as-none or foreign one, the answer is 401 and the backend never
/// hears of it; a token the issuer signed passes unchanged.
#[tokio::test]
async fn jwt_validation_alone_lets_only_valid_bearer_tokens_through() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-jwt");
    dir.write("svc.yaml", &service_yaml("svc", &[backend.addr]));
    let proxy = Portcullis::start(dir.path(), &[]);
    let idp = Idp::start(&[]);
    let issuer = &idp.issuer;
    // The route is served first, so the next answers come from the guard.
    dir.write("app.yaml", &for_alb(""));
    eventually("the unguarded route is served", || async {
        raw_exchange(proxy.http, &get_with(""))
            .await
            .backend()
            .is_some()
    })
    .await;
    dir.write(
        "app.yaml",
        &for_alb(&format!(
            "    alb.ingress.kubernetes.io/jwt-validation: '{{\"jwksEndpoint\":\"{issuer}/jwks\",\"issuer\":\"{issuer}\",\"additionalClaims\":[{{\"name\":\"scope\",\"format\":\"space-separated-values\",\"values\":[\"api:read\"]}}]}}'\n    portcullis.dev/jwt-audiences: https://api.example.com\n"
        )),
    );
    eventually("jwt-validation guards the route", || async {
        raw_exchange(proxy.http, &get_with("")).await.status == 401
    })
    .await;

    let good = access_token(issuer).await;
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = "admin".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        parts[1]
    );
    for (what, headers, reason) in [
        ("no token", String::new(), "AuthBearerTokenRequired"),
        (
            "another scheme",
            "Authorization: Basic YWRtaW46YWRtaW4=\r\n".to_owned(),
            "AuthBearerTokenRequired",
        ),
        (
            "a forged token",
            format!("Authorization: Bearer {forged}\r\n"),
            "AuthInvalidBearerToken",
        ),
        (
            "alg none",
            format!("Authorization: Bearer {unsigned}\r\n"),
            "AuthInvalidBearerToken",
        ),
        (
            "not a JWT",
            "Authorization: Bearer opaque\r\n".to_owned(),
            "AuthInvalidBearerToken",
        ),
        (
            "a session cookie instead",
            "Cookie: AWSELBAuthSessionCookie-0=x\r\nAccept: text/html\r\n".to_owned(),
            "AuthBearerTokenRequired",
        ),
    ] {
        let answer = raw_exchange(proxy.http, &get_with(&headers)).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.head);
        assert!(answer.backend().is_none(), "{what}: {}", answer.body);
        assert!(answer.body.contains(reason), "{what}: {}", answer.body);
        let head = answer.head.to_ascii_lowercase();
        assert!(head.contains("www-authenticate: bearer"), "{what}: {head}");
        assert!(!head.contains("location:"), "{what}: never a login");
    }
    let answer = raw_exchange(
        proxy.http,
        &get_with(&format!("Authorization: Bearer {good}\r\n")),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let seen = answer.backend().expect("the backend answered");
    assert_eq!(
        seen["headers"]["authorization"],
        format!("Bearer {good}"),
        "the token is forwarded unchanged"
    );
}

/// `inbound-cidrs` is who may connect at all: a request from elsewhere gets 403 before
/// any login or backend, whatever X-Forwarded-For an untrusted peer sends; behind a
/// trusted proxy, the address that proxy saw counts.
#[tokio::test]
async fn inbound_cidrs_admit_only_the_listed_networks() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-cidrs");
    dir.write("svc.yaml", &service_yaml("svc", &[backend.addr]));
    let proxy = Portcullis::start(dir.path(), &[]);
    let behind_proxy = Portcullis::start(dir.path(), &["--trusted-proxy", "127.0.0.1"]);
    let login = "    alb.ingress.kubernetes.io/auth-type: oidc\n    alb.ingress.kubernetes.io/auth-idp-oidc: '{\"issuer\":\"https://idp.example.com\",\"secretName\":\"oidc-client\"}'\n    alb.ingress.kubernetes.io/auth-on-unauthenticated-request: allow\n";
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: oidc-client, namespace: apps}\nstringData: {clientID: portcullis-test, clientSecret: test-secret}\n";
    dir.write("app.yaml", &format!("{}{secret}", for_alb(login)));
    eventually("the route is served", || async {
        raw_exchange(proxy.http, &get_with(""))
            .await
            .backend()
            .is_some()
    })
    .await;
    dir.write(
        "app.yaml",
        &format!(
            "{}{secret}",
            for_alb(&format!(
                "    alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8, 2001:db8::/32\n{login}"
            ))
        ),
    );
    eventually("inbound-cidrs closes the route to loopback", || async {
        raw_exchange(proxy.http, &get_with("")).await.status == 403
    })
    .await;
    // The second instance reads the same files on its own schedule.
    eventually(
        "the instance behind the proxy has the allow-list too",
        || async {
            raw_exchange(
                behind_proxy.http,
                &get_with("X-Forwarded-For: 203.0.113.5\r\n"),
            )
            .await
            .status
                == 403
        },
    )
    .await;
    for (what, request) in [
        ("no header", get_with("")),
        (
            "an untrusted peer's X-Forwarded-For",
            get_with("X-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\nForwarded: for=10.1.2.3\r\n"),
        ),
        (
            "the login callback",
            b"GET /oauth2/idpresponse?code=x&state=y HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "the logout path",
            b"GET /oauth2/logout HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
    ] {
        let answer = raw_exchange(proxy.http, &request).await;
        assert_eq!(answer.status, 403, "{what}: {}", answer.head);
        assert!(answer.body.contains("SourceNotAllowed"), "{what}: {}", answer.body);
        assert!(answer.backend().is_none(), "{what}");
    }
    // Behind a trusted proxy: the right-most address it did not add itself.
    for (xff, admitted) in [
        ("10.1.2.3", true),
        ("2001:db8::7", true),
        ("203.0.113.5", false),
        ("10.1.2.3, 203.0.113.5", false),
        ("unknown", false),
    ] {
        let answer = raw_exchange(
            behind_proxy.http,
            &get_with(&format!("X-Forwarded-For: {xff}\r\n")),
        )
        .await;
        assert_eq!(
            answer.backend().is_some(),
            admitted,
            "{xff}: {}",
            answer.head
        );
        if !admitted {
            assert_eq!(answer.status, 403, "{xff}");
        }
    }
    // Listing loopback opens it.
    dir.write(
        "app.yaml",
        &format!(
            "{}{secret}",
            for_alb(&format!(
                "    alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8,127.0.0.0/8\n{login}"
            ))
        ),
    );
    eventually("loopback is admitted", || async {
        raw_exchange(proxy.http, &get_with(""))
            .await
            .backend()
            .is_some()
    })
    .await;
    // A malformed list closes the route, never opens it.
    dir.write(
        "app.yaml",
        &format!(
            "{}{secret}",
            for_alb(&format!(
                "    alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8,127.0.0.1\n{login}"
            ))
        ),
    );
    eventually("the malformed list closes the route", || async {
        raw_exchange(proxy.http, &get_with("")).await.status == 500
    })
    .await;
    let answer = raw_exchange(proxy.http, &get_with("")).await;
    assert!(answer.body.contains("AnnotationInvalid"), "{}", answer.body);
    assert!(answer.backend().is_none());
}

/// Access controls Portcullis cannot give answer 500 and never the app, until the
/// operator, having put them in front, accepts the difference on the Ingress.
#[tokio::test]
async fn access_controls_that_cannot_be_honoured_close_the_route_until_accepted() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-closed");
    dir.write("svc.yaml", &service_yaml("svc", &[backend.addr]));
    let proxy = Portcullis::start(dir.path(), &[]);
    let request = get_with("");
    for (name, annotation) in [
        ("scheme", "    alb.ingress.kubernetes.io/scheme: internal\n"),
        (
            "wafv2-acl-arn",
            "    alb.ingress.kubernetes.io/wafv2-acl-arn: arn:aws:wafv2:us-east-1:123456789012:regional/webacl/app/0b8f\n",
        ),
        (
            "waf-acl-id",
            "    alb.ingress.kubernetes.io/waf-acl-id: 0b8f\n",
        ),
        (
            "shield-advanced-protection",
            "    alb.ingress.kubernetes.io/shield-advanced-protection: \"true\"\n",
        ),
        (
            "security-groups",
            "    alb.ingress.kubernetes.io/security-groups: sg-0123, sg-4567\n",
        ),
        (
            "security-group-prefix-lists",
            "    alb.ingress.kubernetes.io/security-group-prefix-lists: pl-0123\n",
        ),
    ] {
        let ingress = |extra: &str| {
            for_alb(&format!("{annotation}{extra}"))
                .replace("    alb.ingress.kubernetes.io/scheme: internet-facing\n    alb.ingress.kubernetes.io/scheme: internal\n", "    alb.ingress.kubernetes.io/scheme: internal\n")
        };
        dir.write(
            "app.yaml",
            &ingress(&format!(
                "    portcullis.dev/accept-alb-differences: {name}\n"
            )),
        );
        eventually("the accepted difference is served", || async {
            raw_exchange(proxy.http, &request).await.backend().is_some()
        })
        .await;
        dir.write("app.yaml", &ingress(""));
        eventually("the annotation closes the route", || async {
            raw_exchange(proxy.http, &request).await.status == 500
        })
        .await;
        let answer = raw_exchange(proxy.http, &request).await;
        assert!(answer.backend().is_none(), "{name}: {}", answer.body);
        assert!(
            answer.body.contains("AnnotationNotHonoured"),
            "{name}: {}",
            answer.body
        );
        let (ok, out) = run_with_stdin(&["check", "-f", dir.path().to_str().unwrap()], "");
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!(
                "metadata.annotations[alb.ingress.kubernetes.io/{name}]"
            )) && out.contains(&format!("portcullis.dev/accept-alb-differences: {name}")),
            "check names the annotation and the way to accept it: {out}"
        );
    }
}

/// Behind a trusted proxy, the address the proxy appended to X-Forwarded-For is the
/// client's: naming X-Forwarded-For in the client's `Connection` header (which such a
/// proxy may pass on) does not drop it and let the client pass as the proxy itself.
#[tokio::test]
async fn connection_cannot_drop_the_trusted_proxys_forwarded_for() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-cidrs-connection");
    dir.write("svc.yaml", &service_yaml("svc", &[backend.addr]));
    // The proxy in front (loopback here) is in the private range inbound-cidrs admits.
    dir.write(
        "app.yaml",
        &for_alb("    alb.ingress.kubernetes.io/inbound-cidrs: 127.0.0.0/8\n"),
    );
    let proxy = Portcullis::start(dir.path(), &["--trusted-proxy", "127.0.0.1"]);
    eventually("a client in the range is admitted", || async {
        raw_exchange(proxy.http, &get_with("X-Forwarded-For: 127.0.0.9\r\n"))
            .await
            .backend()
            .is_some()
    })
    .await;
    for (what, request) in [
        (
            "plain",
            b"GET /api/items HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 203.0.113.5\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "Connection names X-Forwarded-For",
            b"GET /api/items HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 203.0.113.5\r\nConnection: close, X-Forwarded-For\r\n\r\n".to_vec(),
        ),
        (
            "a second Connection header names it",
            b"GET /api/items HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 203.0.113.5\r\nConnection: close\r\nConnection: x-forwarded-for\r\n\r\n".to_vec(),
        ),
    ] {
        let answer = raw_exchange(proxy.http, &request).await;
        assert_eq!(answer.status, 403, "{what}: {}", answer.body);
        assert!(answer.backend().is_none(), "{what}: {}", answer.body);
    }
}

/// An Ingress of an ALB IngressGroup (`group.name`), as AWS's controller builds
/// it, shares one load balancer with the group's other Ingresses: an access control of
/// the load balancer (`inbound-cidrs`, WAF, security groups, ...) set on one of them
/// guards them all. A group member without the annotation is not open to everyone.
#[tokio::test]
async fn load_balancer_access_controls_cover_the_whole_ingress_group() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-group");
    dir.write("svc.yaml", &service_yaml("svc", &[backend.addr]));
    let member = |name: &str, host: &str, annotations: &str| {
        format!(
            r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/group.name: shared
    alb.ingress.kubernetes.io/scheme: internet-facing
{annotations}spec:
  ingressClassName: portcullis
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}
"#
        )
    };
    let proxy = Portcullis::start(dir.path(), &[]);
    let get = |host: &str| {
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    dir.write(
        "app.yaml",
        &format!(
            "{}{}",
            member("web", "app.example.com", ""),
            member("admin", "admin.example.com", "")
        ),
    );
    eventually("both members are served", || async {
        raw_exchange(proxy.http, &get("admin.example.com"))
            .await
            .backend()
            .is_some()
    })
    .await;
    // The group's load balancer admits 10.0.0.0/8 only (set on one member, as AWS's
    // controller asks of such annotations).
    dir.write(
        "app.yaml",
        &format!(
            "{}{}",
            member(
                "web",
                "app.example.com",
                "    alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8\n"
            ),
            member("admin", "admin.example.com", "")
        ),
    );
    eventually("the annotated member refuses loopback", || async {
        raw_exchange(proxy.http, &get("app.example.com"))
            .await
            .status
            == 403
    })
    .await;
    let answer = raw_exchange(proxy.http, &get("admin.example.com")).await;
    assert!(
        answer.backend().is_none(),
        "the other member of the group is behind the same load balancer: {}",
        answer.body
    );
    assert_eq!(answer.status, 403, "{}", answer.head);
}
