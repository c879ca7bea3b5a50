//! The ring against real sockets on 127.0.0.1, through the public API only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::{pair, reap_until, ring_with};
use ringrpc_uring::{CancelOutcome, IOV_MAX, OpKind, Ring, RingConfig, RingError, SharedFd};

#[test]
fn cancel_all_finishes_accept_recv_send_timeout_and_wake() {
    let mut ring = ring_with(8, 4096);
    let listener = SharedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
    let (client, server) = pair();
    let (client, server) = (SharedFd::from(client), SharedFd::from(server));
    ring.accept_multi(&listener, 1).unwrap();
    ring.recv_multi(&server, 2).unwrap();
    ring.timeout(Duration::from_secs(3600), 3).unwrap();
    ring.wake_read(4).unwrap();
    ring.send(&client, 5, vec![Bytes::from_static(b"hi")])
        .unwrap();
    let mut done = Vec::new();
    ring.submit_and_wait(0, &mut done).unwrap();
    assert!(
        ring.in_flight() >= 4,
        "accept, recv, timeout and wake stay armed"
    );
    assert!(ring.cancel_all_and_wait());
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn recv_buffers_go_back_to_the_kernel_when_dropped() {
    let mut ring = ring_with(2, 4096);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    let mut recv = ring.recv_multi(&server, 9).unwrap();
    let mut seen = Vec::new();
    // Two buffers only: more messages than buffers proves each one comes back on drop.
    for i in 0..8u8 {
        client.write_all(&[i; 10]).unwrap();
        let done = reap_until(&mut ring, |c| c.kind() == OpKind::Recv);
        for mut c in done {
            assert_eq!((c.tag(), c.kind(), c.op()), (9, OpKind::Recv, recv));
            assert!(c.more(), "multishot recv stays armed: {}", c.result());
            let buf = c.take_recv_buf().expect("a filled buffer");
            assert_eq!(buf.len(), c.result() as usize);
            assert!(c.take_recv_buf().is_none(), "the buffer moves out once");
            seen.extend_from_slice(&buf);
        } // `buf` dropped here: recycled
        if !ring.is_in_flight(recv) {
            recv = ring.recv_multi(&server, 9).unwrap();
        }
    }
    let want: Vec<u8> = (0..8u8).flat_map(|i| [i; 10]).collect();
    assert_eq!(seen, want);
    assert!(ring.cancel_all_and_wait());
}

#[test]
fn holding_every_buffer_ends_the_recv_with_enobufs() {
    let mut ring = ring_with(2, 4096);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    ring.recv_multi(&server, 1).unwrap();
    let mut held = Vec::new();
    let mut final_result = None;
    for i in 0..3u8 {
        client.write_all(&[i; 10]).unwrap();
        for mut c in reap_until(&mut ring, |_| true) {
            held.extend(c.take_recv_buf());
            if !c.more() {
                final_result = Some(c.result());
            }
        }
        if final_result.is_some() {
            break;
        }
    }
    assert_eq!(held.len(), 2);
    assert_eq!(final_result, Some(-libc::ENOBUFS));
    drop(held);
    // Both buffers are back: a fresh recv gets the waiting bytes.
    ring.recv_multi(&server, 1).unwrap();
    let done = reap_until(&mut ring, |c| c.result() > 0);
    let got: Vec<u8> = done
        .into_iter()
        .filter_map(|mut c| c.take_recv_buf())
        .flat_map(|b| b.to_vec())
        .collect();
    assert_eq!(got, vec![2u8; 10]);
}

#[test]
fn a_send_hands_back_exactly_its_own_batch() {
    let mut ring = ring_with(2, 4096);
    let (mut c1, s1) = pair();
    let (mut c2, s2) = pair();
    let (s1, s2) = (SharedFd::from(s1), SharedFd::from(s2));
    let b1 = vec![Bytes::from_static(b"one"), Bytes::from(vec![1u8; 1000])];
    let b2 = vec![Bytes::from_static(b"two"); 3];
    let ptrs = |b: &[Bytes]| b.iter().map(|s| s.as_ptr()).collect::<Vec<_>>();
    let (p1, p2) = (ptrs(&b1), ptrs(&b2));
    let id1 = ring.send(&s1, 11, b1.clone()).unwrap();
    let id2 = ring.send(&s2, 22, b2.clone()).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        for mut c in reap_until(&mut ring, |_| true) {
            assert_eq!(c.kind(), OpKind::Send);
            assert!(!c.more());
            let batch = c.take_sent_batch().expect("the send's batch");
            got.push((c.tag(), c.op(), c.result(), batch));
        }
    }
    got.sort_by_key(|g| g.0);
    assert_eq!(got[0].0..=got[1].0, 11..=22);
    assert_eq!((got[0].1, got[0].2), (id1, 1003));
    assert_eq!((got[1].1, got[1].2), (id2, 9));
    assert_eq!((&got[0].3, ptrs(&got[0].3)), (&b1, p1));
    assert_eq!((&got[1].3, ptrs(&got[1].3)), (&b2, p2));
    let mut buf = vec![0u8; 1003];
    c1.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..3], b"one");
    let mut buf = [0u8; 9];
    c2.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"twotwotwo");
}

#[test]
fn a_send_that_cannot_be_queued_returns_its_batch() {
    let mut ring = ring_with(2, 4096);
    let (_c, s) = pair();
    let s = SharedFd::from(s);
    let err = ring.send(&s, 0, Vec::new()).unwrap_err();
    assert_eq!(err.error.kind(), std::io::ErrorKind::InvalidInput);
    let big = vec![Bytes::from_static(b"x"); IOV_MAX + 1];
    let err = ring.send(&s, 0, big).unwrap_err();
    assert_eq!(err.batch.len(), IOV_MAX + 1);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn many_concurrent_timeouts_fire_in_order() {
    let mut ring = ring_with(2, 4096);
    // 20 timers of 10..200 ms, armed out of order; tag = length in ms.
    let mut armed = Vec::new();
    for i in 0..20u64 {
        let ms = 10 + (i * 7 % 20) * 10;
        armed.push(ring.timeout(Duration::from_millis(ms), ms).unwrap());
    }
    let mut fired = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fired.len() < 20 && Instant::now() < deadline {
        let mut done = Vec::new();
        ring.submit_and_wait(1, &mut done).unwrap();
        for c in done {
            assert_eq!(
                (c.kind(), c.result(), c.more()),
                (OpKind::Timeout, -libc::ETIME, false)
            );
            assert!(armed.contains(&c.op()));
            fired.push(c.tag());
        }
    }
    let sorted: Vec<u64> = (0..20).map(|i| 10 + i * 10).collect();
    assert_eq!(fired, sorted);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn cancelling_a_finished_op_does_not_cancel_a_newer_one() {
    let mut ring = ring_with(2, 4096);
    let old = ring.timeout(Duration::from_millis(1), 1).unwrap();
    reap_until(&mut ring, |c| c.op() == old);
    assert!(!ring.is_in_flight(old));
    // The slab reuses the slot; the generation tells the two apart.
    let new = ring.timeout(Duration::from_millis(50), 2).unwrap();
    assert_ne!(old, new);
    assert_eq!(ring.cancel(old).unwrap(), CancelOutcome::AlreadyFinished);
    let done = reap_until(&mut ring, |c| c.op() == new);
    let c = done.iter().find(|c| c.op() == new).unwrap();
    assert_eq!(
        (c.tag(), c.result()),
        (2, -libc::ETIME),
        "fired, not cancelled"
    );
    // Whereas cancelling the live id does cancel it.
    let live = ring.timeout(Duration::from_secs(3600), 3).unwrap();
    assert_eq!(ring.cancel(live).unwrap(), CancelOutcome::Requested);
    let done = reap_until(&mut ring, |c| c.op() == live);
    assert_eq!(done.last().unwrap().result(), -libc::ECANCELED);
}

fn fd_target(fd: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

#[test]
fn a_socket_stays_open_until_its_ops_final_completion() {
    let mut ring = ring_with(2, 4096);
    let (_client, server) = pair();
    let server = SharedFd::from(server);
    let n = server.as_raw_fd();
    let socket = fd_target(n).expect("the server socket is open");
    let recv = ring.recv_multi(&server, 7).unwrap();
    let mut done = Vec::new();
    ring.submit_and_wait(0, &mut done).unwrap();
    drop(server); // the caller's only handle
    // The ring's clone keeps the number taken: new sockets get other numbers.
    let fresh: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    assert!(fresh.iter().all(|s| s.as_raw_fd() != n));
    assert_eq!(fd_target(n).as_ref(), Some(&socket));
    ring.cancel(recv).unwrap();
    let done = reap_until(&mut ring, |c| c.op() == recv && !c.more());
    assert_eq!(done.last().unwrap().result(), -libc::ECANCELED);
    // The final completion released the ring's clone, closing the socket.
    assert_ne!(fd_target(n), Some(socket));
}

#[test]
fn accept_hands_over_an_owned_connected_socket() {
    let mut ring = ring_with(2, 4096);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = SharedFd::from(listener);
    let accept = ring.accept_multi(&listener, 5).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    let mut done = reap_until(&mut ring, |c| c.kind() == OpKind::Accept);
    let c = done.last_mut().unwrap();
    assert_eq!((c.tag(), c.op(), c.more()), (5, accept, true));
    let fd = c.take_accepted().expect("the accepted socket");
    assert_eq!(fd.as_raw_fd(), c.result());
    let mut server = TcpStream::from(fd);
    server.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    // An accept completion nobody takes closes its socket when dropped.
    let _client2 = TcpStream::connect(addr).unwrap();
    let done = reap_until(&mut ring, |c| c.kind() == OpKind::Accept);
    let n = done.last().unwrap().result();
    let socket = fd_target(n).expect("the unaccepted socket is open");
    drop(done);
    // Closed: the number is free, or (other test threads) names a different file now.
    assert_ne!(fd_target(n), Some(socket));
}

#[test]
fn a_recv_buf_outlives_its_ring() {
    let mut ring = ring_with(2, 4096);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    ring.recv_multi(&server, 1).unwrap();
    client.write_all(b"kept").unwrap();
    let mut done = reap_until(&mut ring, |c| c.result() > 0);
    let buf = done.last_mut().unwrap().take_recv_buf().unwrap();
    drop(done);
    drop(ring); // cancels the recv; the buffer memory stays alive for `buf`
    assert_eq!(&*buf, b"kept");
    drop(buf); // recycles into a ring nobody reads any more, then frees it
}

#[test]
fn a_waker_on_another_thread_completes_the_wake_read() {
    let mut ring = ring_with(2, 4096);
    let wake = ring.wake_read(42).unwrap();
    let waker = ring.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.wake().unwrap();
    });
    let done = reap_until(&mut ring, |c| c.op() == wake);
    let c = done.last().unwrap();
    assert_eq!(
        (c.tag(), c.kind(), c.result(), c.more()),
        (42, OpKind::Wake, 8, false)
    );
    t.join().unwrap();
}

#[test]
fn bad_config_is_rejected_with_a_library_level_message() {
    let err = Ring::new(RingConfig {
        entries: 8,
        recv_buffers: 3,
        recv_buffer_size: 16,
        incremental_recv_buffers: false,
    })
    .unwrap_err();
    assert!(matches!(err, RingError::InvalidConfig(_)));
    let text = err.to_string();
    assert!(
        text.contains("power of two") && !text.contains("--"),
        "{text}"
    );
}

/// `recv_into` fills exactly the bytes asked for, from many writes, after what the buffer
/// already held, and leaves the rest of the stream for the next recv.
#[test]
fn recv_into_receives_exactly_what_it_asks_for_into_the_buffer() {
    let mut ring = ring_with(8, 4096);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    let mut buf = bytes::BytesMut::with_capacity(300_000);
    buf.extend_from_slice(b"head");
    let want = 200_000;
    let id = ring.recv_into(&server, 7, buf, want).unwrap();
    let sent: Vec<u8> = (0..want + 10).map(|i| (i % 251) as u8).collect();
    let writer = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for piece in sent.chunks(7_000) {
                client.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
            client
        })
    };
    let mut done = reap_until(&mut ring, |c| c.kind() == OpKind::RecvInto);
    let mut c = done.pop().unwrap();
    assert_eq!(
        (c.tag(), c.op(), c.result(), c.more()),
        (7, id, want as i32, false)
    );
    let filled = c.take_filled().expect("the buffer comes back");
    assert_eq!(&filled[..4], b"head");
    assert_eq!(&filled[4..], &sent[..want]);
    assert_eq!(ring.in_flight(), 0);
    // The 10 bytes past what was asked for are still in the socket.
    let _client = writer.join().unwrap();
    ring.recv_multi(&server, 8).unwrap();
    let done = reap_until(&mut ring, |c| c.kind() == OpKind::Recv);
    let rest: Vec<u8> = done
        .into_iter()
        .filter_map(|mut c| c.take_recv_buf().map(|b| b.to_vec()))
        .flatten()
        .collect();
    assert_eq!(rest, &sent[want..]);
    assert!(ring.cancel_all_and_wait());
}

/// A recv_into asking for more than the spare capacity (or nothing) is refused and hands its
/// buffer back; one cancelled while waiting returns the buffer with what arrived before.
#[test]
fn recv_into_checks_its_size_and_returns_its_buffer_when_cancelled() {
    let mut ring = ring_with(8, 4096);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    let buf = bytes::BytesMut::with_capacity(100);
    let (err, buf) = ring.recv_into(&server, 1, buf, 101).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let (_, buf) = ring.recv_into(&server, 1, buf, 0).unwrap_err();
    let id = ring.recv_into(&server, 1, buf, 100).unwrap();
    client.write_all(&[5; 30]).unwrap();
    let mut batch = Vec::new();
    ring.submit_and_wait_for(1, Duration::from_millis(50), &mut batch)
        .unwrap();
    assert!(batch.is_empty(), "30 of 100 bytes: still waiting");
    ring.cancel(id).unwrap();
    let mut done = reap_until(&mut ring, |c| c.kind() == OpKind::RecvInto);
    let mut c = done.pop().unwrap();
    let filled = c.take_filled().expect("the buffer comes back");
    // Linux reports the bytes a cancelled MSG_WAITALL recv had already received.
    assert_eq!((c.result(), filled.len()), (30, 30));
    assert!(filled.iter().all(|&b| b == 5));
    assert_eq!(ring.in_flight(), 0);
}

/// A ring of 256 buffers hands the kernel 64 at first; each time a recv runs out while
/// every one of them is held, twice as many are handed over, up to all 256.
#[test]
fn running_out_of_buffers_hands_the_kernel_more_up_to_all() {
    let mut ring = ring_with(256, 4096);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    let mut held = Vec::new();
    let mut outs = Vec::new();
    ring.recv_multi(&server, 1).unwrap();
    for i in 0..400u16 {
        client.write_all(&i.to_le_bytes()).unwrap();
        for mut c in reap_until(&mut ring, |_| true) {
            held.extend(c.take_recv_buf());
            if !c.more() {
                assert_eq!(c.result(), -libc::ENOBUFS);
                outs.push(held.len());
                if held.len() < 256 {
                    ring.recv_multi(&server, 1).unwrap();
                }
            }
        }
        if held.len() == 256 && !outs.is_empty() && *outs.last().unwrap() == 256 {
            break;
        }
    }
    assert_eq!(outs, [64, 128, 256], "ran out at 64, then 128, then all");
    let got: Vec<u8> = held.iter().flat_map(|b| b.to_vec()).collect();
    let sent: Vec<u8> = (0..got.len() as u16 / 2)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    assert_eq!(got, sent, "nothing lost or reordered across the re-arms");
    assert!(ring.cancel_all_and_wait());
}
