//! The chat workload: users of a running `chat-server` that log in and send each other
//! private messages, answering every delivery (the receipt), with the accounting the chat's
//! rule allows: a message whose sender got an answer is delivered, and only once per login
//! of its recipient (a receipt lost in a crash brings it once more at the next login).
//!
//! [`soak`] runs it beside the mixed soak (no crash: every acknowledged message exactly once);
//! [`crash_loop`] kills the server with SIGKILL at random moments under it and restarts it
//! on the same database, then checks nothing acknowledged was lost.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc::Client;
use ringrpc_chat::protocol::{self as p, Delivery};

use super::process::{KillOnDrop, signal, stop};
use super::rng::Rng;

const CALL: Duration = Duration::from_secs(5);

/// What the users did and saw.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Messages whose sender got an answer: text → recipient.
    pub acked: HashMap<String, String>,
    /// Messages sent whose answer never came (the server died): text → recipient.
    pub unacked: HashMap<String, String>,
    /// Deliveries: text → (recipient, epoch) each time it arrived.
    pub delivered: HashMap<String, Vec<(String, usize)>>,
}

type Shared = Arc<Mutex<Ledger>>;

/// The users file's lines and the names.
pub fn users(n: usize) -> (String, Vec<String>) {
    let names: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
    let file = names.iter().map(|u| format!("{u} pw-{u}\n")).collect();
    (file, names)
}

/// Connects `user` to `addr`, answering each delivery, and logs in (retrying a refusal
/// for a session the server still holds).
fn log_in(
    addr: SocketAddr,
    user: &str,
    ledger: &Shared,
    epoch: &Arc<AtomicUsize>,
) -> Result<Client, String> {
    let (me, into, epoch) = (user.to_string(), ledger.clone(), epoch.clone());
    let client = Client::builder(&addr.to_string())
        .route(p::MSG, move |ctx| {
            if let Ok(d) = serde_json::from_slice::<Delivery>(ctx.payload()) {
                let e = epoch.load(Ordering::SeqCst);
                into.lock()
                    .unwrap()
                    .delivered
                    .entry(d.text)
                    .or_default()
                    .push((me.clone(), e));
            }
            ctx.reply(b"{}");
        })
        .connect()
        .map_err(|e| format!("{user} cannot connect: {e}"))?;
    let login = serde_json::to_vec(&p::Login {
        user: user.into(),
        password: format!("pw-{user}"),
    })
    .expect("json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client
            .call(p::LOGIN, Bytes::from(login.clone()), CALL)
            .map_err(|e| format!("{user} login: {e}"))?;
        let reply: p::LoginReply = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        if reply.ok {
            return Ok(client);
        }
        if Instant::now() > deadline {
            return Err(format!("{user} login refused: {}", reply.text));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Each user sends a message to another every few milliseconds until `until` or the first
/// failed call; returns how many were acknowledged.
fn send_until(
    clients: &[(String, Client)],
    until: Instant,
    ledger: &Shared,
    seed: u64,
    tag: &str,
) -> u64 {
    let names: Vec<String> = clients.iter().map(|(n, _)| n.clone()).collect();
    thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, (me, c))| {
                let (names, ledger) = (&names, ledger.clone());
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ i as u64);
                    let mut acked = 0;
                    let mut n = 0;
                    while Instant::now() < until {
                        n += 1;
                        let to = names
                            [(i + 1 + rng.range(0, names.len() as u64 - 2) as usize) % names.len()]
                        .clone();
                        let text = format!("{tag}-{me}-{n}");
                        let body = serde_json::to_vec(&p::Message {
                            to: to.clone(),
                            text: text.clone(),
                        })
                        .expect("json");
                        match c.call(p::MESSAGE, Bytes::from(body), CALL) {
                            Ok(_) => {
                                acked += 1;
                                ledger.lock().unwrap().acked.insert(text, to);
                            }
                            Err(_) => {
                                ledger.lock().unwrap().unacked.insert(text, to);
                                break;
                            }
                        }
                        thread::sleep(Duration::from_millis(rng.range(1, 8)));
                    }
                    acked
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// Waits until every acknowledged message arrived (or `limit`).
fn wait_delivered(ledger: &Shared, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let l = ledger.lock().unwrap();
        if l.acked.keys().all(|t| l.delivered.contains_key(t)) {
            break;
        }
        drop(l);
        thread::sleep(Duration::from_millis(50));
    }
    // Duplicates would come right after.
    thread::sleep(Duration::from_millis(300));
}

/// What broke the rule: acknowledged messages lost, deliveries to the wrong user or of
/// nothing sent, more than one delivery per login.
pub fn check(ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    for (text, to) in &ledger.acked {
        if !ledger.delivered.contains_key(text) {
            problems.push(format!(
                "acknowledged message {text} to {to} never delivered"
            ));
        }
    }
    for (text, deliveries) in &ledger.delivered {
        let Some(to) = ledger.acked.get(text).or_else(|| ledger.unacked.get(text)) else {
            problems.push(format!("delivered {text}, which nobody sent"));
            continue;
        };
        let mut per_epoch: HashMap<usize, usize> = HashMap::new();
        for (who, epoch) in deliveries {
            if who != to {
                problems.push(format!("{text} for {to} delivered to {who}"));
            }
            *per_epoch.entry(*epoch).or_default() += 1;
        }
        if let Some((epoch, n)) = per_epoch.iter().find(|(_, n)| **n > 1) {
            problems.push(format!(
                "{text} delivered {n} times in run {epoch} of the server"
            ));
        }
    }
    problems.truncate(10);
    problems
}

/// A chat-server run: the process and its address.
#[derive(Debug)]
pub struct ChatServer {
    pub child: KillOnDrop,
    pub addr: SocketAddr,
}

/// Starts `bin` on `data` with the users in `users`, and waits for its listening line.
pub fn start(bin: &Path, users: &Path, data: &Path) -> Result<ChatServer, String> {
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--block-duration",
            "60",
            "--timeout",
            "0",
            "--cores",
            "1",
        ])
        .arg("--users")
        .arg(users)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("chat-server said {line:?}"))?;
    thread::spawn(move || for _ in out.lines() {});
    Ok(ChatServer {
        child: KillOnDrop(child),
        addr,
    })
}

/// A fresh directory for the users file and the database.
fn workdir(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ringrpc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// What a chat run found.
#[derive(Debug, Default)]
pub struct Report {
    pub acked: u64,
    pub unacked: u64,
    pub delivered: u64,
    /// Deliveries beyond the first (allowed only across a crash).
    pub redelivered: u64,
    pub restarts: usize,
    pub problems: Vec<String>,
}

fn report(ledger: &Ledger, restarts: usize, mut problems: Vec<String>) -> Report {
    problems.extend(check(ledger));
    let delivered = ledger.delivered.values().map(Vec::len).sum::<usize>() as u64;
    Report {
        acked: ledger.acked.len() as u64,
        unacked: ledger.unacked.len() as u64,
        delivered,
        redelivered: delivered - ledger.delivered.len() as u64,
        restarts,
        problems,
    }
}

/// The soak's chat: `users` users messaging for `duration`, no crash.
pub fn soak(bin: &Path, users: usize, duration: Duration, seed: u64) -> Result<Report, String> {
    let dir = workdir("chat-soak")?;
    let (file, names) = self::users(users);
    std::fs::write(dir.join("users.txt"), file).map_err(|e| e.to_string())?;
    let mut server = start(bin, &dir.join("users.txt"), &dir.join("data"))?;
    let ledger = Shared::default();
    let epoch = Arc::new(AtomicUsize::new(0));
    let clients = names
        .iter()
        .map(|u| log_in(server.addr, u, &ledger, &epoch).map(|c| (u.clone(), c)))
        .collect::<Result<Vec<_>, _>>()?;
    send_until(&clients, Instant::now() + duration, &ledger, seed, "soak");
    wait_delivered(&ledger, Duration::from_secs(10));
    drop(clients);
    let status = stop(&mut server.child.0);
    let mut problems = Vec::new();
    if !status.is_some_and(|s| s.success()) {
        problems.push(format!("chat-server exited with {status:?}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report(&ledger.lock().unwrap(), 0, problems))
}

/// `restarts` runs of the server, each killed with SIGKILL at a random moment while every
/// user sends, then one more in which every user logs in and everything owed arrives.
pub fn crash_loop(bin: &Path, users: usize, restarts: usize, seed: u64) -> Result<Report, String> {
    let dir = workdir("chat-crash")?;
    let (file, names) = self::users(users);
    std::fs::write(dir.join("users.txt"), file).map_err(|e| e.to_string())?;
    let ledger = Shared::default();
    let epoch = Arc::new(AtomicUsize::new(0));
    let mut rng = Rng::new(seed);
    let mut problems = Vec::new();
    for run in 0..=restarts {
        epoch.store(run, Ordering::SeqCst);
        let mut server = start(bin, &dir.join("users.txt"), &dir.join("data"))?;
        let clients = names
            .iter()
            .map(|u| log_in(server.addr, u, &ledger, &epoch).map(|c| (u.clone(), c)))
            .collect::<Result<Vec<_>, _>>()?;
        if run == restarts {
            wait_delivered(&ledger, Duration::from_secs(20));
            drop(clients);
            let status = stop(&mut server.child.0);
            if !status.is_some_and(|s| s.success()) {
                problems.push(format!("the last chat-server exited with {status:?}"));
            }
            break;
        }
        // Kill it at a random moment while everyone sends.
        let kill_at = Instant::now() + Duration::from_millis(rng.range(50, 600));
        let child = &server.child.0;
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(kill_at.saturating_duration_since(Instant::now()));
                signal(child, "-KILL");
            });
            send_until(
                &clients,
                kill_at + Duration::from_secs(5),
                &ledger,
                seed ^ run as u64,
                &format!("r{run}"),
            );
        });
        let _ = server.child.0.wait();
        drop(clients);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report(&ledger.lock().unwrap(), restarts, problems))
}
