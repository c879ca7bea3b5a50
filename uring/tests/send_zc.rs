//! Zero-copy sends (`Ring::send_zc`) against real sockets: the two completions, who holds
//! the batch's memory until the notification, closing and dropping the ring with a
//! notification outstanding, and the plain fallbacks.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::{pair, reap_until, ring_with};
use ringrpc_uring::{Completion, DROP_WAIT, OpId, OpKind, Ring, SharedFd};

/// Segments of distinct bytes, `sizes` long each.
fn batch(sizes: &[usize]) -> Vec<Bytes> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j * 7) as u8).collect::<Vec<u8>>()))
        .collect()
}

/// The first completion of send `id`, with its batch taken out.
fn first_completion(ring: &mut Ring, id: OpId) -> (Completion, Vec<Bytes>) {
    let done = reap_until(ring, |c| c.op() == id);
    let mut first = done.into_iter().find(|c| c.op() == id).unwrap();
    assert_eq!(first.kind(), OpKind::Send);
    assert_eq!(first.notification(), None);
    let batch = first
        .take_sent_batch()
        .expect("the first completion hands the batch back");
    (first, batch)
}

fn reader(mut peer: impl Read + Send + 'static, want: usize) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut got = vec![0; want];
        peer.read_exact(&mut got).unwrap();
        got
    })
}

#[test]
fn the_kernel_has_zero_copy_sends_here() {
    // The tests below prove the zero-copy path only where the probe found it; this kernel
    // (the project's CI and development machines run 6.1 or later) must have it.
    assert!(
        ring_with(2, 4096).features().send_zc,
        "IORING_OP_SENDMSG_ZC not probed"
    );
}

#[test]
fn the_batch_comes_back_at_once_and_its_memory_is_held_until_the_notification() {
    let mut ring = ring_with(2, 4096);
    let (client, server) = pair();
    let client = SharedFd::from(client);
    let sent = batch(&[300_000, 5, 70_000]);
    let total: usize = sent.iter().map(Bytes::len).sum();
    let id = ring.send_zc(&client, 9, sent.clone()).unwrap();
    let got = reader(server, total);

    let (first, back) = first_completion(&mut ring, id);
    assert_eq!(first.tag(), 9);
    assert!(first.more(), "a notification must follow");
    assert!(first.result() > 0);
    assert_eq!(back, sent);
    assert!(
        back.iter()
            .zip(&sent)
            .all(|(a, b)| a.as_ptr() == b.as_ptr()),
        "the same segments, not copies"
    );
    // Until the notification the ring holds a clone of every segment (so `Bytes` cannot be
    // made writable again), however the batch's holders drop theirs.
    let rest = first.result() as usize;
    assert!(ring.is_in_flight(id));
    drop(back);
    assert!(sent.iter().all(|s| !s.is_unique()));

    let mut written = rest;
    while written < total {
        // A short write: the caller sends the rest, with the first still pinned.
        let tail = batch_tail(&sent, written);
        let next = ring.send_zc(&client, 10, tail).unwrap();
        let (c, _) = first_completion(&mut ring, next);
        assert!(c.result() > 0);
        written += c.result() as usize;
    }
    assert_eq!(got.join().unwrap(), sent.concat());
    // Every send's notification comes (the peer has read everything), each a final
    // completion with result 0; then nothing holds the segments but `sent`.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut done = Vec::new();
    while ring.in_flight() > 0 {
        assert!(Instant::now() < deadline, "notifications outstanding");
        ring.submit_and_wait_for(1, Duration::from_millis(50), &mut done)
            .unwrap();
        for c in done.drain(..) {
            assert!(c.notification().is_some() && !c.more() && c.result() == 0);
        }
    }
    assert!(!ring.is_in_flight(id));
    assert!(sent.iter().all(Bytes::is_unique));
}

/// What of `batch` lies past its first `written` bytes.
fn batch_tail(batch: &[Bytes], mut written: usize) -> Vec<Bytes> {
    let mut tail = Vec::new();
    for s in batch {
        if written >= s.len() {
            written -= s.len();
            continue;
        }
        tail.push(s.slice(written..));
        written = 0;
    }
    tail
}

#[test]
fn closing_the_socket_with_a_notification_outstanding_neither_waits_nor_frees_early() {
    let mut ring = ring_with(2, 4096);
    let (client, server) = pair();
    let client = SharedFd::from(client);
    let n = client.as_raw_fd();
    let socket = std::fs::read_link(format!("/proc/self/fd/{n}")).unwrap();
    // More than the socket buffers hold: the peer reads nothing yet.
    let sent = batch(&[8 << 20]);
    let id = ring.send_zc(&client, 1, sent.clone()).unwrap();
    let (first, back) = first_completion(&mut ring, id);
    assert!(first.more());
    let written = first.result();
    assert!(
        written > 0 && (written as usize) < sent[0].len(),
        "{written}"
    );
    drop(back);
    // The ring no longer names the socket: dropping the caller's handle closes it.
    drop(client);
    assert_ne!(
        std::fs::read_link(format!("/proc/self/fd/{n}")).ok(),
        Some(socket)
    );
    // The kernel still holds the written bytes (the peer has not read them); so does the
    // ring, for it.
    let mut done = Vec::new();
    ring.submit_and_wait_for(1, Duration::from_millis(100), &mut done)
        .unwrap();
    assert!(done.iter().all(|c| c.op() != id));
    assert!(ring.is_in_flight(id) && !sent[0].is_unique());
    // The peer reads what was written: the notification comes, the memory is released.
    let got = reader(server, written as usize).join().unwrap();
    assert_eq!(got, sent[0][..written as usize]);
    let done = reap_until(&mut ring, |c| c.op() == id && c.notification().is_some());
    assert!(done.iter().any(|c| c.op() == id && !c.more()));
    assert!(sent[0].is_unique());
}

#[test]
fn dropping_the_ring_with_a_notification_outstanding_keeps_the_memory_and_returns() {
    let mut ring = ring_with(2, 4096);
    let (client, server) = pair();
    let client = SharedFd::from(client);
    let sent = batch(&[8 << 20]);
    let id = ring.send_zc(&client, 1, sent.clone()).unwrap();
    let (first, back) = first_completion(&mut ring, id);
    assert!(first.more());
    drop(back);
    // The peer never reads: no notification can come while it holds the connection.
    let started = Instant::now();
    assert!(!ring.cancel_all_and_wait());
    let waited = started.elapsed();
    assert!(waited >= DROP_WAIT && waited < DROP_WAIT + Duration::from_secs(2));
    // Having given up once, dropping the ring does not wait again.
    let started = Instant::now();
    drop(ring);
    assert!(started.elapsed() < Duration::from_millis(500));
    // The ring leaked the record it could not finish rather than free what the kernel may
    // still read.
    assert!(!sent[0].is_unique());
    drop(server);
}

#[test]
fn without_zero_copy_it_is_one_plain_send() {
    let mut ring = ring_with(2, 4096);
    ring.disable_send_zc();
    assert!(!ring.features().send_zc);
    let (client, server) = pair();
    let client = SharedFd::from(client);
    let sent = batch(&[100_000]);
    let got = reader(server, 100_000);
    let id = ring.send_zc(&client, 3, sent.clone()).unwrap();
    let (first, back) = first_completion(&mut ring, id);
    assert!(!first.more(), "no notification without zero-copy");
    assert_eq!(first.result(), 100_000);
    assert!(!ring.is_in_flight(id));
    drop(back);
    assert!(sent[0].is_unique(), "the ring kept nothing");
    assert_eq!(got.join().unwrap(), sent.concat());
}

#[test]
fn a_socket_without_zero_copy_refuses_it_and_hands_the_batch_back_unsent() {
    let mut ring = ring_with(2, 4096);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let ours = SharedFd::from(std::os::fd::OwnedFd::from(ours));
    let sent = batch(&[64 * 1024]);
    let id = ring.send_zc(&ours, 4, sent.clone()).unwrap();
    let (first, back) = first_completion(&mut ring, id);
    assert_eq!(first.result(), -libc::EOPNOTSUPP);
    assert_eq!(back, sent);
    // Sent plainly instead.
    let got = reader(theirs, 64 * 1024);
    let plain = ring.send(&ours, 5, back).unwrap();
    let (c, _) = first_completion(&mut ring, plain);
    assert_eq!(c.result(), 64 * 1024);
    assert_eq!(got.join().unwrap(), sent.concat());
    // Whatever the kernel does about the refused op's notification, the op finishes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring.is_in_flight(id) {
        assert!(Instant::now() < deadline, "the refused send never finished");
        ring.submit_and_wait_for(1, Duration::from_millis(50), &mut Vec::new())
            .unwrap();
    }
}
