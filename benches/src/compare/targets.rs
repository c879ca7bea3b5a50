//! The performance targets ringrpc's engine is held to, judged on the median runs.

use std::fmt;

use serde::Serialize;

use super::loadgen_report::LoadgenReport;
use super::markdown::format_rate;
use super::results::ServerResult;

/// Whether a target was reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// Not judged: a row it needs is missing, failed or lacks the figure.
    Skipped(String),
}

/// One target's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetResult {
    /// The target as a reader states it, e.g. `engine req/s ≥ 10× grpc-echo`.
    pub target: String,
    /// The measured value, e.g. `13.52× (612,870 vs 45,321 req/s)`; empty when skipped.
    pub measured: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl fmt::Display for TargetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Met => write!(f, "{}: {} — MET", self.target, self.measured),
            Verdict::Missed => write!(f, "{}: {} — MISSED", self.target, self.measured),
            Verdict::Skipped(why) => write!(f, "{}: skipped ({why})", self.target),
        }
    }
}

/// Judges every target on the median runs in `results`.
pub fn evaluate(results: &[ServerResult]) -> Vec<TargetResult> {
    vec![
        throughput_multiple(results, "grpc-echo", 10.0),
        throughput_multiple(results, "peer-tokio", 3.0),
        server_cpu_ceiling(results, 1.0),
        p99_fraction(results, "grpc-echo", 5.0),
        throughput_share(results, "reflect", 0.9),
    ]
}

/// The median report of the row `name`, or why there is none.
fn median<'a>(results: &'a [ServerResult], name: &str) -> Result<&'a LoadgenReport, String> {
    let result = results
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| format!("{name} was not run"))?;
    result
        .median()
        .ok_or_else(|| format!("{name} failed in every round"))
}

fn judged(target: String, measured: String, met: bool) -> TargetResult {
    TargetResult {
        target,
        measured,
        verdict: if met { Verdict::Met } else { Verdict::Missed },
    }
}

fn skipped(target: String, why: String) -> TargetResult {
    TargetResult {
        target,
        measured: String::new(),
        verdict: Verdict::Skipped(why),
    }
}

/// Both reports, or why the target cannot be judged.
fn pair<'a>(
    results: &'a [ServerResult],
    other: &str,
) -> Result<(&'a LoadgenReport, &'a LoadgenReport), String> {
    let engine = median(results, "engine");
    let other = median(results, other);
    match (engine, other) {
        (Ok(engine), Ok(other)) => Ok((engine, other)),
        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
        (Err(why), _) | (_, Err(why)) => Err(why),
    }
}

fn throughput_multiple(results: &[ServerResult], other: &str, multiple: f64) -> TargetResult {
    let target = format!("engine req/s ≥ {multiple}× {other}");
    match pair(results, other) {
        Err(why) => skipped(target, why),
        Ok((_, o)) if o.requests_per_second <= 0.0 => {
            skipped(target, format!("{other} answered nothing"))
        }
        Ok((e, o)) => {
            let ratio = e.requests_per_second / o.requests_per_second;
            let measured = format!(
                "{ratio:.2}× ({} vs {} req/s)",
                format_rate(e.requests_per_second),
                format_rate(o.requests_per_second)
            );
            judged(target, measured, ratio >= multiple)
        }
    }
}

fn server_cpu_ceiling(results: &[ServerResult], ceiling_us: f64) -> TargetResult {
    let target = format!("engine server CPU ≤ {ceiling_us} µs/request");
    match median(results, "engine") {
        Err(why) => skipped(target, why),
        Ok(engine) => match engine.server_cpu_us_per_request {
            None => skipped(target, "loadgen reported no server CPU for engine".into()),
            Some(cpu) => judged(target, format!("{cpu:.3} µs/request"), cpu <= ceiling_us),
        },
    }
}

fn p99_fraction(results: &[ServerResult], other: &str, divisor: f64) -> TargetResult {
    let target = format!("engine p99 ≤ {other} p99 / {divisor}");
    match pair(results, other) {
        Err(why) => skipped(target, why),
        Ok((e, o)) => {
            let (engine_p99, other_p99) = (e.latency_us.p99, o.latency_us.p99);
            let measured = format!(
                "{engine_p99:.1} µs vs {other_p99:.1} µs / {divisor} = {:.1} µs",
                other_p99 / divisor
            );
            judged(target, measured, engine_p99 <= other_p99 / divisor)
        }
    }
}

fn throughput_share(results: &[ServerResult], other: &str, share: f64) -> TargetResult {
    let target = format!("engine req/s ≥ {:.0}% of {other}", share * 100.0);
    match pair(results, other) {
        Err(why) => skipped(target, why),
        Ok((_, o)) if o.requests_per_second <= 0.0 => {
            skipped(target, format!("{other} answered nothing"))
        }
        Ok((e, o)) => {
            let fraction = e.requests_per_second / o.requests_per_second;
            let measured = format!(
                "{:.1}% ({} vs {} req/s)",
                fraction * 100.0,
                format_rate(e.requests_per_second),
                format_rate(o.requests_per_second)
            );
            judged(target, measured, fraction >= share)
        }
    }
}
