//! peer-tokio: the arpc echo server a typical Rust user writes on tokio (epoll).
//!
//! One task per connection, `tokio_util::codec::Framed` over [`ArpcCodec`], and the idiomatic
//! `while let Some(frame) = framed.next().await { framed.send(reply).await }` loop, which
//! flushes after every response.

use std::io;
use std::net::SocketAddr;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use ringrpc_benches::arpc_codec::ArpcCodec;
use ringrpc_benches::echo_service::answer;
use ringrpc_benches::peer_cli::{PeerArgs, announce, tokio_runtime};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// arpc echo server on tokio's multi-threaded (epoll) runtime.
#[derive(Debug, Parser)]
#[command(name = "peer-tokio")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    tokio_runtime(cli.peer.threads)?.block_on(serve(cli.peer.listen))
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    announce("peer-tokio", listener.local_addr()?)?;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream).await {
                        report_connection_error(&e);
                    }
                });
            }
            // Running out of descriptors must not stop the server; the client sees a refusal.
            Err(e) => eprintln!("peer-tokio: accept failed: {e}"),
        }
    }
}

async fn serve_connection(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, ArpcCodec::default());
    while let Some(frame) = framed.next().await {
        if let Some(reply) = answer(frame?) {
            framed.send(reply).await?;
        }
    }
    Ok(())
}

/// Protocol errors are worth a line; a client that hangs up or resets is not.
fn report_connection_error(e: &io::Error) {
    if e.kind() == io::ErrorKind::InvalidData {
        eprintln!("peer-tokio: closing a connection: {e}");
    }
}
