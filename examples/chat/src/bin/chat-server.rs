//! `chat-server`: the chat over arpc (for `chat-client`) and WebSocket (`/ws`, for
//! browsers), and the web page (`/`), on one port, until SIGINT or SIGTERM.
//!
//! It prints `chat-server listening on ADDR ...` once serving (ADDR is the bound address,
//! the real port when `--listen` asked for port 0), and every startup failure as one line
//! naming the cause and the fix, with exit status 1.

use std::error::Error;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringrpc::{Config, Server, ShutdownSignals, StartError};
use ringrpc_chat::server::{Chat, Settings, now_ms};
use ringrpc_chat::store::Store;

/// Chat server: users from a file, private and broadcast messages, blocking, offline
/// messages kept in an embedded database; arpc and WebSocket on one port.
#[derive(Parser, Debug)]
#[command(name = "chat-server", version, about)]
struct Args {
    #[arg(
        long,
        value_name = "ADDR",
        help = "Address to listen on: HOST:PORT, :PORT (all interfaces) or [IPV6]:PORT; port 0 picks a free port (printed at startup)"
    )]
    listen: String,
    /// The accounts: one `username password` per line (blank lines and # comments skipped)
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// How long 3 wrong passwords in a row block an account, in seconds
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = seconds)]
    block_duration: Duration,
    /// Log out users after this many seconds without a command (0: never)
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = seconds)]
    timeout: Duration,
    /// Directory of the database (offline messages, block lists, login history); created if
    /// missing
    #[arg(long, value_name = "DIR", default_value = "chat-data")]
    data: PathBuf,
    /// Reactor threads [default: all CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    cores: Option<u16>,
}

/// A number of seconds: non-negative, finite, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "must be a number of seconds, 0 or more (fractions allowed), got {text}"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: error: {}", describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, then the flag that fixes it where there is one.
fn describe(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    let hint = match e.downcast_ref::<StartError>() {
        Some(
            StartError::AddrInUse(_)
            | StartError::PermissionDenied(_)
            | StartError::AddrNotAvailable(_),
        ) => Some("set by --listen"),
        _ if e.is::<ringrpc::ConfigError>() => Some("set by --listen or --cores"),
        _ => None,
    };
    match hint {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

fn serve(args: Args) -> Result<(), Box<dyn Error>> {
    let users = ringrpc_chat::users::load(&args.users)?;
    let mut config = Config::builder().listen(args.listen.as_str());
    if let Some(cores) = args.cores {
        config = config.cores(usize::from(cores));
    }
    let config = config.build()?;
    let (store, loaded) = Store::open(&args.data, now_ms())?;
    let settings = Settings {
        users,
        block_duration: args.block_duration,
        timeout: Some(args.timeout).filter(|t| !t.is_zero()),
    };
    // Caught before any reactor starts, so a signal is never lost in between.
    let signals = ShutdownSignals::install()?;
    let builder = ringrpc_chat::web::serve(Server::builder().config(config));
    let (chat, builder) = Chat::start(settings, store, loaded, builder)?;
    let server = match builder.build().and_then(|server| server.start()) {
        Ok(server) => server,
        Err(e) => {
            chat.stop();
            return Err(e.into());
        }
    };
    let addr = server.local_addr();
    // The bound address stays the fourth word: tests and scripts read it from there.
    println!(
        "chat-server listening on {addr} (arpc, WebSocket at ws://{addr}/ws, web page at http://{addr}/); data in {}",
        args.data.display()
    );
    std::io::stdout().flush()?;
    let waited = signals.wait(server);
    chat.stop();
    waited?;
    println!("chat-server stopped");
    Ok(())
}
