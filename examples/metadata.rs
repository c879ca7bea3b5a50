//! Request metadata (arpc's `md` block): the client sends a request id and a user beside the
//! payload with `Client::call_with_metadata`; the `PropagateMetadata` middleware copies the
//! request id onto the Response; the handler reads `ctx.metadata()` and adds a key of its
//! own to the reply's. A call without metadata still works, and gets only what the handler
//! adds. Run: `cargo run --example metadata`.

use std::time::Duration;

use ringrpc::{Client, Config, Context, Metadata, PropagateMetadata, Server};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Metadata as text, sorted, for printing.
fn show(md: &Metadata) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = md
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    pairs.sort();
    pairs
}

fn greet(ctx: &mut Context<'_>) {
    // The block is already off the payload: the handler sees only what the caller sent.
    let user = ctx.metadata().and_then(|md| md.get("user"));
    let answer = match user {
        Some(user) => format!(
            "hello {}, you sent {:?}",
            String::from_utf8_lossy(user),
            String::from_utf8_lossy(ctx.payload())
        ),
        None => "hello stranger".to_string(),
    };
    // Added to what the middleware already set (set_reply_metadata would replace it).
    let _ = ctx.reply_metadata_mut().insert("served-by", "ringrpc");
    ctx.reply(answer.as_bytes());
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .middleware(PropagateMetadata::new(["x-request-id"]))
        .route("/greet", greet)
        .build()?
        .start()?;
    let client = Client::connect(&server.local_addr().to_string())?;

    let mut md = Metadata::new();
    md.insert("x-request-id", "req-42")?;
    md.insert("user", "ada")?;
    println!("request metadata: {:?}", show(&md));
    let (answer, reply_md) = client.call_with_metadata("/greet", b"ping", &md, TIMEOUT)?;
    let reply_md = reply_md.expect("the server attached metadata");
    println!("answer: {}", String::from_utf8_lossy(&answer));
    println!("reply metadata: {:?}", show(&reply_md));
    assert_eq!(&answer[..], b"hello ada, you sent \"ping\"");
    assert_eq!(reply_md.get("x-request-id"), Some(&b"req-42"[..]));
    assert_eq!(reply_md.get("served-by"), Some(&b"ringrpc"[..]));
    // Only the keys the middleware names travel back.
    assert_eq!(reply_md.get("user"), None);

    // Without metadata: nothing to propagate, the handler's key still comes back.
    let (answer, reply_md) = client.call_with_metadata("/greet", b"", &Metadata::new(), TIMEOUT)?;
    let reply_md = reply_md.expect("the handler's key");
    println!(
        "without metadata: {} {:?}",
        String::from_utf8_lossy(&answer),
        show(&reply_md)
    );
    assert_eq!(&answer[..], b"hello stranger");
    assert_eq!(reply_md.get("x-request-id"), None);
    assert_eq!(reply_md.get("served-by"), Some(&b"ringrpc"[..]));

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
