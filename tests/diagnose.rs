//! `portcullis diagnose` against the real provider, with the setup broken on purpose:
//! a wrong client secret, a wrong issuer, an unreachable provider, an unknown client id
//! and an unregistered redirect URI each get their own failing check and fix.

use crate::common;

use common::app::AUTH_RULE;
use common::idp::Idp;
use common::*;

/// The login setup's rule on `host` (plain HTTP unless `tls` names a certificate).
struct Rule<'a> {
    issuer: &'a str,
    secret: &'a str,
    client_id: &'a str,
    host: &'a str,
    tls: Option<&'a common::tls::TestCert>,
}

impl Default for Rule<'_> {
    fn default() -> Self {
        Self {
            issuer: "",
            secret: "test-secret",
            client_id: "portcullis-test",
            host: "app.example.com",
            tls: None,
        }
    }
}

fn run(rule: Rule<'_>, args: &[&str]) -> (bool, String) {
    let dir = TempDir::new("diagnose");
    let (extra_spec, secret) = match rule.tls {
        Some(c) => (
            format!(
                "  tls: [{{hosts: [\"{}\"], secretName: web-tls}}]\n",
                rule.host
            ),
            common::tls::tls_secret("web-tls", c),
        ),
        None => Default::default(),
    };
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}{secret}",
            ingress_yaml("web", &[(rule.host, "/", "svc")], &extra_spec),
            service_yaml("svc", &["127.0.0.1:9".parse().unwrap()]),
            AUTH_RULE
                .replace("ISSUER", rule.issuer)
                .replace(
                    "client-secret: test-secret",
                    &format!("client-secret: {}", rule.secret)
                )
                .replace(
                    "clientId: portcullis-test",
                    &format!("clientId: {}", rule.client_id)
                )
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["diagnose", "--idp-timeout", "2"])
        .args(args)
        .arg("-f")
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn diagnose(issuer: &str, secret: &str) -> (bool, String) {
    run(
        Rule {
            issuer,
            secret,
            ..Rule::default()
        },
        &[],
    )
}

/// The provider, with `http://app.example.com/oauth2/idpresponse` registered: the
/// redirect URI of the test rule's plain-HTTP host on port 80.
fn provider(env: &[(&str, &str)]) -> Idp {
    let mut env = env.to_vec();
    env.push((
        "IDP_REDIRECT_URIS",
        "http://app.example.com/oauth2/idpresponse",
    ));
    Idp::start(&env)
}

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

#[test]
fn diagnose_tells_a_wrong_secret_from_a_wrong_issuer_from_an_unreachable_provider() {
    let idp = provider(&[]);

    let (ok, out) = diagnose(&idp.issuer, "test-secret");
    assert!(ok, "{out}");
    for check in [
        "PASS  discovery",
        "PASS  keys",
        "PASS  clock",
        "PASS  credentials",
    ] {
        line(&out, check);
    }
    let login = line(&out, "PASS  login");
    assert!(
        login.contains("http://app.example.com/oauth2/idpresponse: the provider shows its login page (303 → 200, a form at "),
        "{out}"
    );

    let (ok, out) = diagnose(&idp.issuer, "not-the-secret");
    assert!(!ok);
    assert!(
        line(&out, "FAIL  credentials").contains("invalid_client"),
        "{out}"
    );
    assert!(out.contains("update the Secret"), "{out}");
    line(&out, "PASS  discovery");

    let (ok, out) = diagnose(&format!("{}/", idp.issuer), "test-secret");
    assert!(!ok);
    assert!(
        line(&out, "FAIL  issuer").contains(&format!("{:?}", idp.issuer)),
        "{out}"
    );
    assert!(
        !out.contains("credentials"),
        "later checks need the right issuer: {out}"
    );

    let (ok, out) = diagnose("http://127.0.0.1:9", "test-secret");
    assert!(!ok);
    assert!(
        line(&out, "FAIL  discovery").contains("cannot be reached"),
        "{out}"
    );
}

#[test]
fn diagnose_notices_a_provider_clock_five_minutes_off() {
    let idp = provider(&[("IDP_FAULT", "clock-ahead")]);
    let (ok, out) = diagnose(&idp.issuer, "test-secret");
    assert!(!ok);
    let clock = line(&out, "FAIL  clock");
    assert!(clock.contains("-30") || clock.contains("-29"), "{clock}");
    assert!(out.contains("NTP"), "{out}");
}

/// A token endpoint as strict as Keycloak's about how the secret is sent: form fields
/// only (HTTP Basic is `invalid_client`), any code refused as `invalid_grant`.
/// oidc-provider answers a made-up code with `invalid_grant` whatever the method.
async fn form_only_token_endpoint() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let basic = req.headers().contains_key("authorization");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let form = String::from_utf8_lossy(&body);
                        let answer = if basic || !form.contains("client_secret=test-secret") {
                            (401, r#"{"error":"invalid_client"}"#)
                        } else {
                            (400, r#"{"error":"invalid_grant"}"#)
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(answer.0)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                    answer.1.as_bytes(),
                                )))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A secret sent the wrong way (HTTP Basic to an endpoint that wants form fields) is
/// told apart from a wrong secret: diagnose tries the other way itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_tells_a_wrong_auth_method_from_a_wrong_secret() {
    let idp = provider(&[]);
    let token = form_only_token_endpoint().await;
    let issuer = format!("{}\n    tokenEndpoint: http://{token}/token", idp.issuer);
    let (ok, out) = diagnose(&issuer, "test-secret");
    assert!(!ok);
    let failed = line(&out, "FAIL  credentials");
    assert!(
        failed.contains("accepted it with client_secret_post"),
        "{out}"
    );
    assert!(
        out.contains("set spec.oidc.tokenEndpointAuthMethod: client_secret_post"),
        "{out}"
    );
    let (_, out) = diagnose(&issuer, "not-the-secret");
    assert!(
        line(&out, "FAIL  credentials").contains("with either way"),
        "{out}"
    );
}

/// An on-call engineer's case: the rule's `clientId: Portcullis` where the provider
/// registered `portcullis`. The login is refused, and the advice names the client id
/// before the secret.
#[test]
fn diagnose_names_an_unknown_client_id_before_the_secret() {
    let idp = provider(&[("IDP_CLIENT_ID", "portcullis")]);
    let rule = Rule {
        issuer: &idp.issuer,
        client_id: "Portcullis",
        ..Rule::default()
    };
    let (ok, out) = run(rule, &[]);
    assert!(!ok);
    let login = line(&out, "FAIL  login");
    assert!(
        login.contains(
            "http://app.example.com/oauth2/idpresponse: oidc-provider refused the login (400 at "
        ),
        "{out}"
    );
    assert!(
        login.contains("error: invalid_client error_description: client is invalid"),
        "{out}"
    );
    assert!(
        out.contains("\n      fix: client `Portcullis` is unknown at the provider; client ids are case-sensitive: set spec.oidc.clientId to the id the provider shows for this application, then check the client secret in the Secret named by spec.oidc.clientSecretRef\n"),
        "{out}"
    );
    line(&out, "FAIL  credentials");
    assert!(
        out.contains("\n      fix: client `Portcullis` is unknown at the provider (the login check says so): correct spec.oidc.clientId first (client ids are case-sensitive); the secret can only be checked after that\n"),
        "{out}"
    );
    assert!(!out.contains("update the Secret"), "{out}");
}

/// An on-call engineer's case: the host is served over plain HTTP, so logins send
/// `http://strict.test/oauth2/idpresponse`, and only the `https://` form is registered.
/// With a certificate for the host, logins send the `https://` form, which passes.
#[test]
fn diagnose_sends_the_redirect_uri_logins_send_and_says_it_is_not_registered() {
    let idp = Idp::start(&[(
        "IDP_REDIRECT_URIS",
        "https://strict.test/oauth2/idpresponse",
    )]);
    let plain = Rule {
        issuer: &idp.issuer,
        host: "strict.test",
        ..Rule::default()
    };
    let (ok, out) = run(plain, &[]);
    assert!(!ok, "{out}");
    let login = line(&out, "FAIL  login");
    assert!(
        login.contains("http://strict.test/oauth2/idpresponse: oidc-provider refused the login"),
        "{out}"
    );
    assert!(
        login.contains("redirect_uri did not match any of the client's registered redirect_uris"),
        "the provider's words: {out}"
    );
    assert!(
        out.contains("\n      fix: `http://strict.test/oauth2/idpresponse` is not registered for client `portcullis-test`; register it or serve the host over HTTPS\n"),
        "{out}"
    );
    line(&out, "PASS  credentials");

    let cert = common::tls::cert(&["strict.test"]);
    let secure = Rule {
        issuer: &idp.issuer,
        host: "strict.test",
        tls: Some(&cert),
        ..Rule::default()
    };
    let (ok, out) = run(secure, &[]);
    assert!(ok, "{out}");
    assert!(
        line(&out, "PASS  login")
            .contains("https://strict.test/oauth2/idpresponse: the provider shows its login page"),
        "{out}"
    );
    assert!(
        !out.contains("http://strict.test"),
        "plain HTTP redirects to HTTPS: {out}"
    );

    // Browsers that reach HTTPS on another port send that port.
    let secure = Rule {
        issuer: &idp.issuer,
        host: "strict.test",
        tls: Some(&cert),
        ..Rule::default()
    };
    let (ok, out) = run(secure, &["--https-port", "8443"]);
    assert!(!ok);
    assert!(
        out.contains("\n      fix: `https://strict.test:8443/oauth2/idpresponse` is not registered for client `portcullis-test`; register it\n"),
        "no word of HTTPS for an https:// URI: {out}"
    );
}

/// A provider that refuses after checking the client and redirect URI sends the
/// browser back with `error=`: the error and its description are the provider's words.
#[test]
fn diagnose_reads_an_error_redirect_back_to_the_redirect_uri() {
    let idp = provider(&[]);
    let rule = Rule {
        issuer: &format!(
            "{}\n    authenticationRequestExtraParams: {{prompt: bogus}}",
            idp.issuer
        ),
        ..Rule::default()
    };
    let (ok, out) = run(rule, &[]);
    assert!(!ok, "{out}");
    let login = line(&out, "FAIL  login");
    assert!(
        login.contains("refused the login (303 at http://app.example.com/oauth2/idpresponse)"),
        "{out}"
    );
    assert!(login.contains("invalid_request"), "{out}");
    assert!(
        out.contains("check spec.oidc.authenticationRequestExtraParams"),
        "{out}"
    );
}

/// Two rules of one provider: its clock is one reading, printed once.
#[test]
fn a_providers_clock_is_printed_once_for_all_its_rules() {
    let idp = provider(&[("IDP_FAULT", "clock-ahead")]);
    let dir = TempDir::new("diagnose-two");
    let second = AUTH_RULE
        .replace("ISSUER", &idp.issuer)
        .replace("name: sso,", "name: sso-admin,")
        .replace(
            "targetRefs: [{name: web}]",
            "targetRefs: [{name: web}]\n  paths: [\"/admin*\"]",
        )
        .split("---\napiVersion: v1\nkind: Secret")
        .next()
        .unwrap()
        .to_owned();
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}{second}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &["127.0.0.1:9".parse().unwrap()]),
            AUTH_RULE.replace("ISSUER", &idp.issuer),
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["diagnose", "--idp-timeout", "2", "-f"])
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.matches("AuthRule apps/").count(), 2, "{out}");
    assert_eq!(out.matches("FAIL  clock").count(), 1, "{out}");
    assert_eq!(out.matches("PASS  login").count(), 2, "{out}");
}

#[test]
fn diagnose_checks_a_bearer_only_rule_by_its_token_issuers_keys() {
    let idp = provider(&[]);
    let run_with = |bearer: &str| {
        let dir = TempDir::new("diagnose-bearer");
        dir.write(
            "all.yaml",
            &format!(
                "{}{}---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: api, namespace: apps}}\nspec:\n  targetRefs: [{{name: web}}]\n  bearer: {bearer}\n",
                ingress_yaml("web", &[("api.example.com", "/", "svc")], ""),
                service_yaml("svc", &["127.0.0.1:9".parse().unwrap()]),
            ),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["diagnose", "--idp-timeout", "2", "-f"])
            .arg(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run_with(&format!("{{issuer: \"{}\", audiences: [api]}}", idp.issuer));
    assert!(ok, "{out}");
    line(&out, "PASS  discovery");
    assert!(line(&out, "PASS  keys").contains("/jwks"), "{out}");
    assert!(
        line(&out, "INFO  login").contains("bearer tokens only"),
        "{out}"
    );
    for absent in ["  credentials", "  userinfo", "PASS  login", "FAIL  login"] {
        assert!(!out.contains(absent), "no login to check: {out}");
    }
    // Keys named directly: no discovery needed; keys that cannot be read fail.
    let (ok, out) = run_with(&format!(
        "{{issuer: \"https://tokens.example.com\", jwksUri: \"{}/jwks\", audiences: [api]}}",
        idp.issuer
    ));
    assert!(ok, "{out}");
    assert!(!out.contains("discovery"), "{out}");
    line(&out, "PASS  keys");
    let (ok, out) = run_with("{issuer: \"http://127.0.0.1:9\", audiences: [api]}");
    assert!(!ok);
    assert!(
        line(&out, "FAIL  discovery").contains("cannot be reached"),
        "{out}"
    );
    let (ok, out) = run_with(&format!(
        "{{issuer: \"{}/\", audiences: [api]}}",
        idp.issuer
    ));
    assert!(!ok);
    line(&out, "FAIL  issuer");
    assert!(
        out.contains(&format!("set spec.bearer.issuer to exactly {}", idp.issuer)),
        "the fix names the bearer issuer: {out}"
    );
}
