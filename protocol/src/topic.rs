//! The topic bytes of Go arpc's pub/sub extension (arpcex `extension/pubsub`): the payload
//! of its `in_S`, `in_U`, `in_P` and `in_P1` calls and of the `in_P` Notify a subscriber
//! receives.
//!
//! ```text
//! data | name | name_len: u16 LE | timestamp: u64 LE (Unix nanoseconds)
//! ```
//!
//! The layout is read from the end: the last 10 bytes are the trailer, the `name_len` bytes
//! before it the name, everything earlier the data.
//!
//! Invariants: decoding never panics and never allocates (a [`Topic`] shares the input
//! [`Bytes`]); a name is 1..=[`MAX_TOPIC_NAME_LEN`] bytes on both paths, so whatever
//! [`Topic::encode`] produces decodes back to the same topic.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Longest topic name, in bytes (arpcex's `MaxTopicNameLen`).
pub const MAX_TOPIC_NAME_LEN: usize = 1024;
/// Bytes after the name: `name_len` (2) and `timestamp` (8).
pub const TOPIC_TRAILER_LEN: usize = 10;

/// Why topic bytes (or a topic name) are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// Fewer bytes than the 10-byte trailer.
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The name is empty (`name_len` 0).
    EmptyName,
    /// The name is longer than [`MAX_TOPIC_NAME_LEN`].
    NameTooLong {
        /// The length given or declared.
        len: usize,
    },
    /// `name_len` counts more bytes than precede the trailer.
    NameLongerThanBytes {
        /// The declared name length.
        name_len: usize,
        /// Bytes before the trailer.
        available: usize,
    },
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::TooShort { len } => write!(
                f,
                "invalid topic bytes: {len} bytes, at least {TOPIC_TRAILER_LEN} needed (name_len u16 + timestamp u64)"
            ),
            TopicError::EmptyName => f.write_str("invalid topic name: it must not be empty"),
            TopicError::NameTooLong { len } => write!(
                f,
                "invalid topic name length {len}: it must be 1..={MAX_TOPIC_NAME_LEN} bytes"
            ),
            TopicError::NameLongerThanBytes {
                name_len,
                available,
            } => write!(
                f,
                "invalid topic bytes: name_len {name_len} but only {available} bytes precede the trailer"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// Checks a topic name's length (1..=[`MAX_TOPIC_NAME_LEN`] bytes).
pub fn check_topic_name(name: &[u8]) -> Result<(), TopicError> {
    match name.len() {
        0 => Err(TopicError::EmptyName),
        len if len > MAX_TOPIC_NAME_LEN => Err(TopicError::NameTooLong { len }),
        _ => Ok(()),
    }
}

/// Topic bytes parsed in place: borrowed name and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicRef<'a> {
    /// The topic's name, 1..=1024 bytes (arpc peers use UTF-8 text; not checked).
    pub name: &'a [u8],
    /// The published data (empty for subscribe and unsubscribe).
    pub data: &'a [u8],
    /// When the publisher made it, in nanoseconds since the Unix epoch (as the peer sent
    /// it; not checked).
    pub timestamp_ns: u64,
}

impl<'a> TopicRef<'a> {
    /// Parses topic bytes from the end; never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<TopicRef<'a>, TopicError> {
        let Some(body_len) = bytes.len().checked_sub(TOPIC_TRAILER_LEN) else {
            return Err(TopicError::TooShort { len: bytes.len() });
        };
        let (body, trailer) = bytes.split_at(body_len);
        let name_len = usize::from(u16::from_le_bytes([trailer[0], trailer[1]]));
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&trailer[2..]);
        if name_len == 0 {
            return Err(TopicError::EmptyName);
        }
        if name_len > MAX_TOPIC_NAME_LEN {
            return Err(TopicError::NameTooLong { len: name_len });
        }
        let Some(data_len) = body.len().checked_sub(name_len) else {
            return Err(TopicError::NameLongerThanBytes {
                name_len,
                available: body.len(),
            });
        };
        let (data, name) = body.split_at(data_len);
        Ok(TopicRef {
            name,
            data,
            timestamp_ns: u64::from_le_bytes(ts),
        })
    }
}

/// One topic message: name, data and the publisher's timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    /// The topic's name, 1..=1024 bytes.
    pub name: Bytes,
    /// The published data.
    pub data: Bytes,
    /// Nanoseconds since the Unix epoch, as the publisher stamped it.
    pub timestamp_ns: u64,
}

impl Topic {
    /// A topic with a checked name.
    pub fn new(
        name: impl Into<Bytes>,
        data: impl Into<Bytes>,
        timestamp_ns: u64,
    ) -> Result<Topic, TopicError> {
        let name = name.into();
        check_topic_name(&name)?;
        Ok(Topic {
            name,
            data: data.into(),
            timestamp_ns,
        })
    }

    /// Parses topic bytes; name and data share `bytes` (no copy).
    pub fn decode(bytes: &Bytes) -> Result<Topic, TopicError> {
        let parsed = TopicRef::parse(bytes)?;
        let data_len = parsed.data.len();
        let name_end = data_len + parsed.name.len();
        Ok(Topic {
            name: bytes.slice(data_len..name_end),
            data: bytes.slice(..data_len),
            timestamp_ns: parsed.timestamp_ns,
        })
    }

    /// The name as text, if it is UTF-8 (it is for every arpc peer).
    pub fn name_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.name).ok()
    }

    /// Bytes [`Topic::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        self.data.len() + self.name.len() + TOPIC_TRAILER_LEN
    }

    /// Appends the topic bytes to `dst`. Refuses a name out of 1..=1024 bytes (possible
    /// only if the public fields were set by hand).
    pub fn encode_to(&self, dst: &mut BytesMut) -> Result<(), TopicError> {
        check_topic_name(&self.name)?;
        dst.reserve(self.encoded_len());
        dst.put_slice(&self.data);
        dst.put_slice(&self.name);
        // Checked above: the length fits a u16.
        dst.put_u16_le(self.name.len() as u16);
        dst.put_u64_le(self.timestamp_ns);
        Ok(())
    }

    /// The topic bytes in a buffer of their own.
    pub fn encode(&self) -> Result<Bytes, TopicError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode_to(&mut buf)?;
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `"hi" | "news" | 04 00 | 2a 00 00 00 00 00 00 00`, built by hand.
    const GOLDEN: &[u8] = &[
        b'h', b'i', b'n', b'e', b'w', b's', 0x04, 0x00, 0x2a, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn decodes_and_encodes_hand_built_bytes() {
        let t = Topic::decode(&Bytes::from_static(GOLDEN)).unwrap();
        assert_eq!(&t.name[..], b"news");
        assert_eq!(&t.data[..], b"hi");
        assert_eq!(t.timestamp_ns, 42);
        assert_eq!(t.name_str(), Some("news"));
        let built = Topic::new("news", "hi", 42).unwrap();
        assert_eq!(&built.encode().unwrap()[..], GOLDEN);
        assert_eq!(built.encoded_len(), GOLDEN.len());
        // Subscribe bytes: no data, a timestamp of all bits.
        let sub = Topic::new("a", Bytes::new(), u64::MAX).unwrap();
        assert_eq!(
            &sub.encode().unwrap()[..],
            &[b'a', 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn every_truncation_is_refused_or_reparsed_without_panicking() {
        // Dropping bytes from the front eats the data and then the name.
        for cut in 0..=GOLDEN.len() {
            let tail = &GOLDEN[cut..];
            let parsed = TopicRef::parse(tail);
            match cut {
                0..=2 => assert_eq!(parsed.unwrap().name, b"news"),
                3..=6 => assert_eq!(
                    parsed,
                    Err(TopicError::NameLongerThanBytes {
                        name_len: 4,
                        available: 6 - cut
                    })
                ),
                _ => assert_eq!(
                    parsed,
                    Err(TopicError::TooShort {
                        len: GOLDEN.len() - cut
                    })
                ),
            }
        }
        // Dropping bytes from the end shifts the trailer: whatever results, no panic.
        for keep in 0..GOLDEN.len() {
            let r = TopicRef::parse(&GOLDEN[..keep]);
            if keep < TOPIC_TRAILER_LEN {
                assert_eq!(r, Err(TopicError::TooShort { len: keep }));
            } else {
                assert!(r.is_err(), "{keep}: {r:?}");
            }
        }
    }

    #[test]
    fn name_lengths_out_of_range_are_refused() {
        let mut zero = b"data".to_vec();
        zero.extend_from_slice(&[0, 0]);
        zero.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(TopicRef::parse(&zero), Err(TopicError::EmptyName));
        let mut long = vec![b'x'; 2000];
        long.extend_from_slice(&1025u16.to_le_bytes());
        long.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(
            TopicRef::parse(&long),
            Err(TopicError::NameTooLong { len: 1025 })
        );
        assert_eq!(Topic::new("", "", 0), Err(TopicError::EmptyName));
        assert_eq!(
            Topic::new(vec![b'n'; 1025], "", 0),
            Err(TopicError::NameTooLong { len: 1025 })
        );
        let max = Topic::new(vec![b'n'; 1024], "d", 1).unwrap();
        assert_eq!(Topic::decode(&max.encode().unwrap()).unwrap(), max);
        let forged = Topic {
            name: Bytes::new(),
            data: Bytes::new(),
            timestamp_ns: 0,
        };
        assert_eq!(forged.encode(), Err(TopicError::EmptyName));
        for e in [
            TopicError::TooShort { len: 3 },
            TopicError::EmptyName,
            TopicError::NameTooLong { len: 2000 },
            TopicError::NameLongerThanBytes {
                name_len: 9,
                available: 2,
            },
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    proptest! {
        #[test]
        fn round_trips(
            name in proptest::collection::vec(any::<u8>(), 1..=MAX_TOPIC_NAME_LEN),
            data in proptest::collection::vec(any::<u8>(), 0..512),
            ts in any::<u64>(),
        ) {
            let t = Topic::new(name, data, ts).unwrap();
            let bytes = t.encode().unwrap();
            prop_assert_eq!(bytes.len(), t.encoded_len());
            prop_assert_eq!(Topic::decode(&bytes).unwrap(), t);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(t) = TopicRef::parse(&bytes) {
                prop_assert_eq!(t.data.len() + t.name.len() + TOPIC_TRAILER_LEN, bytes.len());
            }
        }
    }
}
