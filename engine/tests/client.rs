//! The client library against a real server on loopback: calls, notifies, callbacks,
//! timeouts, server→client calls, disconnects, reconnects, shared runtimes, keepalive.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::unbounded;
use ringrpc::{
    CallError, Client, ClientRuntime, Config, ConnHandle, Reconnect, Responder, RunningServer,
    Server, ServerBuilder,
};

const LONG: Duration = Duration::from_secs(20);

fn serve(builder: ServerBuilder, listen: &str) -> RunningServer {
    let config = Config::builder().cores(2).listen(listen).build().unwrap();
    builder.config(config).build().unwrap().start().unwrap()
}

#[test]
fn calls_notifies_and_callbacks_reach_the_server() {
    let (notes_tx, notes) = unbounded();
    let server = serve(
        Server::builder().route("/note", move |ctx| {
            notes_tx.send(ctx.payload().to_vec()).unwrap();
        }),
        "127.0.0.1:0",
    );
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    assert!(client.is_connected());
    for i in 0..100u32 {
        let payload = Bytes::from(format!("call {i}"));
        assert_eq!(client.call("/echo", payload.clone(), LONG), Ok(payload));
    }
    client.notify("/note", b"fire and forget").unwrap();
    assert_eq!(notes.recv_timeout(LONG).unwrap(), b"fire and forget");

    let (done_tx, done) = unbounded();
    for i in 0..10u32 {
        let done_tx = done_tx.clone();
        client.call_with("/echo", Bytes::from(i.to_string()), LONG, move |r| {
            done_tx.send(r).unwrap();
        });
    }
    let mut answers: Vec<String> = (0..10)
        .map(|_| String::from_utf8(done.recv_timeout(LONG).unwrap().unwrap().to_vec()).unwrap())
        .collect();
    answers.sort_by_key(|a| a.parse::<u32>().unwrap());
    assert_eq!(answers, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());

    // An unknown method comes back as a remote error, and the client keeps working.
    assert_eq!(
        client.call("/missing", Bytes::new(), LONG),
        Err(CallError::Remote(ringrpc::router::METHOD_NOT_FOUND.into()))
    );
    // Calls from many threads at once share the connection.
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let p = Bytes::from(format!("{t}-{i}"));
                    assert_eq!(client.call("/echo", p.clone(), LONG), Ok(p));
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    drop(client);
    server.shutdown().unwrap();
}

#[test]
fn a_call_past_its_timeout_fails_and_its_late_answer_is_discarded() {
    let held: Arc<Mutex<Vec<Responder>>> = Arc::default();
    let keep = held.clone();
    let server = serve(
        Server::builder().route("/never", move |ctx| {
            keep.lock().unwrap().push(ctx.responder().unwrap())
        }),
        "127.0.0.1:0",
    );
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    assert_eq!(
        client.call("/never", Bytes::new(), Duration::from_millis(50)),
        Err(CallError::Timeout)
    );
    // The late answer arrives and is dropped; the next call gets its own answer.
    held.lock().unwrap().pop().unwrap().reply(b"too late");
    assert_eq!(
        client.call("/echo", Bytes::from_static(b"next"), LONG),
        Ok(Bytes::from_static(b"next"))
    );
    drop(client);
    server.shutdown().unwrap();
}

#[test]
fn the_server_calls_handlers_registered_on_the_client() {
    let (conns_tx, conns) = unbounded::<ConnHandle>();
    let server = serve(
        Server::builder().on_connect(move |c| conns_tx.send(c.clone()).unwrap()),
        "127.0.0.1:0",
    );
    let client = Client::builder(&server.local_addr().to_string())
        .route("/client/upper", |ctx| {
            let up = ctx.payload().to_ascii_uppercase();
            ctx.reply(&up);
        })
        .connect()
        .unwrap();
    let handle = conns.recv_timeout(LONG).unwrap();
    assert_eq!(
        handle.call("/client/upper", Bytes::from_static(b"shout"), LONG),
        Ok(Bytes::from_static(b"SHOUT"))
    );
    drop(client);
    server.shutdown().unwrap();
}

#[test]
fn clients_on_a_shared_runtime_each_answer_with_their_own_handlers() {
    let (conns_tx, conns) = unbounded::<ConnHandle>();
    let server = serve(
        Server::builder().on_connect(move |c| conns_tx.send(c.clone()).unwrap()),
        "127.0.0.1:0",
    );
    let addr = server.local_addr().to_string();
    let runtime = ClientRuntime::new().unwrap();
    let connect = |name: &'static str| {
        let client = Client::builder(&addr)
            .runtime(&runtime)
            .route("/whoami", move |ctx| {
                ctx.reply(name.as_bytes());
            })
            .connect()
            .unwrap();
        // The server's handle to this client's connection (accepted in order).
        (client, conns.recv_timeout(LONG).unwrap())
    };
    let (alice, to_alice) = connect("alice");
    let (bob, to_bob) = connect("bob");
    let ask = |to: &ConnHandle| to.call("/whoami", Bytes::new(), LONG);
    assert_eq!(ask(&to_alice), Ok(Bytes::from_static(b"alice")));
    assert_eq!(ask(&to_bob), Ok(Bytes::from_static(b"bob")));
    // And each still calls the server as usual.
    assert_eq!(
        alice.call("/echo", "a".into(), LONG),
        Ok(Bytes::from_static(b"a"))
    );
    assert_eq!(
        bob.call("/echo", "b".into(), LONG),
        Ok(Bytes::from_static(b"b"))
    );
    drop((alice, bob));
    drop(runtime);
    server.shutdown().unwrap();
}

#[test]
fn calls_pending_at_a_disconnect_fail_at_once() {
    let (conns_tx, conns) = unbounded::<ConnHandle>();
    let held: Arc<Mutex<Vec<Responder>>> = Arc::default();
    let keep = held.clone();
    let server = serve(
        Server::builder()
            .on_connect(move |c| conns_tx.send(c.clone()).unwrap())
            .route("/never", move |ctx| {
                keep.lock().unwrap().push(ctx.responder().unwrap())
            }),
        "127.0.0.1:0",
    );
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let server_side = conns.recv_timeout(LONG).unwrap();
    let pending = {
        let client = client.clone();
        thread::spawn(move || client.call("/never", Bytes::new(), Duration::from_secs(3600)))
    };
    while held.lock().unwrap().is_empty() {
        thread::sleep(Duration::from_millis(5));
    }
    server_side.close().unwrap();
    assert_eq!(pending.join().unwrap(), Err(CallError::Disconnected));
    while client.is_connected() {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        client.call("/echo", Bytes::new(), LONG),
        Err(CallError::Disconnected)
    );
    assert_eq!(client.notify("/x", b""), Err(CallError::Disconnected));
    drop(client);
    server.shutdown().unwrap();
}

#[test]
fn the_client_reconnects_after_the_server_restarts() {
    let first = serve(Server::builder(), "127.0.0.1:0");
    let addr = first.local_addr();
    let (reconnected_tx, reconnected) = unbounded();
    let client = Client::builder(&addr.to_string())
        .reconnect(Reconnect {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_attempts: 100,
        })
        .on_reconnect(move |attempt| reconnected_tx.send(attempt).unwrap())
        .connect()
        .unwrap();
    assert_eq!(
        client.call("/echo", Bytes::from_static(b"one"), LONG),
        Ok(Bytes::from_static(b"one"))
    );
    first.shutdown().unwrap();
    let second = serve(Server::builder(), &addr.to_string());
    let attempt = reconnected.recv_timeout(LONG).unwrap();
    assert!(attempt >= 1);
    assert_eq!(
        client.call("/echo", Bytes::from_static(b"two"), LONG),
        Ok(Bytes::from_static(b"two"))
    );
    drop(client);
    second.shutdown().unwrap();
}

#[test]
fn many_clients_share_one_runtime() {
    let server = serve(Server::builder(), "127.0.0.1:0");
    let runtime = ClientRuntime::new().unwrap();
    let clients: Vec<Client> = (0..32)
        .map(|_| {
            Client::builder(&server.local_addr().to_string())
                .runtime(&runtime)
                .connect()
                .unwrap()
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        let p = Bytes::from(format!("client {i}"));
        assert_eq!(c.call("/echo", p.clone(), LONG), Ok(p));
    }
    drop(clients);
    drop(runtime);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().accepted, 32);
}

#[test]
fn client_keepalive_keeps_an_idle_connection_open_past_the_server_idle_timeout() {
    let (gone_tx, gone) = unbounded();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .on_disconnect(move |info, reason| gone_tx.send((info.peer, reason.to_string())).unwrap())
        .build()
        .unwrap()
        .start()
        .unwrap();
    let addr = server.local_addr().to_string();
    let kept = Client::builder(&addr)
        .keepalive(Some(Duration::from_millis(50)))
        .connect()
        .unwrap();
    let silent = Client::connect(&addr).unwrap();
    // The silent client is closed for idleness; the one with keepalive is not.
    let (_, reason) = gone.recv_timeout(LONG).unwrap();
    assert_eq!(reason, "idle timeout");
    // A witness connects now, later than the keepalive client, and stays silent: by the time
    // it is closed for idleness the keepalive client has been connected for longer than the
    // idle timeout, and the single reactor checks both against the same clock. So the next
    // disconnect must be the witness's, and the keepalive client must not be closed with it.
    let witness = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let (peer, reason) = gone.recv_timeout(LONG).unwrap();
    assert_eq!(
        (peer, reason.as_str()),
        (witness.local_addr().unwrap(), "idle timeout"),
        "the keepalive client was closed"
    );
    assert_eq!(
        kept.call("/echo", Bytes::from_static(b"alive"), LONG),
        Ok(Bytes::from_static(b"alive"))
    );
    drop((kept, silent, witness));
    server.shutdown().unwrap();
    // Everything left closed at shutdown, the keepalive client included: none of it idle.
    let rest: Vec<String> = gone.try_iter().map(|(_, reason)| reason).collect();
    assert!(
        rest.iter().all(|r| r != "idle timeout"),
        "closed for idleness after the witness: {rest:?}"
    );
}

#[test]
fn connecting_to_nothing_names_the_target() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(&format!("127.0.0.1:{port}")).unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// Found by the simulator (`scripts/simulate`, seed 12 of its first version): a client
/// whose queued calls pass its send-queue limit used to stop reading, exactly like a server;
/// a server whose answers passed its own limit stopped reading too, and neither ever wrote
/// again. A client now keeps reading while overstocked (its new calls are refused instead),
/// so every answer arrives.
#[test]
fn a_client_over_its_send_limit_keeps_reading_so_a_paused_server_drains() {
    // The server pauses early; the client's limit is the default 4 MiB.
    let server = common::start_with(Config::builder().cores(1).max_send_queue_bytes(64 << 10));
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    // 32 MiB of calls at once: past the client's limit, and past what the kernel's buffers
    // of both directions hold on loopback.
    let payload = Bytes::from(vec![7u8; 64 << 10]);
    let calls = 512;
    let (tx, answers) = unbounded();
    for _ in 0..calls {
        let tx = tx.clone();
        client.call_with("/echo", payload.clone(), LONG, move |r| {
            let _ = tx.send(r.map(|p| p.len()));
        });
    }
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..calls {
        match answers.recv_timeout(LONG + Duration::from_secs(5)) {
            Ok(Ok(len)) => {
                assert_eq!(len, payload.len());
                ok += 1;
            }
            Ok(Err(CallError::Overstocked)) => refused += 1,
            other => panic!("after {ok} answers: {other:?}"),
        }
    }
    assert_eq!(ok + refused, calls);
    assert!(ok > 0);
    drop(client);
    server.shutdown().unwrap();
}
