//! Tools built for ALB's access logs read Portcullis's: every kind of line the proxy
//! writes goes through `aws-log-parser` (PyPI, installed by scripts/test.sh), which
//! knows only ALB's `error_reason` codes.

use crate::common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;

fn read_with_aws_log_parser(lines: &[String]) -> Vec<serde_json::Value> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/venv/bin/python");
    assert!(
        std::path::Path::new(python).exists(),
        "run scripts/test.sh (it installs aws-log-parser into .cache/venv)"
    );
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/read_alb_log.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn aws_log_parser_reads_every_kind_of_line() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("alb-logs");
    let dead = std::net::SocketAddr::new("127.0.0.3".parse().unwrap(), backend.addr.port());
    dir.write(
        "all.yaml",
        &[
            ingress_yaml("web", &[("app.test", "/", "svc"), ("app.test", "/down", "none"), ("app.test", "/dead", "dead")], ""),
            service_yaml("svc", &[backend.addr]),
            service_yaml("dead", &[dead]),
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: sso, namespace: apps}\nspec:\n  targetRefs: [{name: web}]\n  paths: [\"/private*\"]\n  oidc: {issuer: \"http://127.0.0.1:9\", clientId: app, clientSecretRef: {name: idp}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n".into(),
        ]
        .concat(),
    );
    let p = Portcullis::start(dir.path(), &[]);
    let requests: &[&[u8]] = &[
        // forwarded
        b"GET /ok?q=1 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: Mozilla/5.0 (X11; \"quoted\")\r\nConnection: close\r\n\r\n",
        // no route, no backend, dead backend
        b"GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        b"GET /down HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET /dead HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        // a script without a session, a browser whose provider is unreachable
        b"GET /private/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET /private/x HTTP/1.1\r\nHost: app.test\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
        // a callback without its flow cookie (ALB's own reason), and one with secrets
        b"GET /oauth2/idpresponse?code=c&state=s HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        // refused before routing
        b"GET /a%2fb HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ];
    for req in requests {
        raw_exchange(p.http, req).await;
    }
    // h2 and a WebSocket upgrade have types of their own.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("app.test", p.http)
        .build()
        .unwrap();
    h2.get(format!("http://app.test:{}/h2", p.http.port()))
        .send()
        .await
        .unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut ws = tokio::net::TcpStream::connect(p.http).await.unwrap();
        ws.write_all(b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        ws.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
    }
    let expected = requests.len() + 2;
    eventually("every request is logged", || async {
        p.access_log.lock().unwrap().len() >= expected
    })
    .await;
    let lines = p.access_log.lock().unwrap().clone();
    let parsed = read_with_aws_log_parser(&lines);
    assert_eq!(parsed.len(), lines.len());
    for (line, entry) in lines.iter().zip(&parsed) {
        assert!(entry.get("error").is_none(), "{entry}\n{line}");
        let ours = alb_record(line);
        assert_eq!(
            entry["status"].to_string(),
            ours["elb_status_code"],
            "{line}"
        );
        assert_eq!(entry["trace_id"], ours["trace_id"], "{line}");
        let reason = entry["error_reason"].as_str().unwrap_or("-");
        assert_eq!(reason, ours["error_reason"], "{line}");
    }
    let types: std::collections::BTreeSet<&str> =
        parsed.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        types.contains("h2") && types.contains("ws") && types.contains("http"),
        "{types:?}"
    );
    let reasons: Vec<String> = lines
        .iter()
        .map(|l| alb_record(l)["portcullis_reason"].clone())
        .collect();
    for ours in [
        "NoMatchingRoute",
        "BackendUnavailable",
        "TargetConnectionError",
        "AuthRequired",
        "AuthIdpDiscoveryFailed",
        "AuthMissingAWSALBAuthNonce",
        "AmbiguousRequestPath",
        "AmbiguousHost",
        "MissingHostHeader",
    ] {
        assert!(
            reasons.iter().any(|r| r == ours),
            "no line with {ours}: {reasons:?}"
        );
    }
    assert!(
        parsed
            .iter()
            .any(|e| e["error_reason"] == "AuthMissingAWSALBAuthNonce"),
        "ALB's own codes stay in error_reason"
    );
}
