//! The `websocket` fuzz check: any bytes (or, with a flag, the upgrade request followed by
//! masked frames built from the input) into a connection that speaks WebSocket, split
//! anywhere, drained after every chunk.
//!
//! Input: byte 0 holds flags — bit 0: the connection starts undecided (raw arpc or HTTP,
//! as on a `listen` port with WebSocket on) rather than HTTP only; bit 1: a valid upgrade
//! request goes first; bit 2: the rest is frame items, each `[b0][len][len bytes]` sent as
//! one masked frame with `b0`'s FIN, RSV and opcode bits (so reserved bits, bad opcodes and
//! fragmented control frames stay reachable). The rest of the input is the stream layout of
//! `ringrpc_protocol::fuzzing` (body limit, chunk sizes, bytes).

use bytes::BytesMut;
use ringrpc_protocol::fuzzing::Input;
use ringrpc_protocol::{Command, Decoder};

use crate::conn::Conn;
use crate::router::Router;
use crate::transport::tcp::TcpFraming;
use crate::transport::ws::frame::{self, Limits, Opcode, apply_mask};

thread_local! {
    static ROUTER: Router = Router::with_builtins();
}

/// The handshake's default header limit: nothing may hold more before the upgrade.
const MAX_HEAD: usize = 8 * 1024;

/// What the server sent, taken apart.
#[derive(Debug, Default)]
pub struct WsOutcome {
    /// The HTTP status it answered with, if any.
    pub status: Option<u16>,
    /// arpc frames it sent inside binary messages (or raw, on a connection that chose arpc).
    pub frames: usize,
    /// Pongs and Closes it sent.
    pub control: usize,
    /// Whether the connection ended (refused, closed, protocol error).
    pub ended: bool,
}

/// Runs the check; panics on any violation (that is the finding).
pub fn check_websocket(data: &[u8]) -> WsOutcome {
    let (&flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let input = Input::parse(rest);
    let mut stream = Vec::new();
    if flags & 2 != 0 {
        stream.extend_from_slice(&super::super::ws::upgrade_request(0x5eed));
    }
    if flags & 4 != 0 {
        frame_items(input.stream, &mut stream);
    } else {
        stream.extend_from_slice(input.stream);
    }
    let mut conn = super::websocket_conn(input.max_body, flags & 1 != 0);
    let max_message = input.max_body as usize + ringrpc_protocol::HEADER_LEN;
    let mut out = BytesMut::new();
    let mut outcome = WsOutcome::default();
    let mut fed = 0;
    // Cut the (possibly rebuilt) stream with the input's chunk sizes, cycling.
    let sizes: Vec<usize> = input.chunks.iter().map(|c| c.len()).collect();
    let mut at = 0;
    let mut i = 0;
    ROUTER.with(|router| {
        while at < stream.len() {
            let size = sizes
                .get(i % sizes.len().max(1))
                .copied()
                .unwrap_or(stream.len());
            let end = (at + size.max(1)).min(stream.len());
            i += 1;
            let chunk = &stream[at..end];
            at = end;
            fed += chunk.len();
            let result = conn.handle_recv(chunk, router);
            drain(&mut conn, &mut out);
            let held = conn.framing.buffered();
            let bound = MAX_HEAD + 2 * (max_message + frame::MAX_HEADER_LEN);
            assert!(held <= bound, "holds {held} bytes, bound {bound}");
            if result.is_err() {
                outcome.ended = true;
                break;
            }
        }
    });
    assert_eq!(conn.session.stats.bytes_in, fed as u64);
    read_output(&conn, &mut out, &mut outcome);
    let stats = conn.session.stats;
    assert!(
        outcome.frames as u64 <= stats.frames_in,
        "more answers than frames"
    );
    outcome
}

/// Frame items as masked frames (see the module docs).
fn frame_items(mut items: &[u8], out: &mut Vec<u8>) {
    while let [b0, len, rest @ ..] = items {
        let len = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        out.push(*b0);
        out.push(0x80 | len as u8);
        let mask = [b0 ^ 0x5a, *b0, 0xa5, len as u8];
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], mask);
        items = tail;
    }
}

/// Everything queued, as one fully successful write per batch.
fn drain(conn: &mut Conn, out: &mut BytesMut) {
    let mut batch = Vec::new();
    while !conn.session.out.is_empty() {
        conn.session.out.take_batch(&mut batch);
        let len = batch.iter().map(|b| b.len()).sum();
        for seg in &batch {
            out.extend_from_slice(seg);
        }
        conn.session.out.sent(&mut batch, len);
    }
}

/// The server's bytes must be: an HTTP response (then, after a 101, whole unmasked frames,
/// each binary message exactly one arpc frame), or raw arpc frames when it chose arpc.
fn read_output(conn: &Conn, out: &mut BytesMut, outcome: &mut WsOutcome) {
    let arpc = matches!(conn.framing, TcpFraming::Arpc(_));
    if arpc {
        let decoder = Decoder::default();
        while let Some(f) = decoder
            .decode(out)
            .expect("the server wrote a malformed frame")
        {
            assert!(f.header.cmd != Command::Request, "an unprompted request");
            outcome.frames += 1;
        }
        assert!(out.is_empty(), "the server wrote part of a frame");
        return;
    }
    if out.is_empty() {
        return;
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    let head = out.split_to(end + 4);
    let text = std::str::from_utf8(&head).expect("an ASCII response head");
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    outcome.status = Some(status);
    if status != 101 {
        // A refusal (or an asset) carries a body, then nothing more.
        return;
    }
    let limits = Limits {
        max_payload: usize::MAX >> 1,
        expect_masked: false,
    };
    let mut closed = false;
    while let Some(f) = frame::decode(out, &limits).expect("the server wrote a bad frame") {
        assert!(!closed, "a frame after our Close");
        assert!(f.fin, "the server fragments nothing");
        match f.opcode {
            Opcode::Binary => {
                let mut payload = f.payload;
                let frame = Decoder::default()
                    .decode(&mut payload)
                    .expect("a message holding a bad arpc frame")
                    .expect("a message holding part of an arpc frame");
                assert!(payload.is_empty(), "a message holding more than one frame");
                assert!(
                    frame.header.cmd != Command::Request,
                    "an unprompted request"
                );
                outcome.frames += 1;
            }
            Opcode::Pong => outcome.control += 1,
            Opcode::Close => {
                closed = true;
                outcome.control += 1;
            }
            other => panic!("the server sent a {other:?} frame"),
        }
    }
    assert!(out.is_empty(), "the server wrote part of a frame");
}
