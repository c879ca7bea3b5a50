//! Reactor-thread plumbing shared by servers and client runtimes: mailboxes, spawning
//! reactor threads (pinned to CPUs when the settings ask), joining them.
//!
//! Invariants: a reactor's io_uring is created on its own thread (SINGLE_ISSUER) and
//! [`spawn_reactors`] returns only once every ring is up — if any fails, the others are
//! stopped and joined before its error is returned; nothing here knows about listen
//! addresses (a client runtime has none).

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::executor::contain::panic_message;
use crate::observe::core_stats::CoreStats;
use crate::reactor::mailbox::Mailbox;
use crate::reactor::settings::ReactorSettings;
use crate::reactor::shared::Shared;
use crate::reactor::{CoreSockets, Reactor};
use crate::router::Router;
use ringrpc_uring::RingError;

/// Why reactors could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// A reactor's io_uring could not be set up.
    Ring {
        /// Which reactor.
        core: usize,
        /// Why.
        source: RingError,
    },
    /// A thread could not be created.
    Resource {
        /// What could not be created.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Ring { core, source } => write!(f, "core {core}: {source}"),
            SpawnError::Resource { what, source } => write!(f, "cannot create {what}: {source}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Ring { source, .. } => Some(source),
            SpawnError::Resource { source, .. } => Some(source),
        }
    }
}

/// A reactor stopped with an error or a panic.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The reactor's event loop failed (the ring returned an error it cannot recover from).
    Io {
        /// Which reactor.
        core: usize,
        /// Why.
        source: io::Error,
    },
    /// The reactor thread panicked (a bug: network input never panics a reactor).
    Panicked {
        /// Which reactor.
        core: usize,
        /// The panic message.
        message: String,
    },
}

impl RunError {
    /// Which reactor failed.
    pub fn core(&self) -> usize {
        match self {
            RunError::Io { core, .. } | RunError::Panicked { core, .. } => *core,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Io { core, source } => write!(f, "core {core} failed: {source}"),
            RunError::Panicked { core, message } => write!(f, "core {core} panicked: {message}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Io { source, .. } => Some(source),
            RunError::Panicked { .. } => None,
        }
    }
}

/// One mailbox per reactor, each holding at most `capacity` optional messages.
pub(crate) fn new_mailboxes(n: usize, capacity: usize) -> Vec<Arc<Mailbox>> {
    (0..n).map(|_| Arc::new(Mailbox::new(capacity))).collect()
}

/// Reactor threads joined by [`join_all`].
pub(crate) type ReactorThreads = Vec<JoinHandle<io::Result<CoreStats>>>;

/// Starts one reactor thread per entry of `sockets` (each the sockets of that core; none
/// for a reactor that serves only adopted, outbound connections) and returns
/// once every reactor's ring is up; if any fails, the others are stopped and its error
/// returned.
pub(crate) fn spawn_reactors(
    settings: &Arc<ReactorSettings>,
    router: &Arc<Router>,
    shared: &Arc<Shared>,
    sockets: Vec<CoreSockets>,
) -> Result<ReactorThreads, SpawnError> {
    let cores = sockets.len();
    let cpus = if settings.pin_cores {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    if settings.pin_cores && cores > cpus.len() {
        tracing::warn!(
            "{cores} cores requested but only {} CPUs are available to this process; reactors will share CPUs",
            cpus.len()
        );
    }
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), RingError>)>();
    let mut threads = Vec::with_capacity(cores);
    for (id, core_sockets) in sockets.into_iter().enumerate() {
        let cpu = (!cpus.is_empty()).then(|| cpus[id % cpus.len()]);
        let (core_settings, core_router, core_shared, ready) = (
            settings.clone(),
            router.clone(),
            shared.clone(),
            ready_tx.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("ringrpc-core-{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(cpu) {
                        tracing::warn!(core = id, "could not pin to CPU {}", cpu.id);
                    }
                }
                let reactor = match Reactor::new(
                    id,
                    core_settings,
                    core_router,
                    core_shared.clone(),
                    core_sockets,
                ) {
                    Ok(r) => {
                        let _ = ready.send((id, Ok(())));
                        r
                    }
                    Err(e) => {
                        let _ = ready.send((id, Err(e)));
                        return Ok(CoreStats {
                            core: id,
                            ..CoreStats::default()
                        });
                    }
                };
                drop(ready);
                let outcome = catch_unwind(AssertUnwindSafe(|| reactor.run()));
                // One core failing takes the server down rather than leaving it serving on a
                // subset while `join` waits for the others forever.
                let failure = match &outcome {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(panic) => Some(format!("panicked: {}", panic_message(&**panic))),
                };
                if let Some(why) = failure {
                    tracing::error!(
                        core = id,
                        "core {id} stopped ({why}); shutting down every other core"
                    );
                    core_shared.shutdown();
                }
                outcome.unwrap_or_else(|panic| resume_unwind(panic))
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(source) => {
                shared.shutdown();
                join_all(threads);
                return Err(SpawnError::Resource {
                    what: "a reactor thread",
                    source,
                });
            }
        }
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((core, Err(source))) => {
                failure.get_or_insert(SpawnError::Ring { core, source });
            }
            Err(_) => break,
        }
    }
    if let Some(e) = failure {
        shared.shutdown();
        join_all(threads);
        return Err(e);
    }
    Ok(threads)
}

/// Waits for every reactor thread; one result per thread, in core order.
pub(crate) fn join_all(threads: ReactorThreads) -> Vec<Result<CoreStats, RunError>> {
    threads
        .into_iter()
        .enumerate()
        .map(|(core, t)| match t.join() {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(source)) => Err(RunError::Io { core, source }),
            Err(panic) => Err(RunError::Panicked {
                core,
                message: panic_message(&*panic),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::error::CallError;
    use crate::reactor::mailbox::Command;
    use crate::{Config, RunError, Server};

    /// A core that dies outside user code (an engine bug, injected here) stops the whole
    /// server with a report naming it, instead of `join` waiting on the healthy cores.
    #[test]
    fn a_core_that_dies_stops_the_server_with_a_report_naming_it() {
        let config = Config::builder()
            .cores(2)
            .listen("127.0.0.1:0")
            .build()
            .unwrap();
        let server = Server::builder()
            .config(config)
            .build()
            .unwrap()
            .start()
            .unwrap();
        let shared = server.handle().shared.clone();
        assert!(shared.mailboxes[1].post(Command::Crash).is_ok());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(server.join());
        });
        let outcome = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("join returned: the healthy core was shut down too");
        match outcome {
            Err(RunError::Panicked { core, message }) => {
                assert_eq!(core, 1);
                assert!(message.contains("crash injected"), "{message}");
            }
            other => panic!("expected core 1's panic, got {other:?}"),
        }
        // What is posted to the dead core now fails at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let conn = crate::ids::ConnId {
            core: 1,
            slot: 0,
            serial: 1,
        };
        let posted = shared.mailboxes[1].post(Command::Call {
            conn,
            method: bytes::Bytes::from_static(b"/x"),
            payload: bytes::Bytes::new(),
            timeout: Duration::from_secs(3600),
            done: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        assert!(posted.is_ok());
        assert_eq!(rx.try_recv().ok(), Some(Err(CallError::Stopped)));
    }
}
