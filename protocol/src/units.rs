//! Byte sizes as people write them in configuration: `parse_size("64KiB")`, `format_size(1 << 20)`.
//!
//! A configuration helper shared by the `engine` and `loadgen` command lines and the benchmark
//! tools, so every flag that takes a size accepts the same spellings; nothing on the wire uses it.
//!
//! Invariants: every multiple is binary (`k`, `K`, `KiB` and `KB` all mean 1024); a parsed
//! size is exact or refused (no fractions, no rounding, overflow is an error); whatever
//! [`format_size`] writes, [`parse_size`] reads back to the same number.
//!
//! ```
//! use ringrpc_protocol::units::{format_size, parse_size};
//!
//! assert_eq!(parse_size("64KiB"), Ok(65_536));
//! assert_eq!(parse_size("1M"), Ok(1 << 20));
//! assert_eq!(parse_size("4096"), Ok(4096));
//! assert_eq!(format_size(1 << 20), "1MiB");
//! assert_eq!(parse_size(&format_size(67_108_848)), Ok(67_108_848));
//! ```

use std::fmt;

/// The suffixes [`parse_size`] accepts, as `--help` texts list them.
pub const SIZE_SUFFIXES: &str = "B, k/KiB, M/MiB or G/GiB; binary: 1k = 1024";

/// Why a text is not a size; its message quotes the text and shows what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError(String);

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SizeError {}

/// Parses a byte size: a whole number, optionally followed (with or without a space) by
/// `B`, `k`/`K`/`KiB`/`KB`, `M`/`MiB`/`MB` or `G`/`GiB`/`GB`, any case, all binary multiples.
///
/// ```
/// use ringrpc_protocol::units::parse_size;
///
/// assert_eq!(parse_size("32"), Ok(32));
/// assert_eq!(parse_size("16k"), Ok(16_384));
/// assert_eq!(parse_size("64 KiB"), Ok(65_536));
/// assert_eq!(parse_size("1GiB"), Ok(1 << 30));
/// assert!(parse_size("-1").unwrap_err().to_string().contains("must not be negative"));
/// assert!(parse_size("1.5MiB").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(SizeError(format!("must not be negative, got {text}")));
    }
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let unit = unit.trim_start();
    let malformed = || {
        SizeError(format!(
            "must be a whole number of bytes with an optional unit ({SIZE_SUFFIXES}), e.g. 65536 or 64KiB, got {text:?}"
        ))
    };
    if digits.is_empty() {
        return Err(malformed());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(malformed()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| SizeError(format!("{text} is too large")))
}

/// Parses a size like [`parse_size`] into any integer type, refusing what does not fit it.
///
/// ```
/// use ringrpc_protocol::units::parse_size_as;
///
/// assert_eq!(parse_size_as::<u32>("1MiB"), Ok(1 << 20));
/// assert!(parse_size_as::<u32>("4GiB").is_err());
/// ```
pub fn parse_size_as<T: TryFrom<u64>>(text: &str) -> Result<T, SizeError> {
    let bytes = parse_size(text)?;
    T::try_from(bytes).map_err(|_| SizeError(format!("{text} is too large")))
}

/// Writes a byte size in the largest binary unit that divides it exactly, with no space
/// (`1MiB`, `4KiB`), else as a plain number (`67108848`); [`parse_size`] reads it back.
///
/// ```
/// use ringrpc_protocol::units::format_size;
///
/// assert_eq!(format_size(0), "0");
/// assert_eq!(format_size(4096), "4KiB");
/// assert_eq!(format_size(3 << 30), "3GiB");
/// assert_eq!(format_size(1000), "1000");
/// ```
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suffix_and_spelling() {
        for (text, want) in [
            ("0", 0),
            ("32", 32),
            ("32B", 32),
            ("32 b", 32),
            ("4k", 4096),
            ("4K", 4096),
            ("4KiB", 4096),
            ("4kb", 4096),
            (" 64 KiB ", 65_536),
            ("1m", 1 << 20),
            ("1M", 1 << 20),
            ("1MiB", 1 << 20),
            ("1MB", 1 << 20),
            ("2g", 2 << 30),
            ("2GiB", 2 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        for bad in [
            "",
            "KiB",
            "ten",
            "1.5MiB",
            "4 parsecs",
            "1TiB",
            "0x10",
            "1 2",
        ] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.contains("whole number of bytes"), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
        assert_eq!(
            parse_size("-5").unwrap_err().to_string(),
            "must not be negative, got -5"
        );
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert!(
            parse_size("17179869184GiB")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert!(
            parse_size_as::<u32>("4GiB")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert_eq!(parse_size_as::<u32>("4294967295"), Ok(u32::MAX));
    }

    #[test]
    fn format_reads_back() {
        for n in [
            0,
            1,
            1000,
            1023,
            1024,
            1536,
            4096,
            65_536,
            67_108_848,
            1 << 20,
            5 << 30,
            u64::MAX,
        ] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "{n}");
        }
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(1 << 30), "1GiB");
    }
}
