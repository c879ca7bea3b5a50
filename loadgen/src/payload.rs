//! Deterministic per-request payload bytes: an echo is checked by regenerating them from its seq.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a cheap bijective scramble.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pattern for `seq`, eight bytes at a time.
fn words(seq: u64) -> impl Iterator<Item = [u8; 8]> {
    let seed = mix(seq);
    (1u64..).map(move |k| mix(seed.wrapping_add(k.wrapping_mul(GOLDEN_GAMMA))).to_le_bytes())
}

/// Fills `dst` with the payload of request `seq`.
pub fn fill(seq: u64, dst: &mut [u8]) {
    for (chunk, word) in dst.chunks_mut(8).zip(words(seq)) {
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Index of the first byte of `actual` that differs from the payload of request `seq` of the
/// same length; `None` when they are equal.
pub fn first_difference(seq: u64, actual: &[u8]) -> Option<usize> {
    actual
        .chunks(8)
        .zip(words(seq))
        .enumerate()
        .find_map(|(i, (chunk, word))| {
            // Whole words compare as integers: this runs once per answer, on the hot path.
            let equal = match <[u8; 8]>::try_from(chunk) {
                Ok(full) => u64::from_ne_bytes(full) == u64::from_ne_bytes(word),
                Err(_) => chunk == &word[..chunk.len()],
            };
            (!equal).then(|| {
                8 * i
                    + chunk
                        .iter()
                        .zip(word)
                        .position(|(a, b)| *a != b)
                        .unwrap_or(0)
            })
        })
}

/// Why `actual` is not the echo of request `seq` with `expected_len` payload bytes.
pub fn mismatch(seq: u64, expected_len: usize, actual: &[u8]) -> Option<String> {
    if actual.len() != expected_len {
        return Some(format!(
            "seq {seq}: expected a {expected_len}-byte payload, got {} bytes",
            actual.len()
        ));
    }
    first_difference(seq, actual).map(|at| {
        format!("seq {seq}: payload byte {at} of {expected_len} differs from what was sent")
    })
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

    #[test]
    fn wrong_length_is_a_mismatch() {
        let mut buf = [0u8; 16];
        fill(3, &mut buf);
        assert!(mismatch(3, 16, &buf[..15]).unwrap().contains("15 bytes"));
    }
}
