//! libFuzzer target `conn`: any byte stream, split anywhere, into a connection with the
//! built-in router. The properties live in `ringrpc::fuzzing::fuzz_check`, which the stable test
//! engine/tests/fuzz_corpus.rs also replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringrpc::fuzzing::fuzz_check(data);
});
