//! peer-udp-reflect: the floor for arpc over UDP. Every datagram is written back to its
//! sender unchanged, undecoded: no server can answer a datagram with less work.
//!
//! `--threads N` starts N threads, each blocked in `recv_from` on its own SO_REUSEPORT socket
//! bound to the same address (the kernel spreads senders over them by address hash). loadgen
//! drives it with `--transport udp --reflect`, which accepts its own requests as answers.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use clap::Parser;
use ringrpc_benches::peer_cli::{PeerArgs, announce, bind_per_thread, serve_per_thread};
use socket2::{Domain, Protocol, Socket, Type};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest datagram UDP carries over IPv4; every one fits the receive buffer whole.
const MAX_DATAGRAM: usize = 65_507;
/// Kernel socket buffers, so bursts from many loadgen sockets are not dropped.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// UDP reflector: writes every datagram back to its sender.
#[derive(Debug, Parser)]
#[command(name = "peer-udp-reflect")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    let (sockets, addr) =
        bind_per_thread(cli.peer.listen, cli.peer.threads, bind_reuseport, |s| {
            s.local_addr()
        })?;
    announce("peer-udp-reflect", addr)?;
    serve_per_thread(sockets, "reflect", |socket| reflect(&socket))
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Receives a datagram and sends the same bytes back to where it came from, forever.
fn reflect(socket: &UdpSocket) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            // ICMP errors for earlier replies (a client that went away) and signals.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        // A reply that cannot be sent is a lost datagram, as UDP allows; keep serving.
        if let Err(e) = socket.send_to(&buf[..n], from) {
            if !matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
            ) {
                eprintln!("peer-udp-reflect: send to {from} failed: {e}");
            }
        }
    }
}
