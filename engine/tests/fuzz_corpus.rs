//! Stable replay of the `conn` fuzz corpus (fuzz/corpus/conn) through the connection fuzz
//! check, plus a short fuzz-like pass of generated inputs, so CI exercises it without nightly.
//! The corpus's stream seeds are generated here too (`stream_seeds`), with the answers
//! each is owed.
mod common;

use std::fs;

use common::{corpus, corpus_dir};
use proptest::prelude::*;
use ringrpc::fuzzing::fuzz_check;
use ringrpc_protocol::fuzzing::{MAX_BODY_CHOICES, encode_input};
use ringrpc_protocol::{Command, Flags, Frame, MAX_METHOD_LEN};

#[test]
fn every_corpus_input_passes_the_fuzz_check() {
    let files = corpus("conn");
    // The hand-written seeds alone are 27 files; fewer means the corpus went missing.
    assert!(files.len() >= 27, "only {} corpus files", files.len());
    for (name, data) in &files {
        let outcome = fuzz_check(data);
        // Seed names state what they hold; inputs the fuzzer found carry hashes instead.
        if name.starts_with("golden-") || name.starts_with("mixed-") {
            assert_eq!(outcome.error, None, "{name}");
        }
        if name.starts_with("bad-") {
            assert!(outcome.error.is_some(), "{name} was not refused");
        }
    }
}

#[test]
fn golden_seeds_get_the_documented_answers() {
    let files = corpus("conn");
    let output_of = |name: &str| {
        let (_, data) = files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing from the corpus"));
        fuzz_check(data)
            .output
            .iter()
            .map(|f| f.to_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    let request = Frame::request(2, "/echo", "hello");
    let response = Frame::response_to(&request.header, "/echo", "hello").to_bytes();
    assert_eq!(output_of("golden-request-echo-hello"), [response.to_vec()]);
    let mut async_request = Frame::request(7, "/echo", "hi");
    async_request.header.flags = Flags(Flags::ASYNC);
    let async_response = Frame::response_to(&async_request.header, "/echo", "hi").to_bytes();
    assert_eq!(
        output_of("golden-async-request-echo-hi"),
        [async_response.to_vec()]
    );
    assert_eq!(
        output_of("golden-ping"),
        [Frame::pong().to_bytes().to_vec()]
    );
    for silent in [
        "golden-response-echo-hello",
        "golden-error-response-fail-boom",
        "golden-async-response-echo-hi",
        "golden-pong",
    ] {
        assert!(output_of(silent).is_empty(), "{silent} was answered");
    }
}

#[test]
fn decoder_corpus_inputs_are_valid_conn_inputs_too() {
    // Both targets read the same layout, so each corpus seeds the other.
    for (_, data) in corpus("decoder") {
        fuzz_check(&data);
    }
}

/// One piece of a generated stream: a valid frame (for a known method, an unknown one, or
/// random bytes as a method), a header with arbitrary fields followed by roughly the body it
/// declares, or random bytes.
fn part() -> impl Strategy<Value = Vec<u8>> {
    let command = prop_oneof![
        3 => Just(Command::Request),
        1 => Just(Command::Response),
        1 => Just(Command::Notify),
        2 => Just(Command::Ping),
        1 => Just(Command::Pong),
        1 => Just(Command::Stream),
    ];
    let method = prop_oneof![
        4 => Just(b"/echo".to_vec()),
        2 => Just(b"/echo/stream".to_vec()),
        1 => Just(b"/nope".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 1..=MAX_METHOD_LEN),
    ];
    let payload = proptest::collection::vec(any::<u8>(), 0..300);
    let valid = (command, any::<u8>(), 0u64..4, method, payload).prop_map(
        |(cmd, flags, seq, method, payload)| {
            let (method, payload) = if cmd.is_control() {
                (Vec::new(), Vec::new())
            } else {
                (method, payload)
            };
            let mut frame = Frame::new(cmd, Flags(flags), seq, method.into(), payload.into());
            frame.header.user_flags = flags.rotate_left(3);
            if cmd == Command::Stream {
                // Mostly streams the peer opened (local bit), some with EOF.
                frame.header.stream_local = flags & 0x30 != 0;
                frame.header.stream_eof = flags & 0x0c == 0x0c;
            }
            frame.to_bytes().to_vec()
        },
    );
    let skewed = (any::<[u8; 8]>(), 0usize..200, -2i64..=2).prop_map(|(fields, body, skew)| {
        let body_len = (body as i64 + skew).max(0) as u32;
        let mut bytes = body_len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[fields[0], (fields[1] % 8) | (fields[1] & 0xc0), fields[2]]);
        bytes.push(fields[3] % (body as u8).saturating_add(2));
        bytes.extend_from_slice(&u64::from(fields[4]).to_le_bytes());
        bytes.resize(bytes.len() + body, fields[5]);
        bytes
    });
    let random = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![6 => valid, 2 => skewed, 1 => random]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_inputs_pass_the_fuzz_check(
        limit in 0..MAX_BODY_CHOICES.len(),
        sizes in proptest::collection::vec(1usize..=256, 0..6),
        parts in proptest::collection::vec(part(), 0..8),
    ) {
        fuzz_check(&encode_input(limit, &sizes, &parts.concat()));
    }

    #[test]
    fn raw_bytes_pass_the_fuzz_check(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzz_check(&data);
    }
}

#[test]
fn coder_seeds_get_inflated_and_stripped_answers() {
    let files = corpus("conn");
    let output_of = |name: &str| {
        let (_, data) = files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing from the corpus"));
        fuzz_check(data).output
    };
    // A compressed /echo is inflated and answered (uncompressed: no threshold is set).
    let gz = output_of("mixed-gzip-echo");
    assert_eq!(gz.len(), 3);
    assert_eq!(&gz[0].payload[..], "hello ".repeat(20).as_bytes());
    assert_eq!(gz[1].header.cmd, Command::Pong);
    // Metadata is taken off before /echo sees the payload; a malformed block is answered
    // with an error naming it and the connection goes on.
    let md = output_of("mixed-metadata-echo-and-bad-blocks");
    assert_eq!(&md[0].payload[..], b"hi");
    assert!(md[1].is_error());
    assert!(
        String::from_utf8_lossy(&md[1].payload).starts_with("invalid metadata: "),
        "{:?}",
        md[1]
    );
    assert_eq!(&md[2].payload[..], b"data");
    let both = output_of("mixed-gzip-metadata-echo");
    assert_eq!(&both[0].payload[..], "hello ".repeat(20).as_bytes());
}

/// A Stream frame as a peer sends it on a stream it opened (the local bit, 0x80, set).
fn stream(id: u64, method: &str, payload: &[u8], eof: bool, error: bool) -> Vec<u8> {
    let flags = if error {
        Flags(Flags::ERROR)
    } else {
        Flags::default()
    };
    let mut f = Frame::new(
        Command::Stream,
        flags,
        id,
        method.as_bytes().to_vec().into(),
        payload.to_vec().into(),
    );
    f.header.stream_local = true;
    f.header.stream_eof = eof;
    f.to_bytes().to_vec()
}

/// A Stream frame of a stream the receiver would have opened (no local bit): it has none.
fn stream_theirs(id: u64, payload: &[u8], eof: bool, error: bool) -> Vec<u8> {
    let mut bytes = stream(id, "/echo/stream", payload, eof, error);
    bytes[5] &= !ringrpc_protocol::CMD_STREAM_LOCAL; // the cmd byte
    bytes
}

const ECHO: &str = "/echo/stream";

/// The stream seeds of the conn corpus: each name, its input (limit index, chunk sizes,
/// frames) and the answers the built-in `/echo/stream` owes it, one line per frame
/// (`command seq [eof] [err] payload`).
fn stream_seeds() -> Vec<(&'static str, Vec<u8>, Vec<String>)> {
    use ringrpc_protocol::gzip::compress_frame;
    use ringrpc_protocol::metadata::{Metadata, USER_FLAG_METADATA, append_metadata};

    let mut with_md = bytes::BytesMut::from(&stream(4, ECHO, b"traced", false, false)[..]);
    let mut md = Metadata::new();
    md.insert("trace", "abc").unwrap();
    append_metadata(&mut with_md, &md).unwrap();
    let mut bad_md = stream(4, ECHO, b"not a block", false, false);
    bad_md[4] |= USER_FLAG_METADATA;
    let big = "stream ".repeat(30);
    let plain = stream(4, ECHO, big.as_bytes(), true, false);
    let gzipped = compress_frame(&plain, 0, 6).expect("compressible").to_vec();
    let unknown_command = [0u8; 16]; // body_len 0, cmd 0: no such command

    vec![
        (
            "mixed-stream-echo-data-then-bare-eof",
            encode_input(
                0,
                &[5, 16, 7],
                &[
                    stream(1, ECHO, b"hello", false, false),
                    stream(1, ECHO, b"world", false, false),
                    stream(1, ECHO, b"", true, false),
                ]
                .concat(),
            ),
            lines(&["Stream 1 hello", "Stream 1 world", "Stream 1 eof "]),
        ),
        (
            "mixed-stream-eof-on-data",
            encode_input(0, &[], &stream(2, ECHO, b"last", true, false)),
            lines(&["Stream 2 last", "Stream 2 eof "]),
        ),
        (
            "mixed-stream-bare-eof",
            encode_input(0, &[1], &stream(3, ECHO, b"", true, false)),
            lines(&["Stream 3 eof "]),
        ),
        (
            "mixed-stream-error-ends",
            encode_input(
                1,
                &[20, 33],
                &[
                    stream(5, ECHO, b"a", false, false),
                    // An error end: the text is not echoed, the stream ends with an EOF.
                    stream(5, ECHO, b"boom", false, true),
                    // Error and EOF bits together, on a fresh stream.
                    stream(6, ECHO, b"b", false, false),
                    stream(6, ECHO, b"bang", true, true),
                    // An error end opening a stream: ends it at once.
                    stream(7, ECHO, b"", false, true),
                ]
                .concat(),
            ),
            lines(&[
                "Stream 5 a",
                "Stream 5 eof ",
                "Stream 6 b",
                "Stream 6 eof ",
                "Stream 7 eof ",
            ]),
        ),
        (
            "mixed-stream-unknown-method",
            encode_input(
                0,
                &[3, 200],
                &[
                    stream(8, "/nope/stream", b"x", false, false),
                    // An error end for an unknown method gets nothing back.
                    stream(9, "/nope/stream", b"err", true, true),
                    stream(10, "/echo", b"y", true, false),
                ]
                .concat(),
            ),
            lines(&[
                "Stream 8 eof err stream method not found",
                "Stream 10 eof err stream method not found",
            ]),
        ),
        (
            "mixed-stream-unknown-ids",
            encode_input(
                0,
                &[16],
                &[
                    // Frames of streams this side would have opened: it opened none.
                    stream_theirs(11, b"data", false, false),
                    stream_theirs(12, b"", true, false),
                    stream_theirs(13, b"err", true, true),
                    Frame::ping().to_bytes().to_vec(),
                    // A known id is known only with the local bit: 1 is opened here.
                    stream(1, ECHO, b"mine", false, false),
                    stream_theirs(1, b"theirs", true, false),
                    stream(1, ECHO, b"", true, false),
                ]
                .concat(),
            ),
            lines(&["Pong 0 ", "Stream 1 mine", "Stream 1 eof "]),
        ),
        (
            "mixed-stream-interleaved-with-calls",
            encode_input(
                1,
                &[1, 2, 3, 5, 8, 13, 21],
                &[
                    stream(1, ECHO, b"one", false, false),
                    stream(2, ECHO, b"two", false, false),
                    Frame::request(1, "/echo", "call").to_bytes().to_vec(),
                    stream(1, ECHO, b"uno", false, false),
                    Frame::ping().to_bytes().to_vec(),
                    Frame::notify(2, "/echo", "ignored").to_bytes().to_vec(),
                    stream(2, ECHO, b"dos", true, false),
                    stream(1, ECHO, b"", true, false),
                ]
                .concat(),
            ),
            lines(&[
                "Stream 1 one",
                "Stream 2 two",
                "Response 1 call",
                "Stream 1 uno",
                "Pong 0 ",
                "Stream 2 dos",
                "Stream 2 eof ",
                "Stream 1 eof ",
            ]),
        ),
        (
            "mixed-stream-reopen-id-after-eof",
            encode_input(
                0,
                &[],
                &[
                    stream(5, ECHO, b"first", true, false),
                    stream(5, ECHO, b"second", true, false),
                ]
                .concat(),
            ),
            lines(&[
                "Stream 5 first",
                "Stream 5 eof ",
                "Stream 5 second",
                "Stream 5 eof ",
            ]),
        ),
        (
            "mixed-stream-metadata-and-gzip",
            encode_input(0, &[40], &[with_md.to_vec(), bad_md, gzipped].concat()),
            // The block is taken off; a malformed one drops its frame; gzip is inflated.
            lines(&[
                "Stream 4 traced",
                &format!("Stream 4 {big}"),
                "Stream 4 eof ",
            ]),
        ),
        (
            "bad-stream-then-unknown-command",
            encode_input(
                2,
                &[9],
                &[
                    stream(1, ECHO, b"before", false, false),
                    unknown_command.to_vec(),
                    stream(1, ECHO, b"after", true, false),
                ]
                .concat(),
            ),
            lines(&["Stream 1 before"]),
        ),
    ]
}

fn lines(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

/// One answer frame as a line: `command seq [eof] [err] payload`.
fn describe(f: &Frame) -> String {
    format!(
        "{:?} {} {}{}{}",
        f.header.cmd,
        f.header.seq,
        if f.header.stream_eof { "eof " } else { "" },
        if f.header.flags.is_error() {
            "err "
        } else {
            ""
        },
        String::from_utf8_lossy(&f.payload)
    )
}

/// The stream seeds are generated here, so their bytes say what they hold; set
/// `RINGRPC_WRITE_SEEDS=1` to write them into fuzz/corpus/conn after changing one.
#[test]
fn stream_seeds_are_committed_and_get_the_echo() {
    let dir = corpus_dir("conn");
    let write = std::env::var_os("RINGRPC_WRITE_SEEDS").is_some();
    for (name, data, wanted) in stream_seeds() {
        let path = dir.join(name);
        if write {
            fs::write(&path, &data).unwrap();
        }
        let committed = fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Another deflate implementation may pack the gzip seed differently: its answers
        // below are what must hold.
        if !name.contains("gzip") {
            assert_eq!(committed, data, "{name} differs from its generator");
        }
        let outcome = fuzz_check(&committed);
        let got: Vec<String> = outcome.output.iter().map(describe).collect();
        assert_eq!(got, wanted, "{name}");
        assert_eq!(outcome.error.is_some(), name.starts_with("bad-"), "{name}");
    }
}
