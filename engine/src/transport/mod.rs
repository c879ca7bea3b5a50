//! Transports: bytes in, arpc frames out, and the queue of frames going back.

pub(crate) mod arpc;
pub(crate) mod coder;
pub(crate) mod outqueue;
pub(crate) mod tcp;
pub(crate) mod ws;
