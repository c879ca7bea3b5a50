//! Streams and subscribe on a real server: arpc's exact stream bytes both ways, every edge
//! (empty frames, EOF on data or alone, unknown ids and methods, both sides opening,
//! disconnect, error ends, timeouts), the client API, and bounded memory with a slow
//! consumer.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Client as Raw;
use crossbeam_channel::unbounded;
use ringrpc::{Client, Config, RunningServer, Server, ServerBuilder, StreamError};
use ringrpc_protocol::{Command, Flags, Frame};

const LONG: Duration = Duration::from_secs(20);

fn serve(builder: ServerBuilder) -> RunningServer {
    serve_with(builder, Config::builder().cores(2))
}

fn serve_with(builder: ServerBuilder, config: ringrpc::ConfigBuilder) -> RunningServer {
    let config = config.listen("127.0.0.1:0").build().unwrap();
    builder.config(config).build().unwrap().start().unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A Stream frame as a peer builds it: `local` = sent by the stream's opener.
fn stream_frame(id: u64, method: &str, data: &[u8], local: bool, eof: bool) -> Frame {
    let mut f = Frame::new(
        Command::Stream,
        Flags::default(),
        id,
        Bytes::copy_from_slice(method.as_bytes()),
        Bytes::copy_from_slice(data),
    );
    f.header.stream_local = local;
    f.header.stream_eof = eof;
    f
}

/// Uppercases every frame, EOF after the peer's EOF (the example server).
fn upper_server() -> RunningServer {
    serve(Server::builder().route_stream("/stream", |ctx| {
        let loud = ctx.data().to_ascii_uppercase();
        if !loud.is_empty() {
            ctx.send(&loud).unwrap();
        }
        if ctx.is_eof() {
            ctx.close_send().unwrap();
        }
    }))
}

#[test]
fn arpc_golden_bytes_peer_opens() {
    let server = upper_server();
    let mut raw = Raw::connect(server.local_addr());
    // A fresh Go client's stream 2 to /stream: "a", "b", then CloseSend.
    raw.send_raw(&hex(
        "08000000 00 86 00 07 0200000000000000 2f73747265616d 61",
    ));
    raw.send_raw(&hex(
        "08000000 00 86 00 07 0200000000000000 2f73747265616d 62",
    ));
    raw.send_raw(&hex("07000000 00 c6 00 07 0200000000000000 2f73747265616d"));
    let a = raw.recv().to_bytes();
    let b = raw.recv().to_bytes();
    let eof = raw.recv().to_bytes();
    assert_eq!(
        &a[..],
        &hex("08000000 00 06 00 07 0200000000000000 2f73747265616d 41")[..]
    );
    assert_eq!(
        &b[..],
        &hex("08000000 00 06 00 07 0200000000000000 2f73747265616d 42")[..]
    );
    assert_eq!(
        &eof[..],
        &hex("07000000 00 46 00 07 0200000000000000 2f73747265616d")[..]
    );
    // The connection still serves calls.
    raw.echo(3, b"after");
    server.shutdown().unwrap();
}

#[test]
fn arpc_golden_bytes_we_open() {
    let (streams_tx, streams) = unbounded();
    let server = serve(Server::builder().on_connect(move |conn| {
        streams_tx
            .send(conn.open_stream("/stream").unwrap())
            .unwrap();
    }));
    let mut raw = Raw::connect(server.local_addr());
    let stream = streams.recv_timeout(LONG).unwrap();
    stream.send("a").unwrap();
    stream.close_send().unwrap();
    // Our first call seq is 1, so the stream id is 1; we opened it: local bit set.
    assert_eq!(
        &raw.recv().to_bytes()[..],
        &hex("08000000 00 86 00 07 0100000000000000 2f73747265616d 61")[..]
    );
    assert_eq!(
        &raw.recv().to_bytes()[..],
        &hex("07000000 00 c6 00 07 0100000000000000 2f73747265616d")[..]
    );
    assert_eq!(stream.id(), 1);
    // The peer answers as Go's remote stream does: no local bit; EOF on the data frame.
    raw.send_raw(&hex(
        "08000000 00 46 00 07 0100000000000000 2f73747265616d 41",
    ));
    assert_eq!(
        stream.recv_timeout(LONG).unwrap().as_deref(),
        Some(&b"A"[..])
    );
    assert_eq!(stream.recv_timeout(LONG), Ok(None));
    server.shutdown().unwrap();
}

#[test]
fn empty_frames_carry_nothing_and_eof_may_come_alone_or_on_data() {
    let (got_tx, got) = unbounded();
    let server = serve(
        Server::builder().route_stream_blocking("/collect", move |stream| {
            let mut items = Vec::new();
            loop {
                match stream.recv() {
                    Ok(Some(data)) => items.push(data),
                    Ok(None) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            got_tx.send(items).unwrap();
        }),
    );
    let mut raw = Raw::connect(server.local_addr());
    raw.send(&stream_frame(5, "/collect", b"", true, false));
    raw.send(&stream_frame(5, "/collect", b"x", true, false));
    raw.send(&stream_frame(5, "/collect", b"", true, false));
    raw.send(&stream_frame(5, "/collect", b"last", true, true));
    let items = got.recv_timeout(LONG).unwrap();
    assert_eq!(items, vec![Bytes::from("x"), Bytes::from("last")]);
    // The handler returned: dropping its stream sends our EOF.
    let eof = raw.recv();
    assert_eq!(eof.header.cmd, Command::Stream);
    assert!(eof.header.stream_eof && !eof.header.stream_local);
    assert_eq!(eof.header.seq, 5);
    assert!(eof.payload.is_empty());

    raw.send(&stream_frame(6, "/collect", b"", true, true));
    assert_eq!(got.recv_timeout(LONG).unwrap(), Vec::<Bytes>::new());
    server.shutdown().unwrap();
}

#[test]
fn unknown_methods_get_an_error_end_and_unknown_ids_are_dropped() {
    let server = upper_server();
    let mut raw = Raw::connect(server.local_addr());
    raw.send(&stream_frame(9, "/nope", b"hi", true, false));
    let end = raw.recv();
    assert_eq!(end.header.seq, 9);
    assert!(end.header.stream_eof && end.header.flags.is_error());
    assert_eq!(&end.payload[..], b"stream method not found");
    // No local bit: a frame of a stream we would have opened; we have none: dropped.
    raw.send(&stream_frame(77, "/stream", b"hi", false, false));
    raw.echo(1, b"still here");
    server.shutdown().unwrap();
}

#[test]
fn both_sides_open_streams_with_the_same_id() {
    let (streams_tx, streams) = unbounded();
    let server = serve(
        Server::builder()
            .on_connect(move |conn| {
                streams_tx.send(conn.clone()).unwrap();
            })
            .route_stream("/stream", |ctx| {
                let loud = ctx.data().to_ascii_uppercase();
                if !loud.is_empty() {
                    ctx.send(&loud).unwrap();
                }
            }),
    );
    let mut raw = Raw::connect(server.local_addr());
    let conn = streams.recv_timeout(LONG).unwrap();
    let ours = conn.open_stream("/theirs").unwrap();
    ours.send("from server").unwrap();
    let f = raw.recv();
    assert_eq!((f.header.seq, f.header.stream_local), (1, true));
    // The peer opens its own stream 1 too.
    raw.send(&stream_frame(1, "/stream", b"from peer", true, false));
    let f = raw.recv();
    assert_eq!((f.header.seq, f.header.stream_local), (1, false));
    assert_eq!(&f.payload[..], b"FROM PEER");
    // And answers ours.
    raw.send(&stream_frame(1, "/theirs", b"reply", false, false));
    assert_eq!(
        ours.recv_timeout(LONG).unwrap().as_deref(),
        Some(&b"reply"[..])
    );
    server.shutdown().unwrap();
}

#[test]
fn error_end_and_disconnect_end_streams() {
    let (streams_tx, streams) = unbounded();
    let server = serve(Server::builder().on_connect(move |conn| {
        streams_tx.send(conn.open_stream("/x").unwrap()).unwrap();
        streams_tx.send(conn.open_stream("/y").unwrap()).unwrap();
    }));
    let mut raw = Raw::connect(server.local_addr());
    let x = streams.recv_timeout(LONG).unwrap();
    let y = streams.recv_timeout(LONG).unwrap();
    x.send("go").unwrap();
    let f = raw.recv();
    let mut err = stream_frame(f.header.seq, "/x", b"it broke", false, true);
    err.header.flags = Flags(Flags::ERROR);
    raw.send(&err);
    assert_eq!(
        x.recv_timeout(LONG),
        Err(StreamError::Remote("it broke".into()))
    );
    drop(raw);
    assert_eq!(y.recv_timeout(LONG), Err(StreamError::Disconnected));
    assert_eq!(y.send("late"), Err(StreamError::Disconnected));
    server.shutdown().unwrap();
}

#[test]
fn a_whole_stream_timeout_ends_both_sides() {
    let server = serve(Server::builder().route_stream("/silent", |_ctx| {}));
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let stream = client
        .open_stream_with("/silent", Some(Duration::from_millis(200)))
        .unwrap();
    stream.send("anyone?").unwrap();
    let started = Instant::now();
    assert_eq!(stream.recv_timeout(LONG), Err(StreamError::Timeout));
    assert!(started.elapsed() < LONG);
    assert_eq!(stream.send("more"), Err(StreamError::Timeout));
    server.shutdown().unwrap();
}

#[test]
fn client_streams_echo_in_order_and_half_close() {
    let server = serve(Server::builder());
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let stream = client.open_stream("/echo/stream").unwrap();
    let sender = stream.sender();
    let writer = thread::spawn(move || {
        for i in 0..2000u32 {
            sender.send(format!("frame {i}")).unwrap();
        }
        sender.close_send().unwrap();
    });
    for i in 0..2000u32 {
        let got = stream.recv_timeout(LONG).unwrap().unwrap();
        assert_eq!(got, Bytes::from(format!("frame {i}")));
    }
    assert_eq!(stream.recv_timeout(LONG), Ok(None));
    writer.join().unwrap();
    assert_eq!(stream.send("after close"), Err(StreamError::SendClosed));
    drop(client);
    let total = server.shutdown().unwrap().total();
    assert_eq!(total.streams_opened, 1);
    assert_eq!(total.stream_frames, 2001, "2000 frames and the EOF");
}

#[test]
fn a_server_opens_a_stream_to_a_client_handler() {
    let (conns_tx, conns) = unbounded();
    let server = serve(Server::builder().on_connect(move |conn| {
        conns_tx.send(conn.clone()).unwrap();
    }));
    let client = Client::builder(&server.local_addr().to_string())
        .route_stream_blocking("/feed", |stream| {
            while let Ok(Some(data)) = stream.recv() {
                stream.send([&b"ack "[..], &data].concat()).unwrap();
            }
        })
        .connect()
        .unwrap();
    let conn = conns.recv_timeout(LONG).unwrap();
    let stream = conn.open_stream("/feed").unwrap();
    stream.send("one").unwrap();
    stream.send("two").unwrap();
    stream.close_send().unwrap();
    assert_eq!(stream.recv_timeout(LONG).unwrap().unwrap(), "ack one");
    assert_eq!(stream.recv_timeout(LONG).unwrap().unwrap(), "ack two");
    assert_eq!(stream.recv_timeout(LONG), Ok(None));
    drop(client);
    server.shutdown().unwrap();
}

#[test]
fn subscribe_gets_replies_then_the_end_or_an_error() {
    let server = serve(
        Server::builder().route_subscribe("/count", |request, replies| {
            let n: u32 = std::str::from_utf8(&request).unwrap().parse().unwrap_or(0);
            // Answer from another thread, as a real feed would.
            thread::spawn(move || {
                if n == 0 {
                    replies.reply_error("nothing to count").unwrap();
                    return;
                }
                for i in 1..=n {
                    replies.reply(i.to_string()).unwrap();
                }
                replies.reply_end().unwrap();
            });
        }),
    );
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let replies: Vec<_> = client
        .subscribe("/count", "5", Some(LONG))
        .unwrap()
        .collect();
    let expected: Vec<Result<Bytes, StreamError>> =
        (1..=5).map(|i| Ok(Bytes::from(i.to_string()))).collect();
    assert_eq!(replies, expected);
    let replies: Vec<_> = client
        .subscribe("/count", "0", Some(LONG))
        .unwrap()
        .collect();
    assert_eq!(
        replies,
        vec![Err(StreamError::Remote("nothing to count".into()))]
    );
    server.shutdown().unwrap();
}

#[test]
fn a_panicking_stream_handler_ends_only_its_stream() {
    let server = serve(Server::builder().route_stream("/boom", |_ctx| panic!("boom")));
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let stream = client.open_stream("/boom").unwrap();
    stream.send("x").unwrap();
    assert_eq!(
        stream.recv_timeout(LONG),
        Err(StreamError::Remote(
            "internal error: stream handler panicked".into()
        ))
    );
    assert_eq!(
        client.call("/echo", "ok".into(), LONG).unwrap(),
        Bytes::from("ok")
    );
    server.shutdown().unwrap();
}

#[test]
fn too_many_streams_are_refused_with_an_error_end() {
    let server = serve_with(
        Server::builder().route_stream("/hold", |_ctx| {}),
        Config::builder().cores(1).max_streams_per_conn(2),
    );
    let mut raw = Raw::connect(server.local_addr());
    for id in 1..=3 {
        raw.send(&stream_frame(id, "/hold", b"x", true, false));
    }
    let end = raw.recv();
    assert_eq!(end.header.seq, 3);
    assert!(end.header.flags.is_error());
    assert_eq!(
        &end.payload[..],
        b"too many open streams on this connection"
    );
    server.shutdown().unwrap();
}

/// A consumer that does not read holds the connection's reading and, through TCP, the
/// sender's window: memory stays bounded, and nothing is lost once it reads.
#[test]
fn a_slow_consumer_bounds_memory_and_loses_nothing() {
    const FRAME: usize = 64 * 1024;
    const FRAMES: usize = 768; // 48 MiB in all
    let (release_tx, release) = unbounded::<()>();
    let (done_tx, done) = unbounded();
    let server = serve_with(
        Server::builder().route_stream_blocking("/sink", move |stream| {
            release.recv().unwrap();
            let mut total = 0usize;
            let mut next = 0u8;
            while let Some(data) = stream.recv().unwrap() {
                assert!(data.iter().all(|&b| b == next), "frames out of order");
                next = next.wrapping_add(1);
                total += data.len();
            }
            done_tx.send(total).unwrap();
        }),
        // Each refill of the inbox costs a wake-up of the consumer and of the reactor; a
        // larger inbox keeps the test quick on a loaded machine.
        Config::builder().cores(1).stream_queue_bytes(1 << 20),
    );
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let stream = client.open_stream("/sink").unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let sender = stream.sender();
        let sent = sent.clone();
        thread::spawn(move || {
            for i in 0..FRAMES {
                sender.send(vec![i as u8; FRAME]).unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sender.close_send().unwrap();
        })
    };
    // Wait until the writer stalls: the count stops moving.
    let mut last = usize::MAX;
    let deadline = Instant::now() + LONG;
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = sent.load(Ordering::Relaxed);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let stalled_at = sent.load(Ordering::Relaxed);
    // Inbox (1 MiB + one receive) + socket buffers both ways + the client's window
    // (1 MiB) + its send queue limit (4 MiB): far below the 48 MiB offered.
    assert!(
        stalled_at * FRAME < 32 << 20,
        "the writer got {} MiB out before stalling",
        (stalled_at * FRAME) >> 20
    );
    release_tx.send(()).unwrap();
    assert_eq!(done.recv_timeout(LONG * 6).unwrap(), FRAME * FRAMES);
    writer.join().unwrap();
    server.shutdown().unwrap();
}

#[test]
fn stream_frames_carry_metadata_both_ways() {
    let server = serve(
        Server::builder()
            .route_stream_blocking("/tagged", |stream| {
                while let Ok(Some((data, md))) = stream.recv_with_metadata() {
                    let tag = md.and_then(|m| m.get("tag").map(<[u8]>::to_vec));
                    let mut reply = ringrpc::Metadata::new();
                    reply.insert("seen", tag.unwrap_or_default()).unwrap();
                    stream.send_with_metadata(data, reply).unwrap();
                }
            })
            .route_stream("/tagged-events", |ctx| {
                let mut reply = ringrpc::Metadata::new();
                let tag = ctx.metadata().and_then(|m| m.get("tag")).unwrap_or(b"none");
                reply.insert("seen", tag.to_vec()).unwrap();
                if !ctx.data().is_empty() {
                    let data = ctx.data();
                    ctx.send_with_metadata(data, &reply).unwrap();
                }
            }),
    );
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    for method in ["/tagged", "/tagged-events"] {
        let stream = client.open_stream(method).unwrap();
        let mut md = ringrpc::Metadata::new();
        md.insert("tag", "t1").unwrap();
        stream.send_with_metadata("hello", md).unwrap();
        let (data, md) = stream.recv_with_metadata().unwrap().unwrap();
        assert_eq!(data, "hello", "{method}");
        assert_eq!(md.unwrap().get("seen"), Some(&b"t1"[..]), "{method}");
    }
    server.shutdown().unwrap();
}

#[test]
fn blocking_handlers_read_the_request_metadata() {
    let server = serve(Server::builder().route_blocking("/who", |request| {
        let user = request
            .metadata
            .as_ref()
            .and_then(|m| m.get("user"))
            .unwrap_or(b"?");
        Ok::<_, ringrpc::HandlerError>(Bytes::copy_from_slice(user))
    }));
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let mut md = ringrpc::Metadata::new();
    md.insert("user", "ada").unwrap();
    let (answer, _) = client.call_with_metadata("/who", b"", &md, LONG).unwrap();
    assert_eq!(answer, "ada");
    server.shutdown().unwrap();
}
