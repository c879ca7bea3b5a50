//! Where TLS sits under one connection's framing ([`TlsState`]): off, deciding from the
//! first bytes (a port serving TLS beside plaintext), or on.
//!
//! Invariants: the decision is made once, from at most [`SNIFF_LEN`] bytes (held
//! meanwhile); after it, every byte goes to the chosen path; with TLS required there is no
//! decision: the first byte goes to rustls.

use std::borrow::Cow;
use std::sync::Arc;

use crate::transport::tls::{SNIFF_LEN, ServerTls, Sniff, TlsLayer, sniff};

/// TLS under one connection.
#[derive(Debug)]
pub(crate) enum TlsState {
    /// Plaintext: raw arpc or HTTP.
    Off,
    /// TLS and plaintext share the port: the first bytes decide (boxed: a connection
    /// spends only its first read here, its slot stays small).
    Sniffing(Box<Sniffing>),
    /// Everything goes through TLS.
    On(Box<TlsLayer>),
}

/// A connection deciding between TLS and plaintext.
#[derive(Debug)]
pub(crate) struct Sniffing {
    server: Arc<ServerTls>,
    /// The first bytes, while too few to decide.
    held: Vec<u8>,
}

impl TlsState {
    /// How a server connection starts: off without TLS, on when TLS is required, else
    /// deciding.
    pub(crate) fn for_server(server: Option<&Arc<ServerTls>>) -> Result<TlsState, String> {
        Ok(match server {
            None => TlsState::Off,
            Some(tls) if tls.required() => TlsState::On(Box::new(TlsLayer::accept(tls)?)),
            Some(tls) => TlsState::Sniffing(Box::new(Sniffing {
                server: tls.clone(),
                held: Vec::new(),
            })),
        })
    }

    /// While sniffing, decides if it can: returns the bytes to pass on now (the held ones
    /// first; none while undecided). An error: rustls would not start.
    pub(crate) fn decide<'d>(&mut self, data: &'d [u8]) -> Result<Cow<'d, [u8]>, String> {
        let TlsState::Sniffing(sniffing) = self else {
            return Ok(data.into());
        };
        let Sniffing { server, held } = &mut **sniffing;
        let bytes: Cow<'d, [u8]> = if held.is_empty() {
            data.into()
        } else {
            let mut all = std::mem::take(held);
            all.extend_from_slice(data);
            all.into()
        };
        match sniff(&bytes[..bytes.len().min(SNIFF_LEN)]) {
            Sniff::NeedMore => {
                *held = bytes.into_owned();
                Ok(Cow::Borrowed(&[]))
            }
            Sniff::Plain => {
                *self = TlsState::Off;
                Ok(bytes)
            }
            Sniff::Tls => {
                *self = TlsState::On(Box::new(TlsLayer::accept(server)?));
                Ok(bytes)
            }
        }
    }

    /// Bytes held that are not yet a frame: undecided bytes, or a handshake under way
    /// (counted as one, so the read timeout applies to it).
    pub(crate) fn pending_input(&self) -> usize {
        match self {
            TlsState::Off => 0,
            TlsState::Sniffing(sniffing) => sniffing.held.len(),
            TlsState::On(layer) => usize::from(layer.is_handshaking()),
        }
    }

    /// Whether bytes go (or may go) through TLS: no direct receive into the framing then.
    pub(crate) fn is_off(&self) -> bool {
        matches!(self, TlsState::Off)
    }
}
