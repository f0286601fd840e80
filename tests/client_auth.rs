//! Clients without a stored secret, against the real provider: `private_key_jwt` with a
//! key from a Secret, Portcullis's ServiceAccount token (issued by a real API server's
//! TokenRequest API) as a federated credential, and resource indicators in the
//! authorization and token requests.

use crate::common;

use common::app::*;
use common::cluster::{ControlPlane, apply, try_apply};
use common::*;
use serde_json::{Value, json};

/// What the provider received (IDP_RECORD_REQUESTS): each authorization and token
/// request's parameters, and the federated assertions it accepted.
async fn provider_requests(issuer: &str) -> Value {
    reqwest::get(format!("{issuer}/test/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn token_requests(seen: &Value) -> Vec<Value> {
    seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/token")
        .cloned()
        .collect()
}

/// The public JWKS `portcullis client-jwks` prints for the PEM key in `pem`.
fn client_jwks(dir: &TempDir, pem: &str) -> Value {
    dir.write("client.key", pem);
    let path = dir.path().join("client.key");
    let (ok, out) = run_with_stdin(&["client-jwks", "-f", path.to_str().unwrap()], "");
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

const KEY_RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    tokenEndpointAuthMethod: private_key_jwt
    clientKeyRef: {name: idp-key}
    scope: openid email profile
"#;

#[tokio::test]
async fn a_login_with_private_key_jwt_needs_no_secret_anywhere() {
    let keys = TempDir::new("client-key");
    let pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let pem = pair.serialize_pem();
    let jwks = client_jwks(&keys, &pem);
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp-key, namespace: apps}}\nstringData:\n  tls.key: {}\n",
        serde_json::to_string(&pem).unwrap()
    );
    let jwks_env = jwks.to_string();
    let s = setup_rule(
        &[
            ("IDP_CLIENT_JWKS", jwks_env.as_str()),
            ("IDP_RECORD_REQUESTS", "1"),
        ],
        &format!("{KEY_RULE}{secret}"),
        &[],
    )
    .await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let seen = seen_by_backend(&b, &format!("{}/orders", s.origin)).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice");

    let tokens = token_requests(&provider_requests(&s.idp.issuer).await);
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["grant_type"], "authorization_code");
    assert_eq!(
        tokens[0]["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(tokens[0]["client_secret"], false);
}

#[tokio::test]
async fn a_key_the_provider_does_not_know_fails_the_login_closed() {
    let keys = TempDir::new("client-key");
    let registered = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwks = client_jwks(&keys, &registered.serialize_pem()).to_string();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp-key, namespace: apps}}\nstringData:\n  tls.key: {}\n",
        serde_json::to_string(&other.serialize_pem()).unwrap()
    );
    let s = setup_rule(
        &[("IDP_CLIENT_JWKS", jwks.as_str())],
        &format!("{KEY_RULE}{secret}"),
        &[],
    )
    .await;
    let b = browser(&s.proxy);
    let callback = callback_url(&b, &s.origin, "/", "alice").await;
    let done = b.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), 500);
    let line = s
        .proxy
        .log_line(|l| l.contains("/oauth2/idpresponse"))
        .await;
    assert_eq!(
        alb_record(&line)["error_reason"],
        "AuthTokenEpRequestFailed"
    );
}

const AUDIENCE: &str = "api://portcullis-test";
const SA_SUBJECT: &str = "system:serviceaccount:portcullis-system:portcullis";

/// A token for Portcullis's ServiceAccount with `audience`, from the TokenRequest API.
async fn service_account_token(admin: &kube::Client, audience: &str) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(admin.clone(), "portcullis-system");
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": 600},
    }))
    .unwrap();
    let issued: TokenRequest = api
        .create_subresource(
            "token",
            "portcullis",
            &kube::api::PostParams::default(),
            &request,
        )
        .await
        .unwrap();
    issued.status.unwrap().token
}

fn jwt_claims(token: &str) -> Value {
    jwt_part(token, 1)
}

/// The JWT's header (0) or payload (1).
fn jwt_part(token: &str, n: usize) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(n).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

const FEDERATED_RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    tokenEndpointAuthMethod: private_key_jwt
    serviceAccountTokenAudience: api://portcullis-test
"#;

#[tokio::test]
async fn a_service_account_token_is_a_federated_credential_read_afresh_when_it_rotates() {
    let cp = ControlPlane::start();
    let admin = cp.admin().await;
    apply(
        &admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: portcullis-system}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: portcullis, namespace: portcullis-system}\n",
    )
    .await;
    // The provider trusts the API server's ServiceAccount issuer: its public key.
    let sa_key = std::fs::read_to_string(cp.dir.path().join("sa.key")).unwrap();
    let mut issuer_jwks = client_jwks(&TempDir::new("sa-key"), &sa_key);
    let first = service_account_token(&admin, AUDIENCE).await;
    // The API server names its key by a kid of its own (as its JWKS would publish it).
    issuer_jwks["keys"][0]["kid"] = jwt_part(&first, 0)["kid"].clone();
    assert_eq!(jwt_claims(&first)["iss"], "https://kubernetes.default.svc");

    let tokens = TempDir::new("sa-tokens");
    let mount = tokens.path().join("apps");
    std::fs::create_dir_all(&mount).unwrap();
    let file = mount.join("api%3A%2F%2Fportcullis-test");
    let write = |token: &str| {
        // The kubelet swaps the whole file (a symlink flip), never edits it in place.
        let tmp = mount.join(".token.tmp");
        std::fs::write(&tmp, token).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(&first);
    let federated = json!({
        "issuer": "https://kubernetes.default.svc", "subject": SA_SUBJECT,
        "audience": AUDIENCE, "jwks": issuer_jwks,
    })
    .to_string();
    let dir_arg = tokens.path().to_str().unwrap().to_owned();
    let s = setup_rule(
        &[("IDP_FEDERATED", federated.as_str())],
        FEDERATED_RULE,
        &["--service-account-token-dir", &dir_arg],
    )
    .await;
    let accepted = |n: usize| {
        let issuer = s.idp.issuer.clone();
        async move {
            provider_requests(&issuer).await["federated"]
                .as_array()
                .unwrap()[n]["jti"]
                .clone()
        }
    };
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice");
    assert_eq!(accepted(0).await, jwt_claims(&first)["jti"]);

    let second = service_account_token(&admin, AUDIENCE).await;
    assert_ne!(jwt_claims(&second)["jti"], jwt_claims(&first)["jti"]);
    write(&second);
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "bob").await;
    assert_eq!(
        accepted(1).await,
        jwt_claims(&second)["jti"],
        "the rotated token is sent, not the one read first"
    );

    // A token for another audience (here the API server's own) is never sent.
    write(&service_account_token(&admin, "https://kubernetes.default.svc").await);
    let before = token_requests(&provider_requests(&s.idp.issuer).await).len();
    let b = browser(&s.proxy);
    let callback = callback_url(&b, &s.origin, "/", "carol").await;
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 500);
    let line = s
        .proxy
        .log_line(|l| l.contains("/oauth2/idpresponse") && l.contains("AuthTokenEp"))
        .await;
    assert_eq!(
        alb_record(&line)["error_reason"],
        "AuthTokenEpRequestFailed"
    );
    assert_eq!(
        token_requests(&provider_requests(&s.idp.issuer).await).len(),
        before
    );

    crd_validation_names_the_missing_credential(&admin).await;
}

/// The API server refuses AuthRules without a way to authenticate the client, or
/// with two, before the controller sees them.
async fn crd_validation_names_the_missing_credential(admin: &kube::Client) {
    let (ok, crd) = run_with_stdin(&["crd"], "");
    assert!(ok);
    apply(admin, &crd).await;
    apply(
        admin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    )
    .await;
    let rule = |oidc: &str| {
        format!(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: sso, namespace: apps}}\nspec:\n  targetRefs: [{{name: web}}]\n  oidc: {{issuer: 'https://idp.example.com', clientId: app, {oidc}}}\n"
        )
    };
    // Retried while the new CRD is not yet served.
    apply(
        admin,
        &rule("tokenEndpointAuthMethod: private_key_jwt, clientKeyRef: {name: k}"),
    )
    .await;
    let no_secret = try_apply(admin, &rule("scope: openid")).await.unwrap_err();
    assert!(
        no_secret.contains("client_secret_basic and client_secret_post need clientSecretRef"),
        "{no_secret}"
    );
    let both = try_apply(
        admin,
        &rule("tokenEndpointAuthMethod: private_key_jwt, clientKeyRef: {name: k}, serviceAccountTokenAudience: x"),
    )
    .await
    .unwrap_err();
    assert!(both.contains("exactly one of clientKeyRef"), "{both}");
    let secret_too = try_apply(
        admin,
        &rule("tokenEndpointAuthMethod: private_key_jwt, clientKeyRef: {name: k}, clientSecretRef: {name: s}"),
    )
    .await
    .unwrap_err();
    assert!(secret_too.contains("clientSecretRef"), "{secret_too}");
}

const RESOURCE: &str = "https://orders.example.com/";

#[tokio::test]
async fn resource_indicators_reach_the_provider_in_the_authorization_and_token_requests() {
    let rule = AUTH_RULE.replace(
        "    scope: openid email profile\n",
        &format!("    scope: openid email profile\n    resource: ['{RESOURCE}']\n"),
    );
    let s = setup_rule(
        &[
            ("IDP_RECORD_REQUESTS", "1"),
            ("IDP_LOGIN_RESOURCE", RESOURCE),
        ],
        &rule,
        &[],
    )
    .await;
    let b = browser(&s.proxy);
    let start = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let location = start.headers()["location"].to_str().unwrap();
    assert!(
        location.contains("&resource=https%3A%2F%2Forders.example.com%2F&nonce="),
        "{location}"
    );
    let callback = callback_url(&b, &s.origin, "/", "alice").await;
    let done = b.get(&callback).send().await.unwrap();
    let seen = provider_requests(&s.idp.issuer).await;
    let auth: Vec<&Value> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/auth")
        .collect();
    assert_eq!(auth[0]["resource"], RESOURCE, "{seen}");
    let tokens = token_requests(&seen);
    assert_eq!(tokens[0]["grant_type"], "authorization_code");
    assert_eq!(tokens[0]["resource"], RESOURCE);
    assert_eq!(
        tokens[0]["accessTokenAudience"], RESOURCE,
        "the provider issued the access token for the resource"
    );
    // Portcullis reads userinfo with the access token, as ALB; oidc-provider does not
    // take a token bound to another resource there, and the login fails closed with
    // its reason (the caveat spec.oidc.resource documents).
    assert_eq!(done.status(), 500);
    let line = s
        .proxy
        .log_line(|l| l.contains("/oauth2/idpresponse"))
        .await;
    assert_eq!(
        alb_record(&line)["error_reason"],
        "AuthUserinfoEpRequestFailed"
    );
}

/// `portcullis diagnose` of the key rule (with the Secret holding `pem`) against the
/// provider at `issuer`.
fn diagnose_key_rule(issuer: &str, pem: &str) -> (bool, String) {
    let dir = TempDir::new("diagnose-key");
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp-key, namespace: apps}}\nstringData:\n  tls.key: {}\n",
        serde_json::to_string(pem).unwrap()
    );
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{}{secret}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &["127.0.0.1:9".parse().unwrap()]),
            KEY_RULE.replace("ISSUER", issuer)
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

#[test]
fn diagnose_checks_the_method_is_advertised_and_the_key_registered() {
    let keys = TempDir::new("client-key");
    let registered = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwks = client_jwks(&keys, &registered.serialize_pem()).to_string();
    let idp = common::idp::Idp::start(&[
        ("IDP_CLIENT_JWKS", jwks.as_str()),
        (
            "IDP_REDIRECT_URIS",
            "http://app.example.com/oauth2/idpresponse",
        ),
    ]);
    let (ok, out) = diagnose_key_rule(&idp.issuer, &registered.serialize_pem());
    assert!(ok, "{out}");
    assert!(
        out.contains("PASS  auth method   the provider supports private_key_jwt"),
        "{out}"
    );
    assert!(out.contains("PASS  credentials"), "{out}");

    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (ok, out) = diagnose_key_rule(&idp.issuer, &other.serialize_pem());
    assert!(!ok);
    let refused = out
        .lines()
        .find(|l| l.starts_with("FAIL  credentials"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(refused.contains("invalid_client"), "{out}");
    assert!(out.contains("portcullis client-jwks"), "{out}");
}
