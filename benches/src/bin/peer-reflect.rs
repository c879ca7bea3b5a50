//! peer-reflect: the floor for arpc over TCP. Every byte received is written back as it is,
//! undecoded, by a plain epoll loop: no server can answer a request with less work, so its
//! CPU per request is the yardstick every other row is divided by.
//!
//! One thread per `--threads` (default 1), each with its own SO_REUSEPORT listener and epoll
//! instance (through mio, edge-triggered). Reads go into one 256 KiB buffer per thread: a
//! single-threaded loop uses it for one read→write at a time, so a per-connection buffer would
//! only add memory per idle connection, not fewer system calls. Bytes the socket does not
//! take at once are kept per connection (at most one read's worth) and the connection is not
//! read again until they are sent, so a peer that never reads costs at most that much.
//! loadgen drives it with `--reflect`, which accepts its own requests as answers.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use ringrpc_benches::peer_cli::{PeerArgs, announce, bind_per_thread, serve_per_thread};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes asked for per read: a 1 MiB request arrives in four reads when the socket has it.
const READ_BUF_LEN: usize = 256 * 1024;
/// Pending connections the kernel queues per listener (capped by net.core.somaxconn).
const LISTEN_BACKLOG: i32 = 4096;
/// The listener's token; connections are numbered from 0 by their slab key.
const LISTENER: Token = Token(usize::MAX);
/// Readiness events taken per epoll_wait.
const EVENTS: usize = 1024;

/// TCP reflector: writes every byte back to the connection it came from.
#[derive(Debug, Parser)]
#[command(name = "peer-reflect")]
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
    announce("peer-reflect", addr)?;
    serve_per_thread(listeners, "reflect", serve)
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// One connection: its socket and the bytes it has not yet taken back.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    unsent: Vec<u8>,
}

/// What became of a connection after its events were handled.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Open,
    Closed,
}

impl Conn {
    /// Reads and reflects until the socket has nothing more to read or cannot take more.
    fn run(&mut self, buf: &mut [u8]) -> State {
        loop {
            match self.flush() {
                Ok(true) => {}
                // The socket is full: wait for it to become writable, reading nothing more.
                Ok(false) => return State::Open,
                Err(_) => return State::Closed,
            }
            match self.stream.read(buf) {
                Ok(0) => return State::Closed,
                Ok(n) => {
                    if self.reflect(&buf[..n]).is_err() {
                        return State::Closed;
                    }
                }
                // Edge-triggered: everything has been read, the next edge brings more.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return State::Open,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return State::Closed,
            }
        }
    }

    /// Writes `bytes` back, keeping what the socket does not take.
    fn reflect(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.write(&bytes[written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.unsent.extend_from_slice(&bytes[written..]);
        Ok(())
    }

    /// Sends the kept bytes; `Ok(true)` once none are left.
    fn flush(&mut self) -> io::Result<bool> {
        let mut written = 0;
        let result = loop {
            if written == self.unsent.len() {
                break Ok(true);
            }
            match self.stream.write(&self.unsent[written..]) {
                Ok(0) => break Err(ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.unsent.drain(..written);
        if self.unsent.is_empty() && self.unsent.capacity() > 0 {
            // An idle connection keeps no buffer.
            self.unsent = Vec::new();
        }
        result
    }
}

/// One thread's event loop: accept everything, reflect everything, forever.
fn serve(listener: std::net::TcpListener) -> io::Result<()> {
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(EVENTS);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; READ_BUF_LEN];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if conn.run(&mut buf) == State::Closed {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

/// Accepts every pending connection (edge-triggered: until the queue is empty).
fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let token = Token(entry.key());
                match poll.registry().register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => {
                        entry.insert(Conn {
                            stream,
                            unsent: Vec::new(),
                        });
                    }
                    Err(e) => eprintln!("peer-reflect: cannot watch a connection: {e}"),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Out of descriptors and the like: the queued connections wait for the next edge.
            Err(e) => {
                eprintln!("peer-reflect: accept failed: {e}");
                return;
            }
        }
    }
}
