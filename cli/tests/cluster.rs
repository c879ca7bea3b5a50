//! A real cluster on loopback ports: nats-server, three `engine` nodes bridged through it
//! (`--pubsub --nats`) and HAProxy in TCP mode in front (leastconn, arpc Ping/Pong health
//! checks), as `scripts/cluster` starts it, without network namespaces.
//!
//! Needs `nats-server` and `haproxy` on PATH (Debian packages of those names). Without them
//! each test prints a note and passes, unless `RINGRPC_REQUIRE_CLUSTER_TOOLS=1` is set (CI),
//! where a missing tool fails it. The tests run one at a time (each starts its own cluster),
//! to stay steady on a small, loaded machine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringrpc::{Client, Reconnect};

#[path = "../../engine/tests/common/mod.rs"]
mod common;
use common::{Proc, free_port, have_tool, start_nats};

/// One cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tools() -> bool {
    have_tool("nats-server") & have_tool("haproxy")
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

struct Node {
    proc: Proc,
    addr: SocketAddr,
}

struct Cluster {
    nats_port: u16,
    nats: Option<Proc>,
    nodes: Vec<Node>,
    front: SocketAddr,
    _haproxy: Proc,
    dir: std::path::PathBuf,
}

fn start_node(nats_port: u16) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "--cores",
            "1",
            "--no-pin",
            "--listen",
            "127.0.0.1:0",
            "--pubsub",
            "--nats",
            &format!("nats://127.0.0.1:{nats_port}"),
            "--shutdown-delay",
            "10",
            "--log",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn engine");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    // Keep reading so the exit report never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    Node {
        proc: Proc(child),
        addr,
    }
}

impl Cluster {
    fn start() -> Cluster {
        let nats_port = free_port();
        let nats = start_nats(nats_port);
        let nodes: Vec<Node> = (0..3).map(|_| start_node(nats_port)).collect();
        let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = std::env::temp_dir().join(format!("ringrpc-cluster-test-{}", front.port()));
        std::fs::create_dir_all(&dir).unwrap();
        // docs/haproxy.cfg with these addresses (and no stats page).
        let mut cfg = format!(
            "global\n    maxconn 2000\ndefaults\n    mode tcp\n    timeout client 1h\n    timeout server 1h\n    timeout connect 1s\n    retries 3\n    option redispatch 1\nfrontend arpc\n    bind {front}\n    default_backend nodes\nbackend nodes\n    balance leastconn\n    option tcp-check\n    tcp-check connect\n    tcp-check send-binary 00000000000400000000000000000000\n    tcp-check expect binary 00000000000500000000000000000000\n    default-server inter 300ms fall 2 rise 2\n"
        );
        for (i, node) in nodes.iter().enumerate() {
            cfg.push_str(&format!("    server n{} {} check\n", i + 1, node.addr));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let haproxy = Proc(
            Command::new("haproxy")
                .args(["-db", "-f"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
                .spawn()
                .expect("spawn haproxy"),
        );
        let cluster = Cluster {
            nats_port,
            nats: Some(nats),
            nodes,
            front,
            _haproxy: haproxy,
            dir,
        };
        // Ready when HAProxy answers an /echo through some node and the bridges connected
        // (a publication from node 0 reaches node 1).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = Client::builder(&front.to_string())
                .connect_timeout(Duration::from_millis(500))
                .connect()
                .ok()
                .is_some_and(|c| c.call("/echo", "up".into(), Duration::from_secs(1)).is_ok());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy did not come up; its log: {}",
                std::fs::read_to_string(cluster.dir.join("haproxy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster.wait_bridged(0, 1);
        cluster
    }

    fn node(&self, i: usize) -> String {
        self.nodes[i].addr.to_string()
    }

    /// Waits until a publication on node `from` reaches a subscriber on node `to`.
    fn wait_bridged(&self, from: usize, to: usize) {
        let sub = Subscriber::connect(&self.node(to), "probe");
        let publisher = direct(&self.node(from));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0u64;
        while sub.count() == 0 {
            assert!(
                Instant::now() < deadline,
                "node {from}'s publications never reached node {to}"
            );
            n += 1;
            publisher.publish("probe", &n.to_be_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn direct(addr: &str) -> Client {
    Client::builder(addr).connect().expect("connect")
}

/// A client subscribed to one topic, counting each publication's data.
struct Subscriber {
    client: Client,
    seen: Arc<Mutex<HashMap<Vec<u8>, u32>>>,
}

impl Subscriber {
    fn connect(addr: &str, topic: &str) -> Subscriber {
        let client = Client::builder(addr)
            .reconnect(Reconnect {
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                max_attempts: 100,
            })
            .connect()
            .expect("connect");
        let seen: Arc<Mutex<HashMap<Vec<u8>, u32>>> = Arc::default();
        let into = seen.clone();
        client
            .subscribe_topic(topic, move |t| {
                *into.lock().unwrap().entry(t.data.to_vec()).or_default() += 1;
            })
            .expect("subscribe");
        Subscriber { client, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many times each of `datas` arrived.
    fn times(&self, data: &[u8]) -> u32 {
        self.seen.lock().unwrap().get(data).copied().unwrap_or(0)
    }

    /// Waits until every one of `datas` arrived, then a little more for duplicates; then
    /// asserts each arrived exactly once.
    fn expect_once(&self, what: &str, datas: &[Vec<u8>]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while datas.iter().any(|d| self.times(d) == 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        for d in datas {
            assert_eq!(
                self.times(d),
                1,
                "{what}: publication {:?} arrived {} times",
                String::from_utf8_lossy(d),
                self.times(d)
            );
        }
    }
}

fn payloads(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect()
}

#[test]
fn publish_on_one_node_reaches_subscribers_on_every_node_once() {
    let _serial = serial();
    if !tools() {
        return;
    }
    let cluster = Cluster::start();
    // Through HAProxy (leastconn spreads them), and pinned to B and C directly so every
    // node surely has one.
    let mut subs: Vec<(String, Subscriber)> = (0..3)
        .map(|i| {
            (
                format!("haproxy #{i}"),
                Subscriber::connect(&cluster.front.to_string(), "news"),
            )
        })
        .collect();
    subs.push((
        "node B".into(),
        Subscriber::connect(&cluster.node(1), "news"),
    ));
    subs.push((
        "node C".into(),
        Subscriber::connect(&cluster.node(2), "news"),
    ));
    let publisher = direct(&cluster.node(0));
    let datas = payloads("news", 50);
    for d in &datas {
        publisher.publish("news", d).unwrap();
    }
    for (name, sub) in &subs {
        sub.expect_once(name, &datas);
    }
    // A topic nobody subscribed to costs nothing and reaches nobody.
    publisher.publish("nobody", b"x").unwrap();
    // Publish-to-one from a node with no local subscriber lands on exactly one elsewhere.
    let one = payloads("one", 10);
    for d in &one {
        publisher.publish_to_one("news", d).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let total = |d: &Vec<u8>| subs.iter().map(|(_, s)| s.times(d)).sum::<u32>();
    while one.iter().any(|d| total(d) == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    for d in &one {
        assert_eq!(
            total(d),
            1,
            "publish-to-one {d:?} reached {} subscribers",
            total(d)
        );
    }
    drop(subs.drain(..));
}

#[test]
fn killed_node_clients_fail_over_through_haproxy_and_resubscribe() {
    let _serial = serial();
    if !tools() {
        return;
    }
    let mut cluster = Cluster::start();
    let subs: Vec<Subscriber> = (0..6)
        .map(|_| Subscriber::connect(&cluster.front.to_string(), "alerts"))
        .collect();
    // Node B dies without a drain; HAProxy closes its clients' connections.
    let b = cluster.nodes.remove(1);
    signal(&b.proc.0, "-KILL");
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Reconnected (and resubscribed: a client is connected only once restored) elsewhere.
    std::thread::sleep(Duration::from_millis(300));
    while subs.iter().any(|s| !s.client.is_connected()) {
        assert!(Instant::now() < deadline, "clients did not reconnect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let publisher = direct(&cluster.node(0));
    let datas = payloads("alert", 30);
    for d in &datas {
        publisher.publish("alerts", d).unwrap();
    }
    for (i, sub) in subs.iter().enumerate() {
        sub.expect_once(&format!("subscriber {i}"), &datas);
    }
    // A client built with several addresses fails over the same way without a proxy.
    let addrs = [cluster.node(0), cluster.node(1)];
    let multi = Client::builder_multi(addrs.iter().map(String::as_str))
        .reconnect(Reconnect::default())
        .connect()
        .unwrap();
    assert!(addrs.contains(&multi.target()));
    let answer = multi
        .call("/echo", "hi".into(), Duration::from_secs(2))
        .unwrap();
    assert_eq!(&answer[..], b"hi");
}

#[test]
fn sigterm_under_loadgen_through_haproxy_loses_nothing() {
    let _serial = serial();
    if !tools() {
        return;
    }
    let mut cluster = Cluster::start();
    let front = cluster.front.to_string();
    let load = std::thread::spawn(move || {
        let cli = <ringrpc_loadgen::Cli as clap::Parser>::parse_from([
            "loadgen",
            "--target",
            &front,
            "--conns",
            "6",
            "--per-conn",
            "4",
            "--warmup",
            "500ms",
            "--duration",
            "3s",
            "--threads",
            "1",
            "--quiet",
        ]);
        let config = ringrpc_loadgen::Config::from_cli(cli).unwrap();
        ringrpc_loadgen::run(&config).unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let c = &cluster.nodes[2];
    signal(&c.proc.0, "-TERM");
    let report = load.join().unwrap();
    let n = &report.counts;
    assert!(n.answered > 0, "{n:?}");
    assert_eq!(
        (
            n.errors,
            n.mismatches,
            n.timeouts,
            n.lost,
            n.connection_failures
        ),
        (0, 0, 0, 0, 0),
        "{n:?}"
    );
    // Node C finished its clients and exited cleanly.
    let mut c = std::mem::take(&mut cluster.nodes)
        .into_iter()
        .nth(2)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = c.proc.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "node C did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn nats_restart_local_delivery_never_stops_cross_node_resumes() {
    let _serial = serial();
    if !tools() {
        return;
    }
    let mut cluster = Cluster::start();
    let local = Subscriber::connect(&cluster.node(0), "ticks");
    let remote = Subscriber::connect(&cluster.node(1), "ticks");
    let publisher = direct(&cluster.node(0));
    let before = payloads("before", 10);
    for d in &before {
        publisher.publish("ticks", d).unwrap();
    }
    local.expect_once("local, NATS up", &before);
    remote.expect_once("remote, NATS up", &before);

    drop(cluster.nats.take()); // killed
    std::thread::sleep(Duration::from_millis(300));
    let during = payloads("during", 20);
    for d in &during {
        publisher.publish("ticks", d).unwrap();
    }
    local.expect_once("local, NATS down", &during);

    cluster.nats = Some(start_nats(cluster.nats_port));
    cluster.wait_bridged(0, 1);
    let after = payloads("after", 10);
    for d in &after {
        publisher.publish("ticks", d).unwrap();
    }
    local.expect_once("local, NATS back", &after);
    remote.expect_once("remote, NATS back", &after);
    // Nothing from the outage arrived twice on either node.
    for d in &during {
        assert!(remote.times(d) <= 1);
    }
}
