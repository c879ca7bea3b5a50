//! Receive buffers consumed incrementally (`IOU_PBUF_RING_INC`, kernel ≥ 6.12) over real TCP
//! sockets: bytes arrive intact and in order with several completions per buffer, a buffer
//! goes back to the kernel only once the kernel is done with it and no slice of it is held,
//! and a ring that asked for whole buffers (or a kernel without the flag) keeps them whole.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{pair, reap_until, ring_config};
use ringrpc_uring::{Completion, OpId, OpKind, RecvBuf, Ring, SharedFd};

/// Whether this kernel has `IOU_PBUF_RING_INC` (6.12), from its release string.
fn kernel_has_inc() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next().unwrap(), nums.next().unwrap());
    (major, minor) >= (6, 12)
}

/// An incremental ring, checking the probe settled as this kernel allows.
fn incremental_ring(recv_buffers: u16, size: usize) -> Ring {
    let ring = ring_config(recv_buffers, size, true);
    assert_eq!(ring.features().incremental_recv_buffers, kernel_has_inc());
    ring
}

/// The byte at stream position `i`: not periodic in any buffer size used here.
fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

/// Receives on `server` until `total` bytes came, arming `recv` when it is not armed (its
/// last completion was final: `-ENOBUFS`); hands each recv buffer to `keep` (which may hold
/// it) and returns the bytes and each slice's (bid, offset, len).
fn receive(
    ring: &mut Ring,
    server: &SharedFd,
    recv: &mut Option<OpId>,
    total: usize,
    mut keep: impl FnMut(RecvBuf),
) -> (Vec<u8>, Vec<(u16, usize, usize)>) {
    let (mut got, mut slices) = (Vec::new(), Vec::new());
    while got.len() < total {
        if !recv.is_some_and(|id| ring.is_in_flight(id)) {
            *recv = Some(ring.recv_multi(server, 3).unwrap());
        }
        for mut c in reap_until(ring, |c: &Completion| c.kind() == OpKind::Recv) {
            if let Some(buf) = c.take_recv_buf() {
                assert_eq!(buf.len(), c.result() as usize);
                slices.push((buf.buffer_id(), buf.offset(), buf.len()));
                got.extend_from_slice(&buf);
                keep(buf);
            } else {
                assert_eq!(c.result(), -libc::ENOBUFS, "recv failed");
            }
        }
    }
    (got, slices)
}

/// Each slice of a buffer starts where the one before it ended, or at 0 once it was whole
/// again; returns how many started past 0 (completions that shared a buffer).
fn check_contiguous(slices: &[(u16, usize, usize)]) -> usize {
    let mut next = std::collections::HashMap::new();
    let mut shared = 0;
    for &(bid, offset, len) in slices {
        let want = next.get(&bid).copied().unwrap_or(0);
        assert!(
            offset == want || offset == 0,
            "buffer {bid}: slice at {offset}, expected {want} or 0"
        );
        shared += usize::from(offset > 0);
        next.insert(bid, offset + len);
    }
    shared
}

#[test]
fn small_and_large_sends_arrive_intact_and_in_order_sharing_buffers() {
    let mut ring = incremental_ring(4, 64 * 1024);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    let mut recv = None;
    // Small sends one at a time: each is its own completion, many to a buffer.
    let mut pos = 0;
    let mut small = Vec::new();
    for i in 0..200usize {
        let n = 1 + (i * 37) % 300;
        let chunk: Vec<u8> = (pos..pos + n).map(byte_at).collect();
        client.write_all(&chunk).unwrap();
        let (got, slices) = receive(&mut ring, &server, &mut recv, n, drop);
        assert_eq!(got, chunk, "send {i}");
        small.extend(slices);
        pos += n;
    }
    let shared = check_contiguous(&small);
    if ring.features().incremental_recv_buffers {
        assert!(
            shared > 150,
            "only {shared} of 200 completions shared a buffer"
        );
    } else {
        assert_eq!(shared, 0, "whole buffers are never shared");
    }
    // Then 4 MiB in sends of 1 B to 200 KiB from another thread through four buffers,
    // holding a few slices at a time, so buffers are retired, held, recycled and wrap.
    let start = pos;
    let sizes: Vec<usize> = (0..120usize)
        .map(|i| [1, 32, 4096, 65536, 200_000, 777][i % 6] + i)
        .collect();
    let total: usize = sizes.iter().sum();
    let writer = std::thread::spawn(move || {
        let mut p = start;
        for n in sizes {
            let chunk: Vec<u8> = (p..p + n).map(byte_at).collect();
            client.write_all(&chunk).unwrap();
            p += n;
        }
        client
    });
    let mut held = std::collections::VecDeque::new();
    let (got, slices) = receive(&mut ring, &server, &mut recv, total, |buf| {
        held.push_back(buf);
        if held.len() > 2 {
            held.pop_front();
        }
    });
    let _client: TcpStream = writer.join().unwrap();
    assert_eq!(got.len(), total);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, &b)| b == byte_at(start + i)),
        "bytes differ"
    );
    assert!(slices.iter().all(|&(bid, ..)| bid < 4));
    small.extend(slices);
    check_contiguous(&small);
}

#[test]
fn a_buffer_is_not_republished_while_a_slice_of_it_is_held() {
    let mut ring = incremental_ring(1, 4096);
    if !ring.features().incremental_recv_buffers {
        return; // a kernel before 6.12: the test above covered whole buffers
    }
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    let mut recv = None;
    client.write_all(&[1; 100]).unwrap();
    let mut first = Vec::new();
    receive(&mut ring, &server, &mut recv, 100, |b| first.push(b));
    assert_eq!((first[0].buffer_id(), first[0].offset()), (0, 0));
    // 4000 bytes: the kernel fills the buffer's other 3996 and is done with it; 4 wait,
    // and with the only buffer retired the recv ends with -ENOBUFS.
    client.write_all(&[2; 4000]).unwrap();
    let (got, slices) = receive(&mut ring, &server, &mut recv, 3996, drop);
    assert_eq!((got, slices), (vec![2; 3996], vec![(0, 100, 3996)]));
    let id = recv.unwrap();
    if ring.is_in_flight(id) {
        reap_until(&mut ring, |c| c.op() == id && !c.more());
    }
    // That slice is gone, but the first is held: a fresh recv finds no buffer.
    let again = ring.recv_multi(&server, 3).unwrap();
    let done = reap_until(&mut ring, |c| c.op() == again && !c.more());
    let last = done.iter().find(|c| c.op() == again).unwrap();
    assert_eq!(last.result(), -libc::ENOBUFS);
    // Dropping the held slice hands the buffer back, whole: the rest lands at its start.
    drop(first);
    let (got, slices) = receive(&mut ring, &server, &mut None, 4, drop);
    assert_eq!((got, slices), (vec![2; 4], vec![(0, 0, 4)]));
}

#[test]
fn whole_buffers_stay_whole_and_datagrams_need_them() {
    let mut ring = ring_config(4, 4096, false);
    assert!(!ring.features().incremental_recv_buffers);
    let (mut client, server) = pair();
    let server = SharedFd::from(server);
    let (mut slices, mut recv) = (Vec::new(), None);
    for i in 0..8u8 {
        client.write_all(&[i; 10]).unwrap();
        let (got, s) = receive(&mut ring, &server, &mut recv, 10, drop);
        assert_eq!(got, vec![i; 10]);
        slices.extend(s);
    }
    assert!(
        slices
            .iter()
            .all(|&(_, offset, len)| offset == 0 && len == 10)
    );
    let udp = SharedFd::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    ring.recvmsg_multi(&udp, 4).unwrap();
    let mut inc = incremental_ring(4, 4096);
    let refused = inc.recvmsg_multi(&udp, 4);
    assert_eq!(
        refused.is_err(),
        inc.features().incremental_recv_buffers,
        "{refused:?}"
    );
}
