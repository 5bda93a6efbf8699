//! Architecture invariants (docs/ARCHITECTURE.md): dependencies between our
//! crates only point up the layer list. Reads `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

#[test]
fn crate_dependencies_only_point_up() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null()) // normal dependencies; tests may reach further
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("trailwatch"))
            .map(str::to_owned)
            .collect();
        edges.insert(name, deps);
    }
    let allowed: &[(&str, &[&str])] = &[
        ("trailwatch-types", &[]),
        ("trailwatch-protocol", &["trailwatch-types"]),
        ("trailwatch-storage", &[]),
        (
            "trailwatch-core",
            &["trailwatch-types", "trailwatch-storage"],
        ),
        (
            "trailwatch-server",
            &["trailwatch-types", "trailwatch-protocol", "trailwatch-core"],
        ),
        // The agent is a plain AWS SDK client: none of the server's crates.
        ("trailwatch-agent", &[]),
    ];
    for (krate, may) in allowed {
        let actual = edges
            .get(*krate)
            .unwrap_or_else(|| panic!("crate {krate} is missing"));
        for dep in actual {
            assert!(
                may.contains(&dep.as_str()),
                "forbidden dependency {krate} -> {dep}"
            );
        }
    }
    let bench_may = [
        "trailwatch-types",
        "trailwatch-protocol",
        "trailwatch-core",
        "trailwatch-storage",
    ];
    for dep in edges.get("trailwatch-bench").expect("bench crate") {
        assert!(
            bench_may.contains(&dep.as_str()),
            "forbidden dependency trailwatch-bench -> {dep}"
        );
    }
    // Every crate of ours is covered by the table, so a new one cannot slip past.
    let known: BTreeSet<&str> = allowed
        .iter()
        .map(|(k, _)| *k)
        .chain(["trailwatch", "trailwatch-bench"])
        .collect();
    for name in edges.keys() {
        assert!(
            known.contains(name.as_str()),
            "crate {name} has no row in the architecture table"
        );
    }
}
