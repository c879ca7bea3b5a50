//! `compare --matrix --open-load 50,90`: latency under open load. After a cell's closed-loop
//! rounds give each row its maximum (median requests/s), the row is run again at each
//! percentage of a base rate with `loadgen --rate` (latency measured from each request's
//! intended send time, so coordinated omission is corrected), in interleaved rounds, and
//! p50/p99/p99.9 are reported beside the floor's at the same percentage.
//!
//! Invariants: an open-load run uses the same server, driver, connections and in-flight cap
//! (`per_conn`) as the closed-loop row it derives from; a row without a closed-loop median
//! (or, with `--open-load-base floor`, without the floor's) gets no open-load runs.

use std::fmt::Write as _;

use serde::Serialize;

use super::drivers::same_driver;
use super::markdown::{format_rate, table_cell};
use super::matrix::{Cell, FLOOR, MatrixFile, ratio};
use super::results::{RunRecord, ServerResult};
use super::runner::Runner;
use super::servers::ServerSpec;
use super::summary::ServerSummary;

/// What the open-load percentages are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenLoadBase {
    /// Each row's own closed-loop maximum.
    Own,
    /// The floor's (same driver) closed-loop maximum, so every row runs at the same rates.
    Floor,
}

/// Comma-separated percentages of the base rate, 1 to 100, in the order given, no repeats.
pub fn parse_percents(text: &str) -> Result<Vec<u32>, String> {
    let mut percents = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.trim_end_matches('%').parse::<u32>() {
            Ok(p @ 1..=100) if !percents.contains(&p) => percents.push(p),
            Ok(1..=100) => {}
            _ => {
                return Err(format!(
                    "--open-load {item:?}: give percentages of the closed-loop maximum, 1 to 100"
                ));
            }
        }
    }
    if percents.is_empty() {
        return Err("--open-load names no percentage".into());
    }
    Ok(percents)
}

/// One row run at one percentage.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoadRow {
    /// The closed-loop row's name (`engine`, `engine@epoll`).
    pub server: String,
    pub percent: u32,
    /// Requests/s asked of loadgen.
    pub rate: f64,
    /// The runs, one per round.
    pub result: ServerResult,
}

/// A cell's open-load runs.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoadCell {
    pub cell: Cell,
    pub rows: Vec<OpenLoadRow>,
}

/// The rate `row` runs at for `percent`, from the closed-loop results of its cell.
fn rate_for(closed: &[ServerResult], row: &str, base: OpenLoadBase, percent: u32) -> Option<f64> {
    let base_row = match base {
        OpenLoadBase::Own => row.to_owned(),
        OpenLoadBase::Floor => same_driver(FLOOR, row),
    };
    let max = closed
        .iter()
        .find(|r| r.name == base_row)?
        .median()?
        .requests_per_second;
    (max > 0.0).then(|| max * f64::from(percent) / 100.0)
}

/// Runs every row of `rows` that has a base rate at each percentage, `rounds` interleaved
/// rounds; `run` runs one spec once (its name says where its files go) and logs it.
pub fn run_open_load(
    runner: &Runner,
    rows: &[&ServerSpec],
    closed: &[ServerResult],
    percents: &[u32],
    base: OpenLoadBase,
    rounds: usize,
    mut run: impl FnMut(&Runner, &ServerSpec, usize) -> RunRecord,
) -> Vec<OpenLoadRow> {
    let mut plan: Vec<(ServerSpec, Runner, OpenLoadRow)> = Vec::new();
    for spec in rows {
        for &percent in percents {
            let Some(rate) = rate_for(closed, &spec.name, base, percent) else {
                continue;
            };
            let mut open_runner = runner.clone();
            open_runner.load.rate = Some(rate);
            let mut open_spec = (*spec).clone();
            open_spec.name = format!("{}-open{percent}", spec.name);
            let row = OpenLoadRow {
                server: spec.name.clone(),
                percent,
                rate,
                result: ServerResult {
                    name: open_spec.name.clone(),
                    runs: Vec::new(),
                },
            };
            plan.push((open_spec, open_runner, row));
        }
    }
    for round in 1..=rounds {
        for (spec, open_runner, row) in &mut plan {
            let record = run(open_runner, spec, round);
            row.result.runs.push(record);
        }
    }
    plan.into_iter().map(|(_, _, row)| row).collect()
}

impl OpenLoadCell {
    fn p99(&self, server: &str, percent: u32) -> Option<f64> {
        let row = self
            .rows
            .iter()
            .find(|r| r.server == server && r.percent == percent)?;
        Some(row.result.median()?.latency_us.p99)
    }

    /// `server`'s median p99 at `percent` over the floor's (same driver, same percentage).
    pub fn p99_ratio_to_floor(&self, server: &str, percent: u32) -> Option<f64> {
        ratio(
            self.p99(server, percent),
            self.p99(&same_driver(FLOOR, server), percent),
        )
    }
}

/// One cell's open-load table.
pub fn render_open_load(open: &OpenLoadCell, base: OpenLoadBase) -> String {
    let of = match base {
        OpenLoadBase::Own => "own max",
        OpenLoadBase::Floor => "floor's max",
    };
    let mut out = format!("#### Open load, {}\n\n", open.cell.label());
    writeln!(
        out,
        "| row | % of {of} | asked req/s | answered req/s | p50 µs | p99 µs | p99.9 µs | p99 ÷ floor's p99 |"
    )
    .expect("writing to a String cannot fail");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in &open.rows {
        let figures = match row.result.median() {
            Some(report) => {
                let l = &report.latency_us;
                let vs_floor = open
                    .p99_ratio_to_floor(&row.server, row.percent)
                    .map_or_else(|| "–".into(), |v| format!("{v:.2}"));
                format!(
                    "{} | {:.1} | {:.1} | {:.1} | {vs_floor}",
                    format_rate(report.requests_per_second),
                    l.p50,
                    l.p99,
                    l.p99_9
                )
            }
            None => format!(
                "failed: {} | – | – | – | –",
                table_cell(row.result.first_failure().unwrap_or("no runs"))
            ),
        };
        writeln!(
            out,
            "| {} | {} | {} | {figures} |",
            row.server,
            row.percent,
            format_rate(row.rate)
        )
        .expect("writing to a String cannot fail");
    }
    out
}

/// One open-load row in `matrix.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenLoadRowSummary {
    pub server: String,
    pub percent: u32,
    pub rate: f64,
    pub p99_ratio_to_floor: Option<f64>,
    pub runs: ServerSummary,
}

/// One cell's open-load runs in `matrix.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenLoadCellSummary {
    #[serde(flatten)]
    pub cell: Cell,
    pub base: OpenLoadBase,
    pub rows: Vec<OpenLoadRowSummary>,
}

impl OpenLoadCellSummary {
    pub fn new(open: &OpenLoadCell, base: OpenLoadBase) -> OpenLoadCellSummary {
        OpenLoadCellSummary {
            cell: open.cell,
            base,
            rows: open
                .rows
                .iter()
                .map(|row| OpenLoadRowSummary {
                    server: row.server.clone(),
                    percent: row.percent,
                    rate: row.rate,
                    p99_ratio_to_floor: open.p99_ratio_to_floor(&row.server, row.percent),
                    runs: ServerSummary::from(&row.result),
                })
                .collect(),
        }
    }
}

/// `matrix.json`: the matrix file, plus the open-load runs when there are any.
pub fn matrix_json(file: &MatrixFile, open_load: &[OpenLoadCellSummary]) -> String {
    if open_load.is_empty() {
        return file.to_json();
    }
    #[derive(serde::Serialize)]
    struct WithOpenLoad<'a> {
        #[serde(flatten)]
        file: &'a MatrixFile,
        open_load: &'a [OpenLoadCellSummary],
    }
    serde_json::to_string_pretty(&WithOpenLoad { file, open_load })
        .expect("a matrix serialises: numbers, strings, paths")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::loadgen_report::{LatencyFigures, LoadgenReport};
    use crate::compare::matrix::MatrixLoad;
    use crate::compare::results::RunOutcome;

    fn report(rate: f64, p99: f64) -> LoadgenReport {
        LoadgenReport {
            requests_per_second: rate,
            latency_us: LatencyFigures {
                min: 1.0,
                p50: p99 / 2.0,
                p90: p99,
                p99,
                p99_9: p99 * 2.0,
                p99_99: p99 * 3.0,
                max: p99 * 4.0,
            },
            cpu_us_per_request: None,
            server_cpu_us_per_request: None,
            percentile_spectrum: Vec::new(),
            success: true,
            failures: Vec::new(),
        }
    }

    fn result(name: &str, rate: f64, p99: f64) -> ServerResult {
        ServerResult {
            name: name.into(),
            runs: vec![RunRecord {
                round: 1,
                json_path: "x.json".into(),
                outcome: RunOutcome::Measured(report(rate, p99)),
            }],
        }
    }

    #[test]
    fn percentages_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_percents("50, 90%,50"), Ok(vec![50, 90]));
        assert!(parse_percents("0").is_err());
        assert!(parse_percents("120").is_err());
        assert!(parse_percents("half").is_err());
        assert!(parse_percents("").is_err());
    }

    #[test]
    fn rates_come_from_the_closed_loop_medians() {
        let closed = [
            result("engine@epoll", 200_000.0, 10.0),
            result("peer-reflect@epoll", 100_000.0, 10.0),
        ];
        let own = rate_for(&closed, "engine@epoll", OpenLoadBase::Own, 90);
        assert_eq!(own, Some(180_000.0));
        let floor = rate_for(&closed, "engine@epoll", OpenLoadBase::Floor, 50);
        assert_eq!(floor, Some(50_000.0));
        assert_eq!(rate_for(&closed, "engine", OpenLoadBase::Own, 50), None);
    }

    #[test]
    fn open_load_runs_are_interleaved_and_compared_with_the_floors_p99() {
        let closed = [
            result("engine", 200_000.0, 10.0),
            result("peer-reflect", 100_000.0, 10.0),
        ];
        let specs = crate::compare::servers::bundled_servers();
        let rows: Vec<&ServerSpec> = specs
            .iter()
            .filter(|s| s.name == "engine" || s.name == "peer-reflect")
            .collect();
        let runner = Runner {
            bin_dir: "bin".into(),
            load: crate::compare::settings::LoadShape {
                conns: 8,
                per_conn: 10,
                payload_bytes: 32,
                duration: std::time::Duration::from_secs(1),
                warmup: std::time::Duration::from_secs(1),
                rate: None,
            },
            pinning: crate::compare::settings::Pinning {
                server_cpu: 0,
                loadgen_cpu: 1,
            },
            work_dir: std::env::temp_dir(),
            certificate: None,
        };
        let mut order = Vec::new();
        let open = run_open_load(
            &runner,
            &rows,
            &closed,
            &[50, 90],
            OpenLoadBase::Own,
            2,
            |r, spec, round| {
                let rate = r.load.rate.expect("an open-load run has a rate");
                order.push((spec.name.clone(), round, rate));
                // The engine's p99 is three times the floor's.
                let p99 = if spec.name.starts_with("engine") {
                    30.0
                } else {
                    10.0
                };
                RunRecord {
                    round,
                    json_path: "x.json".into(),
                    outcome: RunOutcome::Measured(report(rate, p99)),
                }
            },
        );
        assert_eq!(order.len(), 8);
        assert_eq!(order[0], ("engine-open50".into(), 1, 100_000.0));
        assert_eq!(order[3], ("peer-reflect-open90".into(), 1, 90_000.0));
        assert_eq!(order[4].1, 2, "round 2 starts after every row ran once");
        let cell = OpenLoadCell {
            cell: Cell {
                payload_bytes: 32,
                load: MatrixLoad {
                    conns: 8,
                    per_conn: 10,
                },
            },
            rows: open,
        };
        assert_eq!(cell.p99_ratio_to_floor("engine", 90), Some(3.0));
        let table = render_open_load(&cell, OpenLoadBase::Own);
        assert!(
            table.contains("| engine | 90 | 180,000 | 180,000 | 15.0 | 30.0 | 60.0 | 3.00 |"),
            "{table}"
        );
        let json =
            serde_json::to_value(OpenLoadCellSummary::new(&cell, OpenLoadBase::Own)).unwrap();
        assert_eq!(json["rows"][1]["percent"], 90);
        assert_eq!(json["rows"][1]["p99_ratio_to_floor"], 3.0);
    }
}
