//! Tests of the `engine` binary: serving, signals, and startup errors that name the fix.

// The raw-frame test client the engine tests use.
#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;
use ringrpc_protocol::Frame;

fn engine(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the binary and reads the address from its "listening on" line.
fn start(args: &[&str]) -> (Child, SocketAddr, BufReader<std::process::ChildStdout>) {
    spawn_and_read_addr(engine(args))
}

/// Spawns `cmd` (an engine, perhaps behind a wrapper) and reads the address it announces.
fn spawn_and_read_addr(
    mut cmd: Command,
) -> (Child, SocketAddr, BufReader<std::process::ChildStdout>) {
    let mut child = cmd.spawn().expect("spawn engine");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    (child, addr, out)
}

/// Everything the (exited) child wrote to stderr.
fn stderr_text(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("engine did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failed_start(args: &[&str]) -> String {
    let out = engine(args).output().unwrap();
    assert!(
        !out.status.success(),
        "engine {args:?} should fail to start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("engine: error:"), "{stderr}");
    stderr
}

#[test]
fn serves_echo_and_exits_cleanly_on_sigterm_with_totals() {
    let (mut child, addr, mut out) = start(&["--cores", "2", "--listen", "127.0.0.1:0"]);
    let mut c = Client::connect(addr);
    for seq in 0..10 {
        c.echo(seq, format!("payload {seq}").as_bytes());
    }
    c.send(&Frame::ping());
    assert_eq!(c.recv().header.cmd, ringrpc_protocol::Command::Pong);
    signal(&child, "-TERM");
    // The open connection is closed by the server, after everything was answered.
    assert!(c.try_recv().unwrap().is_none());
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("core 0:") && rest.contains("core 1:"),
        "per-core totals missing: {rest}"
    );
    let total = rest
        .lines()
        .find(|l| l.trim_start().starts_with("total:"))
        .expect("a total line");
    assert!(total.contains("10 requests"), "{total}");
    assert!(total.contains("frames/send"), "{total}");
}

#[test]
fn serves_echo_async_from_an_async_task() {
    let (mut child, addr, _out) = start(&["--cores", "1", "--listen", "127.0.0.1:0"]);
    let mut c = Client::connect(addr);
    for seq in 0..5u64 {
        let payload = format!("async {seq}");
        c.send(&Frame::request(seq, "/echo/async", payload.clone()));
        let answer = c.recv();
        assert_eq!(
            (answer.header.seq, &answer.payload[..]),
            (seq, payload.as_bytes())
        );
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn sigint_also_drains_and_exits_zero() {
    let (mut child, addr, _out) = start(&["--cores", "1", "--listen", "127.0.0.1:0"]);
    Client::connect(addr).echo(1, b"x");
    signal(&child, "-INT");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn more_cores_than_cpus_still_runs_with_a_warning() {
    let (mut child, addr, _out) = start(&["--cores", "8", "--listen", "127.0.0.1:0"]);
    Client::connect(addr).echo(1, b"x");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    let err = stderr_text(&mut child);
    let cpus = std::thread::available_parallelism().unwrap().get();
    if cpus < 8 {
        assert!(err.contains("reactors will share CPUs"), "{err}");
    }
}

#[test]
fn address_in_use_names_the_cause_and_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = failed_start(&["--cores", "1", "--listen", &addr]);
    assert!(err.contains("already in use"), "{err}");
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn a_second_engine_on_the_same_port_is_refused_not_joined() {
    let (mut first, addr, _out) = start(&["--cores", "1", "--listen", "127.0.0.1:0"]);
    let err = failed_start(&["--cores", "1", "--listen", &addr.to_string()]);
    assert!(err.contains("already in use"), "{err}");
    signal(&first, "-TERM");
    assert!(wait_exit(&mut first, Duration::from_secs(15)).success());
}

#[test]
fn bad_settings_are_refused_with_the_allowed_range() {
    assert!(
        failed_start(&["--ring-entries", "1000", "--listen", "127.0.0.1:0"])
            .contains("power of two")
    );
    assert!(failed_start(&["--buffers", "3", "--listen", "127.0.0.1:0"]).contains("power of two"));
    assert!(failed_start(&["--listen", "not-an-address"]).contains("invalid listen address"));
    let err = failed_start(&["--listen", ":99999"]);
    assert!(err.contains("out of range (0–65535)"), "{err}");
    let err = failed_start(&["--max-body", "0", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("max_body must be 1..="), "{err}");
    assert!(err.contains("--max-body"), "the flag is named: {err}");
    assert!(failed_start(&["--listen", "192.0.2.1:0"]).contains("not assigned to this machine"));
}

#[test]
fn sizes_take_units_as_help_says() {
    let (mut child, addr, _out) = start(&[
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--max-body",
        "1MiB",
        "--stream-queue-bytes",
        "256k",
        "--max-send-queue-bytes",
        "4 MiB",
        "--recv-buffer-size",
        "8KiB",
    ]);
    Client::connect(addr).echo(1, b"x");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    let err = bad_argument(&["--max-body", "1.5MiB"]);
    assert!(err.contains("--max-body"), "{err}");
    assert!(err.contains("whole number of bytes"), "{err}");
    let err = bad_argument(&["--max-body", "4GiB"]);
    assert!(err.contains("too large"), "{err}");
}

/// Refused by the argument parser: a message naming the flag and what it takes.
fn bad_argument(args: &[&str]) -> String {
    let out = engine(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "engine {args:?} should be refused"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn negative_and_zero_counts_are_named_not_taken_for_flags() {
    for (args, want) in [
        (&["--cores", "-1"][..], "must be a positive integer, got -1"),
        (&["--cores", "0"], "must be a positive integer, got 0"),
        (
            &["--max-in-flight-per-conn", "-5"],
            "must not be negative, got -5",
        ),
        (&["--idle-timeout", "-1"], "non-negative number of seconds"),
        (&["--recv-buffers", "ten"], "must be a whole number"),
    ] {
        let err = bad_argument(args);
        assert!(err.contains(args[0]), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

#[test]
fn old_flag_spellings_still_work() {
    let (mut child, addr, _out) = start(&[
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--buffers",
        "64",
        "--buffer-size",
        "8192",
        "--max-send-queue",
        "65536",
        "--max-in-flight",
        "16",
        "--stats",
        "60",
    ]);
    Client::connect(addr).echo(1, b"x");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn one_core_is_one_core() {
    let mut cmd = engine(&["--cores", "1", "--listen", "127.0.0.1:0"]);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    // Kept open to the end: the engine prints its totals there on exit.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert!(line.contains("with 1 core ("), "{line}");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

/// utime + stime of a process in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn descriptor_exhaustion_on_accept_neither_spins_nor_sticks() {
    // A hard limit of 48 descriptors: the engine cannot raise it, so accepts hit EMFILE.
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        &format!(
            "ulimit -n 48 && exec {} --cores 1 --listen 127.0.0.1:0",
            env!("CARGO_BIN_EXE_engine")
        ),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (mut child, addr, _out) = spawn_and_read_addr(cmd);

    // More connections than descriptors: the rest wait in the listen backlog.
    let mut clients: Vec<Client> = (0..80).map(|_| Client::connect(addr)).collect();
    clients[0].echo(1, b"first is served");
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(child.id()) - before;
    // A spinning accept loop would burn a whole CPU (about 100 ticks a second).
    assert!(
        spent < 50,
        "engine used {spent} ticks in one second while out of descriptors"
    );

    // Free descriptors: the connections waiting in the backlog are accepted and served.
    clients.drain(..60);
    for (i, c) in clients.iter_mut().enumerate() {
        c.echo(i as u64, b"served after recovery");
    }
    drop(clients);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    let err = stderr_text(&mut child);
    assert!(
        err.contains("ulimit -n"),
        "the warning names the fix: {err}"
    );
}

#[test]
fn read_timeout_flag_closes_a_trickling_client() {
    let (mut child, addr, _out) = start(&[
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--read-timeout",
        "0.3",
    ]);
    let mut c = Client::connect(addr);
    let frame = Frame::request(1, "/echo", vec![1u8; 100]).to_bytes();
    let mut closed = false;
    for b in frame.iter() {
        if std::io::Write::write_all(&mut c.sock, std::slice::from_ref(b)).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !closed {
        c.expect_closed();
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn binary_serves_udp_beside_tcp_and_reports_it() {
    let mut child = engine(&[
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--udp-listen",
        "127.0.0.1:0",
    ])
    .spawn()
    .expect("spawn engine");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let udp: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp:"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no udp address in {line:?}"));
    let tcp: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.send_to(&Frame::request(7, "/echo", "over udp").to_bytes(), udp)
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).unwrap();
    let mut bytes = bytes::BytesMut::from(&buf[..n]);
    let f = ringrpc_protocol::Decoder::default()
        .decode(&mut bytes)
        .unwrap()
        .unwrap();
    assert_eq!((f.header.seq, &f.payload[..]), (7, &b"over udp"[..]));
    // TCP still serves beside it.
    let mut c = Client::connect(tcp);
    c.echo(1, b"over tcp");
    drop(c);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("udp: 1 datagrams in, 1 out, 1 requests"),
        "{rest}"
    );
}

#[test]
fn binary_announces_a_unix_listener_and_serves_it() {
    let dir = std::env::temp_dir().join(format!("ringrpc-binary-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("engine.sock");
    let listen = format!("unix:{}", path.display());
    let mut child = engine(&[
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &listen,
    ])
    .spawn()
    .expect("spawn engine");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.split_whitespace().any(|w| w == listen),
        "the banner names {listen}: {line:?}"
    );
    let mut sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut sock,
        &Frame::request(3, "/echo", "over unix").to_bytes(),
    )
    .unwrap();
    let mut bytes = bytes::BytesMut::new();
    let decoder = ringrpc_protocol::Decoder::default();
    let frame = loop {
        if let Some(frame) = decoder.decode(&mut bytes).unwrap() {
            break frame;
        }
        let mut buf = [0u8; 256];
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the engine closed the Unix connection");
        bytes.extend_from_slice(&buf[..n]);
    };
    assert_eq!(
        (frame.header.seq, &frame.payload[..]),
        (3, &b"over unix"[..])
    );
    drop(sock);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    assert!(!path.exists(), "the socket file is removed on shutdown");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn binary_refuses_udp_with_an_auth_secret_naming_the_fix() {
    let dir = std::env::temp_dir().join(format!("ringrpc-udp-auth-{}", std::process::id()));
    std::fs::write(&dir, "s3cret").unwrap();
    let output = engine(&[
        "--listen",
        "127.0.0.1:0",
        "--udp-listen",
        "127.0.0.1:0",
        "--auth-secret-file",
        dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    std::fs::remove_file(&dir).ok();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("cannot be combined with udp_listen"), "{err}");
}

/// Topic bytes: data | name | name_len u16 LE | timestamp u64 LE.
fn topic_bytes(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    out
}

#[test]
fn binary_serves_pubsub_behind_a_password_file() {
    let file = std::env::temp_dir().join(format!("ringrpc-pubsub-pw-{}", std::process::id()));
    std::fs::write(&file, "s3cret\n").unwrap();
    let (mut child, addr, mut out) = start(&[
        "--cores",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--pubsub",
        "--pubsub-password-file",
        file.to_str().unwrap(),
    ]);
    std::fs::remove_file(&file).ok();
    let mut sub = Client::connect(addr);
    let mut publisher = Client::connect(addr);
    let call = |c: &mut Client, seq: u64, method: &str, payload: Vec<u8>| {
        c.send(&Frame::request(seq, method.to_string(), payload));
        let f = c.recv();
        assert_eq!(f.header.seq, seq);
        f
    };
    let refused = call(&mut sub, 1, "in_S", topic_bytes("news", b""));
    assert!(
        refused.is_error(),
        "unauthenticated subscribe must be refused"
    );
    assert!(call(&mut sub, 2, "in_A", b"s3cret\n".to_vec()).is_error());
    assert!(!call(&mut sub, 3, "in_A", b"s3cret".to_vec()).is_error());
    assert!(!call(&mut sub, 4, "in_S", topic_bytes("news", b"")).is_error());
    assert!(!call(&mut publisher, 1, "in_A", b"s3cret".to_vec()).is_error());
    let published = topic_bytes("news", b"hello");
    assert!(!call(&mut publisher, 2, "in_P", published.clone()).is_error());
    let f = sub.recv();
    assert_eq!(f.header.cmd, ringrpc_protocol::Command::Notify);
    assert_eq!(
        (&f.method[..], &f.payload[..]),
        (&b"in_P"[..], &published[..])
    );
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("pubsub: 1 published, 1 delivered"), "{rest}");
}

#[test]
fn binary_refuses_a_missing_or_empty_pubsub_password_file_naming_the_fix() {
    let missing = std::env::temp_dir().join(format!("ringrpc-no-such-pw-{}", std::process::id()));
    let err = failed_start(&[
        "--pubsub",
        "--pubsub-password-file",
        missing.to_str().unwrap(),
    ]);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(err.contains("--pubsub-password-file"), "{err}");
    let empty = std::env::temp_dir().join(format!("ringrpc-empty-pw-{}", std::process::id()));
    std::fs::write(&empty, "\n").unwrap();
    let err = failed_start(&[
        "--pubsub",
        "--pubsub-password-file",
        empty.to_str().unwrap(),
    ]);
    assert!(err.contains("is empty"), "{err}");
    // A password without --pubsub is a mistake, not silently ignored.
    std::fs::write(&empty, "pw").unwrap();
    let err = failed_start(&["--pubsub-password-file", empty.to_str().unwrap()]);
    std::fs::remove_file(&empty).ok();
    assert!(
        err.contains("pubsub is off") && err.contains("--pubsub"),
        "{err}"
    );
}

/// `GET path` on `addr`: the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::Write;
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(sock, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn metrics_listen_serves_prometheus_text_at_the_announced_address() {
    let (mut child, addr, mut out) = {
        let mut child = engine(&[
            "--cores",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .spawn()
        .expect("spawn engine");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let tcp: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        let metrics: SocketAddr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("metrics:http://"))
            .and_then(|a| a.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
        let mut c = Client::connect(tcp);
        c.echo(1, b"counted");
        c.echo(2, b"counted");
        drop(c);
        (child, metrics, out)
    };
    let answer = http_get(addr, "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\nringrpc_requests_total{core=\"0\"} 2\n"),
        "{answer}"
    );
    assert!(
        answer.contains("ringrpc_request_duration_seconds_count{method=\"/echo\"} 2"),
        "{answer}"
    );
    assert!(http_get(addr, "/").starts_with("HTTP/1.1 404"));
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("2 requests"), "{rest}");
}

#[test]
fn metrics_port_in_use_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let stderr = failed_start(&["--listen", "127.0.0.1:0", "--metrics-listen", &port]);
    assert!(stderr.contains("cannot serve metrics on"), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
}
