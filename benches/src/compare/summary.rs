//! `summary.json`: each server's rounds with their figures, the median run's figures, the
//! load, machine and pinning, and the target verdicts.

use std::path::PathBuf;

use serde::Serialize;

use super::loadgen_report::LoadgenReport;
use super::machine::Machine;
pub use super::results::{RunOutcome, RunRecord, ServerResult, median_index};
use super::settings::{LoadShape, Pinning};
use super::targets::TargetResult;

/// The figures of one run that the table and `summary.json` show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFigures {
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
    pub server_cpu_us_per_request: Option<f64>,
    pub loadgen_cpu_us_per_request: Option<f64>,
}

impl From<&LoadgenReport> for RunFigures {
    fn from(report: &LoadgenReport) -> RunFigures {
        let l = &report.latency_us;
        RunFigures {
            requests_per_second: report.requests_per_second,
            p50_us: l.p50,
            p90_us: l.p90,
            p99_us: l.p99,
            p99_9_us: l.p99_9,
            p99_99_us: l.p99_99,
            max_us: l.max,
            server_cpu_us_per_request: report.server_cpu_us_per_request,
            loadgen_cpu_us_per_request: report.cpu_us_per_request,
        }
    }
}

/// One run in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundSummary {
    pub round: usize,
    pub json: PathBuf,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<RunFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One server in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSummary {
    pub name: String,
    pub rounds: Vec<RoundSummary>,
    /// The round whose requests/s is the median; `None` when every round failed.
    pub median_round: Option<usize>,
    pub median: Option<RunFigures>,
}

impl From<&ServerResult> for ServerSummary {
    fn from(result: &ServerResult) -> ServerSummary {
        let median_run = result.median_run();
        ServerSummary {
            name: result.name.clone(),
            rounds: result
                .runs
                .iter()
                .map(|run| RoundSummary {
                    round: run.round,
                    json: run.json_path.clone(),
                    ok: run.report().is_some(),
                    figures: run.report().map(RunFigures::from),
                    failure: run.failure().map(str::to_owned),
                })
                .collect(),
            median_round: median_run.map(|run| run.round),
            median: median_run.and_then(RunRecord::report).map(RunFigures::from),
        }
    }
}

/// Everything `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryFile {
    pub command_line: String,
    pub machine: Machine,
    pub load: LoadShape,
    pub pinning: Pinning,
    pub rounds: usize,
    pub servers: Vec<ServerSummary>,
    pub targets: Vec<TargetResult>,
}

impl SummaryFile {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary serialises: numbers, strings, paths")
            + "\n"
    }
}
