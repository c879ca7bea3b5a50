//! Reading the engine's output: its periodic `--stats` lines (stderr) for open and closed
//! connections, and its exit report (stdout) for connections accepted per core.

/// One `--stats` line: `core N: X conns, ... , K closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsLine {
    pub core: usize,
    /// Connections open on that core when the line was printed.
    pub open: u64,
    /// Connections closed on that core since its previous line.
    pub closed: u64,
}

/// One line of the exit report: `core N: A connections, R requests, ...` or `total: ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitLine {
    /// `None` for the `total:` line.
    pub core: Option<usize>,
    pub accepted: u64,
    pub requests: u64,
}

/// The number right before `unit` among `words` (`["3", "conns,"]` with unit `conns` gives 3).
fn number_before(words: &[&str], unit: &str) -> Option<u64> {
    let at = words.iter().position(|w| w.trim_end_matches(',') == unit)?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// Parses a stats line wherever it sits in a log line (after a timestamp and level).
pub fn parse_stats_line(line: &str) -> Option<StatsLine> {
    let start = line.find("core ")?;
    let rest = &line[start + "core ".len()..];
    let (core, tail) = rest.split_once(':')?;
    let core = core.trim().parse().ok()?;
    let words: Vec<&str> = tail.split_whitespace().collect();
    Some(StatsLine {
        core,
        open: number_before(&words, "conns")?,
        closed: number_before(&words, "closed")?,
    })
}

/// Parses a line of the exit report.
pub fn parse_exit_line(line: &str) -> Option<ExitLine> {
    let (name, tail) = line.trim().split_once(':')?;
    let core = match name.strip_prefix("core ") {
        Some(n) => Some(n.trim().parse().ok()?),
        None if name == "total" => None,
        None => return None,
    };
    let words: Vec<&str> = tail.split_whitespace().collect();
    Some(ExitLine {
        core,
        accepted: number_before(&words, "connections")?,
        requests: number_before(&words, "requests")?,
    })
}

/// What the stats lines said so far.
#[derive(Debug, Clone, Default)]
pub struct StatsLog {
    /// Per core: (lines seen, open at the latest line).
    latest: Vec<(u64, u64)>,
    /// Closes summed over every line of every core.
    pub closed_total: u64,
}

impl StatsLog {
    /// Takes in one stderr line; others than stats lines are ignored.
    pub fn observe(&mut self, line: &str) {
        let Some(s) = parse_stats_line(line) else {
            return;
        };
        if self.latest.len() <= s.core {
            self.latest.resize(s.core + 1, (0, 0));
        }
        let entry = &mut self.latest[s.core];
        *entry = (entry.0 + 1, s.open);
        self.closed_total += s.closed;
    }

    /// Lines seen per core, to wait for lines newer than a moment.
    pub fn generations(&self) -> Vec<u64> {
        self.latest.iter().map(|&(n, _)| n).collect()
    }

    /// Open connections per core at each core's latest line.
    pub fn open(&self) -> Vec<u64> {
        self.latest.iter().map(|&(_, open)| open).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_exit_lines_parse() {
        let line = "2026-11-21T23:50:00.1Z  INFO core 1: 3 conns, 1200 req/s, in 0.1 MB/s, out 0.1 MB/s, 1.5 frames/send, 7 closed";
        assert_eq!(
            parse_stats_line(line),
            Some(StatsLine {
                core: 1,
                open: 3,
                closed: 7
            })
        );
        assert_eq!(parse_stats_line("engine: signal 15 received"), None);
        let exit = "   core 0: 12 connections, 345 requests, 0 notifies, 1 bytes in, 2 bytes out, 3 sends, 1.0 frames/send, 4 protocol errors";
        assert_eq!(
            parse_exit_line(exit),
            Some(ExitLine {
                core: Some(0),
                accepted: 12,
                requests: 345
            })
        );
        let total = "  total: 24 connections, 690 requests, 0 notifies";
        assert_eq!(parse_exit_line(total).unwrap().core, None);
        assert_eq!(
            parse_exit_line("engine listening on 127.0.0.1:1 with 2 cores"),
            None
        );
    }

    #[test]
    fn the_log_keeps_the_latest_open_count_and_sums_closes() {
        let mut log = StatsLog::default();
        log.observe("INFO core 0: 5 conns, 0 req/s, 2 closed");
        log.observe("INFO core 1: 1 conns, 0 req/s, 1 closed");
        log.observe("INFO core 0: 0 conns, 0 req/s, 5 closed");
        assert_eq!(log.open(), vec![0, 1]);
        assert_eq!(log.generations(), vec![2, 1]);
        assert_eq!(log.closed_total, 8);
    }
}
