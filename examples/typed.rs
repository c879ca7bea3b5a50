//! Typed handlers: arguments are extractors (`Json<T>`, `MsgPack<T>`, `State<T>`, ...), the
//! value is the Response. The same route is served sync (`route_typed`) and async
//! (`route_async`), over JSON and MessagePack, and called with typed calls.
//! Run: `cargo run --example typed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringrpc::{Client, Config, HandlerError, Json, MsgPack, Server, State};
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, Serialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Sum {
    sum: i64,
    /// How many sums this server has made so far (shared state).
    nth: u64,
}

/// Application state: one counter shared by every core.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

fn add(Json(args): Json<Add>, State(counter): State<Counter>) -> Result<Json<Sum>, HandlerError> {
    let sum = args
        .a
        .checked_add(args.b)
        .ok_or_else(|| HandlerError::new("the sum overflows an i64"))?;
    let nth = counter.0.fetch_add(1, Ordering::Relaxed) + 1;
    Ok(Json(Sum { sum, nth }))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .state(Counter::default())
        .route_typed("/add", add)
        .route_async(
            "/add/msgpack",
            |MsgPack(args): MsgPack<Add>, State(counter): State<Counter>| async move {
                let nth = counter.0.fetch_add(1, Ordering::Relaxed) + 1;
                MsgPack(Sum {
                    sum: args.a + args.b,
                    nth,
                })
            },
        )
        .build()?
        .start()?;

    let client = Client::connect(&server.local_addr().to_string())?;
    let sum: Sum = client.call_json("/add", &Add { a: 2, b: 40 }, TIMEOUT)?;
    println!("JSON: 2 + 40 = {} (sum #{})", sum.sum, sum.nth);
    assert_eq!(sum, Sum { sum: 42, nth: 1 });

    let sum: Sum = client.call_msgpack("/add/msgpack", &Add { a: 1, b: 2 }, TIMEOUT)?;
    println!("MessagePack: 1 + 2 = {} (sum #{})", sum.sum, sum.nth);
    assert_eq!(sum, Sum { sum: 3, nth: 2 });

    // A body that is not an `Add`: an error naming the type expected; the connection stays.
    let refused = client.call("/add", "not json".into(), TIMEOUT).unwrap_err();
    println!("refused: {refused}");
    assert!(refused.to_string().contains("expected JSON for typed::Add"));
    // An error the handler returns reaches the caller as text.
    let overflow = client
        .call_json::<_, Sum>("/add", &Add { a: i64::MAX, b: 1 }, TIMEOUT)
        .unwrap_err();
    assert!(overflow.to_string().contains("overflows"));

    drop(client);
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
