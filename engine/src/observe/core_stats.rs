//! Counters: what one reactor did, summed over its connections.
//!
//! Invariants: each counter is written only by its reactor's thread (no shared atomics on
//! the hot path); totals are merged after the reactors stop, and while they run only from
//! the snapshots a reactor copies out when a metrics scrape asks (see `observe::scrape`).

use crate::conn::ConnStats;
use crate::udp::UdpStats;

/// Totals of one reactor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Which reactor (0-based).
    pub core: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed.
    pub closed: u64,
    /// Connections refused at the connection limit.
    pub refused: u64,
    /// Requests dispatched.
    pub requests: u64,
    /// Notifies dispatched.
    pub notifies: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Vectored sends issued.
    pub sends: u64,
    /// Of `sends`, those issued zero-copy (`send_zc_min`).
    pub sends_zc: u64,
    /// Zero-copy sends' notifications: the kernel no longer reads their buffers, which were
    /// released then.
    pub zc_notifications: u64,
    /// Of `zc_notifications`, those where the kernel reported copying the data after all
    /// (a loopback peer always gets a copy).
    pub zc_copied: u64,
    /// Zero-copy sends a socket refused (Unix sockets), sent again plainly; that
    /// connection sends plainly from then on.
    pub zc_refused: u64,
    /// Requests and notifies for unknown methods.
    pub not_found: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Other user callbacks on the reactor that panicked (call completions, connection
    /// hooks, broadcast filters), each contained and logged.
    pub callback_panics: u64,
    /// Answers still owed (responders, blocking jobs) when the shutdown grace ended, whose
    /// connections were closed without them.
    pub answers_abandoned: u64,
    /// Requests refused, and Notifies to blocking methods dropped, because their connection
    /// had `max_in_flight_per_conn` answers or blocking jobs pending.
    pub refused_in_flight: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// Connections closed by a socket error (reset, broken pipe).
    pub socket_errors: u64,
    /// Times the receive buffers ran out (recv re-armed).
    pub recv_buffers_exhausted: u64,
    /// Recv completions whose bytes followed an earlier completion's in the same receive
    /// buffer (`incremental_recv_buffers`; always 0 with whole buffers).
    pub recv_buffer_shared: u64,
    /// Large frames whose rest was received straight into their own buffer.
    pub direct_recvs: u64,
    /// Accept failures (descriptor or memory exhaustion).
    pub accept_errors: u64,
    /// Broadcast frames queued on connections.
    pub broadcasts: u64,
    /// Calls made to peers.
    pub calls: u64,
    /// Calls whose future was dropped before the Response came (their pending entries
    /// removed then).
    pub calls_cancelled: u64,
    /// Times a connection's unsent output passed its limit and reading from it paused.
    pub overstocks: u64,
    /// Broadcast frames dropped because a connection was over its limit.
    pub broadcast_drops: u64,
    /// Notifies from other threads dropped because their connection was over its limit.
    pub notify_drops: u64,
    /// Notifies, calls and broadcasts other threads could not queue: the inbox was full.
    pub mailbox_refused: u64,
    /// Wake-up or timer failures (each logged); non-zero means cross-thread delivery
    /// or a deadline may have been late.
    pub loop_errors: u64,
    /// Streams opened, by peers or by this side.
    pub streams_opened: u64,
    /// Stream frames received.
    pub stream_frames: u64,
    /// gzip-compressed frames received and inflated.
    pub gzip_in: u64,
    /// Frames sent gzip-compressed (`gzip_threshold`).
    pub gzip_out: u64,
    /// Frames whose metadata block was malformed (Requests answered with an error, Notifies
    /// and Stream frames dropped, Responses failing their call).
    pub bad_metadata: u64,
    /// The datagram endpoint's counters (all zero without UDP).
    pub udp: UdpStats,
}

impl CoreStats {
    /// Adds every counter of `other` (used for totals; `core` is left as is).
    pub fn add(&mut self, other: &CoreStats) {
        let CoreStats {
            core: _,
            accepted,
            closed,
            refused,
            requests,
            notifies,
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            sends,
            sends_zc,
            zc_notifications,
            zc_copied,
            zc_refused,
            not_found,
            panics,
            callback_panics,
            answers_abandoned,
            refused_in_flight,
            protocol_errors,
            socket_errors,
            recv_buffers_exhausted,
            recv_buffer_shared,
            direct_recvs,
            accept_errors,
            broadcasts,
            calls,
            calls_cancelled,
            overstocks,
            broadcast_drops,
            notify_drops,
            mailbox_refused,
            loop_errors,
            streams_opened,
            stream_frames,
            gzip_in,
            gzip_out,
            bad_metadata,
            udp,
        } = *other;
        self.accepted += accepted;
        self.closed += closed;
        self.refused += refused;
        self.requests += requests;
        self.notifies += notifies;
        self.frames_in += frames_in;
        self.frames_out += frames_out;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.sends += sends;
        self.sends_zc += sends_zc;
        self.zc_notifications += zc_notifications;
        self.zc_copied += zc_copied;
        self.zc_refused += zc_refused;
        self.not_found += not_found;
        self.panics += panics;
        self.callback_panics += callback_panics;
        self.answers_abandoned += answers_abandoned;
        self.refused_in_flight += refused_in_flight;
        self.protocol_errors += protocol_errors;
        self.socket_errors += socket_errors;
        self.recv_buffers_exhausted += recv_buffers_exhausted;
        self.recv_buffer_shared += recv_buffer_shared;
        self.direct_recvs += direct_recvs;
        self.accept_errors += accept_errors;
        self.broadcasts += broadcasts;
        self.calls += calls;
        self.calls_cancelled += calls_cancelled;
        self.overstocks += overstocks;
        self.broadcast_drops += broadcast_drops;
        self.notify_drops += notify_drops;
        self.mailbox_refused += mailbox_refused;
        self.loop_errors += loop_errors;
        self.streams_opened += streams_opened;
        self.stream_frames += stream_frames;
        self.gzip_in += gzip_in;
        self.gzip_out += gzip_out;
        self.bad_metadata += bad_metadata;
        self.udp.add(&udp);
    }

    /// Average frames carried by one send.
    pub fn frames_per_send(&self) -> f64 {
        if self.sends == 0 {
            0.0
        } else {
            self.frames_out as f64 / self.sends as f64
        }
    }

    /// Adds what one connection counted between two snapshots.
    pub(crate) fn add_conn_delta(&mut self, before: &ConnStats, after: &ConnStats) {
        self.bytes_in += after.bytes_in - before.bytes_in;
        self.frames_in += after.frames_in - before.frames_in;
        self.requests += after.requests - before.requests;
        self.notifies += after.notifies - before.notifies;
        self.not_found += after.not_found - before.not_found;
        self.panics += after.panics - before.panics;
        self.refused_in_flight += after.refused_in_flight - before.refused_in_flight;
        self.streams_opened += after.streams_opened - before.streams_opened;
        self.stream_frames += after.stream_frames - before.stream_frames;
        self.gzip_in += after.gzip_in - before.gzip_in;
        self.bad_metadata += after.bad_metadata - before.bad_metadata;
    }
}
