//! One connection without sockets: framing at every split, dispatch, calls, auth, panics,
//! and the first bytes choosing arpc or WebSocket.
use super::*;
use crate::error::{AUTH_METHOD, AUTH_REQUIRED, CallError};
use crate::reactor::mailbox::CallDone;
use crate::secret::constant_time_eq;
use crate::transport::tcp::HTTP_STARTS;
use bytes::Bytes;
use bytes::BytesMut;
use ringrpc_protocol::{Command, DecodeError};
use ringrpc_protocol::{Decoder, Frame};
use std::time::Duration;
use std::time::Instant;

fn test_conn(max_body: u32) -> Conn {
    Conn::for_fuzzing(max_body)
}

fn drain_output(conn: &mut Conn) -> Vec<Frame> {
    let mut batch = Vec::new();
    conn.session.out.take_batch(&mut batch);
    let mut wire = BytesMut::new();
    for seg in &batch {
        wire.extend_from_slice(seg);
    }
    let written = wire.len();
    conn.session.out.sent(&mut batch, written);
    let mut frames = Vec::new();
    while let Some(f) = Decoder::default().decode(&mut wire).unwrap() {
        frames.push(f);
    }
    assert!(wire.is_empty());
    frames
}

#[test]
fn whole_frames_are_answered_in_order() {
    let router = Router::with_builtins();
    let mut conn = test_conn(1 << 20);
    let mut wire = BytesMut::new();
    for seq in 0..5u64 {
        Frame::request(seq, "/echo", format!("p{seq}")).encode_to(&mut wire);
    }
    conn.handle_recv(&wire, &router).unwrap();
    let out = drain_output(&mut conn);
    assert_eq!(out.len(), 5);
    for (seq, f) in out.iter().enumerate() {
        assert_eq!(f.header.cmd, Command::Response);
        assert_eq!(f.header.seq, seq as u64);
        assert_eq!(f.payload, format!("p{seq}").as_bytes());
    }
    assert_eq!(conn.session.stats.requests, 5);
    assert_eq!(conn.partial_len(), 0);
}

#[test]
fn frames_split_at_every_offset_are_reassembled() {
    let router = Router::with_builtins();
    let mut wire = BytesMut::new();
    Frame::request(1, "/echo", vec![7u8; 40]).encode_to(&mut wire);
    Frame::ping().encode_to(&mut wire);
    Frame::notify(2, "/echo", "n").encode_to(&mut wire);
    Frame::request(3, "/echo", "last").encode_to(&mut wire);
    for a in 0..=wire.len() {
        for b in a..=wire.len() {
            let mut conn = test_conn(1 << 20);
            for chunk in [&wire[..a], &wire[a..b], &wire[b..]] {
                conn.handle_recv(chunk, &router).unwrap();
            }
            let out = drain_output(&mut conn);
            let seqs: Vec<_> = out.iter().map(|f| (f.header.cmd, f.header.seq)).collect();
            assert_eq!(
                seqs,
                vec![
                    (Command::Response, 1),
                    (Command::Pong, 0),
                    (Command::Response, 3)
                ],
                "split {a}/{b}"
            );
            assert_eq!(conn.partial_len(), 0);
        }
    }
}

#[test]
fn oversized_body_is_rejected_from_the_header_alone() {
    let router = Router::with_builtins();
    let mut conn = test_conn(1024);
    let mut head = [0u8; 16];
    head[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    head[5] = 1;
    head[7] = 5;
    // Arriving in two pieces: the limit is enforced once the 16th byte is in.
    conn.handle_recv(&head[..10], &router).unwrap();
    let err = conn.handle_recv(&head[10..], &router).unwrap_err();
    assert!(matches!(
        err,
        FramingError::Arpc(DecodeError::BodyTooLarge { .. })
    ));
    assert!(conn.framing.partial().unwrap().capacity() < 1024);
}

#[test]
fn a_trickled_maximum_body_holds_at_most_twice_what_arrived() {
    let router = Router::with_builtins();
    let max = ringrpc_protocol::DEFAULT_MAX_BODY;
    let mut conn = test_conn(max);
    let mut head = Vec::new();
    head.extend_from_slice(&max.to_le_bytes());
    head.extend_from_slice(&[0, 1, 0, 5]);
    head.extend_from_slice(&1u64.to_le_bytes());
    head.extend_from_slice(b"/echo");
    conn.handle_recv(&head, &router).unwrap();
    let chunk = vec![1u8; 4096];
    let mut received = head.len();
    for _ in 0..256 {
        conn.handle_recv(&chunk, &router).unwrap();
        received += chunk.len();
        // Growth by doubling what arrived (from a first step), never towards the 64 MiB
        // declared.
        let bound = crate::transport::arpc::FIRST_STEP.max(2 * received);
        assert!(
            conn.framing.partial().unwrap().capacity() <= bound,
            "{} for {received}",
            conn.framing.partial().unwrap().capacity()
        );
    }
    assert_eq!(conn.partial_len(), received);
    assert!(drain_output(&mut conn).is_empty());
}

#[test]
fn unknown_method_gets_error_and_notify_gets_nothing() {
    let router = Router::with_builtins();
    let mut conn = test_conn(1 << 20);
    let mut wire = BytesMut::new();
    Frame::request(9, "/nope", "x").encode_to(&mut wire);
    Frame::notify(10, "/nope", "x").encode_to(&mut wire);
    Frame::notify(11, "/echo", "x").encode_to(&mut wire);
    conn.handle_recv(&wire, &router).unwrap();
    let out = drain_output(&mut conn);
    assert_eq!(out.len(), 1);
    assert!(out[0].is_error());
    assert_eq!(out[0].header.seq, 9);
    assert_eq!(
        &out[0].payload[..],
        crate::error::METHOD_NOT_FOUND.as_bytes()
    );
    assert_eq!(conn.session.stats.not_found, 2);
}

#[test]
fn calls_complete_on_response_remote_error_timeout_and_close() {
    use std::sync::Mutex;
    let router = Router::with_builtins();
    let mut conn = test_conn(1 << 20);
    type Outcomes = Arc<Mutex<Vec<(u32, Result<Bytes, CallError>)>>>;
    let outcomes: Outcomes = Arc::default();
    let now = Instant::now();
    for tag in 1..=4u32 {
        let outcomes = outcomes.clone();
        let done: CallDone = Box::new(move |r| outcomes.lock().unwrap().push((tag, r)));
        let timeout = if tag == 3 {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        };
        let seq =
            conn.session
                .start_call(b"/ask", format!("q{tag}").as_bytes(), now + timeout, done);
        assert_eq!(seq, u64::from(tag));
    }
    // The four Requests went out with seqs 1..=4.
    let sent = drain_output(&mut conn);
    let seqs: Vec<_> = sent.iter().map(|f| (f.header.cmd, f.header.seq)).collect();
    assert_eq!(
        seqs,
        (1..=4).map(|s| (Command::Request, s)).collect::<Vec<_>>()
    );
    assert_eq!(&sent[1].payload[..], b"q2");
    // Call 1 answered, call 2 answered with an error, a stray Response is ignored.
    let mut wire = BytesMut::new();
    Frame::response_to(&sent[0].header, "/ask", "a1").encode_to(&mut wire);
    Frame::error_response_to(&sent[1].header, "/ask", "nope").encode_to(&mut wire);
    Frame::response_to(&Frame::request(99, "/x", "").header, "/x", "").encode_to(&mut wire);
    conn.handle_recv(&wire, &router).unwrap();
    for seq in 1..=4 {
        conn.session.expire_call(seq, now);
    }
    assert_eq!(conn.session.calls_pending(), 1);
    conn.session.fail_calls(CallError::Disconnected);
    let got = outcomes.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            (1, Ok(Bytes::from_static(b"a1"))),
            (2, Err(CallError::Remote("nope".into()))),
            (3, Err(CallError::Timeout)),
            (4, Err(CallError::Disconnected)),
        ]
    );
    assert_eq!(conn.session.stats.ignored, 1);
}

#[test]
fn a_secret_must_come_first_and_is_compared_exactly() {
    let router = Router::with_builtins();
    // Right secret: the auth call is answered, then requests are served.
    let mut conn = test_conn(1 << 20);
    conn.session.require_auth(Arc::new(b"s3cret".to_vec()));
    let mut wire = BytesMut::new();
    Frame::request(1, AUTH_METHOD, "s3cret").encode_to(&mut wire);
    Frame::request(2, "/echo", "hi").encode_to(&mut wire);
    conn.handle_recv(&wire, &router).unwrap();
    let out = drain_output(&mut conn);
    assert!(!out[0].is_error() && out[0].header.seq == 1);
    assert_eq!(
        (&out[1].payload[..], conn.session.rejected()),
        (&b"hi"[..], false)
    );
    // Wrong secret, a prefix of it, or anything else first: one error, then nothing.
    for first in [
        Frame::request(1, AUTH_METHOD, "s3creT"),
        Frame::request(1, AUTH_METHOD, "s3cre"),
        Frame::request(1, "/echo", "s3cret"),
        Frame::ping(),
    ] {
        let mut conn = test_conn(1 << 20);
        conn.session.require_auth(Arc::new(b"s3cret".to_vec()));
        let mut wire = BytesMut::new();
        first.encode_to(&mut wire);
        Frame::request(2, "/echo", "hi").encode_to(&mut wire);
        conn.handle_recv(&wire, &router).unwrap();
        conn.handle_recv(&Frame::request(3, "/echo", "x").to_bytes(), &router)
            .unwrap();
        let out = drain_output(&mut conn);
        assert_eq!(out.len(), 1, "only the error for {first:?}");
        assert!(out[0].is_error());
        assert_eq!(&out[0].payload[..], AUTH_REQUIRED.as_bytes());
        assert!(conn.session.rejected());
    }
    assert!(constant_time_eq(b"", b"") && !constant_time_eq(b"a", b"ab"));
}

fn undecided_conn() -> Conn {
    let mut conn = Conn::for_fuzzing(1 << 20);
    conn.framing = TcpFraming::Undecided {
        websocket: Arc::new(HandshakeConfig::default()),
        max_body: 1 << 20,
        held: Vec::new(),
    };
    conn
}

fn raw_output(conn: &mut Conn) -> Vec<u8> {
    let mut batch = Vec::new();
    conn.session.out.take_batch(&mut batch);
    let bytes: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
    conn.session.out.sent(&mut batch, bytes.len());
    bytes
}

#[test]
fn the_first_bytes_choose_arpc_or_websocket_at_any_split() {
    let router = Router::with_builtins();
    let arpc = Frame::request(1, "/echo", "hi").to_bytes();
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    for split in 0..=arpc.len() {
        let mut conn = undecided_conn();
        conn.handle_recv(&arpc[..split], &router).unwrap();
        conn.handle_recv(&arpc[split..], &router).unwrap();
        assert!(matches!(conn.framing, TcpFraming::Arpc(_)), "split {split}");
        assert_eq!(drain_output(&mut conn)[0].payload, "hi".as_bytes());
    }
    for split in 0..=upgrade.len() {
        let mut conn = undecided_conn();
        for part in [&upgrade[..split], &upgrade[split..]] {
            conn.handle_recv(part, &router).unwrap();
        }
        assert!(
            matches!(conn.framing, TcpFraming::WebSocket(_)),
            "split {split}"
        );
        let out = raw_output(&mut conn);
        assert!(
            out.starts_with(b"HTTP/1.1 101 Switching Protocols"),
            "split {split}"
        );
    }
    // A single byte at a time works too, and a lone "G" that turns out not to be a GET
    // is raw arpc (here a bad frame).
    let mut conn = undecided_conn();
    for b in upgrade.iter() {
        conn.handle_recv(&[*b], &router).unwrap();
    }
    assert!(matches!(conn.framing, TcpFraming::WebSocket(_)));
    let mut conn = undecided_conn();
    conn.handle_recv(b"G", &router).unwrap();
    conn.handle_recv(b"X", &router).unwrap();
    assert!(matches!(conn.framing, TcpFraming::Arpc(_)));
}

#[test]
fn panicking_handler_is_answered_with_an_error() {
    fn boom(_: &mut crate::router::Context<'_>) {
        panic!("boom");
    }
    let mut router = Router::with_builtins();
    router.add("/boom", boom).unwrap();
    let mut conn = test_conn(1 << 20);
    let mut wire = BytesMut::new();
    Frame::request(4, "/boom", "").encode_to(&mut wire);
    Frame::request(5, "/echo", "ok").encode_to(&mut wire);
    conn.handle_recv(&wire, &router).unwrap();
    let out = drain_output(&mut conn);
    assert!(out[0].is_error());
    assert_eq!(
        &out[0].payload[..],
        crate::error::HANDLER_PANICKED.as_bytes()
    );
    assert_eq!(&out[1].payload[..], b"ok");
    assert_eq!(conn.session.stats.panics, 1);
}

#[test]
fn every_http_start_reads_as_an_arpc_length_no_websocket_server_accepts() {
    let get = u32::from_le_bytes(*b"GET ");
    assert_eq!(get, 542_393_671);
    for start in HTTP_STARTS {
        assert!(
            u32::from_le_bytes(*start) >= get,
            "{:?}",
            String::from_utf8_lossy(start)
        );
    }
}
