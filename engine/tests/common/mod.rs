//! Helpers for loopback tests: a server on an ephemeral port and a raw-frame client, child
//! processes, and the fuzz corpora the replay tests read.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;
use std::time::Instant;

use bytes::BytesMut;
use ringrpc::{Config, RunningServer, Server};
use ringrpc_protocol::{Decoder, Frame};

/// Longest any test waits for a byte; a hang becomes a failure, never a stuck suite.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts a server with `cores` reactors on 127.0.0.1 with an ephemeral port.
pub fn start(cores: usize) -> RunningServer {
    start_with(Config::builder().cores(cores))
}

/// Starts a server from `builder` on 127.0.0.1 with an ephemeral port.
pub fn start_with(builder: ringrpc::ConfigBuilder) -> RunningServer {
    let config = builder.listen("127.0.0.1:0").build().expect("valid config");
    Server::builder()
        .config(config)
        .build()
        .expect("bind")
        .start()
        .expect("start")
}

/// A client speaking raw frames.
pub struct Client {
    pub sock: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            buf: BytesMut::new(),
        }
    }

    /// A client on an already connected socket (e.g. one with its own buffer sizes).
    pub fn from_stream(sock: TcpStream) -> Client {
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            buf: BytesMut::new(),
        }
    }

    pub fn send(&mut self, frame: &Frame) {
        self.sock.write_all(&frame.to_bytes()).expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write");
    }

    /// Reads the next frame; `Ok(None)` on a clean EOF.
    pub fn try_recv(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(f) = Decoder::default()
                .decode(&mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(Some(f));
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn recv(&mut self) -> Frame {
        self.try_recv().expect("read").expect("a frame before EOF")
    }

    /// One request, one response: asserts it is the matching, successful echo.
    pub fn echo(&mut self, seq: u64, payload: &[u8]) {
        self.send(&Frame::request(seq, "/echo", payload.to_vec()));
        let f = self.recv();
        assert_eq!(f.header.seq, seq);
        assert!(
            !f.is_error(),
            "error response: {:?}",
            String::from_utf8_lossy(&f.payload)
        );
        assert_eq!(&f.payload[..], payload);
    }

    /// Asserts the server closed this connection (EOF or reset), with no frame first.
    pub fn expect_closed(&mut self) {
        match self.try_recv() {
            Ok(None) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) => {}
            other => panic!("expected the server to close the connection, got {other:?}"),
        }
    }
}

/// Whether `tool` is on PATH. Without it a test that needs it is skipped with a note, or
/// fails where `RINGRPC_REQUIRE_CLUSTER_TOOLS=1` (CI, which installs it).
pub fn have_tool(tool: &str) -> bool {
    let found = Process::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("RINGRPC_REQUIRE_CLUSTER_TOOLS").as_deref() == Ok("1") {
            panic!(
                "{tool} is not installed and RINGRPC_REQUIRE_CLUSTER_TOOLS=1: apt-get install -y {tool}"
            );
        }
        eprintln!("skipped: {tool} is not installed (apt-get install -y {tool})");
    }
    found
}

/// The fuzz corpus of `target` (`fuzz/corpus/TARGET`).
pub fn corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every file of `target`'s corpus as (name, bytes), in name order.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("a readable corpus file"))
        })
        .collect()
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A nats-server on 127.0.0.1:`port`, once it accepts connections.
pub fn start_nats(port: u16) -> Proc {
    let mut child = Process::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("nats-server exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// Resident memory of process `pid`, in bytes, counted from its page tables now
/// (`smaps_rollup`; `status`'s `VmRSS` may lag by the pages its threads touched lately).
pub fn rss_bytes(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kib: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// `/proc/net/tcp`'s queues: (local, remote) in its hex form → (tx_queue, rx_queue).
fn tcp_queues() -> std::collections::HashMap<(String, String), (u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // Fields: sl, local, remote, state, tx_queue:rx_queue, ...
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (tx, rx) = f.get(4)?.split_once(':')?;
            let q = (
                u64::from_str_radix(tx, 16).ok()?,
                u64::from_str_radix(rx, 16).ok()?,
            );
            Some(((f.get(1)?.to_string(), f.get(2)?.to_string()), q))
        })
        .collect()
}

/// An IPv4 address as `/proc/net/tcp` writes it.
fn proc_hex(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("the test listens on IPv4 loopback"),
    }
}

/// What the kernel holds of the loopback connection `client` → `server`: bytes the client
/// has not sent yet and bytes the server has not read yet (`None` while it is not listed).
pub fn kernel_queues(client: SocketAddr, server: SocketAddr) -> (Option<u64>, Option<u64>) {
    let (c, s) = (proc_hex(client), proc_hex(server));
    let queues = tcp_queues();
    (
        queues.get(&(c.clone(), s.clone())).map(|q| q.0),
        queues.get(&(s, c)).map(|q| q.1),
    )
}

/// Waits until every loopback connection `(client, server)` has nothing queued in either
/// direction's kernel buffers: no unsent byte at the client, no unread byte at the server.
pub fn wait_all_read(pairs: &[(SocketAddr, SocketAddr)]) {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|&(c, s)| (proc_hex(c), proc_hex(s)))
        .collect();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let queues = tcp_queues();
        let pending = pairs.iter().find_map(|(c, s)| {
            let client_unsent = queues.get(&(c.clone(), s.clone())).map(|q| q.0);
            let server_unread = queues.get(&(s.clone(), c.clone())).map(|q| q.1);
            (client_unsent != Some(0) || server_unread != Some(0))
                .then_some((client_unsent, server_unread))
        });
        let Some((client_unsent, server_unread)) = pending else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "the server did not read what was sent: client unsent {client_unsent:?}, server unread {server_unread:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
