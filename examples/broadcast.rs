//! Broadcast to many clients: the server sends one Notify to every connection on every core
//! (encoded once), and each client's `/news` handler receives it exactly once. Run:
//! `cargo run --example broadcast`.

use std::time::Duration;

use crossbeam_channel::unbounded;
use ringrpc::{Client, Config, Server};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (connected_tx, connected) = unbounded();
    let config = Config::builder().cores(2).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .on_connect(move |conn| {
            let _ = connected_tx.send(conn.id());
        })
        .build()?
        .start()?;

    // Twenty clients, each with a /news handler that reports what it receives.
    let (news_tx, news) = unbounded();
    let mut clients = Vec::new();
    for i in 0..20 {
        let news_tx = news_tx.clone();
        clients.push(
            Client::builder(&server.local_addr().to_string())
                .route("/news", move |ctx| {
                    let _ = news_tx.send((i, String::from_utf8_lossy(ctx.payload()).into_owned()));
                })
                .connect()?,
        );
    }
    // Every connection was accepted before we broadcast.
    for _ in 0..20 {
        connected.recv_timeout(Duration::from_secs(5))?;
    }
    server.handle().broadcast("/news", b"the engine is up")?;

    let mut heard: Vec<usize> = (0..20)
        .map(|_| news.recv_timeout(Duration::from_secs(5)).map(|(i, _)| i))
        .collect::<Result<_, _>>()?;
    heard.sort();
    assert_eq!(
        heard,
        (0..20).collect::<Vec<_>>(),
        "each client heard it exactly once"
    );
    assert!(
        news.recv_timeout(Duration::from_millis(100)).is_err(),
        "and only once"
    );
    println!("all {} clients received the broadcast", heard.len());

    drop(clients);
    server.shutdown()?;
    Ok(())
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}

#[test]
fn example_runs() {
    run().unwrap();
}
