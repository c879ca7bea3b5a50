//! compare: runs ringrpc's engine and its peers side by side under the same echo load and
//! writes the table, every run's JSON, a summary and a latency chart.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringrpc_benches::compare::chart::{LatencyCurve, write_latency_chart};
use ringrpc_benches::compare::machine::Machine;
use ringrpc_benches::compare::runner::{RunFiles, Runner, check_taskset, shell_quote};
use ringrpc_benches::compare::servers::{
    CompareTransport, EXTRA_CMD_VAR, EXTRA_NAME_VAR, ServerSpec, extra_server, select, servers_for,
};
use ringrpc_benches::compare::settings::{LoadShape, Pinning, utc_timestamp};
use ringrpc_benches::compare::summary::{
    RunOutcome, RunRecord, ServerResult, ServerSummary, SummaryFile,
};
use ringrpc_benches::compare::table::{ReportContext, format_rate, render_report};
use ringrpc_benches::compare::targets::evaluate;
use ringrpc_loadgen::parse_duration;

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
  latency.svg                     latency percentile curves of every server's median run";

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
    /// Measured time per run: 500ms, 5s, 2m or plain seconds.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Load applied before measuring starts in each run.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Connections loadgen opens (UDP rows: connected UDP sockets).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    conns: u32,
    /// Requests kept in flight on each connection.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    per_conn: u32,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// CPU the server is pinned to.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU loadgen is pinned to.
    #[arg(long, default_value_t = 1)]
    loadgen_cpu: usize,
    /// Comma-separated rows to run, from those --transport offers: engine, reflect,
    /// peer-tokio, peer-tokio-uring, grpc-echo and the external server's name (tcp);
    /// engine-udp, udp-reflect (udp) [default: all of them].
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
    let servers = select(available, cli.servers.as_deref())?;
    let runner = Runner {
        bin_dir: cli.bin_dir.clone(),
        load: LoadShape {
            conns: cli.conns as usize,
            per_conn: cli.per_conn as usize,
            payload_bytes: cli.payload,
            duration: cli.duration,
            warmup: cli.warmup,
        },
        pinning: Pinning {
            server_cpu: cli.server_cpu,
            loadgen_cpu: cli.loadgen_cpu,
        },
    };
    let missing = runner.missing_binaries(&servers);
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "missing {}; build them with `cargo build --release -p ringrpc-cli -p ringrpc-loadgen -p ringrpc-benches` (scripts/compare does) or point --bin-dir at them",
            names.join(", ")
        ));
    }
    check_taskset(cli.server_cpu)?;
    check_taskset(cli.loadgen_cpu)?;
    let out = cli.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    let machine = Machine::detect();
    let command_line = std::env::args()
        .map(|arg| shell_quote(&arg))
        .collect::<Vec<_>>()
        .join(" ");
    let rounds = cli.rounds as usize;
    let per_run = cli.warmup + cli.duration;
    eprintln!(
        "compare: {} server{} × {rounds} round{}, {:.0} s of load each ({:.0} s in all); results in {}",
        servers.len(),
        if servers.len() == 1 { "" } else { "s" },
        if rounds == 1 { "" } else { "s" },
        per_run.as_secs_f64(),
        per_run.as_secs_f64() * (servers.len() * rounds) as f64,
        out.display()
    );

    let mut results: Vec<ServerResult> = servers
        .iter()
        .map(|spec| ServerResult {
            name: spec.name.clone(),
            runs: Vec::new(),
        })
        .collect();
    for round in 1..=rounds {
        for (spec, result) in servers.iter().zip(&mut results) {
            let record = run_and_log(&runner, spec, round, rounds, &out);
            result.runs.push(record);
        }
    }

    let targets = evaluate(&results);
    let run_commands: Vec<String> = servers.iter().map(|s| runner.describe_run(s)).collect();
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

/// Runs one server once and says how it went on stderr.
fn run_and_log(
    runner: &Runner,
    spec: &ServerSpec,
    round: usize,
    rounds: usize,
    out: &Path,
) -> RunRecord {
    let stem = format!("{}-round{round}", spec.name);
    let files = RunFiles {
        json: out.join(format!("{stem}.json")),
        server_log: out.join(format!("{stem}.server.log")),
        loadgen_log: out.join(format!("{stem}.loadgen.txt")),
    };
    eprint!("round {round}/{rounds}  {:<18}", spec.name);
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
