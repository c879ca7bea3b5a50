//! Graceful shutdown on SIGINT and SIGTERM for embedders, exactly as the `engine` binary does
//! it: the first signal stops accepting, answers what was received, flushes and closes every
//! connection within the shutdown grace, and returns the report; a second exits at once.
//!
//! Invariants: the signals are caught from [`ShutdownSignals::install`] on, so one that
//! arrives while reactors start is never lost; after the server has stopped, a further
//! signal terminates the process as if no handler were installed.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::server::{RunningServer, Server, ServerError, ServerReport};

/// Exit status when a second signal interrupts the drain (128 + SIGINT, as a shell reports).
const EXIT_INTERRUPTED: i32 = 130;

const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPED: u8 = 2;

/// SIGINT and SIGTERM, caught from [`ShutdownSignals::install`] on; [`ShutdownSignals::wait`]
/// turns the first into a graceful shutdown of a running server.
///
/// Use it directly when something must happen between starting and waiting (printing the
/// bound address, say); otherwise [`Server::run_until_signal`] does all of it in one call.
#[derive(Debug)]
pub struct ShutdownSignals {
    signals: Signals,
}

impl ShutdownSignals {
    /// Starts catching SIGINT and SIGTERM: from now on they no longer kill the process.
    pub fn install() -> io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            signals: Signals::new([SIGINT, SIGTERM])?,
        })
    }

    /// Blocks until SIGINT or SIGTERM, then shuts `server` down gracefully (stop accepting,
    /// answer every request already received, flush, close; connections still busy after
    /// the configured shutdown grace are closed) and returns its report. A second signal
    /// during the drain exits the process at once with status 130.
    ///
    /// Errors: [`ServerError::Signals`] if the thread that watches for signals cannot be
    /// started (the server is stopped first), [`ServerError::Run`] if a reactor failed.
    pub fn wait(self, server: RunningServer) -> Result<ServerReport, ServerError> {
        let handle = server.handle();
        let state = Arc::new(AtomicU8::new(SERVING));
        let watcher = state.clone();
        let mut signals = self.signals;
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    match watcher.compare_exchange(
                        SERVING,
                        DRAINING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            tracing::info!(
                                "{} received; draining connections (send it again to exit at once)",
                                name(sig)
                            );
                            handle.shutdown();
                        }
                        Err(DRAINING) => std::process::exit(EXIT_INTERRUPTED),
                        Err(_) => {
                            // The server has stopped and its caller goes on: behave as if no
                            // handler were installed.
                            let _ = signal_hook::low_level::emulate_default_handler(sig);
                            std::process::exit(128 + sig);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the watcher no signal could stop the server: refuse to serve.
            let _ = server.shutdown();
            return Err(ServerError::Signals(e));
        }
        let report = server.join();
        state.store(STOPPED, Ordering::Release);
        report.map_err(ServerError::Run)
    }
}

fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

impl Server {
    /// Starts, serves until SIGINT or SIGTERM, then shuts down gracefully and returns the
    /// report: the `engine` binary's shutdown in one call. See [`ShutdownSignals::wait`].
    ///
    /// ```no_run
    /// let server = ringrpc::Server::builder().build()?;
    /// let report = server.run_until_signal()?;
    /// print!("{report}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_until_signal(self) -> Result<ServerReport, ServerError> {
        let signals = ShutdownSignals::install().map_err(ServerError::Signals)?;
        let running = self.start().map_err(ServerError::Start)?;
        signals.wait(running)
    }
}
