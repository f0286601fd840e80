//! Portcullis's own ID-token checks (on aws-lc-rs) against a maintained validator,
//! `jsonwebtoken` on the same crypto provider: fed the same hostile tokens, ours never
//! accepts one that `jsonwebtoken` refuses, and both accept the good ones.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis::auth::id_token::{Alg, Expected, Jwks, validate};
use serde_json::{Value, json};

const ISS: &str = "https://idp.example.com";
const CLIENT: &str = "app";
const NONCE: &str = "n-1";

struct Keys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    ec_der: EcdsaKeyPair,
    other_rsa: RsaKeyPair,
}

impl Keys {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap(),
            ec_der: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                .unwrap(),
            other_rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        }
    }

    fn jwks(&self) -> Value {
        let public = self.rsa.public_key();
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256",
             "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
             "e": B64.encode(public.exponent().big_endian_without_leading_zero())},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "use": "sig", "alg": "ES256",
             "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])},
        ]})
    }

    fn sign(&self, how: &str, input: &str) -> Vec<u8> {
        let rng = SystemRandom::new();
        match how {
            "rsa" | "other-rsa" => {
                let key = if how == "rsa" {
                    &self.rsa
                } else {
                    &self.other_rsa
                };
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            "ec" => self
                .ec
                .sign(&rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            "ec-der" => self
                .ec_der
                .sign(&rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            "hmac-with-public-key" => {
                let public = self.rsa.public_key().as_ref().to_vec();
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public);
                aws_lc_rs::hmac::sign(&key, input.as_bytes())
                    .as_ref()
                    .to_vec()
            }
            _ => Vec::new(),
        }
    }

    fn token(&self, header: Value, claims: Value, how: &str) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        format!("{input}.{}", B64.encode(self.sign(how, &input)))
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": CLIENT, "sub": "alice", "exp": now() + 300, "iat": now(), "nonce": NONCE})
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

fn ours(token: &str, jwks: &Jwks) -> bool {
    let expected = Expected {
        issuer: ISS,
        client_id: CLIENT,
        nonce: NONCE,
        now: now(),
        algs: &[Alg::Rs256, Alg::Es256],
    };
    validate(token, jwks, &expected).is_ok()
}

fn theirs(token: &str, jwks: &jsonwebtoken::jwk::JwkSet) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let alg = match header.alg {
        Algorithm::RS256 | Algorithm::ES256 => header.alg,
        _ => return false,
    };
    let Some(jwk) = header
        .kid
        .as_deref()
        .and_then(|kid| jwks.find(kid))
        .or_else(|| jwks.keys.first())
    else {
        return false;
    };
    let Ok(key) = DecodingKey::from_jwk(jwk) else {
        return false;
    };
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[ISS]);
    validation.set_audience(&[CLIENT]);
    validation.leeway = 60;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok()
}

#[test]
fn ours_is_never_more_lenient_than_jsonwebtoken() {
    let keys = Keys::new();
    let jwks_json = keys.jwks();
    let jwks: Jwks = serde_json::from_value(jwks_json.clone()).unwrap();
    let their_jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks_json).unwrap();
    let rs = json!({"alg": "RS256", "kid": "r1", "typ": "JWT"});
    let es = json!({"alg": "ES256", "kid": "e1"});
    let good = [
        keys.token(rs.clone(), claims(), "rsa"),
        keys.token(es.clone(), claims(), "ec"),
        keys.token(rs.clone(), with(claims(), "aud", json!([CLIENT])), "rsa"),
        keys.token(rs.clone(), with(claims(), "nbf", json!(now() - 10)), "rsa"),
    ];
    for t in &good {
        assert!(ours(t, &jwks), "ours refused a good token");
        assert!(theirs(t, &their_jwks), "jsonwebtoken refused a good token");
    }
    let valid = keys.token(rs.clone(), claims(), "rsa");
    let mut flipped_sig = valid.clone().into_bytes();
    let last = flipped_sig.len() - 5;
    flipped_sig[last] = if flipped_sig[last] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let (h, rest) = valid.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let swapped_payload = format!(
        "{h}.{}.{sig}",
        B64.encode(with(claims(), "sub", json!("mallory")).to_string())
    );
    let hostile = vec![
        (
            "alg none",
            keys.token(json!({"alg": "none", "kid": "r1"}), claims(), "none"),
        ),
        (
            "alg none, empty signature",
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"none"}"#),
                B64.encode(claims().to_string())
            ),
        ),
        (
            "HS256 keyed with the RSA public key",
            keys.token(
                json!({"alg": "HS256", "kid": "r1"}),
                claims(),
                "hmac-with-public-key",
            ),
        ),
        ("another key", keys.token(rs.clone(), claims(), "other-rsa")),
        (
            "unknown kid",
            keys.token(json!({"alg": "RS256", "kid": "zz"}), claims(), "rsa"),
        ),
        (
            "RS256 header on the EC key",
            keys.token(json!({"alg": "RS256", "kid": "e1"}), claims(), "rsa"),
        ),
        ("ES256 as DER", keys.token(es.clone(), claims(), "ec-der")),
        ("altered signature", String::from_utf8(flipped_sig).unwrap()),
        ("altered payload", swapped_payload),
        (
            "expired",
            keys.token(
                rs.clone(),
                with(claims(), "exp", json!(now() - 3600)),
                "rsa",
            ),
        ),
        (
            "not yet valid",
            keys.token(
                rs.clone(),
                with(claims(), "nbf", json!(now() + 3600)),
                "rsa",
            ),
        ),
        (
            "other issuer",
            keys.token(
                rs.clone(),
                with(claims(), "iss", json!("https://evil.example.com")),
                "rsa",
            ),
        ),
        (
            "issuer with a trailing slash",
            keys.token(
                rs.clone(),
                with(claims(), "iss", json!(format!("{ISS}/"))),
                "rsa",
            ),
        ),
        (
            "other audience",
            keys.token(rs.clone(), with(claims(), "aud", json!("other")), "rsa"),
        ),
        (
            "no audience",
            keys.token(rs.clone(), without(claims(), "aud"), "rsa"),
        ),
        (
            "no exp",
            keys.token(rs.clone(), without(claims(), "exp"), "rsa"),
        ),
        (
            "exp as a string",
            keys.token(
                rs.clone(),
                with(claims(), "exp", json!("9999999999")),
                "rsa",
            ),
        ),
        (
            "no sub",
            keys.token(rs.clone(), without(claims(), "sub"), "rsa"),
        ),
        (
            "two segments",
            valid.rsplitn(2, '.').nth(1).unwrap().to_owned(),
        ),
        ("four segments", format!("{valid}.x")),
        ("not base64", "a$b.c$d.e$f".to_owned()),
        ("empty", String::new()),
    ];
    for (what, token) in &hostile {
        let (o, t) = (ours(token, &jwks), theirs(token, &their_jwks));
        assert!(!o || t, "{what}: ours accepted what jsonwebtoken refused");
        assert!(!o, "{what}: ours accepted a hostile token");
    }
    // Stricter on purpose: the nonce binds the token to this login, iat may not be in
    // the future, and several audiences need azp naming this client.
    for (what, token) in [
        (
            "wrong nonce",
            keys.token(rs.clone(), with(claims(), "nonce", json!("n-2")), "rsa"),
        ),
        (
            "issued in the future",
            keys.token(
                rs.clone(),
                with(claims(), "iat", json!(now() + 3600)),
                "rsa",
            ),
        ),
        (
            "two audiences, no azp",
            keys.token(
                rs.clone(),
                with(claims(), "aud", json!([CLIENT, "other"])),
                "rsa",
            ),
        ),
    ] {
        assert!(!ours(&token, &jwks), "{what}");
        assert!(
            theirs(&token, &their_jwks),
            "{what}: jsonwebtoken's rules differ here as expected"
        );
    }
}
