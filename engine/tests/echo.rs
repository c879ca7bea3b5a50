//! Raw-byte loopback tests of the engine library: echo, pipelining, framing edge cases.

mod common;

use std::thread;

use common::{Client, start, start_with};
use ringrpc::Config;
use ringrpc_protocol::{Command, Flags, Frame};

#[test]
fn one_echo_matches_the_golden_bytes() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    // arpc's captured request `/echo` "hello" seq 2, and its response.
    c.send_raw(&hex(
        "0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f",
    ));
    let f = c.recv();
    assert_eq!(
        f.to_bytes()[..],
        hex("0a000000 00 02 00 05 0200000000000000 2f6563686f 68656c6c6f")[..]
    );
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 1);
}

#[test]
fn async_flag_is_echoed() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    c.send_raw(&hex(
        "07000000 00 01 02 05 0700000000000000 2f6563686f 6869",
    ));
    let f = c.recv();
    assert_eq!(f.header.cmd, Command::Response);
    assert_eq!(f.header.flags, Flags(Flags::ASYNC));
    assert_eq!(&f.payload[..], b"hi");
    server.shutdown().unwrap();
}

#[test]
fn ten_thousand_pipelined_requests_over_eight_connections() {
    let server = start(2);
    let addr = server.local_addr();
    let per_conn = 10_000 / 8;
    let workers: Vec<_> = (0..8u64)
        .map(|conn| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let payload = |seq: u64| format!("conn {conn} request {seq}").into_bytes();
                // Everything is written before anything is read: true pipelining.
                let mut wire = bytes::BytesMut::new();
                for seq in 0..per_conn {
                    Frame::request(seq, "/echo", payload(seq)).encode_to(&mut wire);
                }
                let writer = {
                    let mut sock = c.sock.try_clone().unwrap();
                    thread::spawn(move || std::io::Write::write_all(&mut sock, &wire).unwrap())
                };
                for seq in 0..per_conn {
                    let f = c.recv();
                    assert_eq!(f.header.cmd, Command::Response);
                    assert_eq!(
                        f.header.seq, seq,
                        "responses come back in order on one connection"
                    );
                    assert_eq!(f.payload, payload(seq));
                }
                writer.join().unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 8 * per_conn);
    assert!(report.total().frames_per_send() >= 1.0);
}

#[test]
fn frames_written_one_byte_at_a_time() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    let mut wire = Vec::new();
    for seq in 0..3u64 {
        wire.extend_from_slice(&Frame::request(seq, "/echo", vec![seq as u8; 20]).to_bytes());
    }
    wire.extend_from_slice(&Frame::ping().to_bytes());
    for b in &wire {
        c.send_raw(std::slice::from_ref(b));
    }
    for seq in 0..3u64 {
        let f = c.recv();
        assert_eq!(f.header.seq, seq);
        assert_eq!(&f.payload[..], &vec![seq as u8; 20][..]);
    }
    assert_eq!(c.recv().header.cmd, Command::Pong);
    server.shutdown().unwrap();
}

#[test]
fn one_mebibyte_payload() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let writer = {
        let mut sock = c.sock.try_clone().unwrap();
        let bytes = Frame::request(77, "/echo", payload.clone()).to_bytes();
        thread::spawn(move || std::io::Write::write_all(&mut sock, &bytes).unwrap())
    };
    let f = c.recv();
    writer.join().unwrap();
    assert_eq!(f.header.seq, 77);
    assert!(f.payload == payload, "1 MiB payload came back changed");
    c.echo(78, b"still fine");
    server.shutdown().unwrap();
}

#[test]
fn ping_gets_pong() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    c.send_raw(&hex("00000000 00 04 00 00 0000000000000000"));
    assert_eq!(
        c.recv().to_bytes()[..],
        hex("00000000 00 05 00 00 0000000000000000")[..]
    );
    server.shutdown().unwrap();
}

#[test]
fn unknown_method_gets_an_error_and_the_connection_keeps_working() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(5, "/fail", "x"));
    let f = c.recv();
    assert!(f.is_error());
    assert_eq!(f.header.seq, 5);
    assert_eq!(&f.method[..], b"/fail");
    assert_eq!(&f.payload[..], ringrpc::router::METHOD_NOT_FOUND.as_bytes());
    c.echo(6, b"after the error");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().not_found, 1);
}

#[test]
fn notify_gets_no_response() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::notify(1, "/echo", "one-way"));
    c.send(&Frame::notify(2, "/unknown", "one-way"));
    // The next frame to arrive must be the answer to this request, not to the notifies.
    c.echo(3, b"two-way");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().notifies, 2);
    assert_eq!(report.total().frames_out, 1);
}

#[test]
fn unknown_command_closes_only_that_connection() {
    let server = start(2);
    let mut good = Client::connect(server.local_addr());
    good.echo(1, b"before");
    let mut bad = Client::connect(server.local_addr());
    bad.echo(1, b"fine so far");
    bad.send_raw(&hex("00000000 00 07 00 00 0000000000000000"));
    bad.expect_closed();
    good.echo(2, b"unaffected");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().protocol_errors, 1);
}

#[test]
fn four_gib_declared_body_closes_only_that_connection() {
    let server = start(2);
    let mut good = Client::connect(server.local_addr());
    let mut bad = Client::connect(server.local_addr());
    // body_len 0xFFFFFFFF on a Request: refused from the header alone.
    bad.send_raw(&hex("ffffffff 00 01 00 05 0100000000000000 2f6563686f"));
    bad.expect_closed();
    good.echo(1, b"unaffected");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().protocol_errors, 1);
}

#[test]
fn two_hundred_connections_reset_mid_frame_then_the_server_still_serves() {
    let server = start(2);
    let addr = server.local_addr();
    let full = Frame::request(1, "/echo", vec![9u8; 1000]).to_bytes();
    for i in 0..200 {
        let mut c = Client::connect(addr);
        c.send_raw(&full[..16 + (i * 7) % 900]);
        // SO_LINGER 0: close sends RST instead of FIN.
        socket2::SockRef::from(&c.sock)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(c);
    }
    let mut c = Client::connect(addr);
    c.echo(1, b"still serving");
    drop(c);
    let report = server.shutdown().unwrap();
    let total = report.total();
    assert_eq!(total.accepted, 201);
    assert_eq!(
        total.closed, total.accepted,
        "every connection slot was released"
    );
    assert_eq!(total.requests, 1);
}

#[test]
fn one_thousand_concurrent_connections() {
    let server = start(2);
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..1000).map(|_| Client::connect(addr)).collect();
    // All requests are sent while every connection is open, then all are answered.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&Frame::request(i as u64, "/echo", format!("client {i}")));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let f = c.recv();
        assert_eq!(f.header.seq, i as u64);
        assert_eq!(f.payload, format!("client {i}").into_bytes());
    }
    drop(clients);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().accepted, 1000);
    assert_eq!(report.total().requests, 1000);
    assert!(
        report.cores.iter().all(|c| c.accepted > 0),
        "SO_REUSEPORT spread connections over both cores"
    );
}

#[test]
fn graceful_shutdown_answers_everything_already_sent() {
    let server = start(2);
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    for c in &mut clients {
        c.echo(0, b"accepted");
    }
    let per_conn = 500u64;
    for c in &mut clients {
        let mut wire = bytes::BytesMut::new();
        for seq in 1..=per_conn {
            Frame::request(seq, "/echo", seq.to_le_bytes().to_vec()).encode_to(&mut wire);
        }
        c.send_raw(&wire);
    }
    // Everything above is in the server's socket buffers (or already read) now.
    let handle = server.handle();
    handle.shutdown();
    for c in &mut clients {
        for seq in 1..=per_conn {
            let f = c.recv();
            assert_eq!(f.header.seq, seq);
            assert_eq!(&f.payload[..], &seq.to_le_bytes());
        }
        // Then the server closes the connection cleanly.
        assert!(c.try_recv().unwrap().is_none());
    }
    drop(clients);
    let report = server.join().unwrap();
    assert_eq!(report.total().requests, 4 * (per_conn + 1));
    // New connections are refused after shutdown.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_peer_that_vanishes_with_responses_queued_affects_only_itself() {
    let server = start(1);
    let addr = server.local_addr();
    let mut good = Client::connect(addr);
    good.echo(1, b"before");
    {
        let mut gone = Client::connect(addr);
        // 32 MiB of requests and never a read: responses pile up on the server's side
        // until its send-queue limit stops it reading; then our writes are pushed back.
        gone.sock
            .set_write_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let frame = Frame::request(1, "/echo", vec![3u8; 256 * 1024]).to_bytes();
        for _ in 0..128 {
            if std::io::Write::write_all(&mut gone.sock, &frame).is_err() {
                break;
            }
        }
        socket2::SockRef::from(&gone.sock)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
    }
    good.echo(2, b"after");
    drop(good);
    let report = server.shutdown().unwrap();
    let total = report.total();
    assert_eq!(total.accepted, 2);
    assert_eq!(
        total.closed, 2,
        "the vanished peer's slot and queue were released"
    );
}

#[test]
fn reflect_mode_writes_back_exactly_what_arrived() {
    let server = common::start_with(ringrpc::Config::builder().cores(1).reflect(true));
    let mut c = Client::connect(server.local_addr());
    // Not even a valid frame: reflect mode does not decode.
    let junk: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    c.send_raw(&junk);
    let mut back = vec![0u8; junk.len()];
    std::io::Read::read_exact(&mut c.sock, &mut back).unwrap();
    assert!(back == junk);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 0);
    assert_eq!(report.total().bytes_in, junk.len() as u64);
    assert_eq!(report.total().protocol_errors, 0);
}

/// Frames larger than a receive buffer are assembled, answered from their own buffer
/// without a copy, and the next ones still come out right.
#[test]
fn large_frames_are_echoed_intact_one_after_another() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    for seq in 1..=20u64 {
        let payload: Vec<u8> = (0..200_000u32)
            .map(|i| (i as u64 * seq % 251) as u8)
            .collect();
        let wire = Frame::request(seq, "/echo", payload.clone()).to_bytes();
        let (a, b) = wire.split_at(wire.len() / 3);
        c.send_raw(a);
        c.send_raw(b);
        let f = c.recv();
        assert_eq!(f.header.seq, seq);
        assert!(f.payload == payload, "seq {seq}: echo differs");
    }
    server.shutdown().unwrap();
}

/// A large frame arriving slowly has its rest received straight into its own buffer; small
/// frames written right behind it (same write) are still read, in order, afterwards.
#[test]
fn a_slow_large_frame_is_received_directly_and_the_frames_behind_it_follow() {
    let server = start(1);
    let mut c = Client::connect(server.local_addr());
    for round in 0..3u64 {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i as u64 + round) as u8).collect();
        let wire = Frame::request(100 + round, "/echo", big.clone()).to_bytes();
        // The header and a little, a pause (so the rest is not already in), then the rest
        // with two small requests behind it in one write.
        c.send_raw(&wire[..5000]);
        thread::sleep(std::time::Duration::from_millis(30));
        let mut rest = wire[5000..].to_vec();
        rest.extend_from_slice(&Frame::request(200 + round, "/echo", b"one".to_vec()).to_bytes());
        rest.extend_from_slice(&Frame::request(300 + round, "/echo", b"two".to_vec()).to_bytes());
        c.send_raw(&rest);
        let f = c.recv();
        assert_eq!(f.header.seq, 100 + round);
        assert!(f.payload == big, "round {round}: echo differs");
        assert_eq!(&c.recv().payload[..], b"one");
        assert_eq!(&c.recv().payload[..], b"two");
    }
    let report = server.shutdown().unwrap();
    assert!(report.total().direct_recvs >= 3, "{:?}", report.total());
}

/// Whether this kernel consumes provided buffers incrementally (`IOU_PBUF_RING_INC`, 6.12).
fn kernel_has_incremental_buffers() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap(), nums.next().unwrap()) >= (6, 12)
}

/// With incremental receive buffers, echoes of 32 B to 1 MiB come back byte for byte, and
/// the small reads share buffers (whole buffers, never shared, on a kernel before 6.12).
#[test]
fn incremental_recv_buffers_echo_every_size_byte_for_byte() {
    let server = start_with(
        Config::builder()
            .cores(1)
            .incremental_recv_buffers(true)
            .recv_buffers(64)
            .recv_buffer_size(128 * 1024),
    );
    let mut c = Client::connect(server.local_addr());
    let mut seq = 0;
    for size in [32usize, 4096, 65536, 1 << 20] {
        for round in 0..8 {
            seq += 1;
            let payload: Vec<u8> = (0..size).map(|i| ((i * 7 + round) % 251) as u8).collect();
            let mut sock = c.sock.try_clone().unwrap();
            let bytes = Frame::request(seq, "/echo", payload.clone()).to_bytes();
            let writer = thread::spawn(move || std::io::Write::write_all(&mut sock, &bytes));
            let f = c.recv();
            writer.join().unwrap().unwrap();
            assert_eq!(f.header.seq, seq);
            assert!(
                f.payload == payload,
                "{size} B echo {round} came back changed"
            );
        }
    }
    drop(c);
    let total = server.shutdown().unwrap().total();
    assert_eq!(total.requests, seq);
    if kernel_has_incremental_buffers() {
        // Every 32 B and 4 KiB request after a buffer's first is a read into its rest.
        assert!(total.recv_buffer_shared >= 8, "{total:?}");
    } else {
        assert_eq!(total.recv_buffer_shared, 0, "{total:?}");
    }
}
