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
