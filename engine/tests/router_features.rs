//! Loopback tests of the router's features: blocking handlers on the worker pool, the
//! not-found handler, middleware, and JSON payloads. Ordering and outcomes, never timing.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Client;
use crossbeam_channel::unbounded;
use ringrpc::router::{HANDLER_PANICKED, METHOD_NOT_FOUND, STOPPED_BY_MIDDLEWARE};
use ringrpc::{
    Config, Context, Flow, LogRequests, Middleware, RunningServer, Server, ServerBuilder,
};
use ringrpc_protocol::{Command, Frame};
use serde::{Deserialize, Serialize};

const LONG: Duration = Duration::from_secs(20);

fn start(builder: ServerBuilder, cores: usize) -> RunningServer {
    let config = Config::builder()
        .cores(cores)
        .listen("127.0.0.1:0")
        .build()
        .unwrap();
    builder.config(config).build().unwrap().start().unwrap()
}

/// Sends one Request and returns its Response, asserting the seq matches.
fn call(c: &mut Client, seq: u64, method: &str, payload: &[u8]) -> Frame {
    c.send(&Frame::request(seq, method.to_owned(), payload.to_vec()));
    let f = c.recv();
    assert_eq!(f.header.cmd, Command::Response);
    assert_eq!(f.header.seq, seq);
    f
}

fn text(f: &Frame) -> String {
    String::from_utf8_lossy(&f.payload).into_owned()
}

// ---- Blocking handlers ----

#[test]
fn a_blocked_handler_does_not_hold_up_other_connections_on_its_core() {
    let (started_tx, started_rx) = unbounded::<()>();
    let (gate_tx, gate_rx) = unbounded::<()>();
    let server = start(
        Server::builder()
            .blocking_threads(2)
            .route_blocking("/slow", move |req| {
                started_tx.send(()).unwrap();
                gate_rx.recv_timeout(LONG).expect("the test opens the gate");
                Ok(req.payload)
            }),
        1,
    );
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    a.send(&Frame::request(1, "/slow", "slow answer"));
    started_rx
        .recv_timeout(LONG)
        .expect("/slow reached a worker");
    // /slow is now blocked on a worker; the only reactor still answers B.
    b.echo(2, b"not stuck behind /slow");
    gate_tx.send(()).unwrap();
    let f = a.recv();
    assert_eq!(f.header.seq, 1);
    assert!(!f.is_error());
    assert_eq!(&f.payload[..], b"slow answer");
    server.shutdown().unwrap();
}

/// Notifies to a blocking method take a place among the connection's deferred work, like
/// Requests: past `max_in_flight_per_conn` they are dropped and counted, instead of queueing
/// up to the pool's capacity (65,536 jobs of up to `max_body` each) for one peer.
#[test]
fn notifies_to_a_blocking_method_past_the_in_flight_limit_are_dropped_and_counted() {
    let (started_tx, started_rx) = unbounded::<()>();
    let (gate_tx, gate_rx) = unbounded::<()>();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .max_in_flight_per_conn(4)
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .blocking_threads(1)
        .route_blocking("/note", move |_req| {
            counted.fetch_add(1, Ordering::SeqCst);
            started_tx.send(()).unwrap();
            gate_rx.recv_timeout(LONG).expect("the test opens the gate");
            Ok::<_, ringrpc::HandlerError>(Vec::new())
        })
        .route_blocking("/ask", |_req| Ok::<_, ringrpc::HandlerError>("answered"))
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut c = Client::connect(server.local_addr());
    for _ in 0..100 {
        c.send(&Frame::notify(0, "/note", vec![0u8; 1024]));
    }
    // Frames of a connection are handled in order: once this Ping is answered, every notify
    // before it was either queued for the pool or dropped.
    c.send(&Frame::ping());
    assert_eq!(c.recv().header.cmd, Command::Pong);
    started_rx
        .recv_timeout(LONG)
        .expect("the first notify runs");
    // The four places are taken (one running, three queued): Requests are refused too.
    let f = call(&mut c, 2, "/ask", b"");
    assert!(f.is_error());
    assert_eq!(text(&f), ringrpc::error::TOO_MANY_IN_FLIGHT);
    let mut refused = 96 + 1;
    for _ in 0..4 {
        gate_tx.send(()).unwrap();
    }
    for _ in 1..4 {
        started_rx
            .recv_timeout(LONG)
            .expect("the queued notifies run");
    }
    // Each finished notify gives its place back.
    for seq in 3.. {
        let f = call(&mut c, seq, "/ask", b"");
        if !f.is_error() {
            assert_eq!(text(&f), "answered");
            break;
        }
        assert_eq!(text(&f), ringrpc::error::TOO_MANY_IN_FLIGHT);
        refused += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    gate_tx.send(()).unwrap();
    c.send(&Frame::notify(0, "/note", vec![0u8; 1024]));
    started_rx
        .recv_timeout(LONG)
        .expect("a notify after the backlog runs");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        5,
        "4 of the 100, then the late one"
    );
    drop(c);
    let total = server.shutdown().unwrap().total();
    assert_eq!(total.refused_in_flight, refused, "{total:?}");
}

#[test]
fn a_blocking_handler_sees_the_request_and_its_errors_and_panics_are_answered() {
    let (notes_tx, notes_rx) = unbounded::<ringrpc::Request>();
    let server = start(
        Server::builder()
            .blocking_threads(3)
            .route_blocking("/info", |req| {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                let peer = req.conn.peer();
                Ok(format!(
                    "{} seq={} flags={} notify={} peer_is_local={} thread={thread}",
                    String::from_utf8_lossy(&req.method),
                    req.seq,
                    req.user_flags,
                    req.is_notify,
                    peer.ip().is_loopback(),
                ))
            })
            .route_blocking("/fail", |_| Err::<Vec<u8>, _>("no such account".into()))
            .route_blocking("/boom", |_| -> Result<Vec<u8>, ringrpc::HandlerError> {
                panic!("blocking handler panics on purpose")
            })
            .route_blocking("/note", move |req| {
                notes_tx.send(req).unwrap();
                Ok(Vec::new())
            }),
        2,
    );
    let mut c = Client::connect(server.local_addr());

    let mut request = Frame::request(10, "/info", "");
    request.header.user_flags = 0x5a;
    c.send(&request);
    let f = c.recv();
    assert_eq!(f.header.seq, 10);
    let info = text(&f);
    assert!(
        info.starts_with(
            "/info seq=10 flags=90 notify=false peer_is_local=true thread=ringrpc-blocking-"
        ),
        "{info}"
    );

    let f = call(&mut c, 11, "/fail", b"");
    assert!(f.is_error());
    assert_eq!(text(&f), "no such account");

    let f = call(&mut c, 12, "/boom", b"");
    assert!(f.is_error());
    assert_eq!(text(&f), HANDLER_PANICKED);

    // A Notify runs on the pool and is never answered: the next frame is the echo's.
    c.send(&Frame::notify(0, "/note", "fire and forget"));
    let note = notes_rx.recv_timeout(LONG).unwrap();
    assert!(note.is_notify);
    assert_eq!(&note.method[..], b"/note");
    assert_eq!(&note.payload[..], b"fire and forget");
    c.echo(13, b"after the notify");

    // The pool survives a panic.
    let f = call(&mut c, 14, "/info", b"");
    assert!(!f.is_error());
    server.shutdown().unwrap();
}

// ---- Not-found handler ----

#[test]
fn a_not_found_handler_answers_unknown_requests_and_sees_unknown_notifies() {
    let (notifies_tx, notifies_rx) = unbounded::<String>();
    let server = start(
        Server::builder().not_found(move |ctx| {
            let method = String::from_utf8_lossy(ctx.method()).into_owned();
            if ctx.is_notify() {
                notifies_tx.send(method).unwrap();
            } else if let Some(name) = method.strip_prefix("/hello/") {
                let greeting = format!("hello, {name}");
                ctx.reply(greeting.as_bytes());
            }
            // Anything else is left unanswered: the engine sends "method not found".
        }),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    let f = call(&mut c, 1, "/hello/ringrpc", b"");
    assert!(!f.is_error());
    assert_eq!(text(&f), "hello, ringrpc");

    let f = call(&mut c, 2, "/nowhere", b"");
    assert!(f.is_error());
    assert_eq!(text(&f), METHOD_NOT_FOUND);

    c.send(&Frame::notify(0, "/unknown/event", "x"));
    assert_eq!(notifies_rx.recv_timeout(LONG).unwrap(), "/unknown/event");
    // Routed methods never reach the not-found handler.
    c.echo(3, b"routed");
    assert!(notifies_rx.try_recv().is_err());
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().not_found, 3);
}

// ---- Middleware ----

type Journal = Arc<Mutex<Vec<String>>>;

/// Records its calls into the journal; stops requests for `stop_on` without replying.
struct Recorder {
    name: &'static str,
    journal: Journal,
    stop_on: Option<&'static str>,
}

impl Middleware for Recorder {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        self.journal
            .lock()
            .unwrap()
            .push(format!("{}.before", self.name));
        if self.stop_on.is_some_and(|m| m.as_bytes() == ctx.method()) {
            return Flow::Stop;
        }
        Flow::Continue
    }
    fn after(&self, ctx: &Context<'_>) {
        self.journal
            .lock()
            .unwrap()
            .push(format!("{}.after:{:?}", self.name, ctx.reply_state()));
    }
}

fn take(journal: &Journal) -> Vec<String> {
    std::mem::take(&mut *journal.lock().unwrap())
}

#[test]
fn middleware_runs_before_in_order_and_after_in_reverse_around_every_handler() {
    let journal = Journal::default();
    let server = start(
        Server::builder()
            .middleware(Recorder {
                name: "outer",
                journal: journal.clone(),
                stop_on: None,
            })
            .middleware(Recorder {
                name: "inner",
                journal: journal.clone(),
                stop_on: None,
            })
            .route("/work", {
                let journal = journal.clone();
                move |ctx| {
                    journal.lock().unwrap().push("handler".into());
                    ctx.reply(b"done");
                }
            })
            .route("/later", |ctx| {
                let responder = ctx.responder().unwrap();
                std::thread::spawn(move || responder.reply(b"from a thread"));
            }),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    // The journal is written before the reactor sends the Response, so it is complete
    // once the Response arrives.
    assert_eq!(text(&call(&mut c, 1, "/work", b"")), "done");
    assert_eq!(
        take(&journal),
        [
            "outer.before",
            "inner.before",
            "handler",
            "inner.after:Sent",
            "outer.after:Sent"
        ]
    );
    assert_eq!(text(&call(&mut c, 2, "/missing", b"")), METHOD_NOT_FOUND);
    assert_eq!(
        take(&journal),
        [
            "outer.before",
            "inner.before",
            "inner.after:SentError",
            "outer.after:SentError"
        ]
    );
    assert_eq!(text(&call(&mut c, 3, "/later", b"")), "from a thread");
    assert_eq!(
        take(&journal),
        [
            "outer.before",
            "inner.before",
            "inner.after:Deferred",
            "outer.after:Deferred"
        ]
    );
    c.send(&Frame::notify(0, "/work", ""));
    c.echo(4, b"x");
    assert_eq!(
        take(&journal),
        [
            "outer.before",
            "inner.before",
            "handler",
            "inner.after:NoReply",
            "outer.after:NoReply",
            // The echo.
            "outer.before",
            "inner.before",
            "inner.after:Sent",
            "outer.after:Sent"
        ]
    );
    server.shutdown().unwrap();
}

/// Answers `/cached` itself and stops the chain.
struct Cache;

impl Middleware for Cache {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        if ctx.method() == b"/cached" {
            ctx.reply(b"from the cache");
            return Flow::Stop;
        }
        Flow::Continue
    }
}

#[test]
fn a_stopping_middleware_skips_the_handler_and_later_middleware() {
    let journal = Journal::default();
    let handler_runs = Arc::new(AtomicUsize::new(0));
    let counted = |runs: &Arc<AtomicUsize>| {
        let runs = runs.clone();
        move |ctx: &mut Context<'_>| {
            runs.fetch_add(1, Ordering::SeqCst);
            ctx.reply(b"handled");
        }
    };
    let server = start(
        Server::builder()
            .middleware(Recorder {
                name: "auth",
                journal: journal.clone(),
                stop_on: Some("/private"),
            })
            .middleware(Cache)
            .middleware(Recorder {
                name: "last",
                journal: journal.clone(),
                stop_on: None,
            })
            .route("/private", counted(&handler_runs))
            .route("/cached", counted(&handler_runs))
            .route("/public", counted(&handler_runs)),
        1,
    );
    let mut c = Client::connect(server.local_addr());

    let f = call(&mut c, 1, "/private", b"");
    assert!(f.is_error());
    assert_eq!(text(&f), STOPPED_BY_MIDDLEWARE);
    assert_eq!(take(&journal), ["auth.before", "auth.after:SentError"]);

    let f = call(&mut c, 2, "/cached", b"");
    assert!(!f.is_error());
    assert_eq!(text(&f), "from the cache");
    assert_eq!(take(&journal), ["auth.before", "auth.after:Sent"]);

    assert_eq!(handler_runs.load(Ordering::SeqCst), 0);
    assert_eq!(text(&call(&mut c, 3, "/public", b"")), "handled");
    assert_eq!(handler_runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        take(&journal),
        [
            "auth.before",
            "last.before",
            "last.after:Sent",
            "auth.after:Sent"
        ]
    );
    server.shutdown().unwrap();
}

#[test]
fn a_panicking_handler_is_answered_and_after_still_runs() {
    let journal = Journal::default();
    let server = start(
        Server::builder()
            .middleware(Recorder {
                name: "m",
                journal: journal.clone(),
                stop_on: None,
            })
            .route("/boom", |_| panic!("handler panics on purpose")),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    let f = call(&mut c, 1, "/boom", b"");
    assert!(f.is_error());
    assert_eq!(text(&f), HANDLER_PANICKED);
    assert_eq!(take(&journal), ["m.before", "m.after:SentError"]);
    c.echo(2, b"still serving");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().panics, 1);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_requests_logs_each_request_without_changing_its_answer() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    // The reactor threads log, so the subscriber must be global; no other test sets one.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let server = start(
        Server::builder()
            .middleware(LogRequests)
            .route("/logged", |ctx| {
                ctx.reply(b"ok");
            }),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    assert_eq!(text(&call(&mut c, 41, "/logged", b"12345")), "ok");
    assert_eq!(text(&call(&mut c, 42, "/absent", b"")), METHOD_NOT_FOUND);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let logged = log
        .lines()
        .find(|l| l.contains("method=/logged"))
        .unwrap_or_else(|| panic!("no line for /logged in:\n{log}"));
    assert!(logged.contains("INFO"), "{logged}");
    assert!(logged.contains("seq=41"), "{logged}");
    assert!(logged.contains("payload_len=5"), "{logged}");
    assert!(logged.contains("reply=Sent"), "{logged}");
    assert!(logged.contains("peer=127.0.0.1:"), "{logged}");
    assert!(
        log.lines()
            .any(|l| l.contains("method=/absent") && l.contains("reply=SentError")),
        "{log}"
    );
    server.shutdown().unwrap();
}

// ---- JSON ----

#[derive(Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sum {
    sum: i64,
}

#[derive(Deserialize)]
struct Greet<'a> {
    name: &'a str,
}

#[test]
fn json_payloads_bind_to_types_and_replies_serialize() {
    let server = start(
        Server::builder()
            .route("/add", |ctx| match ctx.json::<Add>() {
                Ok(add) => {
                    ctx.reply_json(&Sum { sum: add.a + add.b });
                }
                Err(e) => {
                    ctx.reply_error(&format!("bad request: {e}"));
                }
            })
            // Borrowing straight from the receive buffer.
            .route("/greet", |ctx| {
                let greeting = ctx.json::<Greet<'_>>().map(|g| format!("hi {}", g.name));
                match greeting {
                    Ok(greeting) => ctx.reply_json(&greeting),
                    Err(e) => ctx.reply_error(&e.to_string()),
                };
            })
            .route("/add/later", |ctx| {
                let add: Add = ctx.json().expect("valid test input");
                let responder = ctx.responder().unwrap();
                std::thread::spawn(move || responder.reply_json(&Sum { sum: add.a + add.b }));
            })
            .route_blocking("/add/blocking", |req| {
                let add: Add = req.json().map_err(|e| format!("bad request: {e}"))?;
                Ok(serde_json::to_vec(&Sum { sum: add.a + add.b })?)
            })
            .route("/unencodable", |ctx| {
                // JSON object keys must be strings.
                let map = std::collections::HashMap::from([((1, 2), 3)]);
                ctx.reply_json(&map);
                assert_eq!(ctx.reply_state(), ringrpc::ReplyState::SentError);
            }),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    let request = serde_json::to_vec(&Add { a: 40, b: 2 }).unwrap();
    for (seq, method) in [(1, "/add"), (2, "/add/later"), (3, "/add/blocking")] {
        let f = call(&mut c, seq, method, &request);
        assert!(!f.is_error(), "{method}: {}", text(&f));
        let sum: Sum = serde_json::from_slice(&f.payload).unwrap();
        assert_eq!(sum, Sum { sum: 42 }, "{method}");
    }

    let f = call(&mut c, 4, "/greet", br#"{"name":"arpc"}"#);
    assert_eq!(&f.payload[..], br#""hi arpc""#);

    for (seq, method) in [(5, "/add"), (6, "/add/blocking")] {
        let f = call(&mut c, seq, method, br#"{"a": 1, "b": "#);
        assert!(f.is_error(), "{method}");
        assert!(text(&f).starts_with("bad request: "), "{}", text(&f));
    }

    let f = call(&mut c, 7, "/unencodable", b"");
    assert!(f.is_error());
    assert!(
        text(&f).contains("cannot encode the response as JSON"),
        "{}",
        text(&f)
    );
    server.shutdown().unwrap();
}

// ---- Handlers that do not reply ----

#[test]
fn a_request_its_handler_leaves_unanswered_gets_an_empty_success_and_no_responder_after_a_reply() {
    let counted = Arc::new(AtomicUsize::new(0));
    let seen = counted.clone();
    let server = start(
        Server::builder()
            .route("/count", move |_ctx| {
                seen.fetch_add(1, Ordering::Relaxed);
            })
            .route("/twice", |ctx| {
                ctx.reply(b"first");
                assert!(ctx.replied());
                assert!(ctx.responder().is_none(), "answered: nothing left to defer");
                ctx.reply(b"ignored");
                ctx.reply_error("ignored too");
            }),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    let f = call(&mut c, 1, "/count", b"x");
    assert!(!f.is_error(), "{}", text(&f));
    assert!(f.payload.is_empty());
    assert_eq!(counted.load(Ordering::Relaxed), 1);
    let f = call(&mut c, 2, "/twice", b"");
    assert!(!f.is_error(), "{}", text(&f));
    assert_eq!(text(&f), "first");
    // Only one Response per Request: the next frame answers the next call.
    let f = call(&mut c, 3, "/count", b"");
    assert!(f.payload.is_empty());
    server.shutdown().unwrap();
}
