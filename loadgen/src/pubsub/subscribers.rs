//! The subscriber side of `--pattern pubsub`: `--subscribers` connections, each read by a
//! thread of its own over a plain blocking socket, that authenticate and subscribe (every
//! `in_S` answered) before the first publish, then check and time every delivery until the
//! publishers drain; and the `in_A` a publisher sends before the I/O threads take it over.
//!
//! Invariant: per subscriber, every measured publish answered OK is exactly one of delivered
//! or lost; `expected = answered × subscribers`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use ringrpc_protocol::{
    Command, DEFAULT_MAX_BODY, Flags, Header, TOPIC_TRAILER_LEN, TopicRef, parse_frame, write_frame,
};

use crate::cli::config::Config;
use crate::cli::flags::Proto;
use crate::connect::connect;
use crate::error::RunError;
use crate::pubsub::deliveries::{Deliveries, Delivery, SeqBits};
use crate::pubsub::publication::{METHOD_AUTH, METHOD_PUBLISH, METHOD_SUBSCRIBE, clock, nanos};
use crate::report::{PubsubCounts, PubsubOutcome, SubscriberCounts};
use crate::session::latency_histogram;

/// Longest a subscriber's blocking read waits before it re-checks whether to stop.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(10);
/// Bytes asked of each subscriber read.
const READ_SIZE: usize = 64 * 1024;
/// Longest server error text kept.
const ERROR_TEXT_MAX: usize = 200;

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
                proto: Proto::Arpc,
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
