use super::*;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::Jwk};

fn verified(key: &ClientKey, jwt: &str, alg: Algorithm) -> Value {
    let jwk: Jwk = serde_json::from_value(key.jwks()["keys"][0].clone()).unwrap();
    let mut validation = Validation::new(alg);
    validation.set_audience(&["https://idp.example.com/token"]);
    validation.set_issuer(&["app"]);
    decode::<Value>(jwt, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
        .expect("the assertion verifies with the published JWK")
        .claims
}

fn pem_of(alg: &'static rcgen::SignatureAlgorithm) -> (rcgen::KeyPair, String) {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let pem = pair.serialize_pem();
    (pair, pem)
}

#[test]
fn ec_and_rsa_keys_sign_assertions_their_jwks_verify() {
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap()
        .serialize_pem();
    let (_, ec) = pem_of(&rcgen::PKCS_ECDSA_P256_SHA256);
    let now = jiff::Timestamp::now().as_second();
    for (pem, alg) in [(rsa, Algorithm::RS256), (ec, Algorithm::ES256)] {
        let key = ClientKey::from_pem(pem.as_bytes(), None).unwrap();
        let jwt = key
            .assertion("app", "https://idp.example.com/token", now, "jti-1")
            .unwrap();
        let header = decode_header(&jwt).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.alg, alg);
        assert!(header.x5t.is_none());
        let claims = verified(&key, &jwt, alg);
        assert_eq!(
            (&claims["iss"], &claims["sub"]),
            (&json!("app"), &json!("app"))
        );
        assert_eq!(claims["jti"], "jti-1");
        assert_eq!(claims["exp"], now + ASSERTION_LIFETIME_SECS);
        assert_eq!(claims["nbf"], now);
        assert_eq!(key.kid().len(), 43, "a base64url SHA-256 thumbprint");
        assert_eq!(
            ClientKey::from_pem(pem.as_bytes(), None).unwrap().kid(),
            key.kid(),
            "every replica names the same key"
        );
    }
}

#[test]
fn a_certificate_with_the_key_is_named_by_its_thumbprints() {
    let (pair, pem) = pem_of(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert = rcgen::CertificateParams::new(vec!["portcullis".into()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    let key = ClientKey::from_pem(pem.as_bytes(), Some(cert.pem().as_bytes())).unwrap();
    let jwt = key.assertion("app", "aud", 0, "j").unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let der = cert.der();
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    assert_eq!(header["x5t"], URL_SAFE_NO_PAD.encode(sha1.as_ref()));
    assert_eq!(header["x5t#S256"], URL_SAFE_NO_PAD.encode(sha256(der)));
    assert!(matches!(
        ClientKey::from_pem(pem.as_bytes(), Some(b"not a certificate")),
        Err(AssertionError::Certificate(_))
    ));
}

#[test]
fn keys_it_cannot_sign_with_are_refused_with_the_reason() {
    assert!(matches!(
        ClientKey::from_pem(b"client-secret", None),
        Err(AssertionError::NotPem(_))
    ));
    let (_, p384) = pem_of(&rcgen::PKCS_ECDSA_P384_SHA384);
    assert!(matches!(
        ClientKey::from_pem(p384.as_bytes(), None),
        Err(AssertionError::Unsupported(_))
    ));
    let (_, ed) = pem_of(&rcgen::PKCS_ED25519);
    assert!(ClientKey::from_pem(ed.as_bytes(), None).is_err());
}

fn token(aud: Value) -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2ln",
        part(json!({"alg": "ES256"})),
        part(json!({"aud": aud, "sub": "system:serviceaccount:portcullis-system:portcullis"}))
    )
}

#[tokio::test]
async fn service_account_tokens_are_read_from_the_namespaces_mount_each_time() {
    let dir = std::env::temp_dir().join(format!("portcullis-sa-{}", std::process::id()));
    let audience = "api://AzureADTokenExchange";
    let sa = ServiceAccountToken::new("apps", audience);
    assert_eq!(sa.file, Path::new("apps/api%3A%2F%2FAzureADTokenExchange"));
    assert!(matches!(
        sa.read(&dir).await,
        Err(AssertionError::TokenUnreadable { .. })
    ));
    let path = dir.join(&sa.file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("{}\n", token(json!(audience)))).unwrap();
    assert_eq!(sa.read(&dir).await.unwrap(), token(json!(audience)));
    let rotated = token(json!(["other", audience]));
    std::fs::write(&path, &rotated).unwrap();
    assert_eq!(
        sa.read(&dir).await.unwrap(),
        rotated,
        "read again, not cached"
    );
    for wrong in [
        token(json!("https://kubernetes.default.svc")),
        "not-a-jwt".into(),
    ] {
        std::fs::write(&path, wrong).unwrap();
        assert!(matches!(
            sa.read(&dir).await,
            Err(AssertionError::TokenAudience { .. })
        ));
    }
    std::fs::write(&path, "x".repeat(MAX_TOKEN_BYTES as usize + 1)).unwrap();
    assert!(matches!(
        sa.read(&dir).await,
        Err(AssertionError::TokenUnreadable { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
