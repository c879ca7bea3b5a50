//! Timers for async code: [`sleep`], [`sleep_until`] and [`timeout`].
//!
//! On a reactor thread (inside an async handler or a task of [`spawn_local`]) a timer lives
//! in that reactor's own timer heap: arming, firing and cancelling cost no syscall, and the
//! reactor's wait in the kernel ends no later than the earliest one. Anywhere else (a tokio
//! or smol task, `futures::executor::block_on`) it lives in one process-wide timer thread,
//! started by the first such timer, so these futures work with any executor.
//!
//! Invariants: dropping a timer disarms it at once (its memory is released then, not when
//! it would have fired); a timer armed on one reactor is disarmed only by that reactor's
//! thread (dropped elsewhere, it is left to fire into a waker that does nothing).
//!
//! [`spawn_local`]: crate::spawn_local

use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::Executor;
use super::timers::{TimerKey, Timers};

/// Waits until `duration` has passed.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        armed: None,
    }
}

/// Runs `future` for at most `duration`: its output, or [`Elapsed`] (the future is dropped).
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// Where a [`Sleep`] is armed.
#[derive(Debug)]
enum Armed {
    /// In the timers of the reactor whose executor has this id.
    Reactor { executor: u64, key: TimerKey },
    /// In the process-wide timer thread.
    Global(TimerKey),
}

/// The future of [`sleep`] and [`sleep_until`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    armed: Option<Armed>,
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn disarm(&mut self) {
        match self.armed.take() {
            Some(Armed::Reactor { executor, key }) if Executor::current_id() == Some(executor) => {
                Executor::with_timers(|t| t.remove(key));
            }
            // Armed on another reactor: left to fire into a waker that does nothing.
            Some(Armed::Reactor { .. }) => {}
            Some(Armed::Global(key)) => global().remove(key),
            None => {}
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.disarm();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let waker = cx.waker();
        match &self.armed {
            Some(Armed::Reactor { executor, key }) if Executor::current_id() == Some(*executor) => {
                let key = *key;
                let armed = Executor::with_timers(|t| {
                    t.set_waker(key, waker);
                    t.is_armed(key)
                });
                if armed == Some(true) {
                    return Poll::Pending;
                }
                // Fired between our clock read and now: it is due.
                self.armed = None;
                return Poll::Ready(());
            }
            Some(Armed::Global(key)) => {
                if global().set_waker(*key, waker) {
                    return Poll::Pending;
                }
                self.armed = None;
                return Poll::Ready(());
            }
            // Moved to another thread since it was armed: arm it again here.
            Some(Armed::Reactor { .. }) => self.disarm(),
            None => {}
        }
        self.armed = Some(
            match Executor::with_timers(|t| t.insert(deadline, waker.clone())) {
                Some(key) => Armed::Reactor {
                    executor: Executor::current_id().expect("an executor is installed"),
                    key,
                },
                None => Armed::Global(global().insert(deadline, waker.clone())),
            },
        );
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

/// A [`timeout`] expired before its future completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The process-wide timer thread, started by the first timer armed off a reactor.
struct Global {
    timers: Mutex<Timers>,
    changed: Condvar,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<&'static Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let global: &'static Global = Box::leak(Box::new(Global {
            timers: Mutex::new(Timers::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("ringrpc-timer".into())
            .spawn(move || global.run())
            .expect("cannot start the ringrpc timer thread");
        global
    })
}

impl Global {
    fn lock(&self) -> std::sync::MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, deadline: Instant, waker: Waker) -> TimerKey {
        let mut timers = self.lock();
        let earliest = timers.next_deadline().is_none_or(|next| deadline < next);
        let key = timers.insert(deadline, waker);
        drop(timers);
        if earliest {
            self.changed.notify_one();
        }
        key
    }

    /// Updates the waker of an armed timer; false if it has fired.
    fn set_waker(&self, key: TimerKey, waker: &Waker) -> bool {
        let mut timers = self.lock();
        timers.set_waker(key, waker);
        timers.is_armed(key)
    }

    fn remove(&self, key: TimerKey) {
        self.lock().remove(key);
    }

    fn run(&self) {
        let mut timers = self.lock();
        loop {
            let now = Instant::now();
            let due = timers.take_due(now);
            if !due.is_empty() {
                drop(timers);
                for waker in due {
                    waker.wake();
                }
                timers = self.lock();
                continue;
            }
            timers = match timers.next_deadline() {
                Some(at) => {
                    self.changed
                        .wait_timeout(timers, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(timers).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}
