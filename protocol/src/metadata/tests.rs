use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::{Frame, parse_frame};

fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn trace_abc() -> Metadata {
    let mut md = Metadata::new();
    md.insert("trace", &b"abc"[..]).unwrap();
    md
}

/// docs/protocol.md, "Metadata": `{trace: abc}` as a block.
const TRACE_BLOCK: &str = "6d64 05 7472616365 0300 616263 000f";
/// docs/protocol.md, "Metadata": Request `/echo`, payload `hello`, seq 2, with that block.
const TRACE_FRAME: &str = "19000000 01 01 00 05 0200000000000000 2f6563686f 68656c6c6f 6d64 05 7472616365 0300 616263 000f";

fn echo_frame() -> BytesMut {
    BytesMut::from(&Frame::request(2, &b"/echo"[..], &b"hello"[..]).to_bytes()[..])
}

#[test]
fn block_encodes_to_the_documented_bytes() {
    let md = trace_abc();
    let mut out = BytesMut::new();
    md.encode_block(&mut out);
    assert_eq!(&out[..], &unhex(TRACE_BLOCK)[..]);
    assert_eq!(md.encoded_len(), out.len());
    assert_eq!(Metadata::new().encoded_len(), 4);
}

#[test]
fn documented_bytes_decode() {
    let mut payload = b"hello".to_vec();
    payload.extend_from_slice(&unhex(TRACE_BLOCK));
    let (rest, md) = split_metadata(&payload).unwrap();
    assert_eq!(rest, b"hello");
    assert_eq!(md, trace_abc());
    assert_eq!(md.get("trace"), Some(&b"abc"[..]));
}

#[test]
fn append_gives_the_documented_frame_and_strip_undoes_it() {
    let mut frame = echo_frame();
    append_metadata(&mut frame, &trace_abc()).unwrap();
    assert_eq!(&frame[..], &unhex(TRACE_FRAME)[..]);

    let (frame_ref, used) = parse_frame(&frame, u32::MAX).unwrap().unwrap();
    assert_eq!(used, frame.len());
    let (payload, md) = take_metadata(&frame_ref.header, frame_ref.payload).unwrap();
    assert_eq!(payload, b"hello");
    assert_eq!(md, Some(trace_abc()));

    assert_eq!(strip_metadata(&mut frame).unwrap(), Some(trace_abc()));
    assert_eq!(frame, echo_frame());
    assert_eq!(strip_metadata(&mut frame).unwrap(), None);
    assert_eq!(frame, echo_frame());
}

#[test]
fn without_the_flag_the_payload_is_untouched() {
    let bytes = unhex(TRACE_FRAME);
    let (frame_ref, _) = parse_frame(&bytes, u32::MAX).unwrap().unwrap();
    let mut header = frame_ref.header;
    header.user_flags = 0;
    let (payload, md) = take_metadata(&header, frame_ref.payload).unwrap();
    assert_eq!(payload, frame_ref.payload);
    assert_eq!(md, None);
    header.user_flags = USER_FLAG_METADATA | crate::gzip::USER_FLAG_GZIP;
    assert_eq!(
        take_metadata(&header, frame_ref.payload),
        Err(MetadataError::Compressed)
    );
}

#[test]
fn empty_metadata_is_a_four_byte_block() {
    let mut frame = echo_frame();
    append_metadata(&mut frame, &Metadata::new()).unwrap();
    assert_eq!(&frame[frame.len() - 4..], b"md\x00\x04");
    assert_eq!(strip_metadata(&mut frame).unwrap(), Some(Metadata::new()));
    assert_eq!(frame, echo_frame());
}

#[test]
fn every_truncation_and_split_is_handled() {
    let mut md = trace_abc();
    md.insert("k", Bytes::from_static(b"")).unwrap();
    md.insert("user", vec![0xff; 300]).unwrap();
    let mut block = BytesMut::new();
    md.encode_block(&mut block);
    let mut payload = b"some payload".to_vec();
    payload.extend_from_slice(&block);
    // Cutting the end moves the trailer: never a panic, and never the full map back.
    for cut in 0..payload.len() {
        if let Ok((_, got)) = split_metadata(&payload[..cut]) {
            assert_ne!(got, md, "cut at {cut}");
        }
    }
    // Cutting the front leaves the block whole until it reaches the block.
    for cut in 0..=payload.len() {
        let got = split_metadata(&payload[cut..]);
        if cut <= payload.len() - block.len() {
            let (rest, got) = got.unwrap();
            assert_eq!(got, md);
            assert_eq!(rest, &payload[cut..payload.len() - block.len()]);
        } else {
            assert!(got.is_err(), "cut at {cut}");
        }
    }
    // A whole frame cut anywhere is not a frame.
    let mut frame = echo_frame();
    append_metadata(&mut frame, &md).unwrap();
    for cut in 0..frame.len() {
        let mut short = BytesMut::from(&frame[..cut]);
        assert!(strip_metadata(&mut short).is_err(), "cut at {cut}");
        assert_eq!(
            &short[..],
            &frame[..cut],
            "a failed strip changed the bytes"
        );
        assert!(append_metadata(&mut short, &md).is_err(), "cut at {cut}");
    }
}

#[test]
fn key_limits() {
    let mut md = Metadata::new();
    assert_eq!(md.insert("", &b"x"[..]), Err(MetadataError::EmptyKey));
    let long = "k".repeat(MAX_KEY_LEN + 1);
    assert_eq!(
        md.insert(long, &b"x"[..]),
        Err(MetadataError::KeyTooLong { len: 256 })
    );
    let max = "k".repeat(MAX_KEY_LEN);
    assert_eq!(md.insert(max.clone(), &b"x"[..]), Ok(None));
    assert!(md.insert("é", &b"x"[..]).is_ok(), "multi-byte UTF-8 keys");
    let mut block = BytesMut::new();
    md.encode_block(&mut block);
    let (_, back) = split_metadata(&block).unwrap();
    assert_eq!(back.get(&max), Some(&b"x"[..]));
    assert_eq!(back.get("é"), Some(&b"x"[..]));
}

#[test]
fn block_size_limit_is_exact() {
    // One entry with a 1-byte key: 4 (empty block) + 3 + 1 + value.
    let fits = MAX_METADATA_LEN - 4 - 3 - 1;
    let mut md = Metadata::new();
    assert_eq!(
        md.insert("k", vec![0; fits + 1]),
        Err(MetadataError::TooLarge { len: 4097 })
    );
    assert!(md.is_empty(), "a refused insert left an entry");
    md.insert("k", vec![7; fits]).unwrap();
    assert_eq!(md.encoded_len(), MAX_METADATA_LEN);
    // Replacing counts the old value out.
    assert_eq!(
        md.insert("k", vec![8; fits]).unwrap(),
        Some(vec![7; fits].into())
    );
    assert!(md.insert("j", Bytes::new()).is_err());
    let mut block = BytesMut::new();
    md.encode_block(&mut block);
    assert_eq!(split_metadata(&block).unwrap().1, md);

    // A block that declares more than the limit is refused before anything is read.
    let mut big = vec![0u8; 5000];
    big[4998..].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(
        split_metadata(&big),
        Err(MetadataError::TooLarge { len: 4097 })
    );
}

#[test]
fn insert_replaces_in_place_and_remove_works() {
    let mut md = Metadata::new();
    md.insert("a", &b"1"[..]).unwrap();
    md.insert("b", &b"2"[..]).unwrap();
    assert_eq!(
        md.insert("a", &b"3"[..]).unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    let entries: Vec<_> = md.iter().collect();
    assert_eq!(entries, [("a", &b"3"[..]), ("b", &b"2"[..])]);
    assert_eq!(md.len(), 2);
    assert_eq!(md.remove("a"), Some(Bytes::from_static(b"3")));
    assert_eq!(md.remove("a"), None);
    assert_eq!(md.get("a"), None);
    assert_eq!(md.len(), 1);
}

#[test]
fn malformed_blocks_are_refused_with_a_reason() {
    let cases: [(&str, MetadataError); 9] = [
        ("", MetadataError::NoTrailer { len: 0 }),
        ("04", MetadataError::NoTrailer { len: 1 }),
        (
            "0003",
            MetadataError::BadBlockLen {
                declared: 3,
                available: 2,
            },
        ),
        (
            "6d64 0005",
            MetadataError::BadBlockLen {
                declared: 5,
                available: 4,
            },
        ),
        ("7472 0004", MetadataError::WrongName { found: *b"tr" }),
        ("6d64 00 0005", MetadataError::EmptyKey),
        ("6d64 02 61 0006", MetadataError::Truncated { offset: 2 }),
        (
            "6d64 01 ff 0000 0008",
            MetadataError::KeyNotUtf8 { offset: 2 },
        ),
        (
            "6d64 01 61 0000 01 61 0100 62 000d",
            MetadataError::DuplicateKey { key: "a".into() },
        ),
    ];
    for (hex, want) in cases {
        let bytes = unhex(hex);
        assert_eq!(split_metadata(&bytes), Err(want.clone()), "{hex}");
        let text = want.to_string();
        assert!(!text.is_empty());
    }
    // A value length running past the trailer.
    assert_eq!(
        split_metadata(&unhex("6d64 01 61 0500 62 0009")),
        Err(MetadataError::Truncated { offset: 2 })
    );
}

#[test]
fn frames_that_cannot_take_or_give_metadata() {
    let md = trace_abc();
    let mut ping = BytesMut::from(&Frame::ping().to_bytes()[..]);
    assert_eq!(
        append_metadata(&mut ping, &md),
        Err(MetadataError::ControlFrame { cmd: Command::Ping })
    );
    let mut frame = echo_frame();
    append_metadata(&mut frame, &md).unwrap();
    let before = frame.clone();
    assert_eq!(
        append_metadata(&mut frame, &md),
        Err(MetadataError::AlreadyPresent)
    );
    assert_eq!(frame, before);

    let mut gz = echo_frame();
    gz[4] |= crate::gzip::USER_FLAG_GZIP;
    assert_eq!(
        append_metadata(&mut gz, &md),
        Err(MetadataError::Compressed)
    );
    assert_eq!(strip_metadata(&mut gz), Err(MetadataError::Compressed));

    let mut longer = echo_frame();
    longer.extend_from_slice(b"!");
    assert_eq!(
        append_metadata(&mut longer, &md),
        Err(MetadataError::LengthMismatch {
            body_len: 10,
            actual: 27
        })
    );
    let mut bad_cmd = echo_frame();
    bad_cmd[5] = 0;
    assert_eq!(
        append_metadata(&mut bad_cmd, &md),
        Err(MetadataError::Frame(DecodeError::UnknownCommand(0)))
    );
    assert_eq!(
        strip_metadata(&mut BytesMut::from(&b"short"[..])),
        Err(MetadataError::NotAFrame { len: 5 })
    );
    // Flag set but the payload holds no block: refused, bytes unchanged.
    let mut liar = echo_frame();
    liar[4] |= USER_FLAG_METADATA;
    let before = liar.clone();
    assert!(strip_metadata(&mut liar).is_err());
    assert_eq!(liar, before);
}

fn entries() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            "[a-z\u{e9}\u{4e2d}]{1,20}",
            proptest::collection::vec(any::<u8>(), 0..200),
        ),
        0..12,
    )
}

proptest! {
    #[test]
    fn round_trips_through_a_frame(
        entries in entries(),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut md = Metadata::new();
        for (k, v) in &entries {
            // Too large once the block passes 4 KiB: then the map is unchanged.
            let before = md.clone();
            if md.insert(k.clone(), v.clone()).is_err() {
                prop_assert_eq!(&md, &before);
            }
        }
        prop_assert!(md.encoded_len() <= MAX_METADATA_LEN);
        let plain = Frame::request(9, &b"/m"[..], payload.clone()).to_bytes();
        let mut frame = BytesMut::from(&plain[..]);
        append_metadata(&mut frame, &md).unwrap();
        prop_assert_eq!(frame.len(), plain.len() + md.encoded_len());
        let (frame_ref, _) = parse_frame(&frame, u32::MAX).unwrap().unwrap();
        let (rest, got) = take_metadata(&frame_ref.header, frame_ref.payload).unwrap();
        prop_assert_eq!(rest, &payload[..]);
        prop_assert_eq!(got.as_ref(), Some(&md));
        prop_assert_eq!(strip_metadata(&mut frame).unwrap(), Some(md));
        prop_assert_eq!(&frame[..], &plain[..]);
    }

    #[test]
    fn arbitrary_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok((rest, md)) = split_metadata(&data) {
            let mut again = BytesMut::from(rest);
            md.encode_block(&mut again);
            prop_assert_eq!(&again[..], &data[..]);
        }
    }
}
