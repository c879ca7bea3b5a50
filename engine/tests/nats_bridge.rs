//! The NATS bridge between servers in one process: broadcasts cross nodes once each, and a
//! node whose NATS is unreachable still starts and serves its own connections.
//!
//! The cross-node test needs `nats-server` on PATH; without it it prints a note and passes,
//! unless `RINGRPC_REQUIRE_CLUSTER_TOOLS=1` is set (CI), where it fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringrpc::{Client, Config, PubSub, RunningServer, Server};

mod common;
use common::{free_port, have_tool, start_nats};

fn node(nats_url: &str) -> (RunningServer, PubSub) {
    let config = Config::builder()
        .cores(1)
        .pin_cores(false)
        .listen("127.0.0.1:0")
        .metrics_listen(Some("127.0.0.1:0"))
        .nats(Some(nats_url))
        .build()
        .unwrap();
    let pubsub = PubSub::new();
    let server = Server::builder()
        .config(config)
        .pubsub(pubsub.clone())
        .build()
        .unwrap()
        .start()
        .unwrap();
    (server, pubsub)
}

/// A client recording the payloads of `/news` notifies it receives.
fn listener(server: &RunningServer) -> (Client, Arc<Mutex<Vec<Vec<u8>>>>) {
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let into = got.clone();
    let client = Client::builder(&server.local_addr().to_string())
        .route("/news", move |ctx| {
            into.lock().unwrap().push(ctx.payload().to_vec())
        })
        .connect()
        .unwrap();
    (client, got)
}

fn wait_connected(server: &RunningServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.bridge_stats().unwrap().connected {
        assert!(Instant::now() < deadline, "the bridge did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn broadcast_reaches_every_node_once_and_never_echoes() {
    if !have_tool("nats-server") {
        return;
    }
    let port = free_port();
    let _nats = start_nats(port);
    let url = format!("nats://127.0.0.1:{port}");
    let (a, _) = node(&url);
    let (b, _) = node(&url);
    wait_connected(&a);
    wait_connected(&b);
    let (_ca, got_a) = listener(&a);
    let (_cb, got_b) = listener(&b);
    // The bridges' subscriptions reach NATS shortly after connecting.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20u8 {
        a.handle().broadcast("/news", &[i]).unwrap();
    }
    b.handle().broadcast_local("/news", b"only b").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got_b.lock().unwrap().len() < 21 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let expected: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
    assert_eq!(
        *got_a.lock().unwrap(),
        expected,
        "origin: each once, no echo"
    );
    let mut on_b = got_b.lock().unwrap().clone();
    on_b.retain(|p| p != b"only b");
    assert_eq!(on_b, expected, "other node: each once");
    let sa = a.bridge_stats().unwrap();
    let sb = b.bridge_stats().unwrap();
    assert_eq!(sa.forwarded, 20);
    assert_eq!(sb.received, 20);
    assert_eq!(sa.received, 0, "broadcast_local stays local");
    assert_eq!(sa.ignored_own + sb.ignored_own, 0);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn unreachable_nats_still_serves_locally_and_counts_what_it_could_not_forward() {
    // Nothing listens on this port.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let (server, pubsub) = node(&url);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "start waited for NATS"
    );
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let into = got.clone();
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    client
        .subscribe_topic("t", move |t| into.lock().unwrap().push(t.data.to_vec()))
        .unwrap();
    client.publish("t", b"from a peer").unwrap();
    assert_eq!(pubsub.publish("t", b"from the app").unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(got.lock().unwrap().len(), 2);
    let stats = server.bridge_stats().unwrap();
    assert!(!stats.connected);
    assert_eq!(stats.forwarded, 0);
    assert_eq!(stats.dropped_outbound, 2);
    // The bridge's state is in the metrics too.
    let scrape = scrape(server.metrics_addr().unwrap());
    assert!(scrape.contains("\nringrpc_nats_connected 0\n"), "{scrape}");
    assert!(
        scrape.contains("\nringrpc_nats_dropped_outbound_total 2\n"),
        "{scrape}"
    );
    assert!(
        scrape.contains("\nringrpc_nats_forwarded_total 0\n"),
        "{scrape}"
    );
    server.shutdown().unwrap();
}

fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).unwrap();
    text
}

/// Each time a topic gains its first local subscriber the bridge starts a task for the
/// topic's publish-to-one queue group, and stops it when the topic loses its last: churning
/// a topic many times leaves no task behind.
#[test]
fn a_topic_subscribed_and_unsubscribed_many_times_leaves_no_task_behind() {
    if !have_tool("nats-server") {
        return;
    }
    let port = free_port();
    let _nats = start_nats(port);
    let (server, _) = node(&format!("nats://127.0.0.1:{port}"));
    wait_connected(&server);
    let wait_tasks = |want: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let tasks = server.bridge_stats().unwrap().tasks;
            if tasks == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {tasks} tasks, not {want}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // `ringrpc.pub.*` and `ringrpc.bcast`, once the start-up check is done.
    wait_tasks(2, "at rest");
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    for round in 0..50 {
        client.subscribe_topic("churn", |_| {}).unwrap();
        wait_tasks(3, &format!("subscribed, round {round}"));
        client.unsubscribe_topic("churn").unwrap();
        wait_tasks(2, &format!("unsubscribed, round {round}"));
    }
    server.shutdown().unwrap();
}
