//! TLS under the framing, sans-IO (feature `tls`): a connection's ciphertext goes through
//! rustls ([`TlsLayer`]), whose plaintext the framing decodes as it would a socket's bytes;
//! what the output queue holds is sealed into records at send time and sent in the same
//! vectored sends. Also: telling a ClientHello from plaintext by its first bytes
//! ([`sniff`]), the settings loaded from PEM files (`config`), and what a finished
//! handshake settled (`identity`).
//!
//! Invariants: no socket, thread or syscall here (bytes in, bytes out); plaintext moves into
//! rustls only after the handshake, and at most [`SEAL_MAX`] ahead of the socket, so the
//! output queue's limits still see what waits; ciphertext keeps its order across partial
//! sends; a TLS error leaves rustls' alert queued to be sent before the close.

mod config;
mod identity;

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use ringrpc_uring::IOV_MAX;

use crate::ids::TlsInfo;
use crate::transport::outqueue::OutQueue;

pub use config::{ALPN_ARPC, ALPN_HTTP1, ClientTls, TlsError};
pub(crate) use config::{ServerTls, TlsFiles};

/// Plaintext sealed ahead of the socket at most (then the rest waits in the output queue,
/// where the back-pressure limits count it).
pub(crate) const SEAL_MAX: usize = 256 * 1024;

/// Bytes [`sniff`] needs to decide: a record header (5) and a handshake header (4).
pub(crate) const SNIFF_LEN: usize = 9;

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// A TLS ClientHello.
    Tls,
    /// Anything else: raw arpc or HTTP.
    Plain,
    /// Could be either: wait for [`SNIFF_LEN`] bytes.
    NeedMore,
}

/// Tells a TLS ClientHello from plaintext: a handshake record (`0x16 0x03 0x01..=0x03`)
/// whose first message is a ClientHello (type 1) filling the record exactly. An arpc frame
/// reads so only if it is a Request with no method (which arpc refuses) or a body of 16 MiB
/// and more, so no valid first frame under 16 MiB is ever taken for TLS.
pub(crate) fn sniff(bytes: &[u8]) -> Sniff {
    let expect: [fn(u8) -> bool; 3] = [|b| b == 0x16, |b| b == 0x03, |b| (1..=3).contains(&b)];
    for (b, ok) in bytes.iter().zip(expect) {
        if !ok(*b) {
            return Sniff::Plain;
        }
    }
    if bytes.len() > 5 && bytes[5] != 0x01 {
        return Sniff::Plain;
    }
    if bytes.len() < SNIFF_LEN {
        return Sniff::NeedMore;
    }
    let record = u32::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    let message = u32::from_be_bytes([0, bytes[6], bytes[7], bytes[8]]);
    if message + 4 == record {
        Sniff::Tls
    } else {
        Sniff::Plain
    }
}

thread_local! {
    /// Decrypted bytes of the read being decoded, lent to one connection at a time (a
    /// reactor decodes its connections one after another), so an idle connection holds none.
    static PLAINTEXT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Lends the reactor thread's plaintext buffer (empty) to `f`.
pub(crate) fn with_plaintext<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = PLAINTEXT.with(Cell::take);
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= 4 * SEAL_MAX {
        PLAINTEXT.with(|cell| cell.set(buf));
    }
    r
}

/// One connection's TLS state: rustls, and the ciphertext waiting to be sent.
pub(crate) struct TlsLayer {
    conn: rustls::Connection,
    /// Sealed records not yet handed to a send, in order.
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// Bytes handed out in the batch being sent.
    in_flight: usize,
    /// Where rustls writes records; split off into `pending`.
    sealed: BytesMut,
    /// The handshake's outcome has been taken ([`TlsLayer::take_settled`]).
    settled: bool,
    /// A close_notify has been queued.
    closing: bool,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending_bytes", &self.pending_bytes)
            .finish()
    }
}

impl TlsLayer {
    fn new(mut conn: rustls::Connection) -> TlsLayer {
        // The output queue bounds what is sealed (SEAL_MAX per send), not rustls.
        conn.set_buffer_limit(None);
        TlsLayer {
            conn,
            pending: VecDeque::new(),
            pending_bytes: 0,
            in_flight: 0,
            sealed: BytesMut::new(),
            settled: false,
            closing: false,
        }
    }

    /// The server side of a connection that starts with a ClientHello.
    pub(crate) fn accept(server: &ServerTls) -> Result<TlsLayer, String> {
        let conn = rustls::ServerConnection::new(server.config()).map_err(|e| e.to_string())?;
        Ok(TlsLayer::new(rustls::Connection::Server(conn)))
    }

    /// The client side, its handshake done (or under way) on the connecting thread.
    pub(crate) fn client(conn: rustls::ClientConnection) -> TlsLayer {
        TlsLayer::new(rustls::Connection::Client(conn))
    }

    /// Takes `data` (ciphertext) and appends the plaintext it carried to `plain`. An error
    /// ends the connection (rustls' alert is queued to be sent first).
    pub(crate) fn read(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), String> {
        loop {
            if !data.is_empty() {
                match self.conn.read_tls(&mut data) {
                    Ok(0) => return Err("the TLS layer takes no more input".into()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let state = self.conn.process_new_packets().map_err(|e| e.to_string())?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|e| e.to_string())?;
            }
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    /// What the handshake settled, once, as soon as it has finished.
    pub(crate) fn take_settled(&mut self) -> Option<TlsInfo> {
        if self.settled || self.conn.is_handshaking() {
            return None;
        }
        self.settled = true;
        Some(identity::tls_info(&self.conn))
    }

    /// The handshake has not finished.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether a send now would carry something: records waiting or to be made, or
    /// plaintext to seal once the handshake is done.
    pub(crate) fn has_output(&self, out: &OutQueue) -> bool {
        self.pending_bytes > 0
            || self.conn.wants_write()
            || (!self.conn.is_handshaking() && !out.is_empty())
    }

    /// Ciphertext not yet written to the socket: waiting plus the batch being sent.
    pub(crate) fn backlog_bytes(&self) -> usize {
        self.pending_bytes + self.in_flight
    }

    /// Seals what `out` queued (after the handshake, up to [`SEAL_MAX`] ahead) and moves the
    /// next records (at most [`IOV_MAX`]) into `batch`; returns the frames sealed.
    pub(crate) fn take_batch(&mut self, out: &mut OutQueue, batch: &mut Vec<Bytes>) -> u64 {
        let mut frames = 0;
        if !self.conn.is_handshaking() {
            let mut plain = Vec::new();
            while !out.is_empty() && self.pending_bytes + self.sealed.len() < SEAL_MAX {
                frames += out.take_batch(&mut plain);
                let mut taken = 0;
                for segment in &plain {
                    taken += segment.len();
                    // Writing plaintext into an established connection with no buffer
                    // limit always takes all of it.
                    let _ = self.conn.writer().write_all(segment);
                }
                out.sent(&mut plain, taken);
            }
        }
        while self.conn.wants_write() {
            let mut sink = (&mut self.sealed).writer();
            if self.conn.write_tls(&mut sink).is_err() {
                break;
            }
        }
        if !self.sealed.is_empty() {
            let records = self.sealed.split().freeze();
            self.pending_bytes += records.len();
            self.pending.push_back(records);
        }
        let n = self.pending.len().min(IOV_MAX);
        batch.extend(self.pending.drain(..n));
        let taken: usize = batch.iter().map(Bytes::len).sum();
        self.pending_bytes -= taken;
        self.in_flight = taken;
        frames
    }

    /// Takes back a batch of which `written` bytes went out: the rest goes first next time.
    pub(crate) fn sent(&mut self, batch: &mut Vec<Bytes>, mut written: usize) {
        self.in_flight = 0;
        let mut rest = Vec::new();
        for mut seg in batch.drain(..) {
            if written >= seg.len() {
                written -= seg.len();
                continue;
            }
            bytes::Buf::advance(&mut seg, written);
            written = 0;
            rest.push(seg);
        }
        for seg in rest.into_iter().rev() {
            self.pending_bytes += seg.len();
            self.pending.push_front(seg);
        }
    }

    /// Queues a close_notify alert (sent with the next batch), once.
    pub(crate) fn close_notify(&mut self) {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
    }
}

#[cfg(test)]
mod tests;
