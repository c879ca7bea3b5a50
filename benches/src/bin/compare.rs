//! compare: runs ringrpc's engine and its peers side by side under the same echo load and
//! writes the table, every run's JSON, a summary and a latency chart.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringrpc_benches::compare::by_driver::render_ratio_summary;
use ringrpc_benches::compare::certs::make_certificate;
use ringrpc_benches::compare::chart::{CpuPanel, write_cpu_chart};
use ringrpc_benches::compare::chart::{LatencyCurve, write_latency_chart};
use ringrpc_benches::compare::drivers::{
    DEFAULT_DRIVERS, DEFAULT_MATRIX_DRIVERS, expand, parse_drivers,
};
use ringrpc_benches::compare::idle::{IdleOutcome, IdleRss};
use ringrpc_benches::compare::machine::Machine;
use ringrpc_benches::compare::matrix::{
    CellResult, CellSummary, DEFAULT_LOADS, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_PAYLOADS, FLOOR,
    MatrixFile, cells, cpu_series, parse_loads, parse_payloads, render_matrix, server_skip_reason,
};
use ringrpc_benches::compare::open_load::{
    OpenLoadBase, OpenLoadCell, OpenLoadCellSummary, matrix_json, parse_percents, render_open_load,
    run_open_load,
};
use ringrpc_benches::compare::runner::{RunFiles, Runner, check_taskset, shell_quote};
use ringrpc_benches::compare::servers::{
    CompareTransport, EXTRA_CMD_VAR, EXTRA_NAME_VAR, ServerSpec, extra_server, opt_in_servers,
    select, servers_for,
};
use ringrpc_benches::compare::settings::{LoadShape, Pinning, check_descriptors, utc_timestamp};
use ringrpc_benches::compare::summary::{
    RunOutcome, RunRecord, ServerResult, ServerSummary, SummaryFile,
};
use ringrpc_benches::compare::table::{ReportContext, format_rate, render_report};
use ringrpc_benches::compare::targets::evaluate;
use ringrpc_loadgen::parse_duration;
use ringrpc_protocol::units::parse_size;

const DEFAULT_DURATION: Duration = Duration::from_secs(5);
/// Shorter runs keep the full matrix (12 cells × 6 servers × 3 rounds) near 25 minutes.
const MATRIX_DURATION: Duration = Duration::from_secs(2);
const DEFAULT_WARMUP: Duration = Duration::from_secs(1);

const ENVIRONMENT_HELP: &str = "\
External server (an extra row, e.g. Go arpc's echo server):
  COMPARE_EXTRA_NAME=arpc-go \\
  COMPARE_EXTRA_CMD='/path/to/server --addr 127.0.0.1:{port}' scripts/compare
  {port} is replaced by a free port. The command runs as `sh -c 'exec COMMAND'` (so it must be
  one command; its PID is the one measured and stopped), pinned like the others, and counts as
  ready once 127.0.0.1:{port} accepts TCP connections (within 10 s). It must serve arpc's
  /echo. COMPARE_EXTRA_NAME defaults to \"extra\" and names the row and its files.

Outputs in --out:
  <server>-round<N>.json          loadgen's report of every run
  <server>-round<N>.server.log    the server's output
  <server>-round<N>.loadgen.txt   loadgen's command, text report and stderr
  summary.json                    every round's figures and the median chosen, per server
  table.md                        the table, machine, command lines and targets (also printed)
  latency.svg                     latency percentile curves of every server's median run

With --matrix (payload × load cells, each running every server in interleaved rounds):
  <cell>/<server>-round<N>.*      each run's files, e.g. 8x10-4KiB/engine-round1.json
  matrix.md                       a table per cell, with server CPU ÷ the floor's (peer-reflect)
                                  measured by the same --drivers driver, the idle memory table,
                                  the ratios by driver and, with --open-load, the latency at
                                  each percentage of the closed-loop maximum (also printed)
  matrix.json                     every cell's rounds, medians and ratios, idle memory and the
                                  open-load runs
  <cell>/<row>-open<P>-round<N>.* each open-load run's files
  matrix.svg                      server CPU µs/request by payload, one line per server, one
                                  panel per load
  <server>-idle.server.log        the server's output during the idle memory measurement
Connections past the open-files limit fail: compare raises its soft limit to the hard one
(`ulimit -Hn`), which its servers and loadgen inherit. Each holds one descriptor per
connection, so 10000x1 needs a hard limit of at least 10,100; compare checks this before
the first run.";

/// Side-by-side echo comparison of ringrpc's engine with its peers.
///
/// For each round, every selected server is started fresh, pinned to --server-cpu, and driven
/// by loadgen pinned to --loadgen-cpu; then it is stopped (SIGTERM, SIGKILL after 10 s).
/// Rows use the run whose requests/s is the median over the rounds. A failed run is recorded
/// with its reason and the comparison goes on.
#[derive(Debug, Parser)]
#[command(name = "compare", after_long_help = ENVIRONMENT_HELP)]
struct Cli {
    /// Rounds; each runs every server once, in --servers order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Measured time per run: 500ms, 5s, 2m or plain seconds [default: 5s; 2s with --matrix].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Load applied before measuring starts in each run [default: 1s].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Connections loadgen opens (UDP rows: connected UDP sockets).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "matrix")]
    conns: u32,
    /// Requests kept in flight on each connection.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "matrix")]
    per_conn: u32,
    /// Payload bytes per request (4096, 4KiB, 4k: units as loadgen takes them).
    #[arg(long, value_name = "BYTES", default_value_t = 32, value_parser = ringrpc_protocol::units::parse_size_as::<usize>, conflicts_with = "matrix")]
    payload: usize,
    /// Run the matrix: every cell of --matrix-payloads × --matrix-loads, every server in
    /// interleaved rounds within each cell, then idle memory at --idle-conns; writes
    /// matrix.md, matrix.json and matrix.svg. TCP servers only.
    #[arg(long)]
    matrix: bool,
    /// The matrix's payloads, comma-separated: bytes, or with KiB/MiB (4k, 64KiB, 1m).
    #[arg(long, default_value = DEFAULT_PAYLOADS, requires = "matrix")]
    matrix_payloads: String,
    /// The matrix's loads, comma-separated CONNSxPER_CONN.
    #[arg(long, default_value = DEFAULT_LOADS, requires = "matrix")]
    matrix_loads: String,
    /// Skip cells whose requests in flight carry more payload than this (conns × per-conn ×
    /// payload; the server and loadgen each buffer it) [default: 1GiB, which skips only
    /// 10000x1 at 1 MiB].
    #[arg(long, value_parser = parse_size, requires = "matrix")]
    matrix_max_in_flight: Option<u64>,
    /// loadgen drivers measuring every row, comma-separated: uring, epoll (`loadgen
    /// --driver`); with several, rows are named SERVER@DRIVER and each is compared with the
    /// floor measured by its driver [default: uring; uring,epoll with --matrix].
    #[arg(long)]
    drivers: Option<String>,
    /// With --matrix: after each cell's closed-loop rounds, run every row again open loop
    /// (`loadgen --rate`) at these percentages of its closed-loop maximum, e.g. 50,90, and
    /// report p50/p99/p99.9 beside the floor's.
    #[arg(long, value_name = "PERCENTS", requires = "matrix")]
    open_load: Option<String>,
    /// What --open-load's percentages are of: each row's `own` maximum, or the `floor`'s
    /// (same driver), so every row runs at the same rates.
    #[arg(long, value_enum, default_value = "own", requires = "open_load")]
    open_load_base: OpenLoadBase,
    /// Measure only idle memory (RSS per idle connection at --idle-conns), no load.
    #[arg(long, conflicts_with = "matrix")]
    idle_rss: bool,
    /// Idle connections held open to measure RSS per connection, with --matrix or
    /// --idle-rss; 0 skips the measurement.
    #[arg(long, default_value_t = 10_000)]
    idle_conns: usize,
    /// CPU the server is pinned to.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU loadgen is pinned to.
    #[arg(long, default_value_t = 1)]
    loadgen_cpu: usize,
    /// Comma-separated rows to run, from those --transport offers: engine, engine-async (the
    /// engine's /echo/async), reflect (the engine's --reflect), peer-reflect (the epoll
    /// floor), peer-tokio, peer-tokio-uring,
    /// grpc-echo and the external server's name (tcp);
    /// engine-udp, udp-reflect (udp) [default: all of them]. Only when named: engine-tls
    /// (the engine with a certificate compare makes), haproxy-tls (HAProxy terminating TLS
    /// in front of the engine; server CPU is both processes'), engine-unix (the engine on a
    /// Unix socket).
    #[arg(long)]
    servers: Option<String>,
    /// Rows offered: `tcp` the TCP servers; `udp` the engine's UDP endpoint
    /// (`engine --udp-listen`) and peer-udp-reflect, the UDP floor, driven by
    /// `loadgen --transport udp`; `all` both in one run.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: CompareTransport,
    /// Directory holding engine, loadgen and the peer binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Output directory [default: results/compare-YYYYMMDDTHHMMSSZ, the UTC start time].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match compare(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("compare: {why}");
            ExitCode::from(2)
        }
    }
}

fn compare(cli: &Cli) -> Result<(), String> {
    // Servers and loadgen inherit the limit; 10,000 connections need more than 1024.
    if let Err(e) = ringrpc_uring::sys::raise_nofile_limit() {
        eprintln!("compare: cannot raise the open-files limit: {e}");
    }
    if cli.server_cpu == cli.loadgen_cpu {
        return Err(format!(
            "--server-cpu and --loadgen-cpu are both {}: give each side its own CPU",
            cli.server_cpu
        ));
    }
    let mut available = servers_for(cli.transport);
    let extra = extra_server(
        std::env::var(EXTRA_NAME_VAR).ok(),
        std::env::var(EXTRA_CMD_VAR).ok(),
    )?;
    // The external server speaks arpc over TCP.
    if cli.transport != CompareTransport::Udp {
        available.extend(extra);
    } else if let Some(spec) = extra {
        eprintln!(
            "compare: {EXTRA_CMD_VAR} ({}) is a TCP server; --transport udp leaves it out",
            spec.name
        );
    }
    let matrix = cli.matrix || cli.idle_rss;
    if matrix && cli.transport != CompareTransport::Tcp {
        return Err("--matrix and --idle-rss run TCP servers only: leave out --transport".into());
    }
    let servers = select(available, opt_in_servers(), cli.servers.as_deref())?;
    let default_drivers = if cli.matrix {
        DEFAULT_MATRIX_DRIVERS
    } else {
        DEFAULT_DRIVERS
    };
    let drivers = parse_drivers(cli.drivers.as_deref().unwrap_or(default_drivers))?;
    let (rows, notes) = expand(&servers, &drivers);
    notes.iter().for_each(|note| eprintln!("compare: {note}"));
    let duration = cli.duration.unwrap_or(if matrix {
        MATRIX_DURATION
    } else {
        DEFAULT_DURATION
    });
    let warmup = cli.warmup.unwrap_or(DEFAULT_WARMUP);
    let out = cli.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let certificate = servers
        .iter()
        .any(|s| s.launch.needs_certificate())
        .then(|| make_certificate(&out))
        .transpose()?;
    let runner = Runner {
        work_dir: out.clone(),
        certificate,
        bin_dir: cli.bin_dir.clone(),
        load: LoadShape {
            conns: cli.conns as usize,
            per_conn: cli.per_conn as usize,
            payload_bytes: cli.payload,
            duration,
            warmup,
            rate: None,
        },
        pinning: Pinning {
            server_cpu: cli.server_cpu,
            loadgen_cpu: cli.loadgen_cpu,
        },
    };
    let missing = runner.missing_binaries(&rows);
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "missing {}; build them with `cargo build --release -p ringrpc-cli -p ringrpc-loadgen -p ringrpc-benches` (scripts/compare does) or point --bin-dir at them",
            names.join(", ")
        ));
    }
    check_taskset(cli.server_cpu)?;
    check_taskset(cli.loadgen_cpu)?;

    let machine = Machine::detect();
    let command_line = std::env::args()
        .map(|arg| shell_quote(&arg))
        .collect::<Vec<_>>()
        .join(" ");
    let rounds = cli.rounds as usize;
    if matrix {
        return run_matrix(cli, &runner, &rows, &servers, &out, &machine, &command_line);
    }
    let per_run = warmup + duration;
    eprintln!(
        "compare: {} server{} × {rounds} round{}, {:.0} s of load each ({:.0} s in all); results in {}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if rounds == 1 { "" } else { "s" },
        per_run.as_secs_f64(),
        per_run.as_secs_f64() * (rows.len() * rounds) as f64,
        out.display()
    );

    let mut results: Vec<ServerResult> = rows
        .iter()
        .map(|spec| ServerResult {
            name: spec.name.clone(),
            runs: Vec::new(),
        })
        .collect();
    for round in 1..=rounds {
        for (spec, result) in rows.iter().zip(&mut results) {
            let record = run_and_log(&runner, spec, round, rounds, &out, "");
            result.runs.push(record);
        }
    }

    let targets = evaluate(&results);
    let run_commands: Vec<String> = rows.iter().map(|s| runner.describe_run(s)).collect();
    let report = render_report(
        &results,
        rounds,
        &ReportContext {
            machine: &machine,
            command_line: &command_line,
            run_commands: &run_commands,
            targets: &targets,
        },
    );
    write(&out.join("table.md"), &report)?;
    let summary = SummaryFile {
        command_line: command_line.clone(),
        machine: machine.clone(),
        load: runner.load.clone(),
        pinning: runner.pinning,
        rounds,
        servers: results.iter().map(ServerSummary::from).collect(),
        targets,
    };
    write(&out.join("summary.json"), &summary.to_json())?;
    let chart_path = out.join("latency.svg");
    let chart = write_latency_chart(
        &chart_path,
        &chart_title(&runner.load, &machine),
        &curves(&results),
    );

    println!("{report}");
    println!("Outputs in {}:", out.display());
    println!("- table.md, summary.json");
    match chart {
        Ok(()) => println!("- latency.svg"),
        Err(why) => println!("- no latency.svg: {why}"),
    }
    println!("- <server>-round<N>.json for every run (with .server.log and .loadgen.txt)");
    Ok(())
}

/// The matrix: each cell runs every row (server × driver) in interleaved rounds, then, with
/// --open-load, again open loop; then idle memory of every server.
fn run_matrix(
    cli: &Cli,
    runner: &Runner,
    servers: &[ServerSpec],
    idle_servers: &[ServerSpec],
    out: &Path,
    machine: &Machine,
    command_line: &str,
) -> Result<(), String> {
    let rounds = cli.rounds as usize;
    let all_cells = if cli.matrix {
        cells(
            &parse_payloads(&cli.matrix_payloads)?,
            &parse_loads(&cli.matrix_loads)?,
        )
    } else {
        Vec::new()
    };
    let max_in_flight = cli
        .matrix_max_in_flight
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT_BYTES);
    // loadgen and the servers hold one descriptor per connection, as does the idle
    // measurement here.
    let most_loadgen = all_cells
        .iter()
        .filter(|c| c.skip_reason(max_in_flight).is_none())
        .map(|c| c.load.conns)
        .max()
        .unwrap_or(0);
    check_descriptors(cli.idle_conns.max(most_loadgen))?;
    let runnable = all_cells
        .iter()
        .filter(|c| c.skip_reason(max_in_flight).is_none())
        .count();
    let per_run = runner.load.warmup + runner.load.duration;
    eprintln!(
        "compare --matrix: {runnable} of {} cells × {} servers × {rounds} rounds, {:.0} s of load each ({:.0} min of load in all){}; results in {}",
        all_cells.len(),
        servers.len(),
        per_run.as_secs_f64(),
        per_run.as_secs_f64() * (runnable * servers.len() * rounds) as f64 / 60.0,
        if cli.idle_conns > 0 {
            format!(", then idle memory at {} connections", cli.idle_conns)
        } else {
            String::new()
        },
        out.display()
    );
    let percents = cli.open_load.as_deref().map(parse_percents).transpose()?;
    let mut open_cells: Vec<OpenLoadCell> = Vec::new();
    let mut results: Vec<CellResult> = Vec::new();
    for (index, cell) in all_cells.iter().enumerate() {
        let prefix = format!("[{}/{}] {:<14} ", index + 1, all_cells.len(), cell.id());
        if let Some(why) = cell.skip_reason(max_in_flight) {
            eprintln!("{prefix}skipped: {why}");
            results.push(CellResult {
                cell: *cell,
                skipped: Some(why),
                results: Vec::new(),
                skipped_servers: Vec::new(),
            });
            continue;
        }
        let mut cell_runner = runner.clone();
        cell_runner.load.conns = cell.load.conns;
        cell_runner.load.per_conn = cell.load.per_conn;
        cell_runner.load.payload_bytes = cell.payload_bytes;
        let dir = out.join(cell.id());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut skipped_servers = Vec::new();
        let mut chosen: Vec<&ServerSpec> = Vec::new();
        for spec in servers {
            match server_skip_reason(spec, cell) {
                Some(why) => {
                    eprintln!("{prefix}{}: skipped: {why}", spec.name);
                    skipped_servers.push((spec.name.clone(), why));
                }
                None => chosen.push(spec),
            }
        }
        let mut cell_results: Vec<ServerResult> = chosen
            .iter()
            .map(|spec| ServerResult {
                name: spec.name.clone(),
                runs: Vec::new(),
            })
            .collect();
        for round in 1..=rounds {
            for (spec, result) in chosen.iter().zip(&mut cell_results) {
                let record = run_and_log(&cell_runner, spec, round, rounds, &dir, &prefix);
                result.runs.push(record);
            }
        }
        if let Some(percents) = &percents {
            let rows = run_open_load(
                &cell_runner,
                &chosen,
                &cell_results,
                percents,
                cli.open_load_base,
                rounds,
                |r, spec, round| run_and_log(r, spec, round, rounds, &dir, &prefix),
            );
            open_cells.push(OpenLoadCell { cell: *cell, rows });
        }
        results.push(CellResult {
            cell: *cell,
            skipped: None,
            results: cell_results,
            skipped_servers,
        });
    }

    let mut idle: Vec<IdleRss> = Vec::new();
    if cli.idle_conns > 0 {
        for spec in idle_servers {
            eprint!("idle memory  {:<18}", spec.name);
            let log = out.join(format!("{}-idle.server.log", spec.name));
            let row = runner.idle_rss(spec, cli.idle_conns, &log);
            match &row.outcome {
                IdleOutcome::Measured(f) => eprintln!(
                    "{:>8.0} B per idle connection (RSS {:.1} → {:.1} MiB, {} fds gained)",
                    f.bytes_per_connection,
                    f.rss_before_bytes as f64 / 1048576.0,
                    f.rss_after_bytes as f64 / 1048576.0,
                    f.server_fds_gained.map_or("?".into(), |n| n.to_string())
                ),
                IdleOutcome::Failed { failure } => eprintln!("FAILED: {failure}"),
            }
            idle.push(row);
        }
    }

    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    let mut report = render_matrix(&results, &idle, rounds, machine, command_line);
    report.push_str(&render_ratio_summary(&results, &names));
    for open in &open_cells {
        report.push_str(&render_open_load(open, cli.open_load_base));
        report.push('\n');
    }
    write(&out.join("matrix.md"), &report)?;
    let file = MatrixFile {
        command_line: command_line.to_owned(),
        machine: machine.clone(),
        pinning: runner.pinning,
        rounds,
        duration_s: runner.load.duration.as_secs_f64(),
        warmup_s: runner.load.warmup.as_secs_f64(),
        floor: FLOOR,
        servers: names.clone(),
        cells: results.iter().map(CellSummary::from).collect(),
        idle_rss: idle,
    };
    let open_load: Vec<OpenLoadCellSummary> = open_cells
        .iter()
        .map(|open| OpenLoadCellSummary::new(open, cli.open_load_base))
        .collect();
    write(&out.join("matrix.json"), &matrix_json(&file, &open_load))?;
    let panels: Vec<CpuPanel> = cpu_series(&results, &names)
        .into_iter()
        .map(|(load, series)| CpuPanel {
            title: format!("{} conns × {} in flight", load.conns, load.per_conn),
            lines: series.into_iter().map(|s| (s.server, s.points)).collect(),
        })
        .collect();
    println!("{report}");
    println!("Outputs in {}:", out.display());
    println!("- matrix.md, matrix.json");
    if !panels.is_empty() {
        let title = format!(
            "Server CPU per echo request by payload — {}, server on CPU {}",
            machine.cpu_model, runner.pinning.server_cpu
        );
        match write_cpu_chart(&out.join("matrix.svg"), &title, &names, &panels) {
            Ok(()) => println!("- matrix.svg"),
            Err(why) => println!("- no matrix.svg: {why}"),
        }
    }
    println!("- <cell>/<server>-round<N>.json for every run (with .server.log and .loadgen.txt)");
    Ok(())
}

/// Runs one server once and says how it went on stderr.
fn run_and_log(
    runner: &Runner,
    spec: &ServerSpec,
    round: usize,
    rounds: usize,
    out: &Path,
    prefix: &str,
) -> RunRecord {
    let stem = format!("{}-round{round}", spec.name);
    let files = RunFiles {
        json: out.join(format!("{stem}.json")),
        server_log: out.join(format!("{stem}.server.log")),
        loadgen_log: out.join(format!("{stem}.loadgen.txt")),
    };
    eprint!("{prefix}round {round}/{rounds}  {:<18}", spec.name);
    let outcome = runner.run_once(spec, &files);
    match &outcome {
        RunOutcome::Measured(report) => eprintln!(
            "{:>12} req/s  p50 {:.1} µs  p99 {:.1} µs",
            format_rate(report.requests_per_second),
            report.latency_us.p50,
            report.latency_us.p99
        ),
        RunOutcome::Failed(why) => eprintln!("FAILED: {why}"),
    }
    RunRecord {
        round,
        json_path: files.json,
        outcome,
    }
}

fn curves(results: &[ServerResult]) -> Vec<LatencyCurve> {
    results
        .iter()
        .filter_map(|result| {
            let report = result.median()?;
            let label = format!(
                "{} ({} req/s)",
                result.name,
                format_rate(report.requests_per_second)
            );
            Some(LatencyCurve::from_spectrum(
                label,
                &report.percentile_spectrum,
            ))
        })
        .collect()
}

fn chart_title(load: &LoadShape, machine: &Machine) -> String {
    format!(
        "Echo latency by percentile — {} B payload, {} conns × {} in flight — {}",
        load.payload_bytes, load.conns, load.per_conn, machine.cpu_model
    )
}

fn default_out_dir() -> PathBuf {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Path::new("results").join(format!("compare-{}", utc_timestamp(now)))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
