//! Comparing secrets: one place for the constant-time compare every password check uses.
//!
//! Invariants: a leaf module; the time a compare takes depends only on the lengths.

/// Compares in time that depends only on the lengths, so response timing does not reveal
/// how much of a guessed secret was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}
