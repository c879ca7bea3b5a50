//! The markdown report: the comparison table, the runs that failed, the machine, the command
//! line and the target verdicts.

use std::fmt::Write as _;

use super::machine::Machine;
pub use super::markdown::{format_rate, table_cell};
use super::results::ServerResult;
use super::targets::TargetResult;

/// Everything printed under the table.
#[derive(Debug, Clone)]
pub struct ReportContext<'a> {
    pub machine: &'a Machine,
    /// The comparison's own command line.
    pub command_line: &'a str,
    /// Each server's command and the loadgen command run against it, as markdown.
    pub run_commands: &'a [String],
    pub targets: &'a [TargetResult],
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

/// The comparison table: one row per server from its median run.
pub fn render_table(results: &[ServerResult], rounds: usize) -> String {
    let engine_rate = results
        .iter()
        .find(|r| r.name == "engine")
        .and_then(ServerResult::median)
        .map(|report| report.requests_per_second);
    let mut out = String::new();
    let median_label = if rounds == 1 {
        "requests/s (1 round)".to_owned()
    } else {
        format!("requests/s (median of {rounds})")
    };
    out.push_str(&format!(
        "| server | {median_label} | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | loadgen CPU µs/req | vs engine |\n"
    ));
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for result in results {
        let row = match result.median() {
            Some(report) => {
                let versus_engine = match engine_rate {
                    Some(engine) if report.requests_per_second > 0.0 => {
                        format!("{:.2}", engine / report.requests_per_second)
                    }
                    _ => "–".into(),
                };
                let l = &report.latency_us;
                format!(
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                    result.name,
                    format_rate(report.requests_per_second),
                    l.p50,
                    l.p99,
                    l.p99_9,
                    optional(report.server_cpu_us_per_request, 3),
                    optional(report.cpu_us_per_request, 3),
                    versus_engine
                )
            }
            None => format!(
                "| {} | failed: {} | – | – | – | – | – | – |",
                result.name,
                table_cell(result.first_failure().unwrap_or("no runs"))
            ),
        };
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// One line per failed run, in full (each kept to one line).
pub fn render_failures(results: &[ServerResult]) -> String {
    let mut out = String::new();
    for result in results {
        for run in &result.runs {
            if let Some(why) = run.failure() {
                let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                writeln!(out, "- {} round {} failed: {why}", result.name, run.round)
                    .expect("writing to a String cannot fail");
            }
        }
    }
    out
}

/// The whole markdown report (`table.md`, also printed to stdout).
pub fn render_report(
    results: &[ServerResult],
    rounds: usize,
    context: &ReportContext<'_>,
) -> String {
    let mut out = render_table(results, rounds);
    let failures = render_failures(results);
    if !failures.is_empty() {
        out.push_str("\nFailed runs:\n\n");
        out.push_str(&failures);
    }
    out.push_str(&format!("\nMachine: {}\n", context.machine));
    out.push_str(&format!("\nCommand: `{}`\n", context.command_line));
    if !context.run_commands.is_empty() {
        out.push_str("\nEach run (ADDR and PID are the fresh server's):\n\n");
        for command in context.run_commands {
            out.push_str(&format!("- {command}\n"));
        }
    }
    out.push_str("\nTargets (median runs):\n\n");
    for target in context.targets {
        out.push_str(&format!("- {target}\n"));
    }
    out
}
