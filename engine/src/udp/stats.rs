//! The counters of one core's datagram endpoint.
//!
//! Invariants: written only by the core's reactor thread; `add` sums every field (the
//! destructuring makes a new field a compile error until it is summed).

/// Counters of one core's datagram endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Requests dispatched (retries answered from the cache not counted).
    pub requests: u64,
    /// Notifies dispatched.
    pub notifies: u64,
    /// Datagrams that were not exactly one valid frame (dropped).
    pub malformed: u64,
    /// Requests seen again within the dedup window (resent from the cache or dropped).
    pub duplicates: u64,
    /// Of the duplicates, those older than anything still cached for their peer (dropped,
    /// never run again).
    pub stale: u64,
    /// Requests and Notifies refused: the peer table was full, or the peer had
    /// `max_in_flight_per_conn` answers or blocking jobs pending (a Request then gets an
    /// error Response, a Notify to a blocking method is dropped).
    pub refused: u64,
    /// Requests and notifies dropped because their peer sent faster than its rate limit.
    pub rate_limited: u64,
    /// Calls made from this endpoint.
    pub calls: u64,
    /// Call resends.
    pub retries: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Responses for no pending call (late, or duplicates of an answered one).
    pub stray_responses: u64,
    /// Sends that failed.
    pub send_errors: u64,
}

impl UdpStats {
    /// Adds every counter of `other`.
    pub fn add(&mut self, other: &UdpStats) {
        let UdpStats {
            datagrams_in,
            datagrams_out,
            requests,
            notifies,
            malformed,
            duplicates,
            stale,
            refused,
            rate_limited,
            calls,
            retries,
            timeouts,
            stray_responses,
            send_errors,
        } = *other;
        self.datagrams_in += datagrams_in;
        self.datagrams_out += datagrams_out;
        self.requests += requests;
        self.notifies += notifies;
        self.malformed += malformed;
        self.duplicates += duplicates;
        self.stale += stale;
        self.refused += refused;
        self.rate_limited += rate_limited;
        self.calls += calls;
        self.retries += retries;
        self.timeouts += timeouts;
        self.stray_responses += stray_responses;
        self.send_errors += send_errors;
    }
}
