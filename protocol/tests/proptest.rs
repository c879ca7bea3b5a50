//! Property tests through the public API: encode/decode round trips and garbage resistance.
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ringrpc_protocol::{
    Command, DEFAULT_MAX_BODY, DecodeError, Decoder, Flags, Frame, HEADER_LEN, Header,
    MAX_METHOD_LEN, parse_frame, write_frame,
};

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Request),
        Just(Command::Response),
        Just(Command::Notify),
        Just(Command::Ping),
        Just(Command::Pong),
        Just(Command::Stream),
    ]
}

/// A valid frame: method and payload sizes follow the rules for its command.
fn any_frame() -> impl Strategy<Value = Frame> {
    (
        any_command(),
        any::<u8>(),
        any::<u8>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(cmd, flags, user_flags, seq, stream_local, stream_eof)| {
            let (method_len, payload_len) = match cmd {
                Command::Ping | Command::Pong => (0..=0, 0..=0),
                Command::Response => (0..=MAX_METHOD_LEN, 0..=4096),
                _ => (1..=MAX_METHOD_LEN, 0..=4096),
            };
            (
                proptest::collection::vec(any::<u8>(), method_len),
                proptest::collection::vec(any::<u8>(), payload_len),
            )
                .prop_map(move |(method, payload)| {
                    let mut frame =
                        Frame::new(cmd, Flags(flags), seq, method.into(), payload.into());
                    frame.header.user_flags = user_flags;
                    frame.header.stream_local = stream_local;
                    frame.header.stream_eof = stream_eof;
                    frame
                })
        })
}

/// Bytes that are sometimes well-formed: random runs mixed with headers that pass or nearly
/// pass validation, each followed by roughly the body it declares, so the decoder also reaches
/// its body-handling paths.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let random = proptest::collection::vec(any::<u8>(), 0..64);
    let length_skew = prop_oneof![6 => Just(0i64), 1 => -3i64..=3];
    let method_len = prop_oneof![6 => 1u8..=127, 1 => any::<u8>()];
    let plausible = (
        any::<u8>(),
        any::<u8>(),
        method_len,
        0usize..200,
        length_skew,
        any::<u64>(),
    )
        .prop_flat_map(|(cmd_byte, flag, method_len, payload_len, skew, seq)| {
            let command = cmd_byte % 8;
            // Ping and Pong are bare headers; give them a body only when the length is skewed.
            let (method_len, payload_len) = if matches!(command, 4 | 5) {
                (0, 0)
            } else {
                (method_len, payload_len)
            };
            let body = proptest::collection::vec(any::<u8>(), method_len as usize + payload_len);
            body.prop_map(move |body| {
                let body_len = (body.len() as i64 + skew).max(0) as u32;
                let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
                bytes.extend_from_slice(&body_len.to_le_bytes());
                bytes.push(0);
                // Keep the command bits in 0..=7 so most frames name a real command.
                bytes.push(cmd_byte & 0xc0 | command);
                bytes.push(flag);
                bytes.push(method_len);
                bytes.extend_from_slice(&seq.to_le_bytes());
                bytes.extend_from_slice(&body);
                bytes
            })
        });
    proptest::collection::vec(prop_oneof![1 => random, 8 => plausible], 0..8)
        .prop_map(|parts| parts.concat())
}

/// Outcome of decoding a byte stream to the end: frames, then either an error or leftover bytes.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
}

fn decode_all_with_decoder(chunks: &[&[u8]], max_body: u32) -> Outcome {
    let decoder = Decoder::new(max_body);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        frames,
                        error: Some(error),
                    };
                }
            }
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

fn decode_all_with_parse_frame(bytes: &[u8], max_body: u32) -> Outcome {
    let mut frames = Vec::new();
    let mut rest = bytes;
    loop {
        match parse_frame(rest, max_body) {
            Ok(Some((frame, used))) => {
                assert!(used >= HEADER_LEN && used <= rest.len());
                frames.push(frame.to_owned());
                rest = &rest[used..];
            }
            Ok(None) => {
                return Outcome {
                    frames,
                    error: None,
                };
            }
            Err(error) => {
                return Outcome {
                    frames,
                    error: Some(error),
                };
            }
        }
    }
}

proptest! {
    #[test]
    fn frame_round_trips_through_every_codec_path(frame in any_frame()) {
        let wire: Bytes = frame.to_bytes();
        prop_assert_eq!(wire.len(), frame.encoded_len());
        prop_assert_eq!(wire.len(), HEADER_LEN + frame.method.len() + frame.payload.len());

        let header_bytes = wire.first_chunk::<HEADER_LEN>().unwrap();
        prop_assert_eq!(Header::parse(header_bytes, DEFAULT_MAX_BODY), Ok(frame.header));
        prop_assert_eq!(&frame.header.to_bytes(), header_bytes);

        let mut buf = BytesMut::from(&wire[..]);
        let decoded = Decoder::default().decode(&mut buf).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(&frame));
        prop_assert!(buf.is_empty());

        let (parsed, used) = parse_frame(&wire, DEFAULT_MAX_BODY).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(parsed.to_owned(), frame.clone());

        let (head, payload) = frame.encode();
        prop_assert_eq!([head.as_bytes(), &payload[..]].concat(), wire.to_vec());

        // write_frame cannot set the stream bits, so compare against the bare command byte.
        let mut expected = wire.to_vec();
        expected[5] = frame.header.cmd as u8;
        let h = &frame.header;
        let mut written = BytesMut::new();
        write_frame(&mut written, h.cmd, h.flags, h.user_flags, h.seq, &frame.method, &frame.payload);
        prop_assert_eq!(&written[..], &expected[..]);
    }

    #[test]
    fn frame_sequences_survive_a_random_split(
        frames in proptest::collection::vec(any_frame(), 1..6),
        split in any::<prop::sample::Index>(),
    ) {
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes()).collect();
        let at = split.index(wire.len() + 1);
        let outcome = decode_all_with_decoder(&[&wire[..at], &wire[at..]], DEFAULT_MAX_BODY);
        prop_assert_eq!(&outcome, &Outcome { frames: frames.clone(), error: None });
        prop_assert_eq!(decode_all_with_parse_frame(&wire, DEFAULT_MAX_BODY), outcome);
    }

    #[test]
    fn garbage_never_panics_and_both_paths_agree(
        bytes in garbage(),
        splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        small_limit in any::<bool>(),
    ) {
        let max_body = if small_limit { 64 } else { DEFAULT_MAX_BODY };
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(&bytes[start..cut]);
            start = cut;
        }

        let whole = decode_all_with_decoder(&[&bytes], max_body);
        let split = decode_all_with_decoder(&chunks, max_body);
        let sliced = decode_all_with_parse_frame(&bytes, max_body);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(&sliced, &whole);
        if let Some(error) = &whole.error {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn any_sixteen_bytes_parse_or_fail_cleanly(header in any::<[u8; HEADER_LEN]>(), max_body in any::<u32>()) {
        match Header::parse(&header, max_body) {
            Ok(parsed) => {
                prop_assert!(parsed.body_len <= max_body);
                prop_assert!(parsed.method_len as usize <= parsed.body_len as usize);
                prop_assert_eq!(parsed.frame_len(), HEADER_LEN + parsed.body_len as usize);
                prop_assert_eq!(parsed.to_bytes(), header);
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }
}
