//! The comparison tool's pure parts on synthetic and recorded loadgen reports: parsing, median
//! choice, the table, the target verdicts and the chart. No server is started.

use std::path::PathBuf;

use ringrpc_benches::compare::chart::{
    CpuPanel, LatencyCurve, write_cpu_chart, write_latency_chart,
};
use ringrpc_benches::compare::idle::{IdleFigures, IdleOutcome, IdleRss, Prelude};
use ringrpc_benches::compare::loadgen_report::{LatencyFigures, LoadgenReport, SpectrumPoint};
use ringrpc_benches::compare::machine::Machine;
use ringrpc_benches::compare::matrix::{
    Cell, CellResult, CellSummary, FLOOR, MatrixFile, MatrixLoad, cpu_series, render_cell,
};
use ringrpc_benches::compare::settings::{LoadShape, Pinning};
use ringrpc_benches::compare::summary::{
    RunOutcome, RunRecord, ServerResult, ServerSummary, SummaryFile,
};
use ringrpc_benches::compare::table::{ReportContext, format_rate, render_report, render_table};
use ringrpc_benches::compare::targets::{Verdict, evaluate};

/// A report as loadgen wrote it (spectrum shortened), from a run against `engine`.
const RECORDED_REPORT: &str = include_str!("data/loadgen-report.json");

/// A report whose latencies scale with `p99_us` and whose spectrum runs to the 100th percentile.
fn synthetic(requests_per_second: f64, p99_us: f64, server_cpu: Option<f64>) -> LoadgenReport {
    let spectrum = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0]
        .iter()
        .zip([0.1, 0.3, 0.6, 1.0, 2.0, 3.0, 4.0, 4.0])
        .enumerate()
        .map(|(i, (&percentile, scale))| SpectrumPoint {
            value_us: p99_us * scale,
            percentile,
            total_count: 1000 * (i as u64 + 1),
        })
        .collect();
    LoadgenReport {
        requests_per_second,
        latency_us: LatencyFigures {
            min: p99_us * 0.1,
            p50: p99_us * 0.3,
            p90: p99_us * 0.6,
            p99: p99_us,
            p99_9: p99_us * 2.0,
            p99_99: p99_us * 3.0,
            max: p99_us * 4.0,
        },
        cpu_us_per_request: Some(0.5),
        server_cpu_us_per_request: server_cpu,
        percentile_spectrum: spectrum,
        success: true,
        failures: Vec::new(),
    }
}

fn measured(round: usize, report: LoadgenReport) -> RunRecord {
    RunRecord {
        round,
        json_path: PathBuf::from(format!("x-round{round}.json")),
        outcome: RunOutcome::Measured(report),
    }
}

fn failed(round: usize, why: &str) -> RunRecord {
    RunRecord {
        round,
        json_path: PathBuf::from(format!("x-round{round}.json")),
        outcome: RunOutcome::Failed(why.into()),
    }
}

fn server(name: &str, runs: Vec<RunRecord>) -> ServerResult {
    ServerResult {
        name: name.into(),
        runs,
    }
}

/// engine beats every target; grpc-echo fails; peer-tokio is a third of engine.
fn sample_results() -> Vec<ServerResult> {
    vec![
        server(
            "engine",
            vec![
                measured(1, synthetic(900_000.0, 40.0, Some(0.8))),
                measured(2, synthetic(1_000_000.0, 30.0, Some(0.7))),
                measured(3, synthetic(1_100_000.0, 20.0, Some(0.6))),
            ],
        ),
        server(
            "reflect",
            vec![
                measured(1, synthetic(1_050_000.0, 25.0, Some(0.4))),
                measured(2, synthetic(1_050_000.0, 25.0, Some(0.4))),
                measured(3, synthetic(1_050_000.0, 25.0, Some(0.4))),
            ],
        ),
        server(
            "peer-tokio",
            vec![
                measured(1, synthetic(250_000.0, 300.0, Some(3.0))),
                failed(
                    2,
                    "loadgen exit status: 1: 3 requests lost on failed connections",
                ),
                measured(3, synthetic(400_000.0, 200.0, Some(2.0))),
            ],
        ),
        server(
            "grpc-echo",
            vec![
                failed(
                    1,
                    "loadgen exit status: 2: error: unexpected argument '--proto' found | x",
                ),
                failed(2, "same"),
                failed(3, "same"),
            ],
        ),
    ]
}

#[test]
fn parses_a_recorded_loadgen_report() {
    let report = LoadgenReport::from_json(RECORDED_REPORT).expect("loadgen's JSON parses");
    assert_eq!(report.requests_per_second, 612_870.0);
    assert_eq!(report.latency_us.p99, 2574.335);
    assert_eq!(report.latency_us.p99_9, 8073.215);
    assert_eq!(report.server_cpu_us_per_request, Some(0.7137352423841924));
    assert_eq!(report.cpu_us_per_request, Some(0.7624687862026205));
    assert!(report.success);
    assert_eq!(report.percentile_spectrum.len(), 9);
    assert_eq!(report.percentile_spectrum.last().unwrap().percentile, 1.0);
}

#[test]
fn a_report_without_cpu_figures_still_parses() {
    let text = r#"{"requests_per_second": 5.0, "success": false, "failures": ["no answers"],
        "latency_us": {"min": 0, "p50": 0, "p90": 0, "p99": 0, "p99_9": 0, "p99_99": 0, "max": 0},
        "cpu_us_per_request": null}"#;
    let report = LoadgenReport::from_json(text).unwrap();
    assert_eq!(report.server_cpu_us_per_request, None);
    assert!(report.percentile_spectrum.is_empty());
}

#[test]
fn median_run_is_chosen_by_throughput_among_measured_runs() {
    let results = sample_results();
    assert_eq!(results[0].median_run().unwrap().round, 2);
    // Two measured runs: the lower one, never an average of both.
    assert_eq!(results[2].median_run().unwrap().round, 1);
    assert!(results[3].median_run().is_none());
    assert_eq!(
        results[3].first_failure(),
        Some("loadgen exit status: 2: error: unexpected argument '--proto' found | x")
    );
}

#[test]
fn table_shows_median_figures_ratios_and_failures() {
    let table = render_table(&sample_results(), 3);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 4, "{table}");
    assert!(lines[0].contains("requests/s (median of 3)"));
    assert!(lines[0].contains("vs engine"));
    assert_eq!(
        lines[2],
        "| engine | 1,000,000 | 9.0 | 30.0 | 60.0 | 0.700 | 0.500 | 1.00 |"
    );
    assert!(
        lines[4].starts_with("| peer-tokio | 250,000 | 90.0 | 300.0 |"),
        "{table}"
    );
    assert!(lines[4].ends_with("| 4.00 |"), "{table}");
    // A failure reason may not break the row: its '|' is escaped.
    assert!(
        lines[5].starts_with(
            "| grpc-echo | failed: loadgen exit status: 2: error: unexpected argument"
        )
    );
    assert!(lines[5].contains("found \\| x"));
    let unescaped_pipes = lines[5]
        .char_indices()
        .filter(|&(i, c)| c == '|' && !lines[5][..i].ends_with('\\'))
        .count();
    assert_eq!(unescaped_pipes, 9, "{}", lines[5]);
}

#[test]
fn targets_are_judged_on_median_runs_and_skipped_without_data() {
    let targets = evaluate(&sample_results());
    let verdict = |prefix: &str| {
        targets
            .iter()
            .find(|t| t.target.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix}"))
            .clone()
    };
    let grpc = verdict("engine req/s ≥ 10× grpc-echo");
    assert_eq!(
        grpc.verdict,
        Verdict::Skipped("grpc-echo failed in every round".into())
    );
    let tokio = verdict("engine req/s ≥ 3× peer-tokio");
    assert_eq!(tokio.verdict, Verdict::Met);
    assert!(tokio.measured.starts_with("4.00×"), "{}", tokio.measured);
    let cpu = verdict("engine server CPU");
    assert_eq!(cpu.verdict, Verdict::Met);
    assert_eq!(cpu.measured, "0.700 µs/request");
    assert!(matches!(verdict("engine p99").verdict, Verdict::Skipped(_)));
    let reflect = verdict("engine req/s ≥ 90% of reflect");
    assert_eq!(reflect.verdict, Verdict::Met);
    assert!(
        reflect.measured.starts_with("95.2%"),
        "{}",
        reflect.measured
    );

    let slow_engine = vec![
        server(
            "engine",
            vec![measured(1, synthetic(100_000.0, 500.0, Some(1.5)))],
        ),
        server(
            "grpc-echo",
            vec![measured(1, synthetic(50_000.0, 1000.0, Some(9.0)))],
        ),
    ];
    let targets = evaluate(&slow_engine);
    assert_eq!(targets[0].verdict, Verdict::Missed);
    assert_eq!(targets[2].verdict, Verdict::Missed);
    assert_eq!(targets[3].verdict, Verdict::Missed);
    assert_eq!(
        targets[4].verdict,
        Verdict::Skipped("reflect was not run".into())
    );
    assert!(
        targets[3].to_string().ends_with("— MISSED"),
        "{}",
        targets[3]
    );
}

#[test]
fn report_lists_failures_machine_command_and_targets() {
    let results = sample_results();
    let targets = evaluate(&results);
    let machine = Machine {
        cpu_model: "Test CPU 9000".into(),
        nproc: 2,
        kernel: "6.1.0-test".into(),
    };
    let run_commands = vec!["engine: `taskset -c 0 engine` then `taskset -c 1 loadgen`".to_owned()];
    let report = render_report(
        &results,
        3,
        &ReportContext {
            machine: &machine,
            command_line: "target/release/compare --rounds 3",
            run_commands: &run_commands,
            targets: &targets,
        },
    );
    assert!(report.contains("- peer-tokio round 2 failed: loadgen exit status: 1"));
    assert!(report.contains("Machine: Test CPU 9000, nproc 2, kernel 6.1.0-test"));
    assert!(report.contains("Command: `target/release/compare --rounds 3`"));
    assert!(report.contains("- engine: `taskset -c 0 engine`"));
    assert!(
        report.contains("engine req/s ≥ 3× peer-tokio: 4.00× (1,000,000 vs 250,000 req/s) — MET")
    );
    assert!(
        report.contains("engine req/s ≥ 10× grpc-echo: skipped (grpc-echo failed in every round)")
    );
}

#[test]
fn summary_json_names_each_rounds_figures_and_the_median() {
    let results = sample_results();
    let summary = SummaryFile {
        command_line: "compare".into(),
        machine: Machine {
            cpu_model: "Test CPU".into(),
            nproc: 2,
            kernel: "6".into(),
        },
        load: LoadShape {
            conns: 8,
            per_conn: 10,
            payload_bytes: 32,
            duration: std::time::Duration::from_secs(5),
            warmup: std::time::Duration::from_secs(1),
            rate: None,
        },
        pinning: Pinning {
            server_cpu: 0,
            loadgen_cpu: 1,
        },
        rounds: 3,
        servers: results.iter().map(ServerSummary::from).collect(),
        targets: evaluate(&results),
    };
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    let engine = &json["servers"][0];
    assert_eq!(engine["name"], "engine");
    assert_eq!(engine["median_round"], 2);
    assert_eq!(engine["median"]["requests_per_second"], 1_000_000.0);
    assert_eq!(engine["rounds"].as_array().unwrap().len(), 3);
    assert_eq!(engine["rounds"][0]["figures"]["p99_us"], 40.0);
    let grpc = &json["servers"][3];
    assert!(grpc["median"].is_null());
    assert_eq!(grpc["rounds"][1]["failure"], "same");
    assert_eq!(json["load"]["duration"], 5.0);
    assert_eq!(json["targets"][1]["verdict"], "met");
    assert_eq!(json["targets"][0]["verdict"], "skipped");
}

#[test]
fn chart_has_a_line_and_a_legend_entry_per_server() {
    let dir = std::env::temp_dir().join(format!("ringrpc-compare-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("latency.svg");
    let recorded = LoadgenReport::from_json(RECORDED_REPORT).unwrap();
    let curves = vec![
        LatencyCurve::from_spectrum("engine (612,870 req/s)", &recorded.percentile_spectrum),
        LatencyCurve::from_spectrum(
            "peer-tokio",
            &synthetic(1.0, 300.0, None).percentile_spectrum,
        ),
    ];
    // The 100th percentile has no place on a 1/(1−p) axis.
    assert_eq!(
        curves[0].points.len(),
        recorded.percentile_spectrum.len() - 1
    );
    write_latency_chart(
        &path,
        "Echo latency — 32 B payload, 8 conns × 10 in flight",
        &curves,
    )
    .expect("chart is written");
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("engine (612,870 req/s)"));
    assert!(svg.contains("peer-tokio"));
    assert!(svg.contains("<polyline") || svg.contains("<path"));
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    for tick in ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
        assert!(texts.contains(&tick), "no x tick {tick}");
    }
    assert!(!texts.contains(&"99.9999%"), "x axis longer than the data");
    assert!(svg.contains("latency (µs, log scale)"));
    assert!(svg.contains("8 conns × 10 in flight"));
}

#[test]
fn chart_refuses_to_draw_nothing() {
    let path = std::env::temp_dir().join("ringrpc-compare-test-empty.svg");
    assert!(write_latency_chart(&path, "t", &[]).is_err());
}

#[test]
fn rates_are_grouped_by_thousands() {
    assert_eq!(format_rate(0.0), "0");
    assert_eq!(format_rate(999.4), "999");
    assert_eq!(format_rate(1000.0), "1,000");
    assert_eq!(format_rate(612_870.2), "612,870");
    assert_eq!(format_rate(1_234_567.8), "1,234,568");
}

fn matrix_cell(payload_bytes: usize, conns: usize, results: Vec<ServerResult>) -> CellResult {
    CellResult {
        cell: Cell {
            payload_bytes,
            load: MatrixLoad { conns, per_conn: 1 },
        },
        skipped: None,
        results,
        skipped_servers: Vec::new(),
    }
}

/// Two payloads at 1000×1 with engine and the floor, a third cell skipped, grpc-echo skipped
/// in one cell.
fn sample_matrix() -> Vec<CellResult> {
    let mut small = matrix_cell(
        32,
        1000,
        vec![
            server(
                "engine",
                vec![
                    measured(1, synthetic(500_000.0, 40.0, Some(1.5))),
                    measured(2, synthetic(400_000.0, 40.0, Some(1.8))),
                ],
            ),
            server(
                "peer-reflect",
                vec![
                    measured(1, synthetic(800_000.0, 20.0, Some(0.5))),
                    measured(2, synthetic(900_000.0, 20.0, Some(0.4))),
                ],
            ),
        ],
    );
    small
        .skipped_servers
        .push(("grpc-echo".into(), "a test reason".into()));
    let big = matrix_cell(
        65_536,
        1000,
        vec![
            server(
                "engine",
                vec![measured(1, synthetic(50_000.0, 400.0, Some(12.0)))],
            ),
            server("peer-reflect", vec![failed(1, "server exited")]),
        ],
    );
    let mut skipped = matrix_cell(1 << 20, 10_000, Vec::new());
    skipped.skipped = Some("10000 MiB in flight".into());
    vec![small, big, skipped]
}

#[test]
fn matrix_ratios_divide_by_the_floors_median_cpu() {
    let cells = sample_matrix();
    // Medians (lower middle of two): engine 400k req/s at 1.8 µs, floor 800k at 0.5 µs.
    assert_eq!(cells[0].floor_cpu(), Some(0.5));
    assert!((cells[0].cpu_ratio_to_floor("engine").unwrap() - 3.6).abs() < 1e-9);
    assert_eq!(cells[0].cpu_ratio_to_floor(FLOOR), Some(1.0));
    assert_eq!(cells[0].rate_ratio_to_floor("engine"), Some(2.0));
    // No floor figure, no ratio.
    assert_eq!(cells[1].cpu_ratio_to_floor("engine"), None);
    let table = render_cell(&cells[0], 2);
    assert!(
        table.starts_with("### 32 B, 1000 conns × 1 in flight\n"),
        "{table}"
    );
    assert!(table.contains("| server CPU ÷ floor |"));
    assert!(
        table.contains("| engine | 400,000 | 12.0 | 40.0 | 80.0 | 1.800 | 0.500 | 3.60 |"),
        "{table}"
    );
    assert!(table.contains("| grpc-echo | skipped: a test reason |"));
    assert!(render_cell(&cells[1], 1).contains("| peer-reflect | failed: server exited |"));
    assert!(render_cell(&cells[2], 2).contains("Skipped: 10000 MiB in flight."));
}

#[test]
fn matrix_json_has_every_cell_its_ratios_and_idle_memory() {
    let cells = sample_matrix();
    let file = MatrixFile {
        command_line: "compare --matrix".into(),
        machine: Machine {
            cpu_model: "Test CPU".into(),
            nproc: 2,
            kernel: "6.1".into(),
        },
        pinning: Pinning {
            server_cpu: 0,
            loadgen_cpu: 1,
        },
        rounds: 2,
        duration_s: 2.0,
        warmup_s: 1.0,
        floor: FLOOR,
        servers: vec!["engine".into(), "peer-reflect".into(), "grpc-echo".into()],
        cells: cells.iter().map(CellSummary::from).collect(),
        idle_rss: vec![IdleRss {
            server: "engine".into(),
            connections: 10_000,
            prelude: Prelude::ArpcEcho,
            outcome: IdleOutcome::Measured(IdleFigures::new(
                10_000_000,
                20_000_000,
                10_000,
                Some(10_000),
            )),
        }],
    };
    let json: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    assert_eq!(json["floor"], "peer-reflect");
    assert_eq!(json["machine"]["cpu_model"], "Test CPU");
    let first = &json["cells"][0];
    assert_eq!(first["payload_bytes"], 32);
    assert_eq!(first["conns"], 1000);
    assert_eq!(first["per_conn"], 1);
    assert!(first["skipped"].is_null());
    assert_eq!(first["floor_server_cpu_us_per_request"], 0.5);
    let engine = &first["servers"][0];
    assert_eq!(engine["name"], "engine");
    assert_eq!(engine["median_round"], 2);
    assert_eq!(engine["median"]["server_cpu_us_per_request"], 1.8);
    assert!((engine["server_cpu_ratio_to_floor"].as_f64().unwrap() - 3.6).abs() < 1e-9);
    assert_eq!(engine["floor_rate_ratio"], 2.0);
    assert_eq!(engine["rounds"].as_array().unwrap().len(), 2);
    assert_eq!(first["skipped_servers"][0]["name"], "grpc-echo");
    assert!(json["cells"][1]["servers"][0]["server_cpu_ratio_to_floor"].is_null());
    assert_eq!(json["cells"][2]["skipped"], "10000 MiB in flight");
    assert_eq!(json["idle_rss"][0]["bytes_per_connection"], 1000.0);
    assert_eq!(json["idle_rss"][0]["server_fds_gained"], 10_000);
}

#[test]
fn matrix_chart_has_a_panel_per_load_and_a_line_per_server() {
    let cells = sample_matrix();
    let servers: Vec<String> = vec!["engine".into(), "peer-reflect".into()];
    let series = cpu_series(&cells, &servers);
    // The skipped 10,000-connection cell has no figures but still names its load.
    assert_eq!(series.len(), 2);
    let (load, lines) = &series[0];
    assert_eq!(load.conns, 1000);
    assert_eq!(lines[0].server, "engine");
    assert_eq!(lines[0].points, [(32.0, 1.8), (65_536.0, 12.0)]);
    assert_eq!(lines[1].points, [(32.0, 0.5)]);
    assert!(series[1].1.is_empty());

    let dir = std::env::temp_dir().join(format!("ringrpc-matrix-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("matrix.svg");
    let panels: Vec<CpuPanel> = series
        .into_iter()
        .map(|(load, lines)| CpuPanel {
            title: format!("{} conns × {} in flight", load.conns, load.per_conn),
            lines: lines.into_iter().map(|s| (s.server, s.points)).collect(),
        })
        .collect();
    write_cpu_chart(&path, "Server CPU per request", &servers, &panels).expect("chart is written");
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(svg.starts_with("<svg"));
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    for text in [
        "32 B",
        "64 KiB",
        "1000 conns × 1 in flight",
        "10000 conns × 1 in flight",
        "engine",
        "peer-reflect",
    ] {
        assert!(texts.contains(&text), "no text {text:?}");
    }
    assert!(write_cpu_chart(&path, "t", &servers, &[]).is_err());
}
