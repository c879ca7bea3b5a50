//! Shared helpers of loadgen's integration tests: small arpc servers on loopback, a config
//! built from flags, and the accounting every run must satisfy.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use bytes::BytesMut;
use clap::Parser;
use ringrpc::{Config as EngineConfig, RunningServer, Server};
use ringrpc_loadgen::{Cli, Config, Report};
use ringrpc_protocol::{Command, Decoder, Frame};

/// How a test server answers requests.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    Echo,
    /// Flips the first payload byte of every tenth response on a connection.
    CorruptEveryTenth,
    /// Answers every request with an error response.
    ErrorAll,
    /// Reads requests and never answers.
    Silent,
    /// Echoes this many requests per connection, then closes it.
    CloseAfter(usize),
    /// Writes each response in three pieces a millisecond apart, the last payload byte of
    /// every tenth flipped (so large echoes are checked as they arrive).
    InPiecesCorruptEveryTenthLast,
}

/// A real ringrpc engine on one core and an ephemeral loopback port (`reflect`: writing
/// received bytes back undecoded).
pub fn engine(reflect: bool) -> RunningServer {
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

/// Starts a server on an ephemeral loopback port; it lives until the test process exits.
pub fn spawn_server(behaviour: Behaviour) -> SocketAddr {
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
                Behaviour::InPiecesCorruptEveryTenthLast => {
                    let mut payload = frame.payload.to_vec();
                    if requests % 10 == 0 {
                        *payload.last_mut().unwrap() ^= 0x01;
                    }
                    let wire =
                        Frame::response_to(&frame.header, frame.method.clone(), payload).to_bytes();
                    let third = wire.len() / 3;
                    for piece in [&wire[..third], &wire[third..2 * third], &wire[2 * third..]] {
                        if stream.write_all(piece).is_err() {
                            return;
                        }
                        thread::sleep(std::time::Duration::from_millis(1));
                    }
                    continue;
                }
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

/// Every `--io` driver of arpc over TCP: the scenarios that hold for a client whatever its
/// shape run once with each.
pub const DRIVERS: [&str; 3] = ["uring", "std", "epoll"];

/// `flags` with `--io driver` in front.
pub fn with_driver<'a>(driver: &'a str, flags: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--io", driver];
    all.extend_from_slice(flags);
    all
}

pub fn config(addr: SocketAddr, flags: &[&str]) -> Config {
    let target = addr.to_string();
    let mut args = vec!["loadgen", "--target", target.as_str(), "--quiet"];
    args.extend_from_slice(flags);
    Config::from_cli(Cli::try_parse_from(args).expect("valid flags")).expect("valid config")
}

pub fn assert_accounting(report: &Report) {
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

/// A run with nothing wrong: every measured request answered correctly, exactly once.
pub fn assert_clean(report: &Report) {
    assert!(report.success, "{:?}", report.failures);
    assert!(report.counts.answered > 0);
    assert_accounting(report);
    let n = &report.counts;
    assert_eq!(
        (n.errors, n.mismatches, n.timeouts, n.lost, n.unexpected),
        (0, 0, 0, 0, 0)
    );
}
