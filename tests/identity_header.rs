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
