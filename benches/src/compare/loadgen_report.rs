//! The part of loadgen's `--json` report that the comparison reads.
//!
//! Only the fields used here are declared, so loadgen may add fields without breaking this.

use serde::{Deserialize, Serialize};

/// One run as loadgen measured it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LoadgenReport {
    /// Correct answers per second of the measured window.
    pub requests_per_second: f64,
    pub latency_us: LatencyFigures,
    /// loadgen's own CPU time per answered request.
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
    /// The server's CPU time per answered request (`--server-pid`).
    #[serde(default)]
    pub server_cpu_us_per_request: Option<f64>,
    /// Cumulative latency distribution, ascending in percentile.
    #[serde(default)]
    pub percentile_spectrum: Vec<SpectrumPoint>,
    pub success: bool,
    #[serde(default)]
    pub failures: Vec<String>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LatencyFigures {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

/// One step of the percentile spectrum.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SpectrumPoint {
    pub value_us: f64,
    /// Quantile in 0..=1.
    pub percentile: f64,
    pub total_count: u64,
}

impl LoadgenReport {
    /// Parses the JSON text loadgen wrote with `--json`.
    pub fn from_json(text: &str) -> Result<LoadgenReport, serde_json::Error> {
        serde_json::from_str(text)
    }
}
