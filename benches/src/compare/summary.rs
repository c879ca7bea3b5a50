//! Each server's runs over the rounds, the median run chosen from them, and `summary.json`.

use std::path::PathBuf;

use serde::Serialize;

use super::loadgen_report::LoadgenReport;
use super::machine::Machine;
use super::settings::{LoadShape, Pinning};
use super::targets::TargetResult;

/// What one run produced.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Measured(LoadgenReport),
    /// Why no figures came out (loadgen's stderr tail, a server that never listened, ...).
    Failed(String),
}

/// One server run once, in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// 1-based.
    pub round: usize,
    /// Where loadgen was told to write its JSON.
    pub json_path: PathBuf,
    pub outcome: RunOutcome,
}

impl RunRecord {
    pub fn report(&self) -> Option<&LoadgenReport> {
        match &self.outcome {
            RunOutcome::Measured(report) => Some(report),
            RunOutcome::Failed(_) => None,
        }
    }

    pub fn failure(&self) -> Option<&str> {
        match &self.outcome {
            RunOutcome::Measured(_) => None,
            RunOutcome::Failed(why) => Some(why),
        }
    }
}

/// One server's runs, in round order.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerResult {
    pub name: String,
    pub runs: Vec<RunRecord>,
}

impl ServerResult {
    /// The measured run whose requests/s is the median of the measured runs.
    pub fn median_run(&self) -> Option<&RunRecord> {
        let measured: Vec<&RunRecord> = self.runs.iter().filter(|r| r.report().is_some()).collect();
        let rates: Vec<f64> = measured
            .iter()
            .filter_map(|r| r.report().map(|report| report.requests_per_second))
            .collect();
        median_index(&rates).map(|i| measured[i])
    }

    /// The median run's report.
    pub fn median(&self) -> Option<&LoadgenReport> {
        self.median_run().and_then(RunRecord::report)
    }

    /// Why the first failed run failed.
    pub fn first_failure(&self) -> Option<&str> {
        self.runs.iter().find_map(RunRecord::failure)
    }
}

/// Index in `values` of their median. With an even count it is the lower of the two middle
/// values: a figure that was actually measured, and never the flattering one.
pub fn median_index(values: &[f64]) -> Option<usize> {
    if values.is_empty() {
        return None;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    Some(order[(values.len() - 1) / 2])
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[7.0]), Some(0));
        assert_eq!(median_index(&[300.0, 100.0, 200.0]), Some(2));
        assert_eq!(median_index(&[400.0, 100.0, 300.0, 200.0]), Some(3));
        // Ties keep round order, so the choice is deterministic.
        assert_eq!(median_index(&[5.0, 5.0, 5.0]), Some(1));
    }
}
