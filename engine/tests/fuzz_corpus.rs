//! Stable replay of the `conn` fuzz corpus (fuzz/corpus/conn) through the connection fuzz
//! check, plus a short fuzz-like pass of generated inputs, so CI exercises it without nightly.
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ringrpc::fuzzing::fuzz_check;
use ringrpc_protocol::fuzzing::{MAX_BODY_CHOICES, encode_input};
use ringrpc_protocol::{Command, Flags, Frame, MAX_METHOD_LEN};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).expect("a readable corpus file"))
        })
        .collect()
}

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
