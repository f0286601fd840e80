//! The compile benchmark: a generated cluster of 10,000 Ingresses, 10,000 Services and
//! EndpointSlices and 1,000 AuthRules (with their Secrets), compiled and installed on a
//! data plane the way `run` does after a change. Prints the median of several full
//! compiles, the install, one EndpointSlice change end to end (recompiled, and swapped
//! in without a compile as `run` does), and the resident memory
//! of the whole process.
//! Usage: bench_compile [APPS] [AUTH_RULES]   (defaults 10000, 1000)

use std::time::{Duration, Instant};

use portcullis::auth::identity::SigningKey;
use portcullis::auth::idp::IdpClient;
use portcullis::auth::login::Authenticator;
use portcullis::auth::sealed::KeyRing;
use portcullis::compile::{CompileOptions, compile};
use portcullis::observe::access_log::{AccessLog, LogFormat};
use portcullis::proxy::{DataPlane, ProxyConfig};
use portcullis::source::manifests::{add_document, parse_documents};
use portcullis::store::Objects;

/// The allocator the portcullis binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let apps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rules: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let rss_empty = rss_kib();
    let objects = cluster(apps, rules);
    let rss_objects = rss_kib();

    let options = CompileOptions::default();
    let mut times = Vec::new();
    let mut routes = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let compiled = compile(&objects, &options);
        times.push(start.elapsed());
        routes = compiled.snapshot.routes.all.len();
        assert_eq!(
            compiled.diagnostics.iter().filter(|d| d.is_error()).count(),
            0,
            "the generated cluster compiles cleanly"
        );
    }

    let dp = data_plane();
    let start = Instant::now();
    dp.install(std::sync::Arc::new(compile(&objects, &options).snapshot));
    let first_install = start.elapsed();

    // One EndpointSlice changes: compile the whole cluster again and swap it in.
    let mut changed = objects.clone();
    let mut slice = (*changed.endpoint_slices[apps / 2]).clone();
    slice.endpoints[0].addresses = vec!["10.250.0.1".into()];
    changed.endpoint_slices[apps / 2] = std::sync::Arc::new(slice);
    let mut change_times = Vec::new();
    let mut install_times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let snapshot = std::sync::Arc::new(compile(&changed, &options).snapshot);
        let compiled = Instant::now();
        dp.install(snapshot);
        install_times.push(compiled.elapsed());
        change_times.push(start.elapsed());
    }
    // The same change as `run` makes it: only EndpointSlices changed, so the targets of
    // the upstreams that follow them are swapped in place, without a compile.
    let mut endpoint_times = Vec::new();
    for k in 0..5 {
        let mut slice = (*changed.endpoint_slices[apps / 2]).clone();
        slice.endpoints[0].addresses = vec![format!("10.250.1.{k}")];
        changed.endpoint_slices[apps / 2] = std::sync::Arc::new(slice);
        let start = Instant::now();
        let swapped = dp.update_endpoints(&changed.endpoint_slices);
        endpoint_times.push(start.elapsed());
        assert_eq!(swapped, 1, "one upstream's targets changed");
    }
    let rss_serving = rss_kib();

    println!(
        "compile, {apps} Ingresses, {apps} Services and EndpointSlices, {rules} AuthRules ({routes} routes):"
    );
    println!(
        "  full compile: median {} (runs: {})",
        ms(median(&mut times)),
        list(&times)
    );
    println!(
        "  first install on the data plane (metric handles made): {}",
        ms(first_install)
    );
    println!(
        "  one EndpointSlice change, compile + install: median {} (runs: {}), of which install {}",
        ms(median(&mut change_times)),
        list(&change_times),
        ms(median(&mut install_times)),
    );
    println!(
        "  one EndpointSlice change, targets swapped without a compile: median {} (runs: {})",
        ms(median(&mut endpoint_times)),
        list(&endpoint_times),
    );
    println!(
        "  resident memory: {} MiB in all (empty process {} MiB, objects {} MiB, serving two snapshots' worth at peak {} MiB)",
        rss_serving / 1024,
        rss_empty / 1024,
        (rss_objects - rss_empty) / 1024,
        hwm_kib() / 1024,
    );
}

fn data_plane() -> std::sync::Arc<DataPlane> {
    let idp = IdpClient::new(Duration::from_secs(5)).expect("an HTTP client");
    let ring = KeyRing::new(&[vec![7; 32]]).expect("a 32-byte key");
    let key = SigningKey::generate().expect("a signing key");
    let auth = Authenticator::new(
        idp,
        ring,
        key,
        "bench".into(),
        portcullis::auth::shared::SharedState::in_process(),
    );
    let log = AccessLog::start(LogFormat::Alb, Box::new(std::io::sink()));
    DataPlane::new(ProxyConfig::default(), log, auth)
}

/// The same shape `bench/check-scale.sh` renders, read by the manifest parser.
fn cluster(apps: usize, rules: usize) -> Objects {
    let mut text = String::new();
    for i in 0..apps {
        let n = i % 100;
        text.push_str(&format!(
            "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: app{i}, namespace: ns{n}}}
spec:
  ingressClassName: portcullis
  rules:
  - host: app{i}.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: app{i}, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: app{i}, namespace: ns{n}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app{i}-1, namespace: ns{n}, labels: {{kubernetes.io/service-name: app{i}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [\"10.{}.{}.{}\"]}}]
",
            i / 65536 % 256,
            i / 256 % 256,
            i % 256
        ));
    }
    for i in 0..rules {
        let n = i % 100;
        text.push_str(&format!(
            "---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: sso{i}, namespace: ns{n}}}
spec:
  targetRefs: [{{name: app{i}}}]
  oidc: {{issuer: \"https://idp.example.com\", clientId: app{i}, clientSecretRef: {{name: idp{i}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp{i}, namespace: ns{n}}}
stringData: {{client-secret: s{i}}}
"
        ));
    }
    let file = portcullis::diagnostics::ObjectRef::new("File", "", "generated");
    let mut objects = Objects::default();
    for doc in parse_documents(&text).expect("generated YAML parses") {
        add_document(&mut objects, doc, &file);
    }
    objects
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn hwm_kib() -> u64 {
    status_kib("VmHWM:")
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn list(times: &[Duration]) -> String {
    times.iter().map(|t| ms(*t)).collect::<Vec<_>>().join(", ")
}
