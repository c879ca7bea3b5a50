//! `--hdr-log`: the measured latencies as an HdrHistogram interval log (the V2 log format that
//! HdrHistogram's `HistogramLogReader` and `HistogramLogProcessor` read), one interval per
//! second of the measured window.
//!
//! Invariants: intervals tile the time from the start of the measured window to the end of the
//! run without gaps or overlaps; each holds the latencies published between its edges (the
//! difference of two cumulative snapshots), so the counts of all intervals add up to exactly the
//! run's answered requests. arpc I/O threads publish every 10 ms, so an answer near an edge can
//! land in the next interval; gRPC callers publish each answer as it comes. The last interval runs on past the deadline to the end of the drain,
//! because answers that arrive in the drain are measured too. Values are the nanoseconds the run
//! records, as is the `Interval_Max` column.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

/// Length of every interval but the last.
pub(crate) const HDR_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The log file, created before the run connects so that a bad path fails before any load.
#[derive(Debug)]
pub(crate) struct HdrLogFile {
    path: PathBuf,
    file: File,
}

impl HdrLogFile {
    pub(crate) fn create(path: &Path) -> io::Result<HdrLogFile> {
        Ok(HdrLogFile {
            path: path.to_path_buf(),
            file: File::create(path)?,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the header for a measured window starting at `measure_start`; `empty` is a
    /// histogram with the bounds every published one has.
    pub(crate) fn begin(
        self,
        measure_start: Instant,
        empty: Histogram<u64>,
    ) -> io::Result<IntervalLog> {
        let mut out = BufWriter::new(self.file);
        let start_s = seconds_since_epoch(wall_clock_of(measure_start));
        // The layout of HdrHistogram's Java HistogramLogWriter; both times are the start of the
        // measured window, so interval timestamps are seconds into it.
        writeln!(
            out,
            "#loadgen latencies of the measured window: values in nanoseconds (Interval_Max too); \
             one interval per second, the last one running on to the end of the drain"
        )?;
        writeln!(out, "#[Histogram log format version 1.3]")?;
        writeln!(out, "#[StartTime: {start_s:.3} (seconds since epoch)]")?;
        writeln!(out, "#[BaseTime: {start_s:.3} (seconds since epoch)]")?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        Ok(IntervalLog {
            path: self.path,
            out,
            serializer: V2DeflateSerializer::new(),
            line: Vec::new(),
            measure_start,
            interval_start: measure_start,
            next_edge: measure_start + HDR_LOG_INTERVAL,
            logged: empty,
            error: None,
        })
    }
}

/// An interval log being written.
pub(crate) struct IntervalLog {
    path: PathBuf,
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
    /// One encoded interval line, reused.
    line: Vec<u8>,
    measure_start: Instant,
    interval_start: Instant,
    /// When the current interval is due to close.
    next_edge: Instant,
    /// The cumulative latencies already logged, as of `interval_start`.
    logged: Histogram<u64>,
    /// The first write failure; later intervals are skipped and [`IntervalLog::finish`]
    /// reports it.
    error: Option<String>,
}

impl fmt::Debug for IntervalLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serializer has no Debug; the rest says where the log stands.
        f.debug_struct("IntervalLog")
            .field("path", &self.path)
            .field("interval_start", &self.interval_start)
            .field("next_edge", &self.next_edge)
            .field("logged", &self.logged.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl IntervalLog {
    /// When the current interval is due to close.
    pub(crate) fn next_edge(&self) -> Instant {
        self.next_edge
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the current interval at `now`, given every latency published so far.
    pub(crate) fn close_interval(&mut self, now: Instant, cumulative: &Histogram<u64>) {
        self.write_interval(now, cumulative);
        self.logged.clone_from(cumulative);
        self.interval_start = now;
        while self.next_edge <= now {
            self.next_edge += HDR_LOG_INTERVAL;
        }
    }

    /// Writes the last interval, ending at `end`, from the run's final latencies, and flushes
    /// the file. Returns the first failure of the whole log.
    pub(crate) fn finish(mut self, end: Instant, latencies: &Histogram<u64>) -> Result<(), String> {
        self.write_interval(end, latencies);
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e.to_string());
            }
        }
        self.error.map_or(Ok(()), Err)
    }

    fn write_interval(&mut self, end: Instant, cumulative: &Histogram<u64>) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.try_write_interval(end, cumulative) {
            self.error = Some(e);
        }
    }

    fn try_write_interval(
        &mut self,
        end: Instant,
        cumulative: &Histogram<u64>,
    ) -> Result<(), String> {
        let mut interval = cumulative.clone();
        interval
            .subtract(&self.logged)
            .map_err(|e| format!("latencies went backwards between snapshots: {e:?}"))?;
        let start = self
            .interval_start
            .saturating_duration_since(self.measure_start);
        let length = end.saturating_duration_since(self.interval_start);
        self.line.clear();
        // A writer without headers writes just the interval line.
        IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.line, &mut self.serializer)
            .and_then(|mut writer| {
                writer
                    .write_histogram(&interval, start, length, None)
                    .map_err(|e| io::Error::other(e.to_string()))
            })
            .map_err(|e| format!("cannot encode an interval: {e}"))?;
        self.out.write_all(&self.line).map_err(|e| e.to_string())
    }
}

/// The wall-clock time of a monotonic instant, near enough for a log header.
fn wall_clock_of(instant: Instant) -> SystemTime {
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    if instant >= now {
        wall_now + (instant - now)
    } else {
        wall_now - (now - instant)
    }
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn intervals_hold_the_differences_of_cumulative_snapshots() {
        let path =
            std::env::temp_dir().join(format!("loadgen-hdrlog-unit-{}.hlog", std::process::id()));
        let empty = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
        let t0 = Instant::now();
        let mut log = HdrLogFile::create(&path)
            .unwrap()
            .begin(t0, empty.clone())
            .unwrap();
        assert_eq!(log.next_edge(), t0 + HDR_LOG_INTERVAL);
        let mut cumulative = empty;
        cumulative.record_n(1_000, 3).unwrap();
        log.close_interval(t0 + Duration::from_millis(1_002), &cumulative);
        assert_eq!(log.next_edge(), t0 + 2 * HDR_LOG_INTERVAL);
        cumulative.record_n(2_000_000, 5).unwrap();
        log.finish(t0 + Duration::from_millis(1_500), &cumulative)
            .unwrap();

        let text = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let mut intervals = Vec::new();
        for entry in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(interval) = entry.unwrap() {
                intervals.push((
                    interval.start_timestamp(),
                    interval.duration(),
                    interval.max(),
                ));
            }
        }
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[0].0, Duration::ZERO);
        assert_eq!(intervals[0].1, Duration::from_millis(1_002));
        assert_eq!(intervals[1].0, Duration::from_millis(1_002));
        assert_eq!(intervals[1].1, Duration::from_millis(498));
        // The second interval's maximum is in nanoseconds (within the histogram's precision).
        assert!((intervals[1].2 - 2_000_000.0).abs() <= 2_000_000.0 * 1e-3);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\""));
        assert!(text.contains("#[StartTime: "));
    }
}
