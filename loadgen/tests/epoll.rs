//! `--io epoll` (`--driver epoll`), the second client, where it differs from the others:
//! `--driver` as the flag's alias, answers to the wrong seq, the real engine closed and open
//! loop and in reflect mode, and the combinations it does not drive refused. The scenarios
//! every driver shares (echo accounting, corruption, pieces, errors, timeouts, closed
//! connections) run per driver in loopback.rs. Assertions are about accounting, never timing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command as Process;
use std::thread;

use bytes::BytesMut;
use clap::Parser;
use common::{Behaviour, assert_accounting, assert_clean, config, engine, spawn_server};
use ringrpc_loadgen::{Cli, Config, IoMode, run};
use ringrpc_protocol::{Decoder, Frame};

fn epoll<'a>(flags: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--driver", "epoll"];
    all.extend_from_slice(flags);
    all
}

#[test]
fn driver_is_an_alias_of_io() {
    let addr = spawn_server(Behaviour::Echo);
    assert_eq!(config(addr, &["--driver", "epoll"]).io, IoMode::Epoll);
    assert_eq!(config(addr, &["--io", "epoll"]).io, IoMode::Epoll);
    assert_eq!(config(addr, &["--driver", "std"]).io, IoMode::Std);
}

/// Answers every tenth request with a seq one million past it: an answer to nothing
/// outstanding, so it is unexpected and its request times out.
fn spawn_wrong_seq_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let decoder = Decoder::default();
                let (mut rx, mut tx) = (BytesMut::new(), BytesMut::new());
                let mut buf = vec![0; 64 * 1024];
                let mut requests = 0u64;
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    rx.extend_from_slice(&buf[..n]);
                    while let Ok(Some(frame)) = decoder.decode(&mut rx) {
                        requests += 1;
                        let mut header = frame.header;
                        if requests % 10 == 0 {
                            header.seq += 1_000_000;
                        }
                        let answer = Frame::response_to(&header, frame.method, frame.payload);
                        answer.encode_to(&mut tx);
                    }
                    if stream.write_all(&tx).is_err() {
                        return;
                    }
                    tx.clear();
                }
            });
        }
    });
    addr
}

#[test]
fn epoll_detects_answers_to_the_wrong_seq() {
    let addr = spawn_wrong_seq_server();
    let report = run(&config(
        addr,
        &epoll(&[
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--conns",
            "2",
            "--per-conn",
            "4",
            "--timeout",
            "200ms",
        ]),
    ))
    .unwrap();
    assert_accounting(&report);
    assert!(report.counts.unexpected > 0, "{:?}", report.counts);
    assert!(report.counts.timeouts > 0, "{:?}", report.counts);
    assert!(!report.success);
}

fn load_engine(addr: SocketAddr, flags: &[&str]) -> ringrpc_loadgen::Report {
    let target = addr.to_string();
    let mut args = vec![
        "loadgen", "--target", &target, "--quiet", "--warmup", "200ms",
    ];
    args.extend(epoll(flags));
    run(&Config::from_cli(Cli::try_parse_from(args).unwrap()).unwrap()).expect("run")
}

#[test]
fn epoll_against_the_engine_closed_open_loop_and_reflect() {
    let server = engine(false);
    let report = load_engine(
        server.local_addr(),
        &["--duration", "1s", "--conns", "4", "--per-conn", "8"],
    );
    assert_clean(&report);
    // Open loop: 2000/s for 1 s over 4 connections; the schedule bounds what is sent.
    let report = load_engine(
        server.local_addr(),
        &["--duration", "1s", "--conns", "4", "--rate", "2000"],
    );
    assert_clean(&report);
    assert!(report.counts.sent <= 2000 + 4, "{:?}", report.counts);
    assert!(report.counts.sent >= 1000, "{:?}", report.counts);
    server.shutdown().unwrap();

    let reflect = engine(true);
    let report = load_engine(
        reflect.local_addr(),
        &[
            "--duration",
            "500ms",
            "--conns",
            "2",
            "--payload",
            "64KiB",
            "--reflect",
        ],
    );
    assert_clean(&report);
    reflect.shutdown().unwrap();
}

#[test]
fn binary_refuses_epoll_outside_tcp_arpc() {
    for flags in [
        &["--driver", "epoll", "--transport", "udp"][..],
        &["--driver", "epoll", "--transport", "ws"],
        &["--io", "epoll", "--proto", "grpc"],
    ] {
        let output = Process::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--target", "127.0.0.1:9"])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--io epoll drives arpc over TCP only"),
            "{stderr}"
        );
    }
}
