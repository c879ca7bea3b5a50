//! Loopback tests of the embedding API: async responders, server→client calls and
//! notifies, broadcast, hooks, closure handlers. Ordering and outcomes, never timing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::Client;
use crossbeam_channel::{Receiver, unbounded};
use ringrpc::error::RESPONDER_DROPPED;
use ringrpc::{
    CallError, Config, ConnHandle, DisconnectReason, Responder, RunningServer, Server,
    ServerBuilder,
};
use ringrpc_protocol::{Command, Frame};

const LONG: Duration = Duration::from_secs(20);

fn start(builder: ServerBuilder, cores: usize) -> RunningServer {
    let config = Config::builder()
        .cores(cores)
        .listen("127.0.0.1:0")
        .build()
        .unwrap();
    builder.config(config).build().unwrap().start().unwrap()
}

/// A server whose accepted connections arrive on the returned channel.
fn start_with_conns(cores: usize) -> (RunningServer, Receiver<ConnHandle>) {
    let (tx, rx) = unbounded();
    let server = start(
        Server::builder().on_connect(move |conn| {
            let _ = tx.send(conn.clone());
        }),
        cores,
    );
    (server, rx)
}

#[test]
fn a_responder_answers_from_another_thread() {
    let (jobs_tx, jobs_rx) = unbounded::<(Responder, Vec<u8>)>();
    let worker = thread::spawn(move || {
        for (responder, mut payload) in jobs_rx {
            payload.reverse();
            responder.reply(&payload);
        }
    });
    let server = start(
        Server::builder().route("/later", move |ctx| {
            let payload = ctx.payload().to_vec();
            let responder = ctx.responder().expect("a request can be answered later");
            jobs_tx.send((responder, payload)).unwrap();
        }),
        2,
    );
    let mut c = Client::connect(server.local_addr());
    for seq in 0..50u64 {
        c.send(&Frame::request(seq, "/later", format!("abc{seq}")));
    }
    for seq in 0..50u64 {
        let f = c.recv();
        assert_eq!(f.header.cmd, Command::Response);
        assert_eq!(
            f.header.seq, seq,
            "answered in the order the worker finished"
        );
        let mut expected = format!("abc{seq}").into_bytes();
        expected.reverse();
        assert_eq!(f.payload, expected);
    }
    // The engine still serves synchronous requests on the same connection.
    c.echo(100, b"sync");
    server.shutdown().unwrap();
    worker.join().unwrap();
}

#[test]
fn a_dropped_responder_sends_an_error_instead_of_silence() {
    let server = start(
        Server::builder().route("/forget", |ctx| drop(ctx.responder())),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(7, "/forget", ""));
    let f = c.recv();
    assert!(f.is_error());
    assert_eq!(f.header.seq, 7);
    assert_eq!(&f.payload[..], RESPONDER_DROPPED.as_bytes());
    server.shutdown().unwrap();
}

#[test]
fn the_server_notifies_and_calls_its_client() {
    let (server, conns) = start_with_conns(2);
    let mut c = Client::connect(server.local_addr());
    let handle = conns.recv_timeout(LONG).unwrap();
    handle.notify("/client/news", b"hello client").unwrap();
    let n = c.recv();
    assert_eq!(n.header.cmd, Command::Notify);
    assert_eq!(&n.method[..], b"/client/news");
    assert_eq!(&n.payload[..], b"hello client");

    let caller = {
        let handle = handle.clone();
        thread::spawn(move || handle.call("/client/add", Bytes::from_static(b"2+2"), LONG))
    };
    let request = c.recv();
    assert_eq!(request.header.cmd, Command::Request);
    assert_eq!(&request.method[..], b"/client/add");
    assert_eq!(&request.payload[..], b"2+2");
    c.send(&Frame::response_to(&request.header, "/client/add", "4"));
    assert_eq!(caller.join().unwrap(), Ok(Bytes::from_static(b"4")));

    // An error Response from the client surfaces as a remote error.
    let caller = thread::spawn(move || handle.call("/client/fail", Bytes::new(), LONG));
    let request = c.recv();
    c.send(&Frame::error_response_to(
        &request.header,
        "/client/fail",
        "no",
    ));
    assert_eq!(caller.join().unwrap(), Err(CallError::Remote("no".into())));
    server.shutdown().unwrap();
}

#[test]
fn an_unanswered_call_times_out_and_its_late_answer_is_discarded() {
    let (server, conns) = start_with_conns(1);
    let mut c = Client::connect(server.local_addr());
    let handle = conns.recv_timeout(LONG).unwrap();
    let outcome = handle.call("/client/slow", Bytes::new(), Duration::from_millis(50));
    assert_eq!(outcome, Err(CallError::Timeout));
    let request = c.recv();
    c.send(&Frame::response_to(
        &request.header,
        "/client/slow",
        "too late",
    ));
    // The late answer is dropped; the connection keeps serving.
    c.echo(1, b"still here");
    server.shutdown().unwrap();
}

#[test]
fn pending_calls_fail_at_once_when_the_client_disconnects() {
    let (server, conns) = start_with_conns(1);
    let mut c = Client::connect(server.local_addr());
    let handle = conns.recv_timeout(LONG).unwrap();
    let caller = {
        let handle = handle.clone();
        thread::spawn(move || handle.call("/client/never", Bytes::new(), Duration::from_secs(3600)))
    };
    let _request = c.recv();
    drop(c);
    assert_eq!(caller.join().unwrap(), Err(CallError::Disconnected));
    // A call on a closed connection fails at once too.
    assert_eq!(
        handle.call("/client/never", Bytes::new(), Duration::from_secs(3600)),
        Err(CallError::Disconnected)
    );
    server.shutdown().unwrap();
}

#[test]
fn a_handler_calls_its_client_with_a_callback_and_cannot_block() {
    let (results_tx, results) = unbounded();
    let server = start(
        Server::builder().route("/ask-back", move |ctx| {
            let conn = ctx.conn();
            // Blocking here would stall the whole core: refused.
            let blocked = conn.call("/client/x", Bytes::new(), LONG);
            let responder = ctx.responder().unwrap();
            let results_tx = results_tx.clone();
            conn.call_with(
                "/client/echo",
                Bytes::from_static(b"ping"),
                LONG,
                move |outcome| {
                    let answer = outcome.clone().unwrap_or_default();
                    let _ = results_tx.send((blocked, outcome));
                    responder.reply(&answer);
                },
            );
        }),
        1,
    );
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/ask-back", ""));
    let back = c.recv();
    assert_eq!(back.header.cmd, Command::Request);
    assert_eq!(&back.payload[..], b"ping");
    c.send(&Frame::response_to(&back.header, "/client/echo", "pong"));
    let answer = c.recv();
    assert_eq!((answer.header.seq, &answer.payload[..]), (1, &b"pong"[..]));
    let (blocked, outcome) = results.recv_timeout(LONG).unwrap();
    assert_eq!(blocked, Err(CallError::WouldBlockReactor));
    assert_eq!(outcome, Ok(Bytes::from_static(b"pong")));
    server.shutdown().unwrap();
}

#[test]
fn broadcast_reaches_every_connection_on_every_core_exactly_once() {
    let (server, conns) = start_with_conns(2);
    let mut clients: Vec<Client> = (0..24)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    let handles: Vec<ConnHandle> = (0..24).map(|_| conns.recv_timeout(LONG).unwrap()).collect();
    assert!(
        handles.iter().any(|h| h.id().core() == 0) && handles.iter().any(|h| h.id().core() == 1)
    );
    let handle = server.handle();
    handle.broadcast("/news", b"to everyone").unwrap();
    let odd_port = |port: u16| port % 2 == 1;
    handle
        .broadcast_filtered("/odd", b"odd ports only", move |info| {
            odd_port(info.peer.port())
        })
        .unwrap();
    for c in &mut clients {
        let port = c.sock.local_addr().unwrap().port();
        let f = c.recv();
        assert_eq!(
            (f.header.cmd, &f.method[..]),
            (Command::Notify, &b"/news"[..])
        );
        if odd_port(port) {
            assert_eq!(&c.recv().method[..], b"/odd");
        }
        // Nothing else was queued before this echo's answer: each broadcast came once.
        c.echo(9, b"after");
    }
    let report = server.shutdown().unwrap();
    let odd = clients
        .iter()
        .filter(|c| odd_port(c.sock.local_addr().unwrap().port()))
        .count();
    assert_eq!(report.total().broadcasts, (24 + odd) as u64);
}

#[test]
fn hooks_see_connects_and_disconnects_with_their_reason() {
    let (events_tx, events) = unbounded::<String>();
    let connects = events_tx.clone();
    let server = start(
        Server::builder()
            .on_connect(move |conn| connects.send(format!("connect {}", conn.peer())).unwrap())
            .on_disconnect(move |info, reason| {
                let kind = match reason {
                    DisconnectReason::PeerClosed => "peer closed",
                    DisconnectReason::Protocol(_) => "protocol",
                    DisconnectReason::Closed => "closed",
                    _ => "other",
                };
                events_tx
                    .send(format!("disconnect {} {kind}", info.peer))
                    .unwrap();
            }),
        1,
    );
    let addr = server.local_addr();
    let mut polite = Client::connect(addr);
    polite.echo(1, b"x");
    let polite_addr = polite.sock.local_addr().unwrap();
    drop(polite);
    // Events of one connection come in order; wait for these before the next connection.
    let mut got: Vec<String> = (0..2).map(|_| events.recv_timeout(LONG).unwrap()).collect();
    let mut rude = Client::connect(addr);
    let rude_addr = rude.sock.local_addr().unwrap();
    rude.send_raw(&[0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    rude.expect_closed();
    got.extend((0..2).map(|_| events.recv_timeout(LONG).unwrap()));
    assert_eq!(
        got,
        vec![
            format!("connect {polite_addr}"),
            format!("disconnect {polite_addr} peer closed"),
            format!("connect {rude_addr}"),
            format!("disconnect {rude_addr} protocol"),
        ]
    );
    server.shutdown().unwrap();
}

#[test]
fn a_handle_closes_its_connection_after_queued_output() {
    let (server, conns) = start_with_conns(1);
    let mut c = Client::connect(server.local_addr());
    let handle = conns.recv_timeout(LONG).unwrap();
    handle.notify("/bye", b"last words").unwrap();
    handle.close().unwrap();
    assert_eq!(&c.recv().payload[..], b"last words");
    assert!(c.try_recv().unwrap().is_none(), "then a clean close");
    server.shutdown().unwrap();
}

#[test]
fn closure_handlers_keep_their_own_state() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = start(
        Server::builder().route("/count", move |ctx| {
            let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
            ctx.reply(n.to_string().as_bytes());
        }),
        2,
    );
    let mut c = Client::connect(server.local_addr());
    for seq in 1..=5u64 {
        c.send(&Frame::request(seq, "/count", ""));
        assert_eq!(c.recv().payload, seq.to_string().into_bytes());
    }
    assert_eq!(calls.load(Ordering::Relaxed), 5);
    server.shutdown().unwrap();
}

#[test]
fn a_client_that_never_reads_is_paused_at_its_limit_and_others_are_unaffected() {
    let (overstock_tx, overstocked) = unbounded();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .max_send_queue_bytes(1 << 20)
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .on_overstock(move |info| {
            let _ = overstock_tx.send(info.peer);
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    let addr = server.local_addr();
    let payload = vec![5u8; 64 * 1024];
    let frame = Frame::request(1, "/echo", payload.clone()).to_bytes();

    // Writes until the socket pushes back: the server stopped reading.
    let mut slow = Client::connect(addr);
    slow.sock
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut written = 0usize;
    for _ in 0..1024 {
        if std::io::Write::write_all(&mut slow.sock, &frame).is_err() {
            break;
        }
        written += 1;
    }
    assert!(
        written < 1024,
        "the server kept reading all 64 MiB from a client that never reads"
    );
    assert_eq!(
        overstocked.recv_timeout(LONG).unwrap(),
        slow.sock.local_addr().unwrap()
    );

    // Another client is served while the slow one is paused, and broadcasts to the slow one
    // are dropped rather than queued.
    let mut other = Client::connect(addr);
    other.echo(1, b"unaffected");
    server.handle().broadcast("/news", b"x").unwrap();
    assert_eq!(&other.recv().method[..], b"/news");

    // Once the slow client reads, the server resumes and answers every request it took in.
    slow.sock.set_write_timeout(None).unwrap();
    let mut answered = 0usize;
    slow.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(Some(f)) = slow.try_recv() {
        assert_eq!(f.payload.len(), payload.len());
        answered += 1;
    }
    drop((slow, other));
    let report = server.shutdown().unwrap();
    let total = report.total();
    assert!(total.overstocks >= 1);
    assert_eq!(total.broadcast_drops, 1);
    // Everything the server read was answered, and it read a bounded amount.
    assert_eq!(total.requests, answered as u64 + 1);
    assert!(answered <= written);
}

#[test]
fn idle_connections_are_closed_and_active_ones_kept() {
    let (reasons_tx, reasons) = unbounded();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .idle_timeout(Some(Duration::from_millis(400)))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .on_disconnect(move |info, reason| {
            let _ = reasons_tx.send((info.peer, matches!(reason, DisconnectReason::IdleTimeout)));
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut silent = Client::connect(server.local_addr());
    let mut active = Client::connect(server.local_addr());
    // The active client keeps talking for well past the timeout; the silent one says nothing.
    for seq in 0..20u64 {
        active.echo(seq, b"still here");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        silent.try_recv().unwrap().is_none(),
        "the silent connection was closed"
    );
    let (peer, idle) = reasons.recv_timeout(LONG).unwrap();
    assert_eq!(peer, silent.sock.local_addr().unwrap());
    assert!(idle, "closed for the idle timeout");
    active.echo(99, b"and still served");
    drop(active);
    server.shutdown().unwrap();
}

#[test]
fn keepalive_pings_a_quiet_peer_and_its_pong_keeps_it_open() {
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .keepalive(Some(Duration::from_millis(100)))
        .idle_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let mut c = Client::connect(server.local_addr());
    for _ in 0..3 {
        let ping = c.recv();
        assert_eq!(ping.header.cmd, Command::Ping);
        c.send(&Frame::pong());
    }
    c.echo(1, b"open after three keepalive rounds");
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn keepalive_must_be_shorter_than_the_idle_timeout() {
    let err = Config::builder()
        .keepalive(Some(Duration::from_secs(5)))
        .idle_timeout(Some(Duration::from_secs(5)))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("shorter than the idle timeout"),
        "{err}"
    );
}

#[test]
fn one_server_listens_on_several_addresses() {
    let config = Config::builder()
        .cores(2)
        .listen("127.0.0.1:0")
        .also_listen("127.0.0.1:0")
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), addrs[1].port());
    for (i, addr) in addrs.iter().enumerate() {
        for seq in 0..4u64 {
            Client::connect(*addr).echo(seq, format!("via address {i}").as_bytes());
        }
    }
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 8);
}
