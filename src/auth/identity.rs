//! `x-amzn-oidc-data`, byte for byte as ALB makes it, so ALB-aware verifiers accept it:
//! a JWS signed with ES256 whose header fields come in ALB's order, each segment
//! base64url *with* `=` padding, the raw 64-byte r||s signature computed over the
//! padded `header.payload`. The public key is served as PEM (SubjectPublicKeyInfo)
//! under its `kid`, like ALB's regional key endpoint, and as a JWKS.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the signing key is not a PKCS#8 P-256 key: {0}")]
    InvalidKey(String),
    #[error("signing failed")]
    Signing,
    #[error("the system random generator failed")]
    Random,
}

/// One ES256 key with its `kid` (a UUID, as ALB's are).
pub struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    pub fn generate() -> Result<Self, IdentityError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| IdentityError::Random)?;
        Self::from_pkcs8(&new_uuid()?, pkcs8.as_ref())
    }

    pub fn from_pkcs8(kid: &str, der: &[u8]) -> Result<Self, IdentityError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| IdentityError::InvalidKey(e.to_string()))?;
        Ok(Self {
            kid: kid.to_owned(),
            pair,
        })
    }

    /// A key from a PEM (PKCS#8) file; its `kid` is derived from the public key, so
    /// every replica given the same file publishes the same `kid`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, IdentityError> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| IdentityError::InvalidKey(e.to_string()))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(IdentityError::InvalidKey(
                "expected a PKCS#8 key (BEGIN PRIVATE KEY)".into(),
            ));
        };
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.secret_pkcs8_der())
                .map_err(|e| IdentityError::InvalidKey(e.to_string()))?;
        let hash =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pair.public_key().as_ref());
        Ok(Self {
            kid: uuid_from(hash.as_ref()),
            pair,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The uncompressed public point (65 bytes, `04 || X || Y`).
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// What `<key-endpoint>/<kid>` serves: a PEM SubjectPublicKeyInfo.
    pub fn public_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.public_point());
        pem("PUBLIC KEY", &der)
    }

    /// An ES256 signature (raw `r || s`) over `input`.
    pub fn sign(&self, input: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.pair
            .sign(&SystemRandom::new(), input)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| IdentityError::Signing)
    }

    /// The key as a JWK, for the JWKS endpoint.
    pub fn jwk(&self) -> serde_json::Value {
        let point = self.public_point();
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        })
    }
}

/// The `signer` of `x-amzn-oidc-data` unless configured: an ARN in ALB's shape (so
/// verifiers written for ALB, such as aws-jwt-verify's `AlbJwtVerifier`, accept it)
/// that names the AuthRule, so a backend can refuse data minted for another rule.
/// The region field is Portcullis's own, never a real AWS region.
pub const DEFAULT_SIGNER: &str = "arn:aws:elasticloadbalancing:pc-portcullis-1:000000000000:loadbalancer/app/{namespace}.{name}/{id}";

/// The signer of one AuthRule: `template` with `{namespace}`, `{name}` and `{id}` (16
/// hex digits derived from both) filled in.
pub fn signer_for(template: &str, namespace: &str, name: &str) -> String {
    if !template.contains('{') {
        return template.to_owned();
    }
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{namespace}/{name}").as_bytes(),
    );
    let id: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    template
        .replace("{namespace}", namespace)
        .replace("{name}", name)
        .replace("{id}", &id)
}

/// The key that signs, and the keys published beside it during a rollout: the one
/// it replaced (`previous`, which replicas not yet restarted still sign with) and the
/// one that replaces it (`next`, which replicas already restarted sign with). Every
/// replica publishes all three, so a verifier asking any replica for any `kid` a
/// replica of the rollout may have signed with gets the key, not a 404.
pub struct SigningKeys {
    pub current: SigningKey,
    pub previous: Option<SigningKey>,
    pub next: Option<SigningKey>,
}

impl From<SigningKey> for SigningKeys {
    fn from(current: SigningKey) -> Self {
        Self {
            current,
            previous: None,
            next: None,
        }
    }
}

impl SigningKeys {
    /// Every published key once: current, then next, then previous.
    pub fn published(&self) -> Vec<&SigningKey> {
        let mut keys = vec![&self.current];
        for k in [&self.next, &self.previous].into_iter().flatten() {
            if keys.iter().all(|p| p.kid() != k.kid()) {
                keys.push(k);
            }
        }
        keys
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.published().into_iter().find(|k| k.kid() == kid)
    }
}

/// ALB's key endpoint under some base path: `<base>/<kid>` is the PEM public key,
/// `<base>` itself a JWKS of every published key. `rest` is what follows the base;
/// `None` when it names nothing. Status, content type and body.
pub fn key_document(
    keys: &SigningKeys,
    rest: &str,
) -> Option<(http::StatusCode, &'static str, String)> {
    match rest {
        "" | "/" => {
            let jwks: Vec<serde_json::Value> =
                keys.published().into_iter().map(SigningKey::jwk).collect();
            Some((
                http::StatusCode::OK,
                "application/json",
                serde_json::json!({ "keys": jwks }).to_string(),
            ))
        }
        r => {
            let key = keys.find(r.strip_prefix('/')?)?;
            Some((
                http::StatusCode::OK,
                "application/x-pem-file",
                key.public_pem(),
            ))
        }
    }
}

/// Who signed and for whom: the fields of ALB's JWS header.
pub struct DataHeader<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// ALB puts the load balancer's ARN here; verifiers written for ALB may check it.
    pub signer: &'a str,
    pub exp: i64,
}

/// Signs `claims` (the userinfo response) plus `exp` and `iss` as `x-amzn-oidc-data`.
pub fn sign_data(
    key: &SigningKey,
    header: &DataHeader<'_>,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, IdentityError> {
    let header_json = format!(
        r#"{{"typ":"JWT","kid":{},"alg":"ES256","iss":{},"client":{},"signer":{},"exp":{}}}"#,
        json_string(&key.kid),
        json_string(header.issuer),
        json_string(header.client_id),
        json_string(header.signer),
        header.exp
    );
    let mut payload = claims.clone();
    payload.insert("exp".into(), header.exp.into());
    payload.insert("iss".into(), header.issuer.into());
    let payload_json = serde_json::Value::Object(payload).to_string();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE.encode(header_json),
        URL_SAFE.encode(payload_json)
    );
    let signature = key.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", URL_SAFE.encode(signature)))
}

/// `der` as PEM with `label`, in 64-character lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A random (version 4) UUID.
pub fn new_uuid() -> Result<String, IdentityError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| IdentityError::Random)?;
    Ok(uuid_from(&b))
}

/// UUID-shaped text from the first 16 bytes (version 4 and variant bits set).
fn uuid_from(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn claims() -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(r#"{"sub":"user-1","email":"a@example.com","name":"Ä \"quoted\""}"#)
            .unwrap()
    }

    fn header() -> DataHeader<'static> {
        DataHeader {
            issuer: "https://idp.example.com",
            client_id: "app",
            signer: "arn:aws:elasticloadbalancing:portcullis:0:loadbalancer/app/portcullis/0",
            exp: 1_700_000_060,
        }
    }

    #[test]
    fn header_fields_come_in_albs_order_and_segments_are_padded() {
        let key = SigningKey::generate().unwrap();
        let token = sign_data(&key, &header(), &claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        for p in &parts {
            assert_eq!(p.len() % 4, 0, "every segment is padded base64url: {p}");
            assert!(!p.contains('+') && !p.contains('/'));
        }
        let header_json = String::from_utf8(URL_SAFE.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header_json,
            format!(
                r#"{{"typ":"JWT","kid":"{}","alg":"ES256","iss":"https://idp.example.com","client":"app","signer":"arn:aws:elasticloadbalancing:portcullis:0:loadbalancer/app/portcullis/0","exp":1700000060}}"#,
                key.kid()
            )
        );
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["sub"], "user-1");
        assert_eq!(payload["name"], "Ä \"quoted\"");
        assert_eq!(payload["exp"], 1_700_000_060);
        assert_eq!(payload["iss"], "https://idp.example.com");
        assert_eq!(URL_SAFE.decode(parts[2]).unwrap().len(), 64, "raw r||s");
    }

    #[test]
    fn the_signature_verifies_over_the_padded_input_with_the_published_key() {
        let key = SigningKey::generate().unwrap();
        let token = sign_data(&key, &header(), &claims()).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let pem = key.public_pem();
        let der = STANDARD
            .decode(
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        assert_eq!(&der[..26], &P256_SPKI_PREFIX);
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &der[26..]);
        public
            .verify(input.as_bytes(), &URL_SAFE.decode(sig).unwrap())
            .expect("verifies with the PEM key");
        let tampered = input.replacen('e', "f", 1);
        assert!(
            public
                .verify(tampered.as_bytes(), &URL_SAFE.decode(sig).unwrap())
                .is_err()
        );
    }

    #[test]
    fn jwk_and_pem_describe_the_same_point() {
        let key = SigningKey::generate().unwrap();
        let jwk = key.jwk();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        assert_eq!(&key.public_point()[1..33], &x[..]);
        assert_eq!(jwk["kid"], key.kid());
        assert!(key.public_pem().lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn a_key_file_gives_the_same_kid_every_time() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        let (a, b) = (
            SigningKey::from_pem(pem.as_bytes()).unwrap(),
            SigningKey::from_pem(pem.as_bytes()).unwrap(),
        );
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.public_pem(), b.public_pem());
        assert!(SigningKey::from_pem(b"not a key").is_err());
    }

    #[test]
    fn each_rule_signs_as_itself_in_albs_shape() {
        let a = signer_for(DEFAULT_SIGNER, "apps", "sso");
        let b = signer_for(DEFAULT_SIGNER, "other", "sso");
        assert_ne!(a, b);
        assert_eq!(a, signer_for(DEFAULT_SIGNER, "apps", "sso"));
        assert!(a.starts_with(
            "arn:aws:elasticloadbalancing:pc-portcullis-1:000000000000:loadbalancer/app/apps.sso/"
        ));
        assert_eq!(a.rsplit('/').next().unwrap().len(), 16);
        assert_eq!(signer_for("arn:fixed", "apps", "sso"), "arn:fixed");
    }

    #[test]
    fn the_key_document_publishes_previous_current_and_next() {
        let keys = SigningKeys {
            current: SigningKey::generate().unwrap(),
            previous: Some(SigningKey::generate().unwrap()),
            next: Some(SigningKey::generate().unwrap()),
        };
        let (status, kind, body) = key_document(&keys, "").unwrap();
        assert_eq!((status, kind), (http::StatusCode::OK, "application/json"));
        let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        let next = keys.next.as_ref().unwrap();
        let previous = keys.previous.as_ref().unwrap();
        assert_eq!(kids, [keys.current.kid(), next.kid(), previous.kid()]);
        for k in [&keys.current, next, previous] {
            let (_, kind, pem) = key_document(&keys, &format!("/{}", k.kid())).unwrap();
            assert_eq!(kind, "application/x-pem-file");
            assert_eq!(pem, k.public_pem());
        }
        assert!(key_document(&keys, "/unknown").is_none());
        // Alone, only the current key; the same key twice is published once.
        let only: SigningKeys = SigningKey::generate().unwrap().into();
        let (_, _, body) = key_document(&only, "/").unwrap();
        assert_eq!(body.matches("\"kid\"").count(), 1);
    }

    #[test]
    fn kids_are_v4_uuids() {
        let id = new_uuid().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, new_uuid().unwrap());
    }
}
