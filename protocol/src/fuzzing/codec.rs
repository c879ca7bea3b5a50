//! The fuzz checks of the two coders, shared by the `metadata` and `gzip` cargo-fuzz targets
//! and the stable corpus replay (protocol/tests/corpus.rs). Each asserts that nothing
//! panics, that a failure says why, and that whatever decodes re-encodes to an equivalent
//! value.

use bytes::{Bytes, BytesMut};

use super::MAX_BODY_CHOICES;
use crate::gzip::{GzipError, USER_FLAG_GZIP, compress_frame, decompress_frame};
use crate::metadata::{
    MAX_METADATA_LEN, Metadata, MetadataError, USER_FLAG_METADATA, append_metadata, split_metadata,
    strip_metadata, take_metadata,
};
use crate::{Command, Flags, HEADER_LEN, parse_frame, write_frame};

/// The `metadata` fuzz check. `data` is read three ways: as a payload that ends with a
/// block ([`split_metadata`]), as the payload of a Request whose metadata bit is set
/// ([`take_metadata`], [`strip_metadata`]), and as a whole frame ([`strip_metadata`]).
/// Whatever decodes must re-encode to exactly the bytes it came from; every path must agree.
/// Returns what the first reading gave.
///
/// # Panics
/// On any violation: that is the finding.
pub fn check_metadata(data: &[u8]) -> Result<Metadata, MetadataError> {
    let split = split_metadata(data);
    match &split {
        Ok((rest, md)) => {
            assert!(md.encoded_len() <= MAX_METADATA_LEN);
            assert_eq!(rest.len() + md.encoded_len(), data.len());
            assert_eq!(*rest, &data[..rest.len()]);
            let mut again = BytesMut::from(*rest);
            md.encode_block(&mut again);
            assert_eq!(&again[..], data, "metadata does not re-encode to its bytes");
            let mut rebuilt = Metadata::new();
            for (key, value) in md.iter() {
                assert_eq!(rebuilt.insert(key, Bytes::copy_from_slice(value)), Ok(None));
            }
            assert_eq!(
                &rebuilt, md,
                "inserting the decoded entries gives another map"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // The same bytes as the payload of a Request carrying the metadata bit.
    let mut frame = BytesMut::new();
    write_frame(
        &mut frame,
        Command::Request,
        Flags::default(),
        USER_FLAG_METADATA,
        1,
        b"/m",
        data,
    );
    let wire = frame.clone();
    let (frame_ref, _) = parse_frame(&wire, u32::MAX)
        .expect("a valid header")
        .expect("a whole frame");
    let taken = take_metadata(&frame_ref.header, frame_ref.payload);
    assert_eq!(
        taken
            .clone()
            .map(|(rest, md)| (rest, md.expect("the bit is set"))),
        split.clone(),
        "take_metadata and split_metadata disagree"
    );
    match strip_metadata(&mut frame) {
        Ok(stripped) => {
            let md = stripped.expect("the bit is set");
            assert_eq!(Ok(&md), split.as_ref().map(|(_, md)| md));
            let mut plain = BytesMut::new();
            let rest = &split.as_ref().expect("agreed above").0;
            write_frame(
                &mut plain,
                Command::Request,
                Flags::default(),
                0,
                1,
                b"/m",
                rest,
            );
            assert_eq!(frame, plain, "strip_metadata left the wrong frame");
            append_metadata(&mut frame, &md).expect("a frame just stripped takes its block");
            assert_eq!(frame, wire, "append_metadata does not undo strip_metadata");
        }
        Err(e) => {
            assert_eq!(Err(e), split.clone().map(|(_, md)| md));
            assert_eq!(frame, wire, "a failed strip changed the frame");
        }
    }

    // The bytes as a whole frame.
    let mut whole = BytesMut::from(data);
    match strip_metadata(&mut whole) {
        Ok(Some(md)) => {
            assert!(whole.len() < data.len());
            append_metadata(&mut whole, &md).expect("a frame just stripped takes its block");
            assert_eq!(
                &whole[..],
                data,
                "append_metadata does not undo strip_metadata"
            );
        }
        Ok(None) => assert_eq!(&whole[..], data),
        Err(e) => {
            assert_eq!(&whole[..], data, "a failed strip changed the frame");
            assert!(!e.to_string().is_empty());
        }
    }
    split.map(|(_, md)| md)
}

/// The `gzip` fuzz check. Byte 0 picks the body limit (bits 0..=1, an index into
/// [`MAX_BODY_CHOICES`]) and the deflate level (the rest, modulo 10); the other bytes are a
/// frame. It is inflated as it is; whatever inflates must respect the limit and, compressed
/// again, inflate to the same frame. Then the bytes are made a plain frame (`body_len`
/// fixed, bit 7 cleared) and must survive compression unchanged. Returns what the first
/// reading gave.
///
/// # Panics
/// On any violation: that is the finding.
pub fn check_gzip(data: &[u8]) -> Result<Bytes, GzipError> {
    let Some((&control, frame)) = data.split_first() else {
        return decompress_frame(&[], 0);
    };
    let max_body = MAX_BODY_CHOICES[usize::from(control & 0b11)];
    let level = u32::from(control >> 2) % 10;

    let inflated = decompress_frame(frame, max_body);
    match &inflated {
        Ok(plain) => {
            assert!(plain.len() >= HEADER_LEN);
            let body_len = u32::from_le_bytes([plain[0], plain[1], plain[2], plain[3]]);
            assert_eq!(body_len as usize, plain.len() - HEADER_LEN);
            assert!(body_len <= max_body, "inflated past the limit");
            assert_eq!(plain[4], frame[4] & !USER_FLAG_GZIP);
            // The inner header is the peer's business; parsing it must only not panic.
            let _ = parse_frame(plain, max_body);
            if let Some(again) = compress_frame(plain, 0, level) {
                assert!(again.len() < plain.len());
                assert_eq!(decompress_frame(&again, max_body).as_ref(), Ok(plain));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    if frame.len() >= HEADER_LEN {
        let mut plain = frame.to_vec();
        let body_len = u32::try_from(plain.len() - HEADER_LEN).expect("a fuzz input");
        plain[0..4].copy_from_slice(&body_len.to_le_bytes());
        plain[4] &= !USER_FLAG_GZIP;
        if let Some(packed) = compress_frame(&plain, 0, level) {
            assert!(packed.len() < plain.len());
            assert_eq!(
                decompress_frame(&packed, body_len).as_deref(),
                Ok(&plain[..]),
                "compress then decompress changed the frame"
            );
            if body_len > 0 {
                assert_eq!(
                    decompress_frame(&packed, body_len - 1),
                    Err(GzipError::TooLarge {
                        max_body: body_len - 1
                    })
                );
            }
        }
    }
    inflated
}
