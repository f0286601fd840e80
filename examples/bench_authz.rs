//! The cost of one authorization decision (a two-rule CEL policy, both rules
//! evaluated), in isolation: what bench/authz.sh measures end to end.
//! Usage: bench_authz [ITERATIONS]

use std::collections::BTreeMap;
use std::time::Instant;

use portcullis::compile::authorization::{RequestFacts, Source, compile};
use portcullis::diagnostics::ObjectRef;
use portcullis::model::AuthorizationSpec;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let spec: AuthorizationSpec = serde_saphyr::from_str(
        r#"
defaultAction: Deny
rules:
- {name: no-contractors, when: "claims.email.endsWith('@contractor.example')", action: Deny}
- {name: verified-readers, when: "claims.email_verified == true && request.method == 'GET'", action: Allow}
"#,
    )
    .expect("a valid spec");
    let mut diags = Vec::new();
    let policy = compile(
        &spec,
        &ObjectRef::new("AuthRule", "default", "policy"),
        &mut diags,
    )
    .expect("compiles");
    let claims = serde_json::json!({"sub": "bench-user", "email": "bench-user@example.com",
        "email_verified": true, "name": "Bench User"});
    let claims = claims.as_object().expect("an object");
    let facts = RequestFacts {
        method: "GET",
        path: "/",
        host: "policy.local",
        headers: BTreeMap::new(),
        fold_case: false,
        client_cert: None,
        source_ip: None,
    };
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..n {
        allowed += u32::from(policy.decide(claims, &facts, Source::Session).allowed);
    }
    let per = started.elapsed() / n;
    println!("{n} decisions, {allowed} allowed: {per:?} each");
}
