//! TLS ended in front of Portcullis (a cloud load balancer with the certificate): a
//! `--trusted-proxy` peer's `X-Forwarded-Proto: https` or `Forwarded: proto=https`
//! makes the request HTTPS for the guard, the callback URI, the cookies and the
//! backend; the same words from anyone else change nothing. Requests are raw bytes.

use crate::common;

use common::app::{AUTH_RULE, setup_rule};
use common::idp::log_in;
use common::*;

/// Portcullis on this host's own (non-loopback) address, where a guarded route needs
/// HTTPS, with `trusted` as its only trusted proxy.
async fn off_loopback(trusted: &str) -> (Backend, TempDir, Portcullis) {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("offload");
    let rule = "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: guard, namespace: apps}\nspec:\n  targetRefs: [{name: web}]\n  paths: [\"/private*\"]\n  oidc: {issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {name: idp}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n";
    dir.write(
        "all.yaml",
        &format!(
            "{}{}{rule}",
            ingress_yaml("web", &[("app.test", "/", "svc")], ""),
            service_yaml("svc", &[backend.addr])
        ),
    );
    let listen = format!("{}:0", cluster::host_address());
    let args: Vec<&std::ffi::OsStr> = [
        "serve",
        "-f",
        dir.path().to_str().unwrap(),
        "--http",
        &listen,
        "--admin",
        "127.0.0.1:0",
        "--trusted-proxy",
        trusted,
    ]
    .map(std::ffi::OsStr::new)
    .to_vec();
    let p = Portcullis::launch(&args);
    (backend, dir, p)
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

/// Every way a proxy may say the client used HTTPS.
const SAYS_HTTPS: &[&str] = &[
    "X-Forwarded-Proto: https\r\n",
    "x-forwarded-proto: HTTPS\r\n",
    "Forwarded: for=198.51.100.7;proto=https\r\n",
    "Forwarded: proto=\"https\"\r\n",
    "X-Forwarded-Proto: https\r\nForwarded: proto=https\r\n",
];

/// Ways that do not say one thing: each reads as plain HTTP.
const SAYS_NOTHING_CLEAR: &[&str] = &[
    "X-Forwarded-Proto: https, http\r\n",
    "X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n",
    "X-Forwarded-Proto: https\r\nForwarded: proto=http\r\n",
    "Forwarded: proto=https,proto=http\r\n",
    "X-Forwarded-Proto: https\r\nForwarded: garbage\r\n",
    "X-Forwarded-Proto: ftp\r\n",
    "X-Forwarded-Proto: http\r\n",
];

#[tokio::test]
async fn a_trusted_proxy_that_ended_tls_makes_the_request_https() {
    let (_b, _d, p) = off_loopback(&cluster::host_address().to_string()).await;
    for says in SAYS_HTTPS {
        // Past the HTTPS check: no session, not a browser, so 401 (not 403).
        let r = raw_exchange(p.http, &get("/private/x", says)).await;
        assert_eq!((r.status, r.backend()), (401, None), "{says:?}: {}", r.head);
        // The backend is told the client's scheme.
        let r = raw_exchange(p.http, &get("/open", says)).await;
        let seen = r
            .backend()
            .unwrap_or_else(|| panic!("{says:?}: {}", r.head));
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{says:?}");
    }
    for unclear in SAYS_NOTHING_CLEAR {
        let r = raw_exchange(p.http, &get("/private/x", unclear)).await;
        assert_eq!(
            (r.status, r.backend()),
            (403, None),
            "{unclear:?}: {}",
            r.head
        );
        assert!(
            r.body.contains("AuthRequiresHttps"),
            "{unclear:?}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn the_same_words_from_an_untrusted_peer_change_nothing() {
    let (_b, _d, p) = off_loopback("192.0.2.1/32").await;
    for says in SAYS_HTTPS {
        let r = raw_exchange(p.http, &get("/private/x", says)).await;
        assert_eq!((r.status, r.backend()), (403, None), "{says:?}: {}", r.head);
        assert!(r.body.contains("AuthRequiresHttps"), "{says:?}: {}", r.body);
        let r = raw_exchange(p.http, &get("/open", says)).await;
        let seen = r
            .backend()
            .unwrap_or_else(|| panic!("{says:?}: {}", r.head));
        assert_eq!(seen["headers"]["x-forwarded-proto"], "http", "{says:?}");
        assert!(seen["headers"].get("forwarded").is_none(), "{seen}");
    }
}

/// A whole login as a load balancer that ends TLS would carry it: every request plain
/// HTTP from a trusted peer with `X-Forwarded-Proto: https`. The provider is sent the
/// `https://` callback, every cookie is `Secure`, and the app gets the identity.
#[tokio::test]
async fn a_login_behind_a_tls_ending_proxy_uses_https_throughout() {
    let s = setup_rule(
        &[(
            "IDP_REDIRECT_URIS",
            "https://app.example.com:PORT/oauth2/idpresponse",
        )],
        AUTH_RULE,
        &["--trusted-proxy", "127.0.0.1/32"],
    )
    .await;
    let port = s.proxy.http.port();
    let host = format!("app.example.com:{port}");
    let send = |path: &str, cookies: &str| {
        let cookie = if cookies.is_empty() {
            String::new()
        } else {
            format!("Cookie: {cookies}\r\n")
        };
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nX-Forwarded-Proto: https\r\n{cookie}Connection: close\r\n\r\n").into_bytes()
    };
    let start = raw_exchange(s.proxy.http, &send("/", "")).await;
    assert_eq!(start.status, 302, "{}", start.head);
    let to_idp = header(&start.head, "location").remove(0);
    let callback = format!("https://{host}/oauth2/idpresponse");
    let query: Vec<(String, String)> = reqwest::Url::parse(&to_idp)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(
        query.contains(&("redirect_uri".into(), callback.clone())),
        "{to_idp}"
    );
    let flow = cookies_set(&start.head);
    assert!(!flow.is_empty());

    let idp_browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let back = log_in(&idp_browser, &to_idp, &callback, "alice").await;
    let path = back.url.strip_prefix(&format!("https://{host}")).unwrap();
    let finish = raw_exchange(s.proxy.http, &send(path, &flow.join("; "))).await;
    assert_eq!(finish.status, 302, "{}{}", finish.head, finish.body);
    let session = cookies_set(&finish.head);
    assert!(!session.is_empty(), "{}", finish.head);

    let r = raw_exchange(s.proxy.http, &send("/", &session.join("; "))).await;
    let seen = r.backend().unwrap_or_else(|| panic!("{}", r.head));
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice");
}

/// Every `Set-Cookie` of `head` as `name=value`, each checked to be `Secure`.
fn cookies_set(head: &str) -> Vec<String> {
    header(head, "set-cookie")
        .into_iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| {
            assert!(c.contains("; Secure"), "not Secure: {c}");
            c.split(';').next().unwrap().to_owned()
        })
        .collect()
}

fn header(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}
