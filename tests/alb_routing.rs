//! Ingresses written for the AWS Load Balancer Controller route as they do on EKS:
//! `ImplementationSpecific` paths are ALB path patterns (`/*` is everything), tried in
//! the order ALB tries its rules. Requests go over raw sockets, exactly as an attacker
//! would write them, and the echo backends say what reached them.

use std::time::{Duration, Instant};

use crate::common;

use common::*;

/// `Service` and `EndpointSlice` for `name` in namespace `ns`.
fn service_in(ns: &str, name: &str, backend: &Backend) -> String {
    service_yaml(name, &[backend.addr]).replace("namespace: apps", &format!("namespace: {ns}"))
}

/// `GET <target>` for `host`, as sent.
fn get(host: &str, target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Which backend answered and the path it was sent, or the status and body when no
/// backend was reached.
async fn reached(proxy: &Portcullis, host: &str, target: &str) -> Result<(String, String), String> {
    let answer = raw_exchange(proxy.http, &get(host, target)).await;
    match answer.backend() {
        Some(seen) => Ok((
            seen["backend"].as_str().unwrap().to_owned(),
            seen["path"].as_str().unwrap().to_owned(),
        )),
        None => Err(format!("{} {}", answer.status, answer.body)),
    }
}

/// The 2048 game of AWS's controller documentation, as most EKS manifests were
/// written before `pathType` was required: `path: /*`, which the API server stores
/// as `ImplementationSpecific`, and the legacy class annotation.
const GAME_2048: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  namespace: game-2048
  name: ingress-2048
  annotations:
    kubernetes.io/ingress.class: alb
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/target-type: ip
spec:
  rules:
    - http:
        paths:
          - path: /*
            pathType: ImplementationSpecific
            backend:
              service:
                name: service-2048
                port:
                  number: 80
"#;

/// `/*` is every path: before, it was a literal prefix and every request got 404.
#[tokio::test]
async fn the_2048_example_serves_every_path() {
    let game = Backend::start("game").await;
    let dir = TempDir::new("alb-2048");
    dir.write(
        "app.yaml",
        &format!(
            "{GAME_2048}{}",
            service_in("game-2048", "service-2048", &game)
        ),
    );
    let proxy = Portcullis::start(dir.path(), &["--ingress-class", "alb"]);
    eventually("the game is served", || async {
        reached(&proxy, "game.example.com", "/").await.is_ok()
    })
    .await;
    for (target, path) in [
        ("/", "/"),
        ("/index.html", "/index.html"),
        ("/js/app.js?v=3", "/js/app.js?v=3"),
        ("/%2a", "/*"),
        ("/a/./b/../c", "/a/c"),
        ("/%7Euser/", "/~user/"),
    ] {
        let (backend, seen) = reached(&proxy, "any.example.com", target).await.unwrap();
        assert_eq!(
            (backend.as_str(), seen.as_str()),
            ("game", path),
            "{target}"
        );
    }
    let (ok, out) = run_with_stdin(
        &[
            "check",
            "--ingress-class",
            "alb",
            "-f",
            dir.path().to_str().unwrap(),
        ],
        "",
    );
    assert!(
        !out.contains("InvalidPath")
            && out.contains("metadata.annotations[alb.ingress.kubernetes.io/target-type]")
            && out.contains("as target-type: ip does"),
        "check reads the pattern and reports only the load balancer's own annotation, with what takes its place: {ok} {out}"
    );
}

/// Several patterns on one host, tried in the order written after exact and prefix
/// paths; every spelling of a path is matched as the canonical path the backend gets.
#[tokio::test]
async fn patterns_route_every_spelling_of_a_path_as_its_canonical_form() {
    let (api, img, web, health) = (
        Backend::start("api").await,
        Backend::start("img").await,
        Backend::start("web").await,
        Backend::start("health").await,
    );
    let dir = TempDir::new("alb-patterns");
    let many_stars = format!("/long/{}*z*", "*a".repeat(57));
    dir.write(
        "app.yaml",
        &format!(
            r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
spec:
  ingressClassName: portcullis
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: "{many_stars}", pathType: ImplementationSpecific, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}
      - {{path: /api/*, pathType: ImplementationSpecific, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}
      - {{path: /img/?.png, pathType: ImplementationSpecific, backend: {{service: {{name: img, port: {{number: 80}}}}}}}}
      - {{path: /*, pathType: ImplementationSpecific, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
      - {{path: /healthz, pathType: Exact, backend: {{service: {{name: health, port: {{number: 80}}}}}}}}
{}{}{}{}"#,
            service_in("apps", "api", &api),
            service_in("apps", "img", &img),
            service_in("apps", "web", &web),
            service_in("apps", "health", &health),
        ),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    eventually("the shop is served", || async {
        reached(&proxy, "shop.example.com", "/").await.is_ok()
    })
    .await;
    for (target, want) in [
        ("/healthz", ("health", "/healthz")),
        ("/api/items", ("api", "/api/items")),
        ("/api/", ("api", "/api/")),
        ("/api", ("web", "/api")),
        ("/%61pi/items", ("api", "/api/items")),
        ("/API/items", ("web", "/API/items")),
        ("/api/../admin", ("web", "/admin")),
        ("/img/../api/x", ("api", "/api/x")),
        ("/img/1.png", ("img", "/img/1.png")),
        ("/img/1.png?size=2", ("img", "/img/1.png?size=2")),
        ("/img/12.png", ("web", "/img/12.png")),
        // An encoded `?` is three characters of the path, never the one `?` stands for.
        ("/img/%3F.png", ("web", "/img/%3F.png")),
        ("/img/%3f.png", ("web", "/img/%3F.png")),
        ("/img/?.png", ("web", "/img/?.png")),
        ("/%2a", ("web", "/*")),
    ] {
        let (backend, seen) = reached(&proxy, "shop.example.com", target).await.unwrap();
        assert_eq!((backend.as_str(), seen.as_str()), want, "{target}");
    }
    // Ambiguous spellings are refused before any pattern is tried.
    for target in ["/api%2F..%2Fadmin", "/api/x%00", "/img/%zz.png"] {
        let answer = raw_exchange(proxy.http, &get("shop.example.com", target)).await;
        assert_eq!(answer.status, 400, "{target}: {}", answer.head);
        assert!(answer.backend().is_none(), "{target}");
    }

    // A path of 60 KiB against a pattern of 59 stars that matches it up to its last
    // piece: each request still costs one pass over the path.
    let long = format!("/long/{}", "a".repeat(60 * 1024));
    let started = Instant::now();
    for _ in 0..20 {
        let (backend, _) = reached(&proxy, "shop.example.com", &long).await.unwrap();
        assert_eq!(backend, "web");
    }
    let twenty = started.elapsed();
    eprintln!("20 requests with a 60 KiB path against a 59-star pattern: {twenty:?}");
    assert!(twenty < Duration::from_secs(10), "{twenty:?}");
    let (backend, _) = reached(&proxy, "shop.example.com", &format!("{long}z"))
        .await
        .unwrap();
    assert_eq!(
        backend, "api",
        "the many-star pattern matches when the path fits"
    );
}

/// `use-regex-path-match: "true"`: the Ingress's `ImplementationSpecific` paths are
/// expressions (after the leading `/`), searched for in the canonical path; a path
/// too long for an expression to read is refused, never given to the next rule.
#[tokio::test]
async fn regex_path_match_routes_by_expression() {
    let (api, web) = (Backend::start("api").await, Backend::start("web").await);
    let dir = TempDir::new("alb-regex");
    dir.write(
        "app.yaml",
        &format!(
            r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/use-regex-path-match: "true"
spec:
  ingressClassName: portcullis
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: "/^/api/v[0-9]+/(.+)$", pathType: ImplementationSpecific, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
{}{}"#,
            service_in("apps", "api", &api),
            service_in("apps", "web", &web),
        ),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    eventually("the shop is served", || async {
        reached(&proxy, "shop.example.com", "/x").await.is_ok()
    })
    .await;
    for (target, backend) in [("/api/v2/items", "web"), ("/other", "web")] {
        // The Prefix `/` is tried before ImplementationSpecific paths, as on ALB.
        assert_eq!(
            reached(&proxy, "shop.example.com", target).await.unwrap().0,
            backend,
            "{target}"
        );
    }
    dir.write(
        "app.yaml",
        &std::fs::read_to_string(dir.path().join("app.yaml"))
            .unwrap()
            .replace(
                "path: /, pathType: Prefix",
                "path: \"/.*\", pathType: ImplementationSpecific",
            ),
    );
    eventually("the expression comes first", || async {
        reached(&proxy, "shop.example.com", "/api/v2/items")
            .await
            .is_ok_and(|(b, _)| b == "api")
    })
    .await;
    for (target, backend) in [
        ("/api/v2/items", "api"),
        ("/%61pi/v10/x", "api"),
        ("/api/vx/items", "web"),
        ("/api/v2/", "web"),
    ] {
        assert_eq!(
            reached(&proxy, "shop.example.com", target).await.unwrap().0,
            backend,
            "{target}"
        );
    }
    let answer = raw_exchange(
        proxy.http,
        &get("shop.example.com", &format!("/api/v2/{}", "a".repeat(4096))),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.head);
    assert!(answer.body.contains("RouteMatchTooLong"), "{}", answer.body);
    assert!(answer.backend().is_none());
}

/// The gRPC example of AWS's controller documentation before `ssl-redirect` existed:
/// the `ssl-redirect` action (Go's field names in any case) on `/`, the app on a
/// longer prefix. Plain HTTP to the app's prefix is served, as ALB serves it; the rest
/// is sent to HTTPS with its path and query. On HTTPS the redirect is left off, as
/// AWS's controller leaves it off (it would loop), and the next rule serves.
#[tokio::test]
async fn the_ssl_redirect_action_of_older_manifests_upgrades_plain_http() {
    let grpc = Backend::start("grpc").await;
    let dir = TempDir::new("alb-ssl-redirect-action");
    let cert = common::tls::cert(&["grpcserver.example.com"]);
    let ingress = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    alb.ingress.kubernetes.io/actions.ssl-redirect: '{"Type": "redirect", "RedirectConfig":
      { "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}'
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/target-type: ip
  labels:
    app: grpcserver
    environment: dev
  name: grpcserver
  namespace: grpcserver
spec:
  ingressClassName: alb
  tls:
  - hosts: [grpcserver.example.com]
    secretName: grpc-tls
  rules:
  - host: grpcserver.example.com
    http:
      paths:
      - backend:
          service:
            name: ssl-redirect
            port:
              name: use-annotation
        path: /
        pathType: Prefix
      - backend:
          service:
            name: grpcserver
            port:
              number: 80
        path: /helloworld.Greeter
        pathType: Prefix
"#;
    dir.write(
        "app.yaml",
        &format!(
            "{ingress}{}{}",
            service_in("grpcserver", "grpcserver", &grpc),
            common::tls::tls_secret("grpc-tls", &cert)
                .replace("namespace: apps", "namespace: grpcserver")
        ),
    );
    let proxy = Portcullis::start(
        dir.path(),
        &[
            "--ingress-class",
            "alb",
            "--https",
            "127.0.0.1:0",
            "--no-https-redirect",
        ],
    );
    let host = "grpcserver.example.com";
    eventually("the app is served", || async {
        reached(&proxy, host, "/helloworld.Greeter/SayHello")
            .await
            .is_ok()
    })
    .await;
    for (target, location) in [
        ("/", "https://grpcserver.example.com/"),
        (
            "/a/b?x=1&y=%20",
            "https://grpcserver.example.com/a/b?x=1&y=%20",
        ),
        ("/a/../%62", "https://grpcserver.example.com/b"),
        (
            "/helloworld.Greeterx",
            "https://grpcserver.example.com/helloworld.Greeterx",
        ),
    ] {
        let answer = raw_exchange(proxy.http, &get(host, target)).await;
        assert_eq!(answer.status, 301, "{target}: {}", answer.head);
        assert!(
            answer.head.contains(&format!("location: {location}\r\n")),
            "{target}: {}",
            answer.head
        );
        assert!(answer.backend().is_none(), "{target}");
    }
    let https = proxy.https.unwrap();
    let client = common::tls::tls_client(&cert, &[host], https);
    let url = |path: &str| format!("https://{host}:{}{path}", https.port());
    let resp = client.get(url("/elsewhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404, "the redirect is left off HTTPS");
    let resp = client
        .get(url("/helloworld.Greeter/SayHello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// The actions example of AWS's controller documentation (its target groups outside
/// the cluster aside): a fixed response, a redirect elsewhere, a weighted forward to
/// two Services; an action naming a target group by ARN closes its rule.
#[tokio::test]
async fn the_actions_example_answers_redirects_and_splits() {
    let (one, two, zero) = (
        Backend::start("service-1").await,
        Backend::start("service-2").await,
        Backend::start("service-0").await,
    );
    let dir = TempDir::new("alb-actions");
    let ingress = r##"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  namespace: apps
  name: ingress
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/actions.response-503: >
      {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"503 error text"}}
    alb.ingress.kubernetes.io/actions.redirect-to-eks: >
      {"type":"redirect","redirectConfig":{"host":"aws.amazon.com","path":"/eks/","port":"443","protocol":"HTTPS","query":"k=v","statusCode":"HTTP_302"}}
    alb.ingress.kubernetes.io/actions.moved: >
      {"type":"redirect","redirectConfig":{"path":"/new/#{path}","query":"#{query}&from=#{host}","statusCode":"HTTP_301"}}
    alb.ingress.kubernetes.io/actions.forward-single-tg: >
      {"type":"forward","targetGroupARN": "arn-of-your-target-group"}
    alb.ingress.kubernetes.io/actions.forward-multiple-tg: >
      {"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"service-1","servicePort":"http","weight":20},{"serviceName":"service-2","servicePort":80,"weight":20},{"serviceName":"service-0","servicePort":80,"weight":0}],"targetGroupStickinessConfig":{"enabled":false}}}
spec:
  ingressClassName: portcullis
  rules:
    - http:
        paths:
          - {path: /503, pathType: Exact, backend: {service: {name: response-503, port: {name: use-annotation}}}}
          - {path: /eks, pathType: Exact, backend: {service: {name: redirect-to-eks, port: {name: use-annotation}}}}
          - {path: /old, pathType: Prefix, backend: {service: {name: moved, port: {name: use-annotation}}}}
          - {path: /path1, pathType: Exact, backend: {service: {name: forward-single-tg, port: {name: use-annotation}}}}
          - {path: /path3, pathType: Exact, backend: {service: {name: forward-multiple-tg, port: {name: use-annotation}}}}
"##;
    dir.write(
        "app.yaml",
        &format!(
            "{ingress}{}{}{}",
            service_in("apps", "service-1", &one),
            service_in("apps", "service-2", &two),
            service_in("apps", "service-0", &zero),
        ),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    let host = "any.example.com";
    eventually("the split is served", || async {
        reached(&proxy, host, "/path3").await.is_ok()
    })
    .await;
    // The same path in every spelling gets the fixed response; the backend never hears.
    for target in ["/503", "/%35%30%33", "/x/../503", "/503?x=1"] {
        let answer = raw_exchange(proxy.http, &get(host, target)).await;
        assert_eq!(answer.status, 503, "{target}: {}", answer.head);
        assert_eq!(answer.body, "503 error text", "{target}");
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("content-type: text/plain; charset=utf-8")
        );
    }
    let head = raw_exchange(
        proxy.http,
        format!("HEAD /503 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!((head.status, head.body.as_str()), (503, ""));
    for (target, status, location) in [
        ("/eks", 302, "https://aws.amazon.com/eks/?k=v"),
        ("/eks?x=1", 302, "https://aws.amazon.com/eks/?k=v"),
        (
            "/old/page?a=1",
            301,
            "http://any.example.com/new/old/page?a=1&from=any.example.com",
        ),
        (
            "/old/%23%7Bhost%7D",
            301,
            "http://any.example.com/new/old/%23%7Bhost%7D?&from=any.example.com",
        ),
        (
            "/old/a%20b",
            301,
            "http://any.example.com/new/old/a%20b?&from=any.example.com",
        ),
    ] {
        let answer = raw_exchange(proxy.http, &get(host, target)).await;
        assert_eq!(answer.status, status, "{target}: {}", answer.head);
        assert!(
            answer.head.contains(&format!("location: {location}\r\n")),
            "{target}: {}",
            answer.head
        );
    }
    // A CR LF smuggled into the path never reaches the Location header.
    for target in ["/old/a%0D%0ASet-Cookie:%20x=1", "/old/a%0aX:1"] {
        let answer = raw_exchange(proxy.http, &get(host, target)).await;
        assert_eq!(answer.status, 400, "{target}: {}", answer.head);
        assert!(!answer.head.to_ascii_lowercase().contains("set-cookie"));
    }
    let answer = raw_exchange(proxy.http, &get(host, "/path1")).await;
    assert_eq!(answer.status, 500, "{}", answer.head);
    assert!(answer.body.contains("AnnotationInvalid"), "{}", answer.body);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let (backend, _) = reached(&proxy, host, "/path3").await.unwrap();
        *seen.entry(backend).or_insert(0) += 1;
    }
    assert!(
        seen.len() == 2 && seen.values().all(|n| *n >= 10),
        "two Services of weight 20 share the requests, weight 0 gets none: {seen:?}"
    );
    let (_, out) = run_with_stdin(&["check", "-f", dir.path().to_str().unwrap()], "");
    assert!(
        out.contains("metadata.annotations[alb.ingress.kubernetes.io/actions.forward-single-tg]")
            && out.contains("outside the cluster"),
        "{out}"
    );
}

/// An Ingress with a login: its action rules answer only after the login, as ALB runs
/// authenticate-oidc before the action; only the move to HTTPS (`ssl-redirect`, or
/// the action that does nothing else) comes first, as ALB has no login on HTTP.
#[tokio::test]
async fn actions_on_a_guarded_ingress_answer_after_the_login() {
    let app = Backend::start("app").await;
    let dir = TempDir::new("alb-actions-guarded");
    let ingress = |extra: &str| {
        format!(
            r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/auth-type: oidc
    alb.ingress.kubernetes.io/auth-idp-oidc: '{{"issuer":"https://idp.example.com","authorizationEndpoint":"https://idp.example.com/auth","tokenEndpoint":"https://idp.example.com/token","userInfoEndpoint":"https://idp.example.com/userinfo","secretName":"oidc-client"}}'
    alb.ingress.kubernetes.io/auth-on-unauthenticated-request: deny
    alb.ingress.kubernetes.io/actions.secret: '{{"type":"fixed-response","fixedResponseConfig":{{"statusCode":"200","messageBody":"the secret"}}}}'
    alb.ingress.kubernetes.io/actions.elsewhere: '{{"type":"redirect","redirectConfig":{{"host":"internal.example.com","statusCode":"HTTP_302"}}}}'
    alb.ingress.kubernetes.io/actions.ssl-redirect: '{{"type":"redirect","redirectConfig":{{"protocol":"HTTPS","port":"443","statusCode":"HTTP_301"}}}}'
{extra}spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths:
      - {{path: /secret, pathType: Exact, backend: {{service: {{name: secret, port: {{name: use-annotation}}}}}}}}
      - {{path: /elsewhere, pathType: Exact, backend: {{service: {{name: elsewhere, port: {{name: use-annotation}}}}}}}}
      - {{path: /up/*, pathType: ImplementationSpecific, backend: {{service: {{name: ssl-redirect, port: {{name: use-annotation}}}}}}}}
      - {{path: /*, pathType: ImplementationSpecific, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: oidc-client, namespace: apps}}
stringData: {{clientID: portcullis-test, clientSecret: test-secret}}
{}"#,
            service_in("apps", "app", &app)
        )
    };
    dir.write("app.yaml", &ingress(""));
    let proxy = Portcullis::start(dir.path(), &["--trusted-proxy", "127.0.0.1"]);
    let host = "app.example.com";
    eventually("the login guards the app", || async {
        raw_exchange(proxy.http, &get(host, "/")).await.status == 401
    })
    .await;
    for target in ["/secret", "/%73ecret", "/elsewhere", "/x/../secret"] {
        let answer = raw_exchange(proxy.http, &get(host, target)).await;
        assert_eq!(answer.status, 401, "{target}: {}", answer.head);
        assert!(!answer.body.contains("the secret"), "{target}");
        assert!(
            !answer.head.to_ascii_lowercase().contains("location:"),
            "{target}: {}",
            answer.head
        );
    }
    let answer = raw_exchange(proxy.http, &get(host, "/up/x?y=1")).await;
    assert_eq!(answer.status, 301, "{}", answer.head);
    assert!(
        answer
            .head
            .contains("location: https://app.example.com/up/x?y=1\r\n"),
        "{}",
        answer.head
    );

    // `ssl-redirect: "443"`: every plain request goes to HTTPS before the login,
    // unless a trusted proxy in front says it came over HTTPS.
    dir.write(
        "app.yaml",
        &ingress("    alb.ingress.kubernetes.io/ssl-redirect: \"443\"\n"),
    );
    eventually("ssl-redirect answers", || async {
        raw_exchange(proxy.http, &get(host, "/")).await.status == 301
    })
    .await;
    for target in ["/secret", "/a?b=c"] {
        let answer = raw_exchange(proxy.http, &get(host, target)).await;
        assert_eq!(answer.status, 301, "{target}");
        assert!(
            answer
                .head
                .contains(&format!("location: https://app.example.com{target}\r\n")),
            "{}",
            answer.head
        );
    }
    let behind_tls = format!(
        "GET /secret HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(proxy.http, behind_tls.as_bytes()).await;
    assert_eq!(answer.status, 401, "{}", answer.head);
}

/// The conditions example of AWS's controller documentation, with a canary Service
/// behind a header condition added: every condition holds as on ALB, and what cannot
/// be told one way (a header or query key sent twice, an address a trusted proxy
/// does not name) is refused, never given to the next rule.
#[tokio::test]
async fn the_conditions_example_routes_by_header_method_query_and_source() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("alb-conditions");
    let ingress = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  namespace: apps
  name: ingress
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/actions.rule-path1: >
      {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"200","messageBody":"Host is www.example.com OR anno.example.com"}}
    alb.ingress.kubernetes.io/conditions.rule-path1: >
      [{"field":"host-header","hostHeaderConfig":{"values":["anno.example.com"]}}]
    alb.ingress.kubernetes.io/actions.rule-path3: >
      {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"200","messageBody":"Http header HeaderName is HeaderValue1 OR HeaderValue2"}}
    alb.ingress.kubernetes.io/conditions.rule-path3: >
      [{"field":"http-header","httpHeaderConfig":{"httpHeaderName": "HeaderName", "values":["HeaderValue1", "HeaderValue2"]}}]
    alb.ingress.kubernetes.io/actions.rule-path4: >
      {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"200","messageBody":"Http request method is GET OR HEAD"}}
    alb.ingress.kubernetes.io/conditions.rule-path4: >
      [{"field":"http-request-method","httpRequestMethodConfig":{"Values":["GET", "HEAD"]}}]
    alb.ingress.kubernetes.io/actions.rule-path5: >
      {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"200","messageBody":"Query string is paramA:valueA1 OR paramA:valueA2"}}
    alb.ingress.kubernetes.io/conditions.rule-path5: >
      [{"field":"query-string","queryStringConfig":{"values":[{"key":"paramA","value":"valueA1"},{"key":"paramA","value":"valueA2"}]}}]
    alb.ingress.kubernetes.io/actions.rule-path6: >
      {"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"200","messageBody":"Source IP is 192.168.0.0/16 OR 172.16.0.0/16"}}
    alb.ingress.kubernetes.io/conditions.rule-path6: >
      [{"field":"source-ip","sourceIpConfig":{"values":["192.168.0.0/16", "172.16.0.0/16"]}}]
    alb.ingress.kubernetes.io/conditions.canary: >
      [{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Canary","values":["always"]}}]
spec:
  ingressClassName: portcullis
  rules:
    - host: www.example.com
      http:
        paths:
          - {path: /path1, pathType: Exact, backend: {service: {name: rule-path1, port: {name: use-annotation}}}}
          - {path: /path3, pathType: Exact, backend: {service: {name: rule-path3, port: {name: use-annotation}}}}
          - {path: /path4, pathType: Exact, backend: {service: {name: rule-path4, port: {name: use-annotation}}}}
          - {path: /path5, pathType: Exact, backend: {service: {name: rule-path5, port: {name: use-annotation}}}}
          - {path: /path6, pathType: Exact, backend: {service: {name: rule-path6, port: {name: use-annotation}}}}
          - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: canary, port: {number: 80}}}}
          - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: stable, port: {number: 80}}}}
"#;
    dir.write(
        "app.yaml",
        &format!(
            "{ingress}{}{}",
            service_in("apps", "stable", &stable),
            service_in("apps", "canary", &canary)
        ),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    let behind_proxy = Portcullis::start(dir.path(), &["--trusted-proxy", "127.0.0.1"]);
    let www = "www.example.com";
    eventually("the example is served", || async {
        reached(&proxy, www, "/").await.is_ok()
    })
    .await;
    eventually("the second instance too", || async {
        reached(&behind_proxy, www, "/").await.is_ok()
    })
    .await;
    let send = |addr, method: &str, host: &str, target: &str, headers: &str| {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
        );
        async move { raw_exchange(addr, request.as_bytes()).await }
    };
    // (method, host, target, headers) and what answers: a fixed response's first word,
    // a backend's name, or a status.
    let http = proxy.http;
    for (method, host, target, headers, want) in [
        ("GET", www, "/path1", "", "Host"),
        ("GET", "anno.example.com", "/path1", "", "Host"),
        ("GET", "anno.example.com", "/", "", "404"),
        ("GET", www, "/path3", "HeaderName: HeaderValue2\r\n", "Http"),
        ("GET", www, "/path3", "headername: headervalue1\r\n", "Http"),
        (
            "GET",
            www,
            "/path3",
            "HeaderName: HeaderValue3\r\n",
            "stable",
        ),
        (
            "GET",
            www,
            "/path3",
            "HeaderName: HeaderValue1\r\nHeaderName: HeaderValue3\r\n",
            "400",
        ),
        ("GET", www, "/path4", "", "Http"),
        ("POST", www, "/path4", "Content-Length: 0\r\n", "stable"),
        ("GET", www, "/path5?paramA=valueA1", "", "Query"),
        ("GET", www, "/path5?parama=VALUEA2&other=1", "", "Query"),
        ("GET", www, "/path5?param%41=value%41%31", "", "Query"),
        ("GET", www, "/path5?paramA=valueA1&paramA=evil", "", "400"),
        ("GET", www, "/path5?paramA=nope", "", "stable"),
        ("GET", www, "/path6", "", "stable"),
        ("GET", www, "/app", "X-Canary: always\r\n", "canary"),
        ("GET", www, "/app", "X-Canary: ALWAYS\r\n", "canary"),
        ("GET", www, "/app", "X-Canary: always, never\r\n", "stable"),
        (
            "GET",
            www,
            "/app",
            "X-Canary: always\r\nX-Canary: always\r\n",
            "400",
        ),
        ("GET", www, "/app", "", "stable"),
    ] {
        let answer = send(http, method, host, target, headers).await;
        let got = match answer.backend() {
            Some(seen) => seen["backend"].as_str().unwrap().to_owned(),
            None if answer.status == 200 => {
                answer.body.split(' ').next().unwrap_or_default().to_owned()
            }
            None => answer.status.to_string(),
        };
        assert_eq!(
            got, want,
            "{method} {host}{target} {headers:?}: {}",
            answer.body
        );
    }
    // The source is the client: the peer, or behind a trusted proxy the address it
    // forwarded for; an untrusted peer's X-Forwarded-For says nothing.
    let behind = behind_proxy.http;
    for (addr, headers, want) in [
        (http, "X-Forwarded-For: 192.168.1.1\r\n", "stable"),
        (behind, "X-Forwarded-For: 192.168.1.1\r\n", "Source"),
        (
            behind,
            "X-Forwarded-For: 172.16.0.9, 203.0.113.1\r\n",
            "stable",
        ),
        (behind, "X-Forwarded-For: 10.0.0.1\r\n", "stable"),
        (behind, "X-Forwarded-For: unknown\r\n", "400"),
    ] {
        let answer = send(addr, "GET", www, "/path6", headers).await;
        let got = match answer.backend() {
            Some(seen) => seen["backend"].as_str().unwrap().to_owned(),
            None if answer.status == 200 => {
                answer.body.split(' ').next().unwrap_or_default().to_owned()
            }
            None => answer.status.to_string(),
        };
        assert_eq!(got, want, "{headers:?}: {}", answer.body);
    }
}

/// With TLS ended in front (ALB's `certificate-arn` moved to a load balancer before
/// Portcullis), the client's protocol is what a trusted proxy says it was: the
/// `ssl-redirect` action does not loop, and `listen-ports` with HTTPS only serves
/// such requests. From an untrusted peer the header says nothing.
#[tokio::test]
async fn listener_annotations_read_the_clients_protocol_behind_a_trusted_proxy() {
    let (app, api) = (Backend::start("app").await, Backend::start("api").await);
    let dir = TempDir::new("alb-listeners");
    let ingress = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/listen-ports: '[{"HTTP": 80}, {"HTTPS":443}]'
    alb.ingress.kubernetes.io/actions.ssl-redirect: '{"Type": "redirect", "RedirectConfig": { "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}'
spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths:
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: ssl-redirect, port: {name: use-annotation}}}}
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: app, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/listen-ports: '[{"HTTPS":443}]'
spec:
  ingressClassName: portcullis
  rules:
  - host: api.example.com
    http:
      paths:
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
"#;
    dir.write(
        "app.yaml",
        &format!(
            "{ingress}{}{}",
            service_in("apps", "app", &app),
            service_in("apps", "api", &api)
        ),
    );
    let trusting = Portcullis::start(dir.path(), &["--trusted-proxy", "127.0.0.1"]);
    let direct = Portcullis::start(dir.path(), &[]);
    let send = |addr, host: &str, proto: &str| {
        let header = match proto {
            "" => String::new(),
            p => format!("X-Forwarded-Proto: {p}\r\n"),
        };
        let request =
            format!("GET /page?x=1 HTTP/1.1\r\nHost: {host}\r\n{header}Connection: close\r\n\r\n");
        async move {
            let answer = raw_exchange(addr, request.as_bytes()).await;
            match answer.backend() {
                Some(seen) => seen["backend"].as_str().unwrap().to_owned(),
                None => answer.status.to_string(),
            }
        }
    };
    for proxy in [&trusting, &direct] {
        eventually("the routes are served", || async {
            send(proxy.http, "app.example.com", "").await == "301"
        })
        .await;
    }
    for (addr, host, proto, want) in [
        (trusting.http, "app.example.com", "", "301"),
        (trusting.http, "app.example.com", "http", "301"),
        (trusting.http, "app.example.com", "https", "app"),
        // Values that disagree read as plain HTTP.
        (trusting.http, "app.example.com", "http, https", "301"),
        (trusting.http, "api.example.com", "", "404"),
        (trusting.http, "api.example.com", "https", "api"),
        (direct.http, "app.example.com", "https", "301"),
        (direct.http, "api.example.com", "https", "404"),
    ] {
        assert_eq!(send(addr, host, proto).await, want, "{host} {proto:?}");
    }
}

/// The transforms examples of AWS's controller documentation: the backend receives
/// the rewritten URL and Host, made from the canonical request that was routed; no
/// match leaves it as it was; a result that is no path answers 500.
#[tokio::test]
async fn transforms_rewrite_what_the_backend_receives() {
    let (api, broken) = (Backend::start("api").await, Backend::start("broken").await);
    let dir = TempDir::new("alb-transforms");
    let ingress = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: apps
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/transforms.api: >
        [
            {
                "type": "url-rewrite",
                "urlRewriteConfig": {
                    "rewrites": [
                        {
                            "regex": "^\\/api\\/(.+)$",
                            "replace": "/$1"
                        }
                    ]
                }
            },
            {
                "type": "host-header-rewrite",
                "hostHeaderRewriteConfig": {
                    "rewrites": [
                        {
                            "regex": "^(.+)\\.example\\.com$",
                            "replace": "$1.example.org"
                        }
                    ]
                }
            }
        ]
    alb.ingress.kubernetes.io/transforms.broken: '[{"type":"url-rewrite","urlRewriteConfig":{"rewrites":[{"regex":"^/broken/(.*)$","replace":"$1"}]}}]'
spec:
  ingressClassName: portcullis
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /broken/*, pathType: ImplementationSpecific, backend: {service: {name: broken, port: {number: 80}}}}
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
"#;
    dir.write(
        "app.yaml",
        &format!(
            "{ingress}{}{}",
            service_in("apps", "api", &api),
            service_in("apps", "broken", &broken)
        ),
    );
    let proxy = Portcullis::start(dir.path(), &[]);
    let host = "shop.example.com";
    eventually("the shop is served", || async {
        reached(&proxy, host, "/").await.is_ok()
    })
    .await;
    for (target, path) in [
        ("/api/items?x=1", "/items?x=1"),
        ("/%61pi/items", "/items"),
        ("/x/../api/a%2Fb", "400"),
        ("/api/", "/api/"),
        ("/other", "/other"),
    ] {
        let answer = raw_exchange(proxy.http, &get(host, target)).await;
        let got = match answer.backend() {
            Some(seen) => {
                assert_eq!(seen["headers"]["host"], "shop.example.org", "{target}");
                seen["path"].as_str().unwrap().to_owned()
            }
            None => answer.status.to_string(),
        };
        assert_eq!(got, path, "{target}: {}", answer.body);
    }
    let answer = raw_exchange(proxy.http, &get(host, "/broken/x")).await;
    assert_eq!(answer.status, 500, "{}", answer.head);
    assert!(answer.backend().is_none());
}
