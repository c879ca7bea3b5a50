//! WebSocket on the arpc port, end to end with a real client (tungstenite): upgrade, calls
//! in binary messages, text messages, ping, the close handshake, and the refusals a bad
//! upgrade or a bad frame gets (HTTP status, close code), each costing only its connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use ringrpc::{Config, DisconnectReason, RunningServer, Server};
use ringrpc_protocol::{Decoder, Frame};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const LONG: Duration = Duration::from_secs(10);

fn serve(builder: ringrpc::ServerBuilder, config: ringrpc::ConfigBuilder) -> RunningServer {
    let config = config.cores(1).listen("127.0.0.1:0").build().unwrap();
    builder.config(config).build().unwrap().start().unwrap()
}

fn connect(addr: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    let url = format!("ws://{addr}{path}");
    let (ws, response) = tungstenite::client(url.as_str(), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

fn decode(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let f = Decoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "one arpc frame per message");
    f
}

fn read_binary(ws: &mut WebSocket<TcpStream>) -> Frame {
    loop {
        match ws.read().unwrap() {
            Message::Binary(b) => return decode(&b),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn calls_travel_in_binary_messages_and_raw_arpc_still_works_on_the_same_port() {
    let server = serve(Server::builder(), Config::builder());
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws");
    for seq in 1..=50u64 {
        let req = Frame::request(seq, "/echo", format!("ws {seq}")).to_bytes();
        ws.send(Message::Binary(req.to_vec().into())).unwrap();
    }
    for seq in 1..=50u64 {
        let f = read_binary(&mut ws);
        assert_eq!(
            (f.header.seq, &f.payload[..]),
            (seq, format!("ws {seq}").as_bytes())
        );
    }
    // A text message is read as bytes too; two frames split across two messages as well.
    let req = Frame::request(60, "/echo", "text").to_bytes();
    ws.send(Message::Text(
        String::from_utf8(req.to_vec()).unwrap().into(),
    ))
    .unwrap();
    assert_eq!(read_binary(&mut ws).header.seq, 60);
    let two = [
        Frame::request(61, "/echo", "a").to_bytes(),
        Frame::request(62, "/echo", "b").to_bytes(),
    ]
    .concat();
    ws.send(Message::Binary(two[..20].to_vec().into())).unwrap();
    ws.send(Message::Binary(two[20..].to_vec().into())).unwrap();
    assert_eq!(read_binary(&mut ws).header.seq, 61);
    assert_eq!(read_binary(&mut ws).header.seq, 62);
    // Ping is answered with Pong (tungstenite queues it; we see the reply as a Pong).
    ws.send(Message::Ping(b"hb".to_vec().into())).unwrap();
    loop {
        if let Message::Pong(p) = ws.read().unwrap() {
            assert_eq!(&p[..], b"hb");
            break;
        }
    }
    // Raw arpc on the same port, meanwhile.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(&Frame::request(7, "/echo", "raw").to_bytes())
        .unwrap();
    let mut answer = [0u8; 16 + 5 + 3];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[21..], b"raw");
    // The close handshake: our Close is echoed, then the server closes.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    drop(raw);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 54);
}

/// Sends `request` raw and reads everything until the server closes.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[test]
fn bad_upgrades_get_their_http_status_and_only_their_connection_closes() {
    let (reasons_tx, reasons) = crossbeam_channel::unbounded();
    let server = serve(
        Server::builder().on_disconnect(move |_, reason| {
            if let DisconnectReason::HandshakeRefused { status } = reason {
                reasons_tx.send(*status).unwrap();
            }
        }),
        Config::builder().ws_allowed_origins(Some(vec!["https://ok.example".into()])),
    );
    let addr = server.local_addr();
    for (request, status) in [
        (upgrade("/nope", "Origin: https://ok.example\r\n"), "404"),
        (upgrade("/ws", "Origin: https://evil.example\r\n"), "403"),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "400"),
        (
            upgrade("/ws", "Origin: https://ok.example\r\n").replace("Version: 13", "Version: 8"),
            "426",
        ),
        (
            format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000)),
            "431",
        ),
    ] {
        let answer = String::from_utf8_lossy(&raw_exchange(addr, request.as_bytes())).into_owned();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert_eq!(reasons.recv_timeout(LONG).unwrap().to_string(), status);
    }
    // The right origin upgrades.
    let answer = raw_exchange_until(addr, upgrade("/ws", "Origin: https://ok.example\r\n"));
    assert!(answer.contains("101 Switching Protocols"));
    assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    server.shutdown().unwrap();
}

/// Sends `request` and reads until the response head is complete.
fn raw_exchange_until(addr: SocketAddr, request: String) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn an_unmasked_frame_is_closed_with_1002_after_the_answers_it_earned() {
    let server = serve(Server::builder(), Config::builder());
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(upgrade("/ws", "").as_bytes()).unwrap();
    // A valid masked binary message with one request, then an unmasked frame.
    let req = Frame::request(5, "/echo", "hi").to_bytes();
    let mut wire = vec![0x82, 0x80 | req.len() as u8, 1, 2, 3, 4];
    wire.extend(req.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
    wire.extend_from_slice(&[0x82, 0x01, 0x00]);
    s.write_all(&wire).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let frames = &out[head_end..];
    // The answer in one binary message, then Close 1002.
    assert_eq!(frames[0], 0x82);
    let len = frames[1] as usize;
    assert_eq!(decode(&frames[2..2 + len]).header.seq, 5);
    let close = &frames[2 + len..];
    assert_eq!(close[0], 0x88);
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
    server.shutdown().unwrap();
}

#[test]
fn websocket_can_be_turned_off_and_a_get_is_then_a_protocol_error() {
    let server = serve(Server::builder(), Config::builder().ws_path(None::<String>));
    let out = raw_exchange(server.local_addr(), upgrade("/ws", "").as_bytes());
    assert!(
        out.is_empty(),
        "raw arpc only: silently closed as an oversize body"
    );
    assert_eq!(server.shutdown().unwrap().total().protocol_errors, 1);
}

fn http(addr: SocketAddr, request: &str) -> String {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    sock.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap(); // the server closes after answering
    answer
}

#[test]
fn static_assets_are_served_over_plain_http_beside_the_upgrade() {
    let page = "<!doctype html><script type=module src=/app.js></script>";
    let server = serve(
        Server::builder()
            .static_asset("/", "text/html; charset=utf-8", page)
            .static_asset("/app.js", "text/javascript", "console.log('hi')"),
        Config::builder(),
    );
    let addr = server.local_addr();
    let get = http(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    assert!(get.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(get.ends_with(page), "{get}");
    let js = http(addr, "GET /app.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(js.ends_with("console.log('hi')") && js.contains("text/javascript"));
    let head = http(addr, "HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.contains("Content-Length: 17\r\n") && head.ends_with("\r\n\r\n"));
    assert!(http(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http(addr, "POST / HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 405"));
    // The same port still upgrades and still speaks raw arpc.
    let mut ws = connect(addr, "/ws");
    ws.send(Message::Binary(
        Frame::request(1, "/echo", "x").to_bytes().to_vec().into(),
    ))
    .unwrap();
    assert_eq!(&read_binary(&mut ws).payload[..], b"x");
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(LONG)).unwrap();
    raw.write_all(&Frame::request(2, "/echo", "y").to_bytes())
        .unwrap();
    let mut answer = [0u8; 16 + 5 + 1];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(answer[21], b'y');
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 2);
}

#[test]
fn an_asset_on_the_websocket_path_or_a_bad_path_is_refused_at_start() {
    let config = Config::builder().listen("127.0.0.1:0").build().unwrap();
    let clash = Server::builder()
        .config(config.clone())
        .static_asset("/ws", "text/plain", "x")
        .build();
    assert!(clash.unwrap_err().to_string().contains("WebSocket path"));
    let relative = Server::builder()
        .config(config)
        .static_asset("index.html", "text/html", "x")
        .build();
    assert!(
        relative
            .unwrap_err()
            .to_string()
            .contains("must start with '/'")
    );
}

#[test]
fn a_configured_subprotocol_is_negotiated() {
    let server = serve(
        Server::builder(),
        Config::builder().ws_protocols(vec!["arpc".into()]),
    );
    let addr = server.local_addr();
    let stream = TcpStream::connect(addr).unwrap();
    let request = tungstenite::handshake::client::Request::builder()
        .uri(format!("ws://{addr}/ws"))
        .header("Host", addr.to_string())
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .header("Sec-WebSocket-Protocol", "chat, arpc")
        .body(())
        .unwrap();
    let (mut ws, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "arpc"
    );
    ws.send(Message::Binary(
        Frame::request(1, "/echo", "p").to_bytes().to_vec().into(),
    ))
    .unwrap();
    assert_eq!(&read_binary(&mut ws).payload[..], b"p");
}

#[test]
fn a_websocket_only_listener_upgrades_and_refuses_raw_arpc() {
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .ws_listen("127.0.0.1:0")
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .static_asset("/", "text/plain", "page")
        .build()
        .unwrap()
        .start()
        .unwrap();
    let ws_addr = server.ws_addrs()[0];
    assert_ne!(ws_addr, server.local_addr());
    let mut ws = connect(ws_addr, "/ws");
    ws.send(Message::Binary(
        Frame::request(1, "/echo", "w").to_bytes().to_vec().into(),
    ))
    .unwrap();
    assert_eq!(&read_binary(&mut ws).payload[..], b"w");
    assert!(http(ws_addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").ends_with("page"));
    // Raw arpc there is not HTTP: 400, closed.
    let mut raw = TcpStream::connect(ws_addr).unwrap();
    raw.set_read_timeout(Some(LONG)).unwrap();
    raw.write_all(&Frame::request(2, "/echo", "y").to_bytes())
        .unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    drop(ws);
    let report = server.shutdown().unwrap();
    assert_eq!(report.total().requests, 1);
}

#[test]
fn ws_listen_needs_websocket_on() {
    let err = Config::builder()
        .ws_listen("127.0.0.1:0")
        .ws_path(None::<String>)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("ws_listen needs WebSocket on"),
        "{err}"
    );
}
