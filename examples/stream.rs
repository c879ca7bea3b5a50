//! Streams both ways on one connection: the client streams words to `/upper` and reads
//! them back uppercased; the server then opens a stream to the client's `/ticks` handler.
//! Run: `cargo run --example stream`, or against another arpc server that serves the
//! stream `/upper` (a Go arpc `HandleStream`, say): `cargo run --example stream -- HOST:PORT`.

use std::time::Duration;

use crossbeam_channel::unbounded;
use ringrpc::{Client, Config, Server};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Streams words to `/upper` at `addr` and checks the answers; returns them.
fn upper_words(client: &Client, words: &[&str]) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let stream = client.open_stream_with("/upper", Some(TIMEOUT))?;
    for word in words {
        stream.send(word.to_string())?;
    }
    stream.close_send()?; // half-close: the answers still come
    let mut answers = Vec::new();
    while let Some(data) = stream.recv()? {
        answers.push(String::from_utf8_lossy(&data).into_owned());
    }
    Ok(answers)
}

fn run(external: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let words = ["streams", "both", "ways"];
    if let Some(addr) = external {
        let client = Client::connect(&addr)?;
        let answers = upper_words(&client, &words)?;
        println!("{addr} answered {answers:?}");
        assert_eq!(answers, ["STREAMS", "BOTH", "WAYS"]);
        return Ok(());
    }

    let (conns_tx, conns) = unbounded();
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .on_connect(move |conn| {
            let _ = conns_tx.send(conn.clone());
        })
        .route_stream("/upper", |ctx| {
            let loud = ctx.data().to_ascii_uppercase();
            if !loud.is_empty() {
                let _ = ctx.send(&loud);
            }
            if ctx.is_eof() {
                let _ = ctx.close_send();
            }
        })
        .build()?
        .start()?;

    let client = Client::builder(&server.local_addr().to_string())
        .route_stream_blocking("/ticks", |stream| {
            let mut seen = 0;
            while let Ok(Some(tick)) = stream.recv() {
                println!("client got tick {}", String::from_utf8_lossy(&tick));
                seen += 1;
            }
            let _ = stream.send_and_close(format!("saw {seen} ticks"));
        })
        .connect()?;

    let answers = upper_words(&client, &words)?;
    println!("server answered {answers:?}");
    assert_eq!(answers, ["STREAMS", "BOTH", "WAYS"]);

    // The server side opens a stream to its client.
    let conn = conns.recv_timeout(TIMEOUT)?;
    let ticks = conn.open_stream("/ticks")?;
    for i in 1..=3 {
        ticks.send(i.to_string())?;
    }
    ticks.close_send()?;
    let summary = ticks.recv_timeout(TIMEOUT)?.unwrap_or_default();
    println!("client answered {:?}", String::from_utf8_lossy(&summary));
    assert_eq!(&summary[..], b"saw 3 ticks");

    drop(client);
    server.shutdown()?;
    Ok(())
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args().nth(1))
}

#[test]
fn example_runs() {
    run(None).unwrap();
}
