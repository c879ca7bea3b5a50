//! Datagram limits shared by configuration, mailboxes and the UDP core: size limits,
//! duplicate-suppression limits and the retry policy of calls.
//!
//! Invariants: a leaf module (imports nothing else of the crate).

use std::time::Duration;

/// Largest payload of one UDP datagram over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Default largest datagram: an Ethernet MTU less the IP and UDP headers.
pub const DEFAULT_MAX_DATAGRAM: usize = 1472;

/// How a datagram call is retried: first after `first_after`, each wait twice the previous,
/// at most `max_attempts` sends in all (the first included), never past the call's timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Wait before the first resend.
    pub first_after: Duration,
    /// Sends at most, the first one included (1 = never retry).
    pub max_attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            first_after: Duration::from_millis(20),
            max_attempts: 5,
        }
    }
}

/// Limits of one core's datagram endpoint.
#[derive(Clone, Debug)]
pub(crate) struct UdpLimits {
    pub(crate) max_datagram: usize,
    pub(crate) max_body: u32,
    pub(crate) dedup_window: Duration,
    /// Requests cached for duplicate suppression, all peers together (each holds its
    /// answer: at most `max_datagram` bytes).
    pub(crate) dedup_capacity: usize,
    /// Peers known at once.
    pub(crate) max_peers: usize,
    pub(crate) max_in_flight_per_peer: usize,
    /// Requests and notifies one peer may send per second (a token bucket holding one
    /// second's worth); `None`: unlimited.
    pub(crate) peer_rate: Option<u32>,
}
