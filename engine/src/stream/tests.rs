//! Streams without sockets: the golden arpc exchange fed at every split offset, and the
//! table's bookkeeping (entries removed once both sides closed, inbox back-pressure).
use bytes::BytesMut;
use ringrpc_protocol::{Command, Flags, Frame};

use crate::conn::Conn;
use crate::router::Router;

fn stream_frame(id: u64, method: &str, data: &[u8], local: bool, eof: bool) -> Frame {
    let mut f = Frame::new(
        Command::Stream,
        Flags::default(),
        id,
        bytes::Bytes::copy_from_slice(method.as_bytes()),
        bytes::Bytes::copy_from_slice(data),
    );
    f.header.stream_local = local;
    f.header.stream_eof = eof;
    f
}

fn output(conn: &mut Conn) -> BytesMut {
    let mut batch = Vec::new();
    conn.session.out.take_batch(&mut batch);
    let mut wire = BytesMut::new();
    for seg in &batch {
        wire.extend_from_slice(seg);
    }
    let written = wire.len();
    conn.session.out.sent(&mut batch, written);
    wire
}

fn upper_router() -> Router {
    let mut router = Router::new();
    router
        .add_stream("/stream", |ctx| {
            let loud = ctx.data().to_ascii_uppercase();
            if !loud.is_empty() {
                ctx.send(&loud).unwrap();
            }
            if ctx.is_eof() {
                ctx.close_send().unwrap();
            }
        })
        .unwrap();
    router
}

#[test]
fn the_golden_exchange_at_every_split_offset() {
    let router = upper_router();
    let mut wire = BytesMut::new();
    stream_frame(2, "/stream", b"a", true, false).encode_to(&mut wire);
    stream_frame(2, "/stream", b"b", true, false).encode_to(&mut wire);
    stream_frame(2, "/stream", b"", true, true).encode_to(&mut wire);
    let mut expected = BytesMut::new();
    stream_frame(2, "/stream", b"A", false, false).encode_to(&mut expected);
    stream_frame(2, "/stream", b"B", false, false).encode_to(&mut expected);
    stream_frame(2, "/stream", b"", false, true).encode_to(&mut expected);
    for split in 0..=wire.len() {
        let mut conn = Conn::for_fuzzing(1 << 20);
        conn.handle_recv(&wire[..split], &router).unwrap();
        conn.handle_recv(&wire[split..], &router).unwrap();
        assert_eq!(output(&mut conn), expected, "split at {split}");
        assert_eq!(conn.session.streams.len(), 0, "both sides closed: removed");
    }
}

#[test]
fn an_entry_stays_until_both_sides_close() {
    let mut router = Router::new();
    router.add_stream("/half", |_ctx| {}).unwrap();
    let mut conn = Conn::for_fuzzing(1 << 20);
    let wire = stream_frame(4, "/half", b"x", true, true).to_bytes();
    conn.handle_recv(&wire, &router).unwrap();
    assert_eq!(conn.session.streams.len(), 1, "our side is still open");
    assert!(output(&mut conn).is_empty());
}

/// A connection whose `/sink` streams hand their handle to the returned channel, with an
/// inbox that three 60-byte frames fill (each counts at its cost in memory).
fn sink_conn() -> (Conn, Router, crossbeam_channel::Receiver<crate::BiStream>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut router = Router::new();
    router
        .add_stream_blocking("/sink", move |stream| {
            tx.send(stream).unwrap();
        })
        .unwrap();
    let mut conn = Conn::for_fuzzing(1 << 20);
    let item = crate::stream::shared::item_cost(&[1u8; 60], None);
    conn.session.set_stream_limits(crate::StreamLimits {
        max_streams: 4,
        queue_bytes: 2 * item + 1,
        send_window: 100,
    });
    (conn, router, rx)
}

/// The stream resumes receives posted to `conn`'s reactor, taken from its mailbox.
fn posted_resumes(conn: &Conn) -> Vec<std::sync::Arc<crate::stream::shared::StreamShared>> {
    conn.session
        .mailbox()
        .clone()
        .drain()
        .filter_map(|cmd| match cmd {
            crate::reactor::mailbox::Command::StreamResume { shared, .. } => Some(shared),
            _ => None,
        })
        .collect()
}

/// Applies the posted stream resumes as the reactor would; returns how many there were.
fn apply_posted_resumes(conn: &mut Conn) -> usize {
    let resumes = posted_resumes(conn);
    for shared in &resumes {
        conn.session.streams.resume(shared);
    }
    resumes.len()
}

/// `n` 60-byte frames of stream 1 on `/sink`.
fn sink_frames(n: usize) -> BytesMut {
    let mut wire = BytesMut::new();
    for _ in 0..n {
        stream_frame(1, "/sink", &[1u8; 60], true, false).encode_to(&mut wire);
    }
    wire
}

#[test]
fn a_full_inbox_holds_reading_until_received() {
    let (mut conn, router, rx) = sink_conn();
    conn.handle_recv(&sink_frames(3), &router).unwrap();
    assert_eq!(
        conn.session.streams.holding(),
        1,
        "3 items >= 2 items + 1: hold"
    );
    let stream = rx.recv().unwrap();
    for _ in 0..3 {
        assert_eq!(stream.recv().unwrap().unwrap().len(), 60);
    }
    // The receive that took it to half (1 item) posted a resume; apply it as the reactor
    // would.
    assert_eq!(apply_posted_resumes(&mut conn), 1);
    assert_eq!(conn.session.streams.holding(), 0);
}

/// The inbox fills again before the reactor takes the resume a receive posted: that stale
/// resume must not release the new hold, and the hold is counted once, so the resume the
/// next draining receive posts lets reading go on. (Counted twice and released by the
/// stale resume, the connection stopped reading for good.)
#[test]
fn a_resume_that_arrives_after_the_inbox_filled_again_keeps_the_hold() {
    let (mut conn, router, rx) = sink_conn();
    conn.handle_recv(&sink_frames(3), &router).unwrap();
    assert_eq!(conn.session.streams.holding(), 1, "3 items: full, held");
    let stream = rx.recv().unwrap();
    for _ in 0..2 {
        stream.recv().unwrap().unwrap();
    }
    let stale = posted_resumes(&conn);
    assert_eq!(stale.len(), 1, "down to 1 item: a resume is posted");
    // Before the reactor takes that resume, the inbox fills again.
    conn.handle_recv(&sink_frames(2), &router).unwrap();
    assert_eq!(
        conn.session.streams.holding(),
        1,
        "held again, counted once"
    );
    for shared in &stale {
        conn.session.streams.resume(shared);
    }
    assert_eq!(
        conn.session.streams.holding(),
        1,
        "the stale resume leaves the hold: the inbox is full"
    );
    for _ in 0..2 {
        stream.recv().unwrap().unwrap();
    }
    assert_eq!(
        apply_posted_resumes(&mut conn),
        1,
        "down to 1 item again: another resume"
    );
    assert_eq!(conn.session.streams.holding(), 0, "reading goes on");
}
