//! loadgen against a real ringrpc engine on loopback: both I/O engines, reflect mode, the
//! open loop and server CPU accounting. Assertions are about accounting, never timing.

mod common;

use std::net::SocketAddr;

use clap::Parser;
use common::assert_clean;
use ringrpc::{Config as EngineConfig, RunningServer, Server};
use ringrpc_loadgen::{Cli, Config, Report, run};

fn engine(reflect: bool) -> RunningServer {
    let config = EngineConfig::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .reflect(reflect)
        .build()
        .unwrap();
    Server::builder()
        .config(config)
        .build()
        .unwrap()
        .start()
        .unwrap()
}

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
