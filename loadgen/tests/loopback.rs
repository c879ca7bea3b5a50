//! End-to-end runs of the load generator against small in-test arpc servers on loopback,
//! each scenario once per `--io` driver (io_uring, plain sockets, epoll): what a client must
//! count does not depend on its shape. Assertions are about accounting, never timing.

mod common;

use std::net::TcpListener;
use std::process::Command as Process;

use common::{
    Behaviour, DRIVERS, assert_accounting, assert_clean, config, spawn_server, with_driver,
};
use ringrpc_loadgen::run;

/// Every driver: each measured request settled once, the report's text and JSON agree, and
/// the I/O threads' CPU time is counted though they exit right after the deadline.
#[test]
fn echo_server_run_succeeds_and_accounts_for_every_request() {
    let addr = spawn_server(Behaviour::Echo);
    for driver in DRIVERS {
        for payload in ["32", "4096", "65536"] {
            let flags = [
                "--duration",
                "500ms",
                "--warmup",
                "100ms",
                "--conns",
                "2",
                "--per-conn",
                "4",
                "--payload",
                payload,
            ];
            let report = run(&config(addr, &with_driver(driver, &flags))).unwrap();
            assert_clean(&report);
            let n = &report.counts;
            assert_eq!(n.connection_failures, 0, "{driver} {payload}");
            assert_eq!(report.exit_code(), 0);
            assert!(report.requests_per_second > 0.0);
            let cpu = report
                .cpu_total_ms
                .expect("CPU time is readable from /proc");
            assert!(cpu > 0.0, "{driver} {payload}");
            let last = report.percentile_spectrum.last().expect("a spectrum");
            assert_eq!(last.total_count, n.answered);

            let text = report.render_text();
            assert!(text.contains("Detailed Percentile spectrum:"));
            assert!(text.contains("#[Buckets = "));
            let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
            assert_eq!(json["counts"]["answered"], n.answered);
            assert_eq!(json["config"]["per_conn"], 4);
            assert_eq!(json["config"]["io"], driver, "{driver}");
            assert!(json["latency_us"]["p99"].as_f64().unwrap() > 0.0);
        }
    }
}

/// Several connections on one thread: plain sockets switch to their non-blocking loop, the
/// io_uring and epoll drivers share their ring or epoll set.
#[test]
fn connections_sharing_one_thread_are_all_served() {
    let addr = spawn_server(Behaviour::Echo);
    for driver in DRIVERS {
        let flags = [
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
        ];
        let report = run(&config(addr, &with_driver(driver, &flags))).unwrap();
        assert_clean(&report);
        assert_eq!(report.config.threads, 1);
    }
}

#[test]
fn corrupted_echoes_are_mismatches_and_fail_the_run() {
    let addr = spawn_server(Behaviour::CorruptEveryTenth);
    for driver in DRIVERS {
        let flags = [
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--conns",
            "2",
            "--per-conn",
            "4",
        ];
        let report = run(&config(addr, &with_driver(driver, &flags))).unwrap();
        assert_accounting(&report);
        assert!(report.counts.mismatches > 0, "{driver}");
        assert!(report.counts.answered > 0, "{driver}");
        assert!(!report.success);
        assert_eq!(report.exit_code(), 1);
        let sample = report.diagnostics.first_mismatch.as_deref().unwrap();
        assert!(sample.contains("payload byte 0"), "{driver}: {sample}");
    }
}

/// Large echoes arriving in pieces are checked as they arrive (never assembled): a flipped
/// last byte is a mismatch at that byte, every other echo is answered.
#[test]
fn large_echoes_arriving_in_pieces_are_checked_to_the_last_byte() {
    for driver in DRIVERS {
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
        ];
        let report = run(&config(addr, &with_driver(driver, &flags))).unwrap();
        assert_accounting(&report);
        let n = &report.counts;
        assert!(n.mismatches > 0 && n.answered > 0, "{driver}: {n:?}");
        assert!(
            n.answered >= 5 * n.mismatches,
            "{driver}: only every tenth: {n:?}"
        );
        let sample = report.diagnostics.first_mismatch.as_deref().unwrap();
        assert!(
            sample.contains("payload byte 65535 of 65536"),
            "{driver}: {sample}"
        );
    }
}

#[test]
fn error_responses_are_counted_as_errors() {
    let addr = spawn_server(Behaviour::ErrorAll);
    for driver in DRIVERS {
        let flags = [
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--conns",
            "2",
            "--per-conn",
            "2",
        ];
        let report = run(&config(addr, &with_driver(driver, &flags))).unwrap();
        assert_accounting(&report);
        assert!(report.counts.errors > 0, "{driver}");
        assert_eq!(report.counts.answered, 0);
        assert_eq!(report.exit_code(), 1);
        let error = report.diagnostics.first_error.as_deref().unwrap();
        assert!(error.contains("no such method"), "{driver}: {error}");
    }
}

#[test]
fn unanswered_requests_time_out_during_the_drain() {
    let addr = spawn_server(Behaviour::Silent);
    for driver in DRIVERS {
        let flags = [
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
        ];
        let report = run(&config(addr, &with_driver(driver, &flags))).unwrap();
        assert_accounting(&report);
        assert!(report.counts.timeouts > 0, "{driver}");
        assert_eq!(report.counts.answered, 0);
        assert_eq!(report.exit_code(), 1);
    }
}

/// A server that answers 50 requests on a connection, then closes it: what was in flight
/// is lost. (With io_uring the failed connection's recv is cancelled and the ring closes the
/// socket after its final completion.)
#[test]
fn requests_on_a_closed_connection_are_lost() {
    for driver in DRIVERS {
        // The run ends as soon as both connections have failed; the long window only keeps
        // a stalled CI machine from ending it before the server's 50 echoes are counted.
        let addr = spawn_server(Behaviour::CloseAfter(50));
        let flags = [
            "--duration",
            "30s",
            "--warmup",
            "0s",
            "--conns",
            "2",
            "--per-conn",
            "4",
        ];
        let report = run(&config(addr, &with_driver(driver, &flags))).unwrap();
        assert_accounting(&report);
        assert_eq!(report.counts.connection_failures, 2, "{driver}");
        assert!(report.counts.lost > 0, "{driver}");
        assert!(report.counts.answered > 0, "{driver}");
        assert_eq!(report.exit_code(), 1);
        let error = &report.diagnostics.connection_errors[0];
        assert!(error.contains("closed"), "{driver}: {error}");
    }
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
