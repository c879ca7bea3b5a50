//! The command line every peer server shares, and the line it prints once it is listening.

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};

/// `--listen` and `--threads`, flattened into each peer's own clap parser.
///
/// Every server in a comparison is given the same `--threads`, so each gets the same CPU.
#[derive(Clone, Debug, clap::Args)]
pub struct PeerArgs {
    /// Address to listen on; `:PORT` means 0.0.0.0:PORT, port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8888", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Threads that serve connections.
    #[arg(long, default_value_t = 1, value_parser = parse_threads)]
    pub threads: usize,
}

/// Parses a listen address, accepting `:PORT` for every IPv4 interface.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not a listen address: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn parse_threads(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a thread count of at least 1")),
    }
}

/// Binds one socket per thread on `listen`'s port with `bind` (which sets `SO_REUSEPORT`):
/// the first picks the port (0 = any) and the rest join it, all before the peer announces
/// the address. Returns the sockets and the bound address.
pub fn bind_per_thread<S>(
    listen: SocketAddr,
    threads: usize,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
    local_addr: impl Fn(&S) -> io::Result<SocketAddr>,
) -> io::Result<(Vec<S>, SocketAddr)> {
    let first = bind(listen)?;
    let addr = local_addr(&first)?;
    let mut sockets = vec![first];
    for _ in 1..threads {
        sockets.push(bind(addr)?);
    }
    Ok((sockets, addr))
}

/// Serves each socket on a thread of its own (`<name>-<i>`) with `serve`, and waits for
/// them all; the first failure (or panic) is the result.
pub fn serve_per_thread<S: Send + 'static>(
    sockets: Vec<S>,
    name: &str,
    serve: impl Fn(S) -> io::Result<()> + Send + Copy + 'static,
) -> io::Result<()> {
    let threads: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || serve(socket))
        })
        .collect::<io::Result<_>>()?;
    for thread in threads {
        thread
            .join()
            .map_err(|_| io::Error::other(format!("a {name} thread panicked")))??;
    }
    Ok(())
}

/// Prints `<name> listening on <addr>` and flushes it: tests and the comparison tool wait
/// for this line and read the bound port from it.
pub fn announce(name: &str, addr: SocketAddr) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{name} listening on {addr}")?;
    stdout.flush()
}

/// The tokio runtime a peer runs on: a single worker runs on the current thread, as a
/// one-core tokio service would; more get the multi-threaded scheduler.
pub fn tokio_runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_port_means_every_ipv4_interface() {
        assert_eq!(parse_listen(":9000"), Ok("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(
            parse_listen("127.0.0.1:0"),
            Ok("127.0.0.1:0".parse().unwrap())
        );
        assert!(parse_listen("no-port").is_err());
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(parse_threads("0").is_err());
        assert_eq!(parse_threads("4"), Ok(4));
    }
}
