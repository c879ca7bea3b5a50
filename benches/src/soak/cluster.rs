//! `soak --cluster`: a real cluster on loopback (nats-server, three `engine` nodes bridged
//! through it, HAProxy in front, as `scripts/cluster` starts it) under load while nodes are
//! killed with SIGKILL and restarted and nats-server is restarted.
//!
//! Callers through HAProxy call `/echo` all run long: every answer they get must be their
//! own payload (a call in flight on a dying node fails, and its client fails over). Each
//! subscriber (through HAProxy) counts every publication. Between faults, once the cluster
//! is whole again (every subscriber reconnected and resubscribed, every node's publications
//! reaching every subscriber), one publisher per node publishes a batch: each subscriber
//! must receive each exactly once. Publications during faults may be lost, never doubled.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc::{CallError, Client, Reconnect};

use super::process::{KillOnDrop, signal};
use super::rng::Rng;

fn free_port() -> Result<u16, String> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port())
}

fn start_nats(port: u16) -> Result<KillOnDrop, String> {
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nats-server (apt-get install nats-server): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nats-server did not start".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(KillOnDrop(child))
}

/// Starts a node on `port`, retrying for a few seconds while the port is still held by the
/// node just killed.
fn start_node(engine: &Path, port: u16, nats: u16, dir: &Path) -> Result<KillOnDrop, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_start_node(engine, port, nats, dir) {
            Ok(node) => return Ok(node),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn try_start_node(engine: &Path, port: u16, nats: u16, dir: &Path) -> Result<KillOnDrop, String> {
    let log = dir.join(format!("node-{port}.log"));
    let mut child = Command::new(engine)
        .args([
            "--cores",
            "1",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--pubsub", "--nats", &format!("nats://127.0.0.1:{nats}")])
        .args(["--shutdown-delay", "1", "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", engine.display()))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("engine listening on") {
        let _ = child.kill();
        let _ = child.wait();
        let why = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!("a node did not start: {line:?} {}", why.trim()));
    }
    thread::spawn(move || for _ in out.lines() {});
    Ok(KillOnDrop(child))
}

fn haproxy(front: u16, nodes: &[u16], dir: &Path) -> Result<KillOnDrop, String> {
    let mut cfg = format!(
        "global\n    maxconn 2000\ndefaults\n    mode tcp\n    timeout client 1h\n    timeout server 1h\n    timeout connect 1s\n    retries 3\n    option redispatch 1\nfrontend arpc\n    bind 127.0.0.1:{front}\n    default_backend nodes\nbackend nodes\n    balance leastconn\n    option tcp-check\n    tcp-check connect\n    tcp-check send-binary 00000000000400000000000000000000\n    tcp-check expect binary 00000000000500000000000000000000\n    default-server inter 300ms fall 2 rise 2\n"
    );
    for (i, port) in nodes.iter().enumerate() {
        cfg.push_str(&format!("    server n{i} 127.0.0.1:{port} check\n"));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start haproxy (apt-get install haproxy): {e}"))?;
    Ok(KillOnDrop(child))
}

fn client(addr: &str, failovers: &Arc<AtomicU64>) -> Result<Client, String> {
    let count = failovers.clone();
    Client::builder(addr)
        .reconnect(Reconnect {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            max_attempts: u32::MAX,
        })
        .on_reconnect(move |_| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .connect()
        .map_err(|e| format!("connect to {addr}: {e}"))
}

/// Publications one subscriber received: data → times.
type Seen = Arc<Mutex<HashMap<Vec<u8>, u32>>>;

/// What the cluster run found.
#[derive(Debug, Default)]
pub struct Report {
    pub calls_answered: u64,
    pub calls_failed: u64,
    pub node_kills: u64,
    pub nats_restarts: u64,
    pub failovers: u64,
    /// Batches published while whole, and their deliveries (each exactly once).
    pub batches: u64,
    pub batch_deliveries: u64,
    pub published_during_faults: u64,
    pub problems: Vec<String>,
}

/// Runs the cluster for `duration`, a fault every few seconds.
pub fn run(engine: &Path, duration: Duration, seed: u64) -> Result<Report, String> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ringrpc-cluster-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed);
    let nats_port = free_port()?;
    let mut nats = Some(start_nats(nats_port)?);
    let ports = [free_port()?, free_port()?, free_port()?];
    let mut nodes: Vec<Option<KillOnDrop>> = ports
        .iter()
        .map(|&p| start_node(engine, p, nats_port, &dir).map(Some))
        .collect::<Result<_, _>>()?;
    let front = format!("127.0.0.1:{}", free_port()?);
    let front_port: u16 = front
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    let _haproxy = haproxy(front_port, &ports, &dir)?;
    let failovers = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(15);
    while client(&front, &failovers).is_err() {
        if Instant::now() > deadline {
            return Err("HAProxy did not come up".into());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut report = Report::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Callers.
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let (front, failovers, stop) = (front.clone(), failovers.clone(), stop.clone());
            thread::spawn(move || -> Result<(u64, u64), String> {
                let c = client(&front, &failovers)?;
                let (mut ok, mut failed, mut n) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let payload = Bytes::from(format!("caller {i} call {n}"));
                    match c.call("/echo", payload.clone(), Duration::from_secs(5)) {
                        Ok(answer) if answer == payload => ok += 1,
                        Ok(answer) => return Err(format!("{payload:?} answered {answer:?}")),
                        Err(CallError::Remote(e)) => {
                            return Err(format!("{payload:?} refused: {e}"));
                        }
                        Err(_) => {
                            failed += 1;
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                Ok((ok, failed))
            })
        })
        .collect();
    // Subscribers through HAProxy, and a publisher on each node.
    let mut subs = Vec::new();
    for _ in 0..6 {
        let c = client(&front, &failovers)?;
        let seen: Seen = Arc::default();
        let into = seen.clone();
        c.subscribe_topic("chaos", move |t| {
            *into.lock().unwrap().entry(t.data.to_vec()).or_default() += 1;
        })
        .map_err(|e| format!("subscribe: {e}"))?;
        subs.push((c, seen));
    }
    let publishers: Vec<Client> = ports
        .iter()
        .map(|p| client(&format!("127.0.0.1:{p}"), &failovers))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut batch = 0u64;
    let mut fault = 0u64;
    while started.elapsed() < duration {
        // Whole again: a batch from every node reaches every subscriber exactly once.
        match whole(&subs, &publishers, batch) {
            Ok(()) => {}
            Err(e) => {
                report.problems.push(format!("after fault {fault}: {e}"));
                break;
            }
        }
        batch += 1;
        let datas: Vec<Vec<u8>> = (0..30)
            .map(|k| format!("batch {batch} #{k}").into_bytes())
            .collect();
        for (k, d) in datas.iter().enumerate() {
            if let Err(e) = publishers[k % 3].publish("chaos", d) {
                report.problems.push(format!(
                    "publishing {:?} while whole: {e}",
                    String::from_utf8_lossy(d)
                ));
            }
        }
        report.batches += 1;
        report.batch_deliveries += expect_once(&subs, &datas, &mut report.problems);
        // A fault, with publications during it.
        fault += 1;
        if rng.range(0, 2) < 2 {
            let i = rng.range(0, 2) as usize;
            if let Some(node) = nodes[i].take() {
                signal(&node.0, "-KILL");
                drop(node);
            }
            report.node_kills += 1;
            report.published_during_faults += publish_during(
                &publishers,
                fault,
                Duration::from_millis(rng.range(300, 1500)),
            );
            nodes[i] = Some(start_node(engine, ports[i], nats_port, &dir)?);
        } else {
            drop(nats.take());
            report.nats_restarts += 1;
            report.published_during_faults += publish_during(
                &publishers,
                fault,
                Duration::from_millis(rng.range(300, 1500)),
            );
            nats = Some(start_nats(nats_port)?);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in callers {
        match h.join() {
            Ok(Ok((ok, failed))) => {
                report.calls_answered += ok;
                report.calls_failed += failed;
            }
            Ok(Err(e)) => report.problems.push(e),
            Err(_) => report.problems.push("a caller panicked".into()),
        }
    }
    // Nothing arrived twice, whenever it was published.
    for (i, (_, seen)) in subs.iter().enumerate() {
        for (data, n) in seen.lock().unwrap().iter() {
            if *n > 1 {
                report.problems.push(format!(
                    "subscriber {i} got {:?} {n} times",
                    String::from_utf8_lossy(data)
                ));
            }
        }
    }
    report.failovers = failovers.load(Ordering::Relaxed);
    report.problems.truncate(10);
    drop(subs);
    drop(publishers);
    drop(nodes);
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// Publishes from every node for `how_long` (a fault is on); returns how many were accepted.
fn publish_during(publishers: &[Client], fault: u64, how_long: Duration) -> u64 {
    let end = Instant::now() + how_long;
    let mut n = 0;
    let mut accepted = 0;
    while Instant::now() < end {
        n += 1;
        let data = format!("during fault {fault} #{n}");
        if publishers[n % 3].publish("chaos", data.as_bytes()).is_ok() {
            accepted += 1;
        }
        thread::sleep(Duration::from_millis(10));
    }
    accepted
}

/// Waits until every subscriber is connected and has seen a probe from every node (the
/// bridges are up again and it resubscribed).
fn whole(subs: &[(Client, Seen)], publishers: &[Client], batch: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0u64;
    loop {
        round += 1;
        let probes: Vec<Vec<u8>> = (0..publishers.len())
            .map(|node| format!("probe {batch}.{round} from {node}").into_bytes())
            .collect();
        for (p, d) in publishers.iter().zip(&probes) {
            let _ = p.publish("chaos", d);
        }
        thread::sleep(Duration::from_millis(200));
        let all = subs.iter().all(|(c, seen)| {
            let seen = seen.lock().unwrap();
            c.is_connected() && probes.iter().all(|d| seen.contains_key(d))
        });
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the cluster did not become whole within 30 s".into());
        }
    }
}

/// Waits for `datas` at every subscriber; each must arrive exactly once. Returns the
/// deliveries counted.
fn expect_once(subs: &[(Client, Seen)], datas: &[Vec<u8>], problems: &mut Vec<String>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let missing = || {
        subs.iter()
            .any(|(_, seen)| datas.iter().any(|d| !seen.lock().unwrap().contains_key(d)))
    };
    while missing() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(200));
    let mut delivered = 0;
    for (i, (_, seen)) in subs.iter().enumerate() {
        let seen = seen.lock().unwrap();
        for d in datas {
            match seen.get(d).copied().unwrap_or(0) {
                1 => delivered += 1,
                n => problems.push(format!(
                    "subscriber {i}: {:?}, published while whole, arrived {n} times",
                    String::from_utf8_lossy(d)
                )),
            }
        }
    }
    delivered
}
