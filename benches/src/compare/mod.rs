//! The `compare` tool's parts: run every server under the same load, then summarise, judge and chart.
//!
//! Only [`runner`] starts processes; everything else works on parsed loadgen reports, so it is
//! tested without any server.

pub mod chart;
pub mod idle;
pub mod loadgen_report;
pub mod machine;
pub mod matrix;
pub mod runner;
pub mod servers;
pub mod settings;
pub mod summary;
pub mod table;
pub mod targets;
