//! A run once connected, whatever the protocol ([`Session`]): it fixes the phase edges
//! (warmup, measured window, drain), hands out the places where workers publish latencies,
//! prints the progress line and closes interval-log intervals while the load runs, samples
//! CPU time around the measured window, and builds the [`Report`] at the end.
//!
//! Invariant: every measured latency is published to one of the session's [`Shared`]
//! histograms, all built by [`latency_histogram`]; the report, the progress p99 and the
//! interval log all read those.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::cli::config::Config;
use crate::connect::Dialer;
use crate::counters::Counters;
use crate::cpu::{CpuSource, WindowCpu, process_cpu_time};
use crate::error::RunError;
use crate::hdrlog::{HdrLogFile, IntervalLog};
use crate::pattern::Pattern;
use crate::pubsub::publication::PubsubPlan;
use crate::report::{CpuUsage, PubsubOutcome, Report, Window};
use crate::worker::{Plan, Shared};

/// Longest the monitor sleeps before noticing that every worker finished early.
const MONITOR_POLL: Duration = Duration::from_millis(50);
/// Significant digits kept by the latency histograms.
pub(crate) const LATENCY_SIGFIG: u8 = 3;

/// An empty latency histogram (nanoseconds) with the bounds every histogram of a run shares:
/// up to twice the timeout plus a second, so a late answer in the drain still fits.
pub(crate) fn latency_histogram(timeout: Duration) -> Result<Histogram<u64>, RunError> {
    let latency_high_ns =
        u64::try_from((timeout * 2 + Duration::from_secs(1)).as_nanos()).unwrap_or(u64::MAX);
    Histogram::<u64>::new_with_bounds(1, latency_high_ns.max(2), LATENCY_SIGFIG)
        .map_err(|e| RunError::Worker(format!("cannot create latency histogram: {e}")))
}

/// What the monitor measured of the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Monitored {
    /// Measured time (shorter than asked only if every worker finished early).
    measured: Duration,
    /// The monitor thread's CPU time in the window (the whole process's with
    /// [`CpuSource::Process`]).
    cpu: Option<Duration>,
    /// The `--server-pid` process's CPU time in the window.
    server_cpu: Option<Duration>,
}

/// A run once connected, whatever the protocol: the plan, where latencies are published, the
/// interval log, and the monitor that watches the phases go by.
#[derive(Debug)]
pub(crate) struct Session<'c> {
    pub config: &'c Config,
    pub plan: Arc<Plan>,
    /// Warmup begins.
    pub start: Instant,
    /// One per publisher (an arpc I/O thread, a gRPC connection).
    shared: Vec<Arc<Shared>>,
    empty_histogram: Histogram<u64>,
    interval_log: Option<IntervalLog>,
}

impl<'c> Session<'c> {
    /// Fixes the phase edges from now: warmup, then the measured window, then the drain.
    /// `cpu_source` is how the monitor (and arpc's I/O threads) read CPU time.
    pub(crate) fn begin(
        config: &'c Config,
        cpu_source: Option<CpuSource>,
        hdr_log: Option<HdrLogFile>,
    ) -> Result<Session<'c>, RunError> {
        let start = Instant::now() + Duration::from_millis(1);
        let measure_start = start + config.warmup;
        let deadline = measure_start + config.duration;
        let empty_histogram = latency_histogram(config.timeout)?;
        let interval_log = hdr_log
            .map(|file| {
                let path = file.path().to_path_buf();
                file.begin(measure_start, empty_histogram.clone())
                    .map_err(|e| RunError::HdrLog {
                        path,
                        cause: e.to_string(),
                    })
            })
            .transpose()?;
        let plan = Arc::new(Plan {
            per_conn: config.per_conn,
            pattern: config.pattern,
            method: Bytes::copy_from_slice(config.method.as_bytes()),
            payload_len: config.payload,
            timeout: config.timeout,
            measure_start,
            deadline,
            drain_deadline: deadline + config.timeout,
            cpu_source,
            reflect: config.reflect,
            udp: config.udp,
            pubsub: (config.pattern == Pattern::Pubsub).then(|| PubsubPlan::new(&config.topic)),
            reconnect_every: config.reconnect_every,
            dialer: match config.reconnect_every {
                Some(_) => Some(Dialer::new(config)?),
                None => None,
            },
        });
        Ok(Session {
            config,
            plan,
            start,
            shared: Vec::new(),
            empty_histogram,
            interval_log,
        })
    }

    /// A new place to publish frames and latencies, watched by the monitor and merged at the end.
    pub(crate) fn publisher(&mut self) -> Arc<Shared> {
        let shared = Arc::new(Shared::new(self.empty_histogram.clone()));
        self.shared.push(Arc::clone(&shared));
        shared
    }

    /// Prints progress once a second and closes interval-log intervals until the deadline
    /// passes or `finished` says every worker is done. Samples this thread's CPU time (the
    /// process's with [`CpuSource::Process`]) and the server's at the same edges.
    pub(crate) fn monitor(&mut self, finished: &dyn Fn() -> bool) -> Monitored {
        let (config, plan, start) = (self.config, Arc::clone(&self.plan), self.start);
        let mut cpu = WindowCpu::new(plan.cpu_source, plan.measure_start, plan.deadline);
        // The server's CPU time: its process and any beside it (a proxy in front).
        let server_sample = || {
            let pid = config.server_pid?;
            std::iter::once(&pid)
                .chain(&config.also_server_pids)
                .map(|pid| process_cpu_time(*pid))
                .sum::<Option<Duration>>()
        };
        let mut server_start = None;
        let mut next_tick = start + Duration::from_secs(1);
        let mut last_tick = start;
        let mut last_frames = 0u64;
        loop {
            let now = Instant::now();
            cpu.observe(now);
            let measuring = now >= plan.measure_start;
            if measuring && server_start.is_none() {
                server_start = Some(server_sample());
            }
            if now >= plan.deadline || finished() {
                cpu.finish();
                let server_cpu = server_start
                    .flatten()
                    .zip(server_sample())
                    .map(|(a, b)| b.saturating_sub(a));
                let end = now.min(plan.deadline);
                return Monitored {
                    measured: end.saturating_duration_since(plan.measure_start),
                    cpu: cpu.used(),
                    server_cpu,
                };
            }
            if let Some(log) = self.interval_log.as_mut() {
                if now >= log.next_edge() {
                    let mut cumulative = self.empty_histogram.clone();
                    merge_published(&self.shared, &mut cumulative);
                    log.close_interval(now, &cumulative);
                }
            }
            if !config.quiet && now >= next_tick {
                let frames: u64 = self
                    .shared
                    .iter()
                    .map(|s| s.frames.load(Ordering::Relaxed))
                    .sum();
                let rate =
                    (frames - last_frames) as f64 / now.duration_since(last_tick).as_secs_f64();
                // Name the phase the second mostly belonged to: the tick at the edge reports warmup.
                let phase = if last_tick >= plan.measure_start {
                    "measuring"
                } else {
                    "warmup"
                };
                let p99 = if measuring {
                    self.p99_so_far()
                } else {
                    "-".to_string()
                };
                eprintln!(
                    "[{:6.1}s] {phase:<9} {rate:>12.0} req/s  p99 so far {p99}",
                    now.duration_since(start).as_secs_f64()
                );
                last_frames = frames;
                last_tick = now;
                next_tick += Duration::from_secs(1);
            }
            let mut wake = plan.deadline;
            if !measuring {
                wake = wake.min(plan.measure_start);
            }
            if !config.quiet {
                wake = wake.min(next_tick);
            }
            if let Some(log) = &self.interval_log {
                wake = wake.min(log.next_edge());
            }
            thread::sleep(wake.saturating_duration_since(now).min(MONITOR_POLL));
        }
    }

    fn p99_so_far(&self) -> String {
        let mut merged = self.empty_histogram.clone();
        merge_published(&self.shared, &mut merged);
        if merged.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1} µs", merged.value_at_quantile(0.99) as f64 / 1000.0)
        }
    }

    /// Once every worker is done: merges what they published, closes the interval log, and
    /// builds the report. `workers_cpu` is the CPU time the workers measured themselves, added
    /// to the monitor's; `pubsub` is what the subscribers counted.
    pub(crate) fn conclude(
        self,
        counters: &Counters,
        workers_cpu: Option<Duration>,
        monitored: Monitored,
        pubsub: Option<PubsubOutcome>,
    ) -> Result<Report, RunError> {
        let drained_at = Instant::now();
        let mut latencies = self.empty_histogram;
        merge_published(&self.shared, &mut latencies);
        if let Some(log) = self.interval_log {
            let path = log.path().to_path_buf();
            log.finish(drained_at, &latencies)
                .map_err(|cause| RunError::HdrLog { path, cause })?;
        }
        let cpu_in_window = monitored.cpu.zip(workers_cpu).map(|(a, b)| a + b);
        let window = Window {
            measured: monitored.measured,
            drain: drained_at.saturating_duration_since(self.plan.deadline),
            cpu: self
                .plan
                .cpu_source
                .zip(cpu_in_window)
                .map(|(source, time)| CpuUsage { source, time }),
            server_cpu: monitored.server_cpu,
        };
        Ok(Report::build(
            self.config,
            counters,
            &latencies,
            window,
            pubsub.as_ref(),
        ))
    }
}

/// Adds every publisher's latencies so far to `into`.
fn merge_published(shared: &[Arc<Shared>], into: &mut Histogram<u64>) {
    for publisher in shared {
        let published = publisher
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        into.add(&*published)
            .expect("every latency histogram of a run is built with the same bounds");
    }
}
