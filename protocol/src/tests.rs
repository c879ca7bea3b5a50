//! Unit tests: golden vectors, split-stream decoding, rejection of malformed headers.
use bytes::{Bytes, BytesMut};

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Builds a raw header without validation, for feeding malformed frames to the parser.
fn raw_header(body_len: u32, cmd_byte: u8, flag: u8, method_len: u8, seq: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&body_len.to_le_bytes());
    out[5] = cmd_byte;
    out[6] = flag;
    out[7] = method_len;
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out
}

/// Checks `wire` against `expected` along every decode and encode path the crate offers.
fn assert_golden(wire_hex: &str, expected: &Frame) {
    let wire = hex(wire_hex);

    let mut buf = BytesMut::from(&wire[..]);
    let decoded = Decoder::default()
        .decode(&mut buf)
        .unwrap()
        .expect("whole frame");
    assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    assert_eq!(&decoded, expected);

    let (frame_ref, used) = parse_frame(&wire, DEFAULT_MAX_BODY)
        .unwrap()
        .expect("whole frame");
    assert_eq!(used, wire.len());
    assert_eq!(&frame_ref.to_owned(), expected);

    assert_eq!(&expected.to_bytes()[..], &wire[..], "Frame::to_bytes");
    let (head, payload) = expected.encode();
    assert_eq!(
        [head.as_bytes(), &payload[..]].concat(),
        wire,
        "Frame::encode"
    );

    let h = &expected.header;
    let mut written = BytesMut::new();
    write_frame(
        &mut written,
        h.cmd,
        h.flags,
        h.user_flags,
        h.seq,
        &expected.method,
        &expected.payload,
    );
    assert_eq!(&written[..], &wire[..], "write_frame");
}

#[test]
fn golden_echo_request_decodes_and_encodes() {
    let wire = hex("0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f");
    let mut buf = BytesMut::from(&wire[..]);
    let frame = Decoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(frame.header.cmd, Command::Request);
    assert_eq!(frame.header.seq, 2);
    assert_eq!(&frame.method[..], b"/echo");
    assert_eq!(&frame.payload[..], b"hello");
    assert_eq!(
        &Frame::request(2, "/echo", "hello").to_bytes()[..],
        &wire[..]
    );
}

#[test]
fn golden_echo_request_and_response_both_ways() {
    let request = Frame::request(2, "/echo", "hello");
    assert_eq!(
        request.header,
        Header {
            body_len: 10,
            user_flags: 0,
            cmd: Command::Request,
            stream_local: false,
            stream_eof: false,
            flags: Flags(0),
            method_len: 5,
            seq: 2,
        }
    );
    assert_golden(
        "0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f",
        &request,
    );

    let response = Frame::response_to(&request.header, "/echo", "hello");
    assert_eq!(response.header.cmd, Command::Response);
    assert_eq!(response.header.seq, 2);
    assert_eq!(response.header.flags, Flags(0));
    assert!(!response.is_error());
    assert_golden(
        "0a000000 00 02 00 05 0200000000000000 2f6563686f 68656c6c6f",
        &response,
    );
}

#[test]
fn golden_error_response_both_ways() {
    let request = Frame::request(5, "/fail", "");
    let response = Frame::error_response_to(&request.header, "/fail", "boom");
    assert!(response.is_error());
    assert_eq!(response.header.flags, Flags(Flags::ERROR));
    assert_eq!(response.header.body_len, 9);
    assert_eq!(response.header.method_len, 5);
    assert_eq!(response.header.seq, 5);
    assert_eq!(&response.payload[..], b"boom");
    assert_golden(
        "09000000 00 02 01 05 0500000000000000 2f6661696c 626f6f6d",
        &response,
    );
}

#[test]
fn golden_async_request_and_response_keep_async_bit() {
    let request = Frame::new(
        Command::Request,
        Flags(Flags::ASYNC),
        7,
        "/echo".into(),
        "hi".into(),
    );
    assert!(request.header.flags.is_async());
    assert_golden(
        "07000000 00 01 02 05 0700000000000000 2f6563686f 6869",
        &request,
    );

    let response = Frame::response_to(&request.header, "/echo", "hi");
    assert!(response.header.flags.is_async());
    assert!(!response.header.flags.is_error());
    assert_golden(
        "07000000 00 02 02 05 0700000000000000 2f6563686f 6869",
        &response,
    );

    let error = Frame::error_response_to(&request.header, "/echo", "no");
    assert_eq!(error.header.flags, Flags(Flags::ERROR | Flags::ASYNC));
}

#[test]
fn golden_ping_and_pong_both_ways() {
    let ping = Frame::ping();
    assert_eq!(ping.header.cmd, Command::Ping);
    assert_eq!(
        (
            ping.header.body_len,
            ping.header.method_len,
            ping.header.seq
        ),
        (0, 0, 0)
    );
    assert_golden("00000000 00 04 00 00 0000000000000000", &ping);

    let pong = Frame::pong();
    assert_eq!(pong.header.cmd, Command::Pong);
    assert_golden("00000000 00 05 00 00 0000000000000000", &pong);
}

#[test]
fn header_fields_decode_from_their_offsets() {
    let bytes = hex("04030201 a5 86 03 02 0807060504030201");
    let header = Header::parse(bytes.first_chunk().unwrap(), u32::MAX).unwrap();
    assert_eq!(header.body_len, 0x0102_0304);
    assert_eq!(header.user_flags, 0xa5);
    assert_eq!(header.cmd, Command::Stream);
    assert!(header.stream_local);
    assert!(!header.stream_eof);
    assert_eq!(header.flags, Flags(0x03));
    assert_eq!(header.method_len, 2);
    assert_eq!(header.seq, 0x0102_0304_0506_0708);
    assert_eq!(header.cmd_byte(), 0x86);
    assert_eq!(header.to_bytes()[..], bytes[..]);
}

/// One frame of every kind the codec handles, including a Stream frame with both stream bits.
fn mixed_frames() -> Vec<Frame> {
    let mut stream = Frame::new(
        Command::Stream,
        Flags::default(),
        9,
        "/upload".into(),
        "chunk".into(),
    );
    stream.header.stream_local = true;
    stream.header.stream_eof = true;
    stream.header.user_flags = 0x5a;
    let large: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    let request = Frame::request(1, "/echo", "hello");
    vec![
        request.clone(),
        Frame::notify(2, "/log", "line"),
        Frame::ping(),
        Frame::pong(),
        Frame::response_to(&request.header, "/echo", "hello"),
        Frame::error_response_to(&request.header, "/echo", "method not found"),
        stream,
        Frame::request(3, "/empty", ""),
        Frame::request(4, "/large", large),
        Frame::new(
            Command::Request,
            Flags(Flags::ASYNC),
            u64::MAX,
            vec![b'm'; MAX_METHOD_LEN].into(),
            "x".into(),
        ),
    ]
}

fn concat(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.to_bytes()).collect()
}

/// Feeds `chunks` to a [`Decoder`] one at a time, decoding everything available after each.
fn decode_chunks_with_decoder<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Frame>, usize) {
    let decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    (frames, buf.len())
}

/// Same as [`decode_chunks_with_decoder`], through [`parse_frame`] over a plain `Vec` buffer.
fn decode_chunks_with_parse_frame<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Frame>, usize) {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some((frame, used)) = parse_frame(&buf[start..], DEFAULT_MAX_BODY).unwrap() {
            frames.push(frame.to_owned());
            start += used;
        }
        buf.drain(..start);
    }
    (frames, buf.len())
}

#[test]
fn mixed_stream_split_at_every_offset_decodes_identically() {
    let frames = mixed_frames();
    let wire = concat(&frames);
    for at in 0..=wire.len() {
        let (first, second) = wire.split_at(at);
        let (decoded, left) = decode_chunks_with_decoder([first, second]);
        assert_eq!(decoded, frames, "Decoder, split at {at}");
        assert_eq!(left, 0);
        let (parsed, left) = decode_chunks_with_parse_frame([first, second]);
        assert_eq!(parsed, frames, "parse_frame, split at {at}");
        assert_eq!(left, 0);
    }
}

#[test]
fn mixed_stream_fed_one_byte_at_a_time_decodes_identically() {
    let frames = mixed_frames();
    let wire = concat(&frames);
    let (decoded, left) = decode_chunks_with_decoder(wire.chunks(1));
    assert_eq!(decoded, frames);
    assert_eq!(left, 0);
    let (parsed, left) = decode_chunks_with_parse_frame(wire.chunks(1));
    assert_eq!(parsed, frames);
    assert_eq!(left, 0);
}

#[test]
fn partial_header_and_partial_body_need_more_bytes() {
    let wire = Frame::request(1, "/echo", "hello").to_bytes();
    for end in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..end]);
        assert_eq!(
            Decoder::default().decode(&mut buf),
            Ok(None),
            "prefix of {end} bytes"
        );
        assert_eq!(
            buf.len(),
            end,
            "an incomplete frame must stay in the buffer"
        );
        assert_eq!(parse_frame(&wire[..end], DEFAULT_MAX_BODY), Ok(None));
    }
}

/// Parses one header through all three entry points and checks they agree on the error.
fn reject(header: [u8; HEADER_LEN], max_body: u32) -> DecodeError {
    let err = Header::parse(&header, max_body).unwrap_err();
    assert_eq!(parse_frame(&header, max_body).unwrap_err(), err);
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(Decoder::new(max_body).decode(&mut buf).unwrap_err(), err);
    err
}

#[test]
fn unknown_commands_are_rejected() {
    for cmd_byte in [0u8, 7, 63, CMD_STREAM_LOCAL, CMD_STREAM_EOF | 7, 0xff] {
        assert_eq!(
            reject(raw_header(0, cmd_byte, 0, 0, 1), DEFAULT_MAX_BODY),
            DecodeError::UnknownCommand(cmd_byte)
        );
    }
    for bits in 7..=CMD_MASK {
        assert_eq!(Command::from_bits(bits), None);
    }
}

#[test]
fn method_length_outside_1_to_127_is_rejected_for_named_commands() {
    for cmd in [Command::Request, Command::Notify, Command::Stream] {
        for len in std::iter::once(0).chain(128..=255) {
            assert_eq!(
                reject(raw_header(300, cmd as u8, 0, len, 1), DEFAULT_MAX_BODY),
                DecodeError::BadMethodLen { cmd, len }
            );
        }
        let accepted = Header::parse(&raw_header(127, cmd as u8, 0, 127, 1), DEFAULT_MAX_BODY);
        assert_eq!(accepted.map(|h| h.method_len), Ok(127));
    }
}

#[test]
fn ping_and_pong_with_a_body_are_rejected() {
    for cmd in [Command::Ping, Command::Pong] {
        for (body_len, method_len) in [(1, 0), (1, 1), (4, 0)] {
            assert_eq!(
                reject(
                    raw_header(body_len, cmd as u8, 0, method_len, 0),
                    DEFAULT_MAX_BODY
                ),
                DecodeError::ControlFrameWithBody { cmd }
            );
        }
    }
}

#[test]
fn method_longer_than_body_is_rejected() {
    assert_eq!(
        reject(
            raw_header(4, Command::Request as u8, 0, 5, 1),
            DEFAULT_MAX_BODY
        ),
        DecodeError::MethodLongerThanBody {
            method_len: 5,
            body_len: 4
        }
    );
    // Responses may carry an empty method, but never more than the body holds.
    assert_eq!(
        reject(
            raw_header(10, Command::Response as u8, 0, 20, 1),
            DEFAULT_MAX_BODY
        ),
        DecodeError::MethodLongerThanBody {
            method_len: 20,
            body_len: 10
        }
    );
    // Nor a method longer than 127 bytes, which could not be re-encoded.
    assert_eq!(
        reject(
            raw_header(300, Command::Response as u8, 0, 200, 1),
            DEFAULT_MAX_BODY
        ),
        DecodeError::BadMethodLen {
            cmd: Command::Response,
            len: 200
        }
    );
}

#[test]
fn oversize_body_is_rejected_from_the_header_alone() {
    let header = raw_header(u32::MAX, Command::Request as u8, 0, 5, 1);
    assert_eq!(
        reject(header, DEFAULT_MAX_BODY),
        DecodeError::BodyTooLarge {
            declared: u32::MAX,
            max: DEFAULT_MAX_BODY
        }
    );

    // Rejection must not reserve room for the declared body.
    let mut buf = BytesMut::from(&header[..]);
    let capacity_before = buf.capacity();
    assert!(Decoder::default().decode(&mut buf).is_err());
    assert_eq!(buf.capacity(), capacity_before);
}

#[test]
fn body_limit_is_inclusive_and_configurable() {
    let at_limit = raw_header(100, Command::Request as u8, 0, 5, 1);
    let mut buf = BytesMut::from(&at_limit[..]);
    assert_eq!(Decoder::new(100).decode(&mut buf), Ok(None));
    assert_eq!(Decoder::new(100).max_body(), 100);
    assert_eq!(Decoder::default().max_body(), DEFAULT_MAX_BODY);
    assert_eq!(
        reject(raw_header(101, Command::Request as u8, 0, 5, 1), 100),
        DecodeError::BodyTooLarge {
            declared: 101,
            max: 100
        }
    );
}

#[test]
fn large_declared_body_reserves_at_most_one_step_ahead() {
    let header = raw_header(DEFAULT_MAX_BODY, Command::Request as u8, 0, 5, 1);
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(Decoder::default().decode(&mut buf), Ok(None));
    assert!(
        buf.capacity() <= RESERVE_STEP + HEADER_LEN,
        "capacity {}",
        buf.capacity()
    );
}

#[test]
fn trickled_large_body_grows_memory_only_with_bytes_received() {
    const BODY: u32 = 1024 * 1024;
    let decoder = Decoder::default();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&raw_header(BODY, Command::Request as u8, 0, 5, 1));
    let chunk = [0u8; 1000];
    let mut received = HEADER_LEN;
    loop {
        if let Some(frame) = decoder.decode(&mut buf).unwrap() {
            assert_eq!(frame.header.body_len, BODY);
            break;
        }
        // Vec's amortised doubling may at most double what the decoder asked for.
        assert!(
            buf.capacity() <= 2 * (received + RESERVE_STEP),
            "capacity {} after {received} bytes",
            buf.capacity()
        );
        let take = chunk.len().min(HEADER_LEN + BODY as usize - received);
        buf.extend_from_slice(&chunk[..take]);
        received += take;
    }
    assert_eq!(received, HEADER_LEN + BODY as usize);
}

#[test]
fn decode_errors_display_as_sentences() {
    let cases = [
        (
            DecodeError::UnknownCommand(0x47),
            "unknown command 7 (cmd byte 0x47)",
        ),
        (
            DecodeError::BodyTooLarge {
                declared: u32::MAX,
                max: DEFAULT_MAX_BODY,
            },
            "declared body of 4294967295 bytes exceeds the maximum of 67108848",
        ),
        (
            DecodeError::BadMethodLen {
                cmd: Command::Request,
                len: 0,
            },
            "Request frame with method length 0 (must be 1..=127)",
        ),
        (
            DecodeError::ControlFrameWithBody { cmd: Command::Ping },
            "Ping frame must be a bare 16-byte header",
        ),
        (
            DecodeError::MethodLongerThanBody {
                method_len: 5,
                body_len: 4,
            },
            "method length 5 exceeds body length 4",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert_eq!(boxed.to_string(), text);
    }
}

#[test]
fn command_classification() {
    for (bits, cmd) in [
        (1, Command::Request),
        (2, Command::Response),
        (3, Command::Notify),
        (4, Command::Ping),
        (5, Command::Pong),
        (6, Command::Stream),
    ] {
        assert_eq!(Command::from_bits(bits), Some(cmd));
        assert_eq!(
            Command::from_bits(bits | CMD_STREAM_LOCAL | CMD_STREAM_EOF),
            Some(cmd)
        );
        assert_eq!(cmd.needs_method(), matches!(bits, 1 | 3 | 6));
        assert_eq!(cmd.is_control(), matches!(bits, 4 | 5));
    }
}

#[test]
#[should_panic(expected = "method longer than 127 bytes")]
fn building_a_frame_with_an_overlong_method_panics() {
    Frame::request(1, vec![b'm'; MAX_METHOD_LEN + 1], "");
}

/// A compressed `/echo` Request of `hello ` x 20 (seq 9) and the plain frame it came from.
fn compressed_echo() -> (Bytes, Bytes) {
    let plain = Frame::request(9, &b"/echo"[..], "hello ".repeat(20)).to_bytes();
    let packed = gzip::compress_frame(&plain, 0, 6).expect("repetitive payload compresses");
    (plain, packed)
}

#[test]
fn parse_frame_any_inflates_compressed_frames_at_every_split() {
    let (plain, packed) = compressed_echo();
    let mut stream = packed.to_vec();
    stream.extend_from_slice(&plain);
    for cut in 0..packed.len() {
        let mut inflated = None;
        assert_eq!(
            parse_frame_any(&stream[..cut], DEFAULT_MAX_BODY, &mut inflated),
            Ok(None),
            "a prefix of {cut} bytes is not a frame yet"
        );
        assert!(inflated.is_none());
        if cut >= HEADER_LEN {
            let head = stream.first_chunk::<HEADER_LEN>().unwrap();
            assert_eq!(frame_len(head, DEFAULT_MAX_BODY), Ok(packed.len()));
        }
    }
    let mut inflated = None;
    let (frame, used) = parse_frame_any(&stream, DEFAULT_MAX_BODY, &mut inflated)
        .unwrap()
        .unwrap();
    assert_eq!(used, packed.len());
    let (want, _) = parse_frame(&plain, DEFAULT_MAX_BODY).unwrap().unwrap();
    assert_eq!(frame, want);
    assert_eq!(inflated.as_deref(), Some(&plain[..]));
    // The plain frame after it takes the plain path and leaves `inflated` alone.
    let mut none = None;
    let (frame, used) = parse_frame_any(&stream[used..], DEFAULT_MAX_BODY, &mut none)
        .unwrap()
        .unwrap();
    assert_eq!((frame, used), (want, plain.len()));
    assert!(none.is_none());
}

#[test]
fn parse_frame_any_checks_the_declared_length_from_the_header_alone() {
    let (_, packed) = compressed_echo();
    let max = (packed.len() - HEADER_LEN - 1) as u32;
    let mut inflated = None;
    let err = parse_frame_any(&packed[..HEADER_LEN], max, &mut inflated).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BodyTooLarge {
            declared: max + 1,
            max
        }
    );
    let head = packed.first_chunk::<HEADER_LEN>().unwrap();
    assert_eq!(frame_len(head, max), Err(err));
}

#[test]
fn parse_frame_any_refuses_bombs_and_corrupt_data() {
    // Inflates to a 2000-byte body: over a 1000-byte limit, though it is small on the wire.
    let plain = Frame::request(1, &b"/echo"[..], vec![0u8; 1995]).to_bytes();
    let packed = gzip::compress_frame(&plain, 0, 9).unwrap();
    assert!(packed.len() < 100);
    let mut inflated = None;
    assert_eq!(
        parse_frame_any(&packed, 1000, &mut inflated),
        Err(DecodeError::Gzip(gzip::GzipError::TooLarge {
            max_body: 1000
        }))
    );
    let mut corrupt = packed.to_vec();
    let n = corrupt.len();
    corrupt[n - 6] ^= 0xff; // the CRC-32
    let mut inflated = None;
    let err = parse_frame_any(&corrupt, DEFAULT_MAX_BODY, &mut inflated).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Gzip(gzip::GzipError::Corrupt { .. })
    ));
    assert!(
        err.to_string()
            .starts_with("gzip-compressed frame: invalid gzip data")
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn parse_frame_any_validates_the_inflated_header() {
    // A Request with no method, compressed: the inner header is checked once inflated.
    let mut plain = BytesMut::new();
    write_frame(
        &mut plain,
        Command::Response,
        Flags::default(),
        0,
        3,
        b"",
        &[b'x'; 200],
    );
    plain[5] = Command::Request as u8;
    let packed = gzip::compress_frame(&plain, 0, 6).unwrap();
    let mut inflated = None;
    assert_eq!(
        parse_frame_any(&packed, DEFAULT_MAX_BODY, &mut inflated),
        Err(DecodeError::BadMethodLen {
            cmd: Command::Request,
            len: 0
        })
    );
}
