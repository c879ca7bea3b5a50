//! Closed-loop load generator for the arpc wire format (and gRPC unary echo): flags, I/O
//! threads, accounting, reports.
//!
//! Every connection keeps `--per-conn` requests in flight (or, with `--pattern`, notifies,
//! stream frames or subscribes). Each answer is checked (command,
//! seq, error flag, echoed payload) and its latency recorded in an HdrHistogram. [`run`] does
//! a whole run and returns a [`Report`]; the `loadgen` binary is a thin wrapper around it.
//! `--proto grpc` drives the same loop through tonic; `--hdr-log` also writes the latencies
//! as an HdrHistogram interval log. `--transport udp` sends each arpc frame as one datagram
//! and resends unanswered requests, counting retries, duplicate answers and losses.
//! `--pattern pubsub` publishes to a topic of Go arpc's pub/sub and checks, times and counts
//! every delivery at `--subscribers` subscriber connections ([`pubsub`]).
#![forbid(unsafe_code)]

mod arriving_echo;
pub mod cli;
mod conn;
mod connect;
mod counters;
pub mod cpu;
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
