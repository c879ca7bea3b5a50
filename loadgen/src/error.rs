//! [`RunError`]: why a run could not start or finish, worded to name the cause and the fix.

use std::fmt;
use std::io::{self, ErrorKind};
use std::path::PathBuf;

use crate::cli::flags::Proto;

/// Why a run could not start or finish; the binary exits with status 2.
#[derive(Debug)]
pub enum RunError {
    /// The target did not resolve to any address.
    Resolve {
        /// The address as given.
        target: String,
        /// The resolver's error.
        cause: String,
    },
    /// A connection could not be opened or configured.
    Connect {
        /// The address connected to.
        target: String,
        /// The protocol the connection was for (the hint differs).
        proto: Proto,
        /// The socket's error.
        cause: io::Error,
    },
    /// An I/O thread (or the gRPC runtime) could not be started or panicked.
    Worker(String),
    /// The `--hdr-log` file could not be created or written.
    HdrLog {
        /// The log file.
        path: PathBuf,
        /// Why it could not be created or written.
        cause: String,
    },
    /// `--pattern pubsub`: a connection could not authenticate or subscribe.
    PubSub(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Resolve { target, cause } => write!(f, "cannot resolve {target}: {cause}"),
            RunError::Connect {
                target,
                proto,
                cause,
            } => {
                let kind = cause.kind();
                let what = match kind {
                    ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::ConnectionReset
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::PermissionDenied => kind.to_string(),
                    _ => cause.to_string(),
                };
                write!(f, "cannot connect to {target}: {what}")?;
                if matches!(kind, ErrorKind::ConnectionRefused | ErrorKind::TimedOut) {
                    let port = target.rsplit(':').next().unwrap_or("8888");
                    // A port only root may listen on is more likely a mistyped --target
                    // than a server to start there.
                    if port.parse::<u16>().is_ok_and(|p| p < 1024) {
                        return write!(
                            f,
                            " — nothing accepts connections on port {port}: check --target \
                             (`engine` listens on :8888 unless told otherwise)"
                        );
                    }
                    match proto {
                        Proto::Arpc => write!(
                            f,
                            " — is the engine running? start it with `engine --listen :{port}`"
                        )?,
                        Proto::Grpc => write!(
                            f,
                            " — is the gRPC server running? start it with \
                             `grpc-echo --listen 127.0.0.1:{port}`"
                        )?,
                    }
                }
                Ok(())
            }
            RunError::Worker(why) => write!(f, "I/O thread failed: {why}"),
            RunError::PubSub(why) => write!(f, "pub/sub setup failed: {why}"),
            RunError::HdrLog { path, cause } => {
                write!(
                    f,
                    "cannot write the HdrHistogram log {}: {cause}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for RunError {}
