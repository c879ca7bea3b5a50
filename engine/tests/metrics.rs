//! The Prometheus endpoint on real sockets: known traffic in, the scraped numbers match,
//! the text passes `promtool check metrics`, and the HTTP edges (404, 405, a taken port).
//!
//! `promtool` comes from Debian's `prometheus` package; `.ci/run` installs it and sets
//! `RINGRPC_REQUIRE_PROMTOOL=1`, which makes its absence a failure instead of a skip.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, IO_TIMEOUT};
use ringrpc::{Config, PubSub, RunningServer, Server, StartError};
use ringrpc_protocol::{Command, Flags, Frame};

/// One HTTP request; the status code and the body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut sock = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(sock, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .expect("a whole HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn scrape(server: &RunningServer) -> String {
    let (status, head, body) = http(server.metrics_addr().unwrap(), "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The sum of every sample named `name` whose labels include each of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = line.rsplit_once(' ').unwrap();
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            found = true;
            sum += v.parse::<f64>().unwrap();
        }
    }
    assert!(found, "no sample {name} with {labels:?} in:\n{text}");
    sum
}

/// Runs `promtool check metrics` on `text`, or says why not.
fn promtool_check(text: &str) {
    let required = std::env::var("RINGRPC_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    let child = Process::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !required => {
            eprintln!(
                "note: promtool not run ({e}); install Debian's prometheus package, or set RINGRPC_REQUIRE_PROMTOOL=1 to make this a failure"
            );
            return;
        }
        Err(e) => panic!("RINGRPC_REQUIRE_PROMTOOL=1 but promtool cannot run: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stream_frame(id: u64, method: &str, data: &[u8], eof: bool) -> Frame {
    let mut f = Frame::new(
        Command::Stream,
        Flags::default(),
        id,
        Bytes::copy_from_slice(method.as_bytes()),
        Bytes::copy_from_slice(data),
    );
    f.header.stream_local = true;
    f.header.stream_eof = eof;
    f
}

/// Polls scrapes until `done` holds (asynchronous effects such as a close).
fn scrape_until(server: &RunningServer, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = scrape(server);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never reached:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn scraped_numbers_match_the_traffic_and_promtool_accepts_them() {
    let config = Config::builder()
        .cores(2)
        .listen("127.0.0.1:0")
        .metrics_listen(Some("127.0.0.1:0"))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .route("/note", |_| {})
        .route("/slow", |ctx| {
            let responder = ctx.responder().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                responder.reply(b"late");
            });
        })
        .build()
        .unwrap()
        .start()
        .unwrap();

    // Nothing yet: every family is there, at zero.
    let text = scrape(&server);
    assert_eq!(value(&text, "ringrpc_cores", &[]), 2.0);
    assert_eq!(value(&text, "ringrpc_requests_total", &[]), 0.0);
    assert_eq!(value(&text, "ringrpc_connections_open", &[]), 0.0);
    promtool_check(&text);

    let mut client = Client::connect(server.local_addr());
    let mut sent = 0usize;
    let mut send = |client: &mut Client, f: Frame| {
        sent += f.to_bytes().len();
        client.send(&f);
    };
    for seq in 1..=4 {
        send(&mut client, Frame::notify(0, "/note", "n"));
        send(&mut client, Frame::request(seq, "/echo", "hello"));
    }
    for seq in 5..=7 {
        send(&mut client, Frame::request(seq, "/slow", ""));
    }
    for seq in 8..=9 {
        send(&mut client, Frame::request(seq, "/nope", ""));
    }
    send(&mut client, stream_frame(2, "/echo/stream", b"a", false));
    send(&mut client, stream_frame(2, "/echo/stream", b"b", false));
    send(&mut client, stream_frame(2, "/echo/stream", b"", true));
    // 4 echoes, 3 slow answers, 2 not-found errors, 2 echoed stream frames and the EOF.
    let mut answers = 0;
    let mut stream_frames_back = 0;
    while answers < 9 || stream_frames_back < 3 {
        let f = client.recv();
        match f.header.cmd {
            Command::Response => answers += 1,
            Command::Stream => stream_frames_back += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // One more round trip so every frame above was surely dispatched.
    send(&mut client, Frame::request(10, "/echo", "last"));
    client.recv();

    let text = scrape(&server);
    assert_eq!(value(&text, "ringrpc_requests_total", &[]), 10.0);
    assert_eq!(value(&text, "ringrpc_notifies_total", &[]), 4.0);
    assert_eq!(value(&text, "ringrpc_not_found_total", &[]), 2.0);
    assert_eq!(value(&text, "ringrpc_streams_opened_total", &[]), 1.0);
    assert_eq!(value(&text, "ringrpc_stream_frames_total", &[]), 3.0);
    assert_eq!(
        value(&text, "ringrpc_received_bytes_total", &[]),
        sent as f64
    );
    assert_eq!(value(&text, "ringrpc_frames_received_total", &[]), 17.0);
    assert!(value(&text, "ringrpc_sent_bytes_total", &[]) > 0.0);
    assert!(value(&text, "ringrpc_frames_sent_total", &[]) >= 13.0);
    assert!(value(&text, "ringrpc_sends_total", &[]) >= 1.0);
    assert_eq!(value(&text, "ringrpc_connections_accepted_total", &[]), 1.0);
    assert_eq!(value(&text, "ringrpc_connections_open", &[]), 1.0);
    assert_eq!(value(&text, "ringrpc_protocol_errors_total", &[]), 0.0);
    assert_eq!(value(&text, "ringrpc_refused_in_flight_total", &[]), 0.0);
    // Per method, summed over cores; unknown names lumped, never a label of their own.
    let m = |method| {
        value(
            &text,
            "ringrpc_method_requests_total",
            &[("method", method)],
        )
    };
    assert_eq!(m("/echo"), 5.0);
    assert_eq!(m("/slow"), 3.0);
    assert_eq!(m("/note"), 4.0);
    assert_eq!(m("_not_found"), 2.0);
    assert!(!text.contains("/nope"), "{text}");
    let h = |suffix: &str, labels: &[(&str, &str)]| {
        value(
            &text,
            &format!("ringrpc_request_duration_seconds_{suffix}"),
            labels,
        )
    };
    assert_eq!(h("count", &[("method", "/echo")]), 5.0);
    assert_eq!(h("count", &[("method", "/note")]), 4.0);
    // A deferred answer is timed until the responder's answer reaches the reactor.
    assert_eq!(h("count", &[("method", "/slow")]), 3.0);
    assert_eq!(h("bucket", &[("method", "/slow"), ("le", "0.025")]), 0.0);
    assert_eq!(
        h("bucket", &[("method", "/slow"), ("le", "+Inf")]),
        3.0,
        "{text}"
    );
    assert!(h("sum", &[("method", "/slow")]) >= 0.09);
    promtool_check(&text);

    // A close shows up by reason once the reactor has released the connection.
    drop(client);
    let text = scrape_until(&server, |t| {
        value(
            t,
            "ringrpc_connections_closed_total",
            &[("reason", "peer_closed")],
        ) == 1.0
    });
    assert_eq!(value(&text, "ringrpc_connections_open", &[]), 0.0);
    assert_eq!(value(&text, "ringrpc_connections_closed_total", &[]), 1.0);

    // The report after shutdown agrees with the last scrape.
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 10);
}

#[test]
fn other_paths_and_methods_are_refused() {
    let server = common::start_with(
        Config::builder()
            .cores(1)
            .metrics_listen(Some("127.0.0.1:0")),
    );
    let addr = server.metrics_addr().unwrap();
    let (status, _, _) = http(addr, "GET", "/");
    assert_eq!(status, 404);
    let (status, head, _) = http(addr, "POST", "/metrics");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, _, body) = http(addr, "GET", "/metrics?x=1");
    assert_eq!(status, 200);
    assert!(body.contains("ringrpc_requests_total"));
    // The endpoint closes with the server.
    server.shutdown().unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "metrics still served after shutdown"
    );
}

#[test]
fn metrics_off_means_no_endpoint() {
    let server = common::start(1);
    assert_eq!(server.metrics_addr(), None);
    server.shutdown().unwrap();
}

#[test]
fn a_taken_metrics_port_fails_the_build_naming_the_knob() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .metrics_listen(Some(addr))
        .build()
        .unwrap();
    let err = Server::builder().config(config).build().unwrap_err();
    assert!(matches!(err, StartError::MetricsBind(..)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("already in use"), "{text}");
    assert!(text.contains("metrics_listen"), "{text}");
}

#[test]
fn pubsub_counters_appear_when_pubsub_is_served() {
    let pubsub = PubSub::new();
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .metrics_listen(Some("127.0.0.1:0"))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .pubsub(pubsub.clone())
        .build()
        .unwrap()
        .start()
        .unwrap();
    pubsub.publish("news", b"nobody listens").unwrap();
    let text = scrape(&server);
    assert_eq!(value(&text, "ringrpc_pubsub_published_total", &[]), 1.0);
    assert_eq!(value(&text, "ringrpc_pubsub_subscribers", &[]), 0.0);
    assert_eq!(value(&text, "ringrpc_pubsub_connections", &[]), 0.0);
    // The pub/sub routes are methods like any other.
    value(
        &text,
        "ringrpc_method_requests_total",
        &[("method", "in_S")],
    );
    promtool_check(&text);
    server.shutdown().unwrap();
}
