//! `compare --drivers`: with two loadgen drivers every row is compared with the floor measured
//! by its own driver, in each cell's table, the summary by driver and `matrix.json`.

use std::path::PathBuf;

use ringrpc_benches::compare::by_driver::render_ratio_summary;
use ringrpc_benches::compare::loadgen_report::{LatencyFigures, LoadgenReport};
use ringrpc_benches::compare::matrix::{Cell, CellResult, CellSummary, MatrixLoad, render_cell};
use ringrpc_benches::compare::results::{RunOutcome, RunRecord, ServerResult};

fn row(name: &str, server_cpu: f64, loadgen_cpu: f64) -> ServerResult {
    let report = LoadgenReport {
        requests_per_second: 100_000.0,
        latency_us: LatencyFigures {
            min: 1.0,
            p50: 10.0,
            p90: 20.0,
            p99: 30.0,
            p99_9: 40.0,
            p99_99: 50.0,
            max: 60.0,
        },
        cpu_us_per_request: Some(loadgen_cpu),
        server_cpu_us_per_request: Some(server_cpu),
        percentile_spectrum: Vec::new(),
        success: true,
        failures: Vec::new(),
    };
    ServerResult {
        name: name.into(),
        runs: vec![RunRecord {
            round: 1,
            json_path: PathBuf::from("x.json"),
            outcome: RunOutcome::Measured(report),
        }],
    }
}

fn two_driver_cell() -> CellResult {
    CellResult {
        cell: Cell {
            payload_bytes: 4096,
            load: MatrixLoad {
                conns: 8,
                per_conn: 10,
            },
        },
        skipped: None,
        results: vec![
            row("engine@uring", 3.0, 4.0),
            row("engine@epoll", 4.0, 6.0),
            row("peer-reflect@uring", 2.0, 3.0),
            row("peer-reflect@epoll", 2.5, 5.0),
        ],
        skipped_servers: Vec::new(),
    }
}

#[test]
fn each_row_is_divided_by_the_floor_of_its_own_driver() {
    let cell = two_driver_cell();
    assert_eq!(cell.cpu_ratio_to_floor("engine@uring"), Some(1.5));
    assert_eq!(cell.cpu_ratio_to_floor("engine@epoll"), Some(1.6));
    assert_eq!(
        cell.loadgen_cpu_ratio_to_floor("peer-reflect@epoll"),
        Some(2.0)
    );
    // The first driver's floor is the cell's headline floor.
    assert_eq!(cell.floor_cpu(), Some(2.0));
    let table = render_cell(&cell, 1);
    assert!(table.contains("| loadgen CPU ÷ floor server |"), "{table}");
    assert!(
        table.contains(
            "| engine@epoll | 100,000 | 10.0 | 30.0 | 40.0 | 4.000 | 6.000 | 1.60 | 2.40 |"
        ),
        "{table}"
    );
    let json = serde_json::to_value(CellSummary::from(&cell)).unwrap();
    assert_eq!(json["servers"][1]["server_cpu_ratio_to_floor"], 1.6);
    assert_eq!(json["servers"][3]["loadgen_cpu_ratio_to_floor"], 2.0);
}

#[test]
fn the_summary_has_a_row_per_server_and_driver_and_loadgen_per_driver() {
    let cells = [two_driver_cell()];
    let rows: Vec<String> = cells[0].results.iter().map(|r| r.name.clone()).collect();
    let summary = render_ratio_summary(&cells, &rows);
    assert!(summary.contains("| row | 8×10 4 KiB |"), "{summary}");
    assert!(summary.contains("| engine@uring | 1.50 |"), "{summary}");
    assert!(summary.contains("| engine@epoll | 1.60 |"), "{summary}");
    assert!(
        summary.contains("| loadgen ÷ peer-reflect@uring server | 1.50 |"),
        "{summary}"
    );
    assert!(
        summary.contains("| loadgen ÷ peer-reflect@epoll server | 2.00 |"),
        "{summary}"
    );
}
