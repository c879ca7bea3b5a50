//! Loopback tests of arpc's coders in the engine: gzip-compressed frames both ways and
//! metadata blocks both ways, over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Client, IO_TIMEOUT};
use crossbeam_channel::unbounded;
use flate2::Compression;
use flate2::write::GzEncoder;
use ringrpc::{
    CallError, Config, Context, DisconnectReason, Metadata, PropagateMetadata, RunningServer,
    Server, ServerBuilder,
};
use ringrpc_protocol::gzip::{USER_FLAG_GZIP, compress_frame, decompress_frame, is_compressed};
use ringrpc_protocol::metadata::{USER_FLAG_METADATA, append_metadata, take_metadata};
use ringrpc_protocol::{Command, DecodeError, Frame, HEADER_LEN, parse_frame};

const LONG: Duration = Duration::from_secs(20);

fn start(builder: ServerBuilder, config: ringrpc::ConfigBuilder) -> RunningServer {
    let config = config.cores(1).listen("127.0.0.1:0").build().unwrap();
    builder.config(config).build().unwrap().start().unwrap()
}

fn md(pairs: &[(&str, &str)]) -> Metadata {
    let mut m = Metadata::new();
    for (k, v) in pairs {
        m.insert(*k, v.as_bytes().to_vec()).unwrap();
    }
    m
}

/// Reads exactly one frame's bytes as they came off the wire (compressed or not).
fn recv_raw(sock: &mut TcpStream) -> Vec<u8> {
    let mut frame = vec![0u8; HEADER_LEN];
    sock.read_exact(&mut frame).expect("a frame header");
    let body = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    frame.resize(HEADER_LEN + body, 0);
    sock.read_exact(&mut frame[HEADER_LEN..])
        .expect("a frame body");
    frame
}

/// Inflates `raw` if compressed and decodes it.
fn decode(raw: &[u8]) -> Frame {
    let plain = if is_compressed(raw) {
        decompress_frame(raw, u32::MAX - 16).expect("valid gzip")
    } else {
        Bytes::copy_from_slice(raw)
    };
    let (frame, used) = parse_frame(&plain, u32::MAX - 16).unwrap().unwrap();
    assert_eq!(used, plain.len());
    frame.to_owned()
}

fn connect(server: &RunningServer) -> TcpStream {
    let sock = TcpStream::connect(server.local_addr()).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock
}

#[test]
fn gzip_request_built_with_compress_frame_is_answered() {
    let server = start(Server::builder(), Config::builder());
    let mut c = Client::connect(server.local_addr());
    let payload = "hello ".repeat(50);
    let plain = Frame::request(3, "/echo", payload.clone()).to_bytes();
    let packed = compress_frame(&plain, 64, 6).expect("compresses");
    assert!(packed.len() < plain.len());
    // Split mid-header and mid-body: the framing holds it until it is whole.
    c.send_raw(&packed[..3]);
    std::thread::sleep(Duration::from_millis(20));
    c.send_raw(&packed[3..20]);
    std::thread::sleep(Duration::from_millis(20));
    c.send_raw(&packed[20..]);
    let f = c.recv();
    assert_eq!(f.header.seq, 3);
    assert_eq!(&f.payload[..], payload.as_bytes());
    c.echo(4, b"plain frames still work");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().gzip_in, 1);
    assert_eq!(report.total().gzip_out, 0);
}

#[test]
fn gzip_request_built_by_hand_with_flate2_is_answered() {
    let server = start(Server::builder(), Config::builder());
    let mut c = Client::connect(server.local_addr());
    // docs/protocol.md, "Compression": bytes 0..5 stay, everything from `cmd` on is one gzip
    // member, `body_len` = 5 + len(gzip) - 16, user_flags bit 7.
    let method = b"/echo";
    let payload = vec![b'z'; 4000];
    let mut inner = vec![Command::Request as u8, 0, method.len() as u8];
    inner.extend_from_slice(&9u64.to_le_bytes());
    inner.extend_from_slice(method);
    inner.extend_from_slice(&payload);
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&inner).unwrap();
    let gz = gz.finish().unwrap();
    let mut frame = ((5 + gz.len() - 16) as u32).to_le_bytes().to_vec();
    frame.push(USER_FLAG_GZIP);
    frame.extend_from_slice(&gz);
    c.send_raw(&frame);
    let f = c.recv();
    assert_eq!(f.header.seq, 9);
    assert_eq!(&f.payload[..], &payload[..]);
    server.shutdown().unwrap();
}

#[test]
fn server_with_a_threshold_compresses_large_responses_only() {
    let server = start(
        Server::builder(),
        Config::builder().gzip_threshold(Some(64)),
    );
    let mut sock = connect(&server);
    let big = "compressible ".repeat(100);
    for (seq, payload) in [(1u64, "tiny".to_owned()), (2, big.clone())] {
        sock.write_all(&Frame::request(seq, "/echo", payload.clone()).to_bytes())
            .unwrap();
        let raw = recv_raw(&mut sock);
        let compressed = raw[4] & USER_FLAG_GZIP != 0;
        assert_eq!(compressed, payload.len() > 64, "seq {seq}");
        if compressed {
            assert!(raw.len() < HEADER_LEN + 5 + payload.len());
        }
        let f = decode(&raw);
        assert_eq!((f.header.cmd, f.header.seq), (Command::Response, seq));
        assert_eq!(&f.payload[..], payload.as_bytes());
    }
    // Incompressible bytes over the threshold go out plain (compressing would not shrink
    // them).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    sock.write_all(&Frame::request(3, "/echo", noise.clone()).to_bytes())
        .unwrap();
    let raw = recv_raw(&mut sock);
    assert_eq!(raw[4] & USER_FLAG_GZIP, 0);
    assert_eq!(&decode(&raw).payload[..], &noise[..]);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().gzip_out, 1);
}

#[test]
fn client_with_gzip_talks_to_a_server_with_gzip_both_ways() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let server = start(
        Server::builder().route("/len", move |ctx: &mut Context<'_>| {
            seen2.lock().unwrap().push(ctx.payload().len());
            let answer = "x".repeat(ctx.payload().len() * 2);
            ctx.reply(answer.as_bytes());
        }),
        Config::builder().gzip_threshold(Some(64)),
    );
    let client = ringrpc::Client::builder(&server.local_addr().to_string())
        .gzip_threshold(Some(64))
        .connect()
        .unwrap();
    let big = Bytes::from("y".repeat(5000));
    let answer = client.call("/len", big.clone(), LONG).unwrap();
    assert_eq!(answer.len(), 10_000);
    let small = client.call("/len", Bytes::from_static(b"s"), LONG).unwrap();
    assert_eq!(&small[..], b"xx");
    assert_eq!(*seen.lock().unwrap(), [5000, 1]);
    client.close();
    let report = server.shutdown().unwrap();
    assert_eq!(
        report.total().gzip_in,
        1,
        "the client compressed its big call"
    );
    assert_eq!(
        report.total().gzip_out,
        1,
        "the server compressed its big answer"
    );
}

/// A frame inflating to `total` zero bytes of payload, as concatenated gzip members (read
/// in turn, as Go's gzip.Reader does), so building it stays cheap.
fn bomb(total: usize) -> Vec<u8> {
    const PIECE: usize = 1 << 20;
    let zeros = vec![0u8; PIECE];
    let member = |data: &[u8]| {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    };
    let mut inner = vec![Command::Request as u8, 0, 5];
    inner.extend_from_slice(&1u64.to_le_bytes());
    inner.extend_from_slice(b"/echo");
    let mut gz = member(&inner);
    let piece = member(&zeros);
    for _ in 0..total / PIECE {
        gz.extend_from_slice(&piece);
    }
    let mut frame = ((5 + gz.len() - 16) as u32).to_le_bytes().to_vec();
    frame.push(USER_FLAG_GZIP);
    frame.extend_from_slice(&gz);
    frame
}

fn server_telling_reasons() -> (RunningServer, crossbeam_channel::Receiver<String>) {
    let (tx, rx) = unbounded();
    let server = start(
        Server::builder().on_disconnect(move |_, reason| {
            if let DisconnectReason::Protocol(DecodeError::Gzip(_)) = reason {
                let _ = tx.send(reason.to_string());
            }
        }),
        Config::builder().max_body(1 << 20),
    );
    (server, rx)
}

#[test]
fn a_gzip_bomb_closes_only_its_connection() {
    let (server, reasons) = server_telling_reasons();
    let mut other = Client::connect(server.local_addr());
    other.echo(1, b"before");
    let mut bomber = Client::connect(server.local_addr());
    let frame = bomb(100 << 20);
    assert!(
        frame.len() < 1 << 20,
        "the bomb fits the body limit on the wire"
    );
    bomber.send_raw(&frame);
    bomber.expect_closed();
    let reason = reasons.recv_timeout(LONG).expect("a gzip disconnect");
    assert!(
        reason.contains("inflates to a body over the maximum of 1048576 bytes"),
        "{reason}"
    );
    other.echo(2, b"after");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().protocol_errors, 1);
}

#[test]
fn corrupt_gzip_closes_only_its_connection_with_a_clear_reason() {
    let (server, reasons) = server_telling_reasons();
    let mut bad = Client::connect(server.local_addr());
    let plain = Frame::request(1, "/echo", "a".repeat(300)).to_bytes();
    let mut packed = compress_frame(&plain, 0, 6).unwrap().to_vec();
    let n = packed.len();
    packed[n - 6] ^= 0xff; // the CRC-32
    bad.send_raw(&packed);
    bad.expect_closed();
    let reason = reasons.recv_timeout(LONG).expect("a gzip disconnect");
    assert!(
        reason.starts_with("protocol error: gzip-compressed frame: invalid gzip data"),
        "{reason}"
    );
    let mut good = Client::connect(server.local_addr());
    good.echo(1, b"still serving");
    server.shutdown().unwrap();
}

/// A handler recording what it saw: payload and the value of key `k`.
type Seen = Arc<Mutex<Vec<(Vec<u8>, Option<Vec<u8>>)>>>;

fn recording_server(config: ringrpc::ConfigBuilder) -> (RunningServer, Seen) {
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let server = start(
        Server::builder()
            .route("/see", move |ctx: &mut Context<'_>| {
                let value = ctx.metadata().and_then(|m| m.get("k")).map(<[u8]>::to_vec);
                seen2.lock().unwrap().push((ctx.payload().to_vec(), value));
                if let Some(m) = ctx.metadata() {
                    let mut answer = Metadata::new();
                    answer.insert("echoed-keys", m.len().to_string()).unwrap();
                    ctx.set_reply_metadata(answer);
                }
                let payload = ctx.payload();
                ctx.reply(payload);
            })
            .route("/tag", |ctx: &mut Context<'_>| {
                ctx.reply_metadata_mut()
                    .insert("server", "ringrpc")
                    .unwrap();
                ctx.reply(b"tagged");
            }),
        config,
    );
    (server, seen)
}

fn with_metadata(frame: &Frame, m: &Metadata) -> Bytes {
    let mut bytes = BytesMut::from(&frame.to_bytes()[..]);
    append_metadata(&mut bytes, m).unwrap();
    bytes.freeze()
}

#[test]
fn handler_sees_request_metadata_without_it_in_the_payload() {
    let (server, seen) = recording_server(Config::builder());
    let mut c = Client::connect(server.local_addr());
    let req = Frame::request(1, "/see", "body");
    c.send_raw(&with_metadata(&req, &md(&[("k", "v"), ("other", "x")])));
    let f = c.recv();
    assert!(!f.is_error());
    // The handler's reply metadata arrived with the Response.
    assert_eq!(f.header.user_flags & USER_FLAG_METADATA, USER_FLAG_METADATA);
    let (payload, reply) = take_metadata(&f.header, &f.payload).unwrap();
    assert_eq!(payload, b"body");
    assert_eq!(reply.unwrap().get("echoed-keys"), Some(&b"2"[..]));
    // Without metadata: nothing seen, nothing attached.
    c.send(&Frame::request(2, "/see", "plain"));
    let f = c.recv();
    assert_eq!(f.header.user_flags, 0);
    assert_eq!(&f.payload[..], b"plain");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (b"body".to_vec(), Some(b"v".to_vec())),
            (b"plain".to_vec(), None)
        ]
    );
    server.shutdown().unwrap();
}

#[test]
fn response_metadata_set_by_the_handler_arrives() {
    let (server, _) = recording_server(Config::builder());
    let mut c = Client::connect(server.local_addr());
    c.send(&Frame::request(5, "/tag", ""));
    let f = c.recv();
    let (payload, m) = take_metadata(&f.header, &f.payload).unwrap();
    assert_eq!(payload, b"tagged");
    assert_eq!(m.unwrap().get("server"), Some(&b"ringrpc"[..]));
    server.shutdown().unwrap();
}

#[test]
fn malformed_metadata_gets_an_error_response_and_the_connection_stays_usable() {
    let (server, seen) = recording_server(Config::builder());
    let mut c = Client::connect(server.local_addr());
    // Bit 0 set, but the payload does not end with an `md` block.
    let mut bad = BytesMut::from(&Frame::request(7, "/see", "no block here").to_bytes()[..]);
    bad[4] |= USER_FLAG_METADATA;
    c.send_raw(&bad);
    let f = c.recv();
    assert_eq!(f.header.seq, 7);
    assert!(f.is_error());
    let text = String::from_utf8_lossy(&f.payload).into_owned();
    assert!(text.starts_with("invalid metadata: "), "{text}");
    // A Notify with a bad block is dropped; the next request is served.
    let mut bad = BytesMut::from(&Frame::notify(0, "/see", "zz").to_bytes()[..]);
    bad[4] |= USER_FLAG_METADATA;
    c.send_raw(&bad);
    c.echo(8, b"still open");
    assert!(seen.lock().unwrap().is_empty(), "no handler ran");
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().bad_metadata, 2);
}

#[test]
fn metadata_and_gzip_together_on_one_frame() {
    let (server, seen) = recording_server(Config::builder().gzip_threshold(Some(64)));
    let mut sock = connect(&server);
    let body = "metadata then gzip ".repeat(40);
    let framed = with_metadata(
        &Frame::request(3, "/see", body.clone()),
        &md(&[("k", "zipped")]),
    );
    // Appended first, compressed second, as arpc's coders do.
    let packed = compress_frame(&framed, 64, 6).unwrap();
    assert_eq!(packed[4], USER_FLAG_GZIP | USER_FLAG_METADATA);
    sock.write_all(&packed).unwrap();
    let raw = recv_raw(&mut sock);
    assert_eq!(
        raw[4] & USER_FLAG_GZIP,
        USER_FLAG_GZIP,
        "the answer is big: compressed"
    );
    let f = decode(&raw);
    let (payload, m) = take_metadata(&f.header, &f.payload).unwrap();
    assert_eq!(payload, body.as_bytes());
    assert_eq!(m.unwrap().get("echoed-keys"), Some(&b"1"[..]));
    assert_eq!(
        *seen.lock().unwrap(),
        [(body.into_bytes(), Some(b"zipped".to_vec()))]
    );
    server.shutdown().unwrap();
}

#[test]
fn client_call_and_notify_with_metadata_round_trip() {
    let (server, seen) = recording_server(Config::builder());
    let client = ringrpc::Client::connect(&server.local_addr().to_string()).unwrap();
    let (payload, m) = client
        .call_with_metadata("/see", b"hi", &md(&[("k", "call")]), LONG)
        .unwrap();
    assert_eq!(&payload[..], b"hi");
    assert_eq!(m.unwrap().get("echoed-keys"), Some(&b"1"[..]));
    // A Response without metadata gives None.
    let (payload, m) = client
        .call_with_metadata("/echo", b"plain", &Metadata::new(), LONG)
        .unwrap();
    assert_eq!((&payload[..], m), (&b"plain"[..], None));
    client
        .notify_with_metadata("/see", b"note", &md(&[("k", "notify")]))
        .unwrap();
    // Errors keep their text.
    let err = client
        .call_with_metadata("/nope", b"", &Metadata::new(), LONG)
        .unwrap_err();
    assert_eq!(err, CallError::Remote("method not found".into()));
    let notes = || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(p, v)| p == b"note" && v.as_deref() == Some(&b"notify"[..]))
    };
    let deadline = std::time::Instant::now() + LONG;
    while !notes() {
        assert!(
            std::time::Instant::now() < deadline,
            "the notify never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Plain calls still work and drop any response metadata.
    assert_eq!(
        &client.call("/see", Bytes::from_static(b"x"), LONG).unwrap()[..],
        b"x"
    );
    client.close();
    server.shutdown().unwrap();
}

#[test]
fn propagate_metadata_copies_the_request_id_onto_every_response() {
    let server = start(
        Server::builder()
            .middleware(PropagateMetadata::new(["x-request-id"]))
            .route("/work", |ctx: &mut Context<'_>| {
                ctx.reply(b"done");
            })
            .route("/later", |ctx: &mut Context<'_>| {
                let responder = ctx.responder().unwrap();
                std::thread::spawn(move || responder.reply(b"later"));
            })
            .route("/own", |ctx: &mut Context<'_>| {
                let responder = ctx.responder().unwrap();
                responder.reply_with_metadata(b"own", md(&[("mine", "1")]));
            }),
        Config::builder(),
    );
    let mut c = Client::connect(server.local_addr());
    let request_md = md(&[("x-request-id", "req-42"), ("secret", "not copied")]);
    for (seq, method, want) in [
        (1, "/work", &b"done"[..]),
        (2, "/later", b"later"),
        (3, "/nope", b"method not found"),
    ] {
        c.send_raw(&with_metadata(
            &Frame::request(seq, method, ""),
            &request_md,
        ));
        let f = c.recv();
        assert_eq!(f.header.seq, seq);
        let (payload, m) = take_metadata(&f.header, &f.payload).unwrap();
        assert_eq!(payload, want, "{method}");
        let m = m.unwrap_or_else(|| panic!("{method}: no metadata"));
        assert_eq!(m.get("x-request-id"), Some(&b"req-42"[..]), "{method}");
        assert_eq!(m.get("secret"), None);
    }
    // Responder::reply_with_metadata replaces what the context carried.
    c.send_raw(&with_metadata(&Frame::request(4, "/own", ""), &request_md));
    let f = c.recv();
    let (payload, m) = take_metadata(&f.header, &f.payload).unwrap();
    assert_eq!(payload, b"own");
    assert_eq!(m.unwrap(), md(&[("mine", "1")]));
    // No request metadata: the response carries none.
    c.send(&Frame::request(5, "/work", ""));
    assert_eq!(c.recv().header.user_flags, 0);
    server.shutdown().unwrap();
}

#[test]
fn websocket_messages_carry_compressed_frames_both_ways() {
    use tungstenite::Message;
    let server = start(
        Server::builder(),
        Config::builder().gzip_threshold(Some(64)),
    );
    let addr = server.local_addr();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws").as_str(), stream).unwrap();
    let payload = "over websocket ".repeat(30);
    let plain = Frame::request(6, "/echo", payload.clone()).to_bytes();
    let packed = compress_frame(&plain, 64, 6).unwrap();
    ws.send(Message::Binary(packed.to_vec().into())).unwrap();
    let raw = loop {
        match ws.read().unwrap() {
            Message::Binary(b) => break b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        raw[4] & USER_FLAG_GZIP,
        USER_FLAG_GZIP,
        "one compressed frame per message"
    );
    let f = decode(&raw);
    assert_eq!((f.header.seq, &f.payload[..]), (6, payload.as_bytes()));
    drop(ws);
    let report = server.shutdown().unwrap();
    assert_eq!((report.total().gzip_in, report.total().gzip_out), (1, 1));
}

#[test]
fn stream_handlers_see_frame_metadata_and_bad_blocks_are_dropped() {
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let server = start(
        Server::builder().route_stream("/watch", move |ctx: &mut ringrpc::StreamContext<'_>| {
            let value = ctx.metadata().and_then(|m| m.get("k")).map(<[u8]>::to_vec);
            seen2.lock().unwrap().push((ctx.data().to_vec(), value));
        }),
        Config::builder(),
    );
    let mut c = Client::connect(server.local_addr());
    let stream_frame = |payload: &str, eof: bool| {
        let mut f = Frame::new(
            Command::Stream,
            Default::default(),
            11,
            Bytes::from_static(b"/watch"),
            Bytes::copy_from_slice(payload.as_bytes()),
        );
        f.header.stream_local = true;
        f.header.stream_eof = eof;
        f
    };
    c.send_raw(&with_metadata(
        &stream_frame("one", false),
        &md(&[("k", "s1")]),
    ));
    let mut bad = BytesMut::from(&stream_frame("bad", false).to_bytes()[..]);
    bad[4] |= USER_FLAG_METADATA;
    c.send_raw(&bad);
    c.send(&stream_frame("two", true));
    c.echo(1, b"after the stream");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (b"one".to_vec(), Some(b"s1".to_vec())),
            (b"two".to_vec(), None)
        ]
    );
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().bad_metadata, 1);
}
