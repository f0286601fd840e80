//! Nothing reaches a guarded backend without a login: every attack here is sent as raw
//! bytes (no client normalises anything), and the echo backend's answer shows what it
//! would have received.

use crate::common;

use common::*;

/// `app.test`: Ingress `public` serves `/` (an AuthRule guards `/private*` of it) and
/// Ingress `admin` serves `/admin` (guarded whole). `cors.test` is guarded by a rule
/// that lets preflights through. The provider is never reached: requests here are not
/// from a browser, so a missing session is answered 401 on the spot.
fn app(backend: &Backend) -> String {
    let rule = |name: &str, target: &str, extra: &str| {
        format!(
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  targetRefs: [{{name: {target}}}]\n{extra}  oidc: {{issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {{name: idp}}}}\n"
        )
    };
    [
        ingress_yaml("public", &[("app.test", "/", "svc")], ""),
        ingress_yaml("admin", &[("app.test", "/admin", "svc")], ""),
        ingress_yaml("cors", &[("cors.test", "/", "svc")], ""),
        service_yaml("svc", &[backend.addr]),
        rule("guard", "admin", ""),
        rule("private", "public", "  paths: [\"/private*\"]\n"),
        rule("cors", "cors", "  cors: {allowPreflight: true}\n"),
        rule(
            "delimiters",
            "public",
            "  paths: [\"/@admin*\", \"/v1/jobs:run*\"]\n",
        ),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n".into(),
    ]
    .concat()
}

async fn start(args: &[&str]) -> (Backend, TempDir, Portcullis) {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("guard");
    dir.write("all.yaml", &app(&backend));
    let proxy = Portcullis::start(dir.path(), args);
    (backend, dir, proxy)
}

fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Spellings of `/admin/users` (and of `/private/x`) that lenient backends (Spring,
/// Tomcat, Go after decoding, Flask) read as the guarded path.
const GUARDED_SPELLINGS: &[&str] = &[
    "/admin/users",
    "/%61dmin/users",
    "/%61%64%6d%69%6e/users",
    "//admin/users",
    "///admin/users",
    "/x/../admin/users",
    "/x/%2e%2e/admin/users",
    "/x/.%2E/admin/users",
    "/./admin/users",
    "/%2e/admin/users",
    "/admin;x/users",
    "/admin%2fusers",
    "/admin%2Fusers",
    "/%5cadmin/users",
    "/\\admin/users",
    "/public/..;/admin/users",
    "/x/..%2fadmin/users",
    "/x/..%5cadmin/users",
    "/admin/./users",
    "/public/..;/private/x",
    "/public/%2e%2e/private/x",
    "//private/x",
    "/%70rivate/x",
    "/private;/x",
];

#[tokio::test]
async fn no_spelling_of_a_guarded_path_reaches_the_backend() {
    let (_b, _d, p) = start(&[]).await;
    for path in GUARDED_SPELLINGS {
        let r = raw_exchange(p.http, &get(path, "app.test")).await;
        assert!(
            r.backend().is_none() && matches!(r.status, 400 | 401),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    for bad in ["/a%00b", "/a%zz", "/a%2", "/a%0d%0aX-Injected:%201"] {
        let r = raw_exchange(p.http, &get(bad, "app.test")).await;
        assert_eq!((r.status, r.backend()), (400, None), "{bad}");
    }
    // The public part stays public and is forwarded in its canonical spelling.
    let r = raw_exchange(p.http, &get("/%70ublic//x/./../y?q=%2F&r=..", "app.test")).await;
    assert_eq!(r.backend().unwrap()["path"], "/public/y?q=%2F&r=..");
    let line = p.log_line(|l| l.contains("%2f") || l.contains("%2F")).await;
    assert!(line.contains("AmbiguousRequestPath"), "{line}");
}

#[tokio::test]
async fn normalized_paths_are_routed_guarded_and_forwarded_as_one() {
    let (_b, _d, p) = start(&[
        "--escaped-slashes",
        "normalize",
        "--path-parameters",
        "normalize",
    ])
    .await;
    for path in GUARDED_SPELLINGS {
        let r = raw_exchange(p.http, &get(path, "app.test")).await;
        assert_eq!((r.status, r.backend()), (401, None), "{path}: {}", r.body);
    }
    for (sent, seen) in [
        ("/public;jsessionid=1/a%2fb", "/public/a/b"),
        ("/x/..%5cpublic", "/public"),
        ("/caf%c3%a9/%7euser", "/caf%C3%A9/~user"),
    ] {
        let r = raw_exchange(p.http, &get(sent, "app.test")).await;
        assert_eq!(r.backend().unwrap()["path"], seen, "{sent}");
    }
}

#[tokio::test]
async fn the_original_path_is_forwarded_only_when_asked_for() {
    let (_b, _d, p) = start(&["--forward-original-path"]).await;
    let r = raw_exchange(p.http, &get("/%70ublic//x?q=1", "app.test")).await;
    assert_eq!(r.backend().unwrap()["path"], "/%70ublic//x?q=1");
    let r = raw_exchange(p.http, &get("//admin/users", "app.test")).await;
    assert_eq!((r.status, r.backend()), (401, None));
}

#[tokio::test]
async fn a_request_names_one_host_and_the_backend_gets_that_one() {
    let (_b, _d, p) = start(&[]).await;
    let refused: &[&[u8]] = &[
        b"GET http://www.test/admin HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET http://app.test/ HTTP/1.1\r\nHost: cors.test\r\nConnection: close\r\n\r\n",
        b"GET http://app.test:8080/ HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: www.test\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@app.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test/admin\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test:80:80\r\nConnection: close\r\n\r\n",
        b"GET ftp://app.test/ HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    ];
    for req in refused {
        let r = raw_exchange(p.http, req).await;
        assert_eq!(
            (r.status, r.backend()),
            (400, None),
            "{}",
            String::from_utf8_lossy(req)
        );
    }
    // Case, a trailing dot and the default port name the same host: still guarded.
    for host in ["APP.TEST", "app.test.", "app.test:80", "App.Test.:80"] {
        let r = raw_exchange(p.http, &get("/admin", host)).await;
        assert_eq!((r.status, r.backend()), (401, None), "{host}");
        let r = raw_exchange(p.http, &get("/", host)).await;
        assert_eq!(
            r.backend().unwrap()["headers"]["host"],
            "app.test",
            "{host}"
        );
    }
    let r = raw_exchange(
        p.http,
        b"GET http://App.Test./x HTTP/1.1\r\nHost: app.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = r.backend().unwrap();
    assert_eq!(seen["headers"]["host"], "app.test");
    assert_eq!(seen["headers"]["x-forwarded-host"], "app.test");
    assert_eq!(seen["path"], "/x");
    let r = raw_exchange(
        p.http,
        b"GET http://app.test/admin HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.backend()), (401, None));
}

#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let (_b, _d, p) = start(&[]).await;
    let send = |authority: &'static str, host: Option<&'static str>, path: &'static str| {
        let addr = p.http;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .version(hyper::Version::HTTP_2)
                .uri(format!("http://{authority}{path}"));
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let req = req
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let seen: Option<serde_json::Value> = serde_json::from_slice(&body)
                .ok()
                .filter(|v: &serde_json::Value| v.get("backend").is_some());
            (status, seen)
        }
    };
    assert_eq!(
        send("www.test", Some("app.test"), "/admin").await,
        (400, None)
    );
    assert_eq!(send("app.test", Some("www.test"), "/").await, (400, None));
    assert_eq!(send("app.test", None, "/%61dmin").await, (401, None));
    let (status, seen) = send("App.Test", Some("app.test"), "/").await;
    assert_eq!(status, 200);
    assert_eq!(seen.unwrap()["headers"]["host"], "app.test");
}

#[tokio::test]
async fn a_client_can_neither_remove_nor_forge_proxy_headers() {
    let (_b, _d, p) = start(&[]).await;
    let req = b"GET /x HTTP/1.1\r\nHost: app.test\r\n\
        Connection: close, x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-forwarded-port, host, x-amzn-trace-id, x-amzn-oidc-identity, x-real-ip\r\n\
        X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: admin.test\r\nForwarded: for=6.6.6.6\r\n\
        X-Real-IP: 6.6.6.6\r\nX-Forwarded-Prefix: /admin\r\nX-Forwarded-Ssl: on\r\nFront-End-Https: on\r\n\
        X-Original-Host: admin.test\r\nTrue-Client-IP: 6.6.6.6\r\nProxy: http://evil.test\r\n\
        X-Original-URL: /admin/users\r\nX-Rewrite-URL: /admin/users\r\nX-Original-URI: /admin\r\n\
        x_original_url: /admin\r\nx_forwarded_host: admin.test\r\nx_custom: 1\r\n\
        X-Amzn-Oidc-Identity: forged\r\nx_amzn_oidc_data: forged\r\nX-AMZN-OIDC-ACCESSTOKEN: forged\r\n\
        Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\r\n";
    let r = raw_exchange(p.http, req).await;
    let seen = r.backend().unwrap();
    let h = &seen["headers"];
    assert_eq!(h["host"], "app.test");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.test");
    assert_eq!(h["x-forwarded-port"], p.http.port().to_string());
    assert!(h["x-amzn-trace-id"].as_str().unwrap().starts_with("Root="));
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    let names: Vec<&String> = h.as_object().unwrap().keys().collect();
    for gone in [
        "forwarded",
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "front-end-https",
        "x-original-host",
        "true-client-ip",
        "proxy",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x_original_url",
        "x_forwarded_host",
        "x_custom",
        "x-amzn-oidc-identity",
        "x_amzn_oidc_data",
        "x-amzn-oidc-accesstoken",
        "keep-alive",
        "proxy-connection",
        "connection",
    ] {
        assert!(
            !names.iter().any(|n| *n == gone),
            "{gone} reached the backend: {names:?}"
        );
    }
}

/// A length and chunking together (CL.TE): the length is dropped, the body read as
/// chunked, and the connection closed after the answer, so what an attacker hides
/// after the last chunk is never read as a request, by Portcullis or the backend.
#[tokio::test]
async fn a_request_hidden_behind_conflicting_framing_goes_nowhere() {
    let (_b, _d, p) = start(&[]).await;
    let smuggled = "GET /admin/users HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let r = raw_exchange(p.http, req.as_bytes()).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert!(
        r.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        r.head
    );
    let seen = r.backend().expect("one whole answer, nothing after it");
    assert_eq!(seen["bodyBytes"], 0);
    assert_eq!(seen["path"], "/x");
    assert!(seen["headers"].get("content-length").is_none(), "{seen}");
    for te in ["xchunked", "chunked, identity", "gzip"] {
        let r = raw_exchange(
            p.http,
            format!("POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n0\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(
            (r.status, r.backend()),
            (400, None),
            "Transfer-Encoding: {te}"
        );
    }
}

#[tokio::test]
async fn preflights_need_a_session_unless_the_rule_lets_them_through() {
    let (_b, _d, p) = start(&[]).await;
    let preflight = |host: &str, body: &str| {
        format!(
            "OPTIONS /admin/users HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.test\r\nAccess-Control-Request-Method: DELETE\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    for body in ["", "rm -rf"] {
        let r = raw_exchange(p.http, &preflight("app.test", body)).await;
        assert_eq!((r.status, r.backend()), (401, None), "body {body:?}");
    }
    let r = raw_exchange(p.http, &preflight("cors.test", "")).await;
    assert_eq!(r.backend().unwrap()["method"], "OPTIONS");
    let r = raw_exchange(p.http, &preflight("cors.test", "rm -rf")).await;
    assert_eq!((r.status, r.backend()), (401, None));
    // Not a preflight: an OPTIONS without the CORS header is guarded like any request.
    let r = raw_exchange(
        p.http,
        b"OPTIONS /x HTTP/1.1\r\nHost: cors.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.backend()), (401, None));
}

#[tokio::test]
async fn underscore_headers_pass_only_when_allowed_and_never_as_a_dropped_name() {
    let (_b, _d, p) = start(&["--underscores-in-headers"]).await;
    let r = raw_exchange(
        p.http,
        b"GET /x HTTP/1.1\r\nHost: app.test\r\nx_custom: 1\r\nx_original_url: /admin\r\nX_Amzn_Oidc_Identity: forged\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = r.backend().unwrap();
    let names: Vec<&String> = seen["headers"].as_object().unwrap().keys().collect();
    assert!(names.iter().any(|n| *n == "x_custom"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("original") || n.contains("oidc")),
        "{names:?}"
    );
}

/// For backends that route without regard to case (Express, ASP.NET): every case of a
/// guarded path is guarded, and the path travels in the case it was sent.
#[tokio::test]
async fn case_insensitive_paths_guard_every_case() {
    let (_b, _d, p) = start(&["--case-insensitive-paths"]).await;
    for path in [
        "/ADMIN/users",
        "/Admin",
        "/aDmIn;x",
        "/PRIVATE/x",
        "/%50rivate/x",
        "/OAUTH2/IDPRESPONSE",
    ] {
        let r = raw_exchange(p.http, &get(path, "app.test")).await;
        assert!(
            r.backend().is_none() && matches!(r.status, 400 | 401),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    let r = raw_exchange(p.http, &get("/Public/X", "app.test")).await;
    assert_eq!(r.backend().unwrap()["path"], "/Public/X");
}

/// Rules written with `@` and `:` meet every escape of them: Spring, Go and ASP.NET
/// decode `%40` and `%3A` before routing, so the guard must see what they see.
#[tokio::test]
async fn escaped_delimiters_meet_the_rules_that_name_them() {
    let (_b, _d, p) = start(&[]).await;
    for path in [
        "/@admin",
        "/%40admin",
        "/%40admin/users",
        "/v1/jobs:run",
        "/v1/jobs%3Arun",
        "/v1/jobs%3arun/now",
        "/v1/%6aobs%3Arun",
    ] {
        let r = raw_exchange(p.http, &get(path, "app.test")).await;
        assert_eq!((r.status, r.backend()), (401, None), "{path}: {}", r.body);
    }
    // Open paths travel with the escapes decoded, as the route and guard read them.
    let r = raw_exchange(p.http, &get("/v1/jobs%3Alist?a=%40", "app.test")).await;
    assert_eq!(r.backend().unwrap()["path"], "/v1/jobs:list?a=%40");
}

/// `X-HTTP-Method-Override: DELETE` on a POST makes Symfony, Laravel and Express's
/// `method-override` run the DELETE handler: the backend gets the method that was
/// routed and guarded, and no override in any spelling.
#[tokio::test]
async fn method_overrides_never_reach_the_backend() {
    for args in [&[][..], &["--underscores-in-headers"][..]] {
        let (_b, _d, p) = start(args).await;
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
            "X_HTTP_Method_Override",
            "x_method_override",
        ] {
            let request = format!(
                "POST /orders/7 HTTP/1.1\r\nHost: app.test\r\n{name}: DELETE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let r = raw_exchange(p.http, request.as_bytes()).await;
            let seen = r.backend().unwrap();
            assert_eq!(seen["method"], "POST");
            let names: Vec<&String> = seen["headers"].as_object().unwrap().keys().collect();
            assert!(
                !names.iter().any(|n| n.replace('_', "-").contains("method")),
                "{args:?} {name}: {names:?}"
            );
        }
    }
}

/// Sessions and bearer tokens travel only over HTTPS outside loopback: on a plain-HTTP
/// listener at a non-loopback address, a guarded route answers 403 and the backend
/// gets nothing, whatever the request carries.
#[tokio::test]
async fn guarded_routes_need_https_off_loopback() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("https-only");
    dir.write("all.yaml", &app(&backend));
    let listen = format!("{}:0", crate::common::cluster::host_address());
    let args: Vec<&std::ffi::OsStr> = [
        "serve",
        "-f",
        dir.path().to_str().unwrap(),
        "--http",
        &listen,
        "--admin",
        "127.0.0.1:0",
    ]
    .map(std::ffi::OsStr::new)
    .to_vec();
    let p = Portcullis::launch(&args);
    for request in [
        get("/admin/users", "app.test"),
        b"GET /admin HTTP/1.1\r\nHost: app.test\r\nAuthorization: Bearer x.y.z\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /admin HTTP/1.1\r\nHost: app.test\r\nCookie: AWSELBAuthSessionCookie-0=forged\r\nConnection: close\r\n\r\n".to_vec(),
    ] {
        let r = raw_exchange(p.http, &request).await;
        assert_eq!((r.status, r.backend()), (403, None), "{}", r.body);
        assert!(r.body.contains("AuthRequiresHttps"), "{}", r.body);
    }
    // An open route is still served over plain HTTP.
    let r = raw_exchange(p.http, &get("/public/x", "app.test")).await;
    assert!(r.backend().is_some(), "{}", r.head);
}
