//! Async handlers on the reactor that owns the connection, typed handlers, and calls
//! awaited as futures — over real loopback connections.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, IO_TIMEOUT};
use ringrpc::error::{HANDLER_PANICKED, TOO_MANY_IN_FLIGHT};
use ringrpc::{
    CallError, Config, Context, Flow, HandlerError, Json, Middleware, MsgPack, Request,
    RunningServer, Server, State, time,
};
use ringrpc_protocol::{Command, Frame};
use serde::{Deserialize, Serialize};

fn serve(builder: ringrpc::ServerBuilder, config: ringrpc::ConfigBuilder) -> RunningServer {
    let config = config.listen("127.0.0.1:0").build().expect("valid config");
    builder
        .config(config)
        .build()
        .expect("bind")
        .start()
        .expect("start")
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Args {
    a: i64,
    b: i64,
}

#[test]
fn async_handlers_await_timers_and_answer_in_any_order_without_blocking_the_core() {
    let builder = Server::builder().route_async("/after", |req: Request| async move {
        let ms: u64 = std::str::from_utf8(&req.payload).unwrap().parse().unwrap();
        time::sleep(Duration::from_millis(ms)).await;
        req.payload
    });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    let started = Instant::now();
    c.send(&Frame::request(1, "/after", "300"));
    c.send(&Frame::request(2, "/after", "100"));
    c.send(&Frame::request(3, "/after", "200"));
    // While all three wait, the same core answers other requests at once.
    c.echo(4, b"not blocked");
    assert!(started.elapsed() < Duration::from_millis(100));
    let order: Vec<u64> = (0..3).map(|_| c.recv().header.seq).collect();
    assert_eq!(order, [2, 3, 1]);
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn handler_futures_need_not_be_send_and_see_their_state() {
    let builder = Server::builder()
        .state(Arc::new(AtomicUsize::new(0)))
        .route_async(
            "/count",
            |State(hits): State<Arc<AtomicUsize>>| async move {
                // An Rc held across an await: fine on a thread-per-core executor.
                let local = Rc::new(hits.fetch_add(1, Ordering::SeqCst) + 1);
                ringrpc::yield_now().await;
                local.to_string()
            },
        );
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    for i in 1..=3u64 {
        c.send(&Frame::request(i, "/count", ""));
        assert_eq!(c.recv().payload, i.to_string().into_bytes());
    }
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn typed_and_async_routes_parse_json_and_msgpack_and_refuse_bad_bodies_clearly() {
    let builder = Server::builder()
        .route_typed("/sum", |Json(args): Json<Args>| Json(args.a + args.b))
        .route_async("/sum/mp", |MsgPack(args): MsgPack<Args>| async move {
            MsgPack(args.a + args.b)
        });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/sum", r#"{"a":2,"b":40}"#));
    assert_eq!(&c.recv().payload[..], b"42");
    let packed = rmp_serde::to_vec_named(&Args { a: 1, b: 2 }).unwrap();
    c.send(&Frame::request(2, "/sum/mp", packed));
    let answer: i64 = rmp_serde::from_slice(&c.recv().payload).unwrap();
    assert_eq!(answer, 3);
    c.send(&Frame::request(3, "/sum", "{oops"));
    let refused = c.recv();
    assert!(refused.header.flags.is_error());
    let text = String::from_utf8(refused.payload.to_vec()).unwrap();
    assert!(
        text.starts_with("bad request body: expected JSON for "),
        "{text}"
    );
    assert!(text.contains("Args"), "{text}");
    c.echo(4, b"the connection is kept");
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn a_panicking_async_handler_answers_like_a_sync_one_and_the_core_goes_on() {
    let builder = Server::builder().route_async("/boom", |_: Request| async move {
        ringrpc::yield_now().await;
        if true {
            panic!("async handler fails");
        }
    });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/boom", ""));
    let answer = c.recv();
    assert!(answer.header.flags.is_error());
    assert_eq!(&answer.payload[..], HANDLER_PANICKED.as_bytes());
    c.echo(2, b"still serving");
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn async_requests_count_against_the_in_flight_limit_until_answered() {
    let builder = Server::builder().route_async("/park", |_: Request| async {
        time::sleep(Duration::from_millis(300)).await;
        "done"
    });
    let server = serve(
        builder,
        Config::builder().cores(1).max_in_flight_per_conn(4),
    );
    let mut c = Client::connect(server.local_addr());
    for seq in 1..=6 {
        c.send(&Frame::request(seq, "/park", ""));
    }
    let mut refused = 0;
    let mut done = 0;
    for _ in 0..6 {
        let f = c.recv();
        if f.header.flags.is_error() {
            assert_eq!(&f.payload[..], TOO_MANY_IN_FLIGHT.as_bytes());
            refused += 1;
        } else {
            done += 1;
        }
    }
    assert_eq!((done, refused), (4, 2));
    // Answered: the slots are free again.
    c.send(&Frame::request(7, "/park", ""));
    assert_eq!(&c.recv().payload[..], b"done");
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn a_closed_connection_drops_its_parked_tasks() {
    let dropped = Arc::new(AtomicUsize::new(0));
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let seen = dropped.clone();
    let builder = Server::builder().route_async("/forever", move |_: Request| {
        let guard = CountDrop(seen.clone());
        async move {
            let _guard = guard;
            time::sleep(Duration::from_secs(3600)).await;
        }
    });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    for seq in 1..=3 {
        c.send(&Frame::request(seq, "/forever", ""));
    }
    c.echo(4, b"sync");
    drop(c);
    let deadline = Instant::now() + IO_TIMEOUT;
    while dropped.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "parked tasks were not dropped");
        thread::sleep(Duration::from_millis(10));
    }
    server.shutdown().unwrap();
}

#[test]
fn shutdown_waits_for_parked_tasks_then_abandons_the_rest_counted() {
    let builder = Server::builder().route_async("/after", |req: Request| async move {
        let ms: u64 = std::str::from_utf8(&req.payload).unwrap().parse().unwrap();
        time::sleep(Duration::from_millis(ms)).await;
        "answered"
    });
    let server = serve(
        builder,
        Config::builder()
            .cores(1)
            .shutdown_grace(Duration::from_millis(500)),
    );
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/after", "100"));
    c.send(&Frame::request(2, "/after", "3600000"));
    c.echo(3, b"sync");
    let report = server.shutdown().unwrap();
    let first = c.recv();
    assert_eq!(
        (first.header.seq, &first.payload[..]),
        (1, &b"answered"[..])
    );
    c.expect_closed();
    assert_eq!(report.total().answers_abandoned, 1);
}

#[test]
fn middleware_runs_around_async_handlers() {
    #[derive(Default)]
    struct Count {
        before: AtomicUsize,
        after: AtomicUsize,
    }
    struct Counting(Arc<Count>);
    impl Middleware for Counting {
        fn before(&self, _ctx: &mut Context<'_>) -> Flow {
            self.0.before.fetch_add(1, Ordering::SeqCst);
            Flow::Continue
        }
        fn after(&self, _ctx: &Context<'_>) {
            self.0.after.fetch_add(1, Ordering::SeqCst);
        }
    }
    let count = Arc::new(Count::default());
    let builder = Server::builder()
        .middleware(Counting(count.clone()))
        .route_async("/a", |_: Request| async { "a" });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/a", ""));
    assert_eq!(&c.recv().payload[..], b"a");
    drop(c);
    server.shutdown().unwrap();
    assert_eq!(count.before.load(Ordering::SeqCst), 1);
    assert_eq!(count.after.load(Ordering::SeqCst), 1);
}

/// A handler fans out to two backends through a client (another reactor: the answers wake
/// it from another thread), awaits both under one timeout and joins them.
#[test]
fn an_async_handler_fans_out_to_two_backends_and_joins_their_answers() {
    let backend = |name: &'static str| {
        serve(
            Server::builder().route_async("/who", move |req: Request| async move {
                format!("{name}:{}", String::from_utf8_lossy(&req.payload))
            }),
            Config::builder().cores(1),
        )
    };
    let (a, b) = (backend("a"), backend("b"));
    let to_a = ringrpc::Client::connect(&a.local_addr().to_string()).unwrap();
    let to_b = ringrpc::Client::connect(&b.local_addr().to_string()).unwrap();
    let gateway = serve(
        Server::builder().route_async("/both", move |req: Request| {
            let (to_a, to_b) = (to_a.clone(), to_b.clone());
            async move {
                let both = async {
                    let first = to_a.call_async("/who", req.payload.clone(), IO_TIMEOUT);
                    let second = to_b.call_async("/who", req.payload.clone(), IO_TIMEOUT);
                    futures_util::future::try_join(first, second).await
                };
                let (x, y) = time::timeout(Duration::from_secs(5), both).await??;
                Ok::<_, HandlerError>(format!(
                    "{}+{}",
                    String::from_utf8_lossy(&x),
                    String::from_utf8_lossy(&y)
                ))
            }
        }),
        Config::builder().cores(1),
    );
    let mut c = Client::connect(gateway.local_addr());
    for seq in 1..=20u64 {
        c.send(&Frame::request(seq, "/both", seq.to_string()));
    }
    let mut answers: Vec<(u64, String)> = (0..20)
        .map(|_| {
            let f = c.recv();
            (f.header.seq, String::from_utf8(f.payload.to_vec()).unwrap())
        })
        .collect();
    answers.sort();
    for (seq, text) in answers {
        assert_eq!(text, format!("a:{seq}+b:{seq}"));
    }
    // A backend that is down: a clear error, no hang.
    a.shutdown().unwrap();
    c.send(&Frame::request(99, "/both", "x"));
    let failed = c.recv();
    assert!(failed.header.flags.is_error());
    drop(c);
    gateway.shutdown().unwrap();
    b.shutdown().unwrap();
}

/// A call back to the caller's own connection, awaited on the same reactor; and a dropped
/// call future removes its pending entry at once (counted), its late answer discarded.
#[test]
fn awaited_calls_to_the_callers_own_connection_complete_and_dropped_ones_are_cancelled() {
    let builder = Server::builder()
        .route_async("/ask-back", |req: Request| async move {
            let answer = req
                .conn
                .call_async("/name", Bytes::from_static(b"?"), IO_TIMEOUT)
                .await?;
            Ok::<_, CallError>(answer)
        })
        .route_async("/give-up", |req: Request| async move {
            let asked = req
                .conn
                .call_async("/slow", Bytes::new(), Duration::from_secs(3600));
            match time::timeout(Duration::from_millis(50), asked).await {
                Ok(_) => "answered",
                Err(_) => "gave up",
            }
        });
    let server = serve(builder, Config::builder().cores(1));
    let slow_seen = Arc::new(AtomicBool::new(false));
    let seen = slow_seen.clone();
    let client = ringrpc::Client::builder(&server.local_addr().to_string())
        .route("/name", |ctx| {
            ctx.reply(b"client-7");
        })
        .route("/slow", move |ctx| {
            seen.store(true, Ordering::SeqCst);
            // Answer much later, after the server gave up.
            let responder = ctx.responder().unwrap();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(200));
                responder.reply(b"too late");
            });
        })
        .connect()
        .unwrap();
    let answer = client
        .call("/ask-back", Bytes::new(), IO_TIMEOUT)
        .expect("the server's call back was answered");
    assert_eq!(&answer[..], b"client-7");
    let answer = client.call("/give-up", Bytes::new(), IO_TIMEOUT).unwrap();
    assert_eq!(&answer[..], b"gave up");
    assert!(slow_seen.load(Ordering::SeqCst));
    thread::sleep(Duration::from_millis(300)); // the late answer arrives and is ignored
    client.close();
    let total = server.shutdown().unwrap().total();
    assert_eq!(total.calls_cancelled, 1);
}

/// A future from another runtime (a tokio runtime on its own threads) awaited from an
/// async handler: the handler waits, the core keeps answering.
#[test]
fn an_async_handler_awaits_a_tokio_future_without_stalling_its_core() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let handle = tokio.handle().clone();
    let builder = Server::builder().route_async("/tokio", move |req: Request| {
        let handle = handle.clone();
        async move {
            let work = handle.spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                req.payload.len()
            });
            work.await.map(|n| n.to_string()).map_err(HandlerError::new)
        }
    });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    let started = Instant::now();
    c.send(&Frame::request(1, "/tokio", "abcd"));
    c.echo(2, b"not stalled");
    assert!(started.elapsed() < Duration::from_millis(150));
    let answer = c.recv();
    assert_eq!((answer.header.seq, &answer.payload[..]), (1, &b"4"[..]));
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn client_and_udp_endpoints_serve_async_routes_too() {
    let server = serve(
        Server::builder().route_async("/greet", |req: Request| async move {
            let name = req
                .conn
                .call_async("/name", Bytes::new(), IO_TIMEOUT)
                .await?;
            Ok::<_, CallError>(format!("hello {}", String::from_utf8_lossy(&name)))
        }),
        Config::builder().cores(1),
    );
    let client = ringrpc::Client::builder(&server.local_addr().to_string())
        .route_async("/name", |_: Request| async {
            ringrpc::yield_now().await;
            "async client"
        })
        .connect()
        .unwrap();
    let answer = client.call("/greet", Bytes::new(), IO_TIMEOUT).unwrap();
    assert_eq!(&answer[..], b"hello async client");
    client.close();
    server.shutdown().unwrap();

    let udp = ringrpc::UdpEndpoint::builder("127.0.0.1:0")
        .route_async("/double", |Json(n): Json<i64>| async move {
            time::sleep(Duration::from_millis(10)).await;
            Json(n * 2)
        })
        .start()
        .unwrap();
    let caller = ringrpc::UdpEndpoint::builder("127.0.0.1:0")
        .start()
        .unwrap();
    let answer = caller
        .call(udp.local_addr(), "/double", "21".into(), IO_TIMEOUT)
        .unwrap();
    assert_eq!(&answer[..], b"42");
    caller.shutdown().unwrap();
    udp.shutdown().unwrap();
}

#[test]
fn a_raw_client_sees_the_servers_call_before_the_reply_that_awaits_it() {
    // The handler's call goes out first; the reply follows only once it is answered.
    let builder = Server::builder().route_async("/relay", |req: Request| async move {
        req.conn
            .call_async("/echo", req.payload.clone(), IO_TIMEOUT)
            .await
    });
    let server = serve(builder, Config::builder().cores(1));
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(1, "/relay", "ping"));
    let call = c.recv();
    assert_eq!(call.header.cmd, Command::Request);
    c.send(&Frame::response_to(&call.header, "/echo", "pong"));
    let answer = c.recv();
    assert_eq!((answer.header.seq, &answer.payload[..]), (1, &b"pong"[..]));
    drop(c);
    server.shutdown().unwrap();
}

/// Core clients: one connection per target per core, opened on first use and shared by
/// every request of that core; a target that is down fails at once with a clear error and
/// is tried again on the next use.
#[test]
fn core_clients_connect_once_per_core_and_report_an_unreachable_target_clearly() {
    let backend = serve(
        Server::builder().route_async("/who", |req: Request| async move {
            format!("b:{}", String::from_utf8_lossy(&req.payload))
        }),
        Config::builder().cores(1),
    );
    let backend_addr = backend.local_addr().to_string();
    let down_addr = format!("127.0.0.1:{}", common::free_port());
    let gateway = serve(
        Server::builder()
            .route_async("/via", {
                let backend_addr = backend_addr.clone();
                move |req: Request| {
                    let target = backend_addr.clone();
                    async move {
                        let client = req.client(&target)?;
                        let answer = client.call_async("/who", req.payload, IO_TIMEOUT).await?;
                        Ok::<_, HandlerError>(answer)
                    }
                }
            })
            .route_async("/down", {
                let down_addr = down_addr.clone();
                move |req: Request| {
                    let target = down_addr.clone();
                    async move {
                        let client = req.client(&target)?;
                        Ok::<_, HandlerError>(
                            client.call_async("/who", Bytes::new(), IO_TIMEOUT).await?,
                        )
                    }
                }
            }),
        Config::builder().cores(1),
    );
    let mut c = Client::connect(gateway.local_addr());
    // Many requests at once while the first connect is still under way: one connection.
    for seq in 1..=50u64 {
        c.send(&Frame::request(seq, "/via", seq.to_string()));
    }
    for _ in 0..50 {
        let f = c.recv();
        assert_eq!(f.payload, format!("b:{}", f.header.seq).into_bytes());
    }
    c.send(&Frame::request(60, "/down", ""));
    let failed = c.recv();
    assert!(failed.header.flags.is_error());
    let text = String::from_utf8(failed.payload.to_vec()).unwrap();
    assert!(
        text.starts_with(&format!("cannot connect to {down_addr}")),
        "{text}"
    );
    c.echo(61, b"still serving");
    drop(c);
    gateway.shutdown().unwrap();
    let backend_report = backend.shutdown().unwrap();
    assert_eq!(
        backend_report.total().accepted,
        1,
        "one connection from the gateway's core"
    );
}

/// An async stream handler on the reactor: it awaits frames and sends with the window as
/// back-pressure; a client that stops reading makes it wait without stalling the core.
#[test]
fn async_stream_handlers_await_frames_and_wait_for_window_room_without_stalling() {
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let builder =
        Server::builder().route_stream_async("/flood", move |stream: ringrpc::BiStream| {
            let counted = counted.clone();
            async move {
                // The request: how many frames to send back.
                let Ok(Some(request)) = stream.recv_async().await else {
                    return;
                };
                let n: usize = String::from_utf8_lossy(&request).parse().unwrap();
                for i in 0..n {
                    if stream.send_async(vec![b'x'; 64 * 1024]).await.is_err() {
                        return;
                    }
                    counted.store(i + 1, Ordering::SeqCst);
                }
                let _ = stream.close_send();
            }
        });
    let server = serve(
        builder,
        Config::builder()
            .cores(1)
            .stream_send_window(256 * 1024)
            .max_send_queue_bytes(1 << 20),
    );
    let client = ringrpc::Client::connect(&server.local_addr().to_string()).unwrap();
    let stream = client.open_stream("/flood").unwrap();
    stream.send("200").unwrap();
    // Nobody reads: the handler gets only so far, and the core still answers other
    // connections at once (this one is held by its full stream inbox, by design).
    thread::sleep(Duration::from_millis(300));
    let parked_at = sent.load(Ordering::SeqCst);
    assert!(
        parked_at < 200,
        "the window and the send queue held it back ({parked_at})"
    );
    let mut other = Client::connect(server.local_addr());
    let started = Instant::now();
    other.echo(1, b"quick");
    assert!(started.elapsed() < Duration::from_millis(200));
    // Reading lets it finish.
    let mut frames = 0;
    while let Some(frame) = stream.recv_timeout(IO_TIMEOUT).unwrap() {
        assert_eq!(frame.len(), 64 * 1024);
        frames += 1;
    }
    assert_eq!(frames, 200);
    assert_eq!(sent.load(Ordering::SeqCst), 200);
    drop(stream);
    drop(client);
    drop(other);
    server.shutdown().unwrap();
}
