//! An async gateway: two backend servers, and a gateway whose async handler fans out to
//! both through its core's clients (one connection per backend per core, shared by every
//! request), awaits both under one timeout and joins the answers. Driven by the awaitable
//! client; exits 0 only when every answer is right.
//! Run: `cargo run --example async_gateway`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, try_join};
use ringrpc::{Client, Config, HandlerError, Request, RunningServer, Server, time};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A backend that answers `/price` for an item after a short (simulated) lookup.
fn backend(
    name: &'static str,
    delay: Duration,
) -> Result<RunningServer, Box<dyn std::error::Error>> {
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    Ok(Server::builder()
        .config(config)
        .route_async("/price", move |item: Bytes| async move {
            time::sleep(delay).await;
            format!("{name}:{}", item.len() * 10)
        })
        .build()?
        .start()?)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = (
        backend("a", Duration::from_millis(5))?,
        backend("b", Duration::from_millis(8))?,
    );
    let (addr_a, addr_b) = (a.local_addr().to_string(), b.local_addr().to_string());

    let config = Config::builder().cores(2).listen("127.0.0.1:0").build()?;
    let gateway = Server::builder()
        .config(config)
        .route_async("/quote", move |req: Request| {
            let (addr_a, addr_b) = (addr_a.clone(), addr_b.clone());
            async move {
                // This core's connections to both backends (opened on first use).
                let (a, b) = (req.client(&addr_a)?, req.client(&addr_b)?);
                let both = try_join(
                    a.call_async("/price", req.payload.clone(), TIMEOUT),
                    b.call_async("/price", req.payload.clone(), TIMEOUT),
                );
                let (from_a, from_b) = time::timeout(Duration::from_secs(1), both).await??;
                Ok::<_, HandlerError>(format!(
                    "{}|{}",
                    String::from_utf8_lossy(&from_a),
                    String::from_utf8_lossy(&from_b)
                ))
            }
        })
        .build()?
        .start()?;

    let client = Client::connect(&gateway.local_addr().to_string())?;
    // 100 quotes in flight at once, awaited together.
    let quotes = futures_executor::block_on(join_all((1..=100usize).map(|n| {
        let item = Bytes::from(vec![b'x'; n]);
        client.call_async("/quote", item, TIMEOUT)
    })));
    for (i, quote) in quotes.into_iter().enumerate() {
        let n = i + 1;
        let quote = quote?;
        assert_eq!(quote, format!("a:{}|b:{}", n * 10, n * 10).into_bytes());
    }
    println!("100 quotes joined from two backends");

    // A backend that is down: a clear error, no hang.
    b.shutdown()?;
    let failed = futures_executor::block_on(client.call_async("/quote", "x".into(), TIMEOUT));
    println!("with backend b down: {failed:?}");
    assert!(failed.is_err());

    drop(client);
    gateway.shutdown()?;
    a.shutdown()?;
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
