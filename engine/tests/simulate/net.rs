//! The simulated network: one direction of a TCP connection (`Pipe`: bytes in order, each
//! chunk arriving at its time, then a FIN or a reset) and the datagrams between UDP
//! endpoints (lost, duplicated, delayed and so reordered).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::rng::Rng;

/// One direction of a stream connection.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Chunks in order with their arrival times (non-decreasing).
    chunks: VecDeque<(Duration, Vec<u8>)>,
    /// Bytes in `chunks`.
    pub len: usize,
    /// The writer shut its side (after the bytes above).
    pub fin: bool,
    /// The connection was reset: readers get ECONNRESET once what arrived is read.
    pub rst: bool,
    last_arrival: Duration,
}

impl Pipe {
    /// Queues `bytes` written at `now`, arriving after `latency` (never before earlier bytes).
    pub fn push(&mut self, now: Duration, latency: Duration, bytes: Vec<u8>) {
        if bytes.is_empty() || self.rst {
            return;
        }
        let at = (now + latency).max(self.last_arrival);
        self.last_arrival = at;
        self.len += bytes.len();
        self.chunks.push_back((at, bytes));
    }

    /// Bytes that have arrived by `now` and are unread.
    pub fn arrived(&self, now: Duration) -> usize {
        self.chunks
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, b)| b.len())
            .sum()
    }

    /// Reads up to `max` arrived bytes.
    pub fn read(&mut self, now: Duration, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((at, chunk)) = self.chunks.front_mut() else {
                break;
            };
            if *at > now {
                break;
            }
            let take = (max - out.len()).min(chunk.len());
            out.extend_from_slice(&chunk[..take]);
            chunk.drain(..take);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.len -= out.len();
        out
    }

    /// Everything was read and the writer shut its side.
    pub fn at_eof(&self) -> bool {
        self.chunks.is_empty() && self.fin
    }

    /// Everything that arrived was read and the connection was reset.
    pub fn at_reset(&self, now: Duration) -> bool {
        self.rst && self.arrived(now) == 0
    }

    /// A reset: bytes still travelling are lost.
    pub fn reset(&mut self, now: Duration) {
        self.rst = true;
        self.chunks.retain(|(at, _)| *at <= now);
        self.len = self.chunks.iter().map(|(_, b)| b.len()).sum();
    }
}

/// A datagram on its way.
#[derive(Debug)]
pub struct Datagram {
    pub at: Duration,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// The datagram network: each datagram is lost, delivered once or twice, after its own
/// delay (so reordered).
#[derive(Debug, Default)]
pub struct Air {
    pub queue: Vec<Datagram>,
    pub loss_per_mille: u64,
    pub dup_per_mille: u64,
    pub max_delay: Duration,
    pub lost: u64,
    pub duplicated: u64,
}

impl Air {
    pub fn send(
        &mut self,
        rng: &mut Rng,
        now: Duration,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        if rng.per_mille(self.loss_per_mille) {
            self.lost += 1;
            return;
        }
        let copies = if rng.per_mille(self.dup_per_mille) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = Duration::from_micros(rng.below(self.max_delay.as_micros() as u64 + 1));
            self.queue.push(Datagram {
                at: now + delay,
                from,
                to,
                bytes: bytes.to_vec(),
            });
        }
    }

    /// The datagrams due by `now`, in arrival order (ties in sending order).
    pub fn due(&mut self, now: Duration) -> Vec<Datagram> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].at <= now {
                due.push(self.queue.remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|d| d.at);
        due
    }
}
