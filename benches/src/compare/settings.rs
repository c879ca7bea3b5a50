//! The load every server is given and the CPUs the two sides are pinned to, plus parsing helpers
//! and the open-files check a run with many connections needs first.

use std::time::Duration;

use serde::Serialize;

/// The load loadgen applies to each server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadShape {
    pub conns: usize,
    pub per_conn: usize,
    pub payload_bytes: usize,
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    #[serde(serialize_with = "as_seconds")]
    pub warmup: Duration,
    /// Open loop: requests/s over all connections (`loadgen --rate`), `per_conn` then capping
    /// the requests in flight per connection; `None` for the closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// The CPUs the server and loadgen each run on, one apiece so neither steals from the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pinning {
    pub server_cpu: usize,
    pub loadgen_cpu: usize,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(d.as_secs_f64())
}

/// Formats a duration the way loadgen parses it, exactly to the millisecond.
pub fn loadgen_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Fails early, with the fix, when the open-files limit cannot hold `connections` descriptors
/// (plus a margin for everything else a process opens).
pub fn check_descriptors(connections: usize) -> Result<(), String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < connections + 100 => Err(format!(
            "the open-files limit is {soft}, under the {connections} descriptors needed plus 100 (one per connection): raise the hard limit (`ulimit -Hn`, /etc/security/limits.conf) or ask for fewer (--idle-conns, --matrix-loads)"
        )),
        _ => Ok(()),
    }
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the Unix epoch, in UTC.
pub fn utc_timestamp(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let second_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "19700101T000000Z");
        // 2024-02-29 23:59:59 UTC: a leap day.
        assert_eq!(utc_timestamp(1_709_251_199), "20240229T235959Z");
        assert_eq!(utc_timestamp(1_735_689_600), "20250101T000000Z");
    }
}
