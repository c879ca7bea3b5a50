//! Transports, sans-IO: bytes in, arpc frames out (`arpc`: raw framing; `ws`: WebSocket;
//! `tcp`: the choice between them; `tls`: TLS under them, `tls_state`: whether a connection
//! uses it), the queue of frames going back (`outqueue`), and arpc's
//! coders (`coder`: gzip and metadata). Nothing here owns a socket; the reactor does.
//!
//! Invariants: whole frames are decoded where they lie and only partial tails are copied;
//! memory for a partial frame follows the bytes that arrived, never the length announced; the
//! output queue keeps frame order and never copies a large payload.

pub(crate) mod arpc;
pub(crate) mod coder;
pub(crate) mod outqueue;
pub(crate) mod tcp;
#[cfg(feature = "tls")]
pub(crate) mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub(crate) mod tls;
pub(crate) mod tls_state;
pub(crate) mod ws;
