//! The user's callbacks for connection events, run on the connection's reactor thread.
//!
//! Invariants: imports only ids, errors and handles; hooks must not block (they run on a
//! reactor).

use crate::conn::handle::ConnHandle;
use crate::error::DisconnectReason;
use crate::ids::ConnInfo;

/// Runs when a connection is accepted, on its reactor thread.
pub type ConnectHook = Box<dyn Fn(&ConnHandle) + Send + Sync>;
/// Runs when a connection is gone, on its reactor thread.
pub type DisconnectHook = Box<dyn Fn(&ConnInfo, &DisconnectReason) + Send + Sync>;

/// Runs when a connection's unsent output passes its limit and reading from it stops.
pub type OverstockHook = Box<dyn Fn(&ConnInfo) + Send + Sync>;

/// User callbacks for connection events.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_connect: Option<ConnectHook>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
    pub(crate) on_overstock: Option<OverstockHook>,
    /// The engine's own disconnect hooks (pub/sub forgets a connection's subscriptions),
    /// run before the user's, which they never replace.
    pub(crate) internal_disconnect: Vec<DisconnectHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_connect", &self.on_connect.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .field("on_overstock", &self.on_overstock.is_some())
            .field("internal_disconnect", &self.internal_disconnect.len())
            .finish()
    }
}
