//! The executor without sockets: tasks, wakers from this thread and from others, timers,
//! join handles and cancellation.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::reactor::mailbox::{Command, Mailbox};

/// This thread as a reactor would set it up; returns the mailbox cross-thread wakes go to.
fn install() -> Arc<Mailbox> {
    let mailbox = Arc::new(Mailbox::new(16));
    mailbox.claim_thread();
    Executor::install(mailbox.clone());
    mailbox
}

/// What a reactor does with its mail: queue the tasks woken elsewhere.
fn take_wakes(mailbox: &Mailbox) -> usize {
    let mut n = 0;
    for cmd in mailbox.drain() {
        if let Command::Wake(key) = cmd {
            Executor::wake_from_mail(key);
            n += 1;
        }
    }
    n
}

#[test]
fn a_task_runs_and_a_local_wake_needs_no_mail() {
    let mailbox = install();
    let steps = Rc::new(Cell::new(0));
    let seen = steps.clone();
    spawn_local(async move {
        seen.set(1);
        yield_now().await;
        seen.set(2);
    })
    .unwrap();
    assert!(Executor::run_ready(1), "the yield queued it again");
    assert_eq!(steps.get(), 1);
    assert!(!Executor::run_ready(POLL_BUDGET));
    assert_eq!(steps.get(), 2);
    assert_eq!(Executor::task_count(), 0);
    assert_eq!(take_wakes(&mailbox), 0, "woken on its own thread");
    Executor::uninstall();
}

#[test]
fn a_wake_from_another_thread_goes_through_the_mailbox_once() {
    let mailbox = install();
    let (tx, rx) = std::sync::mpsc::channel::<Waker>();
    let done = Rc::new(Cell::new(false));
    let flag = done.clone();
    let mut tx = Some(tx);
    spawn_local(std::future::poll_fn(move |cx| {
        if let Some(tx) = tx.take() {
            tx.send(cx.waker().clone()).unwrap();
            return Poll::Pending;
        }
        flag.set(true);
        Poll::Ready(())
    }))
    .unwrap();
    Executor::run_ready(POLL_BUDGET);
    let waker = rx.recv().unwrap();
    std::thread::spawn(move || {
        // Three wakes before the reactor looks: the task is queued once.
        waker.wake_by_ref();
        waker.wake_by_ref();
        waker.wake();
    })
    .join()
    .unwrap();
    assert_eq!(take_wakes(&mailbox), 1);
    Executor::run_ready(POLL_BUDGET);
    assert!(done.get());
    Executor::uninstall();
}

#[test]
fn the_budget_bounds_one_turn_and_the_rest_waits() {
    install();
    let polls = Rc::new(Cell::new(0));
    for _ in 0..(POLL_BUDGET + 10) {
        let polls = polls.clone();
        spawn_local(async move { polls.set(polls.get() + 1) }).unwrap();
    }
    assert!(Executor::run_ready(POLL_BUDGET), "10 still ready");
    assert_eq!(polls.get(), POLL_BUDGET);
    assert!(!Executor::run_ready(POLL_BUDGET));
    assert_eq!(polls.get(), POLL_BUDGET + 10);
    Executor::uninstall();
}

#[test]
fn join_handles_give_the_output_and_abort_cancels() {
    install();
    let out = Rc::new(Cell::new(None));
    let got = out.clone();
    let slow = spawn_local(async {
        time::sleep(Duration::from_secs(3600)).await;
        1
    })
    .unwrap();
    let fast = spawn_local(async { 7 }).unwrap();
    spawn_local(async move {
        got.set(Some((fast.await, slow.await)));
    })
    .unwrap();
    Executor::run_ready(POLL_BUDGET);
    assert_eq!(out.get(), None, "waits for the slow one");
    assert_eq!(Executor::task_count(), 2);
    let timers = Executor::with_timers(|t| t.len()).unwrap();
    assert_eq!(
        timers, 1,
        "the slow task's sleep is armed here, not on a thread"
    );
    // Abort the slow one: its sleep is disarmed, the joiner wakes with Cancelled.
    let key = Executor::with(|ex| {
        ex.tasks
            .iter()
            .map(|(i, t)| (i, t.generation))
            .collect::<Vec<_>>()
    })
    .unwrap();
    let slow_key = key
        .iter()
        .map(|&(index, generation)| TaskKey {
            index: index as u32,
            generation,
        })
        .min_by_key(|k| k.generation)
        .unwrap();
    assert!(Executor::cancel(slow_key));
    assert_eq!(Executor::with_timers(|t| t.len()), Some(0));
    Executor::run_ready(POLL_BUDGET);
    assert_eq!(out.get(), Some((Ok(7), Err(Cancelled))));
    Executor::uninstall();
}

#[test]
fn timers_fire_at_their_deadline_and_timeouts_elapse() {
    install();
    let result = Rc::new(Cell::new(None));
    let r = result.clone();
    spawn_local(async move {
        let quick = time::timeout(Duration::from_secs(3600), async { 5 }).await;
        let slow = time::timeout(
            Duration::from_millis(5),
            time::sleep(Duration::from_secs(3600)),
        )
        .await;
        r.set(Some((quick, slow)));
    })
    .unwrap();
    Executor::run_ready(POLL_BUDGET);
    assert_eq!(result.get(), None);
    let next = Executor::next_timer().expect("the 5 ms timeout is armed");
    assert!(next <= Instant::now() + Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(6));
    Executor::fire_timers(Instant::now());
    Executor::run_ready(POLL_BUDGET);
    assert_eq!(result.get(), Some((Ok(5), Err(time::Elapsed))));
    assert_eq!(
        Executor::with_timers(|t| t.len()),
        Some(0),
        "the long sleep was disarmed"
    );
    Executor::uninstall();
}

#[test]
fn a_panicking_task_is_contained_and_counted() {
    install();
    spawn_local(async { panic!("task fails") }).unwrap();
    let after = Rc::new(Cell::new(false));
    let a = after.clone();
    spawn_local(async move { a.set(true) }).unwrap();
    Executor::run_ready(POLL_BUDGET);
    assert!(after.get());
    assert_eq!(Executor::take_panics(), 1);
    Executor::uninstall();
}

#[test]
fn uninstall_drops_parked_tasks_on_this_thread_and_spawning_then_fails() {
    install();
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    let flag = Flag(dropped.clone());
    spawn_local(async move {
        let _flag = flag;
        std::future::pending::<()>().await
    })
    .unwrap();
    Executor::run_ready(POLL_BUDGET);
    assert_eq!(Executor::uninstall(), 1);
    assert!(dropped.get());
    assert!(spawn_local(async {}).is_err());
}

#[test]
fn sleep_off_a_reactor_uses_the_timer_thread() {
    let start = Instant::now();
    block_on(time::sleep(Duration::from_millis(20)));
    assert!(start.elapsed() >= Duration::from_millis(20));
    let out = block_on(time::timeout(
        Duration::from_millis(10),
        std::future::pending::<()>(),
    ));
    assert_eq!(out, Err(time::Elapsed));
}

/// A minimal executor for one future on this thread (no reactor).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
