//! The Rust side of the Python client's interop tests (`clients/python/tests`): what the
//! `engine` binary does not do, namely start traffic towards its clients.
//!
//! `client_peer serve` runs a server (one core, TCP with WebSocket, UDP, pub/sub, the
//! built-in `/echo` and `/echo/stream`) with routes that make it act on the calling
//! connection, then prints `client_peer listening on TCP_ADDR udp:UDP_ADDR` and serves until
//! its standard input closes:
//!
//! - `/srv/call` `METHOD\nDATA`: calls the client's METHOD with DATA, answers with its answer
//!   (or an error carrying the client's error);
//! - `/srv/notify` `METHOD\nDATA`: sends the client a Notify; `/srv/broadcast` the same
//!   to every connection;
//! - `/srv/stream` `METHOD\nA\nB...`: opens a stream to the client's METHOD, sends each
//!   chunk, closes its side, answers with the client's chunks joined by `|`;
//! - `/srv/udp-call` `ADDR\nMETHOD\nDATA`: calls METHOD on the UDP endpoint at ADDR from a
//!   `UdpEndpoint` (with its resends), answers with the answer.
//!
//! `client_peer subscribe ADDR TOPIC` is a Rust pub/sub subscriber: it prints `subscribed`,
//! then each publication's data on a line, until its standard input closes;
//! `client_peer publish ADDR TOPIC DATA` publishes once.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ringrpc::{Client, Config, Context, PubSub, Server, ServerHandle, UdpEndpoint};

const TIMEOUT: Duration = Duration::from_secs(5);

type Error = Box<dyn std::error::Error>;

/// Splits `A\nB` (the routes' payloads) into `(A, B)`.
fn split_once(payload: &[u8]) -> Option<(String, Bytes)> {
    let at = payload.iter().position(|&b| b == b'\n')?;
    let head = String::from_utf8(payload[..at].to_vec()).ok()?;
    Some((head, Bytes::copy_from_slice(&payload[at + 1..])))
}

fn bad_payload(ctx: &mut Context<'_>) {
    ctx.reply_error("payload must be `METHOD\\nDATA`");
}

fn call_client(ctx: &mut Context<'_>) {
    let Some((method, data)) = split_once(ctx.payload()) else {
        return bad_payload(ctx);
    };
    let responder = ctx.responder().expect("a request");
    ctx.conn()
        .call_with(&method, data, TIMEOUT, move |answer| match answer {
            Ok(bytes) => responder.reply(&bytes),
            Err(e) => responder.reply_error(&format!("client answered: {e}")),
        });
}

fn notify_client(ctx: &mut Context<'_>) {
    let Some((method, data)) = split_once(ctx.payload()) else {
        return bad_payload(ctx);
    };
    match ctx.conn().notify(&method, &data) {
        Ok(()) => ctx.reply(b"sent"),
        Err(e) => ctx.reply_error(&e.to_string()),
    }
}

fn stream_to_client(ctx: &mut Context<'_>) {
    let Some((method, data)) = split_once(ctx.payload()) else {
        return bad_payload(ctx);
    };
    let responder = ctx.responder().expect("a request");
    let conn = ctx.conn().clone();
    // Receiving waits, which a reactor thread must not do: a thread of its own.
    std::thread::spawn(move || {
        let run = || -> Result<String, ringrpc::StreamError> {
            let stream = conn.open_stream(&method)?;
            for chunk in data.split(|&b| b == b'\n') {
                stream.send(Bytes::copy_from_slice(chunk))?;
            }
            stream.close_send()?;
            let mut got = Vec::new();
            while let Some(chunk) = stream.recv_timeout(TIMEOUT)? {
                got.push(String::from_utf8_lossy(&chunk).into_owned());
            }
            Ok(got.join("|"))
        };
        match run() {
            Ok(joined) => responder.reply(joined.as_bytes()),
            Err(e) => responder.reply_error(&format!("stream: {e}")),
        }
    });
}

fn serve() -> Result<(), Error> {
    let config = Config::builder()
        .cores(1)
        .pin_cores(false)
        .listen("127.0.0.1:0")
        .udp_listen("127.0.0.1:0")
        .pubsub(true)
        .build()?;
    let pubsub = PubSub::from_config(&config).expect("pub/sub is on");
    let handle: Arc<OnceLock<ServerHandle>> = Arc::new(OnceLock::new());
    let udp = Arc::new(UdpEndpoint::builder("127.0.0.1:0").start()?);
    let broadcast_handle = handle.clone();
    let server = Server::builder()
        .config(config)
        .pubsub(pubsub)
        .route("/srv/call", call_client)
        .route("/srv/notify", notify_client)
        .route("/srv/stream", stream_to_client)
        .route("/srv/broadcast", move |ctx| {
            let Some((method, data)) = split_once(ctx.payload()) else {
                return bad_payload(ctx);
            };
            match broadcast_handle.get().map(|h| h.broadcast(&method, &data)) {
                Some(Ok(())) => ctx.reply(b"sent"),
                Some(Err(e)) => ctx.reply_error(&e.to_string()),
                None => ctx.reply_error("not started yet"),
            }
        })
        .route("/srv/udp-call", move |ctx| {
            let Some((addr, rest)) = split_once(ctx.payload()) else {
                return bad_payload(ctx);
            };
            let (Ok(peer), Some((method, data))) = (addr.parse::<SocketAddr>(), split_once(&rest))
            else {
                ctx.reply_error("payload must be `ADDR\\nMETHOD\\nDATA`");
                return;
            };
            let responder = ctx.responder().expect("a request");
            udp.call_with(peer, &method, data, TIMEOUT, move |answer| match answer {
                Ok(bytes) => responder.reply(&bytes),
                Err(e) => responder.reply_error(&format!("udp peer answered: {e}")),
            });
        })
        .build()?
        .start()?;
    let _ = handle.set(server.handle());
    let udp_addr = server.udp_addr().expect("udp_listen was set");
    println!(
        "client_peer listening on {} udp:{udp_addr}",
        server.local_addr()
    );
    std::io::stdout().flush()?;
    wait_for_stdin_to_close();
    server.shutdown()?;
    Ok(())
}

fn wait_for_stdin_to_close() {
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
}

fn subscribe(addr: &str, topic: &str) -> Result<(), Error> {
    let client = Client::builder(addr).connect()?;
    client.subscribe_topic(topic, |t| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", String::from_utf8_lossy(&t.data));
        let _ = out.flush();
    })?;
    println!("subscribed");
    std::io::stdout().flush()?;
    wait_for_stdin_to_close();
    client.close();
    Ok(())
}

fn publish(addr: &str, topic: &str, data: &str) -> Result<(), Error> {
    let client = Client::builder(addr).connect()?;
    client.publish(topic, data.as_bytes())?;
    client.close();
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["serve"] => serve(),
        ["subscribe", addr, topic] => subscribe(addr, topic),
        ["publish", addr, topic, data] => publish(addr, topic, data),
        _ => {
            Err("usage: client_peer serve | subscribe ADDR TOPIC | publish ADDR TOPIC DATA".into())
        }
    }
}
