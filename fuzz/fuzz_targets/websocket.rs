//! libFuzzer target `websocket`: the WebSocket upgrade request and frames (or raw bytes) into
//! a connection that speaks WebSocket, split anywhere. The properties live in
//! `ringrpc::fuzzing::check_websocket`, which the stable test engine/tests/fuzz_peers.rs also
//! replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ringrpc::fuzzing::check_websocket(data);
});
