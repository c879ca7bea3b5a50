//! Runs the `soak` binary for 10 s (the CI version) against freshly built debug engine and
//! loadgen binaries and expects a pass.

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/debug (or the profile's directory), where cargo put `soak`.
fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_soak"))
        .parent()
        .expect("soak lives in a directory")
        .to_path_buf()
}

/// Builds the current engine and loadgen into `dir` every time (a no-op when they are up to
/// date), so the soak never runs a stale binary left there by an older build.
fn ensure_binaries(dir: &Path) {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "-p", "ringrpc-cli", "-p", "ringrpc-loadgen"])
        .args(["--bin", "engine", "--bin", "loadgen"]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(profile) => {
            cargo.args(["--profile", profile]);
        }
    }
    let status = cargo
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building engine and loadgen failed");
    for bin in ["engine", "loadgen"] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} was not built into {}",
            dir.display()
        );
    }
}

#[test]
fn a_five_second_soak_passes() {
    let dir = bin_dir();
    ensure_binaries(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_soak"))
        .arg("--bin-dir")
        .arg(&dir)
        .args(["--duration", "10s", "--seed", "7"])
        .output()
        .expect("soak runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "soak failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("verdict: PASS"), "no verdict:\n{stdout}");
    assert!(
        stdout.contains("chaos actions"),
        "no action counts:\n{stdout}"
    );
}
