//! Datagram ops (`recvmsg_multi`, `send_to`, `send_to_segmented`) against real UDP sockets on
//! 127.0.0.1 and [::1] (where the machine has IPv6), through the public API only.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

mod common;

use bytes::Bytes;
use common::{reap_until, ring_with};
use ringrpc_uring::{Completion, Datagram, OpKind, Ring, RingConfig, SharedFd};

const BUF: usize = 4096;
/// Payload room in one buffer: the kernel's 16-byte header and 128-byte name field come first.
const ROOM: usize = BUF - 16 - 128;

/// A UDP socket on `ip` (port 0), or `None` where the address family is unavailable.
fn udp(ip: &str) -> Option<UdpSocket> {
    UdpSocket::bind((ip, 0)).ok()
}

/// Reaps until `n` datagrams arrived (re-arming the recvmsg if it ends); returns them.
fn datagrams(
    others: &mut Vec<Completion>,
    ring: &mut Ring,
    socket: &SharedFd,
    recv: &mut ringrpc_uring::OpId,
    n: usize,
) -> Vec<Datagram> {
    let mut got = Vec::new();
    while got.len() < n {
        for mut c in reap_until(ring, |c| c.kind() == OpKind::RecvMsg) {
            if c.op() != *recv {
                others.push(c);
                continue;
            }
            assert_eq!((c.kind(), c.op()), (OpKind::RecvMsg, *recv));
            if let Some(d) = c.take_datagram() {
                assert!(
                    c.take_recv_buf().is_none(),
                    "the buffer moved into the datagram"
                );
                got.push(d);
            } else {
                assert!(
                    !c.more(),
                    "a completion without a datagram ends the op: {}",
                    c.result()
                );
            }
        }
        if !ring.is_in_flight(*recv) {
            *recv = ring.recvmsg_multi(socket, 1).unwrap();
        }
    }
    got
}

fn two_peers_on(ip: &str) {
    let Some(server) = udp(ip) else {
        eprintln!("no {ip} on this machine; skipped");
        return;
    };
    let addr = server.local_addr().unwrap();
    let server = SharedFd::from(server);
    let (a, b) = (udp(ip).unwrap(), udp(ip).unwrap());
    let mut ring = ring_with(8, BUF);
    let mut recv = ring.recvmsg_multi(&server, 1).unwrap();
    a.send_to(b"from a", addr).unwrap();
    b.send_to(b"from b, longer", addr).unwrap();
    a.send_to(b"a again", addr).unwrap();
    let got = datagrams(&mut Vec::new(), &mut ring, &server, &mut recv, 3);
    let seen: Vec<(Option<SocketAddr>, &[u8], bool)> = got
        .iter()
        .map(|d| (d.peer(), d.payload(), d.is_truncated()))
        .collect();
    let (pa, pb) = (Some(a.local_addr().unwrap()), Some(b.local_addr().unwrap()));
    assert_ne!(pa, pb);
    assert_eq!(
        seen,
        vec![
            (pa, &b"from a"[..], false),
            (pb, &b"from b, longer"[..], false),
            (pa, &b"a again"[..], false),
        ]
    );
    assert!(ring.is_in_flight(recv), "multishot recvmsg stays armed");
    drop(got);
    assert!(ring.cancel_all_and_wait());
}

#[test]
fn datagrams_from_two_peers_carry_their_addresses_v4() {
    two_peers_on("127.0.0.1");
}

#[test]
fn datagrams_from_two_peers_carry_their_addresses_v6() {
    two_peers_on("::1");
}

#[test]
fn more_datagrams_than_buffers_recycle_them() {
    let server = udp("127.0.0.1").unwrap();
    let addr = server.local_addr().unwrap();
    let server = SharedFd::from(server);
    let client = udp("127.0.0.1").unwrap();
    let mut ring = ring_with(2, BUF);
    let mut recv = ring.recvmsg_multi(&server, 1).unwrap();
    let mut bids = Vec::new();
    for i in 0..16u8 {
        client.send_to(&[i; 100], addr).unwrap();
        let got = datagrams(&mut Vec::new(), &mut ring, &server, &mut recv, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload(), &[i; 100][..]);
        bids.push(got[0].buffer_id());
    } // each datagram dropped here: its buffer goes back
    assert!(bids.iter().all(|&b| b < 2), "{bids:?}");
    assert!(ring.cancel_all_and_wait());
}

#[test]
fn holding_every_buffer_ends_the_recvmsg_with_enobufs() {
    let server = udp("127.0.0.1").unwrap();
    let addr = server.local_addr().unwrap();
    let server = SharedFd::from(server);
    let client = udp("127.0.0.1").unwrap();
    let mut ring = ring_with(2, BUF);
    let recv = ring.recvmsg_multi(&server, 1).unwrap();
    for i in 0..3u8 {
        client.send_to(&[i; 10], addr).unwrap();
    }
    let mut held = Vec::new();
    let done = reap_until(&mut ring, |c| c.op() == recv && !c.more());
    for mut c in done {
        held.extend(c.take_datagram());
        if !c.more() {
            assert_eq!(c.result(), -libc::ENOBUFS);
        }
    }
    assert_eq!(held.len(), 2);
    drop(held);
    // Both buffers are back: a fresh recvmsg gets the datagram still queued.
    let mut recv = ring.recvmsg_multi(&server, 1).unwrap();
    let got = datagrams(&mut Vec::new(), &mut ring, &server, &mut recv, 1);
    assert_eq!(got[0].payload(), &[2u8; 10][..]);
}

#[test]
fn an_empty_datagram_arrives_empty() {
    let server = udp("127.0.0.1").unwrap();
    let addr = server.local_addr().unwrap();
    let server = SharedFd::from(server);
    let client = udp("127.0.0.1").unwrap();
    let mut ring = ring_with(4, BUF);
    let mut recv = ring.recvmsg_multi(&server, 1).unwrap();
    client.send_to(&[], addr).unwrap();
    let got = datagrams(&mut Vec::new(), &mut ring, &server, &mut recv, 1);
    assert_eq!(got[0].payload(), b"");
    assert_eq!(got[0].peer(), Some(client.local_addr().unwrap()));
    assert!(!got[0].is_truncated());
    assert_eq!(got[0].original_len(), 0);
}

#[test]
fn a_datagram_larger_than_the_buffer_is_reported_truncated() {
    let server = udp("127.0.0.1").unwrap();
    let addr = server.local_addr().unwrap();
    let server = SharedFd::from(server);
    let client = udp("127.0.0.1").unwrap();
    let mut ring = ring_with(4, BUF);
    let mut recv = ring.recvmsg_multi(&server, 1).unwrap();
    let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    client.send_to(&big, addr).unwrap();
    client.send_to(&big[..ROOM], addr).unwrap(); // exactly fits
    client.send_to(b"after", addr).unwrap();
    let got = datagrams(&mut Vec::new(), &mut ring, &server, &mut recv, 3);
    assert!(got[0].is_truncated());
    assert_eq!(got[0].payload(), &big[..ROOM]);
    assert_eq!(got[0].original_len(), 5000);
    assert_eq!(got[0].peer(), Some(client.local_addr().unwrap()));
    assert!(!got[1].is_truncated());
    assert_eq!(got[1].payload(), &big[..ROOM]);
    assert_eq!(
        (got[2].payload(), got[2].is_truncated()),
        (&b"after"[..], false)
    );
    assert!(ring.is_in_flight(recv), "truncation does not end the op");
}

fn send_to_on(ip: &str) {
    let Some(peer) = udp(ip) else {
        eprintln!("no {ip} on this machine; skipped");
        return;
    };
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sender = udp(ip).unwrap();
    let sender_addr = sender.local_addr().unwrap();
    let sender = SharedFd::from(sender);
    let mut ring = ring_with(2, BUF);
    let batch = vec![Bytes::from_static(b"hello "), Bytes::from(vec![7u8; 500])];
    let ptrs: Vec<*const u8> = batch.iter().map(|b| b.as_ptr()).collect();
    let id = ring
        .send_to(&sender, 33, peer.local_addr().unwrap(), batch.clone())
        .unwrap();
    let mut done = reap_until(&mut ring, |c| c.op() == id);
    let c = done.last_mut().unwrap();
    assert_eq!(
        (c.tag(), c.kind(), c.result(), c.more()),
        (33, OpKind::Send, 506, false)
    );
    let back = c.take_sent_batch().expect("the send_to's batch");
    assert_eq!(back, batch);
    assert_eq!(back.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(), ptrs);
    let mut buf = [0u8; 1024];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(n, 506, "one datagram with both segments");
    assert_eq!(&buf[..6], b"hello ");
    assert_eq!(from, sender_addr);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn send_to_reaches_the_peer_and_returns_its_batch_v4() {
    send_to_on("127.0.0.1");
}

#[test]
fn send_to_reaches_the_peer_and_returns_its_batch_v6() {
    send_to_on("::1");
}

#[test]
fn a_segmented_send_to_arrives_as_separate_datagrams() {
    let server = udp("127.0.0.1").unwrap();
    let addr = server.local_addr().unwrap();
    let server = SharedFd::from(server);
    let sender = udp("127.0.0.1").unwrap();
    let from = sender.local_addr().unwrap();
    let sender = SharedFd::from(sender);
    let mut ring = ring_with(8, BUF);
    let mut recv = ring.recvmsg_multi(&server, 1).unwrap();
    // 2500 bytes in two segments of the batch, cut by the kernel into 1000, 1000, 500.
    let bytes: Vec<u8> = (0..2500u32).map(|i| (i / 1000) as u8 + b'a').collect();
    let batch = vec![
        Bytes::copy_from_slice(&bytes[..1234]),
        Bytes::copy_from_slice(&bytes[1234..]),
    ];
    let id = ring
        .send_to_segmented(&sender, 5, addr, 1000, batch)
        .unwrap();
    let mut others = Vec::new();
    let got = datagrams(&mut others, &mut ring, &server, &mut recv, 3);
    let sizes: Vec<(usize, Option<SocketAddr>)> =
        got.iter().map(|d| (d.payload().len(), d.peer())).collect();
    assert_eq!(
        sizes,
        vec![(1000, Some(from)), (1000, Some(from)), (500, Some(from))]
    );
    let joined: Vec<u8> = got.iter().flat_map(|d| d.payload().to_vec()).collect();
    assert_eq!(joined, bytes);
    if ring.is_in_flight(id) {
        others.extend(reap_until(&mut ring, |c| c.op() == id));
    }
    let sent = others.iter_mut().find(|c| c.op() == id).unwrap();
    assert_eq!((sent.kind(), sent.result()), (OpKind::Send, 2500));
    assert_eq!(sent.take_sent_batch().map(|b| b.len()), Some(2));
    assert!(ring.cancel_all_and_wait());
}

#[test]
fn cancel_all_finishes_an_armed_recvmsg() {
    let server = SharedFd::from(udp("127.0.0.1").unwrap());
    let mut ring = ring_with(2, BUF);
    let recv = ring.recvmsg_multi(&server, 1).unwrap();
    let mut done = Vec::new();
    ring.submit_and_wait(0, &mut done).unwrap();
    assert!(ring.is_in_flight(recv));
    assert!(ring.cancel_all_and_wait());
    assert_eq!(ring.in_flight(), 0);
    // And a single cancel ends it with -ECANCELED.
    let recv = ring.recvmsg_multi(&server, 2).unwrap();
    ring.cancel(recv).unwrap();
    let done = reap_until(&mut ring, |c| c.op() == recv && !c.more());
    assert_eq!(
        (done.last().unwrap().kind(), done.last().unwrap().result()),
        (OpKind::RecvMsg, -libc::ECANCELED)
    );
}

#[test]
fn recvmsg_refuses_buffers_too_small_for_header_and_address() {
    let mut ring = Ring::new(RingConfig {
        entries: 8,
        recv_buffers: 2,
        recv_buffer_size: 100,
        incremental_recv_buffers: false,
    })
    .unwrap();
    let server = SharedFd::from(udp("127.0.0.1").unwrap());
    let err = ring.recvmsg_multi(&server, 1).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("144"), "{err}");
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn a_send_to_that_cannot_be_queued_returns_its_batch() {
    let mut ring = ring_with(2, BUF);
    let s = SharedFd::from(udp("127.0.0.1").unwrap());
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = ring.send_to(&s, 0, to, Vec::new()).unwrap_err();
    assert_eq!(err.error.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(ring.in_flight(), 0);
}
