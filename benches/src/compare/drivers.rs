//! `compare --drivers`: each server row measured by each of loadgen's TCP drivers (`uring`,
//! `epoll`), so every cell is seen by two differently shaped clients.
//!
//! Invariants: with one driver the rows keep the servers' names (and the outputs their old
//! shape); with several, a row is named `SERVER@DRIVER` and is compared only with rows of the
//! same driver (its floor is `FLOOR@DRIVER`, see [`same_driver`]); a server loadgen cannot
//! drive with a driver (gRPC, UDP: loadgen runs those on tokio and its UDP loop, and refuses
//! `--driver epoll` for them) is measured under `uring` alone.

use std::fmt;

use super::servers::ServerSpec;

/// One of loadgen's TCP drivers (`loadgen --driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring: multishot recv, one vectored send per connection per turn.
    Uring,
    /// Non-blocking sockets on an epoll loop, one vectored write per connection per readiness.
    Epoll,
}

/// `--drivers` without `--matrix`: the single table keeps its one client.
pub const DEFAULT_DRIVERS: &str = "uring";
/// `--drivers` with `--matrix`: both clients (the matrix is run by hand, never in CI).
pub const DEFAULT_MATRIX_DRIVERS: &str = "uring,epoll";

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Comma-separated drivers, in the order given, without repeats.
pub fn parse_drivers(text: &str) -> Result<Vec<Driver>, String> {
    let mut drivers = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let driver = match item {
            "uring" => Driver::Uring,
            "epoll" => Driver::Epoll,
            other => {
                return Err(format!(
                    "--drivers {other:?}: loadgen's TCP drivers are uring and epoll"
                ));
            }
        };
        if !drivers.contains(&driver) {
            drivers.push(driver);
        }
    }
    if drivers.is_empty() {
        return Err("--drivers names no driver: give uring, epoll or both".into());
    }
    Ok(drivers)
}

/// Whether loadgen can drive `spec` with any driver (arpc over TCP), not only its default.
fn takes_any_driver(spec: &ServerSpec) -> bool {
    !spec
        .loadgen_args
        .windows(2)
        .any(|w| w == ["--proto", "grpc"] || w == ["--transport", "udp"])
}

/// The rows to run: every server under every driver, in server order, drivers within each;
/// plus a note for each server left out under a driver that cannot drive it.
pub fn expand(servers: &[ServerSpec], drivers: &[Driver]) -> (Vec<ServerSpec>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for spec in servers {
        for &driver in drivers {
            if driver != Driver::Uring && !takes_any_driver(spec) {
                notes.push(format!(
                    "{}: not run with --driver {driver} (loadgen drives it its own way)",
                    spec.name
                ));
                continue;
            }
            let mut row = spec.clone();
            if drivers.len() > 1 {
                row.name = format!("{}@{driver}", spec.name);
            }
            if driver != Driver::Uring {
                row.loadgen_args.extend(["--driver", driver.name()]);
            }
            rows.push(row);
        }
    }
    (rows, notes)
}

/// The row of server `base` measured by the same driver as `row`: `peer-reflect` for
/// `engine`, `peer-reflect@epoll` for `engine@epoll`.
pub fn same_driver(base: &str, row: &str) -> String {
    match row.rsplit_once('@') {
        Some((_, driver)) => format!("{base}@{driver}"),
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::servers::bundled_servers;

    #[test]
    fn drivers_parse_in_order_without_repeats() {
        assert_eq!(
            parse_drivers("epoll, uring,epoll"),
            Ok(vec![Driver::Epoll, Driver::Uring])
        );
        assert!(
            parse_drivers("kqueue")
                .unwrap_err()
                .contains("uring and epoll")
        );
        assert!(parse_drivers(" , ").is_err());
    }

    #[test]
    fn one_driver_keeps_names_several_suffix_them_and_skip_what_they_cannot_drive() {
        let servers = bundled_servers();
        let (rows, notes) = expand(&servers, &[Driver::Uring]);
        assert_eq!(rows, servers);
        assert!(notes.is_empty());

        let (rows, notes) = expand(&servers, &[Driver::Uring, Driver::Epoll]);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names[..2], ["engine@uring", "engine@epoll"]);
        assert!(names.contains(&"grpc-echo@uring"));
        assert!(!names.contains(&"grpc-echo@epoll"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(rows[1].loadgen_args.ends_with(&["--driver", "epoll"]));
        assert!(!rows[0].loadgen_args.contains(&"--driver"));

        let (rows, _) = expand(&servers, &[Driver::Epoll]);
        assert_eq!(rows[0].name, "engine");
        assert!(rows[0].loadgen_args.ends_with(&["--driver", "epoll"]));
    }

    #[test]
    fn the_floor_of_a_row_is_measured_by_the_same_driver() {
        assert_eq!(same_driver("peer-reflect", "engine"), "peer-reflect");
        assert_eq!(
            same_driver("peer-reflect", "engine@epoll"),
            "peer-reflect@epoll"
        );
    }
}
