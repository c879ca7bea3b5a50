//! A middleware logging every call: `LogRequests` from the engine plus one of our own that
//! counts calls per method and turns away callers without a token. Run:
//! `cargo run --example middleware_log` (set `RUST_LOG=info` to see the log lines).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringrpc::{Client, Config, Context, Flow, LogRequests, Middleware, Server};

/// Counts calls per method; refuses requests whose user flags lack the "authorised" bit.
#[derive(Default)]
struct Audit {
    calls: Mutex<BTreeMap<String, u32>>,
}

impl Middleware for Audit {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        let method = String::from_utf8_lossy(ctx.method()).into_owned();
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
        if ctx.method() == b"/admin" && ctx.user_flags() & 1 == 0 {
            ctx.reply_error("not authorised");
            return Flow::Stop;
        }
        Flow::Continue
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let audit = Arc::new(Audit::default());
    let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
    let server = Server::builder()
        .config(config)
        .middleware(LogRequests)
        .middleware(audit.clone())
        .route("/admin", |ctx| {
            ctx.reply(b"welcome");
        })
        .build()?
        .start()?;

    let client = Client::connect(&server.local_addr().to_string())?;
    let timeout = Duration::from_secs(5);
    for word in ["a", "b", "c"] {
        client.call("/echo", word.into(), timeout)?;
    }
    let refused = client.call("/admin", "".into(), timeout);
    println!("/admin without a token: {refused:?}");
    assert!(refused.is_err());

    let counts = audit.calls.lock().unwrap().clone();
    println!("calls per method: {counts:?}");
    assert_eq!(counts.get("/echo"), Some(&3));
    assert_eq!(counts.get("/admin"), Some(&1));

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
