//! Codec benchmarks and peer servers.
