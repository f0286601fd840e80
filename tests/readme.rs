//! The README's configuration tables and `--help` say the same: every flag, its
//! default and its environment variable.

use std::collections::{BTreeMap, BTreeSet};

fn help(command: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([command, "--help"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Each long flag of a `--help` text with its default and environment variable.
fn clap_flags(text: &str) -> BTreeMap<String, (Option<String>, Option<String>)> {
    let mut flags: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            current = trimmed
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .map(|w| w.trim_end_matches(['<', '>']).to_owned());
            if let Some(f) = &current {
                flags.entry(f.clone()).or_default();
            }
        }
        let Some(flag) = &current else { continue };
        let entry = flags.entry(flag.clone()).or_default();
        if let Some(i) = line.find("[default: ") {
            let rest = &line[i + "[default: ".len()..];
            entry.0 = Some(rest[..rest.find(']').unwrap_or(rest.len())].to_owned());
        }
        if let Some(i) = line.find("[env: ") {
            let rest = &line[i + "[env: ".len()..];
            entry.1 = Some(rest[..rest.find(['=', ']']).unwrap_or(rest.len())].to_owned());
        }
    }
    flags.remove("--help");
    flags
}

/// The rows of the README table under `heading`: flag, default cell, whole row.
fn readme_rows(heading: &str) -> BTreeMap<String, (String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} missing"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n### ").unwrap_or(section.len())];
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `-")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        for flag in cells[0]
            .split('`')
            .filter(|w| w.starts_with("--"))
            .map(|w| w.split(' ').next().unwrap().to_owned())
        {
            rows.insert(
                flag,
                (
                    cells.get(1).copied().unwrap_or_default().to_owned(),
                    line.to_owned(),
                ),
            );
        }
    }
    rows
}

fn check(
    clap: &BTreeMap<String, (Option<String>, Option<String>)>,
    rows: &BTreeMap<String, (String, String)>,
    skip: &[&str],
) {
    for (flag, (default, env)) in clap.iter().filter(|(f, _)| !skip.contains(&f.as_str())) {
        let (default_cell, row) = rows
            .get(flag)
            .unwrap_or_else(|| panic!("{flag} is in --help but not in the README's table"));
        if let Some(d) = default {
            for token in d.split_whitespace() {
                assert!(
                    default_cell.contains(token),
                    "{flag}: --help says default {d:?}, the README {default_cell:?}"
                );
            }
        }
        if let Some(e) = env {
            assert!(
                row.contains(e),
                "{flag}: --help reads {e}, the README's row does not say so: {row}"
            );
        }
    }
}

#[test]
fn the_serve_table_is_serve_help() {
    let clap = clap_flags(&help("serve"));
    let rows = readme_rows("### `portcullis serve`");
    // -f is written as `-f PATH` in the table.
    check(&clap, &rows, &["--filename"]);
    let documented: BTreeSet<&String> = rows.keys().collect();
    let real: BTreeSet<&String> = clap.keys().collect();
    let stale: Vec<_> = documented.difference(&real).collect();
    assert!(
        stale.is_empty(),
        "the README documents flags `serve` does not have: {stale:?}"
    );
}

#[test]
fn the_run_table_with_the_serve_table_is_run_help() {
    let clap = clap_flags(&help("run"));
    let mut rows = readme_rows("### `portcullis serve`");
    let own = readme_rows("### `portcullis run` (in a cluster)");
    for flag in own.keys() {
        assert!(
            clap.contains_key(flag),
            "the README documents {flag} for run, which run does not have"
        );
    }
    rows.extend(own);
    check(&clap, &rows, &[]);
}

#[test]
fn the_readme_lists_every_passing_conformance_test() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let listed = std::fs::read_to_string("tests/gateway/conformance-passing.txt").unwrap();
    let names: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!names.is_empty());
    for name in &names {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README does not list {name}"
        );
    }
    assert!(
        readme.contains(&format!("Passing, {} tests", names.len())),
        "README's count of passing conformance tests is not {}",
        names.len()
    );
}

/// The README's table of conformance results per profile is the kept report's.
#[test]
fn the_readme_shows_the_conformance_report_per_profile() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let report: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string("conformance/report-v1.6.3.yaml").unwrap())
            .unwrap();
    let cell = |status: &serde_json::Value| {
        format!(
            "{} ({} passed, {} failed, {} skipped)",
            status["result"].as_str().unwrap_or("none"),
            status["statistics"]["Passed"].as_u64().unwrap_or(0),
            status["statistics"]["Failed"].as_u64().unwrap_or(0),
            status["statistics"]["Skipped"].as_u64().unwrap_or(0),
        )
    };
    let profiles = report["profiles"]
        .as_array()
        .expect("the report has profiles");
    assert!(!profiles.is_empty());
    for profile in profiles {
        let row = format!(
            "| {} | {} | {} |",
            profile["name"].as_str().unwrap(),
            cell(&profile["core"]),
            cell(&profile["extended"]),
        );
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}

/// `portcullis --help` opens with what Portcullis is, before the commands.
#[test]
fn help_opens_with_what_portcullis_is() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("Kubernetes ingress controller that logs people in at the edge"),
        "{text}"
    );
}

/// The Status table names, for each capability, the test modules that run it; each
/// must be a module of this test binary.
#[test]
fn every_test_module_the_status_names_exists() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let modules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it.rs")).unwrap();
    let status = readme
        .split("\n## Status\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Status section");
    let mut named = 0;
    for row in status
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1)
    {
        let tests = row.trim_end_matches('|').rsplit('|').next().unwrap();
        for module in tests.split(',').map(|m| m.trim().trim_matches('`')) {
            assert!(
                modules.contains(&format!("\nmod {module};")),
                "README Status names test module {module:?}, which tests/it.rs does not have"
            );
            named += 1;
        }
    }
    assert!(
        named > 20,
        "the Status table names the test modules ({named})"
    );
}
