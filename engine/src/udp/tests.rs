//! The datagram core without sockets: requests, duplicates, retries, timeouts, garbage,
//! limits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ringrpc_protocol::{Decoder, Frame};

use super::*;

fn limits() -> UdpLimits {
    UdpLimits {
        max_datagram: DEFAULT_MAX_DATAGRAM,
        max_body: 1 << 20,
        dedup_window: Duration::from_secs(5),
        dedup_capacity: 100,
        max_peers: 10,
        max_in_flight_per_peer: 16,
        peer_rate: None,
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn mailbox() -> Arc<Mailbox> {
    Arc::new(Mailbox::new(16))
}

fn decode(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = Decoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "exactly one frame per datagram");
    frame
}

/// A router whose `/count` handler counts its runs.
fn counting_router() -> (Router, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut router = Router::with_builtins();
    let counter = runs.clone();
    router
        .add("/count", move |ctx| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            ctx.reply(n.to_string().as_bytes());
        })
        .unwrap();
    (router, runs)
}

#[test]
fn a_request_is_answered_to_its_sender_and_a_retry_from_the_cache() {
    let (router, runs) = counting_router();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let t = Instant::now();
    let req = Frame::request(9, "/count", "").to_bytes();
    assert!(core.on_datagram(t, addr(1), &req, &router, &mb).is_none());
    assert!(core.on_datagram(t, addr(1), &req, &router, &mb).is_none());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(core.out.len(), 2);
    for (to, bytes) in core.out.drain(..) {
        assert_eq!(to, addr(1));
        let f = decode(&bytes);
        assert_eq!((f.header.cmd, f.header.seq), (Command::Response, 9));
        assert_eq!(&f.payload[..], b"1");
    }
    assert_eq!(core.stats.duplicates, 1);
    // The same seq from another peer is another request.
    core.on_datagram(t, addr(2), &req, &router, &mb);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn garbage_truncated_and_two_frame_datagrams_are_dropped_and_counted() {
    let router = Router::with_builtins();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let t = Instant::now();
    let req = Frame::request(1, "/echo", "hi").to_bytes();
    let mut two = req.to_vec();
    two.extend_from_slice(&req);
    for bad in [
        &b""[..],
        b"garbage",
        &req[..req.len() - 1],
        &two,
        &[0xff; 16],
    ] {
        core.on_datagram(t, addr(1), bad, &router, &mb);
    }
    assert_eq!(core.stats.malformed, 5);
    assert!(core.out.is_empty());
    core.on_datagram(t, addr(1), &req, &router, &mb);
    assert_eq!(&decode(&core.out[0].1).payload[..], b"hi");
}

type Outcomes = Arc<Mutex<Vec<Result<Bytes, CallError>>>>;

fn recorder() -> (Outcomes, impl Fn() -> CallDone) {
    let outcomes: Outcomes = Arc::default();
    let o = outcomes.clone();
    (outcomes, move || {
        let o = o.clone();
        Box::new(move |r| o.lock().unwrap().push(r))
    })
}

#[test]
fn a_call_is_resent_with_backoff_and_answered_once() {
    let router = Router::with_builtins();
    let mb = mailbox();
    let mut core = UdpCore::new(3, limits());
    let (outcomes, done) = recorder();
    let t = Instant::now();
    let retry = Retry {
        first_after: Duration::from_millis(20),
        max_attempts: 3,
    };
    let (seq, at) = core
        .start_call(
            t,
            addr(7),
            b"/x",
            b"q",
            Duration::from_secs(1),
            Some(retry),
            done(),
        )
        .unwrap();
    assert_eq!(seq >> 48, 3, "the seq names its core");
    assert_eq!(at, t + Duration::from_millis(20));
    let first = core.out.remove(0);
    // Resent at 20 ms, then at 20 + 40 ms; then only the deadline is left.
    let at = core.on_call_timer(at, seq).unwrap();
    assert_eq!(at, t + Duration::from_millis(60));
    let at = core.on_call_timer(at, seq).unwrap();
    assert_eq!(at, t + Duration::from_secs(1));
    assert_eq!(core.stats.retries, 2);
    assert!(
        core.out
            .iter()
            .all(|(to, f)| *to == addr(7) && *f == first.1)
    );
    // The answer (twice, as a server answering two copies would) completes it once.
    let response = Frame::response_to(&decode(&first.1).header, "/x", "a").to_bytes();
    core.on_datagram(at, addr(7), &response, &router, &mb);
    core.on_datagram(at, addr(7), &response, &router, &mb);
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![Ok(Bytes::from_static(b"a"))]
    );
    assert_eq!(core.stats.stray_responses, 1);
    assert_eq!(core.on_call_timer(at, seq), None, "nothing left after it");
    assert_eq!(core.calls_pending(), 0);
}

#[test]
fn a_call_times_out_at_its_deadline_and_leaves_nothing_behind() {
    let router = Router::with_builtins();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let (outcomes, done) = recorder();
    let t = Instant::now();
    let (seq, at) = core
        .start_call(
            t,
            addr(7),
            b"/x",
            b"",
            Duration::from_millis(50),
            None,
            done(),
        )
        .unwrap();
    assert_eq!(
        at,
        t + Duration::from_millis(50),
        "no retry: only the deadline"
    );
    assert_eq!(core.on_call_timer(at, seq), None);
    assert_eq!(*outcomes.lock().unwrap(), vec![Err(CallError::Timeout)]);
    assert_eq!(core.calls_pending(), 0);
    // Its late answer is a stray.
    let late = Frame::response_to(&Frame::request(seq, "/x", "").header, "/x", "").to_bytes();
    core.on_datagram(at, addr(7), &late, &router, &mb);
    assert_eq!(core.stats.stray_responses, 1);
    assert_eq!(outcomes.lock().unwrap().len(), 1);
}

#[test]
fn an_answer_from_another_address_does_not_complete_a_call() {
    let router = Router::with_builtins();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let (outcomes, done) = recorder();
    let t = Instant::now();
    let (seq, _) = core
        .start_call(t, addr(7), b"/x", b"", Duration::from_secs(1), None, done())
        .unwrap();
    let forged = Frame::response_to(&Frame::request(seq, "/x", "").header, "/x", "").to_bytes();
    core.on_datagram(t, addr(8), &forged, &router, &mb);
    assert!(outcomes.lock().unwrap().is_empty());
    assert_eq!(core.calls_pending(), 1);
}

#[test]
fn oversize_frames_are_refused_at_the_sender() {
    let mut core = UdpCore::new(0, limits());
    let (outcomes, done) = recorder();
    let big = vec![0u8; DEFAULT_MAX_DATAGRAM];
    let started = core.start_call(
        Instant::now(),
        addr(7),
        b"/x",
        &big,
        Duration::from_secs(1),
        None,
        done(),
    );
    assert!(started.is_none());
    assert!(matches!(
        outcomes.lock().unwrap()[0],
        Err(CallError::TooLarge {
            max: DEFAULT_MAX_DATAGRAM,
            ..
        })
    ));
    assert!(core.out.is_empty());
    let notify = Frame::notify(0, "/n", big).to_bytes();
    assert!(core.notify(addr(7), notify).is_err());
}

#[test]
fn an_answer_too_big_for_a_datagram_becomes_an_error_saying_so() {
    let router = Router::with_builtins();
    let mb = mailbox();
    let mut core = UdpCore::new(
        0,
        UdpLimits {
            max_datagram: 100,
            ..limits()
        },
    );
    let req = Frame::request(4, "/echo", vec![b'x'; 90]).to_bytes();
    core.on_datagram(Instant::now(), addr(1), &req, &router, &mb);
    let f = decode(&core.out[0].1);
    assert!(f.is_error() && f.header.seq == 4);
    assert!(String::from_utf8_lossy(&f.payload).contains("does not fit one datagram"));
}

/// Found by the `udp` fuzz target: the error that replaces an answer too big for a datagram
/// was itself over a small `udp_max_datagram` (77 bytes for a limit of 64), so the core
/// sent a datagram past its own limit. It now fits, whatever the method's length.
#[test]
fn the_error_replacing_a_too_big_answer_fits_the_datagram_limit_too() {
    let router = Router::with_builtins();
    let mb = mailbox();
    for (max, method) in [
        (64, "/echo".to_string()),
        (64, format!("/{}", "m".repeat(126))),
        (100, "/echo".into()),
    ] {
        let mut core = UdpCore::new(
            0,
            UdpLimits {
                max_datagram: max,
                ..limits()
            },
        );
        let mut r = Router::with_builtins();
        r.add(&method, |ctx: &mut crate::router::Context<'_>| {
            ctx.reply(&[b'y'; 300])
        })
        .unwrap();
        let router = if method == "/echo" { &router } else { &r };
        let req = Frame::request(9, method.clone(), vec![b'x'; 200]).to_bytes();
        core.on_datagram(Instant::now(), addr(1), &req, router, &mb);
        let (_, answer) = &core.out[0];
        assert!(
            answer.len() <= max,
            "a {}-byte answer past the {max}-byte limit",
            answer.len()
        );
        let f = decode(answer);
        assert!(f.is_error() && f.header.seq == 9, "{f:?}");
    }
}

#[test]
fn a_flood_of_distinct_seqs_stays_bounded_and_old_retries_never_run_again() {
    let (router, runs) = counting_router();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let t = Instant::now();
    for seq in 0..10_000u64 {
        let req = Frame::request(seq, "/count", "").to_bytes();
        core.on_datagram(t, addr(1), &req, &router, &mb);
    }
    assert_eq!(core.cached(), 100, "the cache's capacity");
    assert_eq!(runs.load(Ordering::SeqCst), 10_000, "each ran once");
    assert_eq!(core.out.len(), 10_000, "each answered");
    // A retry of an evicted one is dropped, a retry of a kept one answered from the cache.
    core.out.clear();
    core.on_datagram(
        t,
        addr(1),
        &Frame::request(3, "/count", "").to_bytes(),
        &router,
        &mb,
    );
    assert!(core.out.is_empty());
    assert_eq!(core.stats.stale, 1);
    core.on_datagram(
        t,
        addr(1),
        &Frame::request(9_999, "/count", "").to_bytes(),
        &router,
        &mb,
    );
    assert_eq!(&decode(&core.out[0].1).payload[..], b"10000");
    assert_eq!(runs.load(Ordering::SeqCst), 10_000);
    // After the window, the peer and its floor are forgotten: it may start over.
    let later = t + Duration::from_secs(6);
    let (_, forgotten) = core.sweep(later);
    assert_eq!(forgotten.len(), 1, "handed to the disconnect hooks");
    assert_eq!(forgotten[0].peer, addr(1));
    assert!(UdpCore::owns(forgotten[0].id));
    assert_eq!(core.cached(), 0);
    assert_eq!(core.peers.len(), 0);
    core.out.clear();
    core.on_datagram(
        later,
        addr(1),
        &Frame::request(1, "/count", "").to_bytes(),
        &router,
        &mb,
    );
    assert_eq!(&decode(&core.out[0].1).payload[..], b"10001");
}

#[test]
fn the_peer_table_is_bounded() {
    let router = Router::with_builtins();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let t = Instant::now();
    let req = Frame::request(1, "/echo", "").to_bytes();
    for port in 0..20 {
        core.on_datagram(t, addr(1000 + port), &req, &router, &mb);
    }
    assert_eq!(core.peers.len(), 10);
    assert_eq!(core.stats.refused, 10);
}

#[test]
fn a_response_for_another_core_is_forwarded() {
    let router = Router::with_builtins();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let seq = (2u64 << 48) | 5;
    let resp = Frame::response_to(&Frame::request(seq, "/x", "").header, "/x", "ok").to_bytes();
    let fwd = core
        .on_datagram(Instant::now(), addr(9), &resp, &router, &mb)
        .expect("forwarded");
    assert_eq!((fwd.core, fwd.peer), (2, addr(9)));
    assert_eq!(fwd.frame, resp);
}

#[test]
fn a_deferred_answer_is_cached_against_retries() {
    let mut router = Router::with_builtins();
    let slot: Arc<Mutex<Option<crate::conn::responder::Responder>>> = Arc::default();
    let keep = slot.clone();
    router
        .add("/later", move |ctx| {
            *keep.lock().unwrap() = ctx.responder();
        })
        .unwrap();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let t = Instant::now();
    let req = Frame::request(3, "/later", "").to_bytes();
    core.on_datagram(t, addr(1), &req, &router, &mb);
    core.on_datagram(t, addr(1), &req, &router, &mb); // a retry while it runs: dropped
    assert!(core.out.is_empty());
    slot.lock().unwrap().take().unwrap().reply(b"done");
    // The reactor drains the mailbox and hands the answer back to the core.
    for cmd in mb.drain() {
        if let crate::reactor::mailbox::Command::Answer { conn, frame, .. } = cmd {
            assert!(UdpCore::owns(conn));
            core.send_to_peer(conn, frame, true);
        }
    }
    core.on_datagram(t, addr(1), &req, &router, &mb); // a retry after: from the cache
    assert_eq!(core.out.len(), 2);
    assert!(
        core.out
            .iter()
            .all(|(_, f)| &decode(f).payload[..] == b"done")
    );
}

#[test]
fn a_peer_past_its_rate_is_dropped_and_counted_then_refilled() {
    let (router, runs) = counting_router();
    let mb = mailbox();
    let mut core = UdpCore::new(
        0,
        UdpLimits {
            peer_rate: Some(100),
            ..limits()
        },
    );
    let t = Instant::now();
    for seq in 0..150u64 {
        let req = Frame::request(seq, "/count", "").to_bytes();
        core.on_datagram(t, addr(1), &req, &router, &mb);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 100, "one second's burst");
    assert_eq!(core.stats.rate_limited, 50);
    // Another peer has its own bucket; half a second later the first has 50 more.
    core.on_datagram(
        t,
        addr(2),
        &Frame::request(1, "/count", "").to_bytes(),
        &router,
        &mb,
    );
    assert_eq!(runs.load(Ordering::SeqCst), 101);
    let later = t + Duration::from_millis(500);
    for seq in 200..300u64 {
        let req = Frame::request(seq, "/count", "").to_bytes();
        core.on_datagram(later, addr(1), &req, &router, &mb);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 151);
}

/// Notifies to a blocking method hold a place among the peer's deferred work until their
/// handler returns: past `max_in_flight_per_peer`, they are dropped and counted.
#[test]
fn blocking_notifies_past_the_peer_in_flight_limit_are_dropped() {
    let (gate, gate_rx) = crossbeam_channel::unbounded::<()>();
    let (started_tx, started) = crossbeam_channel::unbounded::<()>();
    let mut router = Router::with_builtins();
    router.set_blocking_threads(1);
    router
        .add_blocking("/note", move |_req| {
            started_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
            Ok::<_, crate::HandlerError>(Vec::new())
        })
        .unwrap();
    let mb = mailbox();
    let mut core = UdpCore::new(0, limits());
    let t = Instant::now();
    let note = Frame::notify(0, "/note", "").to_bytes();
    for _ in 0..20 {
        core.on_datagram(t, addr(1), &note, &router, &mb);
    }
    assert_eq!(core.stats.notifies, 16, "the peer's 16 places");
    assert_eq!(core.stats.refused, 4);
    // A Request finds the places taken too.
    let req = Frame::request(1, "/echo", "").to_bytes();
    core.on_datagram(t, addr(1), &req, &router, &mb);
    assert_eq!(core.stats.refused, 5);
    let f = decode(&core.out.pop().unwrap().1);
    assert_eq!(&f.payload[..], TOO_MANY_IN_FLIGHT.as_bytes());
    for _ in 0..16 {
        gate.send(()).unwrap();
        started.recv().unwrap();
    }
}
