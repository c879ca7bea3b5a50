//! libFuzzer target `tls`: bytes into a server connection with TLS beside plaintext or
//! required (sniffing, rustls' server handshake, records out), or a real in-memory rustls
//! client's handshake and plaintext, split anywhere. The properties live in
//! `ringrpc::fuzzing::check_tls` (feature `tls`), which the stable test
//! engine/tests/fuzz_tls.rs also replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ringrpc::fuzzing::check_tls(data);
});
