//! `--pattern pubsub` against a faulty pub/sub server on loopback: deliveries it drops or
//! sends twice are counted as lost and duplicated, and fail the run. Assertions are about
//! accounting, never timing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::BytesMut;
use common::{assert_accounting, config};
use ringrpc_loadgen::run;
use ringrpc_protocol::{Command, Decoder, Flags, Frame, write_frame};

/// How the fake server mangles deliveries of the n-th publication (counted from 1).
#[derive(Clone, Copy)]
struct Faults {
    /// Never delivers every `drop_every`-th publication to the first subscriber.
    drop_every: usize,
    /// Delivers every `duplicate_every`-th publication twice to every subscriber.
    duplicate_every: usize,
}

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

/// A pub/sub server answering in_A, in_S and in_P, with `faults` in its deliveries.
fn spawn_faulty_pubsub(faults: Faults) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let subscribers: Subscribers = Arc::default();
    let published = Arc::new(Mutex::new(0usize));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (subs, published) = (Arc::clone(&subscribers), Arc::clone(&published));
            thread::spawn(move || serve(stream, &subs, &published, faults));
        }
    });
    addr
}

fn serve(mut stream: TcpStream, subs: &Subscribers, published: &Mutex<usize>, faults: Faults) {
    stream.set_nodelay(true).unwrap();
    let decoder = Decoder::default();
    let (mut rx, mut buf) = (BytesMut::new(), vec![0; 64 * 1024]);
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        rx.extend_from_slice(&buf[..n]);
        while let Ok(Some(frame)) = decoder.decode(&mut rx) {
            if frame.header.cmd != Command::Request {
                continue;
            }
            let mut tx = BytesMut::new();
            Frame::response_to(&frame.header, frame.method.clone(), Vec::new()).encode_to(&mut tx);
            match &frame.method[..] {
                b"in_S" => {
                    // Answer before this connection can receive any delivery.
                    stream.write_all(&tx).unwrap();
                    subs.lock().unwrap().push(stream.try_clone().unwrap());
                    continue;
                }
                b"in_P" => {
                    stream.write_all(&tx).unwrap();
                    let mut notify = BytesMut::new();
                    let (cmd, flags) = (Command::Notify, Flags::default());
                    write_frame(&mut notify, cmd, flags, 0, 0, b"in_P", &frame.payload);
                    let mut count = published.lock().unwrap();
                    *count += 1;
                    for (i, sub) in subs.lock().unwrap().iter_mut().enumerate() {
                        if i == 0 && *count % faults.drop_every == 0 {
                            continue;
                        }
                        let times = if *count % faults.duplicate_every == 0 {
                            2
                        } else {
                            1
                        };
                        for _ in 0..times {
                            let _ = sub.write_all(&notify);
                        }
                    }
                }
                _ => stream.write_all(&tx).unwrap(),
            }
        }
    }
}

#[test]
fn dropped_and_duplicated_deliveries_fail_the_run() {
    let addr = spawn_faulty_pubsub(Faults {
        drop_every: 7,
        duplicate_every: 11,
    });
    let report = run(&config(
        addr,
        &[
            "--pattern",
            "pubsub",
            "--conns",
            "2",
            "--per-conn",
            "2",
            "--subscribers",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--timeout",
            "500ms",
            "--io",
            "std",
            "--pubsub-password",
            "anything",
        ],
    ))
    .expect("run");
    // The publishes themselves all succeeded.
    assert_accounting(&report);
    assert_eq!(report.counts.answered, report.counts.sent);
    let p = report.pubsub.as_ref().unwrap();
    assert!(!report.success);
    assert_eq!(report.exit_code(), 1);
    assert!(p.lost > 0 && p.duplicates > 0, "{p:?}");
    assert_eq!(p.corrupt, 0, "{p:?}");
    // Only the first subscriber the server saw misses publications (which of loadgen's
    // subscribers connected first is up to the scheduler); all see the duplicates.
    let losers: Vec<_> = p.per_subscriber.iter().filter(|s| s.lost > 0).collect();
    assert_eq!(losers.len(), 1, "{p:?}");
    assert_eq!(losers[0].lost, p.lost, "{p:?}");
    assert_eq!(p.delivered + p.lost, p.expected, "{p:?}");
    assert!(p.per_subscriber.iter().all(|s| s.duplicates > 0), "{p:?}");
    let failures = report.failures.join("; ");
    assert!(
        failures.contains("deliveries lost") && failures.contains("duplicate deliveries"),
        "{failures}"
    );
    assert!(report.render_text().contains("result      FAILED"));
}
