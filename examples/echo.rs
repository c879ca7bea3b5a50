//! Echo server and client: a server with its built-in `/echo` and a handler of our own, and
//! a client calling both. Run: `cargo run --example echo`.

use std::time::Duration;

use ringrpc::{Client, Config, Context, Server};

fn upper(ctx: &mut Context<'_>) {
    let loud = ctx.payload().to_ascii_uppercase();
    ctx.reply(&loud);
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder().cores(2).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .route("/upper", upper)
        .build()?
        .start()?;
    println!("server on {}", server.local_addr());

    let client = Client::connect(&server.local_addr().to_string())?;
    let timeout = Duration::from_secs(5);
    let echoed = client.call("/echo", "hello".into(), timeout)?;
    let shouted = client.call("/upper", "hello".into(), timeout)?;
    println!("/echo  -> {}", String::from_utf8_lossy(&echoed));
    println!("/upper -> {}", String::from_utf8_lossy(&shouted));
    assert_eq!((&echoed[..], &shouted[..]), (&b"hello"[..], &b"HELLO"[..]));

    drop(client);
    print!("{}", server.shutdown()?);
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
