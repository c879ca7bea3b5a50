//! The chat application end to end: the real `chat-server` binary on an ephemeral port,
//! driven by real `chat-client` processes through their standard input, their standard
//! output read as it arrives.
//!
//! Built for a loaded 2-core machine: every wait polls until what is expected shows up
//! (generous deadlines), never sleeps and then asserts. An absence ("carol was not told")
//! is checked only after something the same party receives later, in order, has arrived.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const USERS: &str = "# test accounts\nalice pa\nbob pb\ncarol pc\ndave pd\neve pe\n";

/// A fresh directory of its own under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("chat-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users"), USERS).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects a child's output as it arrives.
fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    out
}

fn wait_exit(child: &mut Child, what: &str, output: impl Fn() -> String) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what} did not exit within {DEADLINE:?}; output so far:\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `chat-server`, killed when dropped.
struct ChatServer {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl ChatServer {
    fn start(data: &Path, block_duration: &str, timeout: &str) -> ChatServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--listen", "127.0.0.1:0", "--cores", "1"])
            .arg("--users")
            .arg(data.join("users"))
            .args(["--block-duration", block_duration, "--timeout", timeout])
            .arg("--data")
            .arg(data.join("db"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chat-server starts");
        let stderr = collect(child.stderr.take().unwrap());
        let stdout = collect(child.stdout.take().unwrap());
        let start = Instant::now();
        let addr = loop {
            if let Some(line) = stdout.lock().unwrap().lines().next() {
                let words: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(words[..3], ["chat-server", "listening", "on"], "{line}");
                break words[3].to_owned();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "chat-server exited with {status}: {}",
                    stderr.lock().unwrap()
                );
            }
            assert!(start.elapsed() < DEADLINE, "chat-server printed no address");
            std::thread::sleep(Duration::from_millis(20));
        };
        ChatServer {
            child,
            addr,
            stderr,
        }
    }

    /// Stops it the hard way (SIGKILL): nothing gets a chance to flush.
    fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn client(&self) -> Term {
        Term::spawn(&self.addr)
    }

    /// A client logged in as `user` (password `p` + the user's first letter).
    fn login(&self, user: &str) -> Term {
        let mut term = self.client();
        term.send(user);
        term.send(&password(user));
        term.wait_for(&format!("welcome, {user}"));
        term
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Network input never panics the server.
        let stderr = self.stderr.lock().unwrap();
        assert!(!stderr.contains("panicked"), "server stderr:\n{stderr}");
    }
}

fn password(user: &str) -> String {
    format!("p{}", &user[..1])
}

/// A running `chat-client`: lines in through stdin, its stdout collected.
struct Term {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
}

impl Term {
    fn spawn(addr: &str) -> Term {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-client"))
            .arg(addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chat-client starts");
        let out = collect(child.stdout.take().unwrap());
        Term {
            stdin: child.stdin.take(),
            child,
            out,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        // A client that already exited is reported by the wait that follows.
        let _ = writeln!(stdin, "{line}");
        let _ = stdin.flush();
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.output().matches(needle).count()
    }

    /// Waits until `needle` has appeared `n` times in the output.
    fn wait_for_n(&self, needle: &str, n: usize) {
        let start = Instant::now();
        while self.count(needle) < n {
            assert!(
                start.elapsed() < DEADLINE,
                "{needle:?} did not show up {n} times within {DEADLINE:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for(&self, needle: &str) {
        self.wait_for_n(needle, 1);
    }

    /// Sends a command and waits for (the next occurrence of) its answer.
    fn ask(&mut self, line: &str, answer: &str) {
        let n = self.count(answer);
        self.send(line);
        self.wait_for_n(answer, n + 1);
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let out = self.out.clone();
        wait_exit(&mut self.child, "chat-client", move || {
            out.lock().unwrap().clone()
        })
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn login_rules() {
    let dir = TempDir::new("login");
    let server = ChatServer::start(dir.path(), "2", "60");

    // Unknown user: refused, asked again.
    let mut alice = server.client();
    alice.send("zed");
    alice.send("whatever");
    alice.wait_for("unknown user \"zed\"");
    alice.send("alice");
    alice.send("pa");
    alice.wait_for("welcome, alice");

    // Already logged in elsewhere: refused, exit 1.
    let mut again = server.client();
    again.send("alice");
    again.send("pa");
    again.wait_for("alice is already logged in elsewhere");
    assert_eq!(again.wait_exit().code(), Some(1));

    // Three wrong passwords in a row block the account for --block-duration.
    let mut bob = server.client();
    bob.send("bob");
    for wrong in ["x", "y", "z"] {
        bob.send(wrong);
    }
    bob.wait_for("wrong password for bob (attempt 1 of 3)");
    bob.wait_for("wrong password for bob (attempt 2 of 3)");
    bob.wait_for("account bob is blocked for 2 seconds");
    assert_eq!(bob.wait_exit().code(), Some(1));
    // Even the right password is refused meanwhile, with the time left.
    let mut blocked = server.client();
    blocked.send("bob");
    blocked.send("pb");
    blocked.wait_for("account bob is blocked after 3 wrong passwords; try again in ");
    assert_eq!(blocked.wait_exit().code(), Some(1));
    // Once it runs out, bob gets in.
    let start = Instant::now();
    let bob = loop {
        let mut term = server.client();
        term.send("bob");
        term.send("pb");
        let deadline = Instant::now() + DEADLINE;
        while !term.output().contains("welcome, bob") && !term.output().contains("blocked") {
            assert!(Instant::now() < deadline, "no answer: {}", term.output());
            std::thread::sleep(Duration::from_millis(20));
        }
        if term.output().contains("welcome, bob") {
            break term;
        }
        assert!(start.elapsed() < DEADLINE, "bob stayed blocked");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "the block lasted"
    );
    alice.wait_for("bob logged in");

    // help, unknown commands, bad usage: local, named.
    alice.ask("help", "whoelsesince <seconds>");
    alice.ask("dance now", "error: unknown command \"dance\"");
    alice.ask("message bob", "error: usage: message <user> <text>");
    alice.ask("whoami", "you are alice");

    // logout: answered, exit 0; others told.
    let mut bob = bob;
    bob.ask("logout", "goodbye, bob");
    assert_eq!(bob.wait_exit().code(), Some(0));
    alice.wait_for("bob logged out");

    // End of input: exit 0, and others are told at once.
    let mut carol = server.login("carol");
    alice.wait_for("carol logged in");
    carol.close_stdin();
    assert_eq!(carol.wait_exit().code(), Some(0));
    alice.wait_for("carol logged out");
}

#[test]
fn messages_presence_blocks_and_lists() {
    let dir = TempDir::new("messages");
    let server = ChatServer::start(dir.path(), "60", "60");

    // carol blocks dave before dave ever logs in.
    let mut carol = server.login("carol");
    carol.ask("block dave", "blocked dave");
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    carol.wait_for("bob logged in");

    // Presence: everyone online is told, except those who blocked the newcomer.
    let mut dave = server.login("dave");
    alice.wait_for("dave logged in");
    bob.wait_for("dave logged in");
    let eve = server.login("eve");
    carol.wait_for("eve logged in");
    assert!(
        !carol.output().contains("dave logged in"),
        "{}",
        carol.output()
    );

    // Private message.
    alice.ask("message bob hello bob, how are you?", "message sent to bob");
    bob.wait_for("alice: hello bob, how are you?");

    // To someone who blocked the sender: not delivered, the sender is told.
    dave.ask(
        "message carol hi carol",
        "error: carol has blocked you; your message was not delivered",
    );

    // Broadcast: everyone but the sender and those who blocked the sender.
    dave.ask("broadcast hello everyone", "some did not receive it");
    for term in [&alice, &bob, &eve] {
        term.wait_for("dave (broadcast): hello everyone");
    }
    alice.ask("broadcast second round", "broadcast sent to 4 users");
    // carol got alice's later broadcast, so she would have had dave's message and broadcast.
    carol.wait_for("alice (broadcast): second round");
    assert!(!carol.output().contains("hi carol"), "{}", carol.output());
    assert!(!carol.output().contains("hello everyone"));

    // Block and unblock errors.
    alice.ask("block alice", "error: you cannot block yourself");
    alice.ask("block zed", "error: unknown user \"zed\"");
    alice.ask("unblock bob", "error: bob is not blocked");
    carol.ask("unblock dave", "unblocked dave");
    dave.ask("message carol hi again", "message sent to carol");
    carol.wait_for("dave: hi again");

    // whoelse: online now except yourself.
    alice.ask("whoelse", "online now: bob, carol, dave, eve");
    // whoelsesince: also those who left within the window.
    bob.ask("logout", "goodbye, bob");
    assert_eq!(bob.wait_exit().code(), Some(0));
    alice.wait_for("bob logged out");
    alice.ask("whoelse", "online now: carol, dave, eve");
    alice.ask(
        "whoelsesince 600",
        "online in the last 600 seconds: bob, carol, dave, eve",
    );
    alice.ask("whoelsesince soon", "error: usage: whoelsesince <seconds>");
    drop(eve);
}

#[test]
fn offline_messages_blocks_and_history_survive_a_crash() {
    let dir = TempDir::new("durable");
    let server = ChatServer::start(dir.path(), "60", "60");
    let mut alice = server.login("alice");
    for text in ["first", "second", "third"] {
        alice.ask(
            &format!("message bob {text} message"),
            "bob is offline; the message is stored",
        );
    }
    let mut carol = server.login("carol");
    carol.ask("block alice", "blocked alice");
    let mut dave = server.login("dave");
    dave.ask("logout", "goodbye, dave");
    assert_eq!(dave.wait_exit().code(), Some(0));
    alice.wait_for("dave logged out");
    // Killed, not stopped: only what was committed survives.
    server.crash();
    drop((alice, carol));

    let server = ChatServer::start(dir.path(), "60", "60");
    let mut bob = server.login("bob");
    bob.wait_for("alice (while you were offline): third message");
    let out = bob.output();
    let at = |text: &str| out.find(text).unwrap_or_else(|| panic!("{text}: {out}"));
    assert!(at("first message") < at("second message"));
    assert!(at("second message") < at("third message"));
    assert!(at("welcome, bob") < at("first message"));

    // Login history: dave left before the crash, within the window.
    bob.ask("whoelsesince 600", "online in the last 600 seconds: ");
    let history = bob.output();
    let line = history
        .lines()
        .rfind(|l| l.starts_with("online in the last 600 seconds"))
        .unwrap();
    assert!(line.contains("dave"), "{line}");

    // The block list survived.
    let mut alice = server.login("alice");
    alice.ask(
        "message carol are you there?",
        "error: carol has blocked you",
    );

    // Delivered once: the receipts removed them from the store.
    bob.ask("logout", "goodbye, bob");
    assert_eq!(bob.wait_exit().code(), Some(0));
    let again = server.login("bob");
    alice.ask("message bob after", "message sent to bob");
    again.wait_for("alice: after");
    assert_eq!(again.count("first message"), 0, "{}", again.output());
}

#[test]
fn idle_users_are_logged_out_with_a_notice() {
    let dir = TempDir::new("idle");
    let server = ChatServer::start(dir.path(), "60", "3");
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.wait_for("bob logged in");
    // bob keeps busy; alice says nothing.
    let start = Instant::now();
    while !alice
        .output()
        .contains("you were logged out after 3 seconds")
    {
        assert!(start.elapsed() < DEADLINE, "{}", alice.output());
        bob.ask("whoami", "you are bob");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "logged out early"
    );
    assert_eq!(alice.wait_exit().code(), Some(0));
    bob.wait_for("alice logged out");
    bob.ask("whoelse", "no one else is online");
    alice.close_stdin();
}

#[test]
fn bad_input_gets_errors_and_harms_no_one_else() {
    use ringrpc::{CallError, Client};
    let dir = TempDir::new("hostile");
    let server = ChatServer::start(dir.path(), "60", "60");
    let mut alice = server.login("alice");

    let timeout = Duration::from_secs(20);
    let raw = Client::connect(&server.addr).unwrap();
    let before_login = raw.call("/chat/whoami", "".into(), timeout);
    assert!(
        matches!(&before_login, Err(CallError::Remote(t)) if t.contains("not logged in")),
        "{before_login:?}"
    );
    let garbage = raw.call("/chat/login", "{not json".into(), timeout);
    assert!(
        matches!(&garbage, Err(CallError::Remote(t)) if t.contains("bad request")),
        "{garbage:?}"
    );
    // Not UTF-8, wrong types: refused, the connection still serves.
    let wrong = raw.call("/chat/login", vec![0xff, 0xfe, 0x00].into(), timeout);
    assert!(matches!(wrong, Err(CallError::Remote(_))), "{wrong:?}");
    let ok = raw
        .call(
            "/chat/login",
            r#"{"user":"bob","password":"pb"}"#.into(),
            timeout,
        )
        .unwrap();
    assert!(String::from_utf8_lossy(&ok).contains("welcome, bob"));
    alice.wait_for("bob logged in");
    let wrong_shape = raw.call("/chat/message", r#"{"to":5}"#.into(), timeout);
    assert!(matches!(wrong_shape, Err(CallError::Remote(_))));
    // A notify gets no answer and changes nothing.
    raw.notify("/chat/logout", b"").unwrap();
    // Raw garbage on another connection closes only that one.
    let mut sock = std::net::TcpStream::connect(&server.addr).unwrap();
    sock.write_all(&[0xde; 64]).unwrap();
    let _ = sock.read(&mut [0u8; 16]);
    // A vanished connection logs its user out.
    drop(raw);
    alice.wait_for("bob logged out");
    alice.ask("whoami", "you are alice");
    // A second server on the same data directory is refused, naming the fix.
    let second = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", "127.0.0.1:0", "--block-duration", "1"])
        .args(["--timeout", "1", "--users"])
        .arg(dir.path().join("users"))
        .arg("--data")
        .arg(dir.path().join("db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use") && stderr.contains("--data"),
        "{stderr}"
    );
}

/// Runs chat-server with `args` and expects it to fail on one line, naming each of
/// `expected`.
fn refused(args: &[&str], expected: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    for text in expected {
        assert!(
            stderr.contains(text),
            "{args:?}: missing {text:?} in {stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn startup_failures_name_cause_and_fix() {
    let dir = TempDir::new("startup");
    let users = dir.path().join("users");
    let users = users.to_str().unwrap();
    let common = ["--block-duration", "1", "--timeout", "1"];
    let with = |extra: &[&str]| -> Vec<String> {
        common
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let run = |extra: &[&str], expected: &[&str]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, expected);
    };
    let data = dir.path().join("db");
    let data = data.to_str().unwrap();

    let missing = dir.path().join("nope");
    run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data",
            data,
            "--users",
            missing.to_str().unwrap(),
        ],
        &["cannot read the users file", "create it"],
    );
    let bad = dir.path().join("bad-users");
    std::fs::write(&bad, "alice pa\nbob\n").unwrap();
    run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data",
            data,
            "--users",
            bad.to_str().unwrap(),
        ],
        &["line 2", "username password"],
    );
    // A data directory that cannot be created (its parent is a file).
    let under_file = format!("{users}/db");
    run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--users",
            users,
            "--data",
            &under_file,
        ],
        &["cannot create the data directory", "--data"],
    );
    // Address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    run(
        &["--listen", &addr, "--users", users, "--data", data],
        &["already in use", "--listen"],
    );
    // Bad numbers: clap's usage error (status 2) names the flag and the rule.
    let out = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", "127.0.0.1:0", "--users", users])
        .args(["--block-duration", "-1", "--timeout", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--block-duration") && stderr.contains("0 or more"),
        "{stderr}"
    );
}

/// One plain HTTP GET; the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(sock, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// A browser's side of the chat, spoken by hand: arpc frames in binary WebSocket messages.
struct WebUser {
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    seq: u64,
    /// Texts of the `/chat/msg` pushes received (each answered: the receipt).
    messages: Vec<String>,
    notices: Vec<String>,
}

impl WebUser {
    fn connect(addr: &str) -> WebUser {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://{addr}/ws").as_str(), stream).unwrap();
        WebUser {
            ws,
            seq: 0,
            messages: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// The next frame from the server that is not a push.
    fn next(&mut self) -> ringrpc_protocol::Frame {
        loop {
            if let Some(frame) = self.step() {
                return frame;
            }
        }
    }

    /// Reads one message: a push is recorded (`/chat/msg` answered) and gives `None`.
    fn step(&mut self) -> Option<ringrpc_protocol::Frame> {
        use ringrpc_protocol::{Command as Cmd, Frame};
        {
            let data = match self.ws.read().expect("the server's next message") {
                tungstenite::Message::Binary(data) => data,
                _ => return None,
            };
            let (frame, _) = ringrpc_protocol::parse_frame(&data, u32::MAX)
                .unwrap()
                .expect("one whole frame per message");
            let frame = frame.to_owned();
            let text = String::from_utf8_lossy(&frame.payload).into_owned();
            match (frame.header.cmd, &frame.method[..]) {
                (Cmd::Request, b"/chat/msg") => {
                    let receipt = Frame::response_to(&frame.header, "/chat/msg", "ok");
                    self.ws
                        .send(tungstenite::Message::Binary(
                            receipt.to_bytes().to_vec().into(),
                        ))
                        .unwrap();
                    self.messages.push(text);
                    None
                }
                (Cmd::Notify, b"/chat/notice") => {
                    self.notices.push(text);
                    None
                }
                _ => Some(frame),
            }
        }
    }

    /// Calls `method`; the answer's payload as text (error answers prefixed `error: `).
    fn call(&mut self, method: &'static str, payload: &str) -> String {
        self.seq += 1;
        let request = ringrpc_protocol::Frame::request(self.seq, method, payload.to_owned());
        self.ws
            .send(tungstenite::Message::Binary(
                request.to_bytes().to_vec().into(),
            ))
            .unwrap();
        loop {
            let frame = self.next();
            if frame.header.seq == self.seq {
                let text = String::from_utf8_lossy(&frame.payload).into_owned();
                return if frame.is_error() {
                    format!("error: {text}")
                } else {
                    text
                };
            }
        }
    }

    /// Reads until a push containing `needle` has arrived.
    fn wait_push(&mut self, needle: &str) {
        let seen = |u: &WebUser| {
            u.messages
                .iter()
                .chain(&u.notices)
                .any(|m| m.contains(needle))
        };
        while !seen(self) {
            if let Some(frame) = self.step() {
                panic!("unexpected frame waiting for {needle:?}: {frame:?}");
            }
        }
    }
}

#[test]
fn a_browser_user_and_a_terminal_user_chat_over_one_port() {
    let dir = TempDir::new("web");
    let server = ChatServer::start(dir.path(), "60", "60");

    // The page, its script and the JS client come from the chat port.
    let (status, page) = http_get(&server.addr, "/");
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("<title>ringrpc chat</title>"), "{page}");
    let (status, app) = http_get(&server.addr, "/app.js");
    assert!(
        status.contains("200") && app.contains("/chat/login"),
        "{status}"
    );
    let (status, js) = http_get(&server.addr, "/ringrpc.js");
    assert!(
        status.contains("200") && js.contains("RingClient"),
        "{status}"
    );

    // The page's protocol is the terminal client's: same routes, same pushes.
    let mut web = WebUser::connect(&server.addr);
    let welcome = web.call("/chat/login", r#"{"user":"bob","password":"pb"}"#);
    assert!(welcome.contains("welcome, bob"), "{welcome}");
    let mut alice = server.login("alice");
    web.wait_push("alice logged in");
    alice.ask("message bob hello from the terminal", "message sent to bob");
    web.wait_push("hello from the terminal");
    let sent = web.call(
        "/chat/message",
        r#"{"to":"alice","text":"hello from the browser"}"#,
    );
    assert!(sent.contains("message sent to alice"), "{sent}");
    alice.wait_for("bob: hello from the browser");
    let who = web.call("/chat/whoelse", "");
    assert!(who.contains(r#""users":["alice"]"#), "{who}");
    alice.ask("broadcast to all", "broadcast sent to 1 user");
    web.wait_push("to all");
    assert_eq!(web.call("/chat/block", "{}").get(..6), Some("error:"));
    let bye = web.call("/chat/logout", "");
    assert!(bye.contains("goodbye, bob"), "{bye}");
    alice.wait_for("bob logged out");
}
