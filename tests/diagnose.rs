//! `portcullis diagnose` against the real provider, with the setup broken on purpose:
//! a wrong client secret, a wrong issuer and an unreachable provider each get their own
//! failing check and fix.

use crate::common;

use common::app::AUTH_RULE;
use common::idp::Idp;
use common::*;

fn diagnose(issuer: &str, secret: &str) -> (bool, String) {
    let dir = TempDir::new("diagnose");
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &["127.0.0.1:9".parse().unwrap()]),
            AUTH_RULE.replace("ISSUER", issuer).replace(
                "client-secret: test-secret",
                &format!("client-secret: {secret}")
            )
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
}

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

#[test]
fn diagnose_tells_a_wrong_secret_from_a_wrong_issuer_from_an_unreachable_provider() {
    let idp = Idp::start(&[]);

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
    assert!(
        line(&out, "INFO  redirect URI").contains("https://app.example.com/oauth2/idpresponse"),
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
    let idp = Idp::start(&[("IDP_FAULT", "clock-ahead")]);
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
    let idp = Idp::start(&[]);
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
