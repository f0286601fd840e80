//! The commands that do not serve: `crd`, `check`, `diagnose` and `explain`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use kube::CustomResourceExt as _;
use portcullis::auth::idp::IdpClient;
use portcullis::compile::{CompileOptions, compile};
use portcullis::model::AuthRule;
use portcullis::source::cluster::ClusterSource;
use portcullis::source::manifests::ManifestSource;

use crate::cli::{CheckArgs, CheckOutput, DiagnoseArgs, ExplainCommand};

/// The public JWKS of the private key in `path`, pretty-printed.
pub fn client_jwks(path: &std::path::Path) -> anyhow::Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let key =
        portcullis::auth::client_assertion::ClientKey::from_pem(&pem, None).with_context(|| {
            format!(
                "{} is not a key private_key_jwt can sign with",
                path.display()
            )
        })?;
    Ok(format!("{:#}\n", key.jwks()))
}

pub fn crd_yaml() -> anyhow::Result<String> {
    let crd = serde_json::to_value(AuthRule::crd())?;
    Ok(serde_saphyr::to_string(&crd)?)
}

/// docs/reference/authrule.md: the CRD's fields as a Markdown table.
pub fn crd_markdown() -> anyhow::Result<String> {
    let crd = serde_json::to_value(AuthRule::crd())?;
    Ok(portcullis::model::reference::crd_markdown(&crd))
}

/// Exit codes of `check`: problems of each severity tell apart.
const CHECK_ERRORS: u8 = 1;
const CHECK_WARNINGS: u8 = 3;

pub fn check(args: &CheckArgs) -> ExitCode {
    let objects = ManifestSource::new(args.manifests.files.clone()).read_once();
    let options = CompileOptions {
        redis: args.redis_url.is_some(),
        ..args.manifests.class.compile_options()
    };
    let compiled = compile(&objects, &options);
    let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = compiled.diagnostics.len() - errors;
    let routes = compiled.snapshot.routes.all.len();
    let rules = compiled.snapshot.auth_rules.len();
    let certificates = portcullis::compile::summary(&compiled.snapshot)["certificates"];
    match args.output {
        CheckOutput::Text => {
            for d in &compiled.diagnostics {
                println!("{d}");
            }
            println!(
                "{routes} routes, {rules} AuthRules, {certificates} certificates; {errors} errors, {warnings} warnings"
            );
        }
        CheckOutput::Json => {
            let problems: Vec<serde_json::Value> = compiled
                .diagnostics
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "severity": if d.is_error() { "error" } else { "warning" },
                        "kind": d.object.kind, "namespace": d.object.namespace, "name": d.object.name,
                        "field": d.field, "reason": d.reason, "message": d.message, "fix": d.fix,
                    })
                })
                .collect();
            let report = serde_json::json!({
                "problems": problems,
                "summary": {"routes": routes, "authRules": rules, "certificates": certificates, "errors": errors, "warnings": warnings},
            });
            println!("{report}");
        }
    }
    match (errors, warnings) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(CHECK_WARNINGS),
        _ => ExitCode::from(CHECK_ERRORS),
    }
}

pub async fn diagnose(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    use portcullis::provider_checks::{Outcome, Ports, diagnose, redirect_uris, rules_in};
    let objects = if args.files.is_empty() {
        let client = kube::Client::try_default()
            .await
            .context("no -f given, and no cluster to read (in-cluster config or KUBECONFIG)")?;
        let gateway_api = portcullis::source::cluster::gateway_api_installed(&client).await;
        let mut source = ClusterSource::start(client.clone(), gateway_api);
        if gateway_api && portcullis::source::cluster::served(&client, "backendtlspolicies").await {
            source.watch_backend_tls_policies(client);
        }
        tokio::time::timeout(Duration::from_secs(30), source.wait_until_ready())
            .await
            .context("the cluster's objects could not be listed within 30 s")?;
        source.objects()
    } else {
        ManifestSource::new(args.files.clone()).read()
    };
    // The provider is what is checked here, not where sessions are kept.
    let options = CompileOptions {
        redis: true,
        ..args.class.compile_options()
    };
    let compiled = compile(&objects, &options);
    let extra_roots = match &args.idp_ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let idp = IdpClient::with_extra_roots(
        Duration::from_secs(args.idp_timeout),
        extra_roots.as_deref(),
    )?
    .with_token_dir(args.service_account_token_dir.clone());
    let ports = Ports {
        http: args.http_port,
        https: args.https_port,
    };
    let mut failed = false;
    let mut seen = 0;
    // Checks the same for every rule of a provider (its clock) are printed once.
    let mut printed = std::collections::BTreeSet::new();
    for (object, (policy, _)) in rules_in(&compiled.snapshot) {
        let name = format!("{}/{}", object.namespace, object.name);
        if args.rule.as_ref().is_some_and(|r| *r != name) {
            continue;
        }
        seen += 1;
        println!("AuthRule {name}");
        let usable = compiled
            .snapshot
            .auth_rules
            .get(&object)
            .is_some_and(|s| s.usable);
        let Some(policy) = policy else {
            failed = true;
            if usable {
                println!(
                    "FAIL  routes        the AuthRule guards no served route\n      fix: check spec.targetRefs, spec.paths and the Ingresses' class"
                );
                continue;
            }
            println!("FAIL  config        the AuthRule does not compile:");
            for d in compiled.diagnostics.iter().filter(|d| d.object == object) {
                println!("      {d}");
            }
            continue;
        };
        let uris = redirect_uris(&compiled.snapshot, &object, ports);
        for c in diagnose(&idp, &policy, &uris).await {
            failed |= c.outcome == Outcome::Fail;
            if c.once
                .as_ref()
                .is_none_or(|key| printed.insert(key.clone()))
            {
                println!("{c}");
            }
        }
        println!();
    }
    anyhow::ensure!(
        seen > 0,
        "no AuthRule to diagnose{}",
        args.rule.map(|r| format!(" named {r}")).unwrap_or_default()
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `explain logs|reasons|har|flow`.
pub fn explain(command: ExplainCommand) -> anyhow::Result<ExitCode> {
    match command {
        ExplainCommand::Logs { file } => {
            let report = match file.filter(|f| f.as_os_str() != "-") {
                Some(path) => portcullis::explain::logs::read(open(&path)?),
                None => portcullis::explain::logs::read(std::io::stdin().lock()),
            };
            print!("{}", report.render());
            Ok(ExitCode::SUCCESS)
        }
        ExplainCommand::Reasons => {
            print!("{}", portcullis::observe::reasons::markdown());
            Ok(ExitCode::SUCCESS)
        }
        ExplainCommand::Har { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let har: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let report = portcullis::explain::har::analyze(&har)?;
            print!("{}", report.render());
            Ok(if report.broke.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        ExplainCommand::Flow { id, file } => explain_flow(&id, file),
    }
}

fn explain_flow(id: &str, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use portcullis::explain::flow::rebuild;
    let flow = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => rebuild(open(&path)?, id),
        None => rebuild(std::io::stdin().lock(), id),
    };
    match flow {
        Some(flow) => {
            print!("{}", flow.render());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "no flow-hop line names {id}; give the logs of every replica (flow hops are logged at info)"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn open(path: &std::path::Path) -> anyhow::Result<std::io::BufReader<std::fs::File>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(std::io::BufReader::new(f))
}
