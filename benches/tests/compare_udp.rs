//! compare's UDP plumbing end to end: the udp-reflect row is started on a free UDP port,
//! probed until it answers, driven by the real loadgen with `--transport udp --reflect`, and
//! stopped. (engine-udp goes through the same path once the engine has `--udp-listen`.)

mod common;

use std::path::PathBuf;
use std::time::Duration;

use ringrpc_benches::compare::runner::{RunFiles, Runner};
use ringrpc_benches::compare::servers::{CompareTransport, select, servers_for};
use ringrpc_benches::compare::settings::{LoadShape, Pinning};
use ringrpc_benches::compare::summary::RunOutcome;

/// Builds loadgen (the tests' profile) and returns the directory cargo put it in.
fn loadgen_dir() -> PathBuf {
    common::build_beside_loadgen(&["-p", "ringrpc-loadgen", "--bin", "loadgen"])
}

#[test]
fn compare_runs_the_udp_reflect_row() {
    let bin_dir = loadgen_dir();
    // peer-udp-reflect is built beside loadgen, as cargo builds this package's binaries for
    // its tests in the same profile directory.
    let reflect = PathBuf::from(env!("CARGO_BIN_EXE_peer-udp-reflect"));
    assert_eq!(reflect.parent(), Some(bin_dir.as_path()));
    let servers = select(
        servers_for(CompareTransport::Udp),
        vec![],
        Some("udp-reflect"),
    )
    .unwrap();
    let cpus = core_count();
    let runner = Runner {
        bin_dir,
        work_dir: std::env::temp_dir(),
        certificate: None,
        load: LoadShape {
            conns: 4,
            per_conn: 4,
            payload_bytes: 32,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            rate: None,
        },
        pinning: Pinning {
            server_cpu: 0,
            loadgen_cpu: if cpus > 1 { 1 } else { 0 },
        },
    };
    assert!(runner.missing_binaries(&servers).is_empty());
    let out = std::env::temp_dir().join(format!("compare-udp-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let files = RunFiles {
        json: out.join("udp-reflect-round1.json"),
        server_log: out.join("udp-reflect-round1.server.log"),
        loadgen_log: out.join("udp-reflect-round1.loadgen.txt"),
    };
    let outcome = runner.run_once(&servers[0], &files);
    let loadgen_log = std::fs::read_to_string(&files.loadgen_log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    match outcome {
        RunOutcome::Measured(report) => {
            assert!(report.success);
            assert!(report.requests_per_second > 0.0);
            assert!(report.server_cpu_us_per_request.is_some());
            assert!(
                loadgen_log.contains("--transport udp --reflect"),
                "{loadgen_log}"
            );
            assert!(loadgen_log.contains("arpc over UDP"), "{loadgen_log}");
        }
        RunOutcome::Failed(why) => panic!("udp-reflect run failed: {why}\n{loadgen_log}"),
    }
    assert!(
        runner
            .describe_run(&servers[0])
            .contains("peer-udp-reflect --listen 127.0.0.1:PORT")
    );
}

fn core_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
