//! libFuzzer target `metadata`: any bytes as a payload ending with a metadata block, as the
//! payload of a Request carrying the metadata bit, and as a whole frame. The properties live
//! in `ringrpc_protocol::fuzzing::check_metadata`, which the stable test
//! protocol/tests/corpus.rs also replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ringrpc_protocol::fuzzing::check_metadata(data);
});
