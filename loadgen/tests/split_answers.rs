//! Answers cut inside their header and inside their method reach every driver in pieces: each
//! is completed from the bytes it lacks and checked to the last byte, small and large (the
//! large ones checked as they arrive once their method is in).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use common::{assert_accounting, config};
use ringrpc_loadgen::run;
use ringrpc_protocol::{Decoder, Frame};

/// Writes every answer in three pieces (5 bytes: inside the header; then up to 3 bytes into
/// the method; then the rest), half a millisecond apart, the last payload byte of every tenth
/// flipped.
fn spawn_splitting_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream.set_nodelay(true).unwrap();
            thread::spawn(move || {
                let decoder = Decoder::default();
                let mut rx = BytesMut::new();
                let mut buf = vec![0; 64 * 1024];
                let mut answered = 0u64;
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    rx.extend_from_slice(&buf[..n]);
                    while let Ok(Some(frame)) = decoder.decode(&mut rx) {
                        answered += 1;
                        let mut payload = frame.payload.to_vec();
                        if answered % 10 == 0 {
                            *payload.last_mut().unwrap() ^= 0x01;
                        }
                        let wire =
                            Frame::response_to(&frame.header, frame.method, payload).to_bytes();
                        for piece in [&wire[..5], &wire[5..19], &wire[19..]] {
                            if stream.write_all(piece).is_err() {
                                return;
                            }
                            thread::sleep(Duration::from_micros(500));
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn answers_cut_in_their_header_and_method_are_checked_to_the_last_byte() {
    let addr = spawn_splitting_server();
    for driver in ["uring", "epoll", "std"] {
        for payload in [32usize, 8192] {
            let payload_text = payload.to_string();
            let flags = [
                "--duration",
                "500ms",
                "--warmup",
                "0s",
                "--conns",
                "2",
                "--per-conn",
                "1",
                "--payload",
                &payload_text,
                "--driver",
                driver,
            ];
            let report = run(&config(addr, &flags)).unwrap();
            assert_accounting(&report);
            let n = &report.counts;
            assert!(
                n.mismatches > 0 && n.answered >= 5 * n.mismatches,
                "{driver} {payload}: {n:?}"
            );
            assert_eq!(
                (n.unexpected, n.connection_failures),
                (0, 0),
                "{driver} {payload}"
            );
            let sample = report.diagnostics.first_mismatch.as_deref().unwrap();
            let last = format!("payload byte {} of {payload}", payload - 1);
            assert!(sample.contains(&last), "{driver}: {sample}");
        }
    }
}
