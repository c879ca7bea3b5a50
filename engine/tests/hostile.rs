//! Hostile and broken clients over loopback. After each, the server still answers a fresh
//! client and every connection it accepted is released (closed == accepted).

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use common::Client;
use crossbeam_channel::unbounded;
use ringrpc::{Config, DisconnectReason, RunningServer, Server, ServerReport};
use ringrpc_protocol::Frame;

const LONG: Duration = Duration::from_secs(20);

fn start(config: ringrpc::ConfigBuilder) -> RunningServer {
    let config = config.listen("127.0.0.1:0").build().unwrap();
    Server::builder()
        .config(config)
        .build()
        .unwrap()
        .start()
        .unwrap()
}

/// A fresh client is served; then everything is shut down and every slot was released.
fn still_serves_and_releases_everything(server: RunningServer) -> ServerReport {
    Client::connect(server.local_addr()).echo(424242, b"fresh client");
    let report = server.shutdown().unwrap();
    let total = report.total();
    assert_eq!(
        total.closed, total.accepted,
        "every accepted connection was released"
    );
    report
}

/// One core with a 300 ms read timeout; the receiver says, per closed connection, whether
/// the read timeout closed it.
fn start_with_read_timeout() -> (RunningServer, crossbeam_channel::Receiver<bool>) {
    let (reasons_tx, reasons) = unbounded();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .read_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .on_disconnect(move |_, reason| {
            let _ = reasons_tx.send(matches!(reason, DisconnectReason::ReadTimeout));
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    (server, reasons)
}

#[test]
fn slowloris_is_closed_by_the_read_timeout_and_others_are_unaffected() {
    let (server, reasons) = start_with_read_timeout();
    let mut slow = Client::connect(server.local_addr());
    let mut other = Client::connect(server.local_addr());
    let frame = Frame::request(1, "/echo", vec![7u8; 64]).to_bytes();
    // One byte every 50 ms: the frame would take 4 s; the server gives it 300 ms.
    let mut closed = false;
    for (i, b) in frame.iter().enumerate() {
        if slow.sock.write_all(std::slice::from_ref(b)).is_err() {
            closed = true;
            break;
        }
        other.echo(i as u64, b"served meanwhile");
        thread::sleep(Duration::from_millis(50));
    }
    if !closed {
        slow.expect_closed();
    }
    assert!(
        reasons.recv_timeout(LONG).unwrap(),
        "closed for the read timeout"
    );
    drop((slow, other));
    still_serves_and_releases_everything(server);
}

#[test]
fn a_half_closed_client_still_gets_every_pending_response() {
    let server = start(Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    for seq in 0..100u64 {
        c.send(&Frame::request(seq, "/echo", seq.to_string()));
    }
    c.sock.shutdown(Shutdown::Write).unwrap();
    for seq in 0..100u64 {
        let f = c.recv();
        assert_eq!(
            (f.header.seq, f.payload.clone()),
            (seq, seq.to_string().into())
        );
    }
    assert!(
        c.try_recv().unwrap().is_none(),
        "then the server closes its side too"
    );
    drop(c);
    still_serves_and_releases_everything(server);
}

#[test]
fn garbage_after_a_valid_frame_is_answered_up_to_the_garbage_then_closed() {
    let server = start(Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    let mut wire = Frame::request(1, "/echo", "valid").to_bytes().to_vec();
    wire.extend_from_slice(b"\x00\x00\x00\x00\x00\x3f garbage that is no frame at all");
    c.send_raw(&wire);
    assert_eq!(&c.recv().payload[..], b"valid");
    c.expect_closed();
    drop(c);
    let report = still_serves_and_releases_everything(server);
    assert_eq!(report.total().protocol_errors, 1);
}

#[test]
fn connections_past_the_limit_are_refused_cleanly() {
    let server = start(Config::builder().cores(1).max_connections(4));
    let mut admitted: Vec<Client> = (0..4)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    for (i, c) in admitted.iter_mut().enumerate() {
        c.echo(i as u64, b"admitted");
    }
    let mut refused = Client::connect(server.local_addr());
    refused.expect_closed();
    // A slot frees up: the next connection is admitted.
    admitted.pop();
    let mut next = None;
    for _ in 0..100 {
        let mut c = Client::connect(server.local_addr());
        c.send(&Frame::request(9, "/echo", "again"));
        if let Ok(Some(f)) = c.try_recv() {
            assert_eq!(&f.payload[..], b"again");
            next = Some(c);
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(next.is_some(), "a freed slot admits a new connection");
    drop((admitted, next, refused));
    let report = server.shutdown().unwrap();
    assert!(report.total().refused >= 1);
    assert_eq!(report.total().closed, report.total().accepted);
}

#[test]
fn ten_thousand_connections_opened_and_closed() {
    let server = start(Config::builder().cores(2));
    let addr = server.local_addr();
    let drops_before = listen_drops();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            thread::spawn(move || {
                for i in 0..2_500u64 {
                    let mut c = Client::connect(addr);
                    // Every tenth one says something first; the rest just come and go.
                    if i % 10 == 0 {
                        c.echo(i, format!("worker {w}").as_bytes());
                    }
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    let report = still_serves_and_releases_everything(server);
    // Every connection was accepted, unless the kernel dropped it from a full accept queue
    // first (a client that connects and closes at once never notices; a loaded machine can
    // stall the reactors long enough): those are counted in TcpExt ListenDrops.
    let dropped = listen_drops() - drops_before;
    let accepted = report.total().accepted;
    assert!(
        accepted <= 10_001 && accepted + dropped >= 10_001,
        "accepted {accepted}, dropped by the kernel {dropped}"
    );
}

/// Connections the kernel dropped at a full accept queue so far (all sockets of this host's
/// network namespace), from /proc/net/netstat.
fn listen_drops() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").expect("/proc/net/netstat");
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next().unwrap(), tcp_ext.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenDrops")
        .and_then(|(_, value)| value.parse().ok())
        .expect("TcpExt ListenDrops")
}

#[test]
fn unauthenticated_connections_get_one_error_and_a_close() {
    let (reasons_tx, reasons) = unbounded();
    let config = Config::builder()
        .cores(2)
        .listen("127.0.0.1:0")
        .auth_secret(Some("open sesame"))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .on_disconnect(move |_, reason| {
            let _ = reasons_tx.send(matches!(reason, DisconnectReason::Unauthenticated));
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    let addr = server.local_addr();
    // A raw client that skips authentication: one error, nothing else, then a close.
    let mut rude = Client::connect(addr);
    rude.send(&Frame::request(1, "/echo", "let me in"));
    let f = rude.recv();
    assert!(f.is_error());
    assert_eq!(&f.payload[..], ringrpc::error::AUTH_REQUIRED.as_bytes());
    rude.expect_closed();
    assert!(reasons.recv_timeout(LONG).unwrap());
    // The wrong secret fails too, at connect time, with the server's reason.
    let err = ringrpc::Client::builder(&addr.to_string())
        .auth("guess")
        .connect()
        .unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");
    // The library client authenticates and is served.
    let client = ringrpc::Client::builder(&addr.to_string())
        .auth("open sesame")
        .connect()
        .unwrap();
    let answer = client.call("/echo", "in".into(), LONG).unwrap();
    assert_eq!(&answer[..], b"in");
    drop(client);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().closed, report.total().accepted);
}

#[test]
fn a_peer_address_is_limited_to_its_share_of_connections() {
    let server = start(Config::builder().cores(2).max_connections_per_peer(Some(3)));
    let mut first: Vec<Client> = (0..3)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    for (i, c) in first.iter_mut().enumerate() {
        c.echo(i as u64, b"within the limit");
    }
    Client::connect(server.local_addr()).expect_closed();
    // Closing one frees its place for the next.
    drop(first.pop());
    let mut admitted = false;
    for _ in 0..100 {
        let mut c = Client::connect(server.local_addr());
        c.send(&Frame::request(5, "/echo", "again"));
        if matches!(c.try_recv(), Ok(Some(_))) {
            admitted = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(admitted);
    drop(first);
    let report = server.shutdown().unwrap();
    assert!(report.total().refused >= 1);
    assert_eq!(report.total().closed, report.total().accepted);
}

#[test]
fn requests_past_the_in_flight_limit_are_refused_until_answers_go_out() {
    use std::sync::{Arc, Mutex};
    let held: Arc<Mutex<Vec<ringrpc::Responder>>> = Arc::default();
    let keep = held.clone();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .max_in_flight_per_conn(3)
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .route("/later", move |ctx| {
            keep.lock().unwrap().push(ctx.responder().unwrap())
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut c = Client::connect(server.local_addr());
    for seq in 0..5u64 {
        c.send(&Frame::request(seq, "/later", ""));
    }
    // Three are deferred; the fourth and fifth are refused at once.
    for seq in 3..5u64 {
        let f = c.recv();
        assert_eq!(f.header.seq, seq);
        assert!(f.is_error());
        assert_eq!(
            &f.payload[..],
            ringrpc::error::TOO_MANY_IN_FLIGHT.as_bytes()
        );
    }
    // Answering frees the places: new requests are accepted again.
    for r in held.lock().unwrap().drain(..) {
        r.reply(b"done");
    }
    for _ in 0..3 {
        assert_eq!(&c.recv().payload[..], b"done");
    }
    c.send(&Frame::request(9, "/later", ""));
    while held.lock().unwrap().is_empty() {
        thread::sleep(Duration::from_millis(5));
    }
    held.lock().unwrap().pop().unwrap().reply(b"accepted again");
    assert_eq!(&c.recv().payload[..], b"accepted again");
    drop(c);
    still_serves_and_releases_everything(server);
}

/// Set in the environment of the child that serves for the memory test.
const RSS_CHILD: &str = "RINGRPC_TEST_RSS_SERVER";

/// Waits until the server has read everything sent on `client` → `server`, or has stopped
/// reading it (what the kernel holds unchanged for half a second).
fn wait_read_or_stopped(client: std::net::SocketAddr, server: std::net::SocketAddr) {
    let deadline = std::time::Instant::now() + LONG;
    let mut last = (
        common::kernel_queues(client, server),
        std::time::Instant::now(),
    );
    loop {
        thread::sleep(Duration::from_millis(5));
        let now = common::kernel_queues(client, server);
        if now == (Some(0), Some(0)) {
            return;
        }
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(500) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server went on reading: {now:?}"
        );
    }
}

/// The stream method whose handler keeps every stream and never reads from it, so what a
/// peer sends on it stays in the stream's inbox (until stdin closes).
const HOARD: &str = "/hoard";

/// The server of the memory tests, alone in a process of its own: this test binary started
/// again to run only this function, with `RSS_CHILD` set. It prints its address, serves
/// (the built-ins and [`HOARD`]) until its stdin closes, drops the hoarded streams, then
/// prints "released" once every connection was released. Without `RSS_CHILD` (an ordinary
/// test run) it does nothing. It has 64 receive buffers (1 MiB) instead of 512, so what
/// the kernel already put in them when a connection stops reading, which is decoded all
/// the same, stays small beside what the tests measure.
#[test]
fn rss_child_server() {
    use std::sync::{Arc, Mutex};
    if std::env::var_os(RSS_CHILD).is_none() {
        return;
    }
    let hoard: Arc<Mutex<Vec<ringrpc::BiStream>>> = Arc::default();
    let keep = hoard.clone();
    let config = Config::builder()
        .cores(1)
        .recv_buffers(64)
        .listen("127.0.0.1:0")
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .route_stream_blocking(HOARD, move |stream| keep.lock().unwrap().push(stream))
        .build()
        .unwrap()
        .start()
        .unwrap();
    println!("rss-child-addr {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
    // Dropped streams discard what comes, so their connections read (and see EOF) again.
    hoard.lock().unwrap().clear();
    still_serves_and_releases_everything(server);
    println!("rss-child-released");
}

/// [`rss_child_server`] running in a child process, for measuring the engine's memory alone.
struct RssChild {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    addr: std::net::SocketAddr,
}

impl RssChild {
    /// Starts the child and waits for its address.
    fn start() -> RssChild {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "rss_child_server",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RSS_CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the child server exited early"
            );
            // The harness may have started the line ("test rss_child_server ... ").
            if let Some((_, a)) = line.trim().split_once("rss-child-addr ") {
                break a.parse().unwrap();
            }
        };
        RssChild { child, out, addr }
    }

    /// The child's resident memory, in bytes.
    fn rss(&self) -> u64 {
        common::rss_bytes(self.child.id())
    }

    /// Closing its stdin stops the child, which checks every connection was released.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child server failed: {rest}");
        assert!(rest.contains("rss-child-released"), "{rest}");
    }
}

#[test]
fn a_body_declared_at_the_maximum_and_trickled_costs_only_what_arrived() {
    // The server runs in a process of its own, so the memory measured is the engine's and
    // no other test's running in this one.
    let child = RssChild::start();
    let addr = child.addr;
    let mut c = Client::connect(addr);
    c.echo(0, b"warm up");
    let before = child.rss();
    // A Request declaring the largest body allowed (64 MiB - 16)...
    let declared = ringrpc_protocol::DEFAULT_MAX_BODY;
    let mut head = Vec::new();
    head.extend_from_slice(&declared.to_le_bytes());
    head.extend_from_slice(&[0, 1, 0, 5]);
    head.extend_from_slice(&1u64.to_le_bytes());
    head.extend_from_slice(b"/echo");
    c.send_raw(&head);
    // ...of which only 2 MiB ever arrive, in pieces.
    let chunk = vec![0xabu8; 64 * 1024];
    for _ in 0..32 {
        c.send_raw(&chunk);
    }
    // Every byte sent has left both kernels' queues: the reactor has read it all.
    common::wait_all_read(&[(c.sock.local_addr().unwrap(), addr)]);
    Client::connect(addr).echo(1, b"sync");
    let grown = child.rss().saturating_sub(before);
    assert!(
        grown < 24 << 20,
        "resident memory grew {grown} bytes for 2 MiB received of a {declared}-byte declared body"
    );
    drop(c);
    child.finish();
}

/// Frames of one stream opened by the client (id 1) to [`HOARD`], each carrying 1 byte of
/// payload and `metadata`, back to back: `count` of them.
fn hoard_frames(metadata: &ringrpc_protocol::metadata::Metadata, count: usize) -> Vec<u8> {
    let mut frame = Frame::new(
        ringrpc_protocol::Command::Stream,
        ringrpc_protocol::Flags::default(),
        1,
        HOARD.into(),
        bytes::Bytes::from_static(b"x"),
    );
    frame.header.stream_local = true;
    let mut one = bytes::BytesMut::from(&frame.to_bytes()[..]);
    ringrpc_protocol::metadata::append_metadata(&mut one, metadata).unwrap();
    one.repeat(count)
}

/// Writes `wire` from a thread of its own, which gives up once the server has read nothing
/// for a second (it stopped reading); returns the bytes written.
fn write_until_refused(c: &Client, wire: Vec<u8>) -> thread::JoinHandle<usize> {
    let mut sock = c.sock.try_clone().unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    thread::spawn(move || {
        let mut sent = 0;
        while sent < wire.len() {
            match sock.write(&wire[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        sent
    })
}

/// Frames of 1 byte carrying a 4 KiB metadata block each must fill a stream's inbox by what
/// they hold, so the connection stops reading near `stream_queue_bytes` (1 MiB) instead of
/// after about a million of them (4 GiB). Two peers: one sends blocks of a single 4 KiB
/// value, the other blocks of about 800 tiny entries, which would take some 20 times their
/// wire bytes if the inbox kept them decoded.
#[test]
fn tiny_stream_frames_with_big_metadata_cost_only_the_inbox_limit() {
    use ringrpc_protocol::metadata::Metadata;
    let child = RssChild::start();
    let addr = child.addr;
    let mut sync = Client::connect(addr);
    sync.echo(0, b"warm up");
    let before = child.rss();

    let mut one_value = Metadata::new();
    one_value.insert("k", vec![7u8; 4000]).unwrap();
    // Distinct two-letter keys with empty values, as many as one block holds (about 800).
    let mut many_keys = Metadata::new();
    let letters = ('a'..='z').chain('A'..='Z');
    let keys = letters
        .clone()
        .flat_map(|a| letters.clone().map(move |b| format!("{a}{b}")));
    for key in keys {
        if many_keys.insert(key, vec![]).is_err() {
            break;
        }
    }
    assert!(many_keys.len() > 700);
    // One peer after the other, each until the server stops reading from it: 64 MiB of
    // the first kind, then 400 frames of the second (over 30 MiB decoded).
    let mut sent = Vec::new();
    let mut peers = Vec::new();
    for (metadata, count) in [(&one_value, 16 << 10), (&many_keys, 400)] {
        let peer = Client::connect(addr);
        sent.push(
            write_until_refused(&peer, hoard_frames(metadata, count))
                .join()
                .unwrap(),
        );
        wait_read_or_stopped(peer.sock.local_addr().unwrap(), addr);
        peers.push(peer);
    }
    sync.echo(1, b"sync");
    let grown = child.rss().saturating_sub(before);
    assert!(
        grown < 24 << 20,
        "resident memory grew {grown} bytes; the peers wrote {sent:?} bytes of 1-byte stream frames with 4 KiB of metadata each"
    );
    drop(peers);
    child.finish();
}

#[test]
fn graceful_shutdown_under_load_answers_everything_received_before_the_signal() {
    let server = start(Config::builder().cores(2));
    let addr = server.local_addr();
    let first_batch = 200u64;
    let mut clients = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect(addr);
        let mut wire = Vec::new();
        for seq in 0..first_batch {
            wire.extend_from_slice(
                &Frame::request(seq, "/echo", seq.to_le_bytes().to_vec()).to_bytes(),
            );
        }
        c.send_raw(&wire);
        // The first answer proves the server is reading this connection.
        assert_eq!(c.recv().header.seq, 0);
        // Load keeps coming while the signal arrives.
        let mut sock = c.sock.try_clone().unwrap();
        writers.push(thread::spawn(move || {
            for seq in first_batch..first_batch + 20_000 {
                let frame = Frame::request(seq, "/echo", seq.to_le_bytes().to_vec()).to_bytes();
                if sock.write_all(&frame).is_err() {
                    break;
                }
            }
        }));
        clients.push(c);
    }
    let handle = server.handle();
    handle.shutdown();
    let mut answered = 0u64;
    for c in &mut clients {
        // Answers form an unbroken run from seq 1, covering at least the whole first batch.
        let mut next = 1u64;
        loop {
            match c.try_recv() {
                Ok(Some(f)) => {
                    assert_eq!(f.header.seq, next, "answers in order, none skipped");
                    assert_eq!(&f.payload[..], &next.to_le_bytes());
                    next += 1;
                }
                Ok(None) => break,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            next >= first_batch,
            "only {next} of the {first_batch} sent before the signal were answered"
        );
        answered += next;
    }
    for w in writers {
        w.join().unwrap();
    }
    drop(clients);
    let report = server.join().unwrap();
    assert_eq!(
        report.total().requests,
        answered,
        "every request the server took was answered"
    );
    assert_eq!(report.total().closed, report.total().accepted);
}

/// A peer that declares a large frame, sends part of it and stops is closed by the read
/// timeout while its rest is being received directly (the recv is cancelled and waited for).
#[test]
fn a_large_frame_abandoned_mid_way_is_closed_by_the_read_timeout() {
    let (server, reasons) = start_with_read_timeout();
    let mut stalled = Client::connect(server.local_addr());
    let wire = Frame::request(1, "/echo", vec![3u8; 2 << 20]).to_bytes();
    stalled.sock.write_all(&wire[..100_000]).unwrap();
    assert!(
        reasons.recv_timeout(LONG).unwrap(),
        "closed for the read timeout"
    );
    stalled.expect_closed();
    let report = still_serves_and_releases_everything(server);
    assert!(report.total().direct_recvs >= 1, "{:?}", report.total());
}
