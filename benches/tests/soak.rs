//! Runs the `soak` binary's CI versions against freshly built debug engine, loadgen and
//! chat-server binaries and expects a pass: the mixed soak for 8 s, the chat crash loop
//! with 4 restarts, and (with nats-server and haproxy installed) the cluster chaos for 10 s.

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
        .args([
            "build",
            "-p",
            "ringrpc-cli",
            "-p",
            "ringrpc-loadgen",
            "-p",
            "ringrpc-chat",
        ])
        .args([
            "--bin",
            "engine",
            "--bin",
            "loadgen",
            "--bin",
            "chat-server",
        ]);
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
    assert!(
        status.success(),
        "building engine, loadgen and chat-server failed"
    );
    for bin in ["engine", "loadgen", "chat-server"] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} was not built into {}",
            dir.display()
        );
    }
}

/// Runs soak with `args` and expects a pass; returns its output.
fn soak(args: &[&str]) -> String {
    let dir = bin_dir();
    ensure_binaries(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_soak"))
        .arg("--bin-dir")
        .arg(&dir)
        .args(args)
        .output()
        .expect("soak runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "soak {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("verdict: PASS"), "no verdict:\n{stdout}");
    stdout.into_owned()
}

#[test]
fn a_short_mixed_soak_passes() {
    let stdout = soak(&["--duration", "8s", "--seed", "7", "--mixed"]);
    for line in [
        "chaos actions",
        "loadgen websocket calls",
        "loadgen udp calls",
        "pub/sub churn",
        "chat: ",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}

#[test]
fn the_chat_survives_four_sigkills_without_losing_a_message() {
    let stdout = soak(&["--seed", "7", "--chat-crash", "4"]);
    assert!(stdout.contains("4 restarts"), "{stdout}");
}

#[test]
fn a_short_cluster_chaos_passes() {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(have("nats-server") && have("haproxy")) {
        if std::env::var("RINGRPC_REQUIRE_CLUSTER_TOOLS").as_deref() == Ok("1") {
            panic!("nats-server and haproxy are needed (apt-get install -y nats-server haproxy)");
        }
        eprintln!("skipped: nats-server or haproxy is not installed");
        return;
    }
    let stdout = soak(&["--duration", "10s", "--seed", "7", "--cluster"]);
    assert!(stdout.contains("node kills"), "{stdout}");
}
