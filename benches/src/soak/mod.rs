//! The soak test's parts: a seeded PRNG, the chaos client, and parsers for what the engine and
//! loadgen report, kept apart from the `soak` binary so they can be tested without a server.

pub mod chaos;
pub mod chat;
pub mod cluster;
pub mod engine_log;
pub mod mixed;
pub mod process;
pub mod rng;

use serde::Deserialize;

/// The part of loadgen's `--json` report that the soak checks.
#[derive(Debug, Clone, Deserialize)]
pub struct LoadgenSummary {
    pub counts: LoadgenCounts,
    /// `--pattern pubsub`: what the subscribers received.
    #[serde(default)]
    pub pubsub: Option<PubsubCounts>,
    pub success: bool,
    pub requests_per_second: f64,
    #[serde(default)]
    pub failures: Vec<String>,
}

/// loadgen's pub/sub delivery outcomes.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct PubsubCounts {
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub corrupt: u64,
}

/// loadgen's request outcomes.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LoadgenCounts {
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub mismatches: u64,
    pub timeouts: u64,
    pub lost: u64,
    #[serde(default)]
    pub unexpected: u64,
    #[serde(default)]
    pub connection_failures: u64,
}

impl LoadgenSummary {
    /// Parses the JSON text loadgen wrote with `--json`.
    pub fn from_json(text: &str) -> Result<LoadgenSummary, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Why this run does not count as clean: every request settled and none failed. Empty
    /// when clean.
    pub fn problems(&self) -> Vec<String> {
        let c = &self.counts;
        let mut out = Vec::new();
        if !self.success {
            out.push(format!(
                "loadgen reported failure: {}",
                self.failures.join("; ")
            ));
        }
        let settled = c.answered + c.errors + c.mismatches + c.timeouts + c.lost;
        if c.sent != settled {
            out.push(format!(
                "loadgen accounting: sent {} != answered+errors+mismatches+timeouts+lost {settled}",
                c.sent
            ));
        }
        if c.errors + c.mismatches + c.timeouts + c.lost > 0 {
            out.push(format!(
                "loadgen failures: {} errors, {} mismatches, {} timeouts, {} lost",
                c.errors, c.mismatches, c.timeouts, c.lost
            ));
        }
        if c.sent == 0 {
            out.push("loadgen sent nothing".into());
        }
        out
    }
}

/// A process's resident memory in KiB (VmRSS from /proc/PID/status).
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_vm_rss(&text).ok_or_else(|| format!("no VmRSS line in {path}"))
}

/// The VmRSS figure (KiB) of a /proc/PID/status text.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sent: u64, answered: u64, lost: u64, success: bool) -> String {
        format!(
            r#"{{"counts": {{"sent": {sent}, "answered": {answered}, "answered_in_window": 0,
            "errors": 0, "mismatches": 0, "timeouts": 0, "lost": {lost}, "unexpected": 0,
            "late": 0, "connection_failures": 0}}, "success": {success},
            "requests_per_second": 1000.0, "failures": [], "extra": 1}}"#
        )
    }

    #[test]
    fn a_clean_report_has_no_problems_and_a_lost_request_is_one() {
        let clean = LoadgenSummary::from_json(&report(10, 10, 0, true)).unwrap();
        assert!(clean.problems().is_empty());
        let lossy = LoadgenSummary::from_json(&report(10, 9, 1, false)).unwrap();
        let problems = lossy.problems();
        assert!(
            problems.iter().any(|p| p.contains("1 lost")),
            "{problems:?}"
        );
        let unsettled = LoadgenSummary::from_json(&report(10, 9, 0, true)).unwrap();
        assert!(unsettled.problems()[0].contains("accounting"));
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tengine\nVmPeak:\t  9000 kB\nVmRSS:\t   23456 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(23456));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
