//! One login for every host under `spec.session.cookieDomain`, over raw sockets: the
//! session a browser got on one host opens on every other host of the namespace's
//! rules with the same provider and client, in every spelling of `Host`, and nowhere
//! else; a domain another namespace serves a host under refuses the rule (500) rather
//! than hand that namespace's backend the cookie.

use crate::common;

use common::idp::{Idp, log_in};
use common::*;

/// Three rules of `apps` share a domain and a cookie name: `sso` (hosts a and b) and
/// `sister` (host d) log in with the provider's client, `other` (host c) names another.
const RULES: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sso, namespace: apps}
spec:
  targetRefs: [{name: a}, {name: b}]
  oidc: {issuer: ISSUER, clientId: portcullis-test, clientSecretRef: {name: idp}, scope: openid email profile}
  session: {cookieDomain: .Example.com, cookieName: Shared}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: sister, namespace: apps}
spec:
  targetRefs: [{name: d}]
  oidc: {issuer: ISSUER, clientId: portcullis-test, clientSecretRef: {name: idp}}
  session: {cookieDomain: example.com, cookieName: Shared}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: other, namespace: apps}
spec:
  targetRefs: [{name: c}]
  oidc: {issuer: ISSUER, clientId: another-client, clientSecretRef: {name: idp}}
  session: {cookieDomain: example.com, cookieName: Shared}
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: apps}
stringData: {client-secret: test-secret}
"#;

fn ingresses(hosts: &[&str]) -> String {
    hosts
        .iter()
        .map(|h| ingress_yaml(h, &[(&format!("{h}.example.com"), "/", "svc")], ""))
        .collect()
}

/// A request for `path` with `Host: host` and `headers` (each ending in CRLF), sent
/// as these bytes.
async fn raw(p: &Portcullis, host: &str, path: &str, headers: &str) -> RawResponse {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    raw_exchange(p.http, request.as_bytes()).await
}

fn set_cookies(r: &RawResponse) -> Vec<&str> {
    r.head
        .lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .collect()
}

#[tokio::test]
async fn one_login_serves_every_host_of_the_domain_and_no_other_client() {
    let backend = Backend::start("app").await;
    let manifests = TempDir::new("sso");
    let app = format!(
        "{}{}",
        ingresses(&["a", "b", "c", "d"]),
        service_yaml("svc", &[backend.addr])
    );
    manifests.write("app.yaml", &app);
    let proxy = Portcullis::start(manifests.path(), &[]);
    let port = proxy.http.port();
    let callback = |h: &str| format!("http://{h}.example.com:{port}/oauth2/idpresponse");
    let uris = format!("{},{}", callback("a"), callback("b"));
    let idp = Idp::start(&[("IDP_REDIRECT_URIS", &uris)]);
    manifests.write("auth.yaml", &RULES.replace("ISSUER", &idp.issuer));
    let html = "Accept: text/html\r\n";
    eventually("the rules guard a, b, c and d", || async {
        let mut guarded = true;
        for h in ["a", "b", "c", "d"] {
            guarded &= raw(&proxy, &format!("{h}.example.com"), "/", html)
                .await
                .status
                == 302;
        }
        guarded
    })
    .await;

    // A browser logs in on host a.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("a.example.com", proxy.http)
        .build()
        .unwrap();
    let start = browser
        .get(format!("http://a.example.com:{port}/start"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let to_idp = start.headers()["location"].to_str().unwrap().to_owned();
    let back = log_in(&browser, &to_idp, &callback("a"), "alice").await.url;
    // The callback's Host is the one the login began with (it is in the redirect URI).
    let path = back.split_once(&format!(":{port}")).unwrap().1;
    let flow = start.headers()["set-cookie"].to_str().unwrap();
    let flow = flow.split(';').next().unwrap();
    let host_a = format!("a.example.com:{port}");
    let done = raw(&proxy, &host_a, path, &format!("Cookie: {flow}\r\n")).await;
    assert_eq!(done.status, 302, "{}", done.head);
    let set = set_cookies(&done);
    let shard = set
        .iter()
        .find(|c| c.starts_with("Shared-0=") && !c.starts_with("Shared-0=;"))
        .unwrap_or_else(|| panic!("no session cookie: {set:?}"));
    assert!(
        shard.contains("; Domain=example.com;"),
        "the session is sent to every host under the domain: {shard}"
    );
    let session = format!("Cookie: {}\r\n", shard.split(';').next().unwrap());

    // Host b opens it, in every spelling browsers and attackers send.
    for host in [
        "a.example.com".to_owned(),
        "b.example.com".into(),
        "B.Example.COM".into(),
        "b.example.com.".into(),
        format!("b.example.com:{port}"),
        format!("B.EXAMPLE.COM.:{port}"),
        // Another rule of the namespace with the same provider and client.
        "d.example.com".into(),
        "D.Example.Com.".into(),
    ] {
        let r = raw(&proxy, &host, "/api", &session).await;
        assert_eq!(r.status, 200, "{host}: {}", r.head);
        let seen = r.backend().unwrap();
        assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice", "{host}");
    }
    // A rule with another client never opens it, though it reads the same cookie
    // name under the same domain: sessions are bound to issuer, client and namespace.
    let r = raw(&proxy, "c.example.com", "/api", &session).await;
    assert_eq!(r.status, 401, "{}", r.head);
    assert!(r.backend().is_none());

    // The two logins hold one cookie name under the domain: `check` warns.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-o", "json", "-f"])
        .arg(manifests.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let clash = (report["problems"].as_array().unwrap().iter())
        .find(|p| p["reason"] == "CookieNameConflict" && p["field"] == "spec.session.cookieName")
        .unwrap_or_else(|| panic!("{report}"));
    assert!(clash.to_string().contains("example.com"), "{clash}");

    // Logout on host b clears the cookie for the whole domain.
    let out = raw(&proxy, "b.example.com", "/oauth2/logout", &session).await;
    assert_eq!(out.status, 302, "{}", out.head);
    assert!(
        set_cookies(&out)
            .iter()
            .any(|c| c.starts_with("Shared-0=;") && c.contains("; Domain=example.com;")),
        "{}",
        out.head
    );
}

#[tokio::test]
async fn a_domain_another_namespace_serves_a_host_under_refuses_the_rule() {
    let backend = Backend::start("app").await;
    let manifests = TempDir::new("sso-tenancy");
    let intruder = format!(
        "{}{}",
        ingress_yaml("x", &[("x.example.com", "/", "svc")], ""),
        service_yaml("svc", &[backend.addr])
    )
    .replace("namespace: apps", "namespace: other");
    let rule = RULES
        .split("---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: other")
        .next()
        .unwrap()
        .to_owned()
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: test-secret}\n";
    let rule = rule.replace("ISSUER", "http://127.0.0.1:9");
    let app = format!(
        "{}{}{rule}",
        ingresses(&["a", "b"]),
        service_yaml("svc", &[backend.addr])
    );
    manifests.write("app.yaml", &app);
    manifests.write("other.yaml", &intruder);
    let proxy = Portcullis::start(manifests.path(), &[]);
    // Closed, not served with a cookie that leaks; the other namespace's route is
    // untouched.
    eventually("the rule is refused and its routes closed", || async {
        raw(&proxy, "a.example.com", "/", "").await.status == 500
    })
    .await;
    for host in ["b.example.com", "A.EXAMPLE.COM.", "a.example.com:80"] {
        let r = raw(&proxy, host, "/", "Accept: text/html\r\n").await;
        assert_eq!(r.status, 500, "{host}: {}", r.head);
        assert!(r.body.contains("AuthRuleInvalid"), "{}", r.body);
        assert!(r.backend().is_none());
    }
    let x = raw(&proxy, "x.example.com", "/", "").await;
    assert_eq!(x.status, 200, "{}", x.head);

    // `check` names the field, the route and the fix.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-o", "json", "-f"])
        .arg(manifests.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problem = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["reason"] == "CookieDomainNotOwned")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(problem["field"], "spec.session.cookieDomain");
    let text = problem.to_string();
    assert!(
        text.contains("other/x") || text.contains("Ingress other/x"),
        "{text}"
    );
    assert!(text.contains("x.example.com"), "{text}");

    // Once the other namespace's host leaves the domain, the rule guards again.
    manifests.write(
        "other.yaml",
        &intruder.replace("x.example.com", "x.example.org"),
    );
    eventually("the rule guards its routes again", || async {
        raw(&proxy, "a.example.com", "/", "").await.status == 401
    })
    .await;
}
