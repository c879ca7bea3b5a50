//! An async responder answering from another thread: the handler hands its `Responder` to a
//! worker pool of our own and returns at once, so the reactor keeps serving while the work
//! runs. Run: `cargo run --example async_responder`.

use std::thread;
use std::time::Duration;

use crossbeam_channel::unbounded;
use ringrpc::{Client, Config, Responder, Server};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (jobs_tx, jobs_rx) = unbounded::<(Responder, u64)>();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let jobs_rx = jobs_rx.clone();
            thread::spawn(move || {
                for (responder, n) in jobs_rx {
                    // Slow work that must not run on the reactor thread.
                    let sum: u64 = (1..=n).sum();
                    responder.reply(sum.to_string().as_bytes());
                }
            })
        })
        .collect();

    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .route("/sum", move |ctx| {
            let n = match std::str::from_utf8(ctx.payload())
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(n) => n,
                None => {
                    ctx.reply_error("payload must be a number");
                    return;
                }
            };
            let responder = ctx.responder().expect("a request");
            jobs_tx.send((responder, n)).expect("workers are running");
        })
        .build()?
        .start()?;

    let client = Client::connect(&server.local_addr().to_string())?;
    let timeout = Duration::from_secs(5);
    for n in [10u64, 1_000, 1_000_000] {
        let sum = client.call("/sum", n.to_string().into(), timeout)?;
        println!("sum 1..={n} = {}", String::from_utf8_lossy(&sum));
        assert_eq!(sum, (n * (n + 1) / 2).to_string().into_bytes());
    }
    assert!(client.call("/sum", "not a number".into(), timeout).is_err());

    drop(client);
    server.shutdown()?;
    for w in workers {
        w.join().expect("worker");
    }
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
