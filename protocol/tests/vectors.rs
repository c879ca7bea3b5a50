//! The wire vectors of `tests/wire-vectors.json`, the one file both this codec's tests and the
//! Python client's (`clients/python/tests/test_codec.py`) read, so the two codecs are held
//! to the same bytes: each frame decodes to its fields (inflated, metadata taken off) and
//! plain ones encode back to their bytes; each rejected header fails with the rule named.
use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::gzip::decompress_frame;
use ringrpc_protocol::metadata::{Metadata, append_metadata, split_metadata, take_metadata};
use ringrpc_protocol::{
    Command, DEFAULT_MAX_BODY, DecodeError, Flags, Frame, HEADER_LEN, Header, Topic, TopicRef,
    parse_frame_any,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("wire-vectors.json is JSON")
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().unwrap_or_else(|| panic!("{key} missing"))
}

fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex {hex}");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn number(v: &Value, key: &str) -> u64 {
    match &v[key] {
        Value::String(s) => s.parse().unwrap(),
        n => n.as_u64().unwrap_or_else(|| panic!("{key} missing in {v}")),
    }
}

fn max_body(v: &Value) -> u32 {
    v.get("max_body")
        .map_or(DEFAULT_MAX_BODY, |n| n.as_u64().unwrap() as u32)
}

fn command(n: u64) -> Command {
    Command::from_bits(n as u8).expect("a known command")
}

fn metadata_of(v: &Value) -> Option<Metadata> {
    let entries = v.get("metadata")?.as_array()?;
    let mut md = Metadata::new();
    for e in entries {
        let key = e[0].as_str().unwrap();
        md.insert(key, unhex(e[1].as_str().unwrap())).unwrap();
    }
    Some(md)
}

#[test]
fn every_vector_frame_decodes_to_its_fields() {
    let v = vectors();
    let frames = list(&v, "frames");
    assert!(frames.len() >= 19, "only {} frames", frames.len());
    for f in frames {
        let name = text(f, "name");
        let raw = unhex(text(f, "hex"));
        let mut inflated = None;
        let (frame, used) = parse_frame_any(&raw, DEFAULT_MAX_BODY, &mut inflated)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete"));
        assert_eq!(used, raw.len(), "{name}");
        let h = frame.header;
        assert_eq!(h.cmd as u64, number(f, "cmd"), "{name}");
        assert_eq!(h.seq, number(f, "seq"), "{name}");
        assert_eq!(frame.method, text(f, "method").as_bytes(), "{name}");
        assert_eq!(u64::from(h.flags.0), number(f, "flag"), "{name}");
        assert_eq!(
            h.stream_local,
            f["stream_local"].as_bool().unwrap(),
            "{name}"
        );
        assert_eq!(h.stream_eof, f["stream_eof"].as_bool().unwrap(), "{name}");
        let (payload, md) =
            take_metadata(&h, frame.payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(payload, &unhex(text(f, "payload"))[..], "{name}");
        assert_eq!(md, metadata_of(f), "{name}");
        let cleared = h.user_flags & !0x01;
        assert_eq!(u64::from(cleared), number(f, "user_flags"), "{name}");
        if let Some(plain) = f.get("plain") {
            assert_eq!(
                decompress_frame(&raw, DEFAULT_MAX_BODY).unwrap()[..],
                unhex(plain.as_str().unwrap())[..],
                "{name}"
            );
        }
    }
}

#[test]
fn every_plain_vector_frame_encodes_to_its_bytes() {
    let v = vectors();
    for f in list(&v, "frames") {
        let name = text(f, "name");
        let wanted = unhex(text(f, "hex"));
        if f.get("plain").is_some() {
            continue; // gzip output differs between encoders; decoding is checked above
        }
        let mut frame = Frame::new(
            command(number(f, "cmd")),
            Flags(number(f, "flag") as u8),
            number(f, "seq"),
            Bytes::copy_from_slice(text(f, "method").as_bytes()),
            Bytes::from(unhex(text(f, "payload"))),
        );
        frame.header.user_flags = number(f, "user_flags") as u8;
        frame.header.stream_local = f["stream_local"].as_bool().unwrap();
        frame.header.stream_eof = f["stream_eof"].as_bool().unwrap();
        let mut out = BytesMut::from(&frame.to_bytes()[..]);
        if let Some(md) = metadata_of(f) {
            append_metadata(&mut out, &md).unwrap();
        }
        assert_eq!(out[..], wanted[..], "{name}");
    }
}

fn rule(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::UnknownCommand(_) => "unknown_command",
        DecodeError::BodyTooLarge { .. } => "body_too_large",
        DecodeError::BadMethodLen { .. } => "bad_method_len",
        DecodeError::ControlFrameWithBody { .. } => "control_frame_with_body",
        DecodeError::MethodLongerThanBody { .. } => "method_longer_than_body",
        DecodeError::Gzip(_) => "gzip",
    }
}

#[test]
fn every_rejected_vector_fails_with_its_rule() {
    let v = vectors();
    let rejected = list(&v, "rejected");
    assert!(rejected.len() >= 17, "only {} rejected", rejected.len());
    for r in rejected {
        let name = text(r, "name");
        let raw = unhex(text(r, "hex"));
        let limit = max_body(r);
        let mut inflated = None;
        let err = match parse_frame_any(&raw, limit, &mut inflated) {
            Err(e) => e,
            Ok(outcome) => panic!("{name}: accepted ({})", outcome.is_some()),
        };
        assert_eq!(rule(&err), text(r, "error"), "{name}: {err}");
        // Plain frames are refused from the 16 header bytes alone.
        if raw[4] & 0x80 == 0 {
            let head: &[u8; HEADER_LEN] = raw[..HEADER_LEN].try_into().unwrap();
            assert_eq!(Header::parse(head, limit), Err(err), "{name}");
        }
    }
}

#[test]
fn topic_vectors_decode_and_encode() {
    let v = vectors();
    for t in list(&v, "topics") {
        let raw = unhex(text(t, "hex"));
        let parsed = TopicRef::parse(&raw).unwrap();
        assert_eq!(parsed.name, text(t, "topic").as_bytes());
        assert_eq!(parsed.data, &unhex(text(t, "data"))[..]);
        assert_eq!(parsed.timestamp_ns, number(t, "timestamp"));
        let topic = Topic::new(
            text(t, "topic").as_bytes().to_vec(),
            unhex(text(t, "data")),
            number(t, "timestamp"),
        )
        .unwrap();
        assert_eq!(topic.encode().unwrap()[..], raw[..]);
    }
    for t in list(&v, "bad_topics") {
        let raw = unhex(text(t, "hex"));
        assert!(
            TopicRef::parse(&raw).is_err(),
            "{} accepted",
            text(t, "name")
        );
    }
}

#[test]
fn bad_metadata_vectors_are_refused() {
    let v = vectors();
    let bad = list(&v, "bad_metadata");
    assert!(bad.len() >= 9);
    for m in bad {
        let payload = unhex(text(m, "payload"));
        assert!(
            split_metadata(&payload).is_err(),
            "{} accepted",
            text(m, "name")
        );
    }
}
