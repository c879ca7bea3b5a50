//! The `conn` fuzz check, shared by the cargo-fuzz target and the stable replay tests: any
//! byte stream, split anywhere, through a `Conn` with the built-in router, as the reactor
//! drives it. Hidden from the docs: not part of the stable API.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::fuzzing::{Input, check_frame, decode_reference_any};
use ringrpc_protocol::metadata::{USER_FLAG_METADATA, take_metadata};
use ringrpc_protocol::{Command, DecodeError, Decoder, Flags, Frame, HEADER_LEN, frame_len};

use super::{Conn, FramingError};
use crate::error::{INVALID_METADATA, METHOD_NOT_FOUND, STREAM_METHOD_NOT_FOUND, TOO_MANY_STREAMS};
use crate::router::Router;
use crate::stream::StreamLimits;

/// What a connection did with one fuzz input.
#[derive(Debug)]
pub struct FuzzOutcome {
    /// Every frame the connection wrote, in order.
    pub output: Vec<Frame>,
    /// The protocol error that closed it, if any.
    pub error: Option<DecodeError>,
}

thread_local! {
    // Built once: the fuzzer calls the check hundreds of thousands of times.
    static ROUTER: Router = Router::with_builtins();
}

/// Feeds the stream of `data` (laid out as [`ringrpc_protocol::fuzzing`] describes) chunk by
/// chunk into a fresh `Conn`, draining its whole output after every chunk, and stops at the
/// first error as the reactor closes the connection. gzip-compressed frames are inflated and
/// metadata blocks taken off, as the engine does. Asserts that everything written decodes
/// to well-formed frames, that it is exactly the answers owed to the frames before the error
/// (a Response per Request, a Pong per Ping, the built-in stream echo's frames, nothing
/// else), that the error is the one the
/// decoder reports for the whole stream, and that the counters and the partial-frame buffer
/// match what arrived.
///
/// # Panics
/// On any violation: that is the finding.
pub fn fuzz_check(data: &[u8]) -> FuzzOutcome {
    let input = Input::parse(data);
    let reference = decode_reference_any(input.stream, input.max_body);
    let mut conn = Conn::for_fuzzing(input.max_body);
    let mut output = Vec::new();
    let mut error = None;
    let mut fed = 0usize;
    ROUTER.with(|router| {
        for chunk in &input.chunks {
            let result = conn.handle_recv(chunk, router);
            fed += chunk.len();
            // Frames before a bad one are still answered before the close, so drain first.
            drain(&mut conn, &mut output);
            if let Err(e) = result {
                match e {
                    FramingError::Arpc(e) => error = Some(e),
                    other => panic!("a raw arpc connection ended by {other:?}"),
                }
                break;
            }
            check_partial(&conn, input.max_body);
        }
    });
    assert_eq!(
        error, reference.error,
        "Conn and decoder disagree on the error"
    );
    if error.is_none() {
        assert_eq!(
            conn.partial_len(),
            reference.leftover,
            "partial frame bytes"
        );
    }

    let frames = &reference.frames;
    let count = |cmd| frames.iter().filter(|f| f.header.cmd == cmd).count() as u64;
    let stats = conn.session.stats;
    assert_eq!(stats.bytes_in, fed as u64);
    assert_eq!(stats.frames_in, frames.len() as u64);
    assert_eq!(stats.requests, count(Command::Request));
    assert_eq!(stats.notifies, count(Command::Notify));
    assert_eq!(stats.ignored, count(Command::Response));
    // A Stream frame with a malformed metadata block is dropped before the stream table.
    let bad_md = |f: &&Frame| strip(f).is_err();
    let bad_streams = frames
        .iter()
        .filter(|f| f.header.cmd == Command::Stream)
        .filter(bad_md)
        .count() as u64;
    assert_eq!(
        conn.session.streams.stats().frames_in,
        count(Command::Stream) - bad_streams
    );
    assert_eq!(
        stats.bad_metadata,
        frames.iter().filter(bad_md).count() as u64
    );
    assert_eq!(stats.panics, 0);

    let answered = |cmd| output.iter().filter(|f| f.header.cmd == cmd).count() as u64;
    assert!(answered(Command::Response) <= count(Command::Request));
    assert!(answered(Command::Pong) <= count(Command::Ping));
    // The built-ins answer synchronously, so the answers come in the order of the input.
    let owed = answers_owed(frames);
    assert_eq!(output, owed, "the Conn's output is not the answers owed");
    FuzzOutcome { output, error }
}

/// The frames a connection with only the built-in router owes `frames`, in order.
fn answers_owed(frames: &[Frame]) -> Vec<Frame> {
    // Streams the peer opened to `/echo/stream` and not yet ended: id → method.
    let mut echo_streams = HashMap::new();
    let mut owed = Vec::new();
    for frame in frames {
        let frame = match strip(frame) {
            Ok(frame) => frame,
            Err(text) => {
                // A malformed block: a Request is answered with the error, the rest dropped.
                if frame.header.cmd == Command::Request {
                    owed.push(Frame::error_response_to(
                        &frame.header,
                        frame.method.clone(),
                        text,
                    ));
                }
                continue;
            }
        };
        if frame.header.cmd == Command::Stream {
            stream_answers(&frame, &mut echo_streams, &mut owed);
        } else {
            owed.extend(answer_to(&frame));
        }
    }
    owed
}

/// `frame` with its metadata block taken off its payload, as the connection dispatches it,
/// or the error text a malformed block earns.
fn strip(frame: &Frame) -> Result<Frame, String> {
    let h = &frame.header;
    if h.user_flags & USER_FLAG_METADATA == 0 || h.cmd.is_control() {
        return Ok(frame.clone());
    }
    match take_metadata(h, &frame.payload) {
        Ok((payload, _)) => Ok(Frame {
            payload: frame.payload.slice(..payload.len()),
            ..frame.clone()
        }),
        Err(e) => Err(format!("{INVALID_METADATA}: {e}")),
    }
}

fn stream_frame(id: u64, method: &Bytes, payload: &[u8], eof: bool, error: bool) -> Frame {
    let flags = if error {
        Flags(Flags::ERROR)
    } else {
        Flags::default()
    };
    let mut f = Frame::new(
        Command::Stream,
        flags,
        id,
        method.clone(),
        Bytes::copy_from_slice(payload),
    );
    f.header.stream_eof = eof;
    f
}

/// What the built-in `/echo/stream` (and the table around it) owes one Stream frame.
fn stream_answers(frame: &Frame, open: &mut HashMap<u64, Bytes>, owed: &mut Vec<Frame>) {
    let h = &frame.header;
    if !h.stream_local {
        return; // a stream we would have opened: we have none
    }
    let method = match open.get(&h.seq) {
        Some(method) => method.clone(),
        None if &frame.method[..] != b"/echo/stream" => {
            if !h.flags.is_error() {
                let text = STREAM_METHOD_NOT_FOUND.as_bytes();
                owed.push(stream_frame(h.seq, &frame.method, text, true, true));
            }
            return;
        }
        None if open.len() >= StreamLimits::default().max_streams => {
            let text = TOO_MANY_STREAMS.as_bytes();
            owed.push(stream_frame(h.seq, &frame.method, text, true, true));
            return;
        }
        None => {
            open.insert(h.seq, frame.method.clone());
            frame.method.clone()
        }
    };
    let ends = h.stream_eof || h.flags.is_error();
    if !h.flags.is_error() && !frame.payload.is_empty() {
        owed.push(stream_frame(h.seq, &method, &frame.payload, false, false));
    }
    if ends {
        owed.push(stream_frame(h.seq, &method, &[], true, false));
        open.remove(&h.seq);
    }
}

/// The frame a connection with only the built-in router owes `frame`, if any.
fn answer_to(frame: &Frame) -> Option<Frame> {
    let h = &frame.header;
    match h.cmd {
        Command::Request if &frame.method[..] == b"/echo" => Some(Frame::response_to(
            h,
            frame.method.clone(),
            frame.payload.clone(),
        )),
        Command::Request => Some(Frame::error_response_to(
            h,
            frame.method.clone(),
            METHOD_NOT_FOUND,
        )),
        Command::Ping => Some(Frame::pong()),
        _ => None,
    }
}

/// Sends everything queued, as one fully successful write per batch, and decodes it.
fn drain(conn: &mut Conn, output: &mut Vec<Frame>) {
    let mut wire = BytesMut::new();
    let mut batch = Vec::new();
    while !conn.session.out.is_empty() {
        conn.session.out.take_batch(&mut batch);
        assert!(!batch.is_empty(), "the queue holds bytes but gave none");
        let len = batch.iter().map(|seg| seg.len()).sum();
        for seg in &batch {
            wire.extend_from_slice(seg);
        }
        conn.session.out.sent(&mut batch, len);
        assert!(batch.is_empty());
    }
    assert_eq!(conn.session.out.backlog_bytes(), 0);
    let bytes = wire.clone().freeze();
    let mut at = 0;
    // The default limit: an answer's body is its request's (within any limit in force) or
    // a method of at most 127 bytes plus a short error text.
    let decoder = Decoder::default();
    while let Some(frame) = decoder
        .decode(&mut wire)
        .unwrap_or_else(|e| panic!("the Conn wrote a malformed frame: {e}"))
    {
        let len = frame.encoded_len();
        check_frame(&frame, &bytes[at..at + len], decoder.max_body());
        at += len;
        output.push(frame);
    }
    assert!(wire.is_empty(), "the Conn wrote part of a frame");
}

/// The partial-frame buffer holds less than one frame, and only a header that passed.
fn check_partial(conn: &Conn, max_body: u32) {
    let partial = conn.framing.partial().expect("a raw arpc connection");
    let Some(head) = partial.first_chunk::<HEADER_LEN>() else {
        return;
    };
    let len = frame_len(head, max_body).expect("a rejected header kept as a partial frame");
    assert!(partial.len() < len, "a whole frame left undispatched");
}
