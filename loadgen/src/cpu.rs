//! CPU time spent in the measured window, read from /proc without libc.
//!
//! Every thread of the run (each I/O thread and the monitor) samples its *own* CPU time when
//! it crosses the start and the end of the measured window, and the run sums the differences.
//! Sampling per thread is exact even though the I/O threads exit right after the deadline,
//! when a process-wide sum over `/proc/self/task` would already have lost them.
//! `--proto grpc` is the exception: tokio's threads are not ours to instrument, so its monitor
//! samples the whole process instead ([`CpuSource::Process`]) while the runtime is alive.
//!
//! Preferred source: the first field of `/proc/thread-self/schedstat`, on-CPU nanoseconds.
//! Fallback: `utime + stime` of `/proc/thread-self/stat` in clock ticks assumed to be
//! USER_HZ = 100, which is what Linux exports on every mainstream architecture (reading
//! `sysconf(_SC_CLK_TCK)` would need libc).

use std::fs;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second assumed for `/proc/thread-self/stat`.
const ASSUMED_USER_HZ: u64 = 100;

/// Where CPU time is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuSource {
    /// `/proc/thread-self/schedstat` on-CPU nanoseconds.
    Schedstat,
    /// `/proc/thread-self/stat` utime + stime at an assumed 100 ticks per second.
    Stat,
    /// The whole process, as [`process_cpu_time`] reads it for our own PID: for runtimes
    /// whose threads are not ours to sample one by one (`--proto grpc` on tokio). Threads
    /// that exit inside the window take their time with them, so sample it only while the
    /// runtime's threads are alive.
    Process,
}

impl CpuSource {
    /// Picks the best source this kernel offers, or `None` when /proc is unreadable.
    pub fn detect() -> Option<CpuSource> {
        [CpuSource::Schedstat, CpuSource::Stat]
            .into_iter()
            .find(|source| source.thread_cpu_time().is_some())
    }

    /// User plus system CPU time of the calling thread so far.
    /// With [`CpuSource::Process`]: of the whole process the calling thread belongs to.
    pub fn thread_cpu_time(self) -> Option<Duration> {
        match self {
            CpuSource::Process => process_cpu_time(std::process::id()),
            CpuSource::Schedstat => {
                let text = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
                text.split_whitespace()
                    .next()?
                    .parse()
                    .ok()
                    .map(Duration::from_nanos)
            }
            CpuSource::Stat => {
                let text = fs::read_to_string("/proc/thread-self/stat").ok()?;
                parse_stat_ticks(&text)
                    .map(|ticks| Duration::from_nanos(ticks * (1_000_000_000 / ASSUMED_USER_HZ)))
            }
        }
    }

    /// Short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            CpuSource::Schedstat => "per-thread /proc schedstat",
            CpuSource::Stat => "per-thread /proc stat at an assumed 100 ticks/s",
            CpuSource::Process => "whole process, /proc schedstat of every thread",
        }
    }
}

/// CPU time (user + system) another process has used so far, for `--server-pid`: the sum of
/// its threads' schedstat nanoseconds, or its stat ticks (which also count exited threads)
/// where schedstat is unreadable.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let from_schedstat = || -> Option<Duration> {
        let mut total = 0u64;
        for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let text = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(Duration::from_nanos(total))
    };
    from_schedstat().or_else(|| {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat_ticks(&text)
            .map(|ticks| Duration::from_nanos(ticks * (1_000_000_000 / ASSUMED_USER_HZ)))
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/.../stat` line.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 (state) is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Before,
    Measuring { start: Option<Duration> },
    Finished { used: Option<Duration> },
}

/// The calling thread's CPU time inside `[start, end)`, sampled as the thread crosses each edge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowCpu {
    source: Option<CpuSource>,
    start: Instant,
    end: Instant,
    phase: Phase,
}

impl WindowCpu {
    pub(crate) fn new(source: Option<CpuSource>, start: Instant, end: Instant) -> WindowCpu {
        WindowCpu {
            source,
            start,
            end,
            phase: Phase::Before,
        }
    }

    fn sample(&self) -> Option<Duration> {
        self.source.and_then(CpuSource::thread_cpu_time)
    }

    /// Call often from the owning thread; reads /proc only when an edge is crossed.
    pub(crate) fn observe(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Before) && now >= self.start {
            self.phase = Phase::Measuring {
                start: self.sample(),
            };
        }
        if matches!(self.phase, Phase::Measuring { .. }) && now >= self.end {
            self.finish();
        }
    }

    /// Closes the window early, for a thread that stops before the end.
    pub(crate) fn finish(&mut self) {
        if let Phase::Measuring { start } = self.phase {
            let end = self.sample();
            let used = start.zip(end).map(|(start, end)| end.saturating_sub(start));
            self.phase = Phase::Finished { used };
        }
    }

    /// CPU time used in the window: zero if the thread never reached it, `None` if unreadable.
    pub(crate) fn used(&self) -> Option<Duration> {
        match self.phase {
            Phase::Before => Some(Duration::ZERO),
            Phase::Measuring { .. } => None,
            Phase::Finished { used } => used,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_process_cpu_time_grows_while_it_works() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let first = process_cpu_time(pid).expect("readable while running");
        std::thread::sleep(Duration::from_millis(200));
        let second = process_cpu_time(pid);
        child.wait().unwrap();
        if let Some(second) = second {
            assert!(second > first, "{first:?} then {second:?}");
        }
        assert!(process_cpu_time(u32::MAX).is_none());
    }

    #[test]
    fn stat_line_with_awkward_command_name() {
        let line =
            "4273 (a) b (c) R 4270 4270 2550 0 -1 4194304 2845 6540 13 2 39 7 1 5 20 0 1 0 24554";
        assert_eq!(parse_stat_ticks(line), Some(46));
    }

    #[test]
    fn both_sources_are_readable_and_monotonic() {
        for source in [CpuSource::Schedstat, CpuSource::Stat] {
            let before = source
                .thread_cpu_time()
                .expect("/proc is readable on Linux");
            let mut x = 0u64;
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            assert!(source.thread_cpu_time().unwrap() >= before);
        }
    }

    #[test]
    fn window_counts_only_between_its_edges() {
        let t0 = Instant::now();
        let (start, end) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        let mut window = WindowCpu::new(CpuSource::detect(), start, end);
        window.observe(t0);
        assert_eq!(window.used(), Some(Duration::ZERO), "not reached yet");
        window.observe(start);
        assert_eq!(window.used(), None, "still open");
        window.observe(end);
        assert!(window.used().is_some());
        let closed = window.used();
        window.observe(end + Duration::from_secs(1));
        window.finish();
        assert_eq!(window.used(), closed, "closed windows stay closed");
    }
}
