//! The `compare` tool's parts: run every server under the same load, then summarise, judge and chart.
//!
//! Only [`runner`] (with `process`, which runs and stops child processes, and `readiness`,
//! which waits for a started server) starts processes; everything else works on parsed loadgen
//! reports, so it is tested without any server. Imports point one way: [`results`] (each
//! server's runs and their median) and [`markdown`] (table text) are leaves that
//! [`targets`], [`table`], [`summary`], [`matrix`] and the rest build on.

pub mod by_driver;
pub mod certs;
pub mod chart;
pub mod drivers;
pub mod idle;
pub mod loadgen_report;
pub mod machine;
pub mod markdown;
pub mod matrix;
pub mod open_load;
mod process;
mod readiness;
pub mod results;
pub mod runner;
pub mod servers;
pub mod settings;
pub mod summary;
pub mod table;
pub mod targets;
