//! TLS when the `tls` feature is off: the same names as `tls/`, none of which can exist, so
//! the code that drives TLS compiles to nothing.
//!
//! Invariants: every type here is uninhabited; `ConfigBuilder::build` refuses the TLS knobs
//! with `ConfigError::FeatureDisabled`, so nothing ever asks for one.

use bytes::Bytes;

use crate::ids::TlsInfo;
use crate::transport::outqueue::OutQueue;

/// Never made without the `tls` feature.
#[derive(Debug)]
pub(crate) enum ServerTls {}

impl ServerTls {
    /// Only TLS is served.
    pub(crate) fn required(&self) -> bool {
        match *self {}
    }
}

/// Never made without the `tls` feature.
#[derive(Debug)]
pub(crate) enum TlsLayer {}

/// Bytes the sniff looks at.
pub(crate) const SNIFF_LEN: usize = 9;

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // only Plain is ever made without TLS
pub(crate) enum Sniff {
    Tls,
    Plain,
    NeedMore,
}

/// Without TLS, everything is plaintext.
pub(crate) fn sniff(_bytes: &[u8]) -> Sniff {
    Sniff::Plain
}

/// Lends a plaintext buffer to `f`.
pub(crate) fn with_plaintext<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    f(&mut Vec::new())
}

impl TlsLayer {
    pub(crate) fn accept(server: &ServerTls) -> Result<TlsLayer, String> {
        match *server {}
    }
    pub(crate) fn read(&mut self, _data: &[u8], _plain: &mut Vec<u8>) -> Result<(), String> {
        match *self {}
    }
    pub(crate) fn take_settled(&mut self) -> Option<TlsInfo> {
        match *self {}
    }
    pub(crate) fn is_handshaking(&self) -> bool {
        match *self {}
    }
    pub(crate) fn has_output(&self, _out: &OutQueue) -> bool {
        match *self {}
    }
    pub(crate) fn backlog_bytes(&self) -> usize {
        match *self {}
    }
    pub(crate) fn take_batch(&mut self, _out: &mut OutQueue, _batch: &mut Vec<Bytes>) -> u64 {
        match *self {}
    }
    pub(crate) fn sent(&mut self, _batch: &mut Vec<Bytes>, _written: usize) {
        match *self {}
    }
    pub(crate) fn close_notify(&mut self) {
        match *self {}
    }
}
