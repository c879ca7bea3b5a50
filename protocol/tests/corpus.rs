//! Stable replay of the `decoder`, `metadata`, `gzip` and `topic` fuzz corpora (fuzz/corpus/TARGET)
//! through their fuzz checks, plus a short fuzz-like pass of generated inputs, so CI
//! exercises them without nightly.
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ringrpc_protocol::fuzzing::{
    Input, MAX_BODY_CHOICES, check_gzip, check_metadata, check_stream, check_topic, encode_input,
};
use ringrpc_protocol::gzip::compress_frame;
use ringrpc_protocol::metadata::{Metadata, append_metadata};
use ringrpc_protocol::{Command, Flags, Frame, MAX_METHOD_LEN, MAX_TOPIC_NAME_LEN, Topic};

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
    let files = corpus("decoder");
    // The hand-written seeds alone are 27 files; fewer means the corpus went missing.
    assert!(files.len() >= 27, "only {} corpus files", files.len());
    for (name, data) in &files {
        let outcome = check_stream(data);
        // Seed names state what they hold; inputs the fuzzer found carry hashes instead.
        if name.starts_with("golden-") || name.starts_with("mixed-") {
            assert_eq!(outcome.error, None, "{name}");
            assert!(!outcome.frames.is_empty(), "{name}");
        }
        if name.starts_with("golden-") {
            assert_eq!(outcome.leftover, 0, "{name}");
        }
        if name.starts_with("bad-") {
            assert!(outcome.error.is_some(), "{name} decoded without an error");
        }
    }
}

fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// The frames of tests/wire-vectors.json (docs/protocol.md's golden vectors and more, shared
/// with the Python client's tests) as `(name, bytes)`.
fn wire_vectors() -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire-vectors.json");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("wire-vectors.json is JSON");
    v["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| {
            let name = f["name"].as_str().expect("name").to_owned();
            (name, unhex(f["hex"].as_str().expect("hex")))
        })
        .collect()
}

#[test]
fn golden_seeds_hold_the_documented_vectors() {
    let files = corpus("decoder");
    let mut seeded = 0;
    for (name, wanted) in wire_vectors() {
        let file = format!("golden-{name}");
        let Some((_, data)) = files.iter().find(|(n, _)| *n == file) else {
            continue;
        };
        seeded += 1;
        // One chunk under the default limit, then the vector.
        assert_eq!(data[..], encode_input(0, &[], &wanted)[..], "{file}");
        let outcome = check_stream(data);
        assert_eq!(outcome.frames.len(), 1, "{file}");
        assert_eq!(&outcome.frames[0].to_bytes()[..], &wanted[..], "{file}");
    }
    // docs/protocol.md's seven golden vectors each have a seed.
    assert!(
        seeded >= 7,
        "only {seeded} golden seeds match a wire vector"
    );
}

#[test]
fn conn_corpus_inputs_are_valid_decoder_inputs_too() {
    // Both targets read the same layout, so each corpus seeds the other.
    for (_, data) in corpus("conn") {
        check_stream(&data);
    }
}

/// Replays one coder corpus: every input passes `check`; seeds named `ok-` decode and seeds
/// named `bad-` fail (inputs the fuzzer found carry hashes instead).
fn replay_coder_corpus<T, E: std::fmt::Debug>(
    target: &str,
    min_seeds: usize,
    check: impl Fn(&[u8]) -> Result<T, E>,
) {
    let files = corpus(target);
    assert!(
        files.len() >= min_seeds,
        "only {} corpus files",
        files.len()
    );
    for (name, data) in &files {
        let outcome = check(data);
        if name.starts_with("ok-") {
            assert!(outcome.is_ok(), "{name}: {:?}", outcome.err());
        }
        if name.starts_with("bad-") {
            assert!(outcome.is_err(), "{name} decoded without an error");
        }
    }
}

#[test]
fn every_metadata_corpus_input_passes_the_fuzz_check() {
    replay_coder_corpus("metadata", 13, check_metadata);
}

#[test]
fn every_gzip_corpus_input_passes_the_fuzz_check() {
    replay_coder_corpus("gzip", 10, check_gzip);
}

#[test]
fn every_topic_corpus_input_passes_the_fuzz_check() {
    replay_coder_corpus("topic", 14, check_topic);
}

#[test]
fn topic_golden_seed_holds_the_documented_example() {
    // docs/protocol.md: topic `news`, data `hi`, timestamp 42.
    let wanted = unhex("6869 6e657773 0400 2a00000000000000");
    let (_, data) = corpus("topic")
        .into_iter()
        .find(|(n, _)| n == "ok-golden-hi-news")
        .expect("ok-golden-hi-news in the corpus");
    assert_eq!(data, wanted);
    assert_eq!(check_topic(&data), Topic::new("news", "hi", 42));
}

#[test]
fn stream_corpora_are_valid_coder_inputs_too() {
    for (_, data) in corpus("decoder").iter().chain(&corpus("conn")) {
        let _ = check_metadata(data);
        let _ = check_gzip(data);
        let _ = check_topic(data);
    }
}

/// A metadata fuzz input: a payload, often ending with a valid block, sometimes damaged.
fn metadata_input() -> impl Strategy<Value = Vec<u8>> {
    let entry = (
        "[a-z\u{e9}]{1,12}",
        proptest::collection::vec(any::<u8>(), 0..40),
    );
    (
        proptest::collection::vec(any::<u8>(), 0..30),
        proptest::collection::vec(entry, 0..6),
        any::<bool>(),
        any::<bool>(),
        any::<(usize, u8)>(),
    )
        .prop_map(|(payload, entries, as_frame, damage, (at, byte))| {
            let mut md = Metadata::new();
            for (k, v) in entries {
                md.insert(k, v).unwrap();
            }
            let mut out = if as_frame {
                Frame::request(3, &b"/md"[..], payload).to_bytes().into()
            } else {
                bytes::BytesMut::from(&payload[..])
            };
            if as_frame {
                append_metadata(&mut out, &md).unwrap();
            } else {
                md.encode_block(&mut out);
            }
            if damage {
                let i = at % out.len();
                out[i] = byte;
            }
            out.to_vec()
        })
}

/// A gzip fuzz input: a control byte and a compressible frame, compressed or not, sometimes
/// damaged.
fn gzip_input() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        proptest::collection::vec(0u8..3, 0..400),
        any::<bool>(),
        proptest::option::of(any::<(usize, u8)>()),
    )
        .prop_map(|(control, payload, compress, damage)| {
            let plain = Frame::request(4, &b"/gz"[..], payload).to_bytes();
            let mut frame = if compress {
                compress_frame(&plain, 0, 6).unwrap_or(plain).to_vec()
            } else {
                plain.to_vec()
            };
            if let Some((at, byte)) = damage {
                let i = at % frame.len();
                frame[i] = byte;
            }
            let mut out = vec![control];
            out.extend_from_slice(&frame);
            out
        })
}

/// A topic fuzz input: valid topic bytes (names up to and past the limit), sometimes cut
/// short, lengthened or damaged.
fn topic_input() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..40),
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 1..20),
            1 => proptest::collection::vec(any::<u8>(), MAX_TOPIC_NAME_LEN - 2..=MAX_TOPIC_NAME_LEN),
        ],
        any::<u64>(),
        proptest::option::of(any::<(usize, u8)>()),
        0usize..3,
    )
        .prop_map(|(data, name, ts, damage, cut)| {
            let mut out = Topic::new(name, data, ts).unwrap().encode().unwrap().to_vec();
            if let Some((at, byte)) = damage {
                let i = at % out.len();
                out[i] = byte;
            }
            out.truncate(out.len() - cut);
            out
        })
}

/// One piece of a generated stream: a valid frame, a header with arbitrary fields followed by
/// roughly the body it declares, or random bytes.
fn part() -> impl Strategy<Value = Vec<u8>> {
    let command = prop_oneof![
        Just(Command::Request),
        Just(Command::Response),
        Just(Command::Notify),
        Just(Command::Ping),
        Just(Command::Pong),
        Just(Command::Stream),
    ];
    let method = prop_oneof![
        3 => Just(b"/echo".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 1..=MAX_METHOD_LEN),
    ];
    let payload = proptest::collection::vec(any::<u8>(), 0..300);
    let valid = (command, any::<u8>(), any::<u8>(), 0u64..4, method, payload).prop_map(
        |(cmd, flags, stream_bits, seq, method, payload)| {
            let (method, payload) = if cmd.is_control() {
                (Vec::new(), Vec::new())
            } else {
                (method, payload)
            };
            let mut frame = Frame::new(cmd, Flags(flags), seq, method.into(), payload.into());
            frame.header.user_flags = flags.rotate_left(3);
            frame.header.stream_local = stream_bits & 1 != 0;
            frame.header.stream_eof = stream_bits & 2 != 0;
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

/// A whole fuzz input: limit, chunk sizes and a stream of parts.
fn input() -> impl Strategy<Value = Vec<u8>> {
    (
        0..MAX_BODY_CHOICES.len(),
        proptest::collection::vec(1usize..=256, 0..6),
        proptest::collection::vec(part(), 0..8),
    )
        .prop_map(|(limit, sizes, parts)| encode_input(limit, &sizes, &parts.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn generated_inputs_pass_the_fuzz_check(data in input()) {
        check_stream(&data);
    }

    #[test]
    fn raw_bytes_pass_the_fuzz_check(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_stream(&data);
    }

    #[test]
    fn generated_metadata_inputs_pass_the_fuzz_check(data in metadata_input()) {
        check_metadata(&data).ok();
    }

    #[test]
    fn generated_gzip_inputs_pass_the_fuzz_check(data in gzip_input()) {
        check_gzip(&data).ok();
    }

    #[test]
    fn generated_topic_inputs_pass_the_fuzz_check(data in topic_input()) {
        check_topic(&data).ok();
    }

    #[test]
    fn raw_bytes_pass_the_coder_fuzz_checks(
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        check_metadata(&data).ok();
        check_gzip(&data).ok();
        check_topic(&data).ok();
    }

    #[test]
    fn input_layout_round_trips(
        limit in 0..MAX_BODY_CHOICES.len(),
        sizes in proptest::collection::vec(1usize..=256, 0..6),
        stream in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let data = encode_input(limit, &sizes, &stream);
        let input = Input::parse(&data);
        prop_assert_eq!(input.max_body, MAX_BODY_CHOICES[limit]);
        prop_assert_eq!(input.stream, &stream[..]);
        prop_assert_eq!(input.chunks.concat(), stream.clone());
        let mut wanted = sizes.iter().cycle();
        for (i, chunk) in input.chunks.iter().enumerate() {
            prop_assert!(!chunk.is_empty());
            let last = i + 1 == input.chunks.len();
            match wanted.next() {
                Some(&size) if !last => prop_assert_eq!(chunk.len(), size),
                Some(&size) => prop_assert!(chunk.len() <= size),
                None => prop_assert_eq!(chunk.len(), stream.len()),
            }
        }
    }
}
