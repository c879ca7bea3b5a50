//! Runs the `soak` binary for 10 s (the CI version) against the debug engine and loadgen and expects a pass.

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/debug, where cargo put `soak` and, with the workspace built, `engine` and `loadgen`.
fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_soak"))
        .parent()
        .expect("soak lives in a directory")
        .to_path_buf()
}

/// Builds the engine and loadgen when this test runs before the rest of the workspace is built.
fn ensure_binaries(dir: &Path) {
    if dir.join("engine").is_file() && dir.join("loadgen").is_file() {
        return;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "ringrpc", "-p", "ringrpc-loadgen"])
        .args(["--bin", "engine", "--bin", "loadgen"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building engine and loadgen failed");
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
