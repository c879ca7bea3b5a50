//! Connections closed by reason, as the `reason` label of
//! `ringrpc_connections_closed_total`: each reactor counts its own closes in a [`ClosedBy`]
//! array when it releases a slot.
//!
//! Invariants: one label per kind of [`DisconnectReason`], fixed, so the label set is
//! bounded whatever peers do.

use crate::error::DisconnectReason;

/// Why connections closed, as the `reason` label of `ringrpc_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseKind {
    PeerClosed,
    Protocol,
    Socket,
    Shutdown,
    Application,
    IdleTimeout,
    ReadTimeout,
    Unauthenticated,
    HandshakeRefused,
    HttpServed,
    WebSocketClosed,
    Tls,
}

impl CloseKind {
    /// Every kind, in label order.
    pub(crate) const ALL: [CloseKind; 12] = [
        CloseKind::PeerClosed,
        CloseKind::Protocol,
        CloseKind::Socket,
        CloseKind::Shutdown,
        CloseKind::Application,
        CloseKind::IdleTimeout,
        CloseKind::ReadTimeout,
        CloseKind::Unauthenticated,
        CloseKind::HandshakeRefused,
        CloseKind::HttpServed,
        CloseKind::WebSocketClosed,
        CloseKind::Tls,
    ];

    /// The kind of `reason`.
    pub(crate) fn of(reason: &DisconnectReason) -> CloseKind {
        match reason {
            DisconnectReason::PeerClosed => CloseKind::PeerClosed,
            DisconnectReason::Protocol(_) => CloseKind::Protocol,
            DisconnectReason::Socket(_) => CloseKind::Socket,
            DisconnectReason::Shutdown => CloseKind::Shutdown,
            DisconnectReason::Closed => CloseKind::Application,
            DisconnectReason::IdleTimeout => CloseKind::IdleTimeout,
            DisconnectReason::ReadTimeout => CloseKind::ReadTimeout,
            DisconnectReason::Unauthenticated => CloseKind::Unauthenticated,
            DisconnectReason::HandshakeRefused { .. } => CloseKind::HandshakeRefused,
            DisconnectReason::HttpServed { .. } => CloseKind::HttpServed,
            DisconnectReason::WebSocketClosed { .. } => CloseKind::WebSocketClosed,
            DisconnectReason::Tls(_) => CloseKind::Tls,
        }
    }

    /// The label value.
    #[cfg(feature = "metrics")]
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseKind::PeerClosed => "peer_closed",
            CloseKind::Protocol => "protocol_error",
            CloseKind::Socket => "socket_error",
            CloseKind::Shutdown => "shutdown",
            CloseKind::Application => "application",
            CloseKind::IdleTimeout => "idle_timeout",
            CloseKind::ReadTimeout => "read_timeout",
            CloseKind::Unauthenticated => "unauthenticated",
            CloseKind::HandshakeRefused => "handshake_refused",
            CloseKind::HttpServed => "http_served",
            CloseKind::WebSocketClosed => "websocket_closed",
            CloseKind::Tls => "tls_error",
        }
    }
}

/// Connections closed on one core, by [`CloseKind`] (indexed by its position in `ALL`).
pub(crate) type ClosedBy = [u64; CloseKind::ALL.len()];
