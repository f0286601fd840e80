//! `x-amzn-oidc-data` checked by an implementation other than ours: Node's crypto
//! verifies the signature with the PEM key, as ALB's documented verifiers do.

use crate::common;

use portcullis::auth::identity::{DataHeader, SigningKey, sign_data};

#[test]
fn node_crypto_verifies_the_signed_identity_header() {
    let key = SigningKey::generate().unwrap();
    let claims = serde_json::json!({"sub": "alice", "email": "alice@example.com"});
    let header = DataHeader {
        issuer: "https://idp.example.com",
        client_id: "app",
        signer: "arn:portcullis:apps/sso",
        exp: 1_900_000_000,
    };
    let token = sign_data(&key, &header, claims.as_object().unwrap()).unwrap();
    let seen = common::verify_alb_data(&token, &key.public_pem()).unwrap();
    assert_eq!(seen["header"]["kid"], key.kid());
    assert_eq!(seen["header"]["alg"], "ES256");
    assert_eq!(seen["header"]["signer"], "arn:portcullis:apps/sso");
    assert_eq!(seen["payload"]["sub"], "alice");
    assert_eq!(seen["payload"]["iss"], "https://idp.example.com");

    let other = SigningKey::generate().unwrap();
    assert!(
        common::verify_alb_data(&token, &other.public_pem()).is_err(),
        "another key does not verify it"
    );
    let (input, _) = token.rsplit_once('.').unwrap();
    let forged = format!(
        "{input}.{}",
        sign_data(&other, &header, claims.as_object().unwrap())
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .1
    );
    assert!(common::verify_alb_data(&forged, &key.public_pem()).is_err());
}

fn pkcs8_pem() -> String {
    use base64::Engine as _;
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    )
}

/// During a signing-key rollout every replica publishes the previous, the current and
/// the next key, at `/keys` on the admin listener and at `--public-keys-path` on every
/// host, so a verifier asking any replica for any `kid` of the rollout finds it.
#[tokio::test]
async fn the_keys_document_lists_the_previous_and_next_signing_keys() {
    let keys = common::TempDir::new("rollout-keys");
    let (previous, current, next) = (pkcs8_pem(), pkcs8_pem(), pkcs8_pem());
    keys.write("previous.pem", &previous);
    keys.write("current.pem", &current);
    keys.write("next.pem", &next);
    let kid = |pem: &str| {
        SigningKey::from_pem(pem.as_bytes())
            .unwrap()
            .kid()
            .to_owned()
    };
    let path = |name: &str| keys.path().join(name).display().to_string();
    let route = common::TempDir::new("rollout-route");
    let backend = common::Backend::start("a").await;
    route.write(
        "all.yaml",
        &format!(
            "{}{}",
            common::ingress_yaml("web", &[("app.example.com", "/", "svc-a")], ""),
            common::service_yaml("svc-a", &[backend.addr])
        ),
    );
    let (p, c, n) = (path("previous.pem"), path("current.pem"), path("next.pem"));
    let proxy = common::Portcullis::start(
        route.path(),
        &[
            "--signing-key-file",
            &c,
            "--previous-signing-key-file",
            &p,
            "--next-signing-key-file",
            &n,
            "--public-keys-path",
            "/.well-known/portcullis-keys",
        ],
    );
    let jwks: serde_json::Value = reqwest::get(format!("http://{}/keys", proxy.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [kid(&current), kid(&next), kid(&previous)]);
    for pem in [&previous, &current, &next] {
        let k = kid(pem);
        let expected = SigningKey::from_pem(pem.as_bytes()).unwrap().public_pem();
        let admin = reqwest::get(format!("http://{}/keys/{k}", proxy.admin))
            .await
            .unwrap();
        assert_eq!(admin.status(), 200, "{k}");
        assert_eq!(admin.text().await.unwrap(), expected);
        let public = common::raw_exchange(
            proxy.http,
            format!(
                "GET /.well-known/portcullis-keys/{k} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(public.status, 200, "{}", public.head);
        assert_eq!(public.body, expected);
    }
    let public = common::raw_exchange(
        proxy.http,
        b"GET /.well-known/portcullis-keys HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&public.body).unwrap();
    assert_eq!(listed, jwks, "the same document on every host");
}
