//! The `stream` fuzz check: Stream frames with fuzzed ids, bits, methods and payloads from a
//! peer, mixed with streams this side opens, sends on, reads slowly, closes and drops, on a
//! connection with tight stream limits (3 streams, 600-byte inboxes, 300-byte windows),
//! driven as the reactor drives it: input is fed only while its recv is armed.
//!
//! Input: items, each an op byte and its operands; `op % 8`: 0 a peer frame
//! `[id][bits][len][len bytes]` (bits: 0x80 the peer's own stream, 0x40 EOF, 0x20 error,
//! 0x10 a metadata flag on a bare payload, low two bits the method: `/echo/stream`,
//! `/sink`, `/burst`, `/nope`); 1 open a stream (`[method]`); 2 send `[i][len]` bytes on
//! stream i; 3 close its send side `[i]`; 4 read up to `[i][n]` items of stream i; 5 drop
//! stream i; 6 write out up to `[n]`×64 bytes of output; 7 a recv ends with ENOBUFS.
//!
//! Checked: nothing panics; at most 3 streams are open; what each of our streams reads is
//! exactly the data the peer sent it, in order, and it ends as the peer ended it; every
//! output byte is a whole, valid frame; a full inbox stops the reading.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::metadata::take_metadata;
use ringrpc_protocol::{Command, Decoder, Flags, Frame};

use crate::error::StreamError;
use crate::ids::ConnInfo;
use crate::router::Router;
use crate::sim::{SimConfig, SimConn, SimFraming, SimMailbox};
use crate::stream::{BiStream, StreamContext, StreamLimits};

const METHODS: [&str; 4] = ["/echo/stream", "/sink", "/burst", "/nope"];

/// One stream this side opened.
struct Ours {
    stream: Option<BiStream>,
    /// What the peer sent on it, in order, and how it ended it.
    expected: Vec<u8>,
    ended_by_peer: Option<bool>,
    received: Vec<u8>,
    end: Option<Result<(), StreamError>>,
}

fn router() -> Router {
    let mut r = Router::with_builtins();
    r.add_stream("/sink", |ctx: &mut StreamContext<'_>| {
        if ctx.is_eof() {
            let _ = ctx.close_send();
        }
    })
    .expect("a valid route");
    r.add_stream("/burst", |ctx: &mut StreamContext<'_>| {
        let data = ctx.data().to_vec();
        let _ = ctx.send(&data);
        let _ = ctx.send(&data);
        if ctx.is_eof() {
            let _ = ctx.close_send();
        }
    })
    .expect("a valid route");
    r
}

thread_local! {
    static ROUTER: Arc<Router> = Arc::new(router());
    // One inbox for every input of this thread: building one per input costs more than
    // the check (what an input leaves in it is dropped first).
    static MAILBOX: SimMailbox = SimMailbox::claim(1 << 12);
}

/// What one input did.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// Frames the connection wrote.
    pub frames_out: usize,
    /// Bytes our streams read.
    pub read: usize,
}

/// Runs the check; panics on any violation.
pub fn check_streams(data: &[u8]) -> StreamOutcome {
    let limits = StreamLimits {
        max_streams: 3,
        queue_bytes: 600,
        send_window: 300,
    };
    let cfg = SimConfig {
        framing: SimFraming::Arpc,
        max_body: 4096,
        idle_timeout: None,
        read_timeout: None,
        keepalive: None,
        max_send_queue_bytes: 4096,
        max_send_queue_frames: 64,
        pause_reading: true,
        max_in_flight: 64,
        streams: limits,
        auth_secret: None,
        gzip_threshold: None,
    };
    let mailbox = MAILBOX.with(SimMailbox::clone);
    while let Some(stale) = mailbox.take() {
        drop(stale);
    }
    let info = ConnInfo::new(crate::sim::conn_id(0, 1), crate::sim::peer_addr(1));
    let now = Instant::now();
    let router = ROUTER.with(Arc::clone);
    let mut conn = SimConn::new(info, &cfg, router, &mailbox, Arc::default(), now);
    let mut armed = conn.poll(now, 0).arm_recv;
    let mut ours: Vec<Ours> = Vec::new();
    let mut out = BytesMut::new();
    let mut outcome = StreamOutcome::default();
    let mut items = data;
    let mut failed = false;
    while let [op, rest @ ..] = items {
        items = rest;
        match op % 8 {
            0 => {
                let [id, bits, len, rest @ ..] = items else {
                    break;
                };
                let len = usize::from(*len).min(rest.len());
                let frame = peer_frame(*id, *bits, &rest[..len]);
                items = &rest[len..];
                if !armed || failed {
                    continue; // not reading: the peer's bytes wait in the socket
                }
                if *bits & 0x80 == 0 {
                    // On a stream we opened: what its reader must see.
                    if let Some(o) = ours
                        .iter_mut()
                        .find(|o| o.stream.as_ref().is_some_and(|s| s.id() == u64::from(*id)))
                    {
                        // The session takes a metadata block off first; a malformed one
                        // drops the frame.
                        let payload = if *bits & 0x10 != 0 {
                            take_metadata(&frame.header, &frame.payload)
                                .ok()
                                .map(|(p, _)| p)
                        } else {
                            Some(&frame.payload[..])
                        };
                        if let (None, Some(payload)) = (o.ended_by_peer, payload) {
                            if *bits & 0x20 != 0 {
                                o.ended_by_peer = Some(false);
                            } else {
                                o.expected.extend_from_slice(payload);
                                if *bits & 0x40 != 0 {
                                    o.ended_by_peer = Some(true);
                                }
                            }
                        }
                    }
                }
                conn.recv(now, &frame.to_bytes(), true);
            }
            1 => {
                let [m, rest @ ..] = items else { break };
                items = rest;
                if let Ok(stream) = conn.handle().open_stream(METHODS[usize::from(m % 4)]) {
                    ours.push(Ours {
                        stream: Some(stream),
                        expected: Vec::new(),
                        ended_by_peer: None,
                        received: Vec::new(),
                        end: None,
                    });
                }
            }
            2 => {
                let [i, len, rest @ ..] = items else { break };
                items = rest;
                if let Some(s) = pick(&ours, *i) {
                    let _ = s.send(Bytes::from(vec![*len; usize::from(*len)]));
                }
            }
            3 => {
                let [i, rest @ ..] = items else { break };
                items = rest;
                if let Some(s) = pick(&ours, *i) {
                    let _ = s.close_send();
                }
            }
            4 => {
                let [i, n, rest @ ..] = items else { break };
                items = rest;
                if !ours.is_empty() {
                    let k = usize::from(*i) % ours.len();
                    outcome.read += read(&mut ours[k], usize::from(*n % 8));
                }
            }
            5 => {
                let [i, rest @ ..] = items else { break };
                items = rest;
                if !ours.is_empty() {
                    let k = usize::from(*i) % ours.len();
                    ours[k].stream = None;
                }
            }
            6 => {
                let [n, rest @ ..] = items else { break };
                items = rest;
                if conn.sending_len() > 0 {
                    let n = (usize::from(*n) * 64).min(conn.sending_len());
                    out.extend(conn.sending().flatten().take(n));
                    conn.send_done(Ok(n));
                }
            }
            _ => {
                if armed {
                    conn.recv_no_buffers();
                    armed = false;
                }
            }
        }
        while let Some(mail) = mailbox.take() {
            mail.apply(Some(&mut conn), now);
        }
        let g = conn.gauges();
        assert!(
            g.streams_open <= limits.max_streams,
            "{} streams open",
            g.streams_open
        );
        failed |= !g.reading;
        let actions = conn.poll(now, 0);
        if actions.arm_recv {
            armed = true;
        }
        if actions.cancel_recv {
            // The cancel takes effect at once here.
            conn.recv_cancelled();
            armed = false;
            let _ = conn.poll(now, 0);
        }
        if conn.gauges().streams_holding > 0 {
            assert!(!armed, "an inbox is full and the connection still reads");
        }
    }
    // Everything the peer sent is read to the end by the streams still held.
    for o in &mut ours {
        read(o, usize::MAX);
    }
    for (k, o) in ours.iter().enumerate() {
        if o.stream.is_none() || failed {
            continue;
        }
        assert!(
            o.expected.starts_with(&o.received),
            "stream {k} read bytes the peer never sent it"
        );
        match (&o.end, o.ended_by_peer) {
            (Some(Ok(())), Some(true)) | (None, None) => {
                assert_eq!(o.received, o.expected, "stream {k} lost data")
            }
            (Some(Err(StreamError::Remote(_))), Some(false)) => {}
            (Some(Err(StreamError::TooManyStreams)), _) => {}
            (end, by_peer) => panic!("stream {k} ended {end:?}, the peer ended it {by_peer:?}"),
        }
    }
    // Every byte written is whole frames.
    out.extend(conn.sending().flatten());
    let decoder = Decoder::new(cfg.max_body);
    while let Some(f) = decoder
        .decode(&mut out)
        .expect("the connection wrote a bad frame")
    {
        assert!(
            matches!(f.header.cmd, Command::Stream),
            "an unprompted {:?}",
            f.header.cmd
        );
        outcome.frames_out += 1;
    }
    outcome
}

fn pick(ours: &[Ours], i: u8) -> Option<&BiStream> {
    if ours.is_empty() {
        return None;
    }
    ours[usize::from(i) % ours.len()].stream.as_ref()
}

/// Reads up to `n` items; returns the bytes read.
fn read(o: &mut Ours, n: usize) -> usize {
    let Some(stream) = o.stream.as_ref() else {
        return 0;
    };
    let mut got = 0;
    for _ in 0..n {
        if o.end.is_some() {
            break;
        }
        match stream.recv() {
            Ok(Some(data)) => {
                got += data.len();
                o.received.extend_from_slice(&data);
            }
            Ok(None) => o.end = Some(Ok(())),
            Err(StreamError::WouldBlock) => break,
            Err(e) => o.end = Some(Err(e)),
        }
    }
    got
}

/// A Stream frame as the peer sends it (see the module docs for `bits`).
fn peer_frame(id: u8, bits: u8, payload: &[u8]) -> Frame {
    let flags = if bits & 0x20 != 0 {
        Flags(Flags::ERROR)
    } else {
        Flags::default()
    };
    let method = METHODS[usize::from(bits & 3)];
    let mut f = Frame::new(
        Command::Stream,
        flags,
        u64::from(id),
        Bytes::from_static(method.as_bytes()),
        Bytes::copy_from_slice(payload),
    );
    f.header.stream_local = bits & 0x80 != 0;
    f.header.stream_eof = bits & 0x40 != 0;
    if bits & 0x10 != 0 {
        f.header.user_flags |= ringrpc_protocol::metadata::USER_FLAG_METADATA;
    }
    f
}
