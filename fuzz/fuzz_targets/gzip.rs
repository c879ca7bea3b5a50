//! libFuzzer target `gzip`: a control byte (body limit, deflate level) and a frame, inflated
//! as it is and, made a plain frame, compressed and inflated again. The properties live in
//! `ringrpc_protocol::fuzzing::check_gzip`, which the stable test protocol/tests/corpus.rs
//! also replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ringrpc_protocol::fuzzing::check_gzip(data);
});
