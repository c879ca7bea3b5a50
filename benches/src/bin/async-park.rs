//! How much an async handler parked on a timer costs, and whether its core keeps answering
//! meanwhile: a server (a child process, alone, pinned to CPU 0 unless told otherwise) with
//! `/park` (an async handler that sleeps an hour) and `/echo`; this process (CPU 1) measures
//! `/echo`'s latency on one connection, parks `--tasks` handlers over `--conns`
//! connections, waits until the server counts them all parked, reads the server's resident
//! memory, and measures `/echo` again.
//!
//! Run: `cargo run --release -p ringrpc-benches --bin async-park -- --tasks 100000`.
//! Prints the resident memory before and after, per parked task, and `/echo`'s
//! p50/p99/p999 before and during.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use clap::builder::TypedValueParser;
use hdrhistogram::Histogram;
use ringrpc::{Config, Server, time};
use ringrpc_protocol::{Decoder, Frame};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Memory per parked async handler, and /echo latency before and during")]
struct Args {
    /// Async handlers to park (at least 1).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    tasks: usize,
    /// Connections to spread them over (each holds at most 4096 at once; at least 1).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    conns: usize,
    /// How long to measure /echo each time.
    #[arg(long, default_value = "3", value_parser = seconds)]
    echo_for: Duration,
    /// CPU for the server (the client runs wherever this process does).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// Internal: run as the server.
    #[arg(long, hide = true)]
    serve: bool,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("{s:?}: {e}"))
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
    if args.serve {
        return serve();
    }
    drive(&args)
}

/// The server: `/park` sleeps an hour; `/parked` answers how many are parked now.
fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let parked = Arc::new(AtomicUsize::new(0));
    let counting = parked.clone();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .max_in_flight_per_conn(4096)
        .build()?;
    let server = Server::builder()
        .config(config)
        .route_async("/park", move |_: Bytes| {
            counting.fetch_add(1, Ordering::Relaxed);
            async {
                time::sleep(Duration::from_secs(3600)).await;
            }
        })
        .route("/parked", move |ctx| {
            let parked = parked.load(Ordering::Relaxed).to_string();
            ctx.reply(parked.as_bytes());
        })
        .build()?
        .start()?;
    println!("listening on {}", server.local_addr());
    std::io::stdout().flush()?;
    // Serve until stdin closes.
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(server);
    std::process::exit(0);
}

fn drive(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new("taskset")
        .args(["-c", &args.server_cpu.to_string()])
        .arg(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    lines.read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or("the server did not start")?
        .parse()?;
    let pid = child.id();

    let mut probe = Conn::connect(addr)?;
    let warm = echo_latencies(&mut probe, Duration::from_millis(500))?;
    drop(warm);
    let before_echo = echo_latencies(&mut probe, args.echo_for)?;
    let rss_before = rss(pid)?;

    // Park the tasks: each connection sends its share of /park requests.
    let per_conn = args.tasks.div_ceil(args.conns);
    assert!(
        per_conn <= 4096,
        "more than 4096 per connection would be refused"
    );
    let mut parkers = Vec::new();
    let started = Instant::now();
    let mut left = args.tasks;
    for _ in 0..args.conns {
        let n = per_conn.min(left);
        left -= n;
        let mut sock = TcpStream::connect(addr)?;
        let mut batch = Vec::new();
        for seq in 1..=n as u64 {
            batch.extend_from_slice(&Frame::request(seq, "/park", "").to_bytes());
        }
        sock.write_all(&batch)?;
        parkers.push(sock);
    }
    loop {
        let parked: usize = String::from_utf8(probe.call("/parked", b"")?.to_vec())?.parse()?;
        if parked >= args.tasks {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("only {parked} of {} tasks parked", args.tasks).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let park_time = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss(pid)?;
    let during_echo = echo_latencies(&mut probe, args.echo_for)?;

    println!(
        "parked {} async handlers over {} connections in {:.2} s",
        args.tasks,
        args.conns,
        park_time.as_secs_f64()
    );
    println!(
        "server resident memory: {:.1} MiB before, {:.1} MiB parked: {:.0} bytes per parked task (connections and request frames included)",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / args.tasks as f64
    );
    for (label, h) in [("before", &before_echo), ("during", &during_echo)] {
        println!(
            "/echo {label}: {} calls, p50 {} µs, p99 {} µs, p999 {} µs, max {} µs",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    drop(parkers);
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}

/// Sequential /echo calls on one connection for `how_long`: their latencies in µs.
fn echo_latencies(
    conn: &mut Conn,
    how_long: Duration,
) -> Result<Histogram<u64>, Box<dyn std::error::Error>> {
    let mut h = Histogram::<u64>::new(3)?;
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let t = Instant::now();
        let answer = conn.call("/echo", b"ping")?;
        assert_eq!(&answer[..], b"ping");
        h.record(t.elapsed().as_micros() as u64)?;
    }
    Ok(h)
}

/// Resident memory of `pid` now, in bytes (`smaps_rollup`).
fn rss(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let kib: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or("no Rss line")?;
    Ok(kib * 1024)
}

/// A blocking raw-frame connection.
struct Conn {
    sock: TcpStream,
    buf: bytes::BytesMut,
    seq: u64,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        Ok(Conn {
            sock,
            buf: bytes::BytesMut::new(),
            seq: 0,
        })
    }

    fn call(&mut self, method: &str, payload: &[u8]) -> Result<Bytes, Box<dyn std::error::Error>> {
        self.seq += 1;
        self.sock
            .write_all(&Frame::request(self.seq, method.to_owned(), payload.to_vec()).to_bytes())?;
        loop {
            if let Some(frame) = Decoder::default().decode(&mut self.buf)? {
                return Ok(frame.payload);
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
