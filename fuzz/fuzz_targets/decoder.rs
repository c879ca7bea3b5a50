//! libFuzzer target `decoder`: any byte stream, split anywhere, through both decoding paths.
//! The properties live in `ringrpc_protocol::fuzzing::check_stream`, which the stable test
//! protocol/tests/corpus.rs also replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringrpc_protocol::fuzzing::check_stream(data);
});
