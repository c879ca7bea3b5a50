//! Stable replay of the `tls` fuzz corpus (fuzz/corpus/tls) through its check
//! (`ringrpc::fuzzing::check_tls`), plus a short pass of generated inputs, so CI exercises
//! the TLS path's sniffing and server handshake without nightly. The seeds are generated
//! here (`seeds`): set `RINGRPC_WRITE_SEEDS=1` to write them after changing one.
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ringrpc::fuzzing::check_tls;
use ringrpc_protocol::Frame;
use ringrpc_protocol::fuzzing::encode_input;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tls")
}

/// The hand-made seeds: name, bytes (flags, then the stream layout).
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let echo = Frame::request(1, "/echo", "hi").to_bytes().to_vec();
    let two = [
        echo.clone(),
        Frame::request(2, "/echo", "again").to_bytes().to_vec(),
    ]
    .concat();
    // A handshake record holding a ClientHello of 7 bytes: "garbage".
    let bad_hello = [
        &[0x16, 0x03, 0x01, 0x00, 11, 0x01, 0x00, 0x00, 7][..],
        b"garbage",
    ]
    .concat();
    let seed = |flags: u8, chunks: &[usize], bytes: &[u8]| {
        let mut v = vec![flags];
        v.extend(encode_input(0, chunks, bytes));
        v
    };
    vec![
        ("client-echo", seed(2, &[], &echo)),
        ("client-echo-split", seed(2, &[1, 7, 100], &two)),
        ("required-client-echo", seed(3, &[5], &echo)),
        ("client-without-asked-certificate", seed(6, &[], &echo)),
        ("plaintext-echo", seed(0, &[3], &echo)),
        ("garbage-client-hello", seed(0, &[4, 4], &bad_hello)),
        ("required-plaintext", seed(1, &[], &echo)),
    ]
}

#[test]
fn seeds_are_committed() {
    for (name, data) in seeds() {
        let path = corpus_dir().join(name);
        if std::env::var_os("RINGRPC_WRITE_SEEDS").is_some() {
            fs::create_dir_all(corpus_dir()).unwrap();
            fs::write(&path, &data).unwrap();
        }
        let committed = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            committed, data,
            "{name} changed: rerun with RINGRPC_WRITE_SEEDS=1"
        );
    }
}

#[test]
fn seeds_get_their_answers() {
    let answers = |name: &str| {
        let (_, data) = seeds().into_iter().find(|(n, _)| *n == name).unwrap();
        check_tls(&data)
    };
    for name in ["client-echo", "required-client-echo"] {
        let out = answers(name);
        assert!(
            out.tls && out.handshake_done && !out.ended,
            "{name}: {out:?}"
        );
        assert_eq!(out.answers, 1, "{name}");
    }
    assert_eq!(answers("client-echo-split").answers, 2);
    let refused = answers("client-without-asked-certificate");
    assert!(
        refused.tls && !refused.handshake_done && refused.ended,
        "{refused:?}"
    );
    let plain = answers("plaintext-echo");
    assert!(!plain.tls && !plain.ended, "{plain:?}");
    let garbage = answers("garbage-client-hello");
    assert!(
        garbage.tls && !garbage.handshake_done && garbage.ended,
        "{garbage:?}"
    );
    let required = answers("required-plaintext");
    assert!(required.tls && required.ended, "{required:?}");
}

#[test]
fn corpus_passes() {
    let mut paths: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/tls")
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    paths.sort();
    assert!(paths.len() >= seeds().len());
    for path in paths {
        let _ = check_tls(&fs::read(&path).expect("a readable corpus file"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn generated_inputs_pass(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = check_tls(&data);
    }
}
