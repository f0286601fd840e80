//! Keycloak as the provider, set up exactly as docs/providers/keycloak.md says: the
//! page's client registered through Keycloak's Admin REST API, the page's AuthRule
//! applied, users logging in through Keycloak's own login form, sessions ended from
//! Keycloak and from the app. Each test registers its own client (the back-channel
//! logout URL names its own Portcullis); only host names, ports, the client id and the
//! secret differ from the page.

use crate::common;
use crate::docs::snippet;

use base64::Engine as _;
use common::app::{backend_view, browser, seen_by_backend};
use common::keycloak::{Keycloak, keycloak, log_in, login_form_action};
use common::*;
use portcullis::source::manifests::parse_documents;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const GUIDE: &str = "docs/providers/keycloak.md";
/// Where the guide's examples put the app.
const GUIDE_APP: &str = "https://app.example.com";

struct Setup {
    _backend: Backend,
    manifests: TempDir,
    proxy: Portcullis,
    origin: String,
    client_id: String,
    kc: &'static Keycloak,
}

/// The guide's client for this test: its own id, and `origin` where the guide has the
/// app's, except for the back-channel logout URL, which is `backchannel`.
fn guide_client(client_id: &str, origin: &str, backchannel: &str) -> Value {
    let mut client: Value = serde_json::from_str(&snippet(GUIDE, "portcullis-client.json"))
        .expect("the guide's client is JSON");
    let attrs = &mut client["attributes"];
    assert_eq!(
        attrs["backchannel.logout.url"],
        format!("{GUIDE_APP}/oauth2/backchannel-logout")
    );
    attrs["backchannel.logout.url"] = backchannel.into();
    assert_eq!(attrs["post.logout.redirect.uris"], format!("{GUIDE_APP}/"));
    attrs["post.logout.redirect.uris"] = format!("{origin}/").into();
    assert_eq!(
        client["redirectUris"],
        json!([format!("{GUIDE_APP}/oauth2/idpresponse")])
    );
    client["redirectUris"] = json!([format!("{origin}/oauth2/idpresponse")]);
    client["clientId"] = client_id.into();
    client
}

/// The guide's AuthRule and Secret for this test.
fn guide_auth_rule(issuer: &str, client_id: &str, secret: &str, origin: &str) -> Vec<Value> {
    let mut docs = parse_documents(&snippet(GUIDE, "keycloak-authrule.yaml")).unwrap();
    let [rule, secret_doc] = &mut docs[..] else {
        panic!("the guide's AuthRule block is an AuthRule and a Secret");
    };
    let oidc = &mut rule["spec"]["oidc"];
    assert_eq!(
        oidc["issuer"],
        "https://keycloak.example.com/realms/portcullis"
    );
    oidc["issuer"] = issuer.into();
    oidc["clientId"] = client_id.into();
    let logout = &mut rule["spec"]["logout"]["postLogoutRedirectUris"];
    assert_eq!(*logout, json!([format!("{GUIDE_APP}/")]));
    *logout = json!([format!("{origin}/")]);
    secret_doc["stringData"]["client-secret"] = secret.into();
    docs
}

/// The guide's groups block added to the AuthRule's `spec`.
fn with_guide_groups(docs: &mut [Value]) {
    let fragment = parse_documents(&snippet(GUIDE, "keycloak-groups.yaml")).unwrap();
    docs[0]["spec"]["authorization"] = fragment[0]["authorization"].clone();
}

/// Documents as a manifest file: JSON, which is YAML.
fn manifest(docs: &[Value]) -> String {
    let docs: Vec<String> = docs.iter().map(Value::to_string).collect();
    docs.join("\n---\n")
}

/// A proxy guarding `app.example.com` with the guide's AuthRule against the shared
/// Keycloak, and a client of its own there; `edit_client` and `edit_rule` may change
/// them first.
async fn setup(
    tag: &str,
    edit_client: impl FnOnce(&mut Value),
    edit_rule: impl FnOnce(&mut [Value]),
) -> Setup {
    let kc = keycloak().await;
    let backend = Backend::start("app").await;
    let manifests = TempDir::new("keycloak");
    manifests.write(
        "app.yaml",
        &format!(
            "{}{}",
            ingress_yaml("web", &[("app.example.com", "/", "svc")], ""),
            service_yaml("svc", &[backend.addr])
        ),
    );
    let proxy = Portcullis::start(manifests.path(), &[]);
    let port = proxy.http.port();
    let origin = format!("http://app.example.com:{port}");
    let client_id = format!("portcullis-{tag}");
    // Keycloak posts back-channel logouts to 127.0.0.1: it cannot resolve the test's
    // host name, and Portcullis takes them on any host.
    let backchannel = format!("http://127.0.0.1:{port}/oauth2/backchannel-logout");
    let mut client = guide_client(&client_id, &origin, &backchannel);
    edit_client(&mut client);
    let secret = kc.register_client(&client).await;
    let mut rule = guide_auth_rule(&kc.issuer, &client_id, &secret, &origin);
    edit_rule(&mut rule);
    manifests.write("auth.yaml", &manifest(&rule));
    let probe = browser(&proxy);
    eventually("the AuthRule guards the route", || async {
        probe
            .get(format!("{origin}/"))
            .header("accept", "text/html")
            .send()
            .await
            .is_ok_and(|r| r.status() == 302)
    })
    .await;
    Setup {
        _backend: backend,
        manifests,
        proxy,
        origin,
        client_id,
        kc,
    }
}

/// What a login left: Portcullis's session cookies (`name=value`) and the id of the
/// Keycloak session behind them (the callback's `session_state`, the ID token's `sid`).
struct Login {
    cookies: Vec<String>,
    keycloak_session: String,
}

impl Setup {
    /// Opens `/` as a browser, logs in at Keycloak's form as `user` and completes the
    /// callback.
    async fn log_in(&self, b: &reqwest::Client, user: &str) -> Login {
        let start = b
            .get(format!("{}/", self.origin))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 302);
        let to_keycloak = start.headers()["location"].to_str().unwrap().to_owned();
        let redirect_uri = format!("{}/oauth2/idpresponse", self.origin);
        let callback = log_in(b, &to_keycloak, &redirect_uri, user).await;
        assert_eq!(callback.error, None, "{}", callback.url);
        let url = reqwest::Url::parse(&callback.url).unwrap();
        let (_, keycloak_session) = url
            .query_pairs()
            .find(|(k, _)| k == "session_state")
            .unwrap_or_else(|| panic!("no session_state in {url}"));
        let keycloak_session = keycloak_session.into_owned();
        let done = b.get(&callback.url).send().await.unwrap();
        let set_cookies: Vec<String> = done
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(done.status(), 302, "{:?}", done.text().await);
        let cookies = set_cookies
            .iter()
            .filter(|c| c.starts_with("AWSELBAuthSessionCookie-"))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .collect();
        Login {
            cookies,
            keycloak_session,
        }
    }

    /// Whether a request for `/` with `cookies` is sent to Keycloak to log in.
    async fn sent_to_log_in(&self, cookies: &[String]) -> bool {
        let r = client()
            .get(self.proxy.url("/"))
            .header("host", "app.example.com")
            .header("accept", "text/html")
            .header("cookie", cookies.join("; "))
            .send()
            .await
            .unwrap();
        r.status() == 302
            && r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with(&self.kc.issuer)
    }

    /// How many back-channel logouts Keycloak has posted to this proxy.
    fn backchannel_logouts(&self) -> usize {
        let log = self.proxy.access_log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains("/oauth2/backchannel-logout"))
            .count()
    }
}

/// One part of a JWT (0 the header, 1 the payload), decoded.
fn jwt_part(token: &str, n: usize) -> Value {
    let part = token.split('.').nth(n).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_user_logs_in_at_keycloaks_form_and_the_backend_gets_the_alb_headers() {
    let s = setup("headers", |_| {}, |_| {}).await;
    let b = browser(&s.proxy);
    let start = b
        .get(format!("{}/dashboard", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_keycloak = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to_keycloak.starts_with(&format!("{}/protocol/openid-connect/auth?", s.kc.issuer)),
        "{to_keycloak}"
    );
    let redirect_uri = format!("{}/oauth2/idpresponse", s.origin);
    let callback = log_in(&b, &to_keycloak, &redirect_uri, "alice").await;
    assert!(callback.code.is_some(), "{}", callback.url);
    let done = b.get(&callback.url).send().await.unwrap();
    assert_eq!(done.status(), 302, "{:?}", done.text().await);
    assert_eq!(done.headers()["location"], "/dashboard");

    let seen = seen_by_backend(&b, &format!("{}/dashboard", s.origin)).await;
    let h = &seen["headers"];
    let alice = s.kc.user_id("alice").await;
    assert_eq!(
        h["x-amzn-oidc-identity"],
        alice.as_str(),
        "Keycloak's user id"
    );
    let data = h["x-amzn-oidc-data"].as_str().unwrap();
    let claims = jwt_part(data, 1);
    assert_eq!(claims["sub"], alice.as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["given_name"], "Alice");
    assert_eq!(claims["family_name"], "Liddell");
    let kid = jwt_part(data, 0)["kid"].as_str().unwrap().to_owned();
    let pem = reqwest::get(format!("http://{}/keys/{kid}", s.proxy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    verify_alb_data(data, &pem).expect("the data header verifies with its key");
    // The access token is Keycloak's, for this client; the guide's mapper keeps the
    // groups out of it (they are in the ID token only).
    let access = jwt_part(h["x-amzn-oidc-accesstoken"].as_str().unwrap(), 1);
    assert_eq!(access["iss"], s.kc.issuer.as_str());
    assert_eq!(access["azp"], s.client_id.as_str());
    assert_eq!(access["sub"], alice.as_str());
    assert!(access.get("groups").is_none(), "{access}");
}

#[tokio::test]
async fn a_session_ended_in_keycloak_ends_at_the_edge_and_no_other_does() {
    let s = setup("backchannel", |_| {}, |_| {}).await;
    let alice = browser(&s.proxy);
    let first = s.log_in(&alice, "alice").await;
    let bob = browser(&s.proxy);
    s.log_in(&bob, "bob").await;
    // Alice again, in another browser: a second Keycloak session.
    let laptop = s.log_in(&browser(&s.proxy), "alice").await;
    assert_ne!(first.keycloak_session, laptop.keycloak_session);
    assert!(!s.sent_to_log_in(&first.cookies).await);

    // An administrator signs the first out (Sign out on the admin console's Sessions tab).
    s.kc.end_session(&first.keycloak_session).await;
    // Keycloak has posted the logout token before it answered.
    let line = s
        .proxy
        .log_line(|l| l.contains("/oauth2/backchannel-logout"))
        .await;
    assert_eq!(alb_record(&line)["elb_status_code"], "200", "{line}");
    assert!(s.sent_to_log_in(&first.cookies).await, "that session ended");
    assert!(
        !s.sent_to_log_in(&laptop.cookies).await,
        "alice's other session lives on"
    );
    let r = alice
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let seen = seen_by_backend(&bob, &format!("{}/", s.origin)).await;
    assert_eq!(
        seen["headers"]["x-amzn-oidc-identity"],
        s.kc.user_id("bob").await.as_str(),
        "bob's session lives on"
    );
}

#[tokio::test]
async fn logging_out_at_the_edge_ends_the_keycloak_session_and_returns_to_the_app() {
    let s = setup("rp-logout", |_| {}, |_| {}).await;
    let b = browser(&s.proxy);
    let old_cookies = s.log_in(&b, "alice").await.cookies;

    let out = b
        .get(format!("{}/oauth2/logout", s.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 302);
    let to_keycloak = reqwest::Url::parse(out.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        to_keycloak.as_str().split('?').next().unwrap(),
        format!("{}/protocol/openid-connect/logout", s.kc.issuer)
    );
    let param = |k: &str| {
        to_keycloak
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("client_id").as_deref(), Some(s.client_id.as_str()));
    assert_eq!(
        param("post_logout_redirect_uri"),
        Some(format!("{}/", s.origin))
    );
    assert!(param("id_token_hint").is_some());

    // With the ID token as a hint, Keycloak ends its session without asking.
    let back = b.get(to_keycloak).send().await.unwrap();
    assert_eq!(back.status(), 302, "{:?}", back.text().await);
    assert_eq!(
        back.headers()["location"],
        format!("{}/", s.origin).as_str()
    );
    // Its back-channel logout reached Portcullis too: a copy of the old cookie no
    // longer passes.
    let line = s
        .proxy
        .log_line(|l| l.contains("/oauth2/backchannel-logout"))
        .await;
    assert_eq!(alb_record(&line)["elb_status_code"], "200", "{line}");
    eventually("the old cookie is sent to log in", || {
        s.sent_to_log_in(&old_cookies)
    })
    .await;
    // The next visit meets Keycloak's login form: no Keycloak session is left.
    let again = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_keycloak = again.headers()["location"].to_str().unwrap().to_owned();
    let page = b.get(&to_keycloak).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(login_form_action(&page.text().await.unwrap()).is_some());
}

/// Two rows of the guide's table of mistakes: a redirect URI Keycloak does not know
/// stops at Keycloak's own page, and an issuer with a trailing slash closes the route
/// with 500 `AuthIdpDiscoveryFailed`.
#[tokio::test]
async fn an_unregistered_redirect_uri_and_a_trailing_slash_show_as_the_guide_says() {
    // The client keeps the guide's redirect URI, not this proxy's.
    let guide_uri = json!([format!("{GUIDE_APP}/oauth2/idpresponse")]);
    let s = setup("unregistered", |c| c["redirectUris"] = guide_uri, |_| {}).await;
    let b = browser(&s.proxy);
    let start = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_keycloak = start.headers()["location"].to_str().unwrap().to_owned();
    let page = b.get(&to_keycloak).send().await.unwrap();
    assert_eq!(page.status(), 400);
    let text = page.text().await.unwrap();
    assert!(text.contains("Invalid parameter: redirect_uri"), "{text}");

    let issuer = format!("{}/", s.kc.issuer);
    let rule = guide_auth_rule(&issuer, &s.client_id, "any", &s.origin);
    s.manifests.write("auth.yaml", &manifest(&rule));
    eventually("the route answers 500 AuthIdpDiscoveryFailed", || async {
        let r = b
            .get(format!("{}/", s.origin))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        r.status() == 500 && r.text().await.unwrap().contains("AuthIdpDiscoveryFailed")
    })
    .await;
}

/// A wrong secret: Keycloak refuses the code's redemption with 401
/// `unauthorized_client` (where other providers say `invalid_client`), and the login
/// ends on 500 `AuthTokenEpRequestFailed` with Keycloak's words in the flow record.
#[tokio::test]
async fn a_wrong_secret_ends_the_login_with_keycloaks_words_in_the_flow_record() {
    let s = setup(
        "wrong-secret",
        |_| {},
        |rule| rule[1]["stringData"]["client-secret"] = "not-the-secret".into(),
    )
    .await;
    let b = browser(&s.proxy);
    let start = b
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_keycloak = start.headers()["location"].to_str().unwrap().to_owned();
    let redirect_uri = format!("{}/oauth2/idpresponse", s.origin);
    let callback = log_in(&b, &to_keycloak, &redirect_uri, "alice").await;
    let failed = b.get(&callback.url).send().await.unwrap();
    assert_eq!(failed.status(), 500);
    let page = failed.text().await.unwrap();
    assert!(page.contains("AuthTokenEpRequestFailed"), "{page}");
    // The flow's token hop, as the log reader thread passes it on.
    eventually("the token hop names unauthorized_client", || async {
        let log = s.proxy.diagnostics.lock().unwrap();
        log.iter()
            .any(|l| l.contains("token") && l.contains("unauthorized_client"))
    })
    .await;
}

/// The trap the guide warns of: with Front channel logout on (the admin console's
/// default for a new client), Keycloak skips the client's back-channel logout URL, and
/// an administrator's sign-out never reaches Portcullis.
#[tokio::test]
async fn with_front_channel_logout_on_a_sign_out_in_keycloak_never_reaches_the_edge() {
    let s = setup(
        "frontchannel-on",
        |c| c["frontchannelLogout"] = true.into(),
        |_| {},
    )
    .await;
    let b = browser(&s.proxy);
    let login = s.log_in(&b, "alice").await;
    s.kc.end_session(&login.keycloak_session).await;
    // Keycloak posts its back-channel logouts before it answers, so none will come.
    assert_eq!(s.backchannel_logouts(), 0);
    assert!(
        !s.sent_to_log_in(&login.cookies).await,
        "the session still passes"
    );
}

/// Only members of `admins`, read from the groups claim the guide's mapper puts in the
/// ID token (and nowhere else). Bob is in another group, so his claim is there and
/// refused for what it holds.
#[tokio::test]
async fn the_guides_group_rule_lets_alice_in_and_refuses_bob() {
    let s = setup("groups", |_| {}, with_guide_groups).await;
    let alice = browser(&s.proxy);
    s.log_in(&alice, "alice").await;
    let seen = backend_view(alice.get(format!("{}/", s.origin)).send().await.unwrap()).await;
    assert_eq!(
        seen["headers"]["x-amzn-oidc-identity"],
        s.kc.user_id("alice").await.as_str()
    );
    let bob = browser(&s.proxy);
    s.log_in(&bob, "bob").await;
    let refused = bob
        .get(format!("{}/", s.origin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("AuthForbidden"));
}

/// `portcullis diagnose` on the guide's AuthRule: what section 5 shows, then the
/// traps of its table (a wrong secret, a trailing slash, the `/auth` of old servers, a
/// redirect URI Keycloak does not have, a client id in another case).
#[tokio::test]
async fn diagnose_passes_with_the_guides_client_and_names_each_mistake() {
    let kc = keycloak().await;
    let backchannel = format!("{GUIDE_APP}/oauth2/backchannel-logout");
    let client = guide_client("portcullis-diagnose", GUIDE_APP, &backchannel);
    let secret = kc.register_client(&client).await;
    // The guide's app is served over HTTPS, so logins send its https:// redirect URI.
    let cert = common::tls::cert(&["app.example.com"]);
    let run_as = |issuer: &str, client_id: &str, secret: &str, tls: bool| {
        let dir = TempDir::new("keycloak-diagnose");
        let rule = manifest(&guide_auth_rule(issuer, client_id, secret, GUIDE_APP));
        let (spec, tls_secret) = if tls {
            (
                "  tls: [{hosts: [app.example.com], secretName: web-tls}]\n",
                common::tls::tls_secret("web-tls", &cert),
            )
        } else {
            ("", String::new())
        };
        let app = ingress_yaml("web", &[("app.example.com", "/", "svc")], spec);
        let svc = service_yaml("svc", &["127.0.0.1:9".parse().unwrap()]);
        dir.write("all.yaml", &format!("{app}{svc}{tls_secret}---\n{rule}"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["diagnose", "--idp-timeout", "5", "-f"])
            .arg(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), text)
    };
    let run = |issuer: &str, secret: &str| run_as(issuer, "portcullis-diagnose", secret, true);
    let line = |out: &str, start: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
            .to_owned()
    };

    let (ok, out) = run(&kc.issuer, &secret);
    assert!(ok, "{out}");
    // The guide shows every check with the result it has against Keycloak.
    let checks = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| {
                ["PASS ", "WARN ", "FAIL ", "INFO "]
                    .iter()
                    .any(|s| l.starts_with(s))
            })
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        checks(&snippet(GUIDE, "diagnose-output")),
        checks(&out),
        "{out}"
    );
    assert!(
        line(&out, "PASS  login").contains(
            "https://app.example.com/oauth2/idpresponse: the provider shows its login page (200, a form at "
        ),
        "{out}"
    );

    let (ok, out) = run(&kc.issuer, "not-the-secret");
    assert!(!ok);
    // Keycloak says unauthorized_client (401), where others say invalid_client.
    let failed = line(&out, "FAIL  credentials");
    assert!(
        failed.contains("401 unauthorized_client Invalid client or Invalid client credentials"),
        "{out}"
    );

    let (ok, out) = run(&format!("{}/", kc.issuer), &secret);
    assert!(!ok);
    assert!(
        line(&out, "FAIL  issuer").contains(&format!("{:?}", kc.issuer)),
        "{out}"
    );

    let old_style = format!("{}/auth/realms/portcullis", kc.base);
    let (ok, out) = run(&old_style, &secret);
    assert!(!ok);
    line(&out, "FAIL  discovery");

    // Served over plain HTTP, logins send the http:// form, which Keycloak does not have.
    let (ok, out) = run_as(&kc.issuer, "portcullis-diagnose", &secret, false);
    assert!(!ok);
    assert!(
        line(&out, "FAIL  login").contains("Keycloak refused the login")
            && out.contains("Invalid parameter: redirect_uri"),
        "{out}"
    );
    assert!(
        out.contains("\n      fix: `http://app.example.com/oauth2/idpresponse` is not registered for client `portcullis-diagnose`; register it or serve the host over HTTPS\n"),
        "{out}"
    );

    // Client ids are case-sensitive in Keycloak.
    let (ok, out) = run_as(&kc.issuer, "Portcullis-diagnose", &secret, true);
    assert!(!ok);
    assert!(
        line(&out, "FAIL  login").contains("Keycloak refused the login")
            && out.contains("Client not found"),
        "{out}"
    );
    assert!(
        out.contains("\n      fix: client `Portcullis-diagnose` is unknown at the provider; client ids are case-sensitive"),
        "{out}"
    );
}
