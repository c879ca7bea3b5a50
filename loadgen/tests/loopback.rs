//! End-to-end runs of the load generator against small in-test arpc servers on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command as Process;
use std::thread;

use bytes::BytesMut;
use clap::Parser;
use ringrpc_loadgen::{Cli, Config, Report, run};
use ringrpc_protocol::{Command, Decoder, Frame};

/// How a test server answers requests.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Echo,
    /// Flips the first payload byte of every tenth response on a connection.
    CorruptEveryTenth,
    /// Answers every request with an error response.
    ErrorAll,
    /// Reads requests and never answers.
    Silent,
    /// Echoes this many requests per connection, then closes it.
    CloseAfter(usize),
}

/// Starts a server on an ephemeral loopback port; it lives until the test process exits.
fn spawn_server(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || serve(stream, behaviour));
        }
    });
    addr
}

fn serve(mut stream: TcpStream, behaviour: Behaviour) {
    stream.set_nodelay(true).unwrap();
    let decoder = Decoder::default();
    let (mut rx, mut tx) = (BytesMut::new(), BytesMut::new());
    let mut buf = vec![0; 64 * 1024];
    let mut requests = 0usize;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        rx.extend_from_slice(&buf[..n]);
        loop {
            let frame = match decoder.decode(&mut rx) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return,
            };
            if frame.header.cmd != Command::Request {
                continue;
            }
            requests += 1;
            let echo =
                Frame::response_to(&frame.header, frame.method.clone(), frame.payload.clone());
            let response = match behaviour {
                Behaviour::Echo => echo,
                Behaviour::CorruptEveryTenth if requests % 10 == 0 => {
                    let mut payload = frame.payload.to_vec();
                    payload[0] ^= 0xff;
                    Frame::response_to(&frame.header, frame.method.clone(), payload)
                }
                Behaviour::CorruptEveryTenth => echo,
                Behaviour::ErrorAll => {
                    Frame::error_response_to(&frame.header, frame.method.clone(), "no such method")
                }
                Behaviour::Silent => continue,
                Behaviour::CloseAfter(limit) if requests > limit => return,
                Behaviour::CloseAfter(_) => echo,
            };
            response.encode_to(&mut tx);
        }
        if !tx.is_empty() {
            if stream.write_all(&tx).is_err() {
                return;
            }
            tx.clear();
        }
    }
}

fn config(addr: SocketAddr, flags: &[&str]) -> Config {
    let target = addr.to_string();
    let mut args = vec!["loadgen", "--target", target.as_str(), "--quiet"];
    args.extend_from_slice(flags);
    Config::from_cli(Cli::try_parse_from(args).expect("valid flags")).expect("valid config")
}

fn assert_accounting(report: &Report) {
    let n = &report.counts;
    assert_eq!(
        n.sent,
        n.answered + n.errors + n.mismatches + n.timeouts + n.lost,
        "every measured request is settled exactly once: {n:?}"
    );
    assert!(report.accounting_ok);
    assert_eq!(
        report.latency_us.count, n.answered,
        "one latency per correct answer"
    );
}

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
    let addr = spawn_server(Behaviour::CloseAfter(50));
    let report = run(&config(
        addr,
        &[
            "--duration",
            "500ms",
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
