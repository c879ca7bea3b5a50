//! The fuzz check of the pub/sub topic bytes, shared by the `topic` cargo-fuzz target and the
//! stable corpus replay (protocol/tests/corpus.rs). It asserts that decoding never panics,
//! that both decoders agree, that a failure says why, and that whatever decodes re-encodes
//! to exactly the bytes it came from.

use bytes::{Bytes, BytesMut};

use crate::{MAX_TOPIC_NAME_LEN, TOPIC_TRAILER_LEN, Topic, TopicError, TopicRef, check_topic_name};

/// The `topic` fuzz check: `data` is read as topic bytes by [`TopicRef::parse`] and
/// [`Topic::decode`], which must agree. A topic that decodes must have a name of
/// 1..=[`MAX_TOPIC_NAME_LEN`] bytes, account for every byte, re-encode (by
/// [`Topic::encode`], [`Topic::encode_to`] after other bytes, and [`Topic::new`] from its
/// parts) to `data` exactly, and decode the same with bytes put in front (they only lengthen
/// the data, as the layout is read from the end). A refusal must be the one the trailer
/// calls for. Returns what [`Topic::decode`] gave.
///
/// # Panics
/// On any violation: that is the finding.
pub fn check_topic(data: &[u8]) -> Result<Topic, TopicError> {
    let borrowed = TopicRef::parse(data);
    let shared = Bytes::copy_from_slice(data);
    let decoded = Topic::decode(&shared);
    match (&borrowed, &decoded) {
        (Ok(r), Ok(t)) => {
            assert_eq!(r.name, &t.name[..], "the two decoders read different names");
            assert_eq!(r.data, &t.data[..], "the two decoders read different data");
            assert_eq!(r.timestamp_ns, t.timestamp_ns);
            check_decoded(t, data);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "the two decoders refused differently");
            assert!(!a.to_string().is_empty());
            assert_eq!(Some(*a), expected_refusal(data), "the wrong refusal");
        }
        (a, b) => panic!("TopicRef::parse gave {a:?} but Topic::decode gave {b:?}"),
    }
    decoded
}

/// The asserts on a topic decoded from `wire`.
fn check_decoded(t: &Topic, wire: &[u8]) {
    assert!(
        (1..=MAX_TOPIC_NAME_LEN).contains(&t.name.len()),
        "a name of {} bytes decoded",
        t.name.len()
    );
    assert_eq!(check_topic_name(&t.name), Ok(()));
    assert_eq!(t.encoded_len(), wire.len(), "bytes left out of the topic");
    assert_eq!(t.name_str().is_some(), std::str::from_utf8(&t.name).is_ok());
    assert_eq!(
        t.encode().as_deref(),
        Ok(wire),
        "the topic does not re-encode to its bytes"
    );
    let mut after = BytesMut::from(&b"prefix"[..]);
    t.encode_to(&mut after).expect("a decoded name is valid");
    assert_eq!(&after[..6], b"prefix", "encode_to overwrote what was there");
    assert_eq!(&after[6..], wire, "encode_to wrote other bytes");
    let rebuilt = Topic::new(t.name.clone(), t.data.clone(), t.timestamp_ns)
        .expect("a decoded name is valid");
    assert_eq!(&rebuilt, t, "Topic::new from the parts gives another topic");

    // Bytes in front belong to the data: name and timestamp stay.
    let mut longer = b"xy".to_vec();
    longer.extend_from_slice(wire);
    let again = TopicRef::parse(&longer).expect("bytes in front cannot break a topic");
    assert_eq!(again.name, &t.name[..]);
    assert_eq!(again.timestamp_ns, t.timestamp_ns);
    assert_eq!(&again.data[2..], &t.data[..]);
}

/// The error the layout calls for, from the trailer alone; `None` if the bytes are valid.
fn expected_refusal(data: &[u8]) -> Option<TopicError> {
    let Some(body) = data.len().checked_sub(TOPIC_TRAILER_LEN) else {
        return Some(TopicError::TooShort { len: data.len() });
    };
    let name_len = usize::from(u16::from_le_bytes([data[body], data[body + 1]]));
    if name_len == 0 {
        Some(TopicError::EmptyName)
    } else if name_len > MAX_TOPIC_NAME_LEN {
        Some(TopicError::NameTooLong { len: name_len })
    } else if name_len > body {
        Some(TopicError::NameLongerThanBytes {
            name_len,
            available: body,
        })
    } else {
        None
    }
}
