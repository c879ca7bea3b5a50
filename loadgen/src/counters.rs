//! The outcome counts of measured requests, kept per I/O thread (or gRPC caller) and merged
//! into the run's totals.
//!
//! Invariant: every measured request ends in exactly one of answered, errors, mismatches,
//! timeouts or lost; the other counts and samples only explain what happened.

/// Most connection-failure reasons kept per run.
const MAX_FAILURE_REASONS: usize = 16;

/// Outcome counts. Every measured request ends in exactly one of answered, errors,
/// mismatches, timeouts or lost.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub sent: u64,
    pub answered: u64,
    /// Answered before the deadline: the numerator of requests/s.
    pub answered_in_window: u64,
    pub errors: u64,
    pub mismatches: u64,
    pub timeouts: u64,
    pub lost: u64,
    /// Frames that answer nothing outstanding; not tied to a sent request.
    pub unexpected: u64,
    /// Answers to requests already counted as timeouts.
    pub late: u64,
    pub connection_failures: u64,
    /// UDP: resends of measured requests.
    pub retries: u64,
    /// UDP: answers to a measured seq that was already answered (discarded).
    pub duplicates: u64,
    pub connection_errors: Vec<String>,
    pub first_error: Option<String>,
    pub first_mismatch: Option<String>,
    pub first_unexpected: Option<String>,
}

impl Counters {
    pub(crate) fn note_unexpected(&mut self, what: String) {
        self.unexpected += 1;
        self.first_unexpected.get_or_insert(what);
    }

    pub(crate) fn note_connection_failure(&mut self, reason: String) {
        self.connection_failures += 1;
        if self.connection_errors.len() < MAX_FAILURE_REASONS {
            self.connection_errors.push(reason);
        }
    }

    pub(crate) fn merge(&mut self, other: Counters) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.answered_in_window += other.answered_in_window;
        self.errors += other.errors;
        self.mismatches += other.mismatches;
        self.timeouts += other.timeouts;
        self.lost += other.lost;
        self.unexpected += other.unexpected;
        self.late += other.late;
        self.connection_failures += other.connection_failures;
        self.retries += other.retries;
        self.duplicates += other.duplicates;
        let room = MAX_FAILURE_REASONS.saturating_sub(self.connection_errors.len());
        self.connection_errors
            .extend(other.connection_errors.into_iter().take(room));
        self.first_error = self.first_error.take().or(other.first_error);
        self.first_mismatch = self.first_mismatch.take().or(other.first_mismatch);
        self.first_unexpected = self.first_unexpected.take().or(other.first_unexpected);
    }
}
