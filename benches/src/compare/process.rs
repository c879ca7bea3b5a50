//! Child processes of a comparison: their command lines as shell text, running one with a
//! deadline and capturing its output, stopping a server (SIGTERM, then SIGKILL), and the
//! excerpt of output quoted when something fails.

use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of output quoted when a run fails.
const TAIL_LINES: usize = 4;

/// `text` quoted for a POSIX shell when it needs it.
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%{}".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

pub(crate) fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last few non-empty lines of `text`, or from its first `error` line on, as one line.
pub fn failure_excerpt(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let error_line = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().starts_with("error"));
    let excerpt = match error_line {
        Some(first) => &lines[first..lines.len().min(first + TAIL_LINES)],
        None => &lines[lines.len().saturating_sub(TAIL_LINES)..],
    };
    excerpt.join(" / ")
}

/// Kills a server that never became ready and returns `why` with the tail of its log.
pub(crate) fn abandon(mut child: Child, why: String, log_path: &Path) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let excerpt = failure_excerpt(&log);
    if excerpt.is_empty() {
        why
    } else {
        format!("{why}; server log: {excerpt}")
    }
}

/// SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL. Fails only if the server had
/// already died, which means the run measured a crashing server.
pub(crate) fn stop(child: &mut Child) -> Result<(), String> {
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!("server exited ({status}) during the run"));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "compare: server pid {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// What a process left behind; `status` is `None` when it was killed at the deadline.
pub(crate) struct CapturedOutput {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

pub(crate) fn run_with_deadline(
    command: &mut Command,
    limit: Duration,
) -> io::Result<CapturedOutput> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let collect = |mut source: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = source.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout was piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr was piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(CapturedOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_prefer_the_error_line() {
        let clap = "error: unexpected argument '--proto' found\n\n  tip: to pass '--proto' as a value, use '-- --proto'\n\nUsage: loadgen [OPTIONS]\n\nFor more information, try '--help'.\n";
        assert!(failure_excerpt(clap).starts_with("error: unexpected argument '--proto' found"));
        assert_eq!(failure_excerpt("a\nb\n\nc\nd\ne\n"), "b / c / d / e");
    }

    #[test]
    fn quoting_for_a_shell() {
        assert_eq!(shell_quote("--conns"), "--conns");
        assert_eq!(shell_quote("exec srv --addr :1"), "'exec srv --addr :1'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
