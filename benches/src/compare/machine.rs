//! The machine a comparison ran on: CPU model, usable CPU count and kernel release.

use std::fmt;

use serde::Serialize;

/// What a reader needs to know to judge whether their numbers should match these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs this process may use (what `nproc` prints).
    pub nproc: usize,
    /// /proc/sys/kernel/osrelease.
    pub kernel: String,
}

impl Machine {
    /// Reads the running machine's description; unreadable parts read "unknown".
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model_from_cpuinfo(&cpuinfo).unwrap_or_else(|| "unknown CPU".into()),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

/// The first `model name` value in /proc/cpuinfo text.
pub fn cpu_model_from_cpuinfo(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, nproc {}, kernel {}",
            self.cpu_model, self.nproc, self.kernel
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_name_is_the_first_processors() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n\
                       processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(
            cpu_model_from_cpuinfo(cpuinfo).as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(cpu_model_from_cpuinfo("processor : 0\n"), None);
    }
}
