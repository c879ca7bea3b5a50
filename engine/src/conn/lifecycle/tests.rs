//! Every lifecycle transition, driven by a fake clock: no sockets, no sleeping.
use super::*;
use ringrpc_protocol::DecodeError;

const MS: Duration = Duration::from_millis(1);

fn cfg() -> LifecycleConfig {
    LifecycleConfig {
        idle_timeout: Some(Duration::from_secs(60)),
        read_timeout: Some(Duration::from_secs(5)),
        keepalive: Some(Duration::from_secs(10)),
        max_send_queue_bytes: 1000,
        max_send_queue_frames: 100,
        pause_reading: true,
        linger_quiet: LINGER_QUIET,
        linger_max: LINGER_MAX,
        linger_tick: LINGER_TICK,
    }
}

/// One connection driven by a fake clock: `t0 + ms`.
struct H {
    lc: Lifecycle,
    cfg: LifecycleConfig,
    t0: Instant,
    facts: Facts,
    unread: Option<usize>,
    unread_asked: bool,
}

impl H {
    fn new() -> H {
        H::with(cfg())
    }

    fn with(cfg: LifecycleConfig) -> H {
        let t0 = Instant::now();
        let mut h = H {
            lc: Lifecycle::new(t0),
            cfg,
            t0,
            facts: Facts {
                output_empty: true,
                bytes_in: 0,
                partial_len: 0,
                backlog_bytes: 0,
                backlog_frames: 0,
                hold_reading: false,
                direct_wanted: false,
                answers_owed: 0,
            },
            unread: Some(0),
            unread_asked: false,
        };
        let a = h.poll(0);
        assert!(a.arm_recv(), "first poll arms the recv: {a:?}");
        assert_eq!(h.lc.recv_state(), RecvState::Armed);
        h
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + MS * ms as u32
    }

    fn poll(&mut self, ms: u64) -> Actions {
        let now = self.at(ms);
        let unread = self.unread;
        let asked = &mut self.unread_asked;
        let a = self.lc.poll(now, &self.cfg, &self.facts, || {
            *asked = true;
            unread
        });
        if a.start_send() {
            // take_batch: every queued frame goes to the send.
            self.facts.output_empty = true;
            self.facts.backlog_frames = 0;
        }
        a
    }

    /// Queues output (a response, say).
    fn queue(&mut self, bytes: usize) {
        self.facts.output_empty = false;
        self.facts.backlog_bytes += bytes;
        self.facts.backlog_frames += 1;
    }

    /// The send in flight wrote everything.
    fn send_ok(&mut self) {
        let n = self.facts.backlog_bytes;
        self.facts.backlog_bytes = 0;
        self.lc.send_done(Ok(n));
    }

    /// A recv of `n` decoded bytes, leaving `partial` bytes of a frame held.
    fn data(&mut self, ms: u64, n: u64, partial: usize) -> bool {
        let now = self.at(ms);
        let decode = self.lc.recv_data(now, true);
        if decode {
            self.facts.bytes_in += n;
            self.facts.partial_len = partial;
            self.lc.decoded(now, partial > 0);
        }
        decode
    }
}

fn reason(a: &Actions) -> &DisconnectReason {
    a.release.as_ref().expect("released")
}

fn protocol_error() -> DisconnectReason {
    DisconnectReason::Protocol(DecodeError::UnknownCommand(9))
}

#[test]
fn data_that_changes_nothing_asks_nothing() {
    let mut h = H::new();
    assert!(h.data(1, 100, 0));
    assert!(h.poll(1).is_empty());
    assert!(matches!(h.lc.phase(), Phase::Open));
}

#[test]
fn peer_eof_with_nothing_queued_sends_fin_then_releases_peer_closed() {
    let mut h = H::new();
    h.lc.recv_eof();
    assert!(matches!(h.lc.phase(), Phase::Finishing));
    let a = h.poll(1);
    assert!(a.shut_write() && a.shut_both());
    assert!(!a.arm_recv() && !a.cancel_recv());
    assert!(matches!(reason(&a), DisconnectReason::PeerClosed));
    assert!(matches!(h.lc.phase(), Phase::Released));
}

#[test]
fn peer_eof_while_a_send_is_in_flight_waits_for_it() {
    let mut h = H::new();
    h.queue(10);
    assert!(h.poll(1).start_send());
    h.lc.recv_eof();
    let a = h.poll(2);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(h.lc.recv_state(), RecvState::Stopped);
    h.send_ok();
    let a = h.poll(3);
    assert!(a.shut_write() && a.shut_both());
    assert!(matches!(reason(&a), DisconnectReason::PeerClosed));
}

#[test]
fn reset_with_output_queued_releases_with_the_socket_error_once_ops_are_done() {
    let mut h = H::new();
    h.queue(10);
    assert!(h.poll(1).start_send());
    h.queue(20);
    h.lc.recv_error(io::Error::from_raw_os_error(libc::ECONNRESET), false);
    let a = h.poll(2);
    assert!(a.shut_both() && !a.start_send() && !a.shut_write(), "{a:?}");
    assert!(a.release.is_none(), "the send is still in flight");
    h.lc.send_done(Err(io::Error::from_raw_os_error(libc::EPIPE)));
    let a = h.poll(3);
    assert!(!a.start_send() && !a.shut_both());
    match reason(&a) {
        DisconnectReason::Socket(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET)),
        r => panic!("{r:?}"),
    }
}

#[test]
fn protocol_error_flushes_earned_responses_then_closes_without_reading() {
    let mut h = H::new();
    assert!(h.data(1, 50, 0));
    h.queue(30); // what the valid frames earned
    h.lc.fail(protocol_error());
    assert!(matches!(h.lc.phase(), Phase::Failing(_)));
    let a = h.poll(1);
    assert!(a.start_send() && a.cancel_recv());
    assert!(!a.shut_write() && !a.shut_both() && a.release.is_none());
    // More input is discarded, and the final completion does not re-arm.
    assert!(!h.data(2, 10, 0));
    assert!(!h.lc.recv_data(h.at(2), false));
    assert!(h.poll(2).is_empty());
    assert_eq!(h.lc.recv_state(), RecvState::Stopped);
    // A second failure does not change the reason.
    h.lc.fail(DisconnectReason::Unauthenticated);
    h.send_ok();
    let a = h.poll(3);
    assert!(a.shut_both() && !a.shut_write());
    assert!(matches!(reason(&a), DisconnectReason::Protocol(_)));
}

#[test]
fn unauthenticated_flushes_then_closes() {
    let mut h = H::new();
    assert!(h.data(1, 20, 0));
    h.queue(16);
    h.lc.fail(DisconnectReason::Unauthenticated);
    let a = h.poll(1);
    assert!(a.start_send() && a.cancel_recv());
    h.lc.recv_cancelled();
    assert!(h.poll(2).is_empty());
    h.send_ok();
    let a = h.poll(3);
    assert!(a.shut_both());
    assert!(matches!(reason(&a), DisconnectReason::Unauthenticated));
}

#[test]
fn failure_with_nothing_to_flush_closes_at_once() {
    let mut h = H::new();
    h.lc.fail(protocol_error());
    let a = h.poll(1);
    assert!(a.shut_both() && a.cancel_recv() && a.release.is_none());
    h.lc.recv_cancelled();
    assert!(matches!(reason(&h.poll(2)), DisconnectReason::Protocol(_)));
}

#[test]
fn backpressure_pauses_above_the_limit_and_resumes_at_half() {
    let mut h = H::new();
    h.queue(1001);
    let a = h.poll(1);
    assert!(a.start_send() && a.overstocked() && a.cancel_recv());
    assert!(h.lc.is_paused());
    h.lc.recv_cancelled();
    assert!(h.poll(2).is_empty());
    assert_eq!(h.lc.recv_state(), RecvState::Paused);
    // Still above half: stays paused, no second overstock.
    h.lc.send_done(Ok(400));
    h.facts.backlog_bytes = 501;
    h.facts.output_empty = false;
    let a = h.poll(3);
    assert!(a.start_send() && !a.overstocked() && !a.arm_recv());
    h.lc.send_done(Ok(1));
    h.facts.backlog_bytes = 500;
    let a = h.poll(4);
    assert!(a.arm_recv() && !a.overstocked());
    assert!(!h.lc.is_paused());
    assert_eq!(h.lc.recv_state(), RecvState::Armed);
}

/// A client's connection over its limits is overstocked (its calls are refused) but goes on
/// reading: stopping would deadlock with a server that stopped reading it too. Found by the
/// simulator.
#[test]
fn a_client_connection_over_its_limits_keeps_reading() {
    let mut h = H::with(LifecycleConfig {
        pause_reading: false,
        ..cfg()
    });
    h.queue(1001);
    let a = h.poll(1);
    assert!(a.start_send() && a.overstocked() && !a.cancel_recv());
    assert!(h.lc.is_paused());
    assert_eq!(h.lc.recv_state(), RecvState::Armed);
    // A recv that ends is re-armed while still overstocked.
    h.lc.recv_no_buffers();
    assert!(h.poll(2).arm_recv());
    // A full stream inbox still holds reading.
    h.facts.hold_reading = true;
    assert!(h.poll(3).cancel_recv());
}

#[test]
fn backpressure_counts_frames_not_yet_handed_to_a_send() {
    let mut h = H::new();
    h.queue(10);
    assert!(h.poll(1).start_send());
    // 101 frames queued behind the send in flight.
    h.facts.backlog_frames = 101;
    h.facts.output_empty = false;
    let a = h.poll(2);
    assert!(a.overstocked() && a.cancel_recv() && !a.start_send());
    h.lc.recv_cancelled();
    // Half of the frame limit is not enough while 51 frames wait.
    h.facts.backlog_frames = 51;
    assert!(h.poll(3).is_empty());
    h.facts.backlog_bytes = 0;
    h.lc.send_done(Ok(10));
    // The next send takes all frames: resume.
    let a = h.poll(4);
    assert!(a.start_send() && a.arm_recv());
}

#[test]
fn resume_while_the_cancel_is_in_flight_rearms_on_its_completion() {
    let mut h = H::new();
    h.queue(2000);
    assert!(h.poll(1).cancel_recv());
    h.send_ok();
    h.facts.output_empty = true;
    assert!(h.poll(2).is_empty(), "resumed, but the cancel is in flight");
    assert!(!h.lc.is_paused());
    assert_eq!(h.lc.recv_state(), RecvState::Cancelling);
    h.lc.recv_cancelled();
    assert!(h.poll(3).arm_recv());
}

#[test]
fn idle_timeout_closes_a_quiet_connection() {
    let mut h = H::with(LifecycleConfig {
        keepalive: None,
        ..cfg()
    });
    assert!(h.data(1000, 10, 0));
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(61_000)));
    assert!(h.poll(60_999).is_empty());
    let a = h.poll(61_000);
    assert!(a.shut_both() && a.cancel_recv() && a.release.is_none());
    assert!(h.lc.is_dead());
    assert_eq!(h.lc.next_deadline(&h.cfg), None);
    h.lc.recv_cancelled();
    assert!(matches!(
        reason(&h.poll(61_001)),
        DisconnectReason::IdleTimeout
    ));
}

#[test]
fn read_timeout_counts_from_the_start_of_the_partial_frame() {
    let mut h = H::new();
    assert!(h.data(100, 10, 4));
    assert!(h.data(3000, 10, 8), "still the same partial frame");
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(5100)));
    assert!(h.poll(5099).is_empty());
    let a = h.poll(5100);
    assert!(a.shut_both());
    h.lc.recv_cancelled();
    assert!(matches!(
        reason(&h.poll(5101)),
        DisconnectReason::ReadTimeout
    ));
}

#[test]
fn a_finished_frame_resets_the_read_timeout() {
    let mut h = H::new();
    assert!(h.data(100, 10, 4));
    assert!(h.data(200, 10, 0));
    assert!(h.data(4000, 10, 4));
    assert!(h.poll(5100).is_empty());
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(9000)));
}

#[test]
fn keepalive_pings_once_until_the_peer_sends_again() {
    let mut h = H::new();
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(10_000)));
    assert!(h.poll(9_999).is_empty());
    let a = h.poll(10_000);
    assert!(a.queue_ping() && a.start_send());
    // Pinged: the next deadline is the idle timeout, and no second ping.
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(60_000)));
    h.send_ok();
    assert!(h.poll(30_000).is_empty());
    // The peer answers (a Pong): ping again after another quiet keepalive.
    assert!(h.data(31_000, 16, 0));
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(41_000)));
    assert!(h.poll(40_999).is_empty());
    assert!(h.poll(41_000).queue_ping());
}

#[test]
fn close_request_flushes_sends_fin_lingers_then_closes_closed() {
    let mut h = H::new();
    h.queue(10);
    h.lc.request_close();
    assert!(matches!(h.lc.phase(), Phase::Finishing));
    let a = h.poll(1);
    assert!(a.start_send() && !a.shut_write());
    // Input is still decoded until the FIN.
    assert!(h.data(2, 5, 0));
    h.send_ok();
    let a = h.poll(3);
    assert!(a.shut_write() && !a.shut_both() && !a.cancel_recv());
    assert!(matches!(h.lc.phase(), Phase::Lingering { since } if *since == h.at(3)));
    assert!(!h.lc.is_open());
    // Not quiet for 100 ms since the last input (at 2 ms) yet.
    assert!(!h.unread_asked);
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(102)));
    assert!(h.poll(101).is_empty());
    let a = h.poll(102);
    assert!(h.unread_asked);
    assert!(a.shut_both() && a.cancel_recv() && a.release.is_none());
    h.lc.recv_cancelled();
    assert!(matches!(reason(&h.poll(103)), DisconnectReason::Closed));
}

#[test]
fn lingering_waits_while_input_is_unread() {
    let mut h = H::new();
    h.lc.request_close();
    assert!(h.poll(0).shut_write());
    h.unread = Some(7);
    assert!(h.poll(100).is_empty());
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(120)));
    h.unread = None; // unknown is not quiet either
    assert!(h.poll(120).is_empty());
    h.unread = Some(0);
    assert!(h.poll(140).shut_both());
}

#[test]
fn lingering_peer_that_keeps_sending_is_closed_at_linger_max() {
    let mut h = H::new();
    h.lc.begin_drain(0, Some(0));
    assert!(h.poll(10).shut_write());
    let mut t = 10;
    while t < 2010 {
        t += 50;
        assert!(!h.data(t, 100, 0), "input is discarded while lingering");
        let a = h.poll(t);
        if t < 2010 {
            assert!(a.is_empty(), "at {t}: {a:?}");
            assert_eq!(
                h.lc.next_deadline(&h.cfg),
                Some(h.at(t + 100).min(h.at(2010)))
            );
        } else {
            assert!(a.shut_both(), "at {t}");
        }
    }
    assert_eq!(h.facts.bytes_in, 0);
    h.lc.recv_cancelled();
    assert!(matches!(reason(&h.poll(t)), DisconnectReason::Shutdown));
}

#[test]
fn peer_eof_while_lingering_closes_peer_closed() {
    let mut h = H::new();
    h.lc.request_close();
    assert!(h.poll(0).shut_write());
    assert!(!h.data(20, 10, 0));
    h.lc.recv_eof();
    let a = h.poll(21);
    assert!(a.shut_both() && !a.shut_write() && !a.arm_recv());
    assert!(matches!(reason(&a), DisconnectReason::PeerClosed));
}

#[test]
fn recv_ending_while_lingering_is_rearmed_to_keep_discarding() {
    let mut h = H::new();
    h.lc.request_close();
    assert!(h.poll(0).shut_write());
    h.lc.recv_no_buffers();
    assert!(h.poll(1).arm_recv());
}

#[test]
fn drain_waits_for_the_target_and_a_whole_frame_then_closes_shutdown() {
    let mut h = H::new();
    h.facts.bytes_in = 100;
    h.lc.begin_drain(100, Some(50));
    assert!(h.poll(1).is_empty());
    assert!(h.data(2, 40, 0));
    assert!(h.poll(2).is_empty(), "140 < 150");
    assert!(h.data(3, 20, 6));
    assert!(h.poll(3).is_empty(), "a frame is partial");
    assert!(h.data(4, 6, 0));
    h.queue(30); // its response
    let a = h.poll(4);
    assert!(a.start_send() && !a.shut_write());
    h.send_ok();
    let a = h.poll(5);
    assert!(a.shut_write());
    let a = h.poll(104);
    assert!(a.shut_both() && a.cancel_recv());
    h.lc.recv_cancelled();
    assert!(matches!(reason(&h.poll(105)), DisconnectReason::Shutdown));
}

#[test]
fn drain_waits_for_answers_owed_then_flushes_them_before_the_fin() {
    let mut h = H::new();
    h.facts.bytes_in = 10;
    h.facts.answers_owed = 2;
    h.lc.begin_drain(10, Some(0));
    assert!(h.poll(1).is_empty(), "two answers are still owed");
    h.facts.answers_owed = 1;
    h.queue(20); // the first owed answer arrives
    let a = h.poll(2);
    assert!(a.start_send() && !a.shut_write());
    h.send_ok();
    assert!(h.poll(3).is_empty(), "one answer is still owed");
    h.facts.answers_owed = 0;
    h.queue(20);
    assert!(h.poll(4).start_send());
    h.send_ok();
    assert!(h.poll(5).shut_write(), "everything owed is flushed: FIN");
}

#[test]
fn peer_eof_does_not_wait_for_answers_owed() {
    let mut h = H::new();
    h.facts.answers_owed = 1;
    h.lc.recv_eof();
    let a = h.poll(1);
    assert!(a.shut_write());
    assert!(matches!(reason(&a), DisconnectReason::PeerClosed));
}

#[test]
fn force_close_does_not_wait_for_answers_owed() {
    let mut h = H::new();
    h.facts.answers_owed = 3;
    h.lc.begin_drain(0, Some(0));
    assert!(h.poll(1).is_empty());
    h.lc.force_close();
    let a = h.poll(2);
    assert!(a.shut_both() && a.cancel_recv());
    h.lc.recv_cancelled();
    assert!(matches!(reason(&h.poll(3)), DisconnectReason::Shutdown));
}

#[test]
fn drain_with_unknown_unread_targets_what_was_decoded() {
    let mut h = H::new();
    h.facts.bytes_in = 10;
    h.lc.begin_drain(10, None);
    assert!(h.poll(1).shut_write());
}

#[test]
fn force_close_at_grace_expiry_waits_for_the_send_in_flight() {
    let mut h = H::new();
    h.lc.begin_drain(0, Some(1000));
    h.queue(10);
    assert!(h.poll(1).start_send());
    h.queue(10);
    h.lc.force_close();
    let a = h.poll(5000);
    assert!(a.shut_both() && a.cancel_recv() && !a.start_send() && !a.shut_write());
    h.lc.recv_cancelled();
    assert!(h.poll(5001).release.is_none());
    h.send_ok();
    assert!(matches!(reason(&h.poll(5002)), DisconnectReason::Shutdown));
}

#[test]
fn enobufs_rearms_the_recv() {
    let mut h = H::new();
    h.lc.recv_no_buffers();
    assert_eq!(h.lc.recv_state(), RecvState::Idle);
    let a = h.poll(1);
    assert!(a.arm_recv());
    assert_eq!(h.lc.recv_state(), RecvState::Armed);
}

#[test]
fn data_ending_the_multishot_rearms_it() {
    let mut h = H::new();
    assert!(h.lc.recv_data(h.at(1), false));
    assert!(h.poll(1).arm_recv());
}

#[test]
fn recv_arm_failure_closes_with_the_error() {
    let mut h = H::new();
    h.lc.recv_no_buffers();
    assert!(h.poll(1).arm_recv());
    h.lc.recv_arm_failed(io::Error::from_raw_os_error(libc::EBUSY));
    let a = h.poll(1);
    assert!(a.shut_both() && !a.cancel_recv());
    assert!(matches!(reason(&a), DisconnectReason::Socket(_)));
}

#[test]
fn send_start_failure_closes_with_the_error() {
    let mut h = H::new();
    h.queue(10);
    assert!(h.poll(1).start_send());
    h.lc.send_start_failed(io::Error::from_raw_os_error(libc::EBUSY));
    assert!(!h.lc.send_in_flight());
    h.facts.output_empty = false;
    let a = h.poll(1);
    assert!(!a.start_send() && a.shut_both() && a.cancel_recv());
    h.lc.recv_cancelled();
    assert!(matches!(reason(&h.poll(2)), DisconnectReason::Socket(_)));
}

#[test]
fn recv_error_that_keeps_the_multishot_is_cancelled() {
    let mut h = H::new();
    h.lc.recv_error(io::Error::other("recv completion without a buffer"), true);
    let a = h.poll(1);
    assert!(a.shut_both() && a.cancel_recv() && a.release.is_none());
    h.lc.recv_cancelled();
    assert!(matches!(reason(&h.poll(2)), DisconnectReason::Socket(_)));
}

#[test]
fn completions_after_release_are_ignored() {
    let mut h = H::new();
    h.lc.recv_eof();
    assert!(h.poll(1).release.is_some());
    assert!(!h.lc.recv_data(h.at(2), false));
    h.lc.recv_no_buffers();
    h.lc.recv_error(io::Error::from_raw_os_error(libc::ECONNRESET), false);
    h.lc.send_done(Err(io::Error::from_raw_os_error(libc::EPIPE)));
    h.lc.request_close();
    h.lc.force_close();
    h.queue(10);
    assert!(h.poll(3).is_empty());
    assert!(matches!(h.lc.phase(), Phase::Released));
    assert_eq!(h.lc.next_deadline(&h.cfg), None);
}

#[test]
fn recv_completion_while_closing_does_not_rearm() {
    let mut h = H::new();
    h.lc.force_close();
    assert!(h.poll(1).cancel_recv());
    assert!(!h.lc.recv_data(h.at(2), true), "closing: discarded");
    assert!(h.poll(2).is_empty());
    h.lc.recv_no_buffers();
    let a = h.poll(3);
    assert!(!a.arm_recv());
    assert!(matches!(reason(&a), DisconnectReason::Shutdown));
}

#[test]
fn release_waits_for_recv_then_send() {
    let mut h = H::new();
    h.queue(10);
    assert!(h.poll(1).start_send());
    h.lc.force_close();
    assert!(h.poll(2).cancel_recv());
    h.lc.recv_cancelled();
    assert!(h.poll(3).release.is_none(), "send in flight");
    h.send_ok();
    assert!(h.poll(4).release.is_some());
}

#[test]
fn release_waits_for_send_then_recv() {
    let mut h = H::new();
    h.queue(10);
    assert!(h.poll(1).start_send());
    h.lc.force_close();
    assert!(h.poll(2).cancel_recv());
    h.send_ok();
    assert!(h.poll(3).release.is_none(), "recv cancel in flight");
    assert!(
        !h.lc.recv_data(h.at(3), true),
        "a late recv before the cancel"
    );
    assert!(h.poll(3).release.is_none());
    h.lc.recv_cancelled();
    assert!(h.poll(4).release.is_some());
}

#[test]
fn the_first_close_reason_wins() {
    let mut h = H::with(LifecycleConfig {
        keepalive: None,
        ..cfg()
    });
    assert!(h.poll(60_000).shut_both());
    h.lc.force_close();
    h.lc.recv_error(io::Error::from_raw_os_error(libc::ECANCELED), false);
    assert!(matches!(
        reason(&h.poll(60_001)),
        DisconnectReason::IdleTimeout
    ));
}

#[test]
fn next_deadline_is_the_earliest_timer() {
    let mut h = H::new();
    // keepalive 10 s < idle 60 s; read 5 s once a frame is partial.
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(10_000)));
    assert!(h.data(7000, 3, 3));
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(12_000)));
    assert!(h.data(7500, 3, 0));
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(17_500)));
    let none = LifecycleConfig {
        idle_timeout: None,
        read_timeout: None,
        keepalive: None,
        ..cfg()
    };
    assert_eq!(h.lc.next_deadline(&none), None);
    let huge = LifecycleConfig {
        idle_timeout: Some(Duration::MAX),
        read_timeout: None,
        keepalive: None,
        ..cfg()
    };
    assert_eq!(h.lc.next_deadline(&huge), None, "past the end of time");
}

#[test]
fn overstock_after_peer_eof_reports_but_never_rearms() {
    let mut h = H::new();
    h.lc.recv_eof();
    h.queue(2000);
    let a = h.poll(1);
    assert!(a.start_send() && a.overstocked() && !a.cancel_recv());
    h.send_ok();
    let a = h.poll(2);
    assert!(!a.arm_recv());
    assert!(matches!(reason(&a), DisconnectReason::PeerClosed));
}

#[test]
fn resume_after_fin_does_not_rearm() {
    // As today: resuming re-arms only a connection that still decodes input.
    let mut h = H::new();
    h.lc.request_close();
    assert!(h.poll(0).shut_write());
    h.queue(2000); // a handle's send after our FIN
    let a = h.poll(1);
    assert!(a.start_send() && a.overstocked() && a.cancel_recv());
    h.lc.recv_cancelled();
    assert!(h.poll(2).is_empty());
    assert_eq!(h.lc.recv_state(), RecvState::Paused);
    h.send_ok();
    let a = h.poll(3);
    assert!(!a.arm_recv());
    assert_eq!(h.lc.recv_state(), RecvState::Stopped);
}

#[test]
fn close_request_while_failing_keeps_the_failure() {
    let mut h = H::new();
    h.queue(10);
    h.lc.fail(protocol_error());
    assert!(h.poll(1).start_send());
    h.lc.request_close();
    h.lc.recv_cancelled();
    h.send_ok();
    let a = h.poll(2);
    assert!(!a.shut_write());
    assert!(matches!(reason(&a), DisconnectReason::Protocol(_)));
}

#[test]
fn failing_connections_still_time_out() {
    let mut h = H::with(LifecycleConfig {
        keepalive: None,
        ..cfg()
    });
    h.queue(10);
    h.lc.fail(protocol_error());
    assert!(h.poll(0).start_send());
    assert_eq!(h.lc.next_deadline(&h.cfg), Some(h.at(60_000)));
    let a = h.poll(60_000);
    assert!(a.shut_both());
    h.lc.recv_cancelled();
    h.send_ok();
    assert!(matches!(
        reason(&h.poll(60_001)),
        DisconnectReason::IdleTimeout
    ));
}

/// A large partial frame: the multishot is cancelled, the direct recv starts once the cancel
/// lands, back-pressure does not cancel it, its completion re-arms the multishot.
#[test]
fn a_large_partial_frame_swaps_the_multishot_for_a_direct_recv_and_back() {
    let mut h = H::new();
    assert!(h.data(1, 4096, 4096));
    h.facts.direct_wanted = true;
    let a = h.poll(1);
    assert!(a.cancel_recv() && !a.start_direct(), "{a:?}");
    assert_eq!(h.lc.recv_state(), RecvState::Cancelling);
    // More data the multishot had already delivered comes before its cancel.
    assert!(h.data(2, 4096, 8192));
    assert!(h.poll(2).is_empty());
    h.lc.recv_cancelled();
    let a = h.poll(3);
    assert!(a.start_direct() && !a.arm_recv(), "{a:?}");
    assert_eq!(h.lc.recv_state(), RecvState::Direct);
    // Overstocked meanwhile: the direct recv (one bounded frame) is left to finish.
    h.queue(5000);
    let a = h.poll(4);
    assert!(a.overstocked() && !a.cancel_recv(), "{a:?}");
    h.send_ok();
    // It completes the frame: the multishot comes back.
    assert!(h.lc.recv_data(h.at(5), false));
    h.facts.direct_wanted = false;
    h.facts.partial_len = 0;
    h.lc.decoded(h.at(5), false);
    let a = h.poll(5);
    assert!(a.arm_recv() && !a.start_direct(), "{a:?}");
    assert_eq!(h.lc.recv_state(), RecvState::Armed);
}

/// The read timeout closes a connection whose peer stops mid-frame during a direct recv: the
/// recv is cancelled and the slot released only after its completion.
#[test]
fn a_direct_recv_is_cancelled_by_the_read_timeout_and_waited_for() {
    let mut h = H::new();
    assert!(h.data(1, 100_000, 100_000));
    h.facts.direct_wanted = true;
    assert!(h.poll(1).cancel_recv());
    h.lc.recv_cancelled();
    assert!(h.poll(2).start_direct());
    let a = h.poll(5_001);
    assert!(
        a.cancel_recv() && a.shut_both() && a.release.is_none(),
        "{a:?}"
    );
    // The cancelled recv hands back what it had; nothing is decoded any more.
    assert!(!h.lc.recv_data(h.at(5_002), false));
    let a = h.poll(5_002);
    assert!(matches!(reason(&a), DisconnectReason::ReadTimeout), "{a:?}");
}

/// A connection that is no longer decoding (failing) never starts a direct recv.
#[test]
fn a_failing_connection_does_not_start_a_direct_recv() {
    let mut h = H::new();
    h.facts.direct_wanted = true;
    h.lc.fail(protocol_error());
    let a = h.poll(1);
    assert!(a.cancel_recv() && !a.start_direct(), "{a:?}");
}
