//! Files generated from the code must match it: a stale CRD would let the API server
//! accept AuthRules that Portcullis cannot read, or reject ones it can.

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
        generated.contains("Ingresses in this namespace whose routes this rule guards."),
        "field docs become kubectl explain text"
    );
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
