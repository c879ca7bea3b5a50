//! Closed-loop load generator for the arpc wire format (and gRPC unary echo): flags, I/O
//! threads, accounting, reports.
//!
//! Every connection keeps `--per-conn` requests in flight (or, with `--pattern`, notifies,
//! stream frames or subscribes). Each answer is checked (command,
//! seq, error flag, echoed payload) and its latency recorded in an HdrHistogram. [`run`] does
//! a whole run and returns a [`Report`]; the `loadgen` binary is a thin wrapper around it.
//! `--io` (`--driver`) picks the I/O driver: io_uring (`uring`), an epoll loop (`epoll`, a
//! second, differently shaped client) or plain sockets (`std`). `--proto grpc` drives the
//! same loop through tonic; `--hdr-log` also writes the latencies
//! as an HdrHistogram interval log. `--transport udp` sends each arpc frame as one datagram
//! and resends unanswered requests, counting retries, duplicate answers and losses.
//! `--pattern pubsub` publishes to a topic of Go arpc's pub/sub and checks, times and counts
//! every delivery at `--subscribers` subscriber connections ([`pubsub`]).
//!
//! A run from a program, against a ringrpc server in the same process:
//!
//! ```
//! use clap::Parser;
//! use ringrpc_loadgen::{Cli, Config, run};
//!
//! let server_config = ringrpc::Config::builder().cores(1).listen("127.0.0.1:0").build()?;
//! let server = ringrpc::Server::builder().config(server_config).build()?.start()?;  // serves /echo
//! let target = server.local_addr().to_string();
//! let cli = Cli::try_parse_from([
//!     "loadgen", "--target", &target, "--conns", "2", "--per-conn", "4",
//!     "--duration", "200ms", "--warmup", "0s", "--payload", "1KiB", "--quiet",
//! ])?;
//! let report = run(&Config::from_cli(cli)?)?;
//! assert!(report.success, "{:?}", report.failures);
//! assert_eq!(report.counts.sent, report.counts.answered);
//! println!("{}", report.render_text());
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod arriving_echo;
pub mod cli;
mod conn;
mod connect;
mod counters;
pub mod cpu;
mod epoll;
mod error;
mod grpc;
mod grpc_echo;
mod hdrlog;
mod outcome;
pub mod pattern;
pub mod payload;
mod payload_frame;
pub mod pubsub;
pub mod report;
mod run;
mod session;
mod std_worker;
pub mod tls;
mod udp;
mod uring;
mod window;
mod worker;
mod ws;

pub use cli::{
    Cli, Config, CpuList, IoMode, Proto, Transport, UdpSettings, UsageError, parse_cpu_list,
    parse_duration,
};
pub use error::RunError;
pub use pattern::Pattern;
pub use report::Report;
pub use run::run;
