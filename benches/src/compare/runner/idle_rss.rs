//! Idle memory of a server ([`Runner::idle_rss`]): its RSS and descriptors before and after
//! `connections` connections that each made one small call and then stay open and idle.
//!
//! Invariant: both RSS readings are taken once RSS has settled (or its settling time ran out),
//! with transparent huge pages off for the server, so the figure per connection is not
//! rounded by 2 MiB pages.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ringrpc_protocol::{DEFAULT_MAX_BODY, Frame, HEADER_LEN, frame_len};

use super::{REQUEST_TIMEOUT, Runner};
use crate::compare::idle::{IdleFigures, IdleOutcome, IdleRss, Prelude, settled, vm_rss_bytes};
use crate::compare::process::stop;
use crate::compare::servers::{Launch, ServerSpec};

/// How often an idle server's RSS is read while it settles.
const RSS_POLL: Duration = Duration::from_millis(250);
/// Readings in a row that must agree before RSS counts as settled.
const RSS_WINDOW: usize = 4;
/// Longest wait for RSS to settle; the last reading is taken after it.
const RSS_SETTLE_LIMIT: Duration = Duration::from_secs(15);

impl Runner {
    /// Starts `spec`, measures its RSS, opens `connections` connections that each make one
    /// small call (see [`Prelude`]) and stay idle, measures again once RSS settles, then
    /// closes them and stops the server.
    pub fn idle_rss(&self, spec: &ServerSpec, connections: usize, server_log: &Path) -> IdleRss {
        let grpc = spec
            .loadgen_args
            .windows(2)
            .any(|w| w == ["--proto", "grpc"]);
        let prelude = if grpc {
            Prelude::Http2Handshake
        } else {
            Prelude::ArpcEcho
        };
        let outcome = match self.measure_idle(spec, connections, prelude, server_log) {
            Ok(figures) => IdleOutcome::Measured(figures),
            Err(failure) => IdleOutcome::Failed { failure },
        };
        IdleRss {
            server: spec.name.clone(),
            connections,
            prelude,
            outcome,
        }
    }

    fn measure_idle(
        &self,
        spec: &ServerSpec,
        connections: usize,
        prelude: Prelude,
        server_log: &Path,
    ) -> Result<IdleFigures, String> {
        if matches!(spec.launch, Launch::BundledUdp { .. }) {
            return Err("a UDP server holds no connections".into());
        }
        if !matches!(
            spec.launch,
            Launch::Bundled { .. } | Launch::External { .. }
        ) {
            return Err("idle memory is measured over plaintext TCP connections".into());
        }
        // Huge pages off for the server (it keeps the setting across exec): its RSS then grows
        // in 4 KiB pages, so the figure per connection is not rounded by where 2 MiB pages
        // happen to fall (at 10,000 connections one such page is 210 bytes per connection).
        let thp_was_off = ringrpc_uring::sys::thp_disabled().unwrap_or(false);
        ringrpc_uring::sys::set_thp_disabled(true)
            .map_err(|e| format!("cannot turn transparent huge pages off: {e}"))?;
        let started = self.start_server(spec, server_log);
        ringrpc_uring::sys::set_thp_disabled(thp_was_off)
            .map_err(|e| format!("cannot restore transparent huge pages: {e}"))?;
        let mut server = started?;
        let pid = server.child.id();
        let addr = server.addr.ok_or("the server has no TCP address")?;
        let measured = (|| {
            let before = settled_rss(pid)?;
            let fds_before = open_fds(pid);
            let mut open = Vec::with_capacity(connections);
            for i in 0..connections {
                let stream = open_idle_connection(addr, prelude, i as u64)
                    .map_err(|e| format!("connection {} of {connections}: {e}", i + 1))?;
                open.push(stream);
            }
            let after = settled_rss(pid)?;
            let fds_gained = match (fds_before, open_fds(pid)) {
                (Some(a), Some(b)) => Some(b as i64 - a as i64),
                _ => None,
            };
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("server exited ({status}) holding idle connections"));
            }
            drop(open);
            Ok(IdleFigures::new(before, after, connections, fds_gained))
        })();
        let stopped = stop(&mut server.child);
        let figures = measured?;
        stopped?;
        Ok(figures)
    }
}

/// The server's RSS once [`RSS_WINDOW`] readings in a row agree within 64 KiB.
fn settled_rss(pid: u32) -> Result<u64, String> {
    let deadline = Instant::now() + RSS_SETTLE_LIMIT;
    let mut readings = Vec::new();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
        let rss =
            vm_rss_bytes(&status).ok_or_else(|| format!("/proc/{pid}/status has no VmRSS line"))?;
        readings.push(rss);
        if settled(&readings, RSS_WINDOW, 64 * 1024) || Instant::now() >= deadline {
            return Ok(rss);
        }
        thread::sleep(RSS_POLL);
    }
}

/// Descriptors the process holds, if /proc lets us count them.
fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count())
}

/// A connection to `addr` that has done `prelude` and is now idle.
fn open_idle_connection(addr: SocketAddr, prelude: Prelude, seq: u64) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_nodelay(true)?;
    match prelude {
        Prelude::ArpcEcho => {
            let request = Frame::request(seq + 1, &b"/echo"[..], vec![b'i'; 32]).to_bytes();
            stream.write_all(&request)?;
            let mut head = [0u8; HEADER_LEN];
            stream.read_exact(&mut head)?;
            let len = frame_len(&head, DEFAULT_MAX_BODY)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
            let mut rest = vec![0u8; len - HEADER_LEN];
            stream.read_exact(&mut rest)?;
        }
        Prelude::Http2Handshake => {
            // Client preface, then an empty SETTINGS frame.
            stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")?;
            stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])?;
            // The server's SETTINGS (type 4) comes first; acknowledge it.
            let mut head = [0u8; 9];
            stream.read_exact(&mut head)?;
            if head[3] != 4 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the server's first HTTP/2 frame is type {}, not SETTINGS",
                        head[3]
                    ),
                ));
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload)?;
            stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])?;
        }
    }
    Ok(stream)
}
