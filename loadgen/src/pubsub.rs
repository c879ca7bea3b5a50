//! `--pattern pubsub`: publishers and subscribers of one topic, on Go arpc's pub/sub wire
//! (`in_A`, `in_S`, `in_P`; see docs/protocol.md).
//!
//! Publishers are the `--conns` connections of the ordinary I/O threads: one unit is one
//! `in_P` Request, settled by its Response like a call (see the `conn` module). Subscribers are
//! `--subscribers` further connections, each read by a thread of its own over a plain
//! blocking socket; they authenticate and subscribe (every `in_S` answered) before the first
//! publish.
//!
//! Each publication's data is a [`Message`] header (publisher id, per-publisher seq, send
//! time, measured or not) followed by `--payload` pattern bytes, so a subscriber checks and
//! times every delivery by itself. Per subscriber and publisher a [`SeqBits`] remembers the
//! seqs delivered (a second one is a duplicate); publishers remember the seqs whose `in_P`
//! was answered OK. After the publishers drain, the subscribers read on until each has
//! every expected delivery or `--timeout` more passes; then `lost` is, per subscriber, the
//! publishes answered OK that it never received.
//!
//! Invariant: per subscriber, every measured publish answered OK is exactly one of
//! delivered or lost; `expected = answered × subscribers`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use ringrpc_protocol::{
    Command, DEFAULT_MAX_BODY, Flags, Header, TOPIC_TRAILER_LEN, TopicRef, parse_frame, write_frame,
};

use crate::cli::Config;
use crate::payload;
use crate::report::{PubsubCounts, SubscriberCounts};
use crate::run::{RunError, connect, latency_histogram};

/// Route that authenticates a connection (payload: the password).
pub const METHOD_AUTH: &str = "in_A";
/// Route that subscribes a connection to a topic (payload: topic bytes without data).
pub const METHOD_SUBSCRIBE: &str = "in_S";
/// Route that publishes to every subscriber; also the method of the Notify they receive.
pub const METHOD_PUBLISH: &str = "in_P";

/// Marks data as a loadgen publication.
const MAGIC: [u8; 4] = *b"lgps";
/// Bytes of a [`Message`] header before the payload pattern.
pub const MESSAGE_HEADER_LEN: usize = 4 + 4 + 8 + 8 + 1;
/// The [`Message::measured`] bit of the flags byte.
const FLAG_MEASURED: u8 = 1;
/// Largest seq a subscriber accepts: a corrupt seq must not grow a [`SeqBits`] without bound.
const MAX_SEQ: u64 = 1 << 40;
/// Longest a subscriber's blocking read waits before it re-checks whether to stop.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(10);
/// Bytes asked of each subscriber read.
const READ_SIZE: usize = 64 * 1024;
/// Longest server error text kept.
const ERROR_TEXT_MAX: usize = 200;

/// The instant publish send times are counted from, and the Unix time (ns) at that instant:
/// one per process, so publishers and subscribers (threads of one process) share it.
pub(crate) fn clock() -> (Instant, u64) {
    static CLOCK: OnceLock<(Instant, u64)> = OnceLock::new();
    *CLOCK.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        (Instant::now(), unix)
    })
}

/// What publishers need to build a publication; part of the run's plan.
#[derive(Debug, Clone)]
pub(crate) struct PubsubPlan {
    pub topic: Bytes,
    /// Send times are nanoseconds since this.
    pub epoch: Instant,
    /// Unix time (ns) at `epoch`, for the topic's timestamp.
    pub unix_at_epoch: u64,
}

impl PubsubPlan {
    pub(crate) fn new(topic: &str) -> PubsubPlan {
        let (epoch, unix_at_epoch) = clock();
        PubsubPlan {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            epoch,
            unix_at_epoch,
        }
    }
}

/// The header of one publication's data: enough to check and time it at every subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The publishing connection, 0..conns.
    pub publisher: u32,
    /// Per-publisher sequence number (the `in_P` Request's seq).
    pub seq: u64,
    /// Send time (or, with `--rate`, intended send time) in ns since the run's epoch.
    pub sent_ns: u64,
    /// Sent inside the measured window.
    pub measured: bool,
}

impl Message {
    /// Seed of the payload pattern: covers every header field, so a corrupted header is
    /// caught by the pattern check too.
    fn seed(&self) -> u64 {
        self.seq
            ^ u64::from(self.publisher).rotate_left(40)
            ^ self.sent_ns.rotate_left(23)
            ^ u64::from(self.measured) << 63
    }
}

/// Writes the topic bytes of publication `msg` into `dst` (cleared first; no allocation once
/// `dst` has grown to size): header, `payload_len` pattern bytes, topic name, name length,
/// Unix timestamp.
pub fn encode_publication(
    dst: &mut Vec<u8>,
    msg: &Message,
    payload_len: usize,
    topic: &[u8],
    unix_ns: u64,
) {
    dst.clear();
    dst.extend_from_slice(&MAGIC);
    dst.extend_from_slice(&msg.publisher.to_le_bytes());
    dst.extend_from_slice(&msg.seq.to_le_bytes());
    dst.extend_from_slice(&msg.sent_ns.to_le_bytes());
    dst.push(if msg.measured { FLAG_MEASURED } else { 0 });
    let at = dst.len();
    dst.resize(at + payload_len, 0);
    payload::fill(msg.seed(), &mut dst[at..]);
    dst.extend_from_slice(topic);
    // The topic name was checked to be at most 1024 bytes.
    dst.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    dst.extend_from_slice(&unix_ns.to_le_bytes());
}

/// Publication bytes for `seq` of `publisher`, as [`crate::conn`] sends them.
pub(crate) fn encode_for_plan(
    dst: &mut Vec<u8>,
    plan: &PubsubPlan,
    publisher: usize,
    seq: u64,
    sent_at: Instant,
    measured: bool,
    payload_len: usize,
) {
    let sent_ns = nanos(sent_at.saturating_duration_since(plan.epoch));
    let msg = Message {
        publisher: u32::try_from(publisher).unwrap_or(u32::MAX),
        seq,
        sent_ns,
        measured,
    };
    let unix = plan.unix_at_epoch.saturating_add(sent_ns);
    encode_publication(dst, &msg, payload_len, &plan.topic, unix);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Checks the data of a delivered publication (topic bytes already parsed): the magic, the
/// length, and every pattern byte. Returns its header, or why it is corrupt.
pub fn decode_publication(data: &[u8], payload_len: usize) -> Result<Message, String> {
    if data.len() != MESSAGE_HEADER_LEN + payload_len {
        return Err(format!(
            "data of {} bytes, expected {} ({MESSAGE_HEADER_LEN}-byte header + {payload_len} payload)",
            data.len(),
            MESSAGE_HEADER_LEN + payload_len
        ));
    }
    let (head, pattern) = data.split_at(MESSAGE_HEADER_LEN);
    if head[..4] != MAGIC {
        return Err("data does not start with loadgen's marker".into());
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if head[24] & !FLAG_MEASURED != 0 {
        return Err(format!("unknown flags {:#04x}", head[24]));
    }
    let msg = Message {
        publisher: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
        seq: u64_at(8),
        sent_ns: u64_at(16),
        measured: head[24] & FLAG_MEASURED != 0,
    };
    if let Some(at) = payload::first_difference(msg.seed(), pattern) {
        return Err(format!(
            "publisher {} seq {}: payload byte {at} of {payload_len} differs from what was published",
            msg.publisher, msg.seq
        ));
    }
    Ok(msg)
}

/// A growable set of sequence numbers, one bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqBits(Vec<u64>);

impl SeqBits {
    /// Adds `seq`; whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.0.len() {
            // Doubling keeps the growth amortised: a publisher's seqs arrive in order.
            let len = (word + 1).max(self.0.len() * 2);
            self.0.resize(len, 0);
        }
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.0
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Seqs in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Seqs in `self` that are not in `other`.
    pub fn count_missing_from(&self, other: &SeqBits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// Adds every seq of `other`.
    pub fn union_with(&mut self, other: &SeqBits) {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// `into[i] |= from[i]` for every publisher `i`.
pub(crate) fn merge_seq_sets(into: &mut Vec<SeqBits>, from: Vec<SeqBits>) {
    if from.len() > into.len() {
        into.resize_with(from.len(), SeqBits::default);
    }
    for (a, b) in into.iter_mut().zip(&from) {
        a.union_with(b);
    }
}

/// One subscriber's bookkeeping of what it received.
#[derive(Debug, Clone)]
pub struct Deliveries {
    /// Per publisher: the seqs delivered.
    seen: Vec<SeqBits>,
    payload_len: usize,
    /// Unique valid deliveries of measured publishes.
    pub delivered: u64,
    /// Deliveries of a publisher+seq already delivered.
    pub duplicates: u64,
    /// Deliveries whose bytes are not what was published.
    pub corrupt: u64,
    /// The first duplicate or corrupt delivery, described.
    pub first_problem: Option<String>,
}

/// What [`Deliveries::record`] made of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// New and intact; its header.
    New(Message),
    /// Already delivered.
    Duplicate,
    /// Not what was published.
    Corrupt,
}

impl Deliveries {
    /// Bookkeeping for publications from `publishers` connections with `payload_len` bytes.
    pub fn new(publishers: usize, payload_len: usize) -> Deliveries {
        Deliveries {
            seen: vec![SeqBits::default(); publishers],
            payload_len,
            delivered: 0,
            duplicates: 0,
            corrupt: 0,
            first_problem: None,
        }
    }

    /// Checks and counts the data of one delivery.
    pub fn record(&mut self, data: &[u8]) -> Delivery {
        let msg = match decode_publication(data, self.payload_len) {
            Ok(msg) => msg,
            Err(why) => return self.corrupt(why),
        };
        let Some(seen) = self.seen.get_mut(msg.publisher as usize) else {
            return self.corrupt(format!("unknown publisher {}", msg.publisher));
        };
        if msg.seq > MAX_SEQ {
            return self.corrupt(format!("seq {} out of range", msg.seq));
        }
        if !seen.insert(msg.seq) {
            self.duplicates += 1;
            self.first_problem.get_or_insert_with(|| {
                format!(
                    "publisher {} seq {} delivered twice",
                    msg.publisher, msg.seq
                )
            });
            return Delivery::Duplicate;
        }
        if msg.measured {
            self.delivered += 1;
        }
        Delivery::New(msg)
    }

    /// Counts a delivery that is not what was published.
    pub fn corrupt(&mut self, why: String) -> Delivery {
        self.corrupt += 1;
        self.first_problem.get_or_insert(why);
        Delivery::Corrupt
    }

    /// Publishes answered OK (`published_ok`, per publisher) this subscriber never received.
    pub fn lost(&self, published_ok: &[SeqBits]) -> u64 {
        let empty = SeqBits::default();
        published_ok
            .iter()
            .enumerate()
            .map(|(i, ok)| ok.count_missing_from(self.seen.get(i).unwrap_or(&empty)))
            .sum()
    }
}

/// Sends one Request on a blocking socket and waits for its Response: `Err` with the server's
/// error text, or why none came within `timeout`. Bytes after the Response stay in `rx`.
fn call(
    stream: &mut TcpStream,
    rx: &mut BytesMut,
    seq: u64,
    method: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let mut tx = BytesMut::new();
    write_frame(
        &mut tx,
        Command::Request,
        Flags::default(),
        0,
        seq,
        method.as_bytes(),
        payload,
    );
    stream
        .write_all(&tx)
        .map_err(|e| format!("{method}: write failed: {e}"))?;
    let give_up = Instant::now() + timeout;
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        while let Some((frame, len)) =
            parse_frame(rx, DEFAULT_MAX_BODY).map_err(|e| format!("{method}: {e}"))?
        {
            let (header, answer) = (frame.header, frame.payload.to_vec());
            rx.advance(len);
            match header.cmd {
                Command::Response if header.seq == seq => {
                    if header.flags.is_error() {
                        let text = String::from_utf8_lossy(&answer);
                        let text: String = text.chars().take(ERROR_TEXT_MAX).collect();
                        return Err(format!("{method} refused: {text}"));
                    }
                    return Ok(());
                }
                Command::Ping => pong(stream, header.seq)?,
                _ => {}
            }
        }
        let left = give_up.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{method}: no answer within {timeout:?}"));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("{method}: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("{method}: the server closed the connection")),
            Ok(n) => rx.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{method}: read failed: {e}")),
        }
    }
}

fn pong(stream: &mut TcpStream, seq: u64) -> Result<(), String> {
    let mut tx = BytesMut::new();
    write_frame(&mut tx, Command::Pong, Flags::default(), 0, seq, b"", b"");
    stream
        .write_all(&tx)
        .map_err(|e| format!("write failed: {e}"))
}

/// Topic bytes without data, as `in_S` carries them.
fn subscribe_bytes(topic: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(topic.len() + TOPIC_TRAILER_LEN);
    bytes.extend_from_slice(topic);
    bytes.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&clock().1.to_le_bytes());
    bytes
}

/// Sends `in_A` with `--pubsub-password`, if one was given, on a publisher's blocking socket
/// before the I/O threads take it over.
pub(crate) fn authenticate_publisher(
    stream: &mut TcpStream,
    id: usize,
    config: &Config,
) -> Result<(), RunError> {
    let Some(password) = &config.pubsub_password else {
        return Ok(());
    };
    let mut rx = BytesMut::new();
    let result = call(
        stream,
        &mut rx,
        u64::MAX,
        METHOD_AUTH,
        password.as_bytes(),
        config.timeout,
    );
    stream
        .set_read_timeout(None)
        .map_err(|e| RunError::PubSub(format!("publisher {id}: {e}")))?;
    result.map_err(|why| RunError::PubSub(format!("publisher {id}: {why}")))?;
    if !rx.is_empty() {
        return Err(RunError::PubSub(format!(
            "publisher {id}: {} unexpected bytes after the in_A answer",
            rx.len()
        )));
    }
    Ok(())
}

/// When subscribers stop reading.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Publishing: read on.
    Running,
    /// Publishers done: stop once `expected` measured deliveries arrived, or at `until`.
    Drain { expected: u64, until: Instant },
    /// Stop now (the run was abandoned).
    Stop,
}

/// What a subscriber thread hands back.
#[derive(Debug)]
struct SubscriberOutput {
    deliveries: Deliveries,
    latencies: Histogram<u64>,
    unexpected: u64,
    first_unexpected: Option<String>,
    failure: Option<String>,
}

/// The subscriber threads of a run, reading from before the first publish.
#[derive(Debug)]
pub(crate) struct Subscribers {
    phase: Arc<Mutex<Phase>>,
    handles: Vec<thread::JoinHandle<SubscriberOutput>>,
    empty_histogram: Histogram<u64>,
    topic: String,
}

/// A subscriber connection's counts and latencies once the run is over.
#[derive(Debug)]
pub(crate) struct PubsubOutcome {
    pub counts: PubsubCounts,
    /// Publish-to-delivery latencies (ns) of measured publishes, all subscribers.
    pub latencies: Histogram<u64>,
}

impl Subscribers {
    /// Connects `--subscribers` connections, authenticates (with `--pubsub-password`) and
    /// subscribes each to `--topic`, waiting for every answer, then starts their readers.
    pub(crate) fn start(config: &Config, addrs: &[SocketAddr]) -> Result<Subscribers, RunError> {
        let (epoch, _) = clock();
        let empty_histogram = latency_histogram(config.timeout)?;
        let subscribe = subscribe_bytes(config.topic.as_bytes());
        let phase = Arc::new(Mutex::new(Phase::Running));
        let mut subscribers = Subscribers {
            phase: Arc::clone(&phase),
            handles: Vec::with_capacity(config.subscribers),
            empty_histogram: empty_histogram.clone(),
            topic: config.topic.clone(),
        };
        let setup = |id: usize, why: String| RunError::PubSub(format!("subscriber {id}: {why}"));
        for id in 0..config.subscribers {
            let mut stream = connect(addrs, config.timeout).map_err(|cause| RunError::Connect {
                target: config.target.clone(),
                proto: crate::cli::Proto::Arpc,
                cause,
            })?;
            stream
                .set_nodelay(true)
                .map_err(|e| setup(id, e.to_string()))?;
            let mut rx = BytesMut::with_capacity(READ_SIZE);
            if let Some(password) = &config.pubsub_password {
                call(
                    &mut stream,
                    &mut rx,
                    u64::MAX - 1,
                    METHOD_AUTH,
                    password.as_bytes(),
                    config.timeout,
                )
                .map_err(|why| setup(id, why))?;
            }
            call(
                &mut stream,
                &mut rx,
                u64::MAX,
                METHOD_SUBSCRIBE,
                &subscribe,
                config.timeout,
            )
            .map_err(|why| setup(id, why))?;
            stream
                .set_read_timeout(Some(SUBSCRIBER_POLL))
                .map_err(|e| setup(id, e.to_string()))?;
            let reader = Reader {
                id,
                stream,
                rx,
                topic: Bytes::copy_from_slice(config.topic.as_bytes()),
                epoch,
                deliveries: Deliveries::new(config.conns, config.payload),
                latencies: empty_histogram.clone(),
                unexpected: 0,
                first_unexpected: None,
                phase: Arc::clone(&phase),
            };
            let handle = thread::Builder::new()
                .name(format!("loadgen-sub-{id}"))
                .spawn(move || reader.run())
                .map_err(|e| RunError::Worker(format!("cannot start a subscriber thread: {e}")))?;
            subscribers.handles.push(handle);
        }
        Ok(subscribers)
    }

    /// Once the publishers are done: waits until every subscriber has received `expected`
    /// measured deliveries or `timeout` passes, then counts per subscriber what it missed of
    /// `published_ok` (per publisher: the measured seqs answered OK).
    pub(crate) fn drain(
        mut self,
        published_ok: &[SeqBits],
        timeout: Duration,
    ) -> Result<PubsubOutcome, RunError> {
        let expected_each: u64 = published_ok.iter().map(SeqBits::len).sum();
        self.set_phase(Phase::Drain {
            expected: expected_each,
            until: Instant::now() + timeout,
        });
        let mut latencies = self.empty_histogram.clone();
        let mut counts = PubsubCounts {
            subscribers: self.handles.len(),
            topic: self.topic.clone(),
            expected: expected_each * self.handles.len() as u64,
            ..PubsubCounts::default()
        };
        let mut panicked = false;
        for handle in std::mem::take(&mut self.handles) {
            let Ok(out) = handle.join() else {
                panicked = true;
                continue;
            };
            let d = &out.deliveries;
            let sub = SubscriberCounts {
                delivered: d.delivered,
                lost: d.lost(published_ok),
                duplicates: d.duplicates,
                corrupt: d.corrupt,
            };
            counts.delivered += sub.delivered;
            counts.lost += sub.lost;
            counts.duplicates += sub.duplicates;
            counts.corrupt += sub.corrupt;
            counts.unexpected += out.unexpected;
            counts.per_subscriber.push(sub);
            counts.first_problem = counts.first_problem.or(d.first_problem.clone());
            counts.first_unexpected = counts.first_unexpected.or(out.first_unexpected);
            if let Some(why) = out.failure {
                counts.connection_failures += 1;
                counts.connection_errors.push(why);
            }
            latencies
                .add(&out.latencies)
                .expect("every latency histogram of a run is built with the same bounds");
        }
        if panicked {
            return Err(RunError::Worker("a subscriber thread panicked".into()));
        }
        Ok(PubsubOutcome { counts, latencies })
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }
}

impl Drop for Subscribers {
    /// A run abandoned before [`Subscribers::drain`] stops its readers.
    fn drop(&mut self) {
        if !self.handles.is_empty() {
            self.set_phase(Phase::Stop);
        }
    }
}

/// One subscriber connection's reader thread.
struct Reader {
    id: usize,
    stream: TcpStream,
    rx: BytesMut,
    topic: Bytes,
    epoch: Instant,
    deliveries: Deliveries,
    latencies: Histogram<u64>,
    unexpected: u64,
    first_unexpected: Option<String>,
    phase: Arc<Mutex<Phase>>,
}

impl Reader {
    fn run(mut self) -> SubscriberOutput {
        let mut buf = vec![0u8; READ_SIZE];
        // Bytes read along with the in_S answer.
        let mut failure = self.handle_buffered(Instant::now()).err();
        while failure.is_none() && !self.should_stop() {
            match self.stream.read(&mut buf) {
                Ok(0) => failure = Some("the server closed the connection".to_string()),
                Ok(n) => {
                    let received_at = Instant::now();
                    self.rx.extend_from_slice(&buf[..n]);
                    failure = self.handle_buffered(received_at).err();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => failure = Some(format!("read failed: {e}")),
            }
        }
        SubscriberOutput {
            deliveries: self.deliveries,
            latencies: self.latencies,
            unexpected: self.unexpected,
            first_unexpected: self.first_unexpected,
            failure: failure.map(|why| format!("subscriber {}: {why}", self.id)),
        }
    }

    fn should_stop(&self) -> bool {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Running => false,
            Phase::Drain { expected, until } => {
                self.deliveries.delivered >= expected || Instant::now() >= until
            }
            Phase::Stop => true,
        }
    }

    /// Handles every whole frame in `rx`.
    fn handle_buffered(&mut self, received_at: Instant) -> Result<(), String> {
        let mut used = 0;
        let rx = std::mem::take(&mut self.rx);
        let result = loop {
            match parse_frame(&rx[used..], DEFAULT_MAX_BODY) {
                Ok(Some((frame, len))) => {
                    used += len;
                    self.handle(frame.header, frame.method, frame.payload, received_at)?;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("undecodable frame from the server: {e}")),
            }
        };
        self.rx = rx;
        self.rx.advance(used);
        result
    }

    fn handle(
        &mut self,
        header: Header,
        method: &[u8],
        payload: &[u8],
        received_at: Instant,
    ) -> Result<(), String> {
        match header.cmd {
            Command::Notify if method == METHOD_PUBLISH.as_bytes() => {}
            Command::Ping => return pong(&mut self.stream, header.seq),
            Command::Pong => return Ok(()),
            other => {
                self.unexpected += 1;
                self.first_unexpected.get_or_insert_with(|| {
                    format!(
                        "subscriber {}: unsolicited {other:?} frame with seq {}",
                        self.id, header.seq
                    )
                });
                return Ok(());
            }
        }
        let topic = match TopicRef::parse(payload) {
            Ok(topic) if topic.name == &self.topic[..] => topic,
            Ok(topic) => {
                let name = String::from_utf8_lossy(topic.name);
                self.deliveries
                    .corrupt(format!("delivery for topic {name:?}, not ours"));
                return Ok(());
            }
            Err(e) => {
                self.deliveries.corrupt(format!("delivery: {e}"));
                return Ok(());
            }
        };
        if let Delivery::New(msg) = self.deliveries.record(topic.data) {
            if msg.measured {
                let sent_at = self.epoch + Duration::from_nanos(msg.sent_ns);
                let latency = nanos(received_at.saturating_duration_since(sent_at)).max(1);
                self.latencies.saturating_record(latency);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_protocol::Topic;

    fn message(publisher: u32, seq: u64) -> Message {
        Message {
            publisher,
            seq,
            sent_ns: 123_456,
            measured: true,
        }
    }

    fn publication(msg: &Message, payload_len: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_publication(&mut buf, msg, payload_len, b"loadgen", 42);
        buf
    }

    #[test]
    fn publications_are_arpc_topic_bytes_that_decode_back() {
        for payload_len in [0, 1, 7, 32, 1000] {
            let msg = message(3, 99);
            let bytes = publication(&msg, payload_len);
            let topic = Topic::decode(&Bytes::from(bytes.clone())).unwrap();
            assert_eq!(&topic.name[..], b"loadgen");
            assert_eq!(topic.timestamp_ns, 42);
            assert_eq!(topic.data.len(), MESSAGE_HEADER_LEN + payload_len);
            assert_eq!(
                &Topic::new("loadgen", topic.data.clone(), 42)
                    .unwrap()
                    .encode()
                    .unwrap()[..],
                &bytes[..]
            );
            assert_eq!(decode_publication(&topic.data, payload_len), Ok(msg));
        }
        let unmeasured = Message {
            measured: false,
            ..message(0, 1)
        };
        let bytes = publication(&unmeasured, 8);
        let topic = TopicRef::parse(&bytes).unwrap();
        assert_eq!(decode_publication(topic.data, 8), Ok(unmeasured));
    }

    #[test]
    fn encoding_reuses_the_buffer() {
        let mut buf = Vec::new();
        encode_publication(&mut buf, &message(1, 1), 64, b"t", 0);
        let (ptr, len) = (buf.as_ptr(), buf.len());
        encode_publication(&mut buf, &message(1, 2), 64, b"t", 0);
        assert_eq!((buf.as_ptr(), buf.len()), (ptr, len));
    }

    #[test]
    fn corrupt_publications_are_refused() {
        let msg = message(1, 5);
        let bytes = publication(&msg, 16);
        let data = TopicRef::parse(&bytes).unwrap().data.to_vec();
        // Every byte: a flipped header bit changes the pattern's seed (or the marker, or the
        // flags), a flipped pattern bit the pattern.
        for at in 0..data.len() {
            for bit in [0x01, 0x10, 0x80] {
                let mut bad = data.clone();
                bad[at] ^= bit;
                assert!(decode_publication(&bad, 16).is_err(), "byte {at} bit {bit}");
            }
        }
        assert!(decode_publication(&data[..data.len() - 1], 16).is_err());
        assert!(decode_publication(&data, 17).is_err());
    }

    #[test]
    fn seq_bits_count_what_is_missing() {
        let mut ok = SeqBits::default();
        let mut seen = SeqBits::default();
        for seq in [1, 2, 3, 64, 65, 1000] {
            assert!(ok.insert(seq));
        }
        assert!(!ok.insert(3));
        assert_eq!(ok.len(), 6);
        for seq in [1, 3, 65] {
            seen.insert(seq);
        }
        assert!(seen.contains(65) && !seen.contains(64) && !seen.contains(1 << 30));
        assert_eq!(ok.count_missing_from(&seen), 3);
        assert_eq!(seen.count_missing_from(&ok), 0);
        let mut all = seen.clone();
        all.union_with(&ok);
        assert_eq!(all, ok);
        assert!(SeqBits::default().is_empty() && !ok.is_empty());
    }

    #[test]
    fn deliveries_count_duplicates_losses_and_corruption() {
        let mut d = Deliveries::new(2, 8);
        let data = |p, s| {
            let bytes = publication(&message(p, s), 8);
            TopicRef::parse(&bytes).unwrap().data.to_vec()
        };
        assert_eq!(d.record(&data(0, 1)), Delivery::New(message(0, 1)));
        assert_eq!(d.record(&data(1, 1)), Delivery::New(message(1, 1)));
        assert_eq!(d.record(&data(0, 2)), Delivery::New(message(0, 2)));
        assert_eq!(d.record(&data(0, 1)), Delivery::Duplicate);
        // Publisher 2 does not exist in a 2-publisher run.
        assert_eq!(d.record(&data(2, 1)), Delivery::Corrupt);
        let mut flipped = data(1, 2);
        flipped[MESSAGE_HEADER_LEN] ^= 0xff;
        assert_eq!(d.record(&flipped), Delivery::Corrupt);
        assert_eq!((d.delivered, d.duplicates, d.corrupt), (3, 1, 2));
        assert!(d.first_problem.as_deref().unwrap().contains("twice"));

        // Answered OK: publisher 0 seqs 1..=3, publisher 1 seqs 1..=2.
        let mut ok = vec![SeqBits::default(), SeqBits::default()];
        for s in 1..=3 {
            ok[0].insert(s);
        }
        for s in 1..=2 {
            ok[1].insert(s);
        }
        assert_eq!(d.lost(&ok), 2, "0/3 and 1/2 never arrived intact");

        // Unmeasured (warmup) deliveries are checked but not counted as delivered.
        let warm = Message {
            measured: false,
            ..message(1, 9)
        };
        let bytes = publication(&warm, 8);
        let topic = TopicRef::parse(&bytes).unwrap();
        assert_eq!(d.record(topic.data), Delivery::New(warm));
        assert_eq!(d.delivered, 3);
    }

    #[test]
    fn seq_sets_merge_per_publisher() {
        let mut into = vec![SeqBits::default()];
        into[0].insert(1);
        let mut b = SeqBits::default();
        b.insert(2);
        merge_seq_sets(&mut into, vec![SeqBits::default(), b.clone()]);
        assert_eq!(into.len(), 2);
        assert!(into[0].contains(1) && into[1] == b);
    }
}
