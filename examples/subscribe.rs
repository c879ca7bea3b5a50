//! Subscribe: one request answered by several replies and an end (or an error end). The
//! server answers from a thread of its own, as a feed would. Run:
//! `cargo run --example subscribe`, or against another arpc server whose stream handler
//! `/countdown` answers N replies then closes: `cargo run --example subscribe -- HOST:PORT`.

use std::time::Duration;

use ringrpc::{Client, Config, Server, StreamError};

fn countdown(client: &Client, from: &str) -> Result<Vec<String>, StreamError> {
    client
        .subscribe("/countdown", from.to_string(), Some(Duration::from_secs(5)))?
        .map(|reply| reply.map(|r| String::from_utf8_lossy(&r).into_owned()))
        .collect()
}

fn run(external: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(addr) = external {
        let client = Client::connect(&addr)?;
        let replies = countdown(&client, "3")?;
        println!("{addr} replied {replies:?}");
        assert_eq!(replies, ["3", "2", "1"]);
        return Ok(());
    }
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .route_subscribe("/countdown", |request, replies| {
            std::thread::spawn(move || {
                let Ok(n) = String::from_utf8_lossy(&request).parse::<u32>() else {
                    let _ = replies.reply_error("send a number");
                    return;
                };
                for i in (1..=n).rev() {
                    let _ = replies.reply(i.to_string());
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = replies.reply_end();
            });
        })
        .build()?
        .start()?;
    let client = Client::connect(&server.local_addr().to_string())?;

    let replies = countdown(&client, "3")?;
    println!("replies: {replies:?}");
    assert_eq!(replies, ["3", "2", "1"]);

    let refused = countdown(&client, "many");
    println!("a bad request: {refused:?}");
    assert_eq!(refused, Err(StreamError::Remote("send a number".into())));

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
