//! Hostile clients against the `engine` binary as it runs by default (mimalloc, which asks
//! for transparent huge pages where the system allows them): a partial frame costs memory
//! only as its bytes arrive, on raw arpc and on WebSocket, as the engine's RSS shows.

// The raw-frame test client and the RSS helpers the engine tests use.
#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

use common::Client;
use ringrpc_protocol::{Frame, HEADER_LEN};

/// Connections that each start a large frame and stop.
const CONNS: usize = 200;
/// The body each declares: under the engine's default `--max-body` (64 MiB - 16).
const DECLARED_BODY: u32 = 60 << 20;
/// The bytes of that body each sends before it stops.
const SENT: usize = 8 * 1024;
/// The most the engine may grow per such connection.
const MAX_PER_CONN: u64 = 64 * 1024;

/// The engine binary on one core and an ephemeral port, killed when dropped.
struct Engine {
    child: Child,
    addr: SocketAddr,
}

impl Engine {
    fn start() -> Engine {
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(["--cores", "1", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn engine");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        Engine { child, addr }
    }

    fn rss(&self) -> u64 {
        common::rss_bytes(self.child.id())
    }

    /// Huge pages backing the engine's memory now (to show the measurement has them).
    fn anon_huge_kib(&self) -> u64 {
        let rollup =
            std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.child.id())).unwrap();
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("AnonHugePages:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The start of a Request declaring a body of [`DECLARED_BODY`], then [`SENT`] bytes of it.
fn large_frame_start() -> Vec<u8> {
    let mut wire = Frame::request(1, "/echo", Vec::new()).to_bytes().to_vec();
    wire[..4].copy_from_slice(&DECLARED_BODY.to_le_bytes());
    wire.resize(wire.len() + SENT, 0xab);
    wire
}

/// A WebSocket connection upgraded on the engine's port, ready for frames.
fn upgraded(addr: SocketAddr) -> TcpStream {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    sock.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        sock.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    sock
}

/// One masked (with a zero key) binary WebSocket frame header announcing `len` bytes.
fn ws_binary_header(len: usize) -> Vec<u8> {
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(len as u64).to_be_bytes());
    head.extend_from_slice(&[0; 4]);
    head
}

/// Opens [`CONNS`] connections with `open`, sends `start` on each, waits until the engine
/// has read every byte, and returns the engine's RSS growth per connection with the
/// connections (all still open) they were measured on.
fn growth_per_conn(
    engine: &Engine,
    open: impl Fn(SocketAddr) -> TcpStream,
    start: &[u8],
) -> (u64, Vec<TcpStream>) {
    let before = engine.rss();
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut sock = open(engine.addr);
        sock.write_all(start).unwrap();
        conns.push(sock);
    }
    let pairs: Vec<_> = conns
        .iter()
        .map(|s| (s.local_addr().unwrap(), engine.addr))
        .collect();
    common::wait_all_read(&pairs);
    // One more round trip: the reactor is past the reads it made.
    Client::connect(engine.addr).echo(2, b"sync");
    let grown = engine.rss().saturating_sub(before);
    // Still open (a refused frame would be closed and cost nothing): nothing to read yet.
    for sock in &conns {
        sock.set_nonblocking(true).unwrap();
        let err = (&*sock).read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    }
    (grown / CONNS as u64, conns)
}

#[test]
fn raw_arpc_partial_frames_cost_what_arrived() {
    let engine = Engine::start();
    let mut warm = Client::connect(engine.addr);
    warm.echo(1, b"warm up");
    let (per_conn, _conns) = growth_per_conn(
        &engine,
        |addr| TcpStream::connect(addr).unwrap(),
        &large_frame_start(),
    );
    eprintln!(
        "raw arpc: {per_conn} bytes of RSS per connection for {SENT} bytes of a \
         {DECLARED_BODY}-byte body (huge pages in use: {} KiB)",
        engine.anon_huge_kib()
    );
    assert!(
        per_conn <= MAX_PER_CONN,
        "raw arpc: RSS grew {per_conn} bytes per connection for {SENT} bytes received"
    );
    warm.echo(3, b"still serving");
}

#[test]
fn websocket_partial_frames_cost_what_arrived() {
    let engine = Engine::start();
    let mut warm = Client::from_stream(upgraded(engine.addr));
    let echo = Frame::request(1, "/echo", "warm up").to_bytes();
    let mut message = ws_binary_header(echo.len());
    message.extend_from_slice(&echo);
    warm.send_raw(&message);
    let mut reply = [0u8; 2];
    warm.sock.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], 0x82, "a binary message back");
    // The WebSocket frame announces the whole arpc frame; only its start follows.
    let arpc = large_frame_start();
    let mut start = ws_binary_header(HEADER_LEN + DECLARED_BODY as usize);
    start.extend_from_slice(&arpc);
    let (per_conn, _conns) = growth_per_conn(&engine, upgraded, &start);
    eprintln!(
        "websocket: {per_conn} bytes of RSS per connection for {SENT} bytes of a \
         {DECLARED_BODY}-byte body (huge pages in use: {} KiB)",
        engine.anon_huge_kib()
    );
    assert!(
        per_conn <= MAX_PER_CONN,
        "websocket: RSS grew {per_conn} bytes per connection for {SENT} bytes received"
    );
}
