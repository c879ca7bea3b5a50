//! Reaching the target: its addresses, and TCP connections to the first that answers.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::cli::config::Config;
use crate::error::RunError;

/// The target's addresses, or why there are none.
pub(crate) fn resolve(config: &Config) -> Result<Vec<SocketAddr>, RunError> {
    let addrs: Vec<SocketAddr> = config
        .target
        .to_socket_addrs()
        .map_err(|e| RunError::Resolve {
            target: config.target.clone(),
            cause: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(RunError::Resolve {
            target: config.target.clone(),
            cause: "no addresses".into(),
        });
    }
    Ok(addrs)
}

pub(crate) fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(ErrorKind::AddrNotAvailable, "no addresses")))
}
