//! `--proto grpc` against the real `grpc-echo` server of the benches package: accounting,
//! server CPU, a server that dies mid-run, and the flags gRPC refuses.
//!
//! grpc-echo lives in another package, so it is built here with cargo (once per test binary)
//! and found through cargo's own report of the executable it produced. Every server started
//! is killed when its guard drops, even when an assertion fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;
use common::assert_clean;
use ringrpc_loadgen::{Cli, Config, Proto, run};

/// Builds grpc-echo (debug profile, the one tests run in) and returns its path.
fn grpc_echo_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let output = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "ringrpc-benches",
                "--bin",
                "grpc-echo",
            ])
            .args(["--message-format", "json-render-diagnostics"])
            .current_dir(&workspace)
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo to build grpc-echo");
        assert!(output.status.success(), "cargo build of grpc-echo failed");
        // Cargo names the executable it built, wherever CARGO_TARGET_DIR or config put it.
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact" && message["target"]["name"] == "grpc-echo"
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the grpc-echo executable")
    })
}

/// A running grpc-echo, killed on drop.
struct GrpcEcho {
    child: Child,
    addr: String,
}

impl GrpcEcho {
    fn start() -> GrpcEcho {
        let mut child = Command::new(grpc_echo_binary())
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start grpc-echo");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read grpc-echo's first line");
        // Build the guard before asserting, so a bad line still kills the child.
        let mut server = GrpcEcho {
            child,
            addr: String::new(),
        };
        server.addr = line
            .trim()
            .strip_prefix("grpc-echo listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from grpc-echo: {line:?}"))
            .to_string();
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        self.kill();
    }
}

fn grpc_config(target: &str, flags: &[&str]) -> Config {
    let mut args = vec![
        "loadgen",
        "--proto",
        "grpc",
        "--target",
        target,
        "--quiet",
        "--threads",
        "2",
    ];
    args.extend_from_slice(flags);
    Config::from_cli(Cli::try_parse_from(args).expect("valid flags")).expect("valid config")
}

#[test]
fn grpc_loadgen_against_grpc_echo_accounts_for_every_call() {
    let server = GrpcEcho::start();
    let pid = server.pid().to_string();
    let config = grpc_config(
        &server.addr,
        &[
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--conns",
            "2",
            "--per-conn",
            "4",
            "--payload",
            "100",
            "--server-pid",
            &pid,
        ],
    );
    let report = run(&config).expect("run");
    assert_clean(&report);
    assert_eq!(report.counts.connection_failures, 0);
    assert_eq!(report.config.proto, Proto::Grpc);
    assert_eq!(report.config.io, None, "--io does not apply to gRPC");
    assert_eq!(report.config.method, "/ringrpc.echo.Echo/Echo");
    assert!(report.requests_per_second > 0.0);
    // The whole process is sampled (in a test binary that includes other tests' threads).
    assert!(report.cpu_total_ms.expect("process CPU is readable") > 0.0);
    assert!(
        report
            .server_cpu_us_per_request
            .expect("server CPU measured")
            > 0.0
    );
    let text = report.render_text();
    assert!(
        text.contains("load        grpc: 2 conns × 4 in flight"),
        "{text}"
    );
    assert!(text.contains("whole process"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["config"]["proto"], "grpc");
    assert_eq!(json["counts"]["answered"], report.counts.answered);
}

#[test]
fn calls_on_a_dead_server_are_lost_and_fail_their_connections() {
    let mut server = GrpcEcho::start();
    let config = grpc_config(
        &server.addr,
        &[
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--conns",
            "2",
            "--per-conn",
            "4",
            "--timeout",
            "1s",
        ],
    );
    let load = std::thread::spawn(move || run(&config).expect("run"));
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    let report = load.join().expect("the run finishes");
    let n = &report.counts;
    assert!(report.accounting_ok, "{n:?}");
    assert_eq!(
        n.sent,
        n.answered + n.errors + n.mismatches + n.timeouts + n.lost
    );
    assert_eq!(report.latency_us.count, n.answered);
    assert!(n.answered > 0, "{n:?}");
    assert!(n.lost > 0, "{n:?}");
    assert_eq!(n.connection_failures, 2, "{:?}", report.diagnostics);
    assert!(!report.success);
    assert_eq!(report.exit_code(), 1);
    // Callers stop on a failed connection instead of reconnecting until the deadline, so
    // the run ends early.
    assert!(report.measured_s < 1.9, "measured {} s", report.measured_s);
}

#[test]
fn binary_refuses_grpc_with_arpc_only_flags() {
    for (flags, named) in [
        (&["--rate", "100"][..], "--rate"),
        (&["--reflect"][..], "--reflect"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--proto", "grpc", "--duration", "1s"])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named) && stderr.contains("--proto grpc"),
            "{stderr}"
        );
    }
}

#[test]
fn binary_names_the_grpc_server_when_it_cannot_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--proto", "grpc", "--target", &closed.to_string()])
        .args(["--duration", "1s", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to {closed}")) && stderr.contains("grpc-echo"),
        "{stderr}"
    );
}
