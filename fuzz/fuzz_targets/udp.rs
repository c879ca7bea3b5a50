//! libFuzzer target `udp`: datagrams from a few peers at fuzzed times through one core's
//! datagram endpoint, with retries, deferred answers and sweeps. The properties live in
//! `ringrpc::fuzzing::check_udp`, which the stable test engine/tests/fuzz_peers.rs also
//! replays this target's corpus through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ringrpc::fuzzing::check_udp(data);
});
