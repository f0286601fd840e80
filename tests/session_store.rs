//! `spec.session.store: redis` against a real `redis-server` and the certified
//! provider: a login too large for cookies fits, a logout on one replica (logout path,
//! back-channel, front-channel) ends the session on the other, a refresh rewrites the
//! record, a Redis outage refuses sessions with a reason of its own and they come back
//! with it, and a session id cookie that Portcullis did not seal (or a record moved
//! under another id) opens nothing.

use crate::common;
use crate::replicas::{get_with, replica_args, session_cookie, shared_keys};

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::app::*;
use common::redis::RedisServer;
use common::*;

/// The AuthRule of the login tests, keeping its sessions in Redis for an hour.
fn in_redis(rule: &str) -> String {
    rule.replace(
        "  oidc:",
        "  session: {store: redis, timeout: 3600}\n  oidc:",
    )
}

/// How many session records Redis holds.
fn records(redis: &RedisServer) -> usize {
    let reply = redis.command(r#"EVAL "return #redis.call('keys', 'portcullis:session:*')" 0"#);
    reply.trim_start_matches(':').parse().unwrap()
}

/// The sessions' cookie value (`NAME-0`) out of a `Cookie` header.
fn session_value(cookie: &str) -> String {
    cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("AWSELBAuthSessionCookie-0="))
        .unwrap()
        .to_owned()
}

/// `GET /` with exactly this `Cookie` header, over a raw socket.
async fn raw_get(proxy: &Portcullis, cookie: &str) -> RawResponse {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nAccept: text/html\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    raw_exchange(proxy.http, request.as_bytes()).await
}

#[tokio::test]
async fn a_40_kb_claim_set_logs_in_with_store_redis_and_is_a_500_with_store_cookie() {
    let redis = RedisServer::start();
    let url = redis.url();
    let s = setup_rule(
        &[("IDP_FAULT", "userinfo-40k")],
        &in_redis(AUTH_RULE),
        &["--redis-url", &url],
    )
    .await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "grace").await;
    let seen = seen_by_backend(&b, &format!("{}/", s.origin)).await;
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "grace");
    let data = seen["headers"]["x-amzn-oidc-data"].as_str().unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data.split('.').nth(1).unwrap().trim_end_matches('='))
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["groups"].as_array().unwrap().len(), 1700);
    assert!(payload.len() > 40_000, "{} bytes of claims", payload.len());
    let cookie = seen["headers"]["cookie"].as_str().unwrap();
    assert!(
        cookie.len() < 200 && !cookie.contains("AWSELBAuthSessionCookie-1"),
        "the cookie carries the id only: {cookie}"
    );
    assert_eq!(records(&redis), 1);
    let ttl = redis.command(
        r#"EVAL "return redis.call('ttl', redis.call('keys', 'portcullis:session:*')[1])" 0"#,
    );
    let ttl: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "expires with the session: {ttl}"
    );

    let metrics = s.proxy.metrics().await;
    let sealed = metric_value(
        &metrics,
        r#"portcullis_session_sealed_bytes_sum{store="redis"}"#,
    );
    assert!(sealed > 40_000.0, "{metrics}");
    let flows: serde_json::Value = reqwest::get(format!("http://{}/flows", s.proxy.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut timelines = String::new();
    for flow in flows.as_array().unwrap() {
        let url = format!(
            "http://{}/flows/{}",
            s.proxy.admin,
            flow["id"].as_str().unwrap()
        );
        timelines.push_str(&reqwest::get(url).await.unwrap().text().await.unwrap());
    }
    assert!(
        timelines.contains(" bytes in Redis; the cookie carries a "),
        "{timelines}"
    );

    // The same claims in cookies: ALB's limit, ALB's 500.
    let cookies = setup_with(&[("IDP_FAULT", "userinfo-40k")]).await;
    let b = browser(&cookies.proxy);
    let callback = callback_url(&b, &cookies.origin, "/", "grace").await;
    let refused = b.get(&callback).send().await.unwrap();
    assert_eq!(refused.status(), 500);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("AuthUserinfoResponseSizeExceeded")
    );
}

#[tokio::test]
async fn a_logout_on_replica_a_ends_the_session_on_replica_b() {
    let redis = RedisServer::start();
    let keys = shared_keys();
    let url = redis.url();
    let args = replica_args(&keys, &url);
    let s = setup_rule(
        &[(
            "IDP_BACKCHANNEL_URI",
            "http://127.0.0.1:PORT/oauth2/backchannel-logout",
        )],
        &in_redis(AUTH_RULE),
        &args,
    )
    .await;
    let b_replica = Portcullis::start(s.manifests.path(), &args);

    // The logout path on A.
    let heidi = browser(&s.proxy);
    log_in_at(&heidi, &s.origin, "heidi").await;
    let cookie = session_cookie(&heidi, &s.origin).await;
    let on_b = get_with(&b_replica, &cookie).await;
    assert_eq!(on_b.status(), 200, "replica B reads A's session from Redis");
    assert_eq!(records(&redis), 1);
    let logout = heidi
        .get(format!("{}/oauth2/logout", s.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 302);
    assert_eq!(records(&redis), 0, "the logout deleted the record");
    let after = get_with(&b_replica, &cookie).await;
    assert_eq!(after.status(), 302, "at once on B, with the old cookie");
    assert!(
        after.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&s.idp.issuer)
    );

    // The provider's back-channel logout, posted to A.
    let ivan = browser(&s.proxy);
    log_in_at(&ivan, &s.origin, "ivan").await;
    let cookie = session_cookie(&ivan, &s.origin).await;
    assert_eq!(get_with(&b_replica, &cookie).await.status(), 200);
    let end = format!(
        "{}/session/end?client_id=portcullis-test&post_logout_redirect_uri={}/",
        s.idp.issuer, s.origin
    );
    common::idp::log_out(&ivan, &end, &format!("{}/", s.origin)).await;
    eventually("the back-channel logout deleted the record", || async {
        records(&redis) == 0
    })
    .await;
    assert_eq!(get_with(&b_replica, &cookie).await.status(), 302);

    // A front-channel logout that names no sid ends the browser's own session.
    let judy = browser(&s.proxy);
    log_in_at(&judy, &s.origin, "judy").await;
    let cookie = session_cookie(&judy, &s.origin).await;
    assert_eq!(get_with(&b_replica, &cookie).await.status(), 200);
    let front = judy
        .get(format!("{}/oauth2/frontchannel-logout", s.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(front.status(), 200);
    assert_eq!(
        records(&redis),
        0,
        "the front-channel logout deleted the record"
    );
    assert_eq!(get_with(&b_replica, &cookie).await.status(), 302);
}

#[tokio::test]
async fn a_redis_outage_refuses_sessions_with_its_own_reason_and_they_return_with_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    // Even where revocations may be served stale, a session kept in Redis is not.
    let args = [
        "--redis-url",
        &url,
        "--redis-timeout-ms",
        "300",
        "--redis-unavailable",
        "allow",
    ];
    let s = setup_rule(&[], &in_redis(AUTH_RULE), &args).await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "judy").await;
    let cookie = session_cookie(&b, &s.origin).await;

    redis.pause();
    let started = Instant::now();
    let refused = raw_get(&s.proxy, &cookie).await;
    assert!(started.elapsed() < Duration::from_secs(2), "no hang");
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(refused.backend().is_none());
    assert!(
        refused.body.contains("AuthSessionStoreUnavailable"),
        "{}",
        refused.body
    );
    assert!(
        !refused.head.to_ascii_lowercase().contains("set-cookie"),
        "the session is kept: {}",
        refused.head
    );
    // A login cannot finish without a place for its session.
    let newcomer = browser(&s.proxy);
    let callback = callback_url(&newcomer, &s.origin, "/", "ken").await;
    let login = newcomer.get(&callback).send().await.unwrap();
    assert_eq!(login.status(), 503);
    assert!(
        login
            .text()
            .await
            .unwrap()
            .contains("AuthSessionStoreUnavailable")
    );
    let log = s
        .proxy
        .log_line(|l| l.contains("AuthSessionStoreUnavailable"))
        .await;
    assert_eq!(alb_record(&log)["elb_status_code"], "503");

    redis.resume();
    eventually("the same session passes once Redis answers", || async {
        raw_get(&s.proxy, &cookie).await.status == 200
    })
    .await;
    let seen = raw_get(&s.proxy, &cookie).await.backend().unwrap();
    assert_eq!(seen["headers"]["x-amzn-oidc-identity"], "judy");
}

#[tokio::test]
async fn a_forged_or_altered_session_id_cookie_is_refused() {
    let redis = RedisServer::start();
    let url = redis.url();
    let s = setup_rule(&[], &in_redis(AUTH_RULE), &["--redis-url", &url]).await;
    let mallory = browser(&s.proxy);
    log_in_at(&mallory, &s.origin, "mallory").await;
    let victim = browser(&s.proxy);
    log_in_at(&victim, &s.origin, "victim").await;
    let own = session_cookie(&mallory, &s.origin).await;
    let theirs = session_cookie(&victim, &s.origin).await;
    let ok = raw_get(&s.proxy, &own).await;
    assert_eq!(
        ok.backend().unwrap()["headers"]["x-amzn-oidc-identity"],
        "mallory"
    );
    assert_eq!(records(&redis), 2);

    let value = session_value(&own);
    let names = record_names(&redis);
    let mut forged: Vec<(String, String)> = Vec::new();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&value)
        .unwrap();
    for i in [0, 1, 2, 13, raw.len() / 2, raw.len() - 1] {
        let mut bytes = raw.clone();
        bytes[i] ^= 1;
        let altered = base64::engine::general_purpose::STANDARD.encode(bytes);
        forged.push((format!("byte {i} flipped"), altered));
    }
    let mut random = vec![0u8; raw.len()];
    aws_lc_rs::rand::fill(&mut random).unwrap();
    random[0] = raw[0];
    random[1] = raw[1];
    forged.push((
        "random bytes with our version and key id".into(),
        base64::engine::general_purpose::STANDARD.encode(random),
    ));
    for name in &names {
        forged.push(("a record's name from a Redis dump".into(), name.clone()));
    }
    forged.push(("the id sealed twice over".into(), format!("{value}{value}")));
    for (what, value) in &forged {
        let r = raw_get(&s.proxy, &format!("AWSELBAuthSessionCookie-0={value}")).await;
        assert_eq!(r.status, 302, "{what}: {}", r.head);
        assert!(r.backend().is_none(), "{what}");
    }
    let two_shards = format!("{own}; AWSELBAuthSessionCookie-1={value}");
    assert!(
        raw_get(&s.proxy, &two_shards).await.backend().is_none(),
        "a second shard"
    );

    // Someone who can write to Redis copies their own record over the victim's.
    let (from, to) = (&names[0], &names[1]);
    let copied = redis.command(&format!(
        "COPY portcullis:session:{from} portcullis:session:{to} REPLACE"
    ));
    assert_eq!(copied, ":1");
    let mut passed = Vec::new();
    for (cookie, user) in [(&own, "mallory"), (&theirs, "victim")] {
        let r = raw_get(&s.proxy, cookie).await;
        match r.backend() {
            Some(seen) => {
                assert_eq!(
                    seen["headers"]["x-amzn-oidc-identity"], user,
                    "never the other's"
                );
                passed.push(user);
            }
            None => assert_eq!(r.status, 302, "{}", r.head),
        }
    }
    assert_eq!(
        passed.len(),
        1,
        "the record moved under another id opens nothing"
    );
    let unauthenticated = records(&redis);
    for _ in 0..20 {
        let _ = raw_get(&s.proxy, "AWSELBAuthSessionCookie-0=AQ").await;
    }
    assert_eq!(
        records(&redis),
        unauthenticated,
        "no request without a login writes"
    );
}

/// The names of the session records in Redis (the hex after the prefix).
fn record_names(redis: &RedisServer) -> Vec<String> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.write_all(b"KEYS portcullis:session:*\r\n").unwrap();
    let mut reader = std::io::BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let count: usize = line.trim().trim_start_matches('*').parse().unwrap();
    (0..count)
        .map(|_| {
            let (mut len, mut key) = (String::new(), String::new());
            reader.read_line(&mut len).unwrap();
            reader.read_line(&mut key).unwrap();
            key.trim()
                .trim_start_matches("portcullis:session:")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_refresh_rewrites_the_record_and_keeps_the_cookie() {
    let redis = RedisServer::start();
    let url = redis.url();
    let rule = in_redis(AUTH_RULE).replace(
        "scope: openid email profile",
        "scope: openid email profile offline_access\n    authenticationRequestExtraParams: {prompt: consent}",
    );
    let s = setup_rule(
        &[("IDP_ACCESS_TOKEN_TTL", "2")],
        &rule,
        &["--redis-url", &url],
    )
    .await;
    let b = browser(&s.proxy);
    log_in_at(&b, &s.origin, "dave").await;
    let cookie = session_cookie(&b, &s.origin).await;
    let first = raw_get(&s.proxy, &cookie).await.backend().unwrap();
    let token = first["headers"]["x-amzn-oidc-accesstoken"].clone();
    let name = record_names(&redis).pop().unwrap();
    assert_eq!(
        redis.command(&format!("COPY portcullis:session:{name} before-refresh")),
        ":1"
    );

    // The same cookie, until its access token has expired and been renewed.
    let refreshed = std::cell::RefCell::new(None);
    eventually("the session is refreshed", || async {
        let r = raw_get(&s.proxy, &cookie).await;
        let renewed = r
            .backend()
            .is_some_and(|seen| seen["headers"]["x-amzn-oidc-accesstoken"] != token);
        if renewed {
            *refreshed.borrow_mut() = Some(r);
        }
        renewed
    })
    .await;
    let refreshed = refreshed.into_inner().unwrap();
    assert!(
        !refreshed.head.to_ascii_lowercase().contains("set-cookie"),
        "the cookie names the record still: {}",
        refreshed.head
    );
    let same = redis.command(&format!(
        r#"EVAL "if redis.call('get', KEYS[1]) == redis.call('get', KEYS[2]) then return 1 end return 0" 2 portcullis:session:{name} before-refresh"#
    ));
    assert_eq!(same, ":0", "the record holds the new tokens");
    assert_eq!(record_names(&redis), vec![name.clone()]);
    let ttl = redis.command(&format!("TTL portcullis:session:{name}"));
    let ttl: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "the session's end stays: {ttl}"
    );
    let metrics = s.proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"portcullis_auth_refreshes_total{result="success",rule="apps/sso"}"#
        ),
        1.0
    );
}
