//! What one unit of load is (`--pattern`): the frames it sends and which received frame
//! settles it. Every pattern keeps `--per-conn` units in flight per connection and settles
//! each exactly once through the same accounting as calls.
//!
//! - `call`: a Request; settled by its Response.
//! - `notify`: a Notify; the server never answers one, so each batch of `--per-conn`
//!   notifies is followed by one Request (a barrier) to the same method, and the barrier's
//!   Response settles the whole batch (a server handles one connection's frames in order).
//! - `stream`: one frame on one of `--per-conn` long-lived streams of the connection;
//!   settled by the frame the server echoes back on that stream.
//! - `subscribe`: a new stream carrying the payload and EOF; settled by the end frame after
//!   one reply that must echo the payload.
//! - `pubsub`: an `in_P` Request publishing to `--topic` (Go arpc's pub/sub); settled by its
//!   empty Response. `--subscribers` further connections check and time every delivery
//!   (see [`crate::pubsub`]).

use ringrpc_protocol::{CMD_STREAM_EOF, CMD_STREAM_LOCAL, Command, Flags, write_frame};

use bytes::BytesMut;

/// The shape of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Request → Response.
    Call,
    /// Notifies, each batch confirmed by a barrier Request.
    Notify,
    /// Frames echoed on long-lived streams.
    Stream,
    /// Request → reply → end, each on a stream of its own.
    Subscribe,
    /// Publishes (`in_P`) to a topic, delivered to subscriber connections.
    Pubsub,
}

impl Pattern {
    /// The method a pattern calls unless `--method` says otherwise.
    pub fn default_method(self) -> &'static str {
        match self {
            Pattern::Call | Pattern::Notify => "/echo",
            Pattern::Stream | Pattern::Subscribe => "/echo/stream",
            Pattern::Pubsub => crate::pubsub::publication::METHOD_PUBLISH,
        }
    }

    /// The flag value naming the pattern.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Call => "call",
            Pattern::Notify => "notify",
            Pattern::Stream => "stream",
            Pattern::Subscribe => "subscribe",
            Pattern::Pubsub => "pubsub",
        }
    }

    /// Whether the pattern's frames are Stream frames.
    pub fn uses_streams(self) -> bool {
        matches!(self, Pattern::Stream | Pattern::Subscribe)
    }
}

/// Appends one Stream frame we opened: the local bit, and EOF when `eof`.
pub(crate) fn write_stream_frame(
    dst: &mut BytesMut,
    id: u64,
    method: &[u8],
    payload: &[u8],
    eof: bool,
) {
    let at = dst.len();
    write_frame(
        dst,
        Command::Stream,
        Flags::default(),
        0,
        id,
        method,
        payload,
    );
    dst[at + 5] |= CMD_STREAM_LOCAL | if eof { CMD_STREAM_EOF } else { 0 };
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_protocol::parse_frame;

    #[test]
    fn stream_frames_carry_the_local_bit_and_eof_when_asked() {
        let mut buf = BytesMut::new();
        write_stream_frame(&mut buf, 7, b"/echo/stream", b"hi", true);
        let (frame, len) = parse_frame(&buf, 1 << 20).unwrap().unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(frame.header.cmd, Command::Stream);
        assert!(frame.header.stream_local && frame.header.stream_eof);
        assert_eq!((frame.header.seq, frame.payload), (7, &b"hi"[..]));
    }
}
