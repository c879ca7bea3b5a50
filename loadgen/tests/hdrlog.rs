//! `--hdr-log` end to end: a run against an in-test arpc echo server writes an HdrHistogram
//! interval log that parses back (hdrhistogram's own log iterator and V2 deserializer) into
//! intervals tiling the measured window and the drain, whose counts add up exactly to the
//! report's answered requests.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use common::{Behaviour, spawn_server};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use ringrpc_loadgen::{Cli, Config, run};

/// Standard base64 with padding, as HdrHistogram logs encode histograms.
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut held) = (0u32, 0u32);
    for byte in text.bytes().filter(|&b| b != b'=') {
        let sextet = ALPHABET
            .iter()
            .position(|&a| a == byte)
            .unwrap_or_else(|| panic!("{:?} is not base64", byte as char));
        bits = (bits << 6) | sextet as u32;
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    out
}

#[test]
fn base64_decoder_round_trips_known_text() {
    assert_eq!(decode_base64("aGRyaGlzdG9ncmFt"), b"hdrhistogram");
    assert_eq!(decode_base64("bG9hZGdlbg=="), b"loadgen");
    assert_eq!(decode_base64("bG9hZA=="), b"load");
}

/// One parsed interval: where it starts in the window, how long it lasts, its histogram.
struct Interval {
    start: Duration,
    length: Duration,
    histogram: Histogram<u64>,
}

fn read_intervals(path: &Path) -> Vec<Interval> {
    let log = std::fs::read(path).expect("the log was written");
    let mut deserializer = Deserializer::new();
    IntervalLogIterator::new(&log)
        .filter_map(|entry| match entry.expect("the log parses") {
            LogEntry::Interval(interval) => Some(interval),
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => None,
        })
        .map(|interval| {
            let bytes = decode_base64(interval.encoded_histogram());
            let histogram = deserializer
                .deserialize(&mut bytes.as_slice())
                .expect("a V2 compressed histogram");
            Interval {
                start: interval.start_timestamp(),
                length: interval.duration(),
                histogram,
            }
        })
        .collect()
}

fn temp_log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("loadgen-{name}-{}.hlog", std::process::id()))
}

#[test]
fn interval_log_counts_add_up_to_the_answered_requests() {
    let addr = spawn_server(Behaviour::Echo);
    let path = temp_log("hdr");
    let target = addr.to_string();
    let args = [
        "loadgen",
        "--target",
        &target,
        "--quiet",
        "--duration",
        "1200ms",
        "--warmup",
        "200ms",
        "--conns",
        "2",
        "--per-conn",
        "4",
        "--hdr-log",
        path.to_str().unwrap(),
    ];
    let report = run(&Config::from_cli(Cli::try_parse_from(args).unwrap()).unwrap()).unwrap();
    assert!(report.success, "{:?}", report.failures);
    assert!(report.counts.answered > 0);

    let header = std::fs::read_to_string(&path).unwrap();
    let intervals = read_intervals(&path);
    std::fs::remove_file(&path).ok();
    assert!(header.contains("values in nanoseconds"), "{header}");
    assert!(header.contains("#[Histogram log format version 1.3]"));
    assert!(header.contains(
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    ));

    // Every answered request — those answered in the drain too — is in exactly one interval.
    let total: u64 = intervals.iter().map(|i| i.histogram.len()).sum();
    assert_eq!(total, report.counts.answered);
    assert_eq!(total, report.latency_us.count);

    // One-second intervals from the start of the window, the last running to the end of the
    // drain. Timestamps are written in milliseconds, hence the 1 ms slack.
    let slack = Duration::from_millis(1);
    assert!(
        (1..=2).contains(&intervals.len()),
        "{} intervals",
        intervals.len()
    );
    assert_eq!(intervals[0].start, Duration::ZERO);
    for pair in intervals.windows(2) {
        assert!(pair[0].length >= Duration::from_secs(1) - slack);
        assert!((pair[0].start + pair[0].length).abs_diff(pair[1].start) <= slack);
    }
    let last = intervals.last().unwrap();
    let window = Duration::from_secs_f64(report.measured_s + report.drain_s);
    assert!(
        (last.start + last.length).abs_diff(window) <= Duration::from_millis(20),
        "the log ends at {:?}, the drain at {window:?}",
        last.start + last.length
    );
    // The merged intervals are the report's histogram.
    let mut merged = intervals[0].histogram.clone();
    for interval in &intervals[1..] {
        merged.add(&interval.histogram).unwrap();
    }
    assert_eq!(merged.max() as f64 / 1000.0, report.latency_us.max);
}

#[test]
fn binary_refuses_an_unwritable_hdr_log_before_connecting() {
    // Nothing listens on the target: the bad path must be reported, not the connection.
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", "127.0.0.1:1", "--duration", "1s", "--quiet"])
        .args(["--hdr-log", "/nonexistent-dir/loadgen.hlog"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot write the HdrHistogram log /nonexistent-dir/loadgen.hlog"),
        "{stderr}"
    );
}
