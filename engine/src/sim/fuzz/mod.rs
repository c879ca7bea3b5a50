//! The fuzz checks of the peer-reachable decoders beyond the arpc stream (which
//! `conn::fuzz` covers): the WebSocket upgrade and frames (`websocket`), datagrams through
//! the UDP endpoint (`udp`) and Stream frames against a connection's stream table
//! (`streams`), and the TLS path's sniffing and server handshake (`tls`, feature `tls`).
//! Each is shared by its cargo-fuzz target (fuzz/) and the stable replay of its corpus
//! (engine/tests/fuzz_peers.rs, fuzz_tls.rs); each panics on a violation.

mod streams;
#[cfg(feature = "tls")]
mod tls;
mod udp;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

pub use streams::{StreamOutcome, check_streams};
#[cfg(feature = "tls")]
pub use tls::{TlsOutcome, check_tls};
pub use udp::{UdpOutcome, check_udp};
pub use websocket::{WsOutcome, check_websocket};

use crate::conn::Conn;
use crate::ids::{ConnId, ConnInfo};
use crate::reactor::mailbox::Mailbox;
use crate::transport::ws::handshake::HandshakeConfig;

/// A raw arpc connection (TLS, if any, is set on it after).
#[cfg(feature = "tls")]
fn raw_conn(max_body: u32) -> Conn {
    let mut conn = websocket_conn(max_body, false);
    conn.framing =
        crate::transport::tcp::TcpFraming::Arpc(crate::transport::arpc::ArpcFraming::new(max_body));
    conn
}

/// A connection that speaks WebSocket: HTTP only, or (`undecided`) raw arpc or HTTP as
/// its first bytes say.
fn websocket_conn(max_body: u32, undecided: bool) -> Conn {
    let id = ConnId {
        core: 0,
        slot: 0,
        serial: 1,
    };
    let info = ConnInfo::new(id, SocketAddr::from(([127, 0, 0, 1], 1)));
    let mailbox = Arc::new(Mailbox::new(crate::reactor::mailbox::DEFAULT_CAPACITY));
    let ws = Arc::new(HandshakeConfig::default());
    if undecided {
        Conn::with_websocket(info, mailbox, max_body, ws)
    } else {
        Conn::websocket_only(info, mailbox, max_body, ws)
    }
}
