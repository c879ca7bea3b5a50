//! How a settled request is counted: an error answer, a mismatched payload, or a success whose
//! latency goes into the thread's histogram. Every transport (TCP, WebSocket, UDP) and every
//! pattern settles its answers here, so a report means the same whatever produced it.
//!
//! Invariant: each call counts its units exactly once, as errors, mismatches or answered;
//! timeouts, losses and late answers are the request window's to count.

use std::time::Instant;

use ringrpc_protocol::Header;

use crate::counters::Counters;
use crate::payload;
use crate::pubsub::deliveries::SeqBits;
use crate::worker::{Plan, WorkerState};

/// Longest server error text kept for the report.
pub(crate) const ERROR_TEXT_MAX: usize = 200;

/// Checks the answer to a measured request sent (or due) at `sent_at` and counts it: an error
/// response, a mismatched payload, or a correct answer whose latency is recorded. Every
/// transport settles its answers here.
pub(crate) fn record_answer(
    header: &Header,
    payload: &[u8],
    seed: u64,
    sent_at: Instant,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    let counters = &mut state.counters;
    if header.flags.is_error() {
        counters.errors += 1;
        note_error(counters, "seq", header.seq, payload);
    } else {
        let mismatch = payload::mismatch(seed, plan.payload_len, payload);
        record_checked(mismatch, sent_at, received_at, plan, state);
    }
}

/// Counts one answer whose payload was checked: a mismatch (why) or a success.
pub(crate) fn record_checked(
    mismatch: Option<String>,
    sent_at: Instant,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    if let Some(why) = mismatch {
        state.counters.mismatches += 1;
        state.counters.first_mismatch.get_or_insert(why);
    } else {
        record_success(1, sent_at, received_at, plan, state);
    }
}

/// Keeps the first error Response's text (cut to [`ERROR_TEXT_MAX`]) for the report.
fn note_error(counters: &mut Counters, what: &str, seq: u64, text: &[u8]) {
    counters.first_error.get_or_insert_with(|| {
        let text = String::from_utf8_lossy(text);
        let text: String = text.chars().take(ERROR_TEXT_MAX).collect();
        format!("{what} {seq}: {text}")
    });
}

/// Counts `units` correct answers, each with the latency from `sent_at` to `received_at`.
pub(crate) fn record_success(
    units: u64,
    sent_at: Instant,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    let counters = &mut state.counters;
    counters.answered += units;
    if received_at < plan.deadline {
        counters.answered_in_window += units;
    }
    let nanos = received_at.saturating_duration_since(sent_at).as_nanos();
    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
    state.latencies.saturating_record_n(nanos, units);
}

/// Settles a publish by its Response: an error, an answer that is not empty (a mismatch), or
/// a success whose seq joins the publisher's set of publishes answered OK, which every
/// subscriber must then receive.
pub(crate) fn record_publish(
    header: &Header,
    payload: &[u8],
    sent_at: Instant,
    publisher: usize,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    let counters = &mut state.counters;
    if header.flags.is_error() {
        counters.errors += 1;
        note_error(counters, "publish seq", header.seq, payload);
    } else if !payload.is_empty() {
        counters.mismatches += 1;
        counters.first_mismatch.get_or_insert_with(|| {
            format!(
                "publish seq {}: expected an empty answer, got {} bytes",
                header.seq,
                payload.len()
            )
        });
    } else {
        record_success(1, sent_at, received_at, plan, state);
        if state.published_ok.len() <= publisher {
            state
                .published_ok
                .resize_with(publisher + 1, SeqBits::default);
        }
        state.published_ok[publisher].insert(header.seq);
    }
}

/// Settles a batch of notifies by its barrier's Response: an error fails them all; an
/// answer that is not the empty echo is a mismatch for all.
pub(crate) fn record_batch(
    header: &Header,
    payload: &[u8],
    units: u32,
    sent_at: Instant,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    let units = u64::from(units);
    let counters = &mut state.counters;
    if header.flags.is_error() {
        counters.errors += units;
        note_error(counters, "barrier seq", header.seq, payload);
    } else if !payload.is_empty() {
        counters.mismatches += units;
        counters.first_mismatch.get_or_insert_with(|| {
            format!(
                "barrier seq {}: expected an empty echo, got {} bytes",
                header.seq,
                payload.len()
            )
        });
    } else {
        record_success(units, sent_at, received_at, plan, state);
    }
}
