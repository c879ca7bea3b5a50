//! A `tokio_util::codec` codec for arpc frames, wrapping ringrpc_protocol's decoder and encoder.

use std::io;

use bytes::BytesMut;
use ringrpc_protocol::{Decoder, Frame};

/// Decodes and encodes whole arpc [`Frame`]s for `tokio_util::codec::Framed`.
///
/// A malformed frame surfaces as an [`io::ErrorKind::InvalidData`] error, which ends the
/// `Framed` stream and so the connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArpcCodec {
    decoder: Decoder,
}

impl ArpcCodec {
    /// A codec that rejects frame bodies longer than `max_body` bytes.
    pub fn new(max_body: u32) -> ArpcCodec {
        ArpcCodec {
            decoder: Decoder::new(max_body),
        }
    }
}

impl tokio_util::codec::Decoder for ArpcCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        self.decoder
            .decode(src)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl tokio_util::codec::Encoder<Frame> for ArpcCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        frame.encode_to(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder as _, Encoder as _};

    #[test]
    fn encode_then_decode_round_trips_across_split_input() {
        let mut codec = ArpcCodec::default();
        let mut wire = BytesMut::new();
        let sent = Frame::request(9, "/echo", "payload");
        codec.encode(sent.clone(), &mut wire).unwrap();
        let mut rx = wire.split_to(10);
        assert!(codec.decode(&mut rx).unwrap().is_none());
        rx.extend_from_slice(&wire);
        assert_eq!(codec.decode(&mut rx).unwrap(), Some(sent));
        assert!(rx.is_empty());
    }

    #[test]
    fn a_malformed_header_is_invalid_data() {
        // Command bits 7 name no command.
        let mut rx = BytesMut::from(&[0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        let err = ArpcCodec::default().decode(&mut rx).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
