//! The chaos client: misbehaving connections opened at random against a running server, each
//! action bounded in time, with what happened counted per kind.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringrpc_protocol::{Command, DEFAULT_MAX_BODY, Decoder, Frame};
use socket2::SockRef;

use super::rng::Rng;

/// How long any single connect, read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Samples of unexpected outcomes kept for the summary.
const SAMPLES: usize = 8;
/// Actions per thread at most, whatever the duration.
const MAX_ACTIONS: u64 = 1_000_000;

/// The misbehaviours, in the order the summary prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send requests, then reset (SO_LINGER 0) with responses possibly still queued.
    ResetWithQueued,
    /// Send bytes that are no frame; the server must close.
    Garbage,
    /// Send a lot and never read, then reset.
    Stall,
    /// Trickle a frame one byte per 100 ms; the read timeout must close it.
    Slowloris,
    /// A correct echo and a clean close.
    Echo,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::ResetWithQueued,
        Action::Garbage,
        Action::Stall,
        Action::Slowloris,
        Action::Echo,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::ResetWithQueued => "reset-with-queued",
            Action::Garbage => "garbage",
            Action::Stall => "stall",
            Action::Slowloris => "slowloris",
            Action::Echo => "echo",
        })
    }
}

/// What the chaos client did.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Actions done, by [`Action::ALL`] index.
    pub done: [u64; 5],
    /// Actions whose outcome was not the expected one.
    pub unexpected: [u64; 5],
    /// A few of those, described.
    pub samples: Vec<String>,
}

impl Tally {
    fn record(&mut self, action: Action, outcome: Result<(), String>) {
        self.done[action.index()] += 1;
        if let Err(why) = outcome {
            self.unexpected[action.index()] += 1;
            if self.samples.len() < SAMPLES {
                self.samples.push(format!("{action}: {why}"));
            }
        }
    }

    /// Adds another thread's tally.
    pub fn merge(&mut self, other: Tally) {
        for i in 0..5 {
            self.done[i] += other.done[i];
            self.unexpected[i] += other.unexpected[i];
        }
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }

    pub fn done(&self, action: Action) -> u64 {
        self.done[action.index()]
    }

    pub fn unexpected(&self, action: Action) -> u64 {
        self.unexpected[action.index()]
    }
}

/// Where to misbehave and for how long.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub target: SocketAddr,
    /// No new action starts after this; a started one ends within its own bound.
    pub until: Instant,
    /// The server's `--read-timeout`: a slowloris must be closed within it plus slack.
    pub read_timeout: Duration,
}

/// Runs random actions until `config.until`; `seed` decides which and how.
pub fn run(config: &ChaosConfig, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut actions = 0;
    while Instant::now() < config.until && actions < MAX_ACTIONS {
        actions += 1;
        let action = Action::ALL[rng.range(0, 4) as usize];
        let outcome = match action {
            Action::ResetWithQueued => reset_with_queued(config, &mut rng),
            Action::Garbage => garbage(config, &mut rng),
            Action::Stall => stall(config, &mut rng),
            Action::Slowloris => slowloris(config, &mut rng),
            Action::Echo => echo(config.target, &mut rng),
        };
        tally.record(action, outcome);
        // A short random pause so actions overlap loadgen differently each time.
        std::thread::sleep(Duration::from_millis(rng.range(0, 10)));
    }
    tally
}

fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .map_err(|e| format!("connect to {target}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    Ok(stream)
}

/// Drops `stream` with SO_LINGER 0, so the server sees a reset instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// `lo..=hi` echo requests with random payloads of up to `max_payload` bytes, as wire bytes,
/// and their frames.
fn requests(rng: &mut Rng, (lo, hi): (u64, u64), max_payload: u64) -> (Vec<u8>, Vec<Frame>) {
    let mut wire = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..rng.range(lo, hi) {
        let seq = rng.next_u64();
        let len = rng.range(0, max_payload) as usize;
        let payload = rng.bytes(len);
        let frame = Frame::request(seq, "/echo", payload);
        wire.extend_from_slice(&frame.to_bytes());
        frames.push(frame);
    }
    (wire, frames)
}

/// Writes all of `bytes`, tolerating a server that stops reading (timeout) or closes.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// Reads the next frame within the read timeout.
fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Frame, String> {
    let decoder = Decoder::new(DEFAULT_MAX_BODY);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(frame) = decoder
            .decode(buf)
            .map_err(|e| format!("undecodable response: {e}"))?
        {
            return Ok(frame);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("server closed before answering".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading a response: {e}")),
        }
    }
}

/// Waits until the server closes `stream` (EOF or reset), discarding what it sends; fails
/// when it is still open at `deadline`.
fn expect_close(stream: &mut TcpStream, deadline: Instant) -> Result<(), String> {
    let mut sink = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("server kept the connection open".into());
        }
        let _ = stream.set_read_timeout(Some(left.min(IO_TIMEOUT)));
        match stream.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("waiting for the close: {e}")),
        }
    }
}

fn reset_with_queued(config: &ChaosConfig, rng: &mut Rng) -> Result<(), String> {
    let mut stream = connect(config.target)?;
    let (wire, frames) = requests(rng, (1, 16), 64 * 1024);
    write_some(&mut stream, &wire);
    // Sometimes read a few answers first, so resets land at different points.
    let mut buf = BytesMut::new();
    for _ in 0..rng.range(0, frames.len() as u64 / 2) {
        if read_frame(&mut stream, &mut buf).is_err() {
            break;
        }
    }
    reset(stream);
    Ok(())
}

fn garbage(config: &ChaosConfig, rng: &mut Rng) -> Result<(), String> {
    let mut stream = connect(config.target)?;
    let mut wire = Vec::new();
    // Sometimes a valid request first: it must be answered before the close.
    let valid = rng.range(0, 1) == 1;
    if valid {
        wire = requests(rng, (1, 1), 256).0;
    }
    let len = rng.range(16, 256) as usize;
    let mut junk = rng.bytes(len);
    // Command bits 7..=63 name no command, so the header itself is refused at once.
    junk[5] = rng.range(7, 63) as u8;
    wire.extend_from_slice(&junk);
    write_some(&mut stream, &wire);
    if valid {
        let mut buf = BytesMut::new();
        let answer = read_frame(&mut stream, &mut buf)?;
        if answer.header.cmd != Command::Response || answer.is_error() {
            return Err(format!(
                "the request before the garbage got {:?}",
                answer.header
            ));
        }
    }
    expect_close(&mut stream, Instant::now() + IO_TIMEOUT)
}

fn stall(config: &ChaosConfig, rng: &mut Rng) -> Result<(), String> {
    let mut stream = connect(config.target)?;
    // Never read: several MiB of answers pile up past the send queue limit.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    let (wire, _) = requests(rng, (8, 128), 64 * 1024);
    write_some(&mut stream, &wire);
    let stall_for = Duration::from_millis(rng.range(200, 2000));
    let end = (Instant::now() + stall_for).min(config.until.max(Instant::now()));
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    reset(stream);
    Ok(())
}

fn slowloris(config: &ChaosConfig, rng: &mut Rng) -> Result<(), String> {
    let mut stream = connect(config.target)?;
    let deadline = Instant::now() + config.read_timeout + Duration::from_secs(3);
    // Long enough that trickling it whole would outlast the deadline.
    let payload_len = (deadline - Instant::now()).as_millis() as usize / 100 + 64;
    let frame = Frame::request(rng.next_u64(), "/echo", rng.bytes(payload_len));
    let wire = frame.to_bytes();
    let mut probe = [0u8; 64];
    for &byte in wire.iter() {
        if Instant::now() >= deadline {
            return Err(format!(
                "still open {:?} after the first byte (read timeout {:?})",
                config.read_timeout + Duration::from_secs(3),
                config.read_timeout
            ));
        }
        if stream.write_all(&[byte]).is_err() {
            return Ok(());
        }
        // The 100 ms pause doubles as the check for the server's close.
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        match stream.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err("server answered an unfinished frame".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(()),
        }
    }
    Err("the whole frame was trickled without a close".into())
}

/// A correct echo of a few requests on a fresh connection, then a clean close.
pub fn echo(target: SocketAddr, rng: &mut Rng) -> Result<(), String> {
    let mut stream = connect(target)?;
    let (wire, frames) = requests(rng, (1, 4), 4096);
    stream
        .write_all(&wire)
        .map_err(|e| format!("sending: {e}"))?;
    let mut buf = BytesMut::new();
    for sent in &frames {
        let got = read_frame(&mut stream, &mut buf)?;
        if got.header.cmd != Command::Response || got.is_error() {
            return Err(format!("expected a response, got {:?}", got.header));
        }
        if got.header.seq != sent.header.seq {
            return Err(format!(
                "seq {} answered where {} was due",
                got.header.seq, sent.header.seq
            ));
        }
        if got.payload != sent.payload {
            return Err(format!("payload of seq {} differs", sent.header.seq));
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    // A clean close: the server answers our FIN with its own.
    expect_close(&mut stream, Instant::now() + IO_TIMEOUT)
}
