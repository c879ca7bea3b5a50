//! Observability: what each reactor counts always ([`CoreStats`](crate::CoreStats),
//! `core_stats`: the shutdown report and stats lines), what it measures only with metrics on
//! (`methods`: per-method counts and latency; `closes`: closes by reason), how the numbers
//! reach a scrape without costing the request path (`scrape`), and the Prometheus encoding and
//! HTTP endpoint (`prometheus`, `http`; the `metrics` feature).
//!
//! Invariants: counters are written only by their reactor's thread (no shared atomics per
//! request); label sets are bounded whatever peers send.

pub(crate) mod closes;
pub(crate) mod core_stats;
#[cfg(feature = "metrics")]
pub(crate) mod http;
pub(crate) mod methods;
#[cfg(feature = "metrics")]
pub(crate) mod prometheus;
pub(crate) mod scrape;
