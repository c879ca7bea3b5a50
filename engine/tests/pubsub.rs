//! Pub/sub on real sockets: raw frames as a Go arpc peer sends them, and the client API.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client as Raw, IO_TIMEOUT};
use crossbeam_channel::unbounded;
use ringrpc::{
    CallError, Client, Config, ConfigBuilder, PubSub, PubSubError, Reconnect, RunningServer,
    Server, Topic,
};
use ringrpc_protocol::{Command, Frame};

const LONG: Duration = Duration::from_secs(20);

/// Topic bytes built by hand: data | name | name_len u16 LE | timestamp u64 LE.
fn topic(name: &str, data: &[u8], ts: u64) -> Vec<u8> {
    let mut out = data.to_vec();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out
}

fn serve(config: ConfigBuilder, pubsub: &PubSub) -> RunningServer {
    serve_at(config, pubsub, "127.0.0.1:0")
}

fn serve_at(config: ConfigBuilder, pubsub: &PubSub, listen: &str) -> RunningServer {
    let config = config.listen(listen).build().unwrap();
    Server::builder()
        .config(config)
        .pubsub(pubsub.clone())
        .build()
        .unwrap()
        .start()
        .unwrap()
}

/// Sends a Request and returns the next frame (the caller knows no Notify is due first).
fn call(c: &mut Raw, seq: u64, method: &str, payload: Vec<u8>) -> Frame {
    c.send(&Frame::request(seq, method.to_string(), payload));
    let f = c.recv();
    assert_eq!((f.header.cmd, f.header.seq), (Command::Response, seq));
    f
}

fn ok(c: &mut Raw, seq: u64, method: &str, payload: Vec<u8>) {
    let f = call(c, seq, method, payload);
    assert!(
        !f.is_error(),
        "{method}: {:?}",
        String::from_utf8_lossy(&f.payload)
    );
}

/// Polls `cond` until it holds (generous: the CI machine is loaded).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts the next frame is a Notify `in_P` carrying exactly `bytes`.
fn expect_publication(c: &mut Raw, bytes: &[u8]) {
    let f = c.recv();
    assert_eq!(f.header.cmd, Command::Notify);
    assert_eq!(&f.method[..], b"in_P");
    assert_eq!(&f.payload[..], bytes);
}

/// Asserts nothing but the echo answer arrives: no publication was queued before it.
fn expect_nothing_pending(c: &mut Raw, seq: u64) {
    c.echo(seq, b"fence");
}

#[test]
fn a_go_peer_gets_the_exact_bytes_arpc_would_send() {
    let pubsub = PubSub::new().password("pw");
    let server = serve(Config::builder().cores(1), &pubsub);
    let mut c = Raw::connect(server.local_addr());
    // in_A with a wrong password: error Response "invalid password", method echoed.
    c.send(&Frame::request(7, "in_A", "nope"));
    let mut wire = [0u8; 16 + 4 + 16];
    c.sock.read_exact(&mut wire).unwrap();
    let mut want = vec![20, 0, 0, 0, 0, 2, 1, 4, 7, 0, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(b"in_Ainvalid password");
    assert_eq!(&wire[..], &want[..]);
    // The right one: an empty Response.
    c.send(&Frame::request(8, "in_A", "pw"));
    let mut wire = [0u8; 20];
    c.sock.read_exact(&mut wire).unwrap();
    assert_eq!(wire, *b"\x04\0\0\0\0\x02\0\x04\x08\0\0\0\0\0\0\0in_A");
    // in_S for "news", then in_P of "hi" on it: the Response first, then the Notify whose
    // payload is the publisher's topic bytes unchanged.
    c.send(&Frame::request(9, "in_S", topic("news", b"", 1)));
    let mut wire = [0u8; 20];
    c.sock.read_exact(&mut wire).unwrap();
    assert_eq!(wire, *b"\x04\0\0\0\0\x02\0\x04\x09\0\0\0\0\0\0\0in_S");
    let published = topic("news", b"hi", 0x0102_0304_0506_0708);
    c.send(&Frame::request(10, "in_P", published.clone()));
    let mut wire = [0u8; 20 + 20 + 16];
    c.sock.read_exact(&mut wire).unwrap();
    assert_eq!(&wire[..20], b"\x04\0\0\0\0\x02\0\x04\x0a\0\0\0\0\0\0\0in_P");
    let mut notify = vec![20, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0];
    notify.extend_from_slice(b"in_P");
    notify.extend_from_slice(b"hinews\x04\x00\x08\x07\x06\x05\x04\x03\x02\x01");
    assert_eq!(&wire[20..], &notify[..]);
    server.shutdown().unwrap();
}

#[test]
fn calls_before_authenticating_get_an_error_and_bad_topics_are_refused() {
    let pubsub = PubSub::new().password("pw");
    let server = serve(Config::builder().cores(1), &pubsub);
    let mut c = Raw::connect(server.local_addr());
    for (seq, method) in ["in_S", "in_U", "in_P", "in_P1"].into_iter().enumerate() {
        let f = call(&mut c, seq as u64, method, topic("t", b"", 0));
        assert!(f.is_error());
        assert_eq!(
            &f.payload[..],
            ringrpc::pubsub::NOT_AUTHENTICATED.as_bytes()
        );
    }
    let f = call(&mut c, 10, "in_A", b"wrong".to_vec());
    assert_eq!(&f.payload[..], b"invalid password");
    // Still usable: authenticate and go on; bad topic bytes get their reason.
    ok(&mut c, 11, "in_A", b"pw".to_vec());
    let f = call(&mut c, 12, "in_S", vec![1, 2, 3]);
    assert!(f.is_error() && String::from_utf8_lossy(&f.payload).contains("invalid topic bytes"));
    let f = call(&mut c, 13, "in_P", topic("", b"x", 0));
    assert!(f.is_error() && String::from_utf8_lossy(&f.payload).contains("empty"));
    let mut lying = b"ab".to_vec();
    lying.extend_from_slice(&9u16.to_le_bytes());
    lying.extend_from_slice(&0u64.to_le_bytes());
    assert!(call(&mut c, 14, "in_S", lying).is_error());
    ok(&mut c, 15, "in_S", topic("t", b"", 0));
    assert_eq!(pubsub.stats().subscribers, 1);
    // Without a password nothing is needed, and in_A succeeds whatever it carries.
    let open = PubSub::new();
    let server2 = serve(Config::builder().cores(1), &open);
    let mut d = Raw::connect(server2.local_addr());
    ok(&mut d, 1, "in_S", topic("t", b"", 0));
    ok(&mut d, 2, "in_A", b"anything".to_vec());
    server.shutdown().unwrap();
    server2.shutdown().unwrap();
}

#[test]
fn publish_reaches_every_subscriber_and_not_the_publisher_until_unsubscribed() {
    let pubsub = PubSub::new();
    let server = serve(Config::builder().cores(2), &pubsub);
    let (mut a, mut b, mut p) = (
        Raw::connect(server.local_addr()),
        Raw::connect(server.local_addr()),
        Raw::connect(server.local_addr()),
    );
    ok(&mut a, 1, "in_S", topic("news", b"", 0));
    ok(&mut a, 2, "in_S", topic("news", b"", 0)); // idempotent: still one delivery
    ok(&mut b, 1, "in_S", topic("news", b"", 0));
    ok(&mut p, 1, "in_S", topic("sport", b"", 0));
    let first = topic("news", b"first", 11);
    ok(&mut p, 2, "in_P", first.clone());
    expect_publication(&mut a, &first);
    expect_publication(&mut b, &first);
    expect_nothing_pending(&mut a, 3);
    expect_nothing_pending(&mut p, 3);
    // Unsubscribed (twice: the second is harmless), a stops getting them.
    ok(&mut a, 4, "in_U", topic("news", b"", 0));
    ok(&mut a, 5, "in_U", topic("news", b"", 0));
    let second = topic("news", b"second", 12);
    ok(&mut p, 4, "in_P", second.clone());
    expect_publication(&mut b, &second);
    expect_nothing_pending(&mut a, 6);
    // The application publishes too.
    assert_eq!(pubsub.publish("news", b"from the server").unwrap(), 1);
    let f = b.recv();
    let t = Topic::decode(&f.payload).unwrap();
    assert_eq!(
        (&t.name[..], &t.data[..]),
        (&b"news"[..], &b"from the server"[..])
    );
    eventually("the deliveries to be counted", || {
        let s = pubsub.stats();
        (s.published, s.delivered, s.skipped) == (3, 4, 0)
    });
    server.shutdown().unwrap();
}

#[test]
fn publish_to_one_gives_each_of_three_subscribers_its_share() {
    let pubsub = PubSub::new();
    let server = serve(Config::builder().cores(2), &pubsub);
    let mut subs: Vec<Raw> = (0..3).map(|_| Raw::connect(server.local_addr())).collect();
    for s in &mut subs {
        ok(s, 1, "in_S", topic("work", b"", 0));
    }
    let mut p = Raw::connect(server.local_addr());
    for i in 0..9u64 {
        ok(
            &mut p,
            10 + i,
            "in_P1",
            topic("work", format!("job {i}").as_bytes(), i),
        );
    }
    let mut seen = HashSet::new();
    for s in &mut subs {
        for _ in 0..3 {
            let f = s.recv();
            assert_eq!(f.header.cmd, Command::Notify);
            assert!(seen.insert(f.payload.clone()), "delivered twice");
        }
        expect_nothing_pending(s, 2);
    }
    assert_eq!(seen.len(), 9);
    server.shutdown().unwrap();
}

#[test]
fn subscribers_on_every_core_receive_and_disconnect_forgets_them() {
    let cores = Arc::new(Mutex::new(HashSet::new()));
    let seen = cores.clone();
    let pubsub = PubSub::new();
    let config = Config::builder()
        .cores(2)
        .listen("127.0.0.1:0")
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .pubsub(pubsub.clone())
        .on_connect(move |h| {
            seen.lock().unwrap().insert(h.id().core());
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    // SO_REUSEPORT spreads connections by hash: 24 land on both cores but for 2^-23.
    let mut subs: Vec<Raw> = (0..24).map(|_| Raw::connect(server.local_addr())).collect();
    for s in &mut subs {
        ok(s, 1, "in_S", topic("all", b"", 0));
    }
    assert_eq!(
        cores.lock().unwrap().len(),
        2,
        "connections on one core only"
    );
    let bytes = topic("all", b"everyone", 5);
    let mut p = Raw::connect(server.local_addr());
    ok(&mut p, 1, "in_P", bytes.clone());
    for s in &mut subs {
        expect_publication(s, &bytes);
    }
    assert_eq!(pubsub.stats().subscribers, 24);
    drop(subs);
    eventually("the closed subscribers to be forgotten", || {
        let s = pubsub.stats();
        s.subscribers == 0 && s.topics == 0
    });
    server.shutdown().unwrap();
}

#[test]
fn a_subscriber_that_never_reads_is_skipped_and_counted_while_others_get_everything() {
    const N: usize = 400;
    let pubsub = PubSub::new();
    let server = serve(
        Config::builder().cores(2).max_send_queue_bytes(1 << 20),
        &pubsub,
    );
    // The slow one: a tiny receive window, and it reads nothing until the end.
    let slow_sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow_sock.set_recv_buffer_size(4096).unwrap();
    slow_sock
        .connect(&socket2::SockAddr::from(server.local_addr()))
        .unwrap();
    let mut slow = Raw::from_stream(slow_sock.into());
    ok(&mut slow, 1, "in_S", topic("firehose", b"", 0));
    // The fast one reads on a thread of its own; the publisher waits for it after each
    // publication, so only the slow one can fall behind however loaded the machine is.
    let mut fast = Raw::connect(server.local_addr());
    ok(&mut fast, 1, "in_S", topic("firehose", b"", 0));
    let (got_tx, got) = unbounded();
    let reader = std::thread::spawn(move || {
        for _ in 0..N {
            let data = Topic::decode(&fast.recv().payload).unwrap().data;
            got_tx.send(data).unwrap();
        }
    });
    let publisher = Client::connect(&server.local_addr().to_string()).unwrap();
    let payload = |i: usize| {
        let mut p = vec![(i % 251) as u8; 64 * 1024];
        p[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p
    };
    for i in 0..N {
        publisher.publish("firehose", &payload(i)).unwrap();
        let data = got
            .recv_timeout(LONG)
            .expect("the fast subscriber missed one");
        assert_eq!(&data[..], &payload(i)[..], "publication {i}");
    }
    reader.join().unwrap();
    // Counted by the reactors as they take each delivery: then the numbers are final.
    eventually("every delivery to be settled", || {
        let s = pubsub.stats();
        s.delivered + s.skipped == 2 * N as u64
    });
    let skipped = pubsub.stats().skipped as usize;
    // 25 MiB went out; the slow one can hold a few MiB in kernel buffers and 1 MiB queued.
    assert!(skipped > N / 4, "only {skipped} skipped");
    // What it was given is exactly what it can still read: nothing else piled up.
    slow.sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for _ in 0..N - skipped {
        assert_eq!(slow.recv().header.cmd, Command::Notify);
    }
    slow.echo(2, b"fence");
    drop(publisher);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().notify_drops, skipped as u64);
}

#[test]
fn the_client_api_subscribes_publishes_and_resubscribes_after_a_restart() {
    let first = PubSub::new().password("pw");
    let server = serve(Config::builder().cores(2), &first);
    let addr: SocketAddr = server.local_addr();
    let (reconnected_tx, reconnected) = unbounded();
    let client = Client::builder(&addr.to_string())
        .reconnect(Reconnect {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_attempts: 200,
        })
        .pubsub_timeout(LONG)
        .on_reconnect(move |attempt| reconnected_tx.send(attempt).unwrap())
        .connect()
        .unwrap();
    match client.pubsub_auth("wrong") {
        Err(PubSubError::Call(CallError::Remote(text))) => assert_eq!(text, "invalid password"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.subscribe_topic("t", |_| {}),
        Err(PubSubError::Call(CallError::Remote(_)))
    ));
    client.pubsub_auth("pw").unwrap();
    let (tx, topics) = unbounded();
    client
        .subscribe_topic("t", move |t: Topic| tx.send(t).unwrap())
        .unwrap();
    client.publish("t", b"one").unwrap();
    let t = topics.recv_timeout(LONG).unwrap();
    assert_eq!((&t.name[..], &t.data[..]), (&b"t"[..], &b"one"[..]));
    assert!(t.timestamp_ns > 0);
    client.publish_to_one("t", b"to one").unwrap();
    assert_eq!(&topics.recv_timeout(LONG).unwrap().data[..], b"to one");
    assert!(matches!(
        client.publish("", b"x"),
        Err(PubSubError::Topic(_))
    ));

    // A new server on the same port, with an empty registry: the client authenticates
    // again and resubscribes before the reconnect is reported.
    server.shutdown().unwrap();
    let second = PubSub::new().password("pw");
    let server = serve_at(Config::builder().cores(2), &second, &addr.to_string());
    assert!(reconnected.recv_timeout(LONG).unwrap() >= 1);
    assert_eq!(second.stats().subscribers, 1);
    assert_eq!(second.publish("t", b"after").unwrap(), 1);
    assert_eq!(&topics.recv_timeout(LONG).unwrap().data[..], b"after");
    client.unsubscribe_topic("t").unwrap();
    assert_eq!(second.stats().subscribers, 0);
    client.publish("t", b"unheard").unwrap();
    assert!(topics.recv_timeout(Duration::from_millis(200)).is_err());
    drop(client);
    server.shutdown().unwrap();
}

#[test]
fn the_config_knob_serves_pubsub_without_an_explicit_registration() {
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .pubsub(true)
        .pubsub_password(Some("pw"))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut c = Raw::connect(server.local_addr());
    let f = call(&mut c, 1, "in_S", topic("t", b"", 0));
    assert_eq!(
        &f.payload[..],
        ringrpc::pubsub::NOT_AUTHENTICATED.as_bytes()
    );
    ok(&mut c, 2, "in_A", b"pw".to_vec());
    ok(&mut c, 3, "in_S", topic("t", b"", 0));
    let bytes = topic("t", b"x", 1);
    ok(&mut c, 4, "in_P", bytes.clone());
    expect_publication(&mut c, &bytes);
    server.shutdown().unwrap();
}

/// A datagram peer that authenticated (`in_A` over UDP) is known to pub/sub only while the
/// datagram endpoint knows it: datagram peers never disconnect, so it is forgotten when the
/// endpoint forgets the quiet peer, instead of staying in the registry forever.
#[test]
fn a_datagram_peer_that_authenticated_is_forgotten_with_the_quiet_peer() {
    let pubsub = PubSub::new().password("s3cret");
    let config = Config::builder()
        .cores(1)
        .udp_listen("127.0.0.1:0")
        .udp_dedup_window(Duration::from_millis(100));
    let server = serve(config, &pubsub);
    let to = server.udp_addr().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = [0u8; 2048];
    for (seq, password) in [(1, "wrong"), (2, "s3cret")] {
        let auth = Frame::request(seq, ringrpc::pubsub::AUTHENTICATE, password);
        sock.send_to(&auth.to_bytes(), to).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        let reply = ringrpc_protocol::Decoder::default()
            .decode(&mut bytes::BytesMut::from(&buf[..n]))
            .unwrap()
            .unwrap();
        assert_eq!(reply.header.seq, seq);
        assert_eq!(reply.is_error(), password == "wrong");
    }
    assert_eq!(pubsub.stats().connections, 1, "authenticated");
    let deadline = Instant::now() + LONG;
    while pubsub.stats().connections != 0 {
        assert!(
            Instant::now() < deadline,
            "the quiet datagram peer is still authenticated: {:?}",
            pubsub.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.shutdown().unwrap();
}

/// The threat model's row for topics (docs/security.md): one connection holds at most
/// `max_subscriptions_per_conn` subscriptions; past it `in_S` is refused with the error,
/// a topic it already has still subscribes, and unsubscribing makes room again.
#[test]
fn subscriptions_past_the_per_connection_limit_are_refused() {
    let pubsub = PubSub::new().max_subscriptions_per_conn(3);
    let server = serve(Config::builder().cores(1), &pubsub);
    let mut c = Raw::connect(server.local_addr());
    for (seq, name) in ["a", "b", "c"].iter().enumerate() {
        ok(&mut c, seq as u64 + 1, "in_S", topic(name, b"", 0));
    }
    let refused = call(&mut c, 4, "in_S", topic("d", b"", 0));
    assert!(refused.is_error());
    assert_eq!(
        String::from_utf8_lossy(&refused.payload),
        ringrpc::pubsub::TOO_MANY_SUBSCRIPTIONS
    );
    ok(&mut c, 5, "in_S", topic("a", b"", 0));
    assert_eq!(pubsub.stats().subscribers, 3);
    ok(&mut c, 6, "in_U", topic("b", b"", 0));
    ok(&mut c, 7, "in_S", topic("d", b"", 0));
    assert_eq!((pubsub.stats().subscribers, pubsub.stats().topics), (3, 3));
    server.shutdown().unwrap();
}
