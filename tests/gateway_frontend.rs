//! Gateways at addresses of their own over TLS, attacked with raw bytes: each socket
//! presents only its own listeners' certificates, asks for the client certificates
//! its `spec.tls.frontend` names, and answers 421 to a request whose host belongs to
//! another listener than the one the handshake's server name chose.

use crate::common;
use crate::mtls::{Dial, ca, client, exchange, tls_stream};

use common::tls::*;
use common::*;

fn own_range(test: u8) -> (String, [std::net::IpAddr; 2]) {
    let second = 100 + std::process::id() % 100;
    let range = format!("127.{second}.{}.0/24", 50 + test);
    let ip = |last: u8| {
        format!("127.{second}.{}.{last}", 50 + test)
            .parse()
            .unwrap()
    };
    (range, [ip(10), ip(11)])
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: portcullis.dev/gateway-controller}\n";

fn gateway(
    name: &str,
    ip: std::net::IpAddr,
    tls: &str,
    listeners: &[(&str, Option<&str>, &str)],
) -> String {
    let listeners: String = listeners
        .iter()
        .map(|(l, host, secret)| {
            let host = host.map(|h| format!(", hostname: \"{h}\"")).unwrap_or_default();
            format!("  - {{name: {l}, port: 8443, protocol: HTTPS{host}, tls: {{certificateRefs: [{{name: {secret}}}]}}}}\n")
        })
        .collect();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  gatewayClassName: portcullis\n  addresses: [{{type: IPAddress, value: \"{ip}\"}}]\n{tls}  listeners:\n{listeners}"
    )
}

fn route(name: &str, parent: &str, backend: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  parentRefs: [{parent}]\n  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
    )
}

fn get(host: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn backend_name(r: &RawResponse) -> Option<String> {
    r.backend()
        .and_then(|b| b["backend"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn each_socket_shows_its_own_certificates_and_refuses_misdirected_hosts() {
    let open = Backend::start("open").await;
    let named = Backend::start("named").await;
    let other = Backend::start("other").await;
    let (range, [ip_a, ip_b]) = own_range(1);
    let site = cert(&["example.org", "second.example.org", "*.wild.example.org"]);
    let other_site = cert(&["other.example.org"]);
    let dir = TempDir::new("gateway-misdirected");
    dir.write(
        "all.yaml",
        &format!(
            "{CLASS}{}{}{}{}{}{}{}{}{}{}{}",
            gateway(
                "a",
                ip_a,
                "",
                &[
                    ("any", None, "site"),
                    ("second", Some("second.example.org"), "site"),
                    ("wild", Some("*.wild.example.org"), "site")
                ]
            ),
            gateway(
                "b",
                ip_b,
                "",
                &[("other", Some("other.example.org"), "other-site")]
            ),
            route("to-open", "{name: a, sectionName: any}", "open"),
            route("to-named", "{name: a, sectionName: second}", "named"),
            route("to-wild", "{name: a, sectionName: wild}", "named"),
            route("to-other", "{name: b}", "other"),
            tls_secret("site", &site),
            tls_secret("other-site", &other_site),
            service_yaml("open", &[open.addr]),
            service_yaml("named", &[named.addr]),
            service_yaml("other", &[other.addr]),
        ),
    );
    let _p = Portcullis::start(dir.path(), &["--gateway-addresses", &range]);
    let a = std::net::SocketAddr::new(ip_a, 8443);
    let b = std::net::SocketAddr::new(ip_b, 8443);
    eventually("both Gateways serve TLS", || async {
        exchange(a, &site, Some("example.org"), None, &get("example.org"))
            .await
            .status
            == 200
            && exchange(
                b,
                &other_site,
                Some("other.example.org"),
                None,
                &get("other.example.org"),
            )
            .await
            .status
                == 200
    })
    .await;
    // A socket never presents another Gateway's certificate: the handshake fails.
    let r = exchange(
        a,
        &other_site,
        Some("other.example.org"),
        None,
        &get("other.example.org"),
    )
    .await;
    assert_eq!(r.status, 0, "a presented b's certificate: {}", r.head);
    let r = exchange(
        b,
        &site,
        Some("second.example.org"),
        None,
        &get("second.example.org"),
    )
    .await;
    assert_eq!(r.status, 0, "b presented a's certificate: {}", r.head);

    // The host must belong to the listener the server name chose, in every spelling.
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        ("example.org", "example.org", 200, Some("open")),
        ("example.org", "unknown.example", 200, Some("open")),
        (
            "second.example.org",
            "second.example.org",
            200,
            Some("named"),
        ),
        (
            "second.example.org",
            "SECOND.Example.ORG.",
            200,
            Some("named"),
        ),
        (
            "second.example.org",
            "second.example.org:8443",
            200,
            Some("named"),
        ),
        (
            "x.wild.example.org",
            "y.z.wild.example.org",
            200,
            Some("named"),
        ),
        ("example.org", "second.example.org", 421, None),
        ("example.org", "Second.Example.Org", 421, None),
        ("example.org", "second.example.org.", 421, None),
        ("example.org", "second.example.org:443", 421, None),
        ("example.org", "second.example.org.:8443", 421, None),
        ("example.org", "x.wild.example.org", 421, None),
        ("second.example.org", "example.org", 421, None),
        ("second.example.org", "unknown.example", 421, None),
        ("x.wild.example.org", "second.example.org", 421, None),
    ];
    for (sni, host, status, backend) in cases {
        let r = exchange(a, &site, Some(sni), None, &get(host)).await;
        assert_eq!(
            (r.status, backend_name(&r).as_deref()),
            (*status, *backend),
            "SNI {sni}, Host {host}"
        );
    }
    // The request target's authority counts as the host.
    let absolute = "GET https://second.example.org/ HTTP/1.1\r\nHost: second.example.org\r\nConnection: close\r\n\r\n";
    let r = exchange(a, &site, Some("example.org"), None, absolute).await;
    assert_eq!((r.status, backend_name(&r)), (421, None));

    // h2: the `:authority` of another listener on a connection made for this one.
    let dial = Dial {
        sni: Some("example.org"),
        cert: None,
        alpn: b"h2",
    };
    let stream = tls_stream(a, &site, &dial).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let authorities = [
        ("example.org", 200),
        ("second.example.org", 421),
        ("SECOND.EXAMPLE.ORG.", 421),
        ("second.example.org:8443", 421),
        ("x.wild.example.org:443", 421),
    ];
    for (authority, status) in authorities {
        let req = http::Request::get(format!("https://{authority}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), status, ":authority {authority}");
    }
}

/// The Gateway admits ListenerSets of its namespace.
const ADMITS_SETS: &str = "  allowedListeners:\n    namespaces:\n      from: Same\n";

/// A ListenerSet of `strict` opening a port of its own.
const SET_ON_9443: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {name: more, namespace: apps}\nspec:\n  parentRef: {name: strict}\n  listeners:\n  - {name: extra, port: 9443, protocol: HTTPS, hostname: app.example.org, tls: {certificateRefs: [{name: site}]}}\n";

#[tokio::test]
async fn a_port_asks_for_the_client_certificates_its_gateway_names() {
    let backend = Backend::start("app").await;
    let (range, [ip_a, ip_b]) = own_range(2);
    let site = cert(&["app.example.org"]);
    let trusted = ca("Gateway clients");
    let stranger = ca("Somebody else");
    let member = client(&trusted, "member", 1, false);
    let outsider = client(&stranger, "outsider", 2, false);
    let ca_map = |name: &str, pem: &str| {
        let pem: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: apps}}\ndata:\n  ca.crt: |\n{pem}"
        )
    };
    let strict = "  tls:\n    frontend:\n      default:\n        validation:\n          caCertificateRefs: [{group: \"\", kind: ConfigMap, name: client-ca}]\n";
    let fallback = "  tls:\n    frontend:\n      default:\n        validation:\n          mode: AllowInsecureFallback\n          caCertificateRefs: [{group: \"\", kind: ConfigMap, name: client-ca}]\n";
    let dir = TempDir::new("gateway-frontend");
    dir.write(
        "all.yaml",
        &format!(
            "{CLASS}{}{}{}{}{}{}{}{}{}",
            gateway(
                "strict",
                ip_a,
                &format!("{strict}{ADMITS_SETS}"),
                &[("https", None, "site")]
            ),
            gateway("lenient", ip_b, fallback, &[("https", None, "site")]),
            route("to-strict", "{name: strict}", "app"),
            SET_ON_9443,
            route(
                "to-set",
                "{kind: ListenerSet, group: gateway.networking.k8s.io, name: more}",
                "app"
            ),
            route("to-lenient", "{name: lenient}", "app"),
            tls_secret("site", &site),
            ca_map("client-ca", &trusted.pem),
            service_yaml("app", &[backend.addr]),
        ),
    );
    let _p = Portcullis::start(dir.path(), &["--gateway-addresses", &range]);
    let strict = std::net::SocketAddr::new(ip_a, 8443);
    let lenient = std::net::SocketAddr::new(ip_b, 8443);
    let host = "app.example.org";
    eventually("both Gateways serve TLS", || async {
        exchange(strict, &site, Some(host), Some(&member), &get(host))
            .await
            .status
            == 200
            && exchange(lenient, &site, Some(host), None, &get(host))
                .await
                .status
                == 200
    })
    .await;
    // AllowValidOnly: no certificate, or one of another CA, never gets a connection.
    for (who, cert) in [("none", None), ("outsider", Some(&outsider))] {
        let r = exchange(strict, &site, Some(host), cert, &get(host)).await;
        assert_eq!((r.status, r.backend().is_some()), (0, false), "{who}");
    }
    // A port only a ListenerSet of the Gateway opens asks for them all the same.
    let set_port = std::net::SocketAddr::new(ip_a, 9443);
    eventually("the ListenerSet's port serves TLS", || async {
        exchange(set_port, &site, Some(host), Some(&member), &get(host))
            .await
            .status
            == 200
    })
    .await;
    for (who, cert) in [("none", None), ("outsider", Some(&outsider))] {
        let r = exchange(set_port, &site, Some(host), cert, &get(host)).await;
        assert_eq!(
            (r.status, r.backend().is_some()),
            (0, false),
            "set port, {who}"
        );
    }
    // A verified certificate reaches the backend with ALB's verified-certificate headers.
    let r = exchange(strict, &site, Some(host), Some(&member), &get(host)).await;
    let seen = r.backend().expect("the backend answered");
    let headers = seen["headerList"].to_string().to_ascii_lowercase();
    assert!(
        headers.contains("x-amzn-mtls-clientcert-subject"),
        "{headers}"
    );
    // A client's own X-Amzn-Mtls-* header never reaches the backend as its identity.
    let forged = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nX-Amzn-Mtls-Clientcert-Subject: CN=admin\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(strict, &site, Some(host), Some(&member), &forged).await;
    let seen = r.backend().expect("the backend answered")["headerList"].to_string();
    assert!(!seen.contains("CN=admin"), "{seen}");

    // AllowInsecureFallback: any client is served, and no certificate is believed:
    // what it presented is passed on unverified, never as the verified headers.
    for (who, cert) in [
        ("none", None),
        ("outsider", Some(&outsider)),
        ("member", Some(&member)),
    ] {
        let r = exchange(lenient, &site, Some(host), cert, &get(host)).await;
        let seen = r
            .backend()
            .unwrap_or_else(|| panic!("{who}: {} {}", r.status, r.body));
        let headers = seen["headerList"].to_string().to_ascii_lowercase();
        assert!(
            !headers.contains("x-amzn-mtls-clientcert-subject"),
            "{who}: {headers}"
        );
        assert_eq!(
            headers.contains("x-amzn-mtls-clientcert\""),
            cert.is_some(),
            "{who}: {headers}"
        );
    }
}
