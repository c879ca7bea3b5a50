//! The datagram transport end to end on loopback: echo, notify, two endpoints calling each
//! other, timeouts, retries with duplicate suppression through a lossy relay, garbage,
//! oversize refusal, many peers, and a flood of distinct seqs kept within bounds.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::unbounded;
use ringrpc::{CallError, Retry, UdpEndpoint};
use ringrpc_protocol::{Decoder, Frame};

const LONG: Duration = Duration::from_secs(10);

fn raw_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s
}

fn recv_frame(s: &UdpSocket) -> Frame {
    let mut buf = [0u8; 65536];
    let n = s.recv(&mut buf).unwrap();
    let mut bytes = BytesMut::from(&buf[..n]);
    let f = Decoder::default().decode(&mut bytes).unwrap().unwrap();
    assert!(bytes.is_empty(), "one frame per datagram");
    f
}

/// An endpoint whose `/count` handler counts its runs and answers the count.
fn counting_endpoint() -> (UdpEndpoint, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let ep = UdpEndpoint::builder("127.0.0.1:0")
        .route("/count", move |ctx| {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            ctx.reply(n.to_string().as_bytes());
        })
        .start()
        .unwrap();
    (ep, runs)
}

#[test]
fn echo_and_notify_between_two_endpoints() {
    let (notes_tx, notes) = unbounded();
    let server = UdpEndpoint::builder("127.0.0.1:0")
        .route("/note", move |ctx| {
            notes_tx.send(ctx.payload().to_vec()).unwrap()
        })
        .start()
        .unwrap();
    let client = UdpEndpoint::builder("127.0.0.1:0").start().unwrap();
    for i in 0..200u32 {
        let p = Bytes::from(format!("datagram {i}"));
        assert_eq!(
            client.call(server.local_addr(), "/echo", p.clone(), LONG),
            Ok(p)
        );
    }
    client
        .notify(server.local_addr(), "/note", b"fire")
        .unwrap();
    assert_eq!(notes.recv_timeout(LONG).unwrap(), b"fire");
    let c = client.shutdown().unwrap().total().udp;
    let s = server.shutdown().unwrap().total().udp;
    assert_eq!(c.calls, 200);
    assert_eq!(s.datagrams_in, 201);
    assert_eq!(s.malformed, 0);
}

#[test]
fn two_endpoints_call_each_other_at_once() {
    let a = UdpEndpoint::builder("127.0.0.1:0")
        .route("/who", |ctx| {
            ctx.reply(b"a");
        })
        .cores(2)
        .start()
        .unwrap();
    let b = UdpEndpoint::builder("127.0.0.1:0")
        .route("/who", |ctx| {
            ctx.reply(b"b");
        })
        .cores(2)
        .start()
        .unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            thread::spawn(move || {
                let want: &[u8] = if i % 2 == 0 { b"b" } else { b"a" };
                for _ in 0..200 {
                    let got = from
                        .call(to.local_addr(), "/who", Bytes::new(), LONG)
                        .unwrap();
                    assert_eq!(&got[..], want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for ep in [a, b] {
        let ep = Arc::into_inner(ep).unwrap();
        let udp = ep.shutdown().unwrap().total().udp;
        assert_eq!(udp.calls, 400);
        assert_eq!(udp.timeouts, 0);
    }
}

#[test]
fn a_call_to_a_silent_peer_times_out_on_time_and_leaves_nothing() {
    let silent = raw_socket();
    let client = UdpEndpoint::builder("127.0.0.1:0").start().unwrap();
    let started = Instant::now();
    let got = client.call(
        silent.local_addr().unwrap(),
        "/echo",
        "x".into(),
        Duration::from_millis(300),
    );
    let took = started.elapsed();
    assert_eq!(got, Err(CallError::Timeout));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let udp = client.shutdown().unwrap().total().udp;
    assert_eq!(udp.timeouts, 1);
    // Resends at 20, 60 and 140 ms; the next would be the deadline (fewer if this machine
    // stalled the reactor past one of them).
    assert!((1..=3).contains(&udp.retries), "{udp:?}");
    // The silent peer saw the first send and every resend, all the same request.
    let mut seqs = Vec::new();
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while let Ok(n) = silent.recv(&mut buf) {
        seqs.push(u64::from_le_bytes(buf[8..16].try_into().unwrap()));
        assert!(n > 16);
    }
    assert_eq!(seqs.len() as u64, udp.retries + 1);
    assert!(seqs.iter().all(|s| *s == seqs[0]));
}

/// Forwards datagrams between one client and `server`, dropping the first `drop` responses.
fn lossy_relay(server: SocketAddr, drop: usize) -> (SocketAddr, thread::JoinHandle<usize>) {
    let relay = raw_socket();
    relay
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let addr = relay.local_addr().unwrap();
    let t = thread::spawn(move || {
        let mut client = None;
        let mut dropped = 0;
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = relay.recv_from(&mut buf) {
            if from == server {
                if dropped < drop {
                    dropped += 1;
                    continue;
                }
                if let Some(c) = client {
                    relay.send_to(&buf[..n], c).unwrap();
                }
            } else {
                client = Some(from);
                relay.send_to(&buf[..n], server).unwrap();
            }
        }
        dropped
    });
    (addr, t)
}

#[test]
fn a_lost_answer_is_retried_and_the_handler_runs_exactly_once() {
    let (server, runs) = counting_endpoint();
    let (relay, relay_thread) = lossy_relay(server.local_addr(), 1);
    let client = UdpEndpoint::builder("127.0.0.1:0").start().unwrap();
    let got = client.call(relay, "/count", Bytes::new(), LONG).unwrap();
    assert_eq!(&got[..], b"1", "the answer to the first (and only) run");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the retry was answered from the cache"
    );
    let c = client.shutdown().unwrap().total().udp;
    let s = server.shutdown().unwrap().total().udp;
    assert!(c.retries >= 1);
    assert!(s.duplicates >= 1);
    assert_eq!(relay_thread.join().unwrap(), 1);
}

#[test]
fn no_retry_methods_are_sent_once() {
    let (server, runs) = counting_endpoint();
    let (relay, relay_thread) = lossy_relay(server.local_addr(), 1);
    let client = UdpEndpoint::builder("127.0.0.1:0")
        .no_retry("/count")
        .start()
        .unwrap();
    let got = client.call(relay, "/count", Bytes::new(), Duration::from_millis(300));
    assert_eq!(got, Err(CallError::Timeout));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(client.shutdown().unwrap().total().udp.retries, 0);
    server.shutdown().unwrap();
    relay_thread.join().unwrap();
}

#[test]
fn garbage_truncated_and_oversize_datagrams_are_dropped_and_the_rest_served() {
    let server = UdpEndpoint::builder("127.0.0.1:0").start().unwrap();
    let to = server.local_addr();
    let s = raw_socket();
    let valid = Frame::request(1, "/echo", "ok").to_bytes();
    let mut two = valid.to_vec();
    two.extend_from_slice(&valid);
    s.send_to(b"definitely not arpc", to).unwrap();
    s.send_to(&valid[..valid.len() - 1], to).unwrap();
    s.send_to(&two, to).unwrap();
    s.send_to(&[0u8; 8], to).unwrap();
    // Bigger than a receive buffer (16 KiB by default): reported truncated by the kernel,
    // dropped.
    s.send_to(
        &Frame::request(2, "/echo", vec![7u8; 20_000]).to_bytes(),
        to,
    )
    .unwrap();
    s.send_to(&valid, to).unwrap();
    let f = recv_frame(&s);
    assert_eq!((f.header.seq, &f.payload[..]), (1, &b"ok"[..]));
    let udp = server.shutdown().unwrap().total().udp;
    assert_eq!(udp.malformed, 5);
    assert_eq!(udp.datagrams_in, 6);
}

#[test]
fn frames_over_the_datagram_limit_are_refused_at_the_sender() {
    let server = UdpEndpoint::builder("127.0.0.1:0").start().unwrap();
    let client = UdpEndpoint::builder("127.0.0.1:0").start().unwrap();
    let got = client.call(server.local_addr(), "/echo", vec![0u8; 1500].into(), LONG);
    assert!(
        matches!(got, Err(CallError::TooLarge { max: 1472, .. })),
        "{got:?}"
    );
    let notify = client.notify(server.local_addr(), "/echo", &[0u8; 1500]);
    assert!(
        notify.is_ok(),
        "a notify is queued; its refusal is counted at the reactor"
    );
    // A larger limit lets the same call through.
    let big = UdpEndpoint::builder("127.0.0.1:0")
        .max_datagram(9000)
        .configure(|c| c.recv_buffer_size(16 * 1024))
        .start()
        .unwrap();
    let big_server = UdpEndpoint::builder("127.0.0.1:0")
        .max_datagram(9000)
        .configure(|c| c.recv_buffer_size(16 * 1024))
        .start()
        .unwrap();
    let p = Bytes::from(vec![3u8; 8000]);
    let got = big.call(big_server.local_addr(), "/echo", p.clone(), LONG);
    assert!(got.as_ref() == Ok(&p), "the 8000-byte echo came back");
    // A limit no receive buffer can hold is refused at startup, naming the fix.
    let err = UdpEndpoint::builder("127.0.0.1:0")
        .max_datagram(9000)
        .configure(|c| c.recv_buffer_size(4096))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("recv_buffer_size"), "{err}");
    for ep in [client, server, big, big_server] {
        ep.shutdown().unwrap();
    }
}

#[test]
fn many_peers_are_each_answered() {
    let server = UdpEndpoint::builder("127.0.0.1:0")
        .cores(2)
        .start()
        .unwrap();
    let peers: Vec<_> = (0..100).map(|_| raw_socket()).collect();
    for (i, p) in peers.iter().enumerate() {
        let req = Frame::request(i as u64, "/echo", format!("peer {i}")).to_bytes();
        p.send_to(&req, server.local_addr()).unwrap();
    }
    for (i, p) in peers.iter().enumerate() {
        let f = recv_frame(p);
        assert_eq!(f.header.seq, i as u64);
        assert_eq!(f.payload, format!("peer {i}").as_bytes());
    }
    server.shutdown().unwrap();
}

#[test]
fn a_flood_of_distinct_seqs_keeps_the_cache_bounded_and_never_runs_a_request_twice() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let server = UdpEndpoint::builder("127.0.0.1:0")
        .route("/count", move |ctx| {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            ctx.reply(n.to_string().as_bytes());
        })
        .configure(|c| c.udp_dedup_capacity(100))
        .start()
        .unwrap();
    let s = raw_socket();
    let total = 3000u64;
    // In bursts, reading every answer, so the loopback never drops.
    for burst in 0..(total / 100) {
        for i in 0..100 {
            let req = Frame::request(burst * 100 + i, "/count", "").to_bytes();
            s.send_to(&req, server.local_addr()).unwrap();
        }
        for _ in 0..100 {
            assert!(!recv_frame(&s).is_error());
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), total as usize);
    // A retry of a recent one is answered from the cache; of an old one, dropped.
    s.send_to(
        &Frame::request(total - 1, "/count", "").to_bytes(),
        server.local_addr(),
    )
    .unwrap();
    assert_eq!(&recv_frame(&s).payload[..], total.to_string().as_bytes());
    s.send_to(
        &Frame::request(0, "/count", "").to_bytes(),
        server.local_addr(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(s.recv(&mut buf).is_err(), "no answer to a stale retry");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        total as usize,
        "nothing ran twice"
    );
    let udp = server.shutdown().unwrap().total().udp;
    assert_eq!((udp.duplicates, udp.stale), (2, 1));
}

#[test]
fn retry_policy_is_configurable() {
    let silent = raw_socket();
    let client = UdpEndpoint::builder("127.0.0.1:0")
        .retry(Retry {
            first_after: Duration::from_millis(10),
            max_attempts: 2,
        })
        .start()
        .unwrap();
    let got = client.call(
        silent.local_addr().unwrap(),
        "/echo",
        Bytes::new(),
        Duration::from_millis(200),
    );
    assert_eq!(got, Err(CallError::Timeout));
    assert_eq!(client.shutdown().unwrap().total().udp.retries, 1);
}

#[test]
fn a_burst_to_one_peer_arrives_as_one_frame_per_datagram_with_and_without_gso() {
    for gso in [true, false] {
        let server = UdpEndpoint::builder("127.0.0.1:0")
            .configure(|c| c.udp_gso(gso))
            .start()
            .unwrap();
        let s = raw_socket();
        // Equal sizes (one GSO run) then a different size (a run of its own).
        for seq in 0..40u64 {
            let payload = if seq < 30 {
                "same size"
            } else {
                "another size!"
            };
            s.send_to(
                &Frame::request(seq, "/echo", payload).to_bytes(),
                server.local_addr(),
            )
            .unwrap();
        }
        let mut seqs: Vec<u64> = (0..40).map(|_| recv_frame(&s).header.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..40).collect::<Vec<_>>(), "gso {gso}");
        let udp = server.shutdown().unwrap().total().udp;
        assert_eq!((udp.datagrams_out, udp.send_errors), (40, 0));
    }
}
