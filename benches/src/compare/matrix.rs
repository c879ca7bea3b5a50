//! `compare --matrix`: every server in every cell of payload × load, each cell's table with
//! the ratio to the floor (peer-reflect), `matrix.json` and the series `matrix.svg` plots.

use std::fmt;
use std::fmt::Write as _;

use ringrpc_protocol::units::parse_size_as;
use serde::Serialize;

use super::drivers::same_driver;
use super::idle::IdleRss;
use super::machine::Machine;
use super::markdown::{format_rate, table_cell};
use super::results::ServerResult;
use super::servers::ServerSpec;
use super::settings::Pinning;
use super::summary::ServerSummary;

/// The row every other server's CPU per request is divided by.
pub const FLOOR: &str = "peer-reflect";
/// The issue's payloads: 32 B, 4 KiB, 64 KiB, 1 MiB.
pub const DEFAULT_PAYLOADS: &str = "32,4KiB,64KiB,1MiB";
/// The issue's loads: 8 connections × 10 in flight, 1000 × 1, 10,000 × 1.
pub const DEFAULT_LOADS: &str = "8x10,1000x1,10000x1";
/// Cells whose requests in flight hold more payload than this are skipped by default: the
/// server and loadgen each buffer it, and 10,000 × 1 MiB is 10 GiB apiece.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: u64 = 1 << 30;
/// tonic's default largest message, which grpc-echo keeps.
pub const GRPC_MAX_MESSAGE: usize = 4 << 20;

/// Connections and requests in flight on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MatrixLoad {
    pub conns: usize,
    pub per_conn: usize,
}

impl fmt::Display for MatrixLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}", self.conns, self.per_conn)
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub payload_bytes: usize,
    #[serde(flatten)]
    pub load: MatrixLoad,
}

impl Cell {
    /// Payload bytes held by all requests in flight at once.
    pub fn in_flight_bytes(&self) -> u64 {
        (self.load.conns as u64) * (self.load.per_conn as u64) * (self.payload_bytes as u64)
    }

    /// A name for the cell's output directory, e.g. `8x10-4KiB`.
    pub fn id(&self) -> String {
        format!(
            "{}x{}-{}",
            self.load.conns,
            self.load.per_conn,
            format_bytes(self.payload_bytes).replace(' ', "")
        )
    }

    /// How a reader names it: `4 KiB, 8×10`.
    pub fn label(&self) -> String {
        format!(
            "{}, {} conns × {} in flight",
            format_bytes(self.payload_bytes),
            self.load.conns,
            self.load.per_conn
        )
    }

    /// Why the whole cell is not run, if it is not.
    pub fn skip_reason(&self, max_in_flight_bytes: u64) -> Option<String> {
        let in_flight = self.in_flight_bytes();
        (in_flight > max_in_flight_bytes).then(|| {
            format!(
                "{} in flight ({} × {} × {}) is over --matrix-max-in-flight {}",
                format_bytes_u64(in_flight),
                self.load.conns,
                self.load.per_conn,
                format_bytes(self.payload_bytes),
                format_bytes_u64(max_in_flight_bytes)
            )
        })
    }
}

/// Why `spec` cannot run `cell`, if it cannot.
pub fn server_skip_reason(spec: &ServerSpec, cell: &Cell) -> Option<String> {
    let grpc = spec
        .loadgen_args
        .windows(2)
        .any(|w| w == ["--proto", "grpc"]);
    (grpc && cell.payload_bytes + 64 > GRPC_MAX_MESSAGE).then(|| {
        format!(
            "a {} message is over tonic's {} limit",
            format_bytes(cell.payload_bytes),
            format_bytes(GRPC_MAX_MESSAGE)
        )
    })
}

/// `1048576` → `1 MiB`, `4096` → `4 KiB`, `100` → `100 B`: exact binary units only.
pub fn format_bytes(bytes: usize) -> String {
    format_bytes_u64(bytes as u64)
}

fn format_bytes_u64(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

/// Comma-separated payload sizes, in the order given, without repeats.
pub fn parse_payloads(text: &str) -> Result<Vec<usize>, String> {
    let mut payloads = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bytes =
            parse_size_as::<usize>(item).map_err(|e| format!("--matrix-payloads {item:?}: {e}"))?;
        if !payloads.contains(&bytes) {
            payloads.push(bytes);
        }
    }
    if payloads.is_empty() {
        return Err("--matrix-payloads names no payload".into());
    }
    Ok(payloads)
}

/// Comma-separated loads `CONNSxPER_CONN` (`x` or `×`; `10,000` style digits are not taken,
/// the comma separates loads), in the order given, without repeats.
pub fn parse_loads(text: &str) -> Result<Vec<MatrixLoad>, String> {
    let mut loads = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (conns, per_conn) = item
            .split_once(['x', 'X', '×'])
            .ok_or_else(|| format!("{item:?} is not a load: write CONNSxPER_CONN, e.g. 8x10"))?;
        let count = |part: &str, what: &str| match part.trim().replace('_', "").parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "{item:?}: {what} must be a whole number of at least 1"
            )),
        };
        let load = MatrixLoad {
            conns: count(conns, "connections")?,
            per_conn: count(per_conn, "requests per connection")?,
        };
        if !loads.contains(&load) {
            loads.push(load);
        }
    }
    if loads.is_empty() {
        return Err("--matrix-loads names no load".into());
    }
    Ok(loads)
}

/// The cells in run order: load by load, payloads ascending within each as given.
pub fn cells(payloads: &[usize], loads: &[MatrixLoad]) -> Vec<Cell> {
    loads
        .iter()
        .flat_map(|&load| {
            payloads.iter().map(move |&payload_bytes| Cell {
                payload_bytes,
                load,
            })
        })
        .collect()
}

/// One cell's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CellResult {
    pub cell: Cell,
    /// Set when the whole cell was not run.
    pub skipped: Option<String>,
    /// The servers run, in --servers order.
    pub results: Vec<ServerResult>,
    /// Servers left out of this cell and why.
    pub skipped_servers: Vec<(String, String)>,
}

/// `value ÷ floor`, when both exist and the floor is positive.
pub fn ratio(value: Option<f64>, floor: Option<f64>) -> Option<f64> {
    match (value, floor) {
        (Some(v), Some(f)) if f > 0.0 && v.is_finite() => Some(v / f),
        _ => None,
    }
}

impl CellResult {
    fn server_cpu(&self, name: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.name == name)?
            .median()?
            .server_cpu_us_per_request
    }

    /// The floor's median server CPU µs per request in this cell (with several drivers, as
    /// the first driver measured it).
    pub fn floor_cpu(&self) -> Option<f64> {
        let first_floor = self
            .results
            .iter()
            .find(|r| same_driver(FLOOR, &r.name) == r.name)?;
        self.server_cpu(&first_floor.name)
    }

    /// `name`'s median server CPU per request divided by the floor's (measured by the same
    /// driver).
    pub fn cpu_ratio_to_floor(&self, name: &str) -> Option<f64> {
        ratio(
            self.server_cpu(name),
            self.server_cpu(&same_driver(FLOOR, name)),
        )
    }

    /// `name`'s loadgen CPU per request divided by the floor server's (same driver): whether
    /// the client, not the server, could be the limit of the cell.
    pub fn loadgen_cpu_ratio_to_floor(&self, name: &str) -> Option<f64> {
        let loadgen = self
            .results
            .iter()
            .find(|r| r.name == name)?
            .median()?
            .cpu_us_per_request;
        ratio(loadgen, self.server_cpu(&same_driver(FLOOR, name)))
    }

    /// The floor's median requests/s divided by `name`'s: how many times slower it is.
    pub fn rate_ratio_to_floor(&self, name: &str) -> Option<f64> {
        let rate = |n: &str| {
            self.results
                .iter()
                .find(|r| r.name == n)?
                .median()
                .map(|report| report.requests_per_second)
        };
        ratio(rate(&same_driver(FLOOR, name)), rate(name))
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

/// One cell's markdown: a heading and the table (or why it was skipped).
pub fn render_cell(result: &CellResult, rounds: usize) -> String {
    let mut out = format!("### {}\n\n", result.cell.label());
    if let Some(why) = &result.skipped {
        writeln!(out, "Skipped: {why}.").expect("writing to a String cannot fail");
        return out;
    }
    let median = if rounds == 1 {
        "req/s (1 round)".to_owned()
    } else {
        format!("req/s (median of {rounds})")
    };
    writeln!(
        out,
        "| server | {median} | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | loadgen CPU µs/req | server CPU ÷ floor | loadgen CPU ÷ floor server |"
    )
    .expect("writing to a String cannot fail");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for server in &result.results {
        let line = match server.median() {
            Some(report) => {
                let l = &report.latency_us;
                format!(
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
                    server.name,
                    format_rate(report.requests_per_second),
                    l.p50,
                    l.p99,
                    l.p99_9,
                    optional(report.server_cpu_us_per_request, 3),
                    optional(report.cpu_us_per_request, 3),
                    optional(result.cpu_ratio_to_floor(&server.name), 2),
                    optional(result.loadgen_cpu_ratio_to_floor(&server.name), 2),
                )
            }
            None => format!(
                "| {} | failed: {} | – | – | – | – | – | – | – |",
                server.name,
                table_cell(server.first_failure().unwrap_or("no runs"))
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    for (name, why) in &result.skipped_servers {
        writeln!(
            out,
            "| {name} | skipped: {} | – | – | – | – | – | – | – |",
            table_cell(why)
        )
        .expect("writing to a String cannot fail");
    }
    out
}

/// The whole `matrix.md`: every cell, the idle memory table, the machine and command.
pub fn render_matrix(
    cells: &[CellResult],
    idle: &[IdleRss],
    rounds: usize,
    machine: &Machine,
    command_line: &str,
) -> String {
    let mut out = format!(
        "Machine: {machine}\n\nCommand: `{command_line}`\n\n\"server CPU ÷ floor\" is the server's CPU µs per request over {FLOOR}'s in the same cell, measured by the same loadgen driver (a row `SERVER@DRIVER` was driven by `loadgen --driver DRIVER`); \"loadgen CPU ÷ floor server\" is loadgen's own CPU µs per request over {FLOOR}'s server CPU.\n\n"
    );
    for cell in cells {
        out.push_str(&render_cell(cell, rounds));
        out.push('\n');
    }
    if !idle.is_empty() {
        out.push_str(&super::idle::render_idle_table(idle));
    }
    out
}

/// One server's figures in one cell of `matrix.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellServer {
    #[serde(flatten)]
    pub summary: ServerSummary,
    /// Median server CPU µs/request ÷ the floor's; null without both figures.
    pub server_cpu_ratio_to_floor: Option<f64>,
    /// The floor's median requests/s ÷ this server's.
    pub floor_rate_ratio: Option<f64>,
    /// Median loadgen CPU µs/request ÷ the floor server's (same driver).
    pub loadgen_cpu_ratio_to_floor: Option<f64>,
}

/// A skipped server in one cell of `matrix.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedServer {
    pub name: String,
    pub reason: String,
}

/// One cell of `matrix.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellSummary {
    #[serde(flatten)]
    pub cell: Cell,
    pub skipped: Option<String>,
    pub floor_server_cpu_us_per_request: Option<f64>,
    pub servers: Vec<CellServer>,
    pub skipped_servers: Vec<SkippedServer>,
}

impl From<&CellResult> for CellSummary {
    fn from(result: &CellResult) -> CellSummary {
        CellSummary {
            cell: result.cell,
            skipped: result.skipped.clone(),
            floor_server_cpu_us_per_request: result.floor_cpu(),
            servers: result
                .results
                .iter()
                .map(|server| CellServer {
                    summary: ServerSummary::from(server),
                    server_cpu_ratio_to_floor: result.cpu_ratio_to_floor(&server.name),
                    floor_rate_ratio: result.rate_ratio_to_floor(&server.name),
                    loadgen_cpu_ratio_to_floor: result.loadgen_cpu_ratio_to_floor(&server.name),
                })
                .collect(),
            skipped_servers: result
                .skipped_servers
                .iter()
                .map(|(name, reason)| SkippedServer {
                    name: name.clone(),
                    reason: reason.clone(),
                })
                .collect(),
        }
    }
}

/// Everything `matrix.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixFile {
    pub command_line: String,
    pub machine: Machine,
    pub pinning: Pinning,
    pub rounds: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub floor: &'static str,
    pub servers: Vec<String>,
    pub cells: Vec<CellSummary>,
    /// RSS per idle connection; empty when not measured.
    pub idle_rss: Vec<IdleRss>,
}

impl MatrixFile {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a matrix serialises: numbers, strings, paths")
            + "\n"
    }
}

/// One line of the matrix chart: a server's median CPU per request by payload, in one load.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuSeries {
    pub server: String,
    /// (payload bytes, server CPU µs/request), payload ascending.
    pub points: Vec<(f64, f64)>,
}

/// For each load (in order), one series per server that has at least one figure.
pub fn cpu_series(cells: &[CellResult], servers: &[String]) -> Vec<(MatrixLoad, Vec<CpuSeries>)> {
    let mut loads: Vec<MatrixLoad> = Vec::new();
    for cell in cells {
        if !loads.contains(&cell.cell.load) {
            loads.push(cell.cell.load);
        }
    }
    loads
        .into_iter()
        .map(|load| {
            let series = servers
                .iter()
                .filter_map(|server| {
                    let mut points: Vec<(f64, f64)> = cells
                        .iter()
                        .filter(|c| c.cell.load == load)
                        .filter_map(|c| {
                            let cpu = c.server_cpu(server).filter(|v| *v > 0.0)?;
                            Some((c.cell.payload_bytes as f64, cpu))
                        })
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (!points.is_empty()).then(|| CpuSeries {
                        server: server.clone(),
                        points,
                    })
                })
                .collect();
            (load, series)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_units() {
        assert_eq!(
            parse_payloads("32, 4k,64 KiB,1MiB,4KiB"),
            Ok(vec![32, 4096, 65_536, 1 << 20])
        );
        assert!(
            parse_payloads("4 parsecs")
                .unwrap_err()
                .contains("--matrix-payloads")
        );
        assert_eq!(format_bytes(32), "32 B");
        assert_eq!(format_bytes(4096), "4 KiB");
        assert_eq!(format_bytes(1 << 20), "1 MiB");
        assert_eq!(format_bytes(1000), "1000 B");
    }

    #[test]
    fn the_default_matrix_is_the_issues() {
        let payloads = parse_payloads(DEFAULT_PAYLOADS).unwrap();
        assert_eq!(payloads, [32, 4096, 65_536, 1 << 20]);
        let loads = parse_loads(DEFAULT_LOADS).unwrap();
        assert_eq!(
            loads,
            [
                MatrixLoad {
                    conns: 8,
                    per_conn: 10
                },
                MatrixLoad {
                    conns: 1000,
                    per_conn: 1
                },
                MatrixLoad {
                    conns: 10_000,
                    per_conn: 1
                },
            ]
        );
        let all = cells(&payloads, &loads);
        assert_eq!(all.len(), 12);
        assert_eq!(all[0].id(), "8x10-32B");
        assert_eq!(all[3].id(), "8x10-1MiB");
        assert_eq!(all[11].label(), "1 MiB, 10000 conns × 1 in flight");
        // Only 10,000 × 1 MiB (10 GiB in flight) is over the default budget.
        let skipped: Vec<String> = all
            .iter()
            .filter(|c| c.skip_reason(DEFAULT_MAX_IN_FLIGHT_BYTES).is_some())
            .map(Cell::id)
            .collect();
        assert_eq!(skipped, ["10000x1-1MiB"]);
        assert!(
            all[11]
                .skip_reason(DEFAULT_MAX_IN_FLIGHT_BYTES)
                .unwrap()
                .starts_with("10000 MiB in flight")
        );
    }

    #[test]
    fn subsets_keep_their_order_and_drop_repeats() {
        assert_eq!(parse_payloads("64k, 32,65536").unwrap(), [65_536, 32]);
        assert_eq!(
            parse_loads("1000×1, 8X10,1000x1").unwrap(),
            [
                MatrixLoad {
                    conns: 1000,
                    per_conn: 1
                },
                MatrixLoad {
                    conns: 8,
                    per_conn: 10
                },
            ]
        );
        assert!(parse_loads("8").is_err());
        assert!(parse_loads("0x1").is_err());
        assert!(parse_loads(" , ").is_err());
        assert!(parse_payloads("").is_err());
    }

    #[test]
    fn ratios_need_both_figures_and_a_positive_floor() {
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(None, Some(1.5)), None);
        assert_eq!(ratio(Some(3.0), None), None);
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
    }
}
