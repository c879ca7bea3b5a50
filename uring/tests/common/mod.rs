//! Helpers shared by the ring's socket tests: a ring, a connected TCP pair, and reaping
//! until a completion of interest arrives.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ringrpc_uring::{Completion, Ring, RingConfig};

/// A 64-entry ring with `recv_buffers` whole provided buffers of `recv_buffer_size` bytes.
pub fn ring_with(recv_buffers: u16, recv_buffer_size: usize) -> Ring {
    ring_config(recv_buffers, recv_buffer_size, false)
}

/// As [`ring_with`], asking for buffers consumed incrementally if `incremental`.
pub fn ring_config(recv_buffers: u16, recv_buffer_size: usize, incremental: bool) -> Ring {
    Ring::new(RingConfig {
        entries: 64,
        recv_buffers,
        recv_buffer_size,
        incremental_recv_buffers: incremental,
    })
    .expect("io_uring setup")
}

/// Both ends of a TCP connection on 127.0.0.1.
pub fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Reaps until `pred` holds for some completion (or 5 s pass); returns everything reaped.
pub fn reap_until(ring: &mut Ring, mut pred: impl FnMut(&Completion) -> bool) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = Vec::new();
    let mut batch = Vec::new();
    loop {
        ring.submit_and_wait_for(1, Duration::from_millis(50), &mut batch)
            .unwrap();
        let hit = batch.iter().any(&mut pred);
        all.append(&mut batch);
        if hit {
            return all;
        }
        assert!(Instant::now() < deadline, "no matching completion in 5 s");
    }
}
