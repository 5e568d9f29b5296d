//! ARCHITECTURE.md's never-rules, read from `cargo metadata`: which crate
//! may depend (normally, directly or through other workspace crates) on
//! which. A new dependency that breaks a layer fails here with the path
//! that breaks it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use weft_tests::repo_root;

/// Each workspace package's normal dependencies (names), and whether it has
/// a library target.
struct Workspace {
    deps: BTreeMap<String, BTreeSet<String>>,
    build_deps: BTreeMap<String, BTreeSet<String>>,
    libraries: BTreeSet<String>,
}

fn workspace() -> Workspace {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let mut deps = BTreeMap::new();
    let mut build_deps = BTreeMap::new();
    let mut libraries = BTreeSet::new();
    for p in doc["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_string();
        let of_kind = |build: bool| -> BTreeSet<String> {
            p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| {
                    if build {
                        d["kind"] == "build"
                    } else {
                        d["kind"].is_null()
                    }
                })
                .map(|d| d["name"].as_str().expect("dependency name").to_string())
                .collect()
        };
        let normal = of_kind(false);
        build_deps.insert(name.clone(), of_kind(true));
        if p["targets"].as_array().expect("targets").iter().any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "lib"))
        }) {
            libraries.insert(name.clone());
        }
        deps.insert(name, normal);
    }
    Workspace {
        deps,
        build_deps,
        libraries,
    }
}

impl Workspace {
    /// The path from `from` to `to` through normal dependencies (workspace
    /// crates are followed, others are leaves), if there is one.
    fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![vec![from.to_string()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty").clone();
            for dep in self.deps.get(&last).into_iter().flatten() {
                let mut next = path.clone();
                next.push(dep.clone());
                if dep == to {
                    return Some(next);
                }
                if seen.insert(dep.clone()) {
                    stack.push(next);
                }
            }
        }
        None
    }

    fn never(&self, from: &str, forbidden: &[&str], why: &str) -> Vec<String> {
        assert!(self.deps.contains_key(from), "no workspace crate {from}");
        forbidden
            .iter()
            .filter_map(|to| {
                self.path(from, to)
                    .map(|p| format!("{} ({why})", p.join(" -> ")))
            })
            .collect()
    }
}

#[test]
fn the_layers_depend_only_downwards() {
    let ws = workspace();
    let mut broken = Vec::new();
    if let Some(d) = ws.deps.get("weft-abi").filter(|d| !d.is_empty()) {
        broken.push(format!(
            "weft-abi depends on {d:?} (the guest SDK compiles it for wasm: no dependencies)"
        ));
    }
    if let Some(d) = ws
        .deps
        .get("weft-autodiff")
        .filter(|d| d.iter().any(|n| n != "prost" && n != "thiserror"))
    {
        broken.push(format!(
            "weft-autodiff depends on {d:?} (guests build it for wasm: prost and thiserror only)"
        ));
    }
    if let Some(d) = ws
        .deps
        .get("weft-format")
        .filter(|d| d.iter().any(|n| n != "serde" && n != "weft-abi"))
    {
        broken.push(format!(
            "weft-format depends on {d:?} (the artifact format is light enough for the shim: serde and weft-abi only)"
        ));
    }
    broken.extend(ws.never(
        "weft-gpu",
        &[
            "weft-nn",
            "weft-runtime",
            "weft-abi",
            "weft-oci",
            "weft-serve",
        ],
        "the GPU executor knows tract graphs and wgpu only",
    ));
    broken.extend(ws.never(
        "weft-nn",
        &[
            "weft-runtime",
            "weft-oci",
            "weft-serve",
            "weft-module",
            "wasmtime-wasi",
            "kube",
        ],
        "weft-nn knows nothing about WASI, OCI, serving or Kubernetes",
    ));
    broken.extend(ws.never(
        "weft-oci",
        &[
            "weft-nn",
            "weft-runtime",
            "weft-serve",
            "wasmtime",
            "tract-onnx",
        ],
        "the artifact format and store depend on no runtime",
    ));
    broken.extend(ws.never(
        "weft-serve",
        &["weft-oci", "weft-module", "oci-client", "kube"],
        "the CLI resolves references and hands weft-serve ModelSpecs",
    ));
    broken.extend(ws.never(
        "weft-runtime",
        &["weft-oci", "weft-serve", "weft-module", "kube"],
        "the runtime hosts modules; where they come from is above it",
    ));
    broken.extend(ws.never(
        "weft-crd",
        &["weft-runtime", "weft-nn", "weft-oci", "wasmtime"],
        "the operator and the agent share the resource types only",
    ));
    broken.extend(ws.never(
        "weft-metrics",
        &[
            "weft-runtime",
            "weft-nn",
            "wasmtime",
            "tract-onnx",
            "weft-serve",
        ],
        "training metrics are files for people and tools: they know no runtime",
    ));
    broken.extend(ws.never(
        "weft-ort",
        &[
            "weft-nn",
            "weft-runtime",
            "wasmtime",
            "tract-onnx",
            "weft-gpu",
        ],
        "the onnxruntime engine is a leaf: weft-nn wraps it, it knows no wasm, tract or GPU",
    ));
    broken.extend(ws.never(
        "containerd-shim-weft",
        &["oci-client", "kube"],
        "the shim, which runs as root on every node, reads images from containerd, never a registry",
    ));
    assert!(
        broken.is_empty(),
        "never-rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_library_depends_on_the_test_harness() {
    let ws = workspace();
    let broken: Vec<String> = ws
        .libraries
        .iter()
        .filter(|lib| lib.as_str() != "weft-tests")
        .filter_map(|lib| ws.path(lib, "weft-tests").map(|p| p.join(" -> ")))
        .collect();
    assert!(
        broken.is_empty(),
        "a library that depends normally on weft-tests ships its test harness:\n{}",
        broken.join("\n")
    );
}

/// The benchmarks take their servers from the light `weft-testkit`, which
/// builds no guest module and reaches no Weft crate but the installer; the
/// harness (every guest module, kube mocks) stays out of them.
#[test]
fn benches_use_the_light_test_kit() {
    let ws = workspace();
    let mut broken = ws.never(
        "weft-bench",
        &["weft-tests"],
        "the bench would build every test guest module",
    );
    let kit_deps = ws.deps.get("weft-testkit").expect("weft-testkit");
    broken.extend(
        kit_deps
            .iter()
            .filter(|d| d.starts_with("weft-") && d.as_str() != "weft-node-installer")
            .map(|d| format!("weft-testkit -> {d} (the test kit stays light)")),
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// A nested cargo build of guest modules needs the wasm targets of
/// everything that depends on the crate doing it: only the binary that
/// bundles a guest and the test harness may.
#[test]
fn only_the_cli_and_the_test_harness_build_guest_modules() {
    let ws = workspace();
    let builders: Vec<&String> = ws
        .build_deps
        .iter()
        .filter(|(_, d)| d.contains("weft-guest-build"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(builders, ["weft-cli", "weft-tests"]);
}

/// The checker itself: a path through workspace crates is found and named.
#[test]
fn a_broken_rule_is_reported_with_its_path() {
    let ws = workspace();
    let path = ws
        .path("weft-module", "weft-gpu")
        .expect("weft-module reaches the GPU executor through weft-nn");
    assert_eq!(path.first().map(String::as_str), Some("weft-module"));
    assert_eq!(path.last().map(String::as_str), Some("weft-gpu"));
    let broken = ws.never("weft-module", &["weft-gpu"], "example");
    assert_eq!(broken.len(), 1, "{broken:?}");
}
