//! Blocking handlers: the worker pool that runs them off the reactor threads, and the owned
//! [`Request`] they receive.
//!
//! Invariants: no worker thread exists before the first blocking job, so a server without
//! blocking routes spawns none; every job runs exactly once, and a Request's job sends
//! exactly one Response (the handler's result, its error, or [`HANDLER_PANICKED`]) through
//! its [`Responder`], a Notify's none; workers exit once the pool (held by every clone of
//! its Router) is dropped, after finishing the jobs already queued.
//!
//! Memory: the jobs waiting or running hold at most [`QUEUE_CAPACITY`] jobs and
//! [`QUEUE_BYTES`] of requests ([`job_cost`]) for all connections together (one job of any
//! size when none is held); past either, a job is refused at once. Each job also holds a
//! place among its connection's deferred work (`max_in_flight_per_conn`): a Request's
//! through its responder, a Notify's through its `NotifySlot` (see [`Owed`]), given back
//! when the handler returns.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::conn::responder::Owed;
use crate::error::{BLOCKING_QUEUE_FULL, HANDLER_PANICKED};
use crate::router::request::Request;
use crate::router::typed::Reply;

/// Name of the worker threads, followed by their index.
const THREAD_PREFIX: &str = "ringrpc-blocking-";
/// Jobs that may wait for a worker; past this, Requests are refused at once.
pub(crate) const QUEUE_CAPACITY: usize = 65_536;
/// Bytes of requests ([`job_cost`]) the jobs waiting or running may hold, all connections
/// together; past this, new jobs are refused at once (one of any size is taken when none is
/// held, so a request up to `max_body` always gets through an idle pool).
pub(crate) const QUEUE_BYTES: usize = 256 << 20;

/// What a job holds in memory, counted from above: its method and payload, its metadata as
/// decoded (per entry, its slot doubled by the vector's growth, and the key's allocation),
/// and the job itself with its responder.
fn job_cost(request: &Request) -> usize {
    let metadata = request.metadata.as_ref().map_or(0, |md| {
        md.encoded_len() + md.len() * (2 * std::mem::size_of::<(String, Bytes)>() + 32)
    });
    std::mem::size_of::<Job>()
        + std::mem::size_of::<Owed>()
        + request.method.len()
        + request.payload.len()
        + metadata
}

/// A job's bytes in the pool's count, given back when dropped (after the handler returned,
/// or at once when the job is refused).
struct Charge {
    held: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Release);
    }
}

/// A blocking handler, its value turned into the Response it answers with.
pub(crate) type BlockingHandler = std::sync::Arc<dyn Fn(Request) -> Reply + Send + Sync>;

struct Job {
    handler: BlockingHandler,
    request: Request,
    /// A Request's responder, or a Notify's place among its connection's deferred work.
    owed: Owed,
    /// Its bytes in the pool's count (`None` until admitted).
    charge: Option<Charge>,
}

/// Worker threads fed by one bounded channel, started by the first job.
#[derive(Default)]
pub(crate) struct BlockingPool {
    /// 0 until set: the default is computed only when asked, since every Router (servers'
    /// and clients') has a pool and most never start it.
    threads: AtomicUsize,
    jobs: OnceLock<Result<Sender<Job>, String>>,
    /// Bytes ([`job_cost`]) the jobs waiting or running hold.
    held_bytes: Arc<AtomicUsize>,
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
    /// blocks: when [`QUEUE_CAPACITY`] jobs are already waiting, or the jobs held would
    /// pass [`QUEUE_BYTES`], the Request is answered at once with [`BLOCKING_QUEUE_FULL`] (a
    /// Notify is dropped, its place given back) and the refusal logged.
    pub(crate) fn submit(&self, handler: BlockingHandler, request: Request, owed: Owed) {
        let mut job = Job {
            handler,
            request,
            owed,
            charge: None,
        };
        let (job, why) = match self.jobs.get_or_init(|| self.start()) {
            Ok(jobs) => match self.charge(&job.request) {
                None => (job, BLOCKING_QUEUE_FULL),
                Some(charge) => {
                    job.charge = Some(charge);
                    match jobs.try_send(job) {
                        Ok(()) => return,
                        Err(TrySendError::Full(job)) => (job, BLOCKING_QUEUE_FULL),
                        Err(TrySendError::Disconnected(job)) => {
                            (job, "internal error: the blocking workers are gone")
                        }
                    }
                }
            },
            Err(why) => (job, why.as_str()),
        };
        tracing::warn!(method = %String::from_utf8_lossy(&job.request.method), "{why}");
        job.owed.settle(Reply::error(why));
    }

    /// Counts `request`'s bytes in, unless that would pass [`QUEUE_BYTES`] with others held.
    fn charge(&self, request: &Request) -> Option<Charge> {
        let bytes = job_cost(request);
        let before = self.held_bytes.fetch_add(bytes, Ordering::AcqRel);
        let charge = Charge {
            held: self.held_bytes.clone(),
            bytes,
        };
        // Dropping the charge takes the bytes back out.
        (before == 0 || before + bytes <= QUEUE_BYTES).then_some(charge)
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
        // The slot and charge are given back once the handler is done with the request.
        let Job {
            handler,
            request,
            owed,
            charge: _charge,
        } = job;
        let (method, peer) = (request.method.clone(), request.conn.peer());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(request)));
        let reply = match outcome {
            Ok(reply) => reply,
            Err(_) => {
                tracing::error!(
                    method = %String::from_utf8_lossy(&method),
                    %peer,
                    "blocking handler panicked"
                );
                Reply::error(HANDLER_PANICKED)
            }
        };
        if let (Owed::Notify(_), Err(message)) = (&owed, &reply.body) {
            tracing::debug!(
                method = %String::from_utf8_lossy(&method),
                %peer,
                "blocking handler failed on a notify: {message}"
            );
        }
        owed.settle(reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::handle::ConnHandle;
    use std::time::Duration;

    fn notify(conn: &ConnHandle, payload: Bytes) -> Request {
        Request {
            method: Bytes::from_static(b"/job"),
            payload,
            seq: 0,
            user_flags: 0,
            is_notify: true,
            conn: conn.clone(),
            metadata: None,
            extensions: Default::default(),
        }
    }

    /// Places given back so far: the `Settled` messages the reactor would get.
    fn settled(mailbox: &crate::reactor::mailbox::Mailbox) -> usize {
        mailbox
            .drain()
            .filter(|cmd| matches!(cmd, crate::reactor::mailbox::Command::Settled { .. }))
            .count()
    }

    #[test]
    fn jobs_past_the_byte_limit_are_refused_and_give_their_place_back() {
        let pool = BlockingPool::default();
        pool.set_threads(1);
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (gate, gate_rx) = crossbeam_channel::unbounded::<()>();
        let handler: BlockingHandler = std::sync::Arc::new(move |_| {
            started_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
            Reply::ok(Bytes::new())
        });
        let info = crate::ids::ConnInfo::new(
            crate::ids::ConnId {
                core: 0,
                slot: 0,
                serial: 1,
            },
            std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        );
        let mailbox = Arc::new(crate::reactor::mailbox::Mailbox::new(16));
        let conn = ConnHandle::new(info, mailbox.clone());
        // A quarter of the limit each (one buffer shared: the pool counts what each job
        // holds, not who else holds it), so three fit and the fourth passes the limit.
        let quarter = Bytes::from(vec![0u8; QUEUE_BYTES / 4]);
        let submit = || {
            let owed = Owed::Notify(crate::conn::responder::NotifySlot::new(conn.clone()));
            pool.submit(handler.clone(), notify(&conn, quarter.clone()), owed);
        };
        submit();
        started.recv().unwrap();
        for _ in 0..5 {
            submit();
        }
        assert_eq!(
            settled(&mailbox),
            3,
            "three refused gave their place back at once"
        );
        assert!(pool.held_bytes.load(Ordering::Acquire) <= QUEUE_BYTES);
        for _ in 0..3 {
            gate.send(()).unwrap();
        }
        for _ in 1..3 {
            started.recv().unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.held_bytes.load(Ordering::Acquire) != 0 {
            assert!(std::time::Instant::now() < deadline, "the bytes come back");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(settled(&mailbox), 3, "and the three that ran, theirs");
        assert!(started.try_recv().is_err(), "the refused ones never ran");
        // A job bigger than the whole limit still gets through an idle pool.
        let owed = Owed::Notify(crate::conn::responder::NotifySlot::new(conn.clone()));
        let huge = Bytes::from(vec![0u8; QUEUE_BYTES + 1]);
        pool.submit(handler.clone(), notify(&conn, huge), owed);
        started.recv().unwrap();
        gate.send(()).unwrap();
    }

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
