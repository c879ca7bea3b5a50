//! `--io std`: an I/O thread over plain sockets. It steps each connection in turn (send what
//! is due, read once, handle what arrived) and yields when none made progress; a lone
//! connection reads blocking with a short timeout instead (see `run`).

use std::time::Instant;

use crate::conn::Connection;
use crate::cpu::WindowCpu;
use crate::worker::{
    HOUSEKEEPING_INTERVAL, Plan, Shared, WorkerOutput, WorkerState, end_of_turn, publish,
};

/// Runs `conns` until each is done or the drain deadline passes. Latencies end up in
/// `shared.latencies`.
pub(crate) fn run_std_worker(
    mut conns: Vec<Connection>,
    plan: &Plan,
    shared: &Shared,
) -> WorkerOutput {
    let mut state = WorkerState::new(plan, shared);
    let mut cpu = WindowCpu::new(plan.cpu_source, plan.measure_start, plan.deadline);
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
    loop {
        let now = Instant::now();
        cpu.observe(now);
        let mut progressed = false;
        let lone = conns.len() == 1;
        for conn in conns.iter_mut().filter(|c| !c.is_done(now, plan)) {
            if let Some(dialer) = plan
                .dialer
                .as_ref()
                .filter(|_| conn.wants_reconnect(now, plan))
            {
                match dialer.redial(lone, !lone) {
                    Ok((socket, tls)) => conn.reopen(Some(socket), tls),
                    Err(e) => conn.fail(format!("reconnect failed: {e}"), &mut state),
                }
            }
            progressed |= conn.step(now, plan, &mut state);
        }
        let now = Instant::now();
        if end_of_turn(
            &mut conns,
            now,
            plan,
            &mut state,
            shared,
            &mut next_housekeeping,
        ) {
            break;
        }
        if !progressed {
            // Non-blocking connections with nothing to do: let other threads run.
            std::thread::yield_now();
        }
    }
    cpu.finish();
    publish(&mut state, shared);
    WorkerOutput {
        counters: state.counters,
        cpu_in_window: cpu.used(),
        published_ok: state.published_ok,
    }
}
