//! What a server did, per core, once it stopped ([`ServerReport`]).
//!
//! Invariants: one entry per reactor, in core order; the total is their sum.

use std::fmt;

use crate::observe::core_stats::CoreStats;

/// Per-core totals after a server stopped.
#[derive(Clone, Debug, Default)]
pub struct ServerReport {
    /// One entry per reactor, in core order.
    pub cores: Vec<CoreStats>,
}

impl ServerReport {
    /// The sum over all cores (`core` is meaningless in it).
    pub fn total(&self) -> CoreStats {
        let mut t = CoreStats::default();
        for c in &self.cores {
            t.add(c);
        }
        t
    }
}

impl fmt::Display for ServerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, c: &CoreStats| {
            writeln!(
                f,
                "{name:>7}: {} connections, {} requests, {} notifies, {} bytes in, {} bytes out, {} sends, {:.1} frames/send, {} protocol errors",
                c.accepted,
                c.requests,
                c.notifies,
                c.bytes_in,
                c.bytes_out,
                c.sends,
                c.frames_per_send(),
                c.protocol_errors
            )
        };
        for c in &self.cores {
            line(f, &format!("core {}", c.core), c)?;
        }
        let total = self.total();
        line(f, "total", &total)?;
        if total.streams_opened + total.stream_frames > 0 {
            writeln!(
                f,
                "streams: {} opened, {} frames in",
                total.streams_opened, total.stream_frames
            )?;
        }
        if total.recv_buffers_exhausted + total.recv_buffer_shared + total.direct_recvs > 0 {
            writeln!(
                f,
                "   recv: buffers ran out {} times; {} reads shared a buffer; {} direct receives",
                total.recv_buffers_exhausted, total.recv_buffer_shared, total.direct_recvs
            )?;
        }
        if total.panics + total.callback_panics + total.answers_abandoned > 0 {
            writeln!(
                f,
                " faults: {} handlers and {} other callbacks panicked (contained); {} answers abandoned at shutdown",
                total.panics, total.callback_panics, total.answers_abandoned
            )?;
        }
        if total.gzip_in + total.gzip_out + total.bad_metadata > 0 {
            writeln!(
                f,
                "   gzip: {} frames inflated, {} sent compressed; {} bad metadata blocks",
                total.gzip_in, total.gzip_out, total.bad_metadata
            )?;
        }
        let u = total.udp;
        if u.datagrams_in + u.datagrams_out > 0 {
            writeln!(
                f,
                "    udp: {} datagrams in, {} out, {} requests, {} notifies, {} duplicates, {} malformed, {} refused, {} calls, {} retries, {} timeouts",
                u.datagrams_in,
                u.datagrams_out,
                u.requests,
                u.notifies,
                u.duplicates,
                u.malformed,
                u.refused,
                u.calls,
                u.retries,
                u.timeouts
            )?;
        }
        Ok(())
    }
}
