//! The client against a loopback server whose answers each test chooses: the wire
//! format it sends, and the reason each kind of bad answer gets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::Response;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;

type Seen = Arc<Mutex<Vec<(String, String, String)>>>;
/// Status, body and delay in ms for a request path.
type Answer = fn(&str) -> (u16, String, u64);

/// Serves `answer(path)` and records (path, authorization, body) of each request.
async fn provider(answer: Answer) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let auth = req
                            .headers()
                            .get(AUTHORIZATION)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = String::from_utf8(
                            req.into_body().collect().await.unwrap().to_bytes().to_vec(),
                        )
                        .unwrap();
                        log.lock().unwrap().push((path.clone(), auth, body));
                        let (status, text, delay_ms) = answer(&path);
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn client() -> IdpClient {
    IdpClient::new(Duration::from_millis(500)).unwrap()
}

const TOKEN_OK: &str = r#"{"access_token":"at-1","token_type":"Bearer","id_token":"x.y.z","refresh_token":"rt-1","expires_in":300}"#;

#[tokio::test]
async fn discovery_requires_the_configured_issuer() {
    let (addr, _) = provider(|_| (200, r#"{"issuer":"http://127.0.0.1:1","authorization_endpoint":"a","token_endpoint":"t","jwks_uri":"j"}"#.into(), 0)).await;
    let err = client()
        .discover(&format!("http://{addr}"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdpError::Invalid {
                hop: Hop::Discovery,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("http://127.0.0.1:1"));
}

#[tokio::test]
async fn the_code_is_redeemed_with_basic_auth_and_pkce() {
    let (addr, seen) = provider(|_| (200, TOKEN_OK.into(), 0)).await;
    let auth = ClientAuth {
        client_id: "app",
        client_secret: "s3cr:t&",
        method: TokenEndpointAuthMethod::ClientSecretBasic,
    };
    let token = client()
        .redeem_code(
            &format!("http://{addr}/token"),
            &auth,
            "c0de",
            "https://app.example.com/oauth2/idpresponse",
            "verifier",
        )
        .await
        .unwrap();
    assert_eq!(token.access_token, "at-1");
    assert_eq!(token.refresh_token.as_deref(), Some("rt-1"));
    let (path, authorization, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/token");
    assert_eq!(
        authorization,
        format!("Basic {}", STANDARD.encode("app:s3cr%3At%26"))
    );
    assert_eq!(
        body,
        "grant_type=authorization_code&code=c0de&redirect_uri=https%3A%2F%2Fapp.example.com%2Foauth2%2Fidpresponse&code_verifier=verifier"
    );
}

#[tokio::test]
async fn client_secret_post_sends_the_credentials_as_form_fields() {
    let (addr, seen) = provider(|_| (200, TOKEN_OK.into(), 0)).await;
    let auth = ClientAuth {
        client_id: "app",
        client_secret: "s",
        method: TokenEndpointAuthMethod::ClientSecretPost,
    };
    client()
        .refresh(&format!("http://{addr}/token"), &auth, "rt-1")
        .await
        .unwrap();
    let (_, authorization, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(authorization, "");
    assert_eq!(
        body,
        "grant_type=refresh_token&refresh_token=rt-1&client_id=app&client_secret=s"
    );
}

#[tokio::test]
async fn each_bad_token_answer_has_its_alb_reason() {
    let auth = ClientAuth {
        client_id: "app",
        client_secret: "s",
        method: TokenEndpointAuthMethod::ClientSecretBasic,
    };
    let cases: [(Answer, &str); 5] = [
        (
            |_| {
                (
                    400,
                    r#"{"error":"invalid_grant","error_description":"code already used"}"#.into(),
                    0,
                )
            },
            "AuthInvalidGrantError",
        ),
        (
            |_| (401, r#"{"error":"invalid_client"}"#.into(), 0),
            "AuthTokenEpRequestFailed",
        ),
        (
            |_| (200, TOKEN_OK.into(), 2000),
            "AuthTokenEpRequestTimeout",
        ),
        (
            |_| (200, r#"{"access_token":"a","token_type":"mac"}"#.into(), 0),
            "AuthInvalidTokenResponse",
        ),
        (|_| (200, "not json".into(), 0), "AuthInvalidTokenResponse"),
    ];
    for (answer, reason) in cases {
        let (addr, _) = provider(answer).await;
        let err = client()
            .redeem_code(&format!("http://{addr}/token"), &auth, "c", "r", "v")
            .await
            .unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
    }
    let err = client()
        .redeem_code("http://127.0.0.1:1/token", &auth, "c", "r", "v")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "AuthTokenEpRequestFailed", "{err}");
}

#[tokio::test]
async fn userinfo_is_bounded_and_needs_a_subject() {
    let (addr, seen) = provider(|p| match p {
        "/big" => (
            200,
            format!(r#"{{"sub":"u","blob":"{}"}}"#, "x".repeat(70_000)),
            0,
        ),
        "/nosub" => (200, r#"{"email":"a@b"}"#.into(), 0),
        _ => (200, r#"{"sub":"u","email":"a@b"}"#.into(), 0),
    })
    .await;
    let c = client();
    let claims = c
        .userinfo(&format!("http://{addr}/ok"), "at-1")
        .await
        .unwrap();
    assert_eq!(claims["email"], "a@b");
    assert_eq!(seen.lock().unwrap()[0].1, "Bearer at-1");
    assert_eq!(
        c.userinfo(&format!("http://{addr}/big"), "t")
            .await
            .unwrap_err()
            .reason(),
        "AuthUserinfoResponseSizeExceeded"
    );
    assert_eq!(
        c.userinfo(&format!("http://{addr}/nosub"), "t")
            .await
            .unwrap_err()
            .reason(),
        "AuthInvalidUserinfoResponse"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    /// Discovery and token responses of any shape are refused or read, never a panic.
    #[test]
    fn provider_documents_never_panic(doc in "\\PC{0,64}", n in proptest::prelude::any::<f64>()) {
        let _ = serde_json::from_str::<ProviderMetadata>(&doc);
        let _ = serde_json::from_str::<TokenResponse>(&doc);
        let token = format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":"{n}"}}"#);
        let parsed: Result<TokenResponse, _> = serde_json::from_str(&token);
        proptest::prop_assert!(parsed.is_ok());
    }
}
