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
        !out.contains("InvalidPath") && out.contains("target-type"),
        "check reads the pattern and reports only the load balancer's own annotation: {ok} {out}"
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
