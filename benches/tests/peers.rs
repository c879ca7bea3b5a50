//! Loopback tests of the peer servers: the engine's raw-byte arpc echo checks, run against
//! peer-tokio and peer-tokio-uring, and a tonic client against grpc-echo.
//!
//! Every read has a timeout and every child process is killed when its guard drops, so a
//! broken peer fails a test instead of hanging the suite.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringrpc_benches::echo_service::METHOD_NOT_FOUND;
use ringrpc_benches::grpc::EchoRequest;
use ringrpc_benches::grpc::echo_client::EchoClient;
use ringrpc_protocol::{Command, Decoder, Flags, Frame};

/// Longest any test waits for a byte or for a peer to start.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

const PEER_TOKIO: &str = env!("CARGO_BIN_EXE_peer-tokio");
const PEER_TOKIO_URING: &str = env!("CARGO_BIN_EXE_peer-tokio-uring");
const GRPC_ECHO: &str = env!("CARGO_BIN_EXE_grpc-echo");
const PEER_UDP_REFLECT: &str = env!("CARGO_BIN_EXE_peer-udp-reflect");
const PEER_REFLECT: &str = env!("CARGO_BIN_EXE_peer-reflect");

#[test]
fn peer_reflect_writes_every_byte_back_in_order() {
    let peer = RunningPeer::start(PEER_REFLECT);
    // Bytes that are no arpc frame come back too: it never decodes.
    let mut small = TcpStream::connect(peer.addr).unwrap();
    small.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    small.write_all(b"not a frame at all").unwrap();
    let mut back = [0u8; 18];
    small.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"not a frame at all");

    // 4 MiB written while nothing is read: the socket buffers fill both ways, the reflector
    // keeps what it cannot send and stops reading; reading it all back must still see every
    // byte in order. A second connection meanwhile is served as usual.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let stream = TcpStream::connect(peer.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = big.clone();
    let writing = thread::spawn(move || writer.write_all(&sent));
    thread::sleep(Duration::from_millis(200));
    small.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    small.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
    let mut received = vec![0u8; big.len()];
    (&stream).read_exact(&mut received).unwrap();
    writing.join().unwrap().unwrap();
    assert!(
        received == big,
        "the reflected bytes differ from those sent"
    );

    // A closed connection is dropped, and others are accepted after it.
    drop(stream);
    let mut again = TcpStream::connect(peer.addr).unwrap();
    again.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let frame = Frame::request(9, &b"/echo"[..], &b"hi"[..]).to_bytes();
    again.write_all(&frame).unwrap();
    let mut back = vec![0u8; frame.len()];
    again.read_exact(&mut back).unwrap();
    assert_eq!(back, frame[..]);
}

#[test]
fn peer_udp_reflect_writes_every_datagram_back_byte_for_byte() {
    let peer = RunningPeer::start(PEER_UDP_REFLECT);
    let frame = Frame::request(7, &b"/echo"[..], &b"hello"[..]).to_bytes();
    let datagrams: [Vec<u8>; 6] = [
        frame.to_vec(),
        Vec::new(),
        b"not a frame at all".to_vec(),
        (0..1472).map(|i: u32| (i % 251) as u8).collect(),
        (0..65_507).map(|i: u32| (i % 241) as u8).collect(),
        frame[..10].to_vec(),
    ];
    // Two senders: each gets back only its own datagrams.
    let sockets: Vec<std::net::UdpSocket> = (0..2)
        .map(|_| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(peer.addr).unwrap();
            socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            socket
        })
        .collect();
    let mut buf = vec![0u8; 65_536];
    for (i, datagram) in datagrams.iter().enumerate() {
        let socket = &sockets[i % 2];
        socket.send(datagram).unwrap();
        let n = socket.recv(&mut buf).expect("the reflector answers");
        assert!(
            buf[..n] == datagram[..],
            "datagram {i} ({} bytes) came back as {n} different bytes",
            datagram.len()
        );
    }
}

#[test]
fn loadgen_reflect_over_udp_against_peer_udp_reflect_succeeds() {
    use clap::Parser;
    let peer = RunningPeer::start(PEER_UDP_REFLECT);
    let target = peer.addr.to_string();
    let cli = ringrpc_loadgen::Cli::try_parse_from([
        "loadgen",
        "--target",
        &target,
        "--transport",
        "udp",
        "--reflect",
        // No resend within any delay a loaded CI machine causes on loopback, so a duplicate
        // could only come from the peer.
        "--udp-retry-after",
        "2s",
        "--conns",
        "4",
        "--per-conn",
        "8",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--quiet",
    ])
    .unwrap();
    let report = ringrpc_loadgen::run(&ringrpc_loadgen::Config::from_cli(cli).unwrap()).unwrap();
    assert!(report.success, "{:?}", report.failures);
    let n = &report.counts;
    assert!(n.answered > 0 && n.answered == n.sent, "{n:?}");
    assert_eq!((n.lost, n.duplicates, n.unexpected), (0, 0, 0), "{n:?}");
}

#[test]
fn peer_tokio_passes_the_arpc_echo_checks() {
    run_arpc_echo_checks(PEER_TOKIO);
}

#[test]
fn peer_tokio_uring_passes_the_arpc_echo_checks() {
    run_arpc_echo_checks(PEER_TOKIO_URING);
}

#[test]
fn grpc_echo_replies_with_the_request_payload() {
    let peer = RunningPeer::start(GRPC_ECHO);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let calls = async {
            let mut client = EchoClient::connect(format!("http://{}", peer.addr))
                .await
                .expect("connect to grpc-echo");
            let payloads: [Bytes; 4] = [
                Bytes::new(),
                Bytes::from_static(b"hello"),
                (0..64 * 1024).map(|i: u32| (i % 251) as u8).collect(),
                Bytes::from(vec![0xA5; 1 << 20]),
            ];
            for payload in payloads {
                let reply = client
                    .echo(EchoRequest {
                        payload: payload.clone(),
                    })
                    .await
                    .expect("echo call")
                    .into_inner();
                assert!(
                    reply.payload == payload,
                    "{}-byte payload came back changed",
                    payload.len()
                );
            }
        };
        tokio::time::timeout(IO_TIMEOUT, calls)
            .await
            .expect("grpc-echo answered in time");
    });
}

/// One check of the arpc echo contract, run against a peer's address.
type Check = fn(SocketAddr);

/// The engine's raw-byte echo checks (engine/tests/echo.rs), for any peer.
const ARPC_ECHO_CHECKS: &[(&str, Check)] = &[
    ("golden bytes", one_echo_matches_the_golden_bytes),
    ("async flag", async_flag_is_echoed),
    (
        "pipelining",
        two_thousand_pipelined_requests_over_four_connections,
    ),
    ("one byte at a time", frames_written_one_byte_at_a_time),
    ("1 MiB payload", one_mebibyte_payload),
    ("ping", ping_gets_pong),
    (
        "unknown method",
        unknown_method_gets_an_error_and_the_connection_keeps_working,
    ),
    ("notify", notify_gets_no_response),
    ("decode error", unknown_command_closes_only_that_connection),
];

/// Starts the peer at `binary` once and runs every check against it.
fn run_arpc_echo_checks(binary: &str) {
    let peer = RunningPeer::start(binary);
    for (name, check) in ARPC_ECHO_CHECKS {
        eprintln!("{binary}: {name}");
        check(peer.addr);
    }
}

fn one_echo_matches_the_golden_bytes(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    // arpc's captured request `/echo` "hello" seq 2, and its response.
    c.send_raw(&hex(
        "0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f",
    ));
    assert_eq!(
        c.recv().to_bytes()[..],
        hex("0a000000 00 02 00 05 0200000000000000 2f6563686f 68656c6c6f")[..]
    );
}

fn async_flag_is_echoed(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    c.send_raw(&hex(
        "07000000 00 01 02 05 0700000000000000 2f6563686f 6869",
    ));
    let f = c.recv();
    assert_eq!(f.header.cmd, Command::Response);
    assert_eq!(f.header.seq, 7);
    assert_eq!(f.header.flags, Flags(Flags::ASYNC));
    assert_eq!(&f.payload[..], b"hi");
}

fn two_thousand_pipelined_requests_over_four_connections(addr: SocketAddr) {
    const CONNS: u64 = 4;
    const PER_CONN: u64 = 2_000 / CONNS;
    let workers: Vec<_> = (0..CONNS)
        .map(|conn| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let payload = |seq: u64| format!("conn {conn} request {seq}").into_bytes();
                // Everything is written before anything is read: true pipelining.
                let mut wire = BytesMut::new();
                for seq in 0..PER_CONN {
                    Frame::request(seq, "/echo", payload(seq)).encode_to(&mut wire);
                }
                let writer = c.write_in_background(wire.freeze());
                for seq in 0..PER_CONN {
                    let f = c.recv();
                    assert_eq!(f.header.cmd, Command::Response);
                    assert_eq!(
                        f.header.seq, seq,
                        "responses come back in order on one connection"
                    );
                    assert_eq!(f.payload, payload(seq));
                }
                writer.join().unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

fn frames_written_one_byte_at_a_time(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    let mut wire = Vec::new();
    for seq in 0..3u64 {
        wire.extend_from_slice(&Frame::request(seq, "/echo", vec![seq as u8; 20]).to_bytes());
    }
    wire.extend_from_slice(&Frame::ping().to_bytes());
    for b in &wire {
        c.send_raw(std::slice::from_ref(b));
    }
    for seq in 0..3u64 {
        let f = c.recv();
        assert_eq!(f.header.seq, seq);
        assert_eq!(&f.payload[..], &vec![seq as u8; 20][..]);
    }
    assert_eq!(c.recv().header.cmd, Command::Pong);
}

fn one_mebibyte_payload(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let writer = c.write_in_background(Frame::request(77, "/echo", payload.clone()).to_bytes());
    let f = c.recv();
    writer.join().unwrap();
    assert_eq!(f.header.seq, 77);
    assert!(f.payload == payload, "1 MiB payload came back changed");
    c.echo(78, b"still fine");
}

fn ping_gets_pong(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    c.send_raw(&hex("00000000 00 04 00 00 0000000000000000"));
    assert_eq!(
        c.recv().to_bytes()[..],
        hex("00000000 00 05 00 00 0000000000000000")[..]
    );
}

fn unknown_method_gets_an_error_and_the_connection_keeps_working(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    c.send(&Frame::request(5, "/fail", "x"));
    let f = c.recv();
    assert!(f.is_error());
    assert_eq!(f.header.seq, 5);
    assert_eq!(&f.method[..], b"/fail");
    assert_eq!(&f.payload[..], METHOD_NOT_FOUND.as_bytes());
    c.echo(6, b"after the error");
}

fn notify_gets_no_response(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    c.send(&Frame::notify(1, "/echo", "one-way"));
    c.send(&Frame::notify(2, "/unknown", "one-way"));
    // The next frame to arrive must be the answer to this request, not to the notifies.
    c.echo(3, b"two-way");
}

fn unknown_command_closes_only_that_connection(addr: SocketAddr) {
    let mut good = Client::connect(addr);
    good.echo(1, b"before");
    let mut bad = Client::connect(addr);
    bad.echo(1, b"fine so far");
    bad.send_raw(&hex("00000000 00 07 00 00 0000000000000000"));
    bad.expect_closed();
    good.echo(2, b"unaffected");
}

/// A peer server child process, killed when this guard drops (panics included).
struct RunningPeer {
    child: Child,
    addr: SocketAddr,
}

impl RunningPeer {
    /// Starts `binary` on an ephemeral loopback port with two threads and waits for its
    /// `<name> listening on <addr>` line.
    fn start(binary: &str) -> RunningPeer {
        let mut child = Process::new(binary)
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut peer = RunningPeer {
            child,
            // Replaced below; the guard exists first so a failed start still kills the child.
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        // Read on a thread so a peer that never announces fails after IO_TIMEOUT.
        let (line_tx, line_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = line_tx.send(read);
        });
        let line = line_rx
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|_| panic!("{binary} did not announce its address in time"))
            .expect("read the peer's stdout");
        let (_name, addr) = line
            .trim_end()
            .split_once(" listening on ")
            .unwrap_or_else(|| panic!("{binary} printed {line:?}, not a listening line"));
        peer.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("{binary} announced {addr:?}: {e}"));
        peer
    }
}

impl Drop for RunningPeer {
    fn drop(&mut self) {
        // Already exited is fine; what matters is that nothing outlives the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client speaking raw arpc frames over a blocking socket.
struct Client {
    sock: TcpStream,
    buf: BytesMut,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, frame: &Frame) {
        self.send_raw(&frame.to_bytes());
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write");
    }

    /// Writes `bytes` from another thread, so large writes cannot deadlock against responses
    /// the server is waiting to send.
    fn write_in_background(&self, bytes: Bytes) -> thread::JoinHandle<()> {
        let mut sock = self.sock.try_clone().unwrap();
        thread::spawn(move || sock.write_all(&bytes).expect("background write"))
    }

    /// Reads the next frame; `Ok(None)` on a clean EOF.
    fn try_recv(&mut self) -> io::Result<Option<Frame>> {
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

    fn recv(&mut self) -> Frame {
        self.try_recv().expect("read").expect("a frame before EOF")
    }

    /// One request, one response: asserts it is the matching, successful echo.
    fn echo(&mut self, seq: u64, payload: &[u8]) {
        self.send(&Frame::request(seq, "/echo", payload.to_vec()));
        let f = self.recv();
        assert_eq!(f.header.cmd, Command::Response);
        assert_eq!(f.header.seq, seq);
        assert!(
            !f.is_error(),
            "error response: {:?}",
            String::from_utf8_lossy(&f.payload)
        );
        assert_eq!(&f.payload[..], payload);
    }

    /// Asserts the server closed this connection (EOF or reset), with no frame first.
    fn expect_closed(&mut self) {
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

/// Bytes from hex digits, ignoring whitespace (used to space out header fields).
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
