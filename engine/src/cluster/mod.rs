//! Clustering: the NATS bridge that carries publications and broadcasts between nodes.

pub(crate) mod bridge;
pub(crate) mod link;
