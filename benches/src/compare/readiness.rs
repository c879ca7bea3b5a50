//! When a started server is ready: its `listening on ADDR` announcement on stdout (bundled
//! servers pick their own port), a TCP (or Unix socket) connect that succeeds, or an
//! answered arpc datagram (UDP servers, which are given a free port).
//!
//! Invariant: every wait ends within [`READY_TIMEOUT`], or as soon as the server exits, with
//! a message that says which.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringrpc_protocol::Frame;

/// How long a server may take to start listening.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies `source` line by line into `log`, and sends each line on the returned channel.
pub(crate) fn forward_lines(
    source: impl Read + Send + 'static,
    mut log: File,
) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            // The receiver stops listening once the address is known; keep draining anyway
            // so the server never blocks on a full pipe.
            let _ = sender.send(line);
        }
    });
    receiver
}

/// The address in a `... listening on ADDR ...` line.
pub fn announced_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

pub(crate) fn wait_for_announcement(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(addr) = announced_address(&line) {
                    return Ok(addr);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(exit_reason(
                    child,
                    "closed its stdout without announcing an address",
                ));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("server exited ({status}) before listening"));
        }
    }
    Err(format!(
        "server printed no \"listening on\" line within {READY_TIMEOUT:?}"
    ))
}

pub(crate) fn wait_until_accepting(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "server exited ({status}) before accepting on {addr}"
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "server did not accept TCP connections on {addr} within {READY_TIMEOUT:?}"
    ))
}

/// Waits until the server's Unix socket at `path` accepts connections.
pub(crate) fn wait_until_accepting_unix(child: &mut Child, path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "server exited ({status}) before accepting on {}",
                path.display()
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "server did not accept connections on {} within {READY_TIMEOUT:?}",
        path.display()
    ))
}

/// Waits until the server at `addr` answers an arpc `/echo` request datagram with any
/// datagram (the engine's response, or a reflector's copy of the request).
pub(crate) fn wait_until_answering_udp(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let probe = UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| {
            socket.connect(addr)?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(socket)
        })
        .map_err(|e| format!("cannot open a UDP probe socket: {e}"))?;
    let request = Frame::request(1, &b"/echo"[..], &b"ready?"[..]).to_bytes();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "server exited ({status}) before answering on UDP {addr}"
            ));
        }
        // Refused sends and receives (nothing bound yet) just mean "not yet".
        let _ = probe.send(&request);
        if probe.recv(&mut buf).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "server did not answer an arpc request datagram on UDP {addr} within {READY_TIMEOUT:?}"
    ))
}

/// A UDP port that was free a moment ago.
pub(crate) fn free_udp_port() -> Result<u16, String> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free UDP port: {e}"))
}

fn exit_reason(child: &mut Child, otherwise: &str) -> String {
    // Give a dying process a moment so its exit status can be reported.
    thread::sleep(Duration::from_millis(100));
    match child.try_wait() {
        Ok(Some(status)) => format!("server exited ({status}) before listening"),
        _ => format!("server {otherwise}"),
    }
}

/// A port that was free a moment ago, for a server that cannot be told to pick its own.
pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_servers_announcement() {
        assert_eq!(
            announced_address("engine listening on 127.0.0.1:4242 with 1 cores (methods: /echo)"),
            Some("127.0.0.1:4242".parse().unwrap())
        );
        assert_eq!(
            announced_address("peer-tokio listening on 127.0.0.1:5000"),
            Some("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(announced_address("starting up"), None);
    }
}
