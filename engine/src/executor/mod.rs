//! Each reactor's task executor: `!Send` futures polled on the reactor thread that owns
//! them, thread-per-core like glommio and monoio — no work stealing, no cross-core hops.
//!
//! What it owns: the tasks of its core (a slab of boxed futures, each with a generation),
//! the queue of tasks ready to run, and the core's timers ([`timers`]). It lives in a
//! thread-local set up by the reactor before its loop ([`Executor::install`]) and taken down
//! after it, so a future can spawn tasks and arm timers while the reactor polls it.
//!
//! How a wake-up reaches a task:
//! - Each task has one [`TaskWaker`] (an `Arc`, so `std::task::Waker` can be `Send + Sync`
//!   even though the future is not). Waking sets its `scheduled` flag; only the wake that
//!   flips it does anything, so a task is queued at most once however often it is woken.
//! - On the reactor's own thread the task's key goes onto the thread-local ready queue: no
//!   syscall, no atomic read-modify-write beyond the flag.
//! - From any other thread it goes through [`RemoteWake`]: the reactor's mailbox carries it
//!   as a `Command::Wake` (channel plus eventfd), and the reactor queues it when it takes
//!   its mail. The executor knows the mailbox only as that trait, so it sits below it.
//!
//! Invariants:
//! - A future is polled, and dropped, only on its reactor's thread: a waker that outlives
//!   its task names a key and generation that no longer match, and waking it does nothing.
//! - The reactor never sleeps in the kernel while tasks are ready, and polls at most
//!   [`POLL_BUDGET`] of them per turn, so one busy task cannot starve I/O.
//! - While a future is polled it is taken out of its slot, so the executor is never
//!   borrowed across user code: a future may spawn, cancel (itself included) and arm timers.
//! - Stopping the executor drops every future still held, on this thread.

pub(crate) mod contain;

mod blocking;
pub mod time;
pub(crate) mod timers;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use slab::Slab;

use crate::executor::contain::{contain, panic_message};
pub use blocking::{BlockingError, BlockingJoin, spawn_blocking};
use timers::Timers;

/// Tasks polled at most per reactor turn before the reactor looks at I/O again.
pub(crate) const POLL_BUDGET: usize = 256;

/// A boxed task future; its output is handled inside it.
type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

/// Names one task for its whole life: a slab key plus a generation, so a key reused by a
/// later task is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskKey {
    index: u32,
    generation: u32,
}

/// How a wake-up reaches a task's reactor: the reactor's mailbox (`reactor::mailbox`) is
/// the one implementation. The executor names only this, so it knows nothing of the
/// messages a reactor takes.
pub(crate) trait RemoteWake: Send + Sync + std::fmt::Debug {
    /// Whether the calling thread runs this reactor (a wake-up then needs no message).
    fn is_own_thread(&self) -> bool;
    /// Queues task `key` from another thread and wakes the reactor if it sleeps. Owed:
    /// never refused (each task is queued at most once at a time).
    fn wake_from_afar(&self, key: TaskKey);
}

/// One task's waker. `Send + Sync`: it holds only the task's key, a flag and the way to
/// the reactor that owns the task.
#[derive(Debug)]
pub(crate) struct TaskWaker {
    /// The task's key, packed (a waker nobody else holds is reused for the next task).
    key: AtomicU64,
    /// Queued to run (set by the wake that queued it, cleared just before each poll).
    scheduled: AtomicBool,
    reactor: Arc<dyn RemoteWake>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let key = TaskKey::unpack(self.key.load(Ordering::Acquire));
        if self.reactor.is_own_thread() {
            READY.with(|ready| ready.borrow_mut().push_back(key));
        } else {
            self.reactor.wake_from_afar(key);
        }
    }
}

struct Task {
    /// `None` while it is being polled.
    future: Option<BoxedTask>,
    waker: Arc<TaskWaker>,
    generation: u32,
}

/// One reactor's tasks and timers (see the module docs).
pub(crate) struct Executor {
    /// Unique in the process: timers armed here remember it.
    id: u64,
    reactor: Arc<dyn RemoteWake>,
    tasks: Slab<Task>,
    next_generation: u32,
    timers: Timers,
    /// Task futures that panicked (each contained and logged).
    panics: u64,
    /// Wakers of finished tasks that nobody else held, for the next tasks (at most
    /// [`SPARE_WAKERS`]): a spawn then allocates only its future.
    spare_wakers: Vec<Arc<TaskWaker>>,
}

/// Wakers kept for reuse per reactor (a few dozen bytes each).
const SPARE_WAKERS: usize = 1024;

impl TaskKey {
    fn pack(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }

    fn unpack(packed: u64) -> TaskKey {
        TaskKey {
            index: (packed >> 32) as u32,
            generation: packed as u32,
        }
    }
}

thread_local! {
    /// The executor of the reactor running on this thread, if any.
    static EXECUTOR: RefCell<Option<Executor>> = const { RefCell::new(None) };
    /// Keys of tasks woken on this thread, in the order they were woken.
    static READY: RefCell<VecDeque<TaskKey>> = const { RefCell::new(VecDeque::new()) };
}

/// Why a task could not be spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotOnReactor;

impl std::fmt::Display for NotOnReactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "not on a ringrpc reactor thread: spawn_local and reactor timers work inside handlers, hooks and tasks of a server or client runtime",
        )
    }
}

impl std::error::Error for NotOnReactor {}

impl Executor {
    /// Sets up this thread's executor for `reactor` (call on the reactor's thread before its
    /// loop).
    pub(crate) fn install(reactor: Arc<dyn RemoteWake>) {
        EXECUTOR.with(|ex| {
            static NEXT_ID: AtomicU64 = AtomicU64::new(1);
            *ex.borrow_mut() = Some(Executor {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                reactor,
                tasks: Slab::new(),
                next_generation: 0,
                timers: Timers::default(),
                panics: 0,
                spare_wakers: Vec::new(),
            })
        });
    }

    /// Drops every task still held and the timers, on this thread (the reactor's loop has
    /// ended). Returns how many tasks were dropped unfinished.
    pub(crate) fn uninstall() -> usize {
        // Taken out first, so futures dropped here that touch the executor find none.
        let Some(executor) = EXECUTOR.with(|ex| ex.borrow_mut().take()) else {
            return 0;
        };
        READY.with(|ready| ready.borrow_mut().clear());
        let unfinished = executor.tasks.len();
        for (_, task) in executor.tasks {
            contain("dropping a task", || drop(task.future));
        }
        drop(executor.timers);
        unfinished
    }

    /// The id of this thread's executor, if it runs one.
    pub(crate) fn current_id() -> Option<u64> {
        EXECUTOR.with(|ex| ex.borrow().as_ref().map(|e| e.id))
    }

    fn with<R>(f: impl FnOnce(&mut Executor) -> R) -> Option<R> {
        EXECUTOR.with(|ex| ex.borrow_mut().as_mut().map(f))
    }

    /// Spawns `future` as a task of this thread's reactor and queues it to run this turn.
    pub(crate) fn spawn(
        future: impl Future<Output = ()> + 'static,
    ) -> Result<TaskKey, NotOnReactor> {
        let future: BoxedTask = Box::pin(future);
        let key = Executor::with(|ex| {
            let entry = ex.tasks.vacant_entry();
            ex.next_generation = ex.next_generation.wrapping_add(1);
            let key = TaskKey {
                index: entry.key() as u32,
                generation: ex.next_generation,
            };
            let waker = match ex.spare_wakers.pop() {
                Some(waker) => {
                    waker.key.store(key.pack(), Ordering::Release);
                    waker.scheduled.store(true, Ordering::Release);
                    waker
                }
                None => Arc::new(TaskWaker {
                    key: AtomicU64::new(key.pack()),
                    scheduled: AtomicBool::new(true),
                    reactor: ex.reactor.clone(),
                }),
            };
            entry.insert(Task {
                future: Some(future),
                waker,
                generation: key.generation,
            });
            key
        })
        .ok_or(NotOnReactor)?;
        READY.with(|ready| ready.borrow_mut().push_back(key));
        Ok(key)
    }

    /// Keeps a finished task's waker for the next task, if nobody else holds it (a waker
    /// held elsewhere may still be woken; it then names a key that no longer matches).
    fn keep_waker(&mut self, waker: Arc<TaskWaker>) {
        if Arc::strong_count(&waker) == 1 && self.spare_wakers.len() < SPARE_WAKERS {
            self.spare_wakers.push(waker);
        }
    }

    /// Drops task `key`'s future now if it is still alive (a cancel): its connection is
    /// gone. Returns whether it was.
    pub(crate) fn cancel(key: TaskKey) -> bool {
        let future = Executor::with(|ex| match ex.tasks.get(key.index as usize) {
            Some(task) if task.generation == key.generation => {
                Some(ex.tasks.remove(key.index as usize).future)
            }
            _ => None,
        })
        .flatten();
        match future {
            // Dropped outside the borrow: its destructors may use the executor.
            Some(future) => {
                contain("dropping a cancelled task", || drop(future));
                true
            }
            None => false,
        }
    }

    /// Whether task `key` is still alive.
    pub(crate) fn is_alive(key: TaskKey) -> bool {
        Executor::with(|ex| {
            ex.tasks
                .get(key.index as usize)
                .is_some_and(|t| t.generation == key.generation)
        })
        .unwrap_or(false)
    }

    /// Queues task `key`, woken from another thread (its wake came through the mailbox).
    pub(crate) fn wake_from_mail(key: TaskKey) {
        READY.with(|ready| ready.borrow_mut().push_back(key));
    }

    /// Polls up to `budget` ready tasks; returns whether some are still ready.
    pub(crate) fn run_ready(budget: usize) -> bool {
        for _ in 0..budget {
            let Some(key) = READY.with(|ready| ready.borrow_mut().pop_front()) else {
                return false;
            };
            Executor::poll_task(key);
        }
        Executor::has_ready()
    }

    /// Whether tasks wait to be polled.
    pub(crate) fn has_ready() -> bool {
        READY.with(|ready| !ready.borrow().is_empty())
    }

    fn poll_task(key: TaskKey) {
        // Take the future out, so the executor is free while user code runs.
        let taken = Executor::with(|ex| match ex.tasks.get_mut(key.index as usize) {
            Some(task) if task.generation == key.generation => {
                task.waker.scheduled.store(false, Ordering::Release);
                task.future.take().map(|f| (f, task.waker.clone()))
            }
            _ => None,
        })
        .flatten();
        let Some((mut future, waker)) = taken else {
            return; // finished or cancelled since it was woken
        };
        let waker = Waker::from(waker);
        let mut cx = Context::from_waker(&waker);
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        drop(waker);
        let done = match polled {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(panic) => {
                // Handler tasks catch their own panics and answer; this is a bare task.
                tracing::error!("a task panicked: {}", panic_message(&*panic));
                Executor::with(|ex| ex.panics += 1);
                true
            }
        };
        if done {
            let finished = Executor::with(|ex| match ex.tasks.get(key.index as usize) {
                Some(task) if task.generation == key.generation => {
                    Some(ex.tasks.remove(key.index as usize).waker)
                }
                _ => None,
            })
            .flatten();
            // Dropped outside the borrow (its destructors may use the executor), and before
            // its waker is looked at: a future holding a clone keeps the waker from reuse.
            contain("dropping a finished task", || drop(future));
            if let Some(waker) = finished {
                Executor::with(|ex| ex.keep_waker(waker));
            }
            return;
        }
        let back = Executor::with(|ex| match ex.tasks.get_mut(key.index as usize) {
            Some(task) if task.generation == key.generation => {
                task.future = Some(future);
                None
            }
            // Cancelled while it ran: drop it now, outside the borrow.
            _ => Some(future),
        })
        .flatten();
        if let Some(future) = back {
            contain("dropping a cancelled task", || drop(future));
        }
    }

    /// Tasks alive on this thread.
    #[cfg(test)]
    pub(crate) fn task_count() -> usize {
        Executor::with(|ex| ex.tasks.len()).unwrap_or(0)
    }

    /// Task futures that panicked since the last call.
    pub(crate) fn take_panics() -> u64 {
        Executor::with(|ex| std::mem::take(&mut ex.panics)).unwrap_or(0)
    }

    /// The earliest timer deadline of this thread's executor.
    pub(crate) fn next_timer() -> Option<Instant> {
        Executor::with(|ex| ex.timers.next_deadline()).flatten()
    }

    /// Wakes every timer due at `now` (outside the executor's borrow).
    pub(crate) fn fire_timers(now: Instant) {
        let due = Executor::with(|ex| ex.timers.take_due(now)).unwrap_or_default();
        for waker in due {
            waker.wake();
        }
    }

    /// Runs `f` on this thread's timers, if it has an executor.
    pub(crate) fn with_timers<R>(f: impl FnOnce(&mut Timers) -> R) -> Option<R> {
        Executor::with(|ex| f(&mut ex.timers))
    }
}

/// Spawns `future` on the current reactor thread's executor. It need not be `Send`: it is
/// polled only on this thread. Fails off a reactor thread. The returned [`JoinHandle`]
/// awaits its output; dropping it detaches the task (it runs on), [`JoinHandle::abort`]
/// cancels it.
pub fn spawn_local<F>(future: F) -> Result<JoinHandle<F::Output>, NotOnReactor>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let shared = Rc::new(RefCell::new(JoinState::<F::Output>::Running(None)));
    let finish = Finish(shared.clone());
    let key = Executor::spawn(async move {
        let finish = finish;
        let value = future.await;
        finish.set(JoinState::Done(value));
    })?;
    Ok(JoinHandle { key, shared })
}

enum JoinState<T> {
    /// Still running; the waker of whoever awaits it.
    Running(Option<Waker>),
    Done(T),
    /// Dropped before it finished.
    Cancelled,
    /// The output was handed out.
    Taken,
}

/// Held by a task's future: sets its outcome and wakes whoever awaits it — `Cancelled`
/// when the future is dropped before it finished.
struct Finish<T>(Rc<RefCell<JoinState<T>>>);

impl<T> Finish<T> {
    fn set(&self, outcome: JoinState<T>) {
        let previous = std::mem::replace(&mut *self.0.borrow_mut(), outcome);
        if let JoinState::Running(Some(waker)) = previous {
            waker.wake();
        }
    }
}

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        if matches!(&*self.0.borrow(), JoinState::Running(_)) {
            self.set(JoinState::Cancelled);
        }
    }
}

/// Awaits a task spawned with [`spawn_local`]. `!Send`, like the task.
pub struct JoinHandle<T> {
    key: TaskKey,
    shared: Rc<RefCell<JoinState<T>>>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("key", &self.key)
            .finish()
    }
}

/// A task was cancelled before it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the task was cancelled before it finished")
    }
}

impl std::error::Error for Cancelled {}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped now, and awaiting this handle gives
    /// [`Cancelled`] unless it had finished.
    pub fn abort(&self) {
        Executor::cancel(self.key);
    }

    /// Whether the task has finished (or was cancelled).
    pub fn is_finished(&self) -> bool {
        !matches!(&*self.shared.borrow(), JoinState::Running(_))
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.shared.borrow_mut();
        match std::mem::replace(&mut *state, JoinState::Taken) {
            JoinState::Done(value) => Poll::Ready(Ok(value)),
            JoinState::Cancelled | JoinState::Taken => Poll::Ready(Err(Cancelled)),
            JoinState::Running(_) => {
                *state = JoinState::Running(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

/// Yields once: the task is queued behind the tasks ready now and polled again this turn
/// or the next.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
