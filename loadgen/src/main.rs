//! The `loadgen` binary: parses flags, runs the load, prints the report, sets the exit status
//! (0 success, 1 failed requests, 2 usage or connection problems).

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use ringrpc_loadgen::{Cli, Config, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // Flags that do not fit together are refused in clap's words, like a bad value is
    // (`error: ...`, the usage line, the `--help` hint, exit status 2).
    let config = match Config::from_cli(Cli::parse()) {
        Ok(config) => config,
        Err(e) => Cli::command().error(ErrorKind::ArgumentConflict, e).exit(),
    };
    // Every connection is a descriptor, and --conns 10000 is past many shells' soft limit of
    // 1024; the hard limit is as far as an unprivileged process may go.
    if let Err(e) = ringrpc_uring::sys::raise_nofile_limit() {
        eprintln!("loadgen: cannot raise the open-files limit: {e}");
    }
    // Open the JSON file first so a bad path fails before the run, not after it.
    let mut json_file = match config.json.as_ref().map(|path| (path, File::create(path))) {
        None => None,
        Some((_, Ok(file))) => Some(file),
        Some((path, Err(e))) => {
            eprintln!("loadgen: cannot create {}: {e}", path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let report = match run(&config) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    print!("{}", report.render_text());
    if let (Some(file), Some(path)) = (json_file.as_mut(), config.json.as_ref()) {
        if let Err(e) = file.write_all(report.to_json().as_bytes()) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    for why in &report.failures {
        eprintln!("loadgen: FAILED: {why}");
    }
    ExitCode::from(report.exit_code())
}
