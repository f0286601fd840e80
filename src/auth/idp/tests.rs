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
use crate::auth::client_assertion::ClientCredential;

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

fn secret_auth(secret: &ClientCredential, method: TokenEndpointAuthMethod) -> ClientAuth<'_> {
    ClientAuth {
        client_id: "app",
        credential: secret,
        method,
        resource: &[],
    }
}

/// The form fields of a request body, in order.
fn fields(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn private_key_jwt_sends_a_fresh_assertion_for_the_token_endpoint_and_no_secret() {
    let (addr, seen) = provider(|_| (200, TOKEN_OK.into(), 0)).await;
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let key = super::super::client_assertion::ClientKey::from_pem(pem.as_bytes(), None).unwrap();
    let credential = ClientCredential::Key(Arc::new(key));
    let resource = [
        "https://api.example.com".to_owned(),
        "urn:example:b".to_owned(),
    ];
    let auth = ClientAuth {
        resource: &resource,
        ..secret_auth(&credential, TokenEndpointAuthMethod::PrivateKeyJwt)
    };
    let url = format!("http://{addr}/token");
    let idp = client();
    idp.redeem_code(&url, &auth, "c0de", "https://app.example.com/cb", "v")
        .await
        .unwrap();
    idp.refresh(&url, &auth, "rt-1").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let mut assertions = Vec::new();
    for (grant, (_, authorization, body)) in
        ["authorization_code", "refresh_token"].iter().zip(&seen)
    {
        assert_eq!(authorization, "", "no Basic credentials");
        let f = fields(body);
        let get = |k: &str| {
            f.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("grant_type"), [*grant]);
        assert_eq!(get("client_id"), ["app"]);
        assert_eq!(
            get("client_assertion_type"),
            ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
        );
        assert_eq!(
            get("resource"),
            ["https://api.example.com", "urn:example:b"]
        );
        assert!(get("client_secret").is_empty());
        let jwt = get("client_assertion")[0].to_owned();
        let payload: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (payload["iss"].as_str(), payload["sub"].as_str()),
            (Some("app"), Some("app"))
        );
        assert_eq!(payload["aud"], url.as_str());
        assertions.push(payload["jti"].clone());
    }
    assert_ne!(assertions[0], assertions[1], "each request has its own jti");
}

#[tokio::test]
async fn a_missing_service_account_token_fails_the_token_request_before_sending_it() {
    let (addr, seen) = provider(|_| (200, TOKEN_OK.into(), 0)).await;
    let token = super::super::client_assertion::ServiceAccountToken::new("apps", "api://x");
    let credential = ClientCredential::ServiceAccountToken(token);
    let auth = secret_auth(&credential, TokenEndpointAuthMethod::PrivateKeyJwt);
    let err = client()
        .with_token_dir("/nonexistent-portcullis-tokens".into())
        .refresh(&format!("http://{addr}/token"), &auth, "rt-1")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "AuthTokenEpRequestFailed");
    assert!(
        err.to_string()
            .contains("/nonexistent-portcullis-tokens/apps/api%3A%2F%2Fx"),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty());
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
    let secret = ClientCredential::Secret("s3cr:t&".into());
    let auth = secret_auth(&secret, TokenEndpointAuthMethod::ClientSecretBasic);
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
    let secret = ClientCredential::Secret("s".into());
    let auth = secret_auth(&secret, TokenEndpointAuthMethod::ClientSecretPost);
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
    let secret = ClientCredential::Secret("s".into());
    let auth = secret_auth(&secret, TokenEndpointAuthMethod::ClientSecretBasic);
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
