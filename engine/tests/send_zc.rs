//! Zero-copy sends (`send_zc_min`) on loopback: large answers leave through `SENDMSG_ZC`
//! and arrive intact, many in flight on several connections; connections closed with sends
//! and notifications outstanding neither lose other connections' bytes nor hang the
//! shutdown; a socket that cannot send zero-copy (Unix) falls back to plain sends.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{Client, IO_TIMEOUT, start_with};
use ringrpc::{Config, CoreStats};
use ringrpc_protocol::{Decoder, Frame};

/// A payload of `len` bytes that differs for every `seq`.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(seq | 1).wrapping_add(seq >> 3) as u8)
        .collect()
}

/// Sizes of the echoes each connection pipelines: 256 KiB and 1 MiB, all in flight at once.
const SIZES: [usize; 12] = [
    256 << 10,
    1 << 20,
    256 << 10,
    256 << 10,
    1 << 20,
    256 << 10,
    256 << 10,
    256 << 10,
    1 << 20,
    256 << 10,
    256 << 10,
    1 << 20,
];

/// On `conns` connections at once, writes every request of `SIZES` before reading (a writer
/// thread each), then checks every echo, byte for byte, in order.
fn echo_everything(addr: std::net::SocketAddr, conns: u64) {
    let clients: Vec<_> = (0..conns)
        .map(|conn| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut sock = c.sock.try_clone().unwrap();
                let seqs: Vec<u64> = (0..SIZES.len() as u64).map(|i| conn * 100 + i).collect();
                let writer = {
                    let seqs = seqs.clone();
                    thread::spawn(move || {
                        for (seq, len) in seqs.into_iter().zip(SIZES) {
                            let frame = Frame::request(seq, "/echo", payload(seq, len));
                            sock.write_all(&frame.to_bytes()).unwrap();
                        }
                    })
                };
                for (seq, len) in seqs.into_iter().zip(SIZES) {
                    let f = c.recv();
                    assert_eq!(f.header.seq, seq);
                    assert!(f.payload == payload(seq, len), "echo {seq} differs");
                }
                writer.join().unwrap();
                c.echo(9999, b"still fine");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

fn large_echo_server(send_zc_min: usize) -> ringrpc::RunningServer {
    start_with(
        Config::builder()
            .cores(2)
            .send_zc_min(send_zc_min)
            .shutdown_grace(Duration::from_secs(1)),
    )
}

#[test]
fn large_answers_leave_zero_copy_and_arrive_intact() {
    let server = large_echo_server(64 << 10);
    echo_everything(server.local_addr(), 6);
    let total = server.shutdown().unwrap().total();
    eprintln!(
        "sends {} zero-copy {} notifications {} copied {}",
        total.sends, total.sends_zc, total.zc_notifications, total.zc_copied
    );
    // Every answer is at least 256 KiB, so every batch that carries one goes zero-copy.
    assert!(total.sends_zc >= 6 * 3, "{total:?}");
    assert!(total.zc_notifications >= 1, "{total:?}");
    assert!(total.zc_notifications <= total.sends_zc, "{total:?}");
    assert!(total.zc_copied <= total.zc_notifications, "{total:?}");
    assert_eq!(total.zc_refused, 0, "{total:?}");
    assert_eq!(total.socket_errors, 0, "{total:?}");
}

#[test]
fn with_the_knob_off_nothing_is_sent_zero_copy() {
    let server = large_echo_server(0);
    echo_everything(server.local_addr(), 2);
    let total = server.shutdown().unwrap().total();
    assert_eq!(
        (total.sends_zc, total.zc_notifications),
        (0, 0),
        "{total:?}"
    );
    assert!(total.sends > 0);
}

#[test]
fn a_threshold_above_the_batches_keeps_them_plain() {
    // Every answer is under 2 MiB, and at most a few travel in one batch.
    let server = large_echo_server(64 << 20);
    echo_everything(server.local_addr(), 1);
    let total = server.shutdown().unwrap().total();
    assert_eq!(total.sends_zc, 0, "{total:?}");
}

/// Writes `n` requests of 1 MiB and reads nothing back.
fn flood(addr: std::net::SocketAddr, n: u64) -> TcpStream {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    for seq in 0..n {
        let frame = Frame::request(seq, "/echo", payload(seq, 1 << 20));
        // The server stops reading once its output is over its limit: the rest may not fit.
        if sock.write_all(&frame.to_bytes()).is_err() {
            break;
        }
    }
    sock
}

#[test]
fn connections_closed_with_sends_in_flight_cost_only_themselves_and_shutdown_does_not_hang() {
    let server = large_echo_server(64 << 10);
    let addr = server.local_addr();
    // Peers that send and vanish without reading: their answers are in zero-copy sends (or
    // awaiting notification) when the reset comes.
    let vanishing: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || drop(flood(addr, 6))))
        .collect();
    // Meanwhile well-behaved connections get every byte.
    echo_everything(addr, 3);
    for v in vanishing {
        v.join().unwrap();
    }
    // A peer that stops reading and stays: its notifications cannot come while it holds
    // the connection open, so the shutdown closes it after the grace and must still end.
    let stuck = flood(addr, 8);
    thread::sleep(Duration::from_millis(200));
    echo_everything(addr, 1);
    let started = Instant::now();
    let total = server.shutdown().unwrap().total();
    let took = started.elapsed();
    drop(stuck);
    eprintln!("shutdown took {took:?}; {total:?}");
    // The grace (1 s), then the ring waits at most once (2 s) for notifications the stuck
    // peer holds back, and leaks their buffers rather than free them under the kernel.
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    assert!(total.sends_zc >= 3 * 3, "{total:?}");
}

/// Echoes over a Unix socket, which refuses zero-copy: the first large send of each
/// connection comes back refused and goes out plainly, and every later one is plain.
#[test]
fn a_unix_socket_falls_back_to_plain_sends_once_per_connection() {
    let dir = std::env::temp_dir().join(format!("ringrpc-zc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let config = Config::builder()
        .cores(1)
        .listen(format!("unix:{}", path.display()))
        .send_zc_min(4096)
        .build()
        .unwrap();
    let server = ringrpc::Server::builder()
        .config(config)
        .build()
        .unwrap()
        .start()
        .unwrap();
    for conn in 0..2u64 {
        let mut sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = BytesMut::new();
        for i in 0..4u64 {
            let seq = conn * 10 + i;
            let sent = payload(seq, 256 << 10);
            let frame = Frame::request(seq, "/echo", sent.clone()).to_bytes();
            let mut writer = sock.try_clone().unwrap();
            let w = thread::spawn(move || writer.write_all(&frame).unwrap());
            let f = loop {
                if let Some(f) = Decoder::default().decode(&mut buf).unwrap() {
                    break f;
                }
                let mut chunk = [0u8; 65536];
                let n = sock.read(&mut chunk).unwrap();
                assert!(n > 0, "closed");
                buf.extend_from_slice(&chunk[..n]);
            };
            w.join().unwrap();
            assert_eq!(f.header.seq, seq);
            assert!(f.payload == sent, "echo {seq} differs");
        }
    }
    let total: CoreStats = server.shutdown().unwrap().total();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(total.zc_refused, 2, "{total:?}");
    assert_eq!(total.sends_zc, 2, "only the refused ones: {total:?}");
    assert_eq!(total.socket_errors, 0, "{total:?}");
}
