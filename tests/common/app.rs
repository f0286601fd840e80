//! An app behind `portcullis serve` guarded by an AuthRule against the real provider:
//! the setup the login tests share.

use super::idp::{Idp, log_in};
use super::*;

pub const AUTH_RULE: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: web}]
  oidc:
    issuer: ISSUER
    clientId: portcullis-test
    clientSecretRef: {name: idp}
    scope: openid email profile
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: test-secret}
"#;

pub struct Setup {
    pub _backend: Backend,
    pub idp: Idp,
    pub manifests: TempDir,
    pub proxy: Portcullis,
    pub origin: String,
}

/// Portcullis first (its port goes into the redirect URI the provider allows), then
/// the provider, then the AuthRule naming it.
pub async fn setup() -> Setup {
    setup_with(&[]).await
}

/// `setup` with extra settings for the provider (IDP_* variables).
pub async fn setup_with(idp_env: &[(&str, &str)]) -> Setup {
    setup_rule(idp_env, AUTH_RULE, &[]).await
}

/// `setup_with` and an AuthRule of the caller's (ISSUER and ORIGIN are replaced).
pub async fn setup_rule(idp_env: &[(&str, &str)], rule: &str, args: &[&str]) -> Setup {
    setup_guarded(idp_env, rule, args, 302).await
}

/// `setup_rule` for a rule whose guard answers a browser's first request with
/// `guarded` (302 to a login; 401 where the rule takes bearer tokens only).
pub async fn setup_guarded(
    idp_env: &[(&str, &str)],
    rule: &str,
    args: &[&str],
    guarded: u16,
) -> Setup {
    let backend = Backend::start("app").await;
    let manifests = TempDir::new("login");
    manifests.write(
        "app.yaml",
        &format!(
            "{}{}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &[backend.addr])
        ),
    );
    let proxy = Portcullis::start(manifests.path(), args);
    let origin = format!("http://app.example.com:{}", proxy.http.port());
    let redirect_uris = format!("{origin}/oauth2/idpresponse");
    // ORIGIN and PORT in the caller's values stand for this proxy's.
    let port = proxy.http.port().to_string();
    let mut env = vec![("IDP_REDIRECT_URIS", redirect_uris.clone())];
    env.extend(
        idp_env
            .iter()
            .map(|(k, v)| (*k, v.replace("ORIGIN", &origin).replace("PORT", &port))),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let idp = Idp::start(&env);
    manifests.write(
        "auth.yaml",
        &rule
            .replace("ISSUER", &idp.issuer)
            .replace("ORIGIN", &origin),
    );
    let probe = browser(&proxy);
    eventually("the AuthRule guards the route", || async {
        probe
            .get(format!("{origin}/"))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| r.status() == guarded)
    })
    .await;
    Setup {
        _backend: backend,
        idp,
        manifests,
        proxy,
        origin,
    }
}

pub fn browser(p: &Portcullis) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", p.http)
        .build()
        .unwrap()
}

/// Opens `path` as a browser and logs in at the provider as `user`; returns the
/// callback URL the provider sent the browser to (not yet followed).
pub async fn callback_url(b: &reqwest::Client, origin: &str, path: &str, user: &str) -> String {
    let start = b
        .get(format!("{origin}{path}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_idp = start.headers()["location"].to_str().unwrap().to_owned();
    log_in(b, &to_idp, &format!("{origin}/oauth2/idpresponse"), user)
        .await
        .url
}

/// Opens `/` as a browser, logs in at the provider as `user`, and completes the
/// callback, which must answer 302 with the session.
pub async fn log_in_at(b: &reqwest::Client, origin: &str, user: &str) {
    let callback = callback_url(b, origin, "/", user).await;
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 302);
}

/// What the backend saw of a GET of `url` (it must answer 200).
pub async fn seen_by_backend(b: &reqwest::Client, url: &str) -> serde_json::Value {
    backend_view(b.get(url).send().await.unwrap()).await
}

pub async fn backend_view(resp: reqwest::Response) -> serde_json::Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}
