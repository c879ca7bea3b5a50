//! Each server's runs over the rounds ([`ServerResult`]) and the median run chosen from them:
//! what the table, the targets, the matrix and `summary.json` are all read from.
//!
//! Invariant: the median is a run that was actually measured (the lower middle one of an even
//! count), never an average.

use std::path::PathBuf;

use super::loadgen_report::LoadgenReport;

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
