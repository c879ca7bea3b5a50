//! loadgen against a real ringrpc engine on loopback: both I/O engines, reflect mode, the
//! open loop and server CPU accounting. Assertions are about accounting, never timing.

mod common;

use std::net::SocketAddr;

use clap::Parser;
use common::{assert_clean, engine};
use ringrpc::{Config as EngineConfig, RunningServer, Server};
use ringrpc_loadgen::{Cli, Config, Report, run};

fn load(addr: SocketAddr, flags: &[&str]) -> Report {
    let target = addr.to_string();
    let mut args = vec![
        "loadgen",
        "--target",
        &target,
        "--quiet",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
    ];
    args.extend_from_slice(flags);
    run(&Config::from_cli(Cli::try_parse_from(args).unwrap()).unwrap()).expect("run")
}

#[test]
fn io_uring_loadgen_against_the_engine_accounts_for_every_request() {
    let server = engine(false);
    let report = load(
        server.local_addr(),
        &["--conns", "4", "--per-conn", "8", "--io", "uring"],
    );
    assert_clean(&report);
    let served = server.shutdown().unwrap().total().requests;
    // The engine also answered warmup requests, never fewer than the measured ones.
    assert!(
        served >= report.counts.answered,
        "{served} < {}",
        report.counts.answered
    );
}

#[test]
fn std_loadgen_against_the_engine_accounts_for_every_request() {
    let server = engine(false);
    let report = load(
        server.local_addr(),
        &["--conns", "3", "--per-conn", "5", "--io", "std"],
    );
    assert_clean(&report);
    server.shutdown().unwrap();
}

#[test]
fn reflected_requests_count_as_answers_only_when_asked() {
    let server = engine(true);
    let report = load(
        server.local_addr(),
        &["--conns", "2", "--per-conn", "4", "--reflect"],
    );
    assert_clean(&report);
    // Without --reflect the same bytes are unsolicited requests, and nothing is answered.
    let report = load(
        server.local_addr(),
        &["--conns", "1", "--per-conn", "2", "--timeout", "300ms"],
    );
    assert!(!report.success);
    assert!(report.counts.unexpected > 0);
    assert_eq!(report.counts.answered, 0);
    server.shutdown().unwrap();
}

#[test]
fn open_loop_sends_on_schedule_and_accounts_for_every_request() {
    let server = engine(false);
    let report = load(
        server.local_addr(),
        &["--conns", "4", "--per-conn", "8", "--rate", "2000"],
    );
    assert_clean(&report);
    // 2000/s for 1 s over 4 connections: the schedule, not the server, bounds what is sent.
    assert!(
        report.counts.sent <= 2000 + 4,
        "sent {} > schedule",
        report.counts.sent
    );
    assert_eq!(report.config.rate, Some(2000.0));
    server.shutdown().unwrap();
}

#[test]
fn server_cpu_is_reported_per_request_for_a_server_pid() {
    // The engine runs in this process, so this process's PID is the server's.
    let server = engine(false);
    let pid = std::process::id().to_string();
    let report = load(
        server.local_addr(),
        &["--conns", "2", "--per-conn", "4", "--server-pid", &pid],
    );
    assert_clean(&report);
    let per_request = report
        .server_cpu_us_per_request
        .expect("server CPU measured");
    assert!(per_request > 0.0);
    assert!(report.render_text().contains("server cpu"));
    server.shutdown().unwrap();
}

#[test]
fn a_process_beside_the_server_adds_its_cpu_time() {
    let server = engine(false);
    // An idle process stands for the server, one burning CPU for a proxy in front of it.
    let mut idle = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = idle.id().to_string();
    let mut busy = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let also = busy.id().to_string();
    let report = load(
        server.local_addr(),
        &[
            "--conns",
            "2",
            "--server-pid",
            &pid,
            "--also-server-pid",
            &also,
        ],
    );
    for child in [&mut busy, &mut idle] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_clean(&report);
    assert_eq!(report.config.also_server_pids, [busy.id()]);
    // The busy process's CPU time in the 1 s window is counted; the idle one has next to none.
    let total_ms = report.server_cpu_total_ms.expect("server CPU measured");
    assert!(total_ms > 100.0, "{total_ms} ms");
    assert!(report.render_text().contains(&format!(" + {also})")));
    let alone = Cli::try_parse_from(["loadgen", "--also-server-pid", &also]);
    assert!(alone.is_err(), "--also-server-pid needs --server-pid");
    server.shutdown().unwrap();
}

#[test]
fn every_pattern_against_the_engine_accounts_for_every_unit() {
    let server = engine(false);
    for (pattern, io) in [
        ("notify", "uring"),
        ("stream", "uring"),
        ("stream", "std"),
        ("subscribe", "uring"),
    ] {
        let report = load(
            server.local_addr(),
            &[
                "--conns",
                "3",
                "--per-conn",
                "5",
                "--pattern",
                pattern,
                "--io",
                io,
            ],
        );
        assert_clean(&report);
        assert!(report.counts.answered > 0, "{pattern}: nothing answered");
    }
    let total = server.shutdown().unwrap().total();
    assert!(total.notifies > 0);
}

#[test]
fn a_stream_pattern_against_a_method_without_a_stream_handler_fails_cleanly() {
    let server = engine(false);
    let report = load(
        server.local_addr(),
        &[
            "--conns",
            "1",
            "--per-conn",
            "2",
            "--pattern",
            "subscribe",
            "--method",
            "/none",
        ],
    );
    assert!(report.counts.errors > 0, "{:?}", report.counts);
    assert_eq!(report.counts.answered, 0);
    server.shutdown().unwrap();
}

/// An engine serving Go arpc's pub/sub, with send queues deep enough that a subscriber
/// thread starved of CPU on a loaded machine is late rather than skipped.
fn pubsub_engine(pubsub: ringrpc::PubSub) -> RunningServer {
    let config = EngineConfig::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .max_send_queue_bytes(1 << 30)
        .max_send_queue_frames(1 << 24)
        .build()
        .unwrap();
    Server::builder()
        .config(config)
        .pubsub(pubsub)
        .build()
        .unwrap()
        .start()
        .unwrap()
}

fn try_load(addr: SocketAddr, flags: &[&str]) -> Result<Report, ringrpc_loadgen::RunError> {
    let target = addr.to_string();
    let mut args = vec![
        "loadgen",
        "--target",
        &target,
        "--quiet",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
    ];
    args.extend_from_slice(flags);
    run(&Config::from_cli(Cli::try_parse_from(args).unwrap()).unwrap())
}

/// Every publish answered, and every one of them delivered exactly once to every subscriber.
fn assert_clean_pubsub(report: &Report, subscribers: u64) {
    assert_clean(report);
    let p = report
        .pubsub
        .as_ref()
        .expect("a pubsub run reports deliveries");
    let answered = report.counts.answered;
    assert_eq!(p.subscribers as u64, subscribers);
    assert_eq!(p.expected, answered * subscribers, "{p:?}");
    assert_eq!(p.delivered, p.expected, "{p:?}");
    assert_eq!(
        (
            p.lost,
            p.duplicates,
            p.corrupt,
            p.unexpected,
            p.connection_failures
        ),
        (0, 0, 0, 0, 0),
        "{p:?}"
    );
    assert_eq!(p.per_subscriber.len() as u64, subscribers);
    for sub in &p.per_subscriber {
        assert_eq!(sub.delivered, answered, "{p:?}");
    }
    let delivery = report.delivery_latency_us.as_ref().unwrap();
    assert_eq!(delivery.count, p.delivered, "one latency per delivery");
    let json = report.to_json();
    assert!(json.contains("\"delivery_latency_us\"") && json.contains("\"pubsub\""));
    assert!(
        report
            .render_text()
            .contains("pubsub      topic \"loadgen\"")
    );
}

#[test]
fn pubsub_delivers_every_publish_to_every_subscriber() {
    let pubsub = ringrpc::PubSub::new();
    let server = pubsub_engine(pubsub.clone());
    for io in ["uring", "std"] {
        let report = load(
            server.local_addr(),
            &[
                "--pattern",
                "pubsub",
                "--conns",
                "2",
                "--per-conn",
                "4",
                "--subscribers",
                "3",
                "--io",
                io,
            ],
        );
        assert_clean_pubsub(&report, 3);
    }
    assert_eq!(pubsub.stats().skipped, 0);
    server.shutdown().unwrap();
}

#[test]
fn pubsub_with_a_password_authenticates_every_connection_or_fails_clearly() {
    let server = pubsub_engine(ringrpc::PubSub::new().password("s3cret"));
    let addr = server.local_addr();
    let pubsub = |extra: &[&'static str]| {
        let mut flags = vec![
            "--pattern",
            "pubsub",
            "--conns",
            "2",
            "--per-conn",
            "4",
            "--subscribers",
            "3",
            "--topic",
            "loadgen",
            "--timeout",
            "2s",
        ];
        flags.extend_from_slice(extra);
        flags
    };
    let report = try_load(addr, &pubsub(&["--pubsub-password", "s3cret"])).expect("run");
    assert_clean_pubsub(&report, 3);

    // A wrong password, or none, is refused at setup: an error, not a hang or a clean run.
    let wrong = try_load(addr, &pubsub(&["--pubsub-password", "guess"])).unwrap_err();
    let text = wrong.to_string();
    assert!(
        text.contains("in_A refused: invalid password"),
        "wrong password: {text}"
    );
    let missing = try_load(addr, &pubsub(&[])).unwrap_err().to_string();
    assert!(
        missing.contains("in_S refused") && missing.contains("not authenticated"),
        "no password: {missing}"
    );
    // The binary says so and exits 2.
    let target = addr.to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &target, "--quiet", "--duration", "1s"])
        .args(pubsub(&["--pubsub-password", "guess"]))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid password"), "{stderr}");
    server.shutdown().unwrap();
}

#[test]
fn websocket_transport_against_the_engine_accounts_for_every_unit() {
    let server = engine(false);
    for (pattern, io) in [("call", "uring"), ("call", "std"), ("stream", "uring")] {
        let report = load(
            server.local_addr(),
            &[
                "--conns",
                "2",
                "--per-conn",
                "4",
                "--transport",
                "ws",
                "--pattern",
                pattern,
                "--io",
                io,
            ],
        );
        assert_clean(&report);
    }
    let big = load(
        server.local_addr(),
        &[
            "--conns",
            "1",
            "--per-conn",
            "2",
            "--transport",
            "ws",
            "--payload",
            "70000",
        ],
    );
    assert_clean(&big);
    server.shutdown().unwrap();
}

#[test]
fn websocket_transport_to_a_wrong_path_names_the_refusal() {
    let server = engine(false);
    let target = server.local_addr().to_string();
    let args = [
        "loadgen",
        "--target",
        &target,
        "--transport",
        "ws",
        "--ws-path",
        "/nope",
        "--quiet",
    ];
    let err = run(&Config::from_cli(Cli::try_parse_from(args).unwrap()).unwrap()).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    server.shutdown().unwrap();
}
