//! `soak --mixed`: everything at once against one engine (TCP, WebSocket and UDP on, pub/sub
//! on). Besides the classic soak's loadgen and chaos client: loadgen over WebSocket, over UDP,
//! of notifies, of streams and of pub/sub (each with its own accounting), and in-process
//! clients that subscribe and unsubscribe while a publisher publishes (every publication
//! inside a subscription window delivered exactly once, none twice) and that stream with slow
//! consumers (every byte echoed, in order).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc::{Client, Reconnect};

use super::LoadgenSummary;
use super::process::{KillOnDrop, spawn_loadgen, wait_deadline};
use super::rng::Rng;

/// The extra loadgen runs: a name and its flags (target, duration and output added).
pub fn loadgen_runs(udp: SocketAddr) -> Vec<(&'static str, Vec<String>)> {
    let flags = |s: &[&str]| s.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    vec![
        (
            "websocket calls",
            flags(&["--transport", "ws", "--conns", "2", "--per-conn", "8"]),
        ),
        (
            "udp calls",
            [
                flags(&["--transport", "udp", "--conns", "2", "--per-conn", "8"]),
                vec!["--udp-target".into(), udp.to_string()],
            ]
            .concat(),
        ),
        (
            "notifies",
            flags(&["--pattern", "notify", "--conns", "2", "--per-conn", "8"]),
        ),
        (
            "streams",
            flags(&["--pattern", "stream", "--conns", "2", "--per-conn", "4"]),
        ),
        (
            "pub/sub",
            flags(&[
                "--pattern",
                "pubsub",
                "--conns",
                "2",
                "--per-conn",
                "4",
                "--subscribers",
                "3",
                "--topic",
                "soak",
            ]),
        ),
    ]
}

/// Running loadgen processes, each writing its JSON report.
#[derive(Debug)]
pub struct Loadgens {
    runs: Vec<(&'static str, KillOnDrop, PathBuf, PathBuf)>,
}

impl Loadgens {
    /// Starts each run of `specs` against `target` for `duration`, files under `work`.
    pub fn spawn(
        loadgen: &Path,
        target: SocketAddr,
        specs: Vec<(&'static str, Vec<String>)>,
        duration: Duration,
        work: &Path,
    ) -> Result<Loadgens, String> {
        let mut runs = Vec::new();
        for (i, (name, mut flags)) in specs.into_iter().enumerate() {
            // A UDP run names its own target.
            let target = match flags.iter().position(|f| f == "--udp-target") {
                Some(at) => {
                    let t = flags.remove(at + 1);
                    flags.remove(at);
                    t
                }
                None => target.to_string(),
            };
            let json = work.join(format!("loadgen-{i}.json"));
            let log_path = work.join(format!("loadgen-{i}.log"));
            let child = spawn_loadgen(loadgen, &target, &flags, duration, &json, &log_path)?;
            runs.push((name, child, json, log_path));
        }
        Ok(Loadgens { runs })
    }

    /// Waits for every run (at most `limit` each) and returns its report or why there is none.
    pub fn finish(self, limit: Duration) -> Vec<(&'static str, Result<LoadgenSummary, String>)> {
        self.runs
            .into_iter()
            .map(|(name, mut child, json, log)| {
                let status = wait_deadline(&mut child.0, limit);
                let report = std::fs::read_to_string(&json)
                    .map_err(|e| e.to_string())
                    .and_then(|t| LoadgenSummary::from_json(&t).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        let tail = std::fs::read_to_string(&log).unwrap_or_default();
                        let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                        format!(
                            "no report ({e}; exit {status:?}; log: {})",
                            tail.join(" / ")
                        )
                    });
                (name, report)
            })
            .collect()
    }
}

/// What the in-process clients saw.
#[derive(Debug, Default, Clone)]
pub struct WorkerTally {
    pub publications: u64,
    pub subscriptions: u64,
    /// Publications due to a subscriber (inside one of its windows) and delivered once.
    pub delivered_in_window: u64,
    pub streams: u64,
    pub stream_bytes: u64,
    /// What went wrong, described (at most 10).
    pub problems: Vec<String>,
}

fn client(addr: SocketAddr) -> Result<Client, String> {
    Client::builder(&addr.to_string())
        .reconnect(Reconnect::default())
        .connect()
        .map_err(|e| format!("connect: {e}"))
}

/// How long a delivery may still be on its way after its publisher was answered.
const IN_FLIGHT: Duration = Duration::from_millis(250);

/// One subscriber's windows: (subscribed, unsubscribing) instants.
type Window = (Instant, Option<Instant>);
/// What one subscriber saw: its windows and each delivery (seq, when).
type Subscribed = (Vec<Window>, Vec<(u64, Instant)>);

/// Pub/sub churn and slow-consumer streams until `until`; returns what they saw.
pub fn run_workers(addr: SocketAddr, until: Instant, seed: u64) -> WorkerTally {
    let mut tally = WorkerTally::default();
    let published: Arc<Mutex<Vec<(u64, Instant, Instant)>>> = Arc::default();
    let mut handles = Vec::new();
    // The publisher: a seq every couple of milliseconds, with when it was sent and acked.
    {
        let published = published.clone();
        handles.push(thread::spawn(move || -> Result<WorkerTally, String> {
            let c = client(addr)?;
            let mut seq = 0u64;
            while Instant::now() < until {
                seq += 1;
                let sent = Instant::now();
                if c.publish("churn", &seq.to_be_bytes()).is_ok() {
                    published.lock().unwrap().push((seq, sent, Instant::now()));
                }
                thread::sleep(Duration::from_millis(2));
            }
            Ok(WorkerTally::default())
        }));
    }
    let subscribers: Vec<_> = (0..4)
        .map(|i| {
            let mut rng = Rng::new(seed ^ (0x5u64 << 40) ^ i);
            thread::spawn(move || -> Result<Subscribed, String> {
                let c = client(addr)?;
                let got: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
                let mut windows = Vec::new();
                while Instant::now() + Duration::from_millis(300) < until {
                    let into = got.clone();
                    c.subscribe_topic("churn", move |t| {
                        let seq = t
                            .data
                            .get(..8)
                            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
                        into.lock().unwrap().push((seq, Instant::now()));
                    })
                    .map_err(|e| format!("subscribe: {e}"))?;
                    let start = Instant::now();
                    thread::sleep(Duration::from_millis(rng.range(300, 1500)));
                    let end = Instant::now();
                    c.unsubscribe_topic("churn")
                        .map_err(|e| format!("unsubscribe: {e}"))?;
                    windows.push((start, Some(end)));
                    thread::sleep(Duration::from_millis(rng.range(5, 100)));
                }
                let got = got.lock().unwrap().clone();
                Ok((windows, got))
            })
        })
        .collect();
    let streams: Vec<_> = (0..3)
        .map(|i| {
            let mut rng = Rng::new(seed ^ (0x57u64 << 40) ^ i);
            thread::spawn(move || -> Result<WorkerTally, String> {
                let c = client(addr)?;
                let mut t = WorkerTally::default();
                while Instant::now() < until {
                    let bytes = slow_stream(&c, &mut rng)?;
                    t.streams += 1;
                    t.stream_bytes += bytes;
                }
                Ok(t)
            })
        })
        .collect();
    for h in handles.into_iter().chain(streams) {
        match h.join() {
            Ok(Ok(t)) => {
                tally.streams += t.streams;
                tally.stream_bytes += t.stream_bytes;
            }
            Ok(Err(e)) => tally.problems.push(e),
            Err(_) => tally.problems.push("a worker panicked".into()),
        }
    }
    let published = published.lock().unwrap().clone();
    tally.publications = published.len() as u64;
    for (i, h) in subscribers.into_iter().enumerate() {
        let (windows, got) = match h.join() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tally.problems.push(format!("subscriber {i}: {e}"));
                continue;
            }
            Err(_) => {
                tally.problems.push(format!("subscriber {i} panicked"));
                continue;
            }
        };
        tally.subscriptions += windows.len() as u64;
        let mut times: HashMap<u64, usize> = HashMap::new();
        for (seq, _) in &got {
            *times.entry(*seq).or_default() += 1;
        }
        for (seq, n) in &times {
            if *n > 1 {
                tally.problems.push(format!(
                    "subscriber {i}: publication {seq} delivered {n} times"
                ));
            }
        }
        // Published (sent) after the subscribe was acknowledged and acknowledged well before
        // the unsubscribe was sent (the publisher is answered before the delivery leaves, and
        // unsubscribing drops the handler at once): it must have arrived.
        for &(start, end) in &windows {
            let end = end.unwrap_or(until) - IN_FLIGHT;
            for &(seq, sent, acked) in &published {
                if sent > start && acked < end {
                    if times.contains_key(&seq) {
                        tally.delivered_in_window += 1;
                    } else {
                        tally.problems.push(format!(
                            "subscriber {i}: publication {seq} inside its subscription never arrived"
                        ));
                    }
                }
            }
        }
    }
    tally.problems.truncate(10);
    tally
}

/// One stream to /echo/stream: a sender thread writes up to 2 MiB in random chunks while
/// this thread reads slowly; returns the bytes echoed, or why they were wrong.
fn slow_stream(c: &Client, rng: &mut Rng) -> Result<u64, String> {
    let stream = c
        .open_stream("/echo/stream")
        .map_err(|e| format!("open: {e}"))?;
    let chunks: Vec<Vec<u8>> = (0..rng.range(4, 64))
        .map(|_| {
            let len = rng.range(1, 64 << 10) as usize;
            rng.bytes(len)
        })
        .collect();
    let expected: Vec<u8> = chunks.concat();
    let sender = stream.sender();
    let writer = thread::spawn(move || -> Result<(), String> {
        for chunk in chunks {
            sender
                .send(Bytes::from(chunk))
                .map_err(|e| format!("send: {e}"))?;
        }
        sender.close_send().map_err(|e| format!("close: {e}"))
    });
    let mut got = Vec::with_capacity(expected.len());
    let pause = Duration::from_millis(rng.range(0, 5));
    loop {
        match stream.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(data)) => {
                got.extend_from_slice(&data);
                if !expected.starts_with(&got) {
                    return Err(format!("stream echoed {} bytes that differ", got.len()));
                }
                thread::sleep(pause);
            }
            Ok(None) => break,
            Err(e) => return Err(format!("recv after {} bytes: {e}", got.len())),
        }
    }
    writer
        .join()
        .map_err(|_| "the stream writer panicked".to_string())??;
    if got.len() != expected.len() {
        return Err(format!(
            "stream ended after {} of {} bytes",
            got.len(),
            expected.len()
        ));
    }
    Ok(got.len() as u64)
}

/// The mixed soak's extra load, running.
#[derive(Debug)]
pub struct MixedRun {
    loadgens: Loadgens,
    workers: thread::JoinHandle<WorkerTally>,
    chat: thread::JoinHandle<Result<super::chat::Report, String>>,
}

/// What the extra load found: lines for the summary, failed checks and why.
#[derive(Debug, Default)]
pub struct MixedOutcome {
    pub lines: Vec<String>,
    pub failed: Vec<String>,
    pub problems: Vec<String>,
}

impl MixedRun {
    /// Starts the extra loadgen runs, the in-process workers and the chat (its server from
    /// `bin_dir`) for `duration`.
    pub fn start(
        bin_dir: &Path,
        target: SocketAddr,
        udp: Option<SocketAddr>,
        duration: Duration,
        seed: u64,
        work: &Path,
    ) -> Result<MixedRun, String> {
        let udp = udp.ok_or("the engine serves no UDP (it needs --udp-listen)")?;
        let chat_bin = bin_dir.join("chat-server");
        if !chat_bin.is_file() {
            return Err(format!("{} not found (build it first)", chat_bin.display()));
        }
        let loadgens = Loadgens::spawn(
            &bin_dir.join("loadgen"),
            target,
            loadgen_runs(udp),
            duration,
            work,
        )?;
        let until = Instant::now() + duration;
        let workers = thread::spawn(move || run_workers(target, until, seed));
        let chat = thread::spawn(move || super::chat::soak(&chat_bin, 6, duration, seed));
        Ok(MixedRun {
            loadgens,
            workers,
            chat,
        })
    }

    /// Waits for all of it (loadgen runs at most `limit`) and judges it.
    pub fn finish(self, limit: Duration) -> MixedOutcome {
        let mut out = MixedOutcome::default();
        for (name, report) in self.loadgens.finish(limit) {
            match report {
                Ok(r) => {
                    let c = &r.counts;
                    let mut line = format!(
                        "loadgen {name}: {:.0} req/s, sent {}, answered {}, errors {}, timeouts {}, lost {}",
                        r.requests_per_second, c.sent, c.answered, c.errors, c.timeouts, c.lost
                    );
                    if let Some(p) = &r.pubsub {
                        line += &format!(
                            "; deliveries expected {}, delivered {}, lost {}, duplicates {}, corrupt {}",
                            p.expected, p.delivered, p.lost, p.duplicates, p.corrupt
                        );
                    }
                    out.lines.push(line);
                    let p = r.problems();
                    if !p.is_empty() {
                        out.failed.push(format!("loadgen {name}"));
                        out.problems
                            .extend(p.into_iter().map(|p| format!("{name}: {p}")));
                    }
                }
                Err(e) => {
                    out.failed.push(format!("loadgen {name}"));
                    out.problems.push(format!("{name}: {e}"));
                }
            }
        }
        match self.workers.join() {
            Ok(t) => {
                out.lines.push(format!(
                    "pub/sub churn: {} publications, {} subscribe/unsubscribe windows, {} deliveries due in them, all once; streams with slow consumers: {}, {} bytes echoed",
                    t.publications, t.subscriptions, t.delivered_in_window, t.streams, t.stream_bytes
                ));
                if !t.problems.is_empty() {
                    out.failed.push("workers".into());
                    out.problems.extend(t.problems);
                }
            }
            Err(_) => {
                out.failed.push("workers".into());
                out.problems.push("a worker thread panicked".into());
            }
        }
        match self.chat.join() {
            Ok(Ok(r)) => {
                out.lines.push(format!(
                    "chat: {} messages acknowledged, {} delivered ({} more than once)",
                    r.acked, r.delivered, r.redelivered
                ));
                if !r.problems.is_empty() || r.redelivered > 0 {
                    out.failed.push("chat".into());
                    out.problems.extend(r.problems);
                }
            }
            Ok(Err(e)) => {
                out.failed.push("chat".into());
                out.problems.push(format!("chat: {e}"));
            }
            Err(_) => {
                out.failed.push("chat".into());
                out.problems.push("the chat thread panicked".into());
            }
        }
        out
    }
}
