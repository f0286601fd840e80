//! Mints a session cookie for the benchmark's authenticated rung, sealed with the
//! session key Portcullis is started with, so the rung measures the session check and
//! the identity headers without a login per connection.
//! With COUNT, prints COUNT distinct sessions (each its own user and access token),
//! one Cookie header value a line, for the session-rotation rung.
//! Usage: bench_session KEYS_FILE NAMESPACE/NAME HOST [COUNT]  (prints Cookie header values)

use base64::Engine as _;
use portcullis::auth::login::binding_for;
use portcullis::auth::sealed::KeyRing;
use portcullis::auth::session::{self, Session};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (keys, rule, host, count) = match args.as_slice() {
        [k, r, h] => (k, r, h, 1),
        [k, r, h, c] => (k, r, h, c.parse().expect("COUNT is a number")),
        _ => panic!("usage: bench_session KEYS_FILE NAMESPACE/NAME HOST [COUNT]"),
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
    let binding = binding_for(namespace, name, host);
    let mut out = String::new();
    for i in 0..count {
        // The first session is the one the single-session rungs have always used.
        let user = if i == 0 {
            "bench-user".to_owned()
        } else {
            format!("bench-user-{i}")
        };
        let claims = serde_json::json!({
            "sub": user,
            "email": format!("{user}@example.com"),
            "email_verified": true,
            "name": "Bench User",
        });
        let mut access_token = format!("{i:08}");
        access_token.push_str(&"x".repeat(800 - access_token.len()));
        let session = Session {
            sub: user.clone(),
            userinfo: claims.as_object().cloned().unwrap_or_default(),
            claims: Default::default(),
            access_token,
            refresh_token: None,
            id_token: None,
            flow_id: None,
            access_expires_at: now + 86_400,
            expires_at: now + 86_400,
            sid: None,
            logged_in_at: now,
            record: None,
            identity: Default::default(),
        };
        let shards = session::seal(&ring, &binding, &session).expect("sealing the session");
        let cookie: Vec<String> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| format!("AWSELBAuthSessionCookie-{i}={s}"))
            .collect();
        out.push_str(&cookie.join("; "));
        out.push('\n');
    }
    print!("{out}");
}
