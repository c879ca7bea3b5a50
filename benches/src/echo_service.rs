//! The arpc service every peer serves: `/echo`, Ping → Pong, errors for unknown methods.

use bytes::Bytes;
use ringrpc_protocol::{Command, Frame};

/// The one method the peers serve; it replies with the request's payload unchanged.
pub const ECHO_METHOD: &[u8] = b"/echo";
/// Error text of the Response to a Request for any other method (the same text as ringrpc's).
pub const METHOD_NOT_FOUND: &str = "method not found";

/// The frame to send back for `frame`, if any.
///
/// A Request always gets exactly one Response echoing its seq, method and async bit; a Ping
/// gets a Pong; a Notify, and frames a server never expects (Response, Pong, Stream), get
/// nothing.
pub fn answer(frame: Frame) -> Option<Frame> {
    match frame.header.cmd {
        Command::Request if frame.method == ECHO_METHOD => Some(Frame::response_to(
            &frame.header,
            frame.method,
            frame.payload,
        )),
        Command::Request => Some(Frame::error_response_to(
            &frame.header,
            frame.method,
            Bytes::from_static(METHOD_NOT_FOUND.as_bytes()),
        )),
        Command::Ping => Some(Frame::pong()),
        Command::Notify | Command::Pong | Command::Response | Command::Stream => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_protocol::Flags;

    #[test]
    fn echo_keeps_seq_method_payload_and_async_bit() {
        let mut request = Frame::request(7, "/echo", "hi");
        request.header.flags = Flags(Flags::ASYNC);
        let reply = answer(request).expect("a Response");
        assert_eq!(reply.header.cmd, Command::Response);
        assert_eq!(reply.header.seq, 7);
        assert_eq!(reply.header.flags, Flags(Flags::ASYNC));
        assert_eq!(&reply.method[..], b"/echo");
        assert_eq!(&reply.payload[..], b"hi");
    }

    #[test]
    fn unknown_method_gets_an_error_response() {
        let reply = answer(Frame::request(3, "/nope", "x")).expect("a Response");
        assert!(reply.is_error());
        assert_eq!(reply.header.seq, 3);
        assert_eq!(&reply.payload[..], METHOD_NOT_FOUND.as_bytes());
    }

    #[test]
    fn ping_gets_pong_and_one_way_frames_get_nothing() {
        assert_eq!(answer(Frame::ping()), Some(Frame::pong()));
        assert_eq!(answer(Frame::notify(1, "/echo", "x")), None);
        assert_eq!(answer(Frame::pong()), None);
    }
}
