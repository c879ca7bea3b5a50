//! Observability: per-core counters, per-method metrics and the Prometheus endpoint.

pub(crate) mod closes;
pub(crate) mod core_stats;
#[cfg(feature = "metrics")]
pub(crate) mod http;
pub(crate) mod methods;
#[cfg(feature = "metrics")]
pub(crate) mod prometheus;
pub(crate) mod scrape;
