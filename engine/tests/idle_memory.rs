//! What an idle connection costs in heap: counted by a global allocator that tracks live
//! bytes (`stats_alloc`), after each connection has done one echo and gone quiet. The slot itself is
//! reserved up front (see `a_connection_slot_stays_small`); this checks that nothing else
//! stays behind: no send buffer, send batch, stream table, call map or answer counter.

mod common;

use std::alloc::System;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static COUNTING: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, by every thread.
fn live_bytes() -> i64 {
    let stats = COUNTING.stats();
    stats.bytes_allocated as i64 + stats.bytes_reallocated as i64 - stats.bytes_deallocated as i64
}

/// `/echo` with a 32-byte payload, seq 1.
fn echo_request() -> Vec<u8> {
    let frame = ringrpc_protocol::Frame::request(1, "/echo", vec![b'i'; 32]);
    frame.to_bytes().to_vec()
}

/// Live heap bytes once they stop changing (the reactor has finished with what it got).
fn settled_live_bytes() -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = live_bytes();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = live_bytes();
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn an_idle_connection_holds_little_heap_after_an_echo() {
    const CONNECTIONS: usize = 1000;
    let server = common::start(1);
    let addr = server.local_addr();
    let request = echo_request();
    let mut answer = vec![0u8; request.len()];
    let mut open = Vec::with_capacity(CONNECTIONS);
    // One connection first, so one-time costs (first receive, first send) are paid.
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(&request).unwrap();
    first.read_exact(&mut answer).unwrap();
    let before = settled_live_bytes();
    for _ in 0..CONNECTIONS {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&request).unwrap();
        c.read_exact(&mut answer).unwrap();
        assert_eq!(answer[5], 2, "a Response");
        open.push(c);
    }
    let after = settled_live_bytes();
    let per_connection = (after - before) / CONNECTIONS as i64;
    // The socket's shared descriptor (24 bytes) and the amortized growth of the reactor's
    // timer heap; before the idle work it was 674.
    assert!(
        per_connection <= 160,
        "{per_connection} heap bytes per idle connection"
    );
    drop(open);
    drop(first);
    server.shutdown().unwrap();
}
