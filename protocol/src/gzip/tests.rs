use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;

use super::*;
use crate::metadata::{Metadata, USER_FLAG_METADATA, take_metadata};
use crate::{DEFAULT_MAX_BODY, Frame, parse_frame};

fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Request `/echo`, seq 2, payload `hello ` x 20, compressed by CPython 3.11's `gzip` module:
///
/// ```text
/// python3 -c 'import gzip,struct; m=b"/echo"; p=b"hello "*20;
///   inner=bytes([1,0,len(m)])+struct.pack("<Q",2)+m+p;
///   gz=gzip.compress(inner,compresslevel=9,mtime=0);
///   print((struct.pack("<I",len(gz)+5-16)+bytes([0x80])+gz).hex())'
/// ```
const PYTHON_FIXTURE: &str =
    "1c000000 80 1f8b080000000000020363646065628000fdd4e48cfc8cd49c9c7c05fa9300eb56fc8f88000000";

/// Request `/echo`, seq 7, payload `hello ` x 20, metadata `{trace: abc}` (user_flags 0x01),
/// compressed by GNU gzip 1.12 (docs/protocol.md, "Compression"):
///
/// ```text
/// python3 -c 'import sys,struct; sys.stdout.buffer.write(bytes([1,0,5])+struct.pack("<Q",7)
///   +b"/echo"+b"hello "*20+b"md\x05trace\x03\x00abc\x00\x0f")' | gzip -9n |
/// python3 -c 'import sys,struct; gz=sys.stdin.buffer.read();
///   sys.stdout.write((struct.pack("<I",len(gz)-11)+b"\x81"+gz).hex())'
/// ```
const GZIP_CLI_FIXTURE: &str = "2b000000 81 1f8b080000000000020363646065678000fdd4e48cfc8cd49c9c7c05fa93b929ac254589c9a9cc0c8949c90cfc00a7cadd8097000000";

fn hello_x20(seq: u64) -> Bytes {
    Frame::request(seq, &b"/echo"[..], "hello ".repeat(20)).to_bytes()
}

#[test]
fn reference_gzip_fixture_decodes() {
    let frame = decompress_frame(&unhex(PYTHON_FIXTURE), DEFAULT_MAX_BODY).unwrap();
    assert_eq!(frame, hello_x20(2));
}

#[test]
fn gzip_cli_fixture_with_metadata_decodes() {
    let frame = decompress_frame(&unhex(GZIP_CLI_FIXTURE), DEFAULT_MAX_BODY).unwrap();
    assert_eq!(frame[4], USER_FLAG_METADATA);
    let (frame_ref, used) = parse_frame(&frame, DEFAULT_MAX_BODY).unwrap().unwrap();
    assert_eq!(used, frame.len());
    assert_eq!(frame_ref.header.seq, 7);
    assert_eq!(frame_ref.method, b"/echo");
    let (payload, md) = take_metadata(&frame_ref.header, frame_ref.payload).unwrap();
    assert_eq!(payload, "hello ".repeat(20).as_bytes());
    let mut want = Metadata::new();
    want.insert("trace", &b"abc"[..]).unwrap();
    assert_eq!(md, Some(want));
}

#[test]
fn round_trip_at_every_level() {
    let plain = hello_x20(3);
    for level in [0, 1, 6, 9, 100] {
        let Some(packed) = compress_frame(&plain, 0, level) else {
            assert_eq!(level, 0, "stored deflate cannot shrink");
            continue;
        };
        assert!(packed.len() < plain.len());
        assert_eq!(packed[4], USER_FLAG_GZIP);
        assert_eq!(
            &packed[5..7],
            &[0x1f, 0x8b],
            "gzip magic right after user_flags"
        );
        assert_eq!(packed[..4], ((packed.len() - 16) as u32).to_le_bytes());
        assert_eq!(decompress_frame(&packed, DEFAULT_MAX_BODY).unwrap(), plain);
    }
}

#[test]
fn user_flags_other_bits_survive() {
    let mut plain = hello_x20(4).to_vec();
    plain[4] = 0x15;
    let packed = compress_frame(&plain, 0, 6).unwrap();
    assert_eq!(packed[4], 0x95);
    assert_eq!(
        &decompress_frame(&packed, DEFAULT_MAX_BODY).unwrap()[..],
        &plain[..]
    );
}

#[test]
fn only_when_smaller() {
    // Short frames and incompressible payloads grow under gzip (18 bytes of framing).
    let short = Frame::request(2, &b"/echo"[..], &b"hello"[..]).to_bytes();
    assert_eq!(compress_frame(&short, 0, 9), None);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..2000)
        .map(|_| {
            // xorshift64: incompressible enough for deflate.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let random = Frame::request(2, &b"/echo"[..], noise).to_bytes();
    assert_eq!(compress_frame(&random, 0, 9), None);
}

#[test]
fn threshold_counts_the_whole_frame_and_is_exclusive() {
    let plain = hello_x20(5);
    assert_eq!(plain.len(), 141);
    assert_eq!(compress_frame(&plain, 141, 6), None);
    assert!(compress_frame(&plain, 140, 6).is_some());
}

#[test]
fn not_whole_frames_are_not_compressed() {
    let plain = hello_x20(5);
    assert_eq!(compress_frame(&plain[..plain.len() - 1], 0, 6), None);
    assert_eq!(compress_frame(&plain[..10], 0, 6), None);
    let packed = compress_frame(&plain, 0, 6).unwrap();
    assert_eq!(compress_frame(&packed, 0, 6), None, "already compressed");
}

#[test]
fn zip_bomb_is_refused_without_inflating_it_all() {
    // 64 MiB of zeros compress to about 64 KiB.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&[1, 0, 5]).unwrap();
    encoder.write_all(&[0; 8]).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).unwrap();
    }
    let gz = encoder.finish().unwrap();
    let mut frame = ((gz.len() + 5 - 16) as u32).to_le_bytes().to_vec();
    frame.push(USER_FLAG_GZIP);
    frame.extend_from_slice(&gz);
    assert_eq!(
        decompress_frame(&frame, 4096),
        Err(GzipError::TooLarge { max_body: 4096 })
    );
    assert_eq!(
        decompress_frame(&frame, DEFAULT_MAX_BODY),
        Err(GzipError::TooLarge {
            max_body: DEFAULT_MAX_BODY
        })
    );
    // Exactly at the limit is fine.
    let plain = hello_x20(6);
    let packed = compress_frame(&plain, 0, 6).unwrap();
    let body = (plain.len() - 16) as u32;
    assert_eq!(decompress_frame(&packed, body).unwrap(), plain);
    assert_eq!(
        decompress_frame(&packed, body - 1),
        Err(GzipError::TooLarge { max_body: body - 1 })
    );
}

/// Re-frames `gz` as a compressed frame with a consistent body_len.
fn framed(gz: &[u8]) -> Vec<u8> {
    let mut frame = ((gz.len() + 5).saturating_sub(16) as u32)
        .to_le_bytes()
        .to_vec();
    frame.push(USER_FLAG_GZIP);
    frame.extend_from_slice(gz);
    frame
}

#[test]
fn truncated_and_garbage_input_is_an_error() {
    let packed = compress_frame(&hello_x20(8), 0, 6).unwrap();
    let gz = &packed[5..];
    // Every truncation of the gzip stream, re-framed so only the gzip bytes are wrong.
    for cut in 11..gz.len() {
        let frame = framed(&gz[..cut]);
        assert!(
            matches!(
                decompress_frame(&frame, DEFAULT_MAX_BODY),
                Err(GzipError::Corrupt { .. })
            ),
            "cut at {cut}"
        );
    }
    // Every truncation of the frame itself: its body_len no longer matches.
    for cut in 0..packed.len() {
        assert!(decompress_frame(&packed[..cut], DEFAULT_MAX_BODY).is_err());
    }
    // A flipped bit anywhere in the gzip bytes: caught by the header, deflate or CRC checks.
    for i in 0..gz.len() {
        let mut bad = gz.to_vec();
        bad[i] ^= 0x10;
        if let Ok(frame) = decompress_frame(&framed(&bad), DEFAULT_MAX_BODY) {
            // Bits gzip does not check (MTIME, XFL, OS, a FLG bit it ignores) may flip.
            assert_eq!(frame, hello_x20(8), "byte {i}");
        }
    }
    let mut trailing = gz.to_vec();
    trailing.extend_from_slice(b"garbage!garbage!garbage!");
    assert!(matches!(
        decompress_frame(&framed(&trailing), DEFAULT_MAX_BODY),
        Err(GzipError::Corrupt { .. })
    ));
    assert!(matches!(
        decompress_frame(&framed(&[0u8; 40]), DEFAULT_MAX_BODY),
        Err(GzipError::Corrupt { .. })
    ));
}

#[test]
fn frame_level_errors() {
    assert_eq!(
        decompress_frame(b"short", 100),
        Err(GzipError::NotAFrame { len: 5 })
    );
    let plain = hello_x20(9);
    assert_eq!(
        decompress_frame(&plain, DEFAULT_MAX_BODY),
        Err(GzipError::NotCompressed)
    );
    let mut longer = compress_frame(&plain, 0, 6).unwrap().to_vec();
    longer.push(0);
    assert!(matches!(
        decompress_frame(&longer, DEFAULT_MAX_BODY),
        Err(GzipError::LengthMismatch { .. })
    ));
    // A valid gzip stream of fewer than 11 bytes cannot hold cmd..seq.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(b"tiny").unwrap();
    let frame = framed(&encoder.finish().unwrap());
    assert_eq!(
        decompress_frame(&frame, DEFAULT_MAX_BODY),
        Err(GzipError::InnerTooShort { len: 4 })
    );
    for e in [
        GzipError::NotCompressed,
        GzipError::InnerTooShort { len: 4 },
        GzipError::TooLarge { max_body: 1 },
    ] {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn concatenated_members_inflate_like_go() {
    let plain = hello_x20(10);
    let mut gz = Vec::new();
    for part in [&plain[5..40], &plain[40..]] {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(part).unwrap();
        gz.extend_from_slice(&encoder.finish().unwrap());
    }
    assert_eq!(
        decompress_frame(&framed(&gz), DEFAULT_MAX_BODY).unwrap(),
        plain
    );
}

#[test]
fn is_compressed_reads_byte_four_only() {
    assert!(!is_compressed(b"\0\0\0\0"));
    assert!(is_compressed(b"\0\0\0\0\x80"));
    assert!(!is_compressed(&hello_x20(1)));
}

proptest! {
    #[test]
    fn round_trips(
        user_flags in any::<u8>(),
        method in proptest::collection::vec(any::<u8>(), 1..=127),
        payload in proptest::collection::vec(0u8..4, 0..2000),
        level in 0u32..=9,
    ) {
        let mut plain = Frame::request(11, method, payload).to_bytes().to_vec();
        plain[4] = user_flags & !USER_FLAG_GZIP;
        if let Some(packed) = compress_frame(&plain, 0, level) {
            prop_assert!(packed.len() < plain.len());
            let body = (plain.len() - 16) as u32;
            prop_assert_eq!(&decompress_frame(&packed, body).unwrap()[..], &plain[..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(gz in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decompress_frame(&framed(&gz), 1000);
        let mut with_magic = vec![0x1f, 0x8b, 8];
        with_magic.extend_from_slice(&gz);
        let _ = decompress_frame(&framed(&with_magic), 1000);
    }
}
