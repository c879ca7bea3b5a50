//! Shared by compare's end-to-end tests: building the binaries a row runs.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Runs `cargo build` with `what` (packages and binaries; loadgen among them) in the tests'
/// profile and returns the directory cargo put loadgen in, beside the others.
pub fn build_beside_loadgen(what: &[&str]) -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(env!("CARGO"))
        .args(["build", "--quiet"])
        .args(what)
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(&workspace)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(output.status.success(), "cargo build {what:?} failed");
    let loadgen = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "loadgen")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the loadgen executable");
    loadgen.parent().unwrap().to_path_buf()
}
