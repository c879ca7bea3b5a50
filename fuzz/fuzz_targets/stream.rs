//! libFuzzer target `stream`: Stream frames with fuzzed ids, bits, methods and payloads
//! against a connection with tight stream limits, mixed with streams it opens, reads slowly
//! and drops. The properties live in `ringrpc::fuzzing::check_streams`, which the stable test
//! engine/tests/fuzz_peers.rs also replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ringrpc::fuzzing::check_streams(data);
});
