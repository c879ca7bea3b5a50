//! `--transport udp` against small in-test UDP servers on loopback: retries after dropped
//! answers, duplicate answers, a server that never answers, and oversize frames refused.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command as Process;
use std::thread;

use bytes::BytesMut;
use common::{assert_accounting, assert_clean, config};
use ringrpc_loadgen::{Transport, run};
use ringrpc_protocol::{Command, Frame, parse_frame};

/// How the test server treats each request datagram.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Answers every request once.
    Echo,
    /// Drops its answer the first time it sees a request whose seq is a multiple of ten;
    /// answers the resend.
    DropFirstOfEveryTenth,
    /// Answers every request twice.
    AnswerTwice,
    /// Reads requests and never answers.
    Silent,
}

fn spawn_udp_server(behaviour: Behaviour) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut seen: HashSet<(SocketAddr, u64)> = HashSet::new();
        let mut out = BytesMut::new();
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(Some((frame, len))) = parse_frame(&buf[..n], u32::MAX >> 8) else {
                panic!("loadgen sent a datagram that is not one frame");
            };
            assert_eq!(len, n, "one frame per datagram");
            assert_eq!(frame.header.cmd, Command::Request);
            let seq = frame.header.seq;
            let copies = match behaviour {
                Behaviour::Silent => 0,
                Behaviour::Echo => 1,
                Behaviour::AnswerTwice => 2,
                Behaviour::DropFirstOfEveryTenth => {
                    let first_time = seen.insert((peer, seq));
                    if seq % 10 == 0 && first_time { 0 } else { 1 }
                }
            };
            out.clear();
            Frame::response_to(
                &frame.header,
                bytes::Bytes::copy_from_slice(frame.method),
                bytes::Bytes::copy_from_slice(frame.payload),
            )
            .encode_to(&mut out);
            for _ in 0..copies {
                let _ = socket.send_to(&out, peer);
            }
        }
    });
    addr
}

const SHORT_RUN: [&str; 8] = [
    "--transport",
    "udp",
    "--duration",
    "600ms",
    "--warmup",
    "100ms",
    "--conns",
    "3",
];

#[test]
fn dropped_answers_are_retried_and_timed_from_the_first_send() {
    let addr = spawn_udp_server(Behaviour::DropFirstOfEveryTenth);
    let mut flags = SHORT_RUN.to_vec();
    // Long enough that no answer merely delayed on a loaded machine is retried.
    flags.extend([
        "--per-conn",
        "4",
        "--threads",
        "1",
        "--udp-retry-after",
        "200ms",
    ]);
    let report = run(&config(addr, &flags)).unwrap();
    assert_clean(&report);
    let n = &report.counts;
    assert_eq!(report.config.transport, Transport::Udp);
    assert_eq!((n.lost, n.duplicates), (0, 0), "{n:?}");
    // One resend per tenth seq: sent / 10, give or take the requests at the window's edges.
    let tenth = n.sent / 10;
    let edge = 3 * 4;
    assert!(
        n.retries + edge >= tenth && n.retries <= tenth + edge,
        "retries {} for {} sent",
        n.retries,
        n.sent
    );
    // A retried request waited at least --udp-retry-after (200 ms) since its first send; the
    // other nine in ten did not.
    assert!(report.latency_us.p50 < 200_000.0, "{:?}", report.latency_us);
    assert!(
        report.latency_us.max >= 200_000.0,
        "{:?}",
        report.latency_us
    );
    assert!(
        report.latency_us.p99 >= 200_000.0,
        "{:?}",
        report.latency_us
    );
    let json = report.to_json();
    for field in [
        "\"retries\"",
        "\"duplicates\"",
        "\"transport\": \"udp\"",
        "\"retry_after\": 200.0",
    ] {
        assert!(json.contains(field), "{field} missing from the JSON");
    }
}

#[test]
fn second_answers_are_duplicates_and_not_timed_twice() {
    let addr = spawn_udp_server(Behaviour::AnswerTwice);
    let mut flags = SHORT_RUN.to_vec();
    // No retry may start on a loaded machine: every second copy is then a duplicate.
    flags.extend(["--per-conn", "2", "--udp-retry-after", "5s"]);
    let report = run(&config(addr, &flags)).unwrap();
    assert_clean(&report);
    let n = &report.counts;
    assert_eq!(
        report.latency_us.count, n.answered,
        "one latency per request"
    );
    assert_eq!(n.retries, 0, "{n:?}");
    // Every answered request's copy is a duplicate, except copies still in flight when the
    // drain ended.
    assert!(
        n.duplicates <= n.answered && n.duplicates + 3 * 2 >= n.answered,
        "{n:?}"
    );
    assert_eq!(n.unexpected, 0);
}

#[test]
fn a_server_that_never_answers_loses_every_request_and_the_binary_fails() {
    let addr = spawn_udp_server(Behaviour::Silent);
    let json = std::env::temp_dir().join(format!("loadgen-udp-lost-{}.json", std::process::id()));
    let output = Process::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &addr.to_string(), "--quiet"])
        .args(["--transport", "udp", "--duration", "3s", "--warmup", "0s"])
        .args(["--conns", "2", "--per-conn", "3", "--timeout", "10s"])
        .args(["--udp-retry-after", "150ms"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let counts = &report["counts"];
    // 2 sockets × 3 in flight, each sent 5 times (4 retries) over 150+300+600+1200 ms and
    // given up 2.4 s after the last (4.65 s in all, past the 3 s window): none refills.
    // The window is long so that a socket thread a loaded machine starts late still sends
    // inside it (a 1 s window once closed before a stalled CI machine ran the thread), and
    // --timeout is past a request's whole life so that a late thread's losses are not
    // timeouts; every measured request is lost after 5 sends.
    let sent = counts["sent"].as_u64().unwrap();
    assert!((3..=6).contains(&sent), "{stdout}");
    assert_eq!(counts["lost"].as_u64(), Some(sent), "{stdout}");
    assert_eq!(counts["retries"].as_u64(), Some(4 * sent), "{stdout}");
    assert_eq!(counts["timeouts"], 0);
    assert_eq!(report["success"], false);
    assert!(
        stdout.contains(&format!(
            "udp         retries {}  duplicates 0  lost {sent}",
            4 * sent
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("{sent} requests lost")),
        "{stderr}"
    );
}

#[test]
fn open_loop_over_udp_sends_on_schedule() {
    let addr = spawn_udp_server(Behaviour::Echo);
    let report = run(&config(
        addr,
        &[
            "--transport",
            "udp",
            "--rate",
            "2000",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
            "--conns",
            "2",
            // No resend from a loaded machine's scheduling delays: retries stay 0.
            "--udp-retry-after",
            "2s",
        ],
    ))
    .unwrap();
    assert_clean(&report);
    let sent = report.counts.sent;
    assert!(
        (1900..=2100).contains(&sent),
        "sent {sent} at 2000/s for 1 s"
    );
    assert_eq!(report.counts.retries, 0);
}

#[test]
fn lost_requests_free_their_window_slots() {
    let addr = spawn_udp_server(Behaviour::Silent);
    let report = run(&config(
        addr,
        &[
            "--transport",
            "udp",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--conns",
            "1",
            "--per-conn",
            "1",
            "--udp-retry-after",
            "2ms",
            "--udp-attempts",
            "2",
        ],
    ))
    .unwrap();
    assert_accounting(&report);
    let n = &report.counts;
    // Each request is given up 2 + 4 ms after its first send, so more than one went out.
    assert!(
        n.sent > 5 && n.lost == n.sent && n.retries == n.sent,
        "{n:?}"
    );
    assert!(!report.success);
}

#[test]
fn oversize_payload_is_refused_before_anything_is_sent() {
    let output = Process::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--target",
            "127.0.0.1:9",
            "--transport",
            "udp",
            "--payload",
            "2000",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--payload 2000"), "{stderr}");
    assert!(stderr.contains("--udp-max-datagram 1472"), "{stderr}");
    // The same payload fits a larger datagram limit.
    let output = Process::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--target",
            "127.0.0.1:9",
            "--transport",
            "udp",
            "--payload",
            "70000",
        ])
        .args(["--udp-max-datagram", "65507"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--udp-max-datagram 65507"));
}
