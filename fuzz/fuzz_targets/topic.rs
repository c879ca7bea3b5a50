//! libFuzzer target `topic`: any bytes as pub/sub topic bytes (`data | name | name_len |
//! timestamp`), decoded by both decoders and re-encoded. The properties live in
//! `ringrpc_protocol::fuzzing::check_topic`, which the stable test protocol/tests/corpus.rs
//! also replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ringrpc_protocol::fuzzing::check_topic(data);
});
