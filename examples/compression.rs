//! gzip compression (arpc's gzip coder): server and client both send frames over 1 KiB
//! compressed. A large, compressible payload goes compressed both ways, which the server's
//! report shows (`gzip_in`: compressed frames it received and inflated, `gzip_out`:
//! compressed frames it sent); a small one stays plain. Handlers always see the inflated
//! bytes. Run: `cargo run --example compression`.

use std::time::Duration;

use ringrpc::{Client, Config, Server};

const TIMEOUT: Duration = Duration::from_secs(5);
const THRESHOLD: usize = 1024;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .gzip_threshold(Some(THRESHOLD)) // answers over 1 KiB go compressed
        .build()?;
    let server = Server::builder()
        .config(config)
        .route("/upper", |ctx| {
            let loud = ctx.payload().to_ascii_uppercase(); // inflated already
            ctx.reply(&loud);
        })
        .build()?
        .start()?;
    let client = Client::builder(&server.local_addr().to_string())
        .gzip_threshold(Some(THRESHOLD)) // calls over 1 KiB go compressed
        .connect()?;

    let large = "the quick brown fox jumps over the lazy dog. ".repeat(2000);
    let answer = client.call("/upper", large.clone().into(), TIMEOUT)?;
    println!(
        "large: sent {} bytes, got {} bytes back",
        large.len(),
        answer.len()
    );
    assert_eq!(answer, large.to_ascii_uppercase().as_bytes());

    let small = "tiny";
    let answer = client.call("/upper", small.into(), TIMEOUT)?;
    println!("small: {small:?} -> {:?}", String::from_utf8_lossy(&answer));
    assert_eq!(&answer[..], b"TINY");

    drop(client);
    let total = server.shutdown()?.total();
    println!(
        "server: {} requests, gzip_in {} (compressed calls), gzip_out {} (compressed answers), {} bytes in, {} bytes out",
        total.requests, total.gzip_in, total.gzip_out, total.bytes_in, total.bytes_out
    );
    assert_eq!(total.requests, 2);
    // The large call and its answer travelled compressed; the small ones did not.
    assert_eq!(total.gzip_in, 1);
    assert_eq!(total.gzip_out, 1);
    // 90 KB of text each way, yet far fewer bytes on the wire.
    assert!(total.bytes_in < 10_000 && total.bytes_out < 10_000);
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
