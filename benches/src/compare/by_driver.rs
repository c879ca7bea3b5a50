//! The matrix at a glance: per server and driver, the server's CPU per request over the
//! floor's in every cell, and loadgen's own CPU per request over the floor server's.
//!
//! Invariant: every ratio divides by the floor measured with the same driver (see
//! [`super::drivers::same_driver`]).

use std::fmt::Write as _;

use super::drivers::same_driver;
use super::matrix::{CellResult, FLOOR, format_bytes};

fn cell_heading(result: &CellResult) -> String {
    format!(
        "{} {}",
        result.cell.load,
        format_bytes(result.cell.payload_bytes)
    )
}

fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

/// Markdown: one row per `rows` entry (the matrix's row names, `SERVER@DRIVER` or plain), one
/// column per cell that ran, then one "loadgen ÷ floor server" row per driver.
pub fn render_ratio_summary(cells: &[CellResult], rows: &[String]) -> String {
    let ran: Vec<&CellResult> = cells.iter().filter(|c| c.skipped.is_none()).collect();
    if ran.is_empty() {
        return String::new();
    }
    let mut out =
        String::from("### Server CPU per request ÷ the floor's, by loadgen driver\n\n| row |");
    for cell in &ran {
        write!(out, " {} |", cell_heading(cell)).expect("writing to a String cannot fail");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(ran.len()));
    out.push('\n');
    for row in rows {
        write!(out, "| {row} |").expect("writing to a String cannot fail");
        for cell in &ran {
            write!(out, " {} |", figure(cell.cpu_ratio_to_floor(row)))
                .expect("writing to a String cannot fail");
        }
        out.push('\n');
    }
    let floors: Vec<&String> = rows
        .iter()
        .filter(|row| same_driver(FLOOR, row) == **row)
        .collect();
    for floor in floors {
        write!(out, "| loadgen ÷ {floor} server |").expect("writing to a String cannot fail");
        for cell in &ran {
            write!(out, " {} |", figure(cell.loadgen_cpu_ratio_to_floor(floor)))
                .expect("writing to a String cannot fail");
        }
        out.push('\n');
    }
    out.push('\n');
    out
}
