//! Regression tests for faults a review and hostile clients found: calls that hung once a
//! reactor stopped, answers a graceful shutdown dropped, user callbacks that could kill a
//! core, a reply that overtook the notify its handler sent first, and frames over the wire's
//! 4 GiB limit. Each waits with a bound, so a regression fails instead of hanging the suite.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, IO_TIMEOUT};
use ringrpc::{CallError, Config, ConnHandle, RunningServer, Server, StreamError};
use ringrpc_protocol::{Command, Frame};

/// Runs `f` on a thread and waits at most `limit` for its result: `None` means it hung.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

fn serve(builder: ringrpc::ServerBuilder, config: ringrpc::ConfigBuilder) -> RunningServer {
    let config = config.listen("127.0.0.1:0").build().expect("valid config");
    builder
        .config(config)
        .build()
        .expect("bind")
        .start()
        .expect("start")
}

/// A server whose `/keep` handler hands the connection's handle to the test.
fn server_keeping_handles() -> (RunningServer, mpsc::Receiver<ConnHandle>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let builder = Server::builder().route("/keep", move |ctx| {
        let _ = tx.lock().unwrap().send(ctx.conn());
        ctx.reply(b"kept");
    });
    (serve(builder, Config::builder().cores(1)), rx)
}

#[test]
fn calls_streams_and_closes_on_a_stopped_reactor_fail_at_once_instead_of_hanging() {
    let (server, handles) = server_keeping_handles();
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/keep", ""));
    assert_eq!(&c.recv().payload[..], b"kept");
    let handle = handles.recv_timeout(IO_TIMEOUT).unwrap();
    drop(c);
    server.shutdown().expect("clean shutdown");

    // Every way of using the handle now ends at once, with an error that says why.
    let h = handle.clone();
    let outcome = within(Duration::from_secs(5), move || {
        h.call(
            "/anything",
            Bytes::from_static(b"x"),
            Duration::from_secs(3600),
        )
    });
    assert_eq!(outcome, Some(Err(CallError::Stopped)), "a blocking call");

    let (tx, rx) = mpsc::channel();
    handle.call_with(
        "/anything",
        Bytes::new(),
        Duration::from_secs(3600),
        move |r| {
            let _ = tx.send(r);
        },
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).ok(),
        Some(Err(CallError::Stopped)),
        "a call with a callback"
    );

    let h = handle.clone();
    let outcome = within(Duration::from_secs(5), move || {
        let stream = h.open_stream("/echo/stream")?;
        let _ = stream.send(Bytes::from_static(b"x"));
        stream.recv()
    });
    assert_eq!(
        outcome,
        Some(Err(StreamError::Disconnected)),
        "a stream receive"
    );

    // Fire-and-forget messages are dropped, not queued forever.
    assert_eq!(handle.notify("/n", b""), Ok(()));
    assert_eq!(handle.close(), Ok(()));
}

#[test]
fn a_client_whose_runtime_stopped_fails_calls_at_once() {
    let server = serve(Server::builder(), Config::builder().cores(1));
    let client = ringrpc::Client::connect(&server.local_addr().to_string()).unwrap();
    let conn = client.conn().expect("connected");
    drop(client); // the last user of its runtime: the client's reactor stops
    let outcome = within(Duration::from_secs(5), move || {
        conn.call("/echo", Bytes::from_static(b"x"), Duration::from_secs(3600))
    });
    assert!(
        matches!(
            outcome,
            Some(Err(CallError::Stopped)) | Some(Err(CallError::Disconnected))
        ),
        "{outcome:?}"
    );
    server.shutdown().unwrap();
}

/// A server whose `/later` answers from a thread of its own after `delay` (a responder) and
/// whose `/blocking` sleeps `delay` on the blocking pool.
fn server_with_deferred_answers(delay: Duration, grace: Duration) -> RunningServer {
    let builder = Server::builder()
        .route("/later", move |ctx| {
            let responder = ctx.responder().expect("a request");
            thread::spawn(move || {
                thread::sleep(delay);
                responder.reply(b"late but owed");
            });
        })
        .route_blocking("/blocking", move |_request| {
            thread::sleep(delay);
            Ok::<_, ringrpc::HandlerError>(Bytes::from_static(b"blocking answer"))
        });
    serve(builder, Config::builder().cores(1).shutdown_grace(grace))
}

#[test]
fn graceful_shutdown_waits_for_answers_responders_and_blocking_jobs_owe() {
    let server = server_with_deferred_answers(Duration::from_millis(400), Duration::from_secs(10));
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/later", ""));
    c.send(&Frame::request(2, "/blocking", ""));
    // Both requests are received (a round trip after them proves it), then the shutdown.
    c.echo(3, b"sync");
    let started = Instant::now();
    let shutdown = thread::spawn(move || server.shutdown());
    let mut answers = [c.recv(), c.recv()];
    answers.sort_by_key(|f| f.header.seq);
    assert_eq!(&answers[0].payload[..], b"late but owed");
    assert_eq!(&answers[1].payload[..], b"blocking answer");
    c.expect_closed();
    let report = shutdown.join().unwrap().expect("clean shutdown");
    assert_eq!(report.total().answers_abandoned, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn answers_still_owed_when_the_grace_ends_are_abandoned_and_counted() {
    let server = server_with_deferred_answers(Duration::from_secs(30), Duration::from_millis(300));
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/later", ""));
    c.send(&Frame::request(2, "/later", ""));
    c.echo(3, b"sync");
    let started = Instant::now();
    let report = server.shutdown().expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the grace bounds the wait"
    );
    assert_eq!(report.total().answers_abandoned, 2);
    c.expect_closed();
}

#[test]
fn panicking_callbacks_on_a_reactor_are_contained_and_counted() {
    let builder = Server::builder()
        .on_connect(|conn| {
            if conn.peer().port() % 2 == 0 {
                panic!("connect hook fails for even ports");
            }
        })
        .on_disconnect(|_, _| panic!("disconnect hook fails"))
        .route("/call-back", |ctx| {
            // The completion runs on this reactor and panics.
            ctx.conn()
                .call_with("/nobody", Bytes::new(), Duration::from_millis(50), |_| {
                    panic!("completion fails")
                });
            ctx.reply(b"asked");
        });
    let server = serve(builder, Config::builder().cores(1));
    let handle = server.handle();
    for round in 0..4 {
        let mut c = Client::connect(server.local_addr());
        c.send(&Frame::request(1, "/call-back", ""));
        // The server's call to us comes first (it was sent before the reply); we never
        // answer it, so its completion runs at the timeout and panics.
        let call = c.recv();
        assert_eq!(call.header.cmd, Command::Request);
        assert_eq!(&c.recv().payload[..], b"asked");
        thread::sleep(Duration::from_millis(100));
        handle
            .broadcast_filtered("/b", b"", |_| panic!("filter fails"))
            .unwrap();
        c.echo(2 + round, b"still serving");
    }
    let report = server.shutdown().expect("no core died");
    let total = report.total();
    // 4 completions, 4 filters, 4 disconnects, and the connect hooks of even ports.
    assert!(total.callback_panics >= 12, "{total:?}");
}

#[test]
fn a_reply_never_overtakes_what_its_handler_sent_the_same_connection_first() {
    let builder = Server::builder()
        .route("/notify-then-reply", |ctx| {
            let conn = ctx.conn();
            conn.notify("/first", b"1").unwrap();
            conn.notify("/second", b"2").unwrap();
            ctx.reply(b"third");
        })
        .route("/call-then-reply", |ctx| {
            ctx.conn()
                .call_with("/ask", Bytes::from_static(b"q"), IO_TIMEOUT, |_| {});
            ctx.reply(b"answered");
        });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    for seq in 1..=3 {
        c.send(&Frame::request(seq, "/notify-then-reply", ""));
        let order: Vec<_> = (0..3).map(|_| c.recv()).collect();
        let payloads: Vec<&[u8]> = order.iter().map(|f| &f.payload[..]).collect();
        assert_eq!(payloads, [&b"1"[..], b"2", b"third"]);
        assert_eq!(order[2].header.cmd, Command::Response);
    }
    c.send(&Frame::request(9, "/call-then-reply", ""));
    let first = c.recv();
    assert_eq!(
        first.header.cmd,
        Command::Request,
        "the handler's call first"
    );
    assert_eq!(&c.recv().payload[..], b"answered");
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn a_body_over_the_wire_limit_is_refused_not_truncated() {
    // Zeroed memory is mapped lazily: this costs address space, not RAM.
    let huge = Bytes::from(vec![0u8; u32::MAX as usize + 1]);
    let kept = Arc::new(Mutex::new(None));
    let for_handler = huge.clone();
    let keep = kept.clone();
    let builder = Server::builder().route("/huge", move |ctx| {
        *keep.lock().unwrap() = Some(ctx.conn());
        ctx.reply_bytes(for_handler.clone());
    });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/huge", ""));
    let answer = c.recv();
    assert!(answer.header.flags.is_error());
    assert_eq!(
        &answer.payload[..],
        ringrpc::router::RESPONSE_TOO_LARGE.as_bytes()
    );
    c.echo(2, b"the connection is intact");
    let conn = kept.lock().unwrap().clone().unwrap();
    assert!(matches!(
        conn.notify("/n", &huge),
        Err(CallError::TooLarge { .. })
    ));
    drop(c);
    server.shutdown().unwrap();
}
