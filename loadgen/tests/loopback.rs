//! End-to-end runs of the load generator against small in-test arpc servers on loopback.

mod common;

use std::net::TcpListener;
use std::process::Command as Process;

use common::{Behaviour, assert_accounting, config, spawn_server};
use ringrpc_loadgen::run;

#[test]
fn echo_server_run_succeeds_and_accounts_for_every_request() {
    let addr = spawn_server(Behaviour::Echo);
    let report = run(&config(
        addr,
        &[
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--conns",
            "2",
            "--per-conn",
            "4",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    let n = &report.counts;
    assert!(n.answered > 0);
    assert_eq!((n.errors, n.mismatches, n.timeouts, n.lost), (0, 0, 0, 0));
    assert_eq!((n.unexpected, n.connection_failures), (0, 0));
    assert!(report.success, "failures: {:?}", report.failures);
    assert_eq!(report.exit_code(), 0);
    assert!(report.requests_per_second > 0.0);
    // Every I/O thread's CPU time is counted, though the threads exit right after the deadline.
    assert!(
        report
            .cpu_total_ms
            .expect("CPU time is readable from /proc")
            > 0.0
    );
    let last = report.percentile_spectrum.last().expect("a spectrum");
    assert_eq!(last.total_count, n.answered);

    let text = report.render_text();
    assert!(text.contains("Detailed Percentile spectrum:"));
    assert!(text.contains("#[Buckets = "));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["counts"]["answered"], n.answered);
    assert_eq!(json["config"]["per_conn"], 4);
    assert!(json["latency_us"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn connections_sharing_one_thread_use_the_non_blocking_loop() {
    let addr = spawn_server(Behaviour::Echo);
    let report = run(&config(
        addr,
        &[
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--conns",
            "3",
            "--per-conn",
            "5",
            "--threads",
            "1",
            "--payload",
            "100",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    assert_eq!(report.config.threads, 1);
    assert!(report.counts.answered > 0);
    assert!(report.success, "failures: {:?}", report.failures);
}

#[test]
fn corrupted_echoes_are_mismatches_and_fail_the_run() {
    let addr = spawn_server(Behaviour::CorruptEveryTenth);
    let report = run(&config(
        addr,
        &[
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--conns",
            "2",
            "--per-conn",
            "4",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    assert!(report.counts.mismatches > 0);
    assert!(report.counts.answered > 0);
    assert!(!report.success);
    assert_eq!(report.exit_code(), 1);
    let sample = report.diagnostics.first_mismatch.as_deref().unwrap();
    assert!(sample.contains("payload byte 0"), "{sample}");
}

/// Large echoes arriving in pieces are checked as they arrive (never assembled): a flipped
/// last byte is a mismatch at that byte, every other echo is answered, both I/O modes.
#[test]
fn large_echoes_arriving_in_pieces_are_checked_to_the_last_byte() {
    for io in ["uring", "std"] {
        let addr = spawn_server(Behaviour::InPiecesCorruptEveryTenthLast);
        let flags = [
            "--duration",
            "1s",
            "--warmup",
            "100ms",
            "--conns",
            "2",
            "--per-conn",
            "2",
            "--payload",
            "65536",
            "--io",
            io,
        ];
        let report = run(&config(addr, &flags)).unwrap();
        assert_accounting(&report);
        let n = &report.counts;
        assert!(n.mismatches > 0 && n.answered > 0, "{io}: {n:?}");
        assert!(
            n.answered >= 5 * n.mismatches,
            "{io}: only every tenth: {n:?}"
        );
        let sample = report.diagnostics.first_mismatch.as_deref().unwrap();
        assert!(
            sample.contains("payload byte 65535 of 65536"),
            "{io}: {sample}"
        );
    }
}

#[test]
fn error_responses_are_counted_as_errors() {
    let addr = spawn_server(Behaviour::ErrorAll);
    let report = run(&config(
        addr,
        &[
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--conns",
            "1",
            "--per-conn",
            "2",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    assert!(report.counts.errors > 0);
    assert_eq!(report.counts.answered, 0);
    assert_eq!(report.exit_code(), 1);
    assert!(
        report
            .diagnostics
            .first_error
            .as_deref()
            .unwrap()
            .contains("no such method")
    );
}

#[test]
fn unanswered_requests_time_out_during_the_drain() {
    let addr = spawn_server(Behaviour::Silent);
    let report = run(&config(
        addr,
        &[
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--timeout",
            "200ms",
            "--conns",
            "2",
            "--per-conn",
            "3",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    assert!(report.counts.timeouts > 0);
    assert_eq!(report.counts.answered, 0);
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn requests_on_a_closed_connection_are_lost() {
    // The run ends as soon as both connections have failed; the long window only keeps a
    // stalled CI machine from ending it before the server's 50 echoes are counted.
    let addr = spawn_server(Behaviour::CloseAfter(50));
    let report = run(&config(
        addr,
        &[
            "--duration",
            "30s",
            "--warmup",
            "0s",
            "--conns",
            "2",
            "--per-conn",
            "4",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    assert_eq!(report.counts.connection_failures, 2);
    assert!(report.counts.lost > 0);
    assert!(report.counts.answered > 0);
    assert_eq!(report.exit_code(), 1);
    assert!(report.diagnostics.connection_errors[0].contains("closed"));
}

#[test]
fn requests_on_a_closed_connection_are_lost_with_io_uring() {
    // The run ends as soon as both connections have failed; the long window only keeps a
    // stalled CI machine from ending it before the server's 50 echoes are counted.
    // The io_uring path: the failed connection's recv is cancelled and the ring closes the
    // socket after its final completion.
    let addr = spawn_server(Behaviour::CloseAfter(50));
    let report = run(&config(
        addr,
        &[
            "--duration",
            "30s",
            "--warmup",
            "0s",
            "--conns",
            "2",
            "--per-conn",
            "4",
            "--io",
            "uring",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    assert_eq!(report.counts.connection_failures, 2);
    assert!(report.counts.lost > 0);
    assert!(report.counts.answered > 0);
    assert!(report.diagnostics.connection_errors[0].contains("closed"));
}

#[test]
fn binary_exits_non_zero_on_mismatches_and_writes_json() {
    let addr = spawn_server(Behaviour::CorruptEveryTenth);
    let json_path = std::env::temp_dir().join(format!("loadgen-test-{}.json", std::process::id()));
    let output = Process::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--target",
            &addr.to_string(),
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
        ])
        .args(["--conns", "2", "--per-conn", "4", "--quiet", "--json"])
        .arg(&json_path)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Detailed Percentile spectrum:"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("mismatched"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    std::fs::remove_file(&json_path).ok();
    assert!(json["counts"]["mismatches"].as_u64().unwrap() > 0);
    assert_eq!(json["success"], false);
}

#[test]
fn binary_names_the_target_when_it_cannot_connect() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Process::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--target",
            &closed.to_string(),
            "--duration",
            "1s",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to {closed}")),
        "{stderr}"
    );
}

#[test]
fn binary_rejects_bad_flags_with_status_2() {
    for flags in [&["--conns", "0"][..], &["--duration", "soon"]] {
        let output = Process::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
    }
}
