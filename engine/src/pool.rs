//! Blocking handlers: the worker pool that runs them off the reactor threads, and the owned
//! [`Request`] they receive.
//!
//! Invariants: no worker thread exists before the first blocking job, so a server without
//! blocking routes spawns none; every job runs exactly once, and a Request's job sends
//! exactly one Response (the handler's result, its error, or [`HANDLER_PANICKED`]) through
//! its [`Responder`], a Notify's none; workers exit once the pool (held by every clone of
//! its Router) is dropped, after finishing the jobs already queued.

use std::fmt;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::{BLOCKING_QUEUE_FULL, HANDLER_PANICKED};
use crate::handle::{ConnHandle, Responder};
use crate::router::Owed;
use crate::typed::Reply;

/// Name of the worker threads, followed by their index.
const THREAD_PREFIX: &str = "ringrpc-blocking-";
/// Jobs that may wait for a worker; past this, Requests are refused at once. Each holds a
/// copy of its payload, so the queue's memory is this many payloads at most.
pub(crate) const QUEUE_CAPACITY: usize = 65_536;

/// A blocking handler, its value turned into the Response it answers with.
pub(crate) type BlockingHandler = std::sync::Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// One Request or Notify, owned, as a blocking handler receives it on a worker thread.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Request {
    /// The method name.
    pub method: Bytes,
    /// The payload, copied once out of the receive buffer.
    pub payload: Bytes,
    /// The caller's sequence number.
    pub seq: u64,
    /// The eight application flag bits.
    pub user_flags: u8,
    /// Whether this is a Notify, whose result is discarded.
    pub is_notify: bool,
    /// The connection it came on (to notify or call the peer, or close).
    pub conn: ConnHandle,
    /// The request's metadata (arpc's `md` block), already taken off `payload`.
    pub metadata: Option<ringrpc_protocol::metadata::Metadata>,
    /// The state registered with the builder's `state(..)`, for the `State` extractor.
    pub(crate) extensions: std::sync::Arc<crate::typed::Extensions>,
}

impl Request {
    /// This core's client for `addr` (`host:port`), connected on first use and shared by
    /// every handler and task of the core (see [`CoreClient`](crate::CoreClient)). Fails
    /// off a reactor thread (a blocking handler's worker).
    pub fn client(&self, addr: &str) -> Result<crate::CoreClient, crate::NotOnReactor> {
        crate::CoreClient::to(addr)
    }
}

struct Job {
    handler: BlockingHandler,
    request: Request,
    responder: Option<Responder>,
}

/// Worker threads fed by one bounded channel, started by the first job.
#[derive(Default)]
pub(crate) struct BlockingPool {
    /// 0 until set: the default is computed only when asked, since every Router (servers'
    /// and clients') has a pool and most never start it.
    threads: AtomicUsize,
    jobs: OnceLock<Result<Sender<Job>, String>>,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingPool")
            .field("threads", &self.threads())
            .field("started", &self.jobs.get().is_some())
            .finish()
    }
}

impl BlockingPool {
    /// Sets the thread count; only the count at the first job counts.
    pub(crate) fn set_threads(&self, threads: usize) {
        self.threads.store(threads, Ordering::Relaxed);
    }

    /// The thread count set, or else the number of CPUs, at least 2.
    pub(crate) fn threads(&self) -> usize {
        match self.threads.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            set => set,
        }
    }

    /// Queues `request` for a worker (starting the workers with the first job). Never
    /// blocks: when [`QUEUE_CAPACITY`] jobs are already waiting, the Request is answered at
    /// once with [`BLOCKING_QUEUE_FULL`] (a Notify is dropped) and the refusal logged.
    pub(crate) fn submit(
        &self,
        handler: BlockingHandler,
        request: Request,
        responder: Option<Responder>,
    ) {
        let job = Job {
            handler,
            request,
            responder,
        };
        let (job, why) = match self.jobs.get_or_init(|| self.start()) {
            Ok(jobs) => match jobs.try_send(job) {
                Ok(()) => return,
                Err(TrySendError::Full(job)) => (job, BLOCKING_QUEUE_FULL),
                Err(TrySendError::Disconnected(job)) => {
                    (job, "internal error: the blocking workers are gone")
                }
            },
            Err(why) => (job, why.as_str()),
        };
        tracing::warn!(method = %String::from_utf8_lossy(&job.request.method), "{why}");
        if let Some(responder) = job.responder {
            responder.reply_error(why);
        }
    }

    fn start(&self) -> Result<Sender<Job>, String> {
        let (jobs, queue) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        match spawn_workers(THREAD_PREFIX, self.threads(), &queue) {
            // Detached: a worker may be blocked in a handler for as long as it likes, and
            // exits by itself once the queue is closed and drained.
            Ok(_workers) => Ok(jobs),
            Err(e) => Err(format!(
                "internal error: cannot start blocking worker threads: {e}"
            )),
        }
    }
}

/// Spawns up to `count` workers on `queue`. Fails only if not even one could start; fewer
/// than asked is logged and served with.
fn spawn_workers(
    prefix: &str,
    count: usize,
    queue: &Receiver<Job>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut workers = Vec::with_capacity(count);
    for index in 0..count {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{prefix}{index}"))
            .spawn(move || work(&queue));
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(e) if workers.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(
                    "started {} of {count} blocking worker threads: {e}",
                    workers.len()
                );
                break;
            }
        }
    }
    Ok(workers)
}

fn work(queue: &Receiver<Job>) {
    for job in queue {
        let Job {
            handler,
            request,
            responder,
        } = job;
        let (method, peer) = (request.method.clone(), request.conn.peer());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(request)));
        match (outcome, responder) {
            (Ok(reply), Some(responder)) => Owed::Answer(responder).settle(reply),
            (Ok(Reply { body: Ok(_), .. }), None) => {}
            (
                Ok(Reply {
                    body: Err(message), ..
                }),
                None,
            ) => tracing::debug!(
                method = %String::from_utf8_lossy(&method),
                %peer,
                "blocking handler failed on a notify: {message}"
            ),
            (Err(_), responder) => {
                tracing::error!(
                    method = %String::from_utf8_lossy(&method),
                    %peer,
                    "blocking handler panicked"
                );
                if let Some(responder) = responder {
                    responder.reply_error(HANDLER_PANICKED);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_named_and_exit_once_every_sender_is_dropped() {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let workers = spawn_workers("pool-test-", 3, &queue).unwrap();
        drop(queue);
        let names: Vec<_> = workers
            .iter()
            .map(|w| w.thread().name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["pool-test-0", "pool-test-1", "pool-test-2"]);
        drop(jobs);
        for worker in workers {
            worker.join().expect("a worker exits cleanly");
        }
    }
}
