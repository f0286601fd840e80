//! Mints a session cookie for the benchmark's authenticated rung, sealed with the
//! session key Portcullis is started with, so the rung measures the session check and
//! the identity headers without a login per connection.
//! Usage: bench_session KEYS_FILE NAMESPACE/NAME HOST  (prints a Cookie header value)

use base64::Engine as _;
use portcullis::auth::login::binding_for;
use portcullis::auth::sealed::KeyRing;
use portcullis::auth::session::{self, Session};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [keys, rule, host] = args.as_slice() else {
        panic!("usage: bench_session KEYS_FILE NAMESPACE/NAME HOST");
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(
            std::fs::read_to_string(keys)
                .expect("reading the keys file")
                .trim(),
        )
        .expect("a base64 key");
    let ring = KeyRing::new(&[key]).expect("a 32-byte key");
    let (namespace, name) = rule.split_once('/').expect("NAMESPACE/NAME");
    let now = jiff::Timestamp::now().as_second();
    let claims = serde_json::json!({
        "sub": "bench-user",
        "email": "bench-user@example.com",
        "email_verified": true,
        "name": "Bench User",
    });
    let session = Session {
        sub: "bench-user".into(),
        claims: claims.as_object().cloned().unwrap_or_default(),
        access_token: "x".repeat(800),
        refresh_token: None,
        id_token: None,
        flow_id: None,
        access_expires_at: now + 86_400,
        expires_at: now + 86_400,
        sid: None,
        logged_in_at: now,
    };
    let shards = session::seal(&ring, &binding_for(namespace, name, host), &session)
        .expect("sealing the session");
    let cookie: Vec<String> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| format!("AWSELBAuthSessionCookie-{i}={s}"))
        .collect();
    println!("{}", cookie.join("; "));
}
