//! Nothing from one namespace influences another's login: a host belongs to the
//! namespace of its oldest Ingress, and two AuthRules naming one issuer each use their
//! own endpoints.

use crate::common;

use std::sync::{Arc, Mutex};

use common::app::*;
use common::*;

fn namespaced_service(ns: &str, name: &str, addr: std::net::SocketAddr) -> String {
    service_yaml(name, &[addr]).replace("namespace: apps", &format!("namespace: {ns}"))
}

#[tokio::test]
async fn another_namespace_cannot_add_paths_under_a_guarded_host() {
    let victim = Backend::start("victim").await;
    let evil = Backend::start("evil").await;
    let dir = TempDir::new("tenants");
    let evil_ingress = ingress_yaml("grab", &[("app.test", "/admin/login", "svc")], "")
        .replace("namespace: apps", "namespace: evil");
    let evil_anywhere = ingress_yaml("anywhere", &[("", "/other", "svc")], "")
        .replace("namespace: apps", "namespace: evil")
        .replace("  - host: \"\"\n", "  - \n");
    // The victim's Ingress is the older one: it is written first, and files give
    // every object the same age, so namespace/name order decides (apps < evil).
    dir.write(
        "all.yaml",
        &[
            ingress_yaml("web", &[("app.test", "/", "svc")], ""),
            namespaced_service("apps", "svc", victim.addr),
            evil_ingress,
            evil_anywhere,
            namespaced_service("evil", "svc", evil.addr),
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: sso, namespace: apps}\nspec:\n  targetRefs: [{name: web}]\n  oidc: {issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {name: idp}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n".into(),
        ]
        .concat(),
    );
    let p = Portcullis::start(dir.path(), &[]);
    for path in ["/admin/login", "/admin/login/x", "/other"] {
        let r = raw_exchange(
            p.http,
            format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!((r.status, r.backend()), (401, None), "{path}: {}", r.body);
    }
    // Elsewhere the other namespace's rule without a host still serves.
    let r = raw_exchange(
        p.http,
        b"GET /other HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.backend().unwrap()["backend"], "evil");
    let (ok, out) = run_with_stdin(&["check", "-f", dir.path().to_str().unwrap()], "");
    assert!(!ok, "check fails on the refused Ingress");
    assert!(
        out.contains("evil/grab") && out.contains("HostOwnedByOtherNamespace"),
        "{out}"
    );
}

/// A token endpoint that records what it is sent and refuses every code.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<(Option<String>, String)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> Self {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(Option<String>, String)>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_owned());
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                sink.lock()
                                    .unwrap()
                                    .push((auth, String::from_utf8_lossy(&body).into_owned()));
                                let resp = hyper::Response::builder()
                                    .status(400)
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                        br#"{"error":"invalid_grant"}"#,
                                    )))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            _task: task,
        }
    }
}

#[tokio::test]
async fn two_rules_with_one_issuer_each_use_their_own_endpoints() {
    let recorder = Recorder::start().await;
    let other_backend = Backend::start("other").await;
    let rule = format!(
        "{AUTH_RULE}{}{}{}",
        ingress_yaml("web", &[("other.example.com", "/", "svc")], "")
            .replace("namespace: apps", "namespace: other"),
        namespaced_service("other", "svc", other_backend.addr),
        format!(
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: sso, namespace: other}}\nspec:\n  targetRefs: [{{name: web}}]\n  oidc:\n    issuer: ISSUER\n    clientId: portcullis-test\n    clientSecretRef: {{name: idp}}\n    tokenEndpoint: http://{}/token\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: idp, namespace: other}}\nstringData: {{client-secret: other-secret}}\n",
            recorder.addr
        ),
    );
    let uris = "ORIGIN/oauth2/idpresponse,http://other.example.com:PORT/oauth2/idpresponse";
    let s = setup_rule(&[("IDP_REDIRECT_URIS", uris)], &rule, &[]).await;
    let other_origin = format!("http://other.example.com:{}", s.proxy.http.port());
    // The other namespace's rule is used first, so a cache keyed by issuer alone
    // would hand its endpoints to the victim's logins.
    let other = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("other.example.com", s.proxy.http)
        .build()
        .unwrap();
    let callback = callback_url(&other, &other_origin, "/", "mallory").await;
    let done = other.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), 401, "the recorder refuses every code");
    let basic = |secret: &str| {
        let pair = format!("portcullis-test:{secret}");
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair)
        )
    };
    {
        let recorded = recorder.seen.lock().unwrap();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(
            recorded[0].0.as_deref(),
            Some(basic("other-secret").as_str())
        );
        assert!(recorded[0].1.contains("code="), "{}", recorded[0].1);
    }

    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "alice").await;
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "alice");
    let recorded = recorder.seen.lock().unwrap().clone();
    assert_eq!(
        recorded.len(),
        1,
        "the victim's code went to the other rule's endpoint: {recorded:?}"
    );
    assert!(
        !recorded
            .iter()
            .any(|(auth, _)| auth.as_deref() == Some(basic("test-secret").as_str()))
    );
}
