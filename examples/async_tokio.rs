//! The awaitable client from a `#[tokio::main]` program: calls (several in flight at once,
//! one with a timeout that cancels it), a stream used as a `futures::Stream` and `Sink`,
//! and a subscription as a `futures::Stream`. The futures are ringrpc's own and runtime-
//! agnostic: tokio only polls them. The server answers the stream with an async stream
//! handler on its reactor. Run: `cargo run --example async_tokio`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use ringrpc::{BiStream, Client, Config, Server, time};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        // Answers each frame in upper case; ends when the client ends.
        .route_stream_async("/upper", |stream: BiStream| async move {
            while let Ok(Some(frame)) = stream.recv_async().await {
                if stream.send_async(frame.to_ascii_uppercase()).await.is_err() {
                    return;
                }
            }
            let _ = stream.close_send();
        })
        .route_subscribe("/ticks", |request, replies| {
            let n: u32 = String::from_utf8_lossy(&request).parse().unwrap_or(0);
            for i in 1..=n {
                let _ = replies.reply(format!("tick {i}"));
            }
            let _ = replies.reply_end();
        })
        .route_async("/slow", |_: Bytes| async {
            time::sleep(Duration::from_secs(30)).await;
            "too late"
        })
        .build()?
        .start()?;
    let client = Client::connect(&server.local_addr().to_string())?;

    // Calls: three in flight at once.
    let (a, b, c) = tokio::try_join!(
        client.call_async("/echo", "a".into(), TIMEOUT),
        client.call_async("/echo", "b".into(), TIMEOUT),
        client.call_async("/echo", "c".into(), TIMEOUT),
    )?;
    println!("calls: {a:?} {b:?} {c:?}");
    assert_eq!((&a[..], &b[..], &c[..]), (&b"a"[..], &b"b"[..], &b"c"[..]));

    // A call given up after 50 ms: dropping its future cancels it.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        client.call_async("/slow", Bytes::new(), TIMEOUT),
    )
    .await;
    assert!(gave_up.is_err());

    // A stream: words forwarded into its Sink (which closes it at the end), the answers
    // read from it as a Stream.
    let stream = client.open_stream("/upper")?;
    let words = futures_util::stream::iter(["hello", "async", "world"]).map(|w| Ok(Bytes::from(w)));
    words.forward(stream.sender()).await?;
    let upper: Vec<Bytes> = stream.try_collect().await?;
    println!("stream: {upper:?}");
    assert_eq!(upper, ["HELLO", "ASYNC", "WORLD"]);

    // A subscription, awaited reply by reply.
    let ticks: Vec<String> = client
        .subscribe("/ticks", "3", Some(TIMEOUT))?
        .into_stream()
        .map(|reply| String::from_utf8_lossy(&reply.expect("a reply")).into_owned())
        .collect()
        .await;
    println!("subscription: {ticks:?}");
    assert_eq!(ticks, ["tick 1", "tick 2", "tick 3"]);

    drop(client);
    server.shutdown()?;
    Ok(())
}

#[cfg_attr(test, allow(dead_code))]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

#[test]
fn example_runs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(run()).unwrap();
}
