//! Files generated from the code must match it: a stale CRD would let the API server
//! accept AuthRules that Portcullis cannot read, or reject ones it can; a stale
//! reference page would document fields and flags that do not exist.
//! `UPDATE_REFERENCE=1` rewrites the reference pages instead of failing.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `portcullis ARGS` as a user with none of the PORTCULLIS_ variables set sees it
/// (`--help` shows the values of the variables it reads).
fn portcullis(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("PORTCULLIS_")) {
        command.env_remove(name);
    }
    let out = command.args(args).output().unwrap();
    assert!(out.status.success(), "portcullis {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The committed `path` is `generated`, or is rewritten to it under UPDATE_REFERENCE=1.
fn matches_committed(path: &str, generated: &str, how: &str) {
    let file = format!("{ROOT}/{path}");
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(&file, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        generated == committed,
        "{path} is stale: {how}, or run UPDATE_REFERENCE=1 cargo test --locked --test it generated::"
    );
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/authrule.yaml"))
            .unwrap();
    assert!(
        generated == committed,
        "crds/authrule.yaml is stale: run `cargo run -- crd > crds/authrule.yaml`"
    );
    assert!(
        generated.contains("GRPCRoutes and Gateways in this namespace whose"),
        "field docs become kubectl explain text"
    );
    assert!(
        !generated.contains("Auto-generated derived type"),
        "kubectl explain authrule opens with what an AuthRule is"
    );
}

#[test]
fn the_authrule_reference_is_the_crd() {
    let generated = portcullis(&["crd", "--markdown"]);
    matches_committed(
        "docs/reference/authrule.md",
        &generated,
        "run `cargo run -- crd --markdown > docs/reference/authrule.md`",
    );
    for field in [
        "spec.oidc.issuer",
        "spec.targetRefs[].kind",
        "status.conditions",
        "status.observedGeneration",
    ] {
        assert!(generated.contains(&format!("| `{field}` |")), "{field}");
    }
}

/// The subcommands a `--help` text lists under `Commands:`, without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// docs/reference/flags.md: the `--help` of `portcullis` and of every subcommand, in
/// the order `--help` lists them.
fn flags_page() -> String {
    let mut page = String::from(
        "# Command-line reference\n\n\
         <!-- Generated from `portcullis <command> --help` by tests/generated.rs; \
         `UPDATE_REFERENCE=1 cargo test --locked --test it generated::` rewrites it. -->\n\n\
         Every command and flag, as `--help` prints them. Flags that show `[env: NAME=]` \
         can also be set with that environment variable (the chart sets them that way).\n",
    );
    let mut queue = vec![Vec::<String>::new()];
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = portcullis(&args);
        let name = std::iter::once("portcullis")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        page.push_str(&format!(
            "\n## `{name}`\n\n```text\n{}\n```\n",
            help.trim_end()
        ));
        for sub in subcommands(&help).into_iter().rev() {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    page
}

#[test]
fn the_flags_reference_is_the_help() {
    let generated = flags_page();
    matches_committed(
        "docs/reference/flags.md",
        &generated,
        "it is every `portcullis <command> --help`",
    );
    for heading in ["## `portcullis serve`", "## `portcullis explain logs`"] {
        assert!(generated.contains(heading), "{heading}");
    }
    assert!(generated.contains("--ingress-class"));
}

#[test]
fn the_chart_ships_the_same_crd() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).unwrap();
    assert!(
        read("crds/authrule.yaml") == read("charts/portcullis/crds/authrule.yaml"),
        "charts/portcullis/crds/authrule.yaml is stale: cp crds/authrule.yaml charts/portcullis/crds/"
    );
}

#[test]
fn rendered_manifests_match_the_chart() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("portcullis-render-{}.yaml", std::process::id()));
    let status = std::process::Command::new(format!("{root}/scripts/render-deploy.sh"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "helm template failed");
    let rendered = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let committed = std::fs::read_to_string(format!("{root}/deploy/portcullis.yaml")).unwrap();
    assert!(
        rendered == committed,
        "deploy/portcullis.yaml is stale: run scripts/render-deploy.sh"
    );
    assert!(rendered.contains("kind: CustomResourceDefinition"));
}

#[test]
fn the_troubleshooting_page_is_the_reasons_catalogue() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["explain", "reasons"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/troubleshooting.md"
    ))
    .unwrap();
    assert!(
        generated == committed,
        "docs/troubleshooting.md is stale: run `cargo run -- explain reasons > docs/troubleshooting.md`"
    );
    for reason in [
        "AuthForbidden",
        "AmbiguousRequestPath",
        "AuthTokenEpRequestFailed",
    ] {
        assert!(generated.contains(&format!("| `{reason}` |")), "{reason}");
    }
}
