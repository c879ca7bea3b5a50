//! A fan-out gateway for load tests: two backend servers and a gateway in this process; the
//! gateway's `/echo` is an async handler that calls both backends' `/echo` through its
//! core's clients at once, awaits both under one timeout, checks they agree and answers
//! with the payload — so any echo load generator drives the fan-out (`loadgen --target`,
//! or `scripts/compare` with `COMPARE_EXTRA_CMD`). Prints `async-gateway listening on ADDR`.
//!
//! Run: `taskset -c 0 target/release/async-gateway --listen 127.0.0.1:9200`, then
//! `taskset -c 1 target/release/loadgen --target 127.0.0.1:9200 --conns 8 --per-conn 10`.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures_util::future::try_join;
use ringrpc::{Config, HandlerError, Request, Server, time};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "An async fan-out gateway over two in-process backends")]
struct Args {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Gateway reactors (each backend has one).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Accepted for compatibility with the engine's flags; ignored.
    #[arg(long)]
    log: Option<String>,
}

fn main() -> std::process::ExitCode {
    match run_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", env!("CARGO_BIN_NAME"));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let backend = || -> Result<ringrpc::RunningServer, Box<dyn std::error::Error>> {
        let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
        Ok(Server::builder().config(config).build()?.start()?)
    };
    let (a, b) = (backend()?, backend()?);
    let (addr_a, addr_b) = (a.local_addr().to_string(), b.local_addr().to_string());
    let config = Config::builder()
        .cores(args.cores)
        .listen(args.listen.as_str())
        .build()?;
    let gateway = Server::builder()
        .config(config)
        .route_async("/echo", move |req: Request| {
            let (addr_a, addr_b) = (addr_a.clone(), addr_b.clone());
            async move {
                let (a, b) = (req.client(&addr_a)?, req.client(&addr_b)?);
                let both = try_join(
                    a.call_async("/echo", req.payload.clone(), Duration::from_secs(5)),
                    b.call_async("/echo", req.payload.clone(), Duration::from_secs(5)),
                );
                let (x, y) = time::timeout(Duration::from_secs(5), both).await??;
                if x != y {
                    return Err(HandlerError::new("the backends disagree"));
                }
                Ok::<Bytes, HandlerError>(x)
            }
        })
        .build()?
        .start()?;
    println!("async-gateway listening on {}", gateway.local_addr());
    // Until SIGTERM or SIGINT (their default action ends the process).
    loop {
        std::thread::park();
    }
}
