//! peer-tokio-uring: the arpc echo server written on tokio-uring, the ready-made io_uring runtime.
//!
//! tokio-uring runs one single-threaded runtime per thread, so `--threads N` starts N threads,
//! each with its own SO_REUSEPORT listener on the same address. One task per connection reads
//! with the owned-buffer API, answers every whole frame that arrived, and writes all the
//! answers with one `write_all` per read.

use std::io;
use std::net::SocketAddr;
use std::thread;

use bytes::BytesMut;
use clap::Parser;
use ringrpc_benches::echo_service::answer;
use ringrpc_benches::peer_cli::{PeerArgs, announce, bind_per_thread};
use ringrpc_protocol::Decoder;
use socket2::{Domain, Protocol, Socket, Type};
use tokio_uring::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes asked for per read.
const READ_BUF_LEN: usize = 64 * 1024;
/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: i32 = 1024;

/// arpc echo server on tokio-uring, one runtime per thread.
#[derive(Debug, Parser)]
#[command(name = "peer-tokio-uring")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    let (listeners, addr) =
        bind_per_thread(cli.peer.listen, cli.peer.threads, bind_reuseport, |s| {
            s.local_addr()
        })?;
    announce("peer-tokio-uring", addr)?;

    let workers = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            thread::Builder::new()
                .name(format!("uring-{index}"))
                .spawn(move || tokio_uring::start(accept_loop(listener)))
        })
        .collect::<io::Result<Vec<_>>>()?;
    for worker in workers {
        match worker.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    Ok(())
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

async fn accept_loop(listener: std::net::TcpListener) -> io::Result<()> {
    let listener = TcpListener::from_std(listener);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio_uring::spawn(async move {
                    if let Err(e) = serve_connection(stream).await {
                        report_connection_error(&e);
                    }
                });
            }
            // Running out of descriptors must not stop the server; the client sees a refusal.
            Err(e) => eprintln!("peer-tokio-uring: accept failed: {e}"),
        }
    }
}

async fn serve_connection(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let decoder = Decoder::default();
    let mut read_buf = vec![0u8; READ_BUF_LEN];
    let mut pending = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        let (read, buf) = stream.read(read_buf).await;
        read_buf = buf;
        let n = read?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&read_buf[..n]);
        while let Some(frame) = decoder
            .decode(&mut pending)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            if let Some(reply) = answer(frame) {
                reply.encode_to(&mut out);
            }
        }
        if !out.is_empty() {
            let (written, buf) = stream.write_all(out).await;
            out = buf;
            written?;
            out.clear();
        }
    }
}

/// Protocol errors are worth a line; a client that hangs up or resets is not.
fn report_connection_error(e: &io::Error) {
    if e.kind() == io::ErrorKind::InvalidData {
        eprintln!("peer-tokio-uring: closing a connection: {e}");
    }
}
