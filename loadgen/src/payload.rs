//! Deterministic per-request payload bytes: an echo is checked by comparing it with what
//! request `seq` sent, regenerated from `seq` alone.
//!
//! Request `seq`'s payload is its seq (8 bytes little-endian, cut to the payload's length)
//! followed by the rest of a window of one fixed pseudo-random pattern, starting at an offset
//! derived from `seq`. So two requests' payloads differ in their first bytes, a shifted,
//! truncated or corrupted echo differs from the pattern, and making or checking a payload is
//! a copy or a `memcmp` of pattern bytes — never a per-byte computation on the hot path.

use std::sync::OnceLock;

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
/// Window starts are spread over this many offsets.
const SPREAD: usize = 64 * 1024;
/// Payloads up to this long are one contiguous window of the pattern ([`window`]).
pub const CONTIGUOUS_MAX: usize = 1024 * 1024;
/// Bytes of the pattern: every window of up to [`CONTIGUOUS_MAX`] from any start fits.
const PATTERN_LEN: usize = CONTIGUOUS_MAX + SPREAD;

/// SplitMix64's finaliser: a cheap bijective scramble.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pattern, made once per process.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (1u64..)
            .flat_map(|k| mix(k.wrapping_mul(GOLDEN_GAMMA)).to_le_bytes())
            .take(PATTERN_LEN)
            .collect()
    })
}

/// Where request `seq`'s window starts.
fn offset(seq: u64) -> usize {
    (mix(seq) % SPREAD as u64) as usize
}

/// Request `seq`'s payload of `len` bytes before [`stamp`]: a window of the pattern, or
/// `None` when `len` is over [`CONTIGUOUS_MAX`] (use [`fill`]).
pub fn window(seq: u64, len: usize) -> Option<&'static [u8]> {
    let at = offset(seq);
    pattern().get(at..at + len)
}

/// Writes `seq` over the first bytes of a payload copied from [`window`], completing it.
pub fn stamp(seq: u64, payload: &mut [u8]) {
    let n = payload.len().min(8);
    payload[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// The pattern bytes of request `seq`'s payload from byte `from` on, as consecutive slices
/// (the pattern repeats past its end for payloads over [`CONTIGUOUS_MAX`]).
fn pattern_from(seq: u64, from: usize) -> impl Iterator<Item = &'static [u8]> {
    let pattern = pattern();
    let mut at = (offset(seq) + from) % PATTERN_LEN;
    std::iter::from_fn(move || {
        let piece = &pattern[at..];
        at = 0;
        Some(piece)
    })
}

/// Fills `dst` with the payload of request `seq`.
pub fn fill(seq: u64, dst: &mut [u8]) {
    let mut rest = &mut dst[..];
    for piece in pattern_from(seq, 0) {
        if rest.is_empty() {
            break;
        }
        let n = piece.len().min(rest.len());
        rest[..n].copy_from_slice(&piece[..n]);
        rest = &mut rest[n..];
    }
    stamp(seq, dst);
}

/// Index of the first byte of `actual` that differs from the payload of request `seq` of the
/// same length; `None` when they are equal.
pub fn first_difference(seq: u64, actual: &[u8]) -> Option<usize> {
    first_difference_from(seq, 0, actual)
}

/// As [`first_difference`] for `actual` = bytes `from..from + actual.len()` of the payload
/// (an answer checked piece by piece as it arrives); the index returned is the payload's.
pub fn first_difference_from(seq: u64, from: usize, actual: &[u8]) -> Option<usize> {
    let first_of = |a: &[u8], b: &[u8]| a.iter().zip(b).position(|(x, y)| x != y);
    // The stamp: payload bytes 0..8.
    let stamp = seq.to_le_bytes();
    let n = actual.len().min(8usize.saturating_sub(from));
    if n > 0 && actual[..n] != stamp[from..from + n] {
        return first_of(&actual[..n], &stamp[from..]).map(|i| from + i);
    }
    let mut at = n;
    for piece in pattern_from(seq, from + n) {
        if at == actual.len() {
            return None;
        }
        let len = piece.len().min(actual.len() - at);
        let (got, want) = (&actual[at..at + len], &piece[..len]);
        if got != want {
            return first_of(got, want).map(|i| from + at + i);
        }
        at += len;
    }
    None
}
/// Why `actual` is not the echo of request `seq` with `expected_len` payload bytes.
pub fn mismatch(seq: u64, expected_len: usize, actual: &[u8]) -> Option<String> {
    if actual.len() != expected_len {
        return Some(format!(
            "seq {seq}: expected a {expected_len}-byte payload, got {} bytes",
            actual.len()
        ));
    }
    first_difference(seq, actual).map(|at| difference_message(seq, at, expected_len))
}

/// The mismatch report for payload byte `at` of request `seq`'s `len` bytes.
pub fn difference_message(seq: u64, at: usize, len: usize) -> String {
    format!("seq {seq}: payload byte {at} of {len} differs from what was sent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_of_own_payload_matches() {
        for len in [0, 1, 7, 8, 9, 32, 1000] {
            let mut buf = vec![0; len];
            fill(42, &mut buf);
            assert_eq!(mismatch(42, len, &buf), None);
        }
    }

    #[test]
    fn payload_varies_per_request() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill(1, &mut a);
        fill(2, &mut b);
        assert_ne!(a, b);
        assert!(mismatch(2, 32, &a).is_some());
    }

    #[test]
    fn every_flipped_byte_is_located() {
        let mut buf = [0u8; 21];
        fill(7, &mut buf);
        for at in 0..buf.len() {
            let mut corrupt = buf;
            corrupt[at] ^= 0x01;
            assert_eq!(first_difference(7, &corrupt), Some(at));
        }
    }

    /// Every length around the pattern's seams: a window and stamp equal fill, a payload
    /// longer than the pattern wraps, and a flipped byte anywhere is found where it is.
    #[test]
    fn windows_fill_and_long_payloads_agree_and_locate_flips() {
        for len in [
            0,
            3,
            8,
            9,
            4096,
            CONTIGUOUS_MAX,
            CONTIGUOUS_MAX + 1,
            3 * PATTERN_LEN / 2,
        ] {
            let seq = len as u64 * 7 + 1;
            let mut filled = vec![0; len];
            fill(seq, &mut filled);
            assert_eq!(first_difference(seq, &filled), None, "len {len}");
            if let Some(w) = window(seq, len) {
                let mut copy = w.to_vec();
                stamp(seq, &mut copy);
                assert_eq!(copy, filled, "len {len}");
            } else {
                assert!(len > CONTIGUOUS_MAX);
            }
            for at in [len / 3, len.saturating_sub(1), len / 2 + 5]
                .into_iter()
                .filter(|&i| i < len)
            {
                let mut corrupt = filled.clone();
                corrupt[at] ^= 0x40;
                assert_eq!(
                    first_difference(seq, &corrupt),
                    Some(at),
                    "len {len} at {at}"
                );
            }
            assert!(len < 8 || first_difference(seq + 1, &filled).is_some());
            // Checked in pieces at every offset kind: the stamp, across it, the body.
            for cut in [1, 5, 8, 9, len / 2].into_iter().filter(|&c| c < len) {
                assert_eq!(first_difference_from(seq, 0, &filled[..cut]), None);
                assert_eq!(
                    first_difference_from(seq, cut, &filled[cut..]),
                    None,
                    "{len} {cut}"
                );
                let mut corrupt = filled.clone();
                corrupt[len - 1] ^= 1;
                assert_eq!(
                    first_difference_from(seq, cut, &corrupt[cut..]),
                    Some(len - 1)
                );
            }
        }
    }

    #[test]
    fn wrong_length_is_a_mismatch() {
        let mut buf = [0u8; 16];
        fill(3, &mut buf);
        assert!(mismatch(3, 16, &buf[..15]).unwrap().contains("15 bytes"));
    }
}
