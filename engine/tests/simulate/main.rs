//! Deterministic simulation of the sans-IO core: a server and its clients — raw TCP,
//! WebSocket and UDP — as the real connection, lifecycle, session, stream, pub/sub and
//! datagram state machines (`ringrpc::simulation`), over a simulated network and clock,
//! every choice drawn from one seed. See `check.rs` for the invariants.
//!
//! `cargo test -p ringrpc --test simulate` runs the CI seeds; `scripts/simulate` passes
//! its arguments here:
//!   --seeds N      how many seeds (default 300, or RINGRPC_SIM_SEEDS)
//!   --from S       the first seed (default 1)
//!   --seed S       one seed, with its digest; `--trace` prints what happens
//! A failing seed prints what broke and replays identically with `--seed S`.
//!
//! Not a libtest harness (`harness = false` in Cargo.toml): libtest's flags are accepted and
//! ignored, and a name filter that does not match `simulate` skips the run.

mod check;
mod io;
mod ledger;
mod net;
mod rng;
mod scenario;
mod work;
mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

struct Args {
    seeds: u64,
    from: u64,
    one: Option<u64>,
    trace: bool,
    skip: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: std::env::var("RINGRPC_SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
        from: 1,
        one: None,
        trace: false,
        skip: false,
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| {
        v.and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seeds" => args.seeds = number(it.next(), "--seeds")?,
            "--from" => args.from = number(it.next(), "--from")?,
            "--seed" => args.one = Some(number(it.next(), "--seed")?),
            "--trace" => args.trace = true,
            "--list" => {
                println!("simulate: test");
                args.skip = true;
            }
            // libtest's own flags (cargo test -- --nocapture and the like).
            a if a.starts_with('-') => {}
            filter => args.skip |= !"simulate".contains(filter),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    if args.skip {
        return ExitCode::SUCCESS;
    }
    // A panic is a finding: report it with its seed, quietly.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        eprintln!("panic at {at}: {msg}");
    }));
    let seeds: Vec<u64> = match args.one {
        Some(s) => vec![s],
        None => (args.from..args.from + args.seeds).collect(),
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut total = world::Tally::default();
    for (i, &seed) in seeds.iter().enumerate() {
        let outcome = catch_unwind(AssertUnwindSafe(|| check::run(seed, args.trace)));
        let problems = match outcome {
            Ok(o) => {
                add(&mut total, &o.tally);
                if args.one.is_some() || i == 0 {
                    // The first seed runs twice: a replay must take the same path.
                    let again = catch_unwind(AssertUnwindSafe(|| check::run(seed, false)));
                    match again {
                        Ok(a) if a.digest == o.digest => {}
                        Ok(a) => {
                            failures.push(seed);
                            println!(
                                "seed {seed}: replay diverged (digest {:016x} then {:016x})",
                                o.digest, a.digest
                            );
                        }
                        Err(_) => {}
                    }
                }
                if args.one.is_some() {
                    println!("seed {seed}: digest {:016x}, {:?}", o.digest, o.tally);
                }
                o.violations
            }
            Err(_) => vec!["panicked (see above)".to_string()],
        };
        if !problems.is_empty() {
            failures.push(seed);
            println!("seed {seed} FAILED (replay: scripts/simulate --seed {seed} --trace):");
            for p in problems {
                println!("  {p}");
            }
        }
    }
    failures.dedup();
    println!(
        "{} seeds, {} failures ({:.1}s; {} steps, {} calls: {} answered, {} failed ({} timed \
         out, {} disconnected, {} overstocked, {} refused); {} stream frames; {} publications, \
         {} deliveries; {} datagrams; {} faults; {} overstocks; {} direct recvs; {} bound \
         checks)",
        seeds.len(),
        failures.len(),
        started.elapsed().as_secs_f64(),
        total.steps,
        total.calls,
        total.answered,
        total.failed,
        total.timeouts,
        total.disconnected,
        total.overstocked,
        total.refused,
        total.stream_frames,
        total.publications,
        total.deliveries,
        total.datagrams,
        total.faults,
        total.overstocks,
        total.direct_recvs,
        total.checks,
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {failures:?}");
        ExitCode::FAILURE
    }
}

fn add(total: &mut world::Tally, t: &world::Tally) {
    total.steps += t.steps;
    total.calls += t.calls;
    total.answered += t.answered;
    total.failed += t.failed;
    total.timeouts += t.timeouts;
    total.disconnected += t.disconnected;
    total.overstocked += t.overstocked;
    total.refused += t.refused;
    total.stream_frames += t.stream_frames;
    total.publications += t.publications;
    total.deliveries += t.deliveries;
    total.datagrams += t.datagrams;
    total.faults += t.faults;
    total.overstocks += t.overstocks;
    total.direct_recvs += t.direct_recvs;
    total.checks += t.checks;
}
