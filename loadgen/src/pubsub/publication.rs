//! The bytes of one publication: a [`Message`] header (publisher, per-publisher seq, send
//! time, measured or not) and `--payload` pattern bytes, inside the topic bytes of Go arpc's
//! pub/sub (name, name length, Unix timestamp); the routes that carry them; and the clock that
//! send times count from.
//!
//! Invariant: a publication decodes only if every byte is what [`encode_publication`] wrote:
//! the pattern's seed covers every header field, so a corrupted header fails the pattern check.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::payload;

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

pub(crate) fn nanos(d: Duration) -> u64 {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ringrpc_protocol::{Topic, TopicRef};

    pub(crate) fn message(publisher: u32, seq: u64) -> Message {
        Message {
            publisher,
            seq,
            sent_ns: 123_456,
            measured: true,
        }
    }

    pub(crate) fn publication(msg: &Message, payload_len: usize) -> Vec<u8> {
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
}
