//! A server calling back into its client: while handling `/job`, the server asks the client
//! (`/client/confirm`) before answering. Both directions share one connection, and the
//! handler waits without blocking its core. Run: `cargo run --example callback`.

use std::time::Duration;

use ringrpc::{Client, Config, Server};

const TIMEOUT: Duration = Duration::from_secs(5);

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .route("/job", |ctx| {
            let job = ctx.payload_bytes();
            let responder = ctx.responder().expect("a request");
            // Blocking here would stall the core: ask the client with a callback instead.
            ctx.conn().call_with(
                "/client/confirm",
                job.clone(),
                TIMEOUT,
                move |answer| match answer {
                    Ok(yes) if &yes[..] == b"yes" => responder
                        .reply(format!("done: {}", String::from_utf8_lossy(&job)).as_bytes()),
                    Ok(_) => responder.reply_error("the client declined"),
                    Err(e) => responder.reply_error(&format!("could not ask the client: {e}")),
                },
            );
        })
        .build()?
        .start()?;

    let client = Client::builder(&server.local_addr().to_string())
        .route("/client/confirm", |ctx| {
            println!(
                "client asked to confirm {:?}",
                String::from_utf8_lossy(ctx.payload())
            );
            let approve = ctx.payload() != b"format disk";
            ctx.reply(if approve { b"yes" } else { b"no" });
        })
        .connect()?;

    let done = client.call("/job", "backup".into(), TIMEOUT)?;
    println!("server: {}", String::from_utf8_lossy(&done));
    assert_eq!(&done[..], b"done: backup");
    let refused = client.call("/job", "format disk".into(), TIMEOUT);
    println!("server: {refused:?}");
    assert!(refused.is_err());

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
