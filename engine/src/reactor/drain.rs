//! Shutdown and reporting: draining (stop accepting, answer everything already received,
//! flush, close), the forced close when the grace period ends, and periodic stats lines.
//!
//! Invariants: a connection is owed an answer for every byte the peer sent before the drain
//! began (the socket's unread bytes are counted in) and every answer a responder, blocking
//! job or task still owes it; after the grace period nothing waits, and the answers still
//! owed then are counted in `CoreStats::answers_abandoned`.

use std::os::fd::AsFd;

use super::Reactor;
use super::timers::TimerId;
use ringrpc_uring::sys;

impl Reactor {
    /// Shutdown with a delay: stop listening (new connections are refused, so a load
    /// balancer's health checks fail) and keep serving the open connections.
    pub(super) fn begin_delay(&mut self) {
        let until = self.now + self.settings.shutdown_delay;
        self.delaying = Some(until);
        self.deadlines.schedule(until, TimerId::ShutdownDelay);
        self.cancel_accepts();
        self.listeners.clear();
        tracing::debug!(
            core = self.id,
            conns = self.conns.len(),
            "shutting down: listeners closed, serving open connections until they close or the delay ends"
        );
    }

    pub(super) fn begin_drain(&mut self) {
        let deadline = self.now + self.settings.shutdown_grace;
        self.draining = Some(deadline);
        self.deadlines.schedule(deadline, TimerId::DrainGrace);
        self.cancel_accepts();
        // The kernel keeps its own reference until the accept is cancelled; then the
        // listening socket closes and new connections are refused.
        self.listeners.clear();
        self.stop_udp();
        for (_, slot) in self.conns.iter_mut() {
            // Everything the peer sent before this moment is owed an answer.
            let unread = sys::unread_bytes(slot.socket.as_fd()).ok();
            let bytes_in = slot.conn.session.stats.bytes_in;
            slot.lifecycle.begin_drain(bytes_in, unread);
        }
        self.mark_all_dirty();
        tracing::debug!(core = self.id, conns = self.conns.len(), "draining");
    }

    pub(super) fn force_close_all(&mut self) {
        let owed: usize = self
            .conns
            .iter()
            .map(|(_, slot)| slot.conn.session.answers_owed())
            .sum();
        self.stats.answers_abandoned += owed as u64;
        if !self.conns.is_empty() {
            tracing::warn!(
                core = self.id,
                conns = self.conns.len(),
                answers_abandoned = owed,
                "shutdown grace expired; closing remaining connections, abandoning {owed} answers still owed"
            );
        }
        for (_, slot) in self.conns.iter_mut() {
            slot.lifecycle.force_close();
        }
        self.mark_all_dirty();
    }

    pub(super) fn report_interval(&mut self) {
        let now = self.now;
        let (then, prev) = self.last_report;
        let secs = now.duration_since(then).as_secs_f64().max(1e-9);
        let s = self.stats;
        let sends = s.sends - prev.sends;
        let frames = s.frames_out - prev.frames_out;
        tracing::info!(
            "core {}: {} conns, {:.0} req/s, in {:.1} MB/s, out {:.1} MB/s, {:.1} frames/send, {} closed",
            self.id,
            self.conns.len(),
            (s.requests - prev.requests) as f64 / secs,
            (s.bytes_in - prev.bytes_in) as f64 / secs / 1e6,
            (s.bytes_out - prev.bytes_out) as f64 / secs / 1e6,
            if sends == 0 {
                0.0
            } else {
                frames as f64 / sends as f64
            },
            s.closed - prev.closed,
        );
        self.last_report = (now, s);
        if let Some(every) = self.settings.stats_interval {
            self.deadlines.schedule(now + every, TimerId::Stats);
        }
    }
}
