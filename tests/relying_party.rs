//! Portcullis's relying-party pieces against a real, certified OpenID provider:
//! discovery, the authorization request with state, nonce and PKCE, the flow-cookie
//! check, code redemption, ID-token validation, userinfo, refresh and the reasons for
//! a replayed code and a wrong secret.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::idp::{Callback, Idp, log_in};
use portcullis::auth::client_assertion::ClientCredential;
use portcullis::auth::flow;
use portcullis::auth::id_token::{Expected, allowed_algs, validate};
use portcullis::auth::idp::{ClientAuth, IdpClient, ProviderMetadata};
use portcullis::auth::sealed::KeyRing;
use portcullis::form::form_encode;
use portcullis::model::TokenEndpointAuthMethod;

const REDIRECT_URI: &str = "https://app.example.com/oauth2/idpresponse";
const CLIENT_ID: &str = "portcullis-test";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn authorization_url(meta: &ProviderMetadata, f: &flow::FlowState) -> String {
    format!(
        "{}?client_id={CLIENT_ID}&redirect_uri={}&response_type=code&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256&prompt=consent",
        meta.authorization_endpoint,
        form_encode(REDIRECT_URI),
        form_encode("openid email profile offline_access"),
        f.state,
        f.nonce,
        f.pkce_challenge()
    )
}

fn auth(secret: &ClientCredential) -> ClientAuth<'_> {
    ClientAuth {
        client_id: CLIENT_ID,
        credential: secret,
        method: TokenEndpointAuthMethod::ClientSecretBasic,
        resource: &[],
    }
}

fn secret(s: &str) -> ClientCredential {
    ClientCredential::Secret(s.into())
}

/// A provider, a discovered client, and a login by `user` that came back to the
/// redirect URI; `sealed` is the flow cookie's value.
struct LoggedIn {
    idp: Idp,
    client: IdpClient,
    meta: ProviderMetadata,
    ring: KeyRing,
    flow: flow::FlowState,
    sealed: String,
    callback: Callback,
}

async fn log_in_as(user: &str, idp_env: &[(&str, &str)]) -> LoggedIn {
    let idp = Idp::start(idp_env);
    let client = IdpClient::new(Duration::from_secs(5)).unwrap();
    let meta = client.discover(&idp.issuer).await.unwrap();
    assert_eq!(meta.issuer, idp.issuer);
    let ring = KeyRing::new(&[vec![1; 32]]).unwrap();
    let (flow, sealed) = flow::begin(&ring, "apps/sso|app.example.com", "/after", now()).unwrap();
    let callback = log_in(
        &browser(),
        &authorization_url(&meta, &flow),
        REDIRECT_URI,
        user,
    )
    .await;
    assert_eq!(callback.error, None, "{}", callback.url);
    LoggedIn {
        idp,
        client,
        meta,
        ring,
        flow,
        sealed,
        callback,
    }
}

#[tokio::test]
async fn a_full_code_flow_against_oidc_provider() {
    for alg in ["RS256", "ES256"] {
        let LoggedIn {
            idp,
            client,
            meta,
            ring,
            flow: f,
            sealed,
            callback,
        } = log_in_as("alice", &[("IDP_ID_TOKEN_ALG", alg)]).await;
        let cookie = format!("{}={sealed}", flow::cookie_name(&f.state));
        let checked = flow::finish(
            &ring,
            "apps/sso|app.example.com",
            callback.state.as_deref(),
            [cookie.as_str()],
            now(),
        )
        .unwrap();
        assert_eq!(checked.return_to, "/after");

        let code = callback.code.unwrap();
        let tokens = client
            .redeem_code(
                &meta.token_endpoint,
                &auth(&secret("test-secret")),
                &code,
                REDIRECT_URI,
                &f.pkce_verifier,
            )
            .await
            .unwrap();
        let jwks = client.jwks(&meta.jwks_uri).await.unwrap();
        let algs = allowed_algs(meta.id_token_signing_alg_values_supported.as_deref());
        let expected = Expected {
            issuer: &idp.issuer,
            client_id: CLIENT_ID,
            nonce: &f.nonce,
            now: now(),
            algs: &algs,
        };
        let id = validate(tokens.id_token.as_deref().unwrap(), &jwks, &expected)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(id.sub, "alice");

        let userinfo = client
            .userinfo(
                meta.userinfo_endpoint.as_deref().unwrap(),
                &tokens.access_token,
            )
            .await
            .unwrap();
        assert_eq!(
            userinfo["sub"], "alice",
            "userinfo sub equals the ID token's"
        );
        assert_eq!(userinfo["email"], "alice@example.com");

        let wrong_nonce = Expected {
            nonce: "other",
            ..expected
        };
        assert_eq!(
            validate(tokens.id_token.as_deref().unwrap(), &jwks, &wrong_nonce)
                .unwrap_err()
                .to_string(),
            "the ID token's nonce does not match this login"
        );

        let refreshed = client
            .refresh(
                &meta.token_endpoint,
                &auth(&secret("test-secret")),
                tokens.refresh_token.as_deref().unwrap(),
            )
            .await
            .unwrap();
        assert_ne!(refreshed.access_token, tokens.access_token);

        let replay = client
            .redeem_code(
                &meta.token_endpoint,
                &auth(&secret("test-secret")),
                &code,
                REDIRECT_URI,
                &f.pkce_verifier,
            )
            .await
            .unwrap_err();
        assert_eq!(replay.reason(), "AuthInvalidGrantError", "{replay}");
    }
}

#[tokio::test]
async fn the_provider_refuses_a_wrong_verifier_and_a_wrong_secret() {
    let LoggedIn {
        idp: _idp, // bound so the provider runs until the test ends
        client,
        meta,
        flow: f,
        callback,
        ..
    } = log_in_as("bob", &[]).await;
    let code = callback.code.unwrap();

    let wrong_secret = client
        .redeem_code(
            &meta.token_endpoint,
            &auth(&secret("not-the-secret")),
            &code,
            REDIRECT_URI,
            &f.pkce_verifier,
        )
        .await
        .unwrap_err();
    assert_eq!(
        wrong_secret.reason(),
        "AuthTokenEpRequestFailed",
        "{wrong_secret}"
    );
    assert!(
        wrong_secret.to_string().contains("invalid_client"),
        "{wrong_secret}"
    );

    let wrong_verifier = client
        .redeem_code(
            &meta.token_endpoint,
            &auth(&secret("test-secret")),
            &code,
            REDIRECT_URI,
            "a-different-verifier-a-different-verifier-x",
        )
        .await
        .unwrap_err();
    assert_eq!(
        wrong_verifier.reason(),
        "AuthInvalidGrantError",
        "PKCE binds the code to this flow: {wrong_verifier}"
    );
}

#[tokio::test]
async fn discovery_names_a_wrong_issuer() {
    let idp = Idp::start(&[]);
    let client = IdpClient::new(Duration::from_secs(5)).unwrap();
    let err = client
        .discover(&format!("{}/", idp.issuer))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("the document's issuer is \"{}\"", idp.issuer)),
        "{err}"
    );
}
