//! Pub/sub: a server with [`ringrpc::PubSub`] behind a password, one publisher client and two
//! subscriber clients. Both subscribers get every `publish`; `publish_to_one` goes to one
//! subscriber at a time, in turn; after an unsubscribe nothing more arrives there; and
//! `PubSub::stats` counts it all. The same calls work against a Go arpc pub/sub server
//! (arpcex). Run: `cargo run --example pubsub`.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use ringrpc::{Client, Config, PubSub, Server};

const PASSWORD: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(10);

/// What a subscriber got: its name and the data.
type Got = (&'static str, String);

/// A subscriber client: connected, authenticated, subscribed to `topic`; every publication
/// it gets is sent to `tx` as (its name, the data).
fn subscriber(
    addr: &str,
    name: &'static str,
    topic: &str,
    tx: Sender<Got>,
) -> Result<Client, Box<dyn std::error::Error>> {
    let client = Client::connect(addr)?;
    client.pubsub_auth(PASSWORD)?;
    // Runs on the client's reactor thread: hand the data over, never block here.
    client.subscribe_topic(topic, move |t| {
        let _ = tx.send((name, String::from_utf8_lossy(&t.data).into_owned()));
    })?;
    Ok(client)
}

/// The next `n` deliveries, sorted by subscriber.
fn next(rx: &Receiver<Got>, n: usize) -> Result<Vec<Got>, RecvTimeoutError> {
    let mut got = (0..n)
        .map(|_| rx.recv_timeout(WAIT))
        .collect::<Result<Vec<_>, _>>()?;
    got.sort();
    Ok(got)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let pubsub = PubSub::new().password(PASSWORD); // the clone kept here reads the stats
    let config = Config::builder().cores(2).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .pubsub(pubsub.clone())
        .build()?
        .start()?;
    let addr = server.local_addr().to_string();

    let publisher = Client::connect(&addr)?;
    let refused = publisher.publish("news", b"before in_A");
    println!("publish before authenticating: {refused:?}");
    assert!(refused.is_err());
    publisher.pubsub_auth(PASSWORD)?;

    let (tx, rx) = mpsc::channel();
    let alice = subscriber(&addr, "alice", "news", tx.clone())?;
    let bob = subscriber(&addr, "bob", "news", tx)?;
    println!("subscribed: {:?}", pubsub.stats());
    assert_eq!((pubsub.stats().subscribers, pubsub.stats().topics), (2, 1));

    // publish: every subscriber gets it.
    publisher.publish("news", b"hello all")?;
    let got = next(&rx, 2)?;
    println!("publish -> {got:?}");
    assert_eq!(
        got,
        [("alice", "hello all".into()), ("bob", "hello all".into())]
    );

    // publish_to_one: one subscriber per publication, the next in turn.
    let mut turns = Vec::new();
    for i in 1..=4 {
        publisher.publish_to_one("news", format!("job {i}").as_bytes())?;
        // Wait for this one before the next, so the order of arrival is the order of turns.
        let (who, data) = rx.recv_timeout(WAIT)?;
        println!("publish_to_one -> {who}: {data}");
        assert_eq!(data, format!("job {i}"));
        turns.push(who);
    }
    assert!(
        turns.windows(2).all(|w| w[0] != w[1]),
        "publish_to_one did not alternate: {turns:?}"
    );

    // Unsubscribe: bob gets nothing more; the server hands the next publication to alice
    // only.
    bob.unsubscribe_topic("news")?;
    let handed_to = pubsub.publish("news", b"from the server")?;
    println!("after bob unsubscribed, the server published to {handed_to} subscriber");
    assert_eq!(handed_to, 1);
    publisher.publish("news", b"bye")?;
    let got = next(&rx, 2)?;
    println!("after unsubscribing -> {got:?}");
    assert_eq!(
        got,
        [("alice", "bye".into()), ("alice", "from the server".into())]
    );
    let silence = rx.recv_timeout(Duration::from_millis(200));
    println!("then: {silence:?}");
    assert_eq!(silence, Err(RecvTimeoutError::Timeout));

    // 1 publish + 4 publish_to_one + 2 after the unsubscribe; 2 + 4 + 2 notifies queued.
    let stats = pubsub.stats();
    println!("stats: {stats:?}");
    assert_eq!(stats.published, 7);
    assert_eq!(stats.delivered, 8);
    assert_eq!(stats.skipped, 0);
    assert_eq!((stats.subscribers, stats.topics), (1, 1));

    drop((publisher, alice, bob));
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
