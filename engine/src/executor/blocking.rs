//! [`spawn_blocking`]: CPU-heavy or blocking work (disk, a blocking library) run on a pool
//! of threads, awaited as a `Send` future from an async handler or any executor.
//!
//! Invariants: the pool's threads start with the first job and are shared by the whole
//! process; at most [`QUEUE_CAPACITY`] jobs wait (past that, a job's future resolves at once
//! to [`BlockingError::QueueFull`] and the job never runs); a job that panics resolves to
//! [`BlockingError::Panicked`] and its thread goes on; a job's future never waits on the
//! reactor that spawned it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use crossbeam_channel::{Sender, TrySendError};
use futures_channel::oneshot;

use crate::executor::contain::panic_message;

/// Jobs that may wait for a thread of the pool; past this, new jobs are refused.
pub const QUEUE_CAPACITY: usize = 65_536;

type Job = Box<dyn FnOnce() + Send>;

/// Why a [`spawn_blocking`] job gave no value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockingError {
    /// `QUEUE_CAPACITY` (65,536) jobs were already waiting; this one was not started.
    QueueFull,
    /// The job panicked with this message.
    Panicked(String),
    /// The pool's threads could not be started.
    NoThreads(String),
}

impl fmt::Display for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockingError::QueueFull => write!(
                f,
                "server busy: {QUEUE_CAPACITY} blocking jobs are already waiting"
            ),
            BlockingError::Panicked(message) => write!(f, "blocking job panicked: {message}"),
            BlockingError::NoThreads(why) => write!(f, "cannot start blocking threads: {why}"),
        }
    }
}

impl std::error::Error for BlockingError {}

/// Runs `job` on the process's blocking pool; the future resolves to its value. `Send`, so
/// it can be awaited anywhere; dropping it does not stop the job.
pub fn spawn_blocking<T, F>(job: F) -> BlockingJoin<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let run: Job = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
            .map_err(|panic| BlockingError::Panicked(panic_message(&*panic)));
        let _ = tx.send(outcome);
    });
    let refused = match pool() {
        Ok(jobs) => match jobs.try_send(run) {
            Ok(()) => None,
            Err(TrySendError::Full(_)) => Some(BlockingError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Some(BlockingError::NoThreads(
                "the pool's threads are gone".into(),
            )),
        },
        Err(why) => Some(BlockingError::NoThreads(why.clone())),
    };
    BlockingJoin { rx, refused }
}

/// The future of [`spawn_blocking`].
#[must_use = "futures do nothing unless awaited (the job runs either way)"]
#[derive(Debug)]
pub struct BlockingJoin<T> {
    rx: oneshot::Receiver<Result<T, BlockingError>>,
    refused: Option<BlockingError>,
}

impl<T> Future for BlockingJoin<T> {
    type Output = Result<T, BlockingError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(error) = self.refused.take() {
            return Poll::Ready(Err(error));
        }
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(outcome)) => Poll::Ready(outcome),
            // The job's closure was dropped unrun: only when the pool went away.
            Poll::Ready(Err(_)) => Poll::Ready(Err(BlockingError::NoThreads(
                "the job was dropped before it ran".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The process's pool: one thread per CPU (at least 2), started with the first job.
fn pool() -> &'static Result<Sender<Job>, String> {
    static POOL: OnceLock<Result<Sender<Job>, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUE_CAPACITY);
        let mut started = 0;
        for index in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ringrpc-spawn-blocking-{index}"))
                .spawn(move || {
                    for job in queue {
                        job();
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) if started == 0 => return Err(e.to_string()),
                Err(e) => {
                    tracing::warn!("started {started} of {threads} blocking threads: {e}");
                    break;
                }
            }
        }
        Ok(jobs)
    })
}
