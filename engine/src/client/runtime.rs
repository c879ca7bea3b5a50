//! [`ClientRuntime`]: a reactor without a listener, serving the connections of every client
//! built on it.
//!
//! Invariants: one unpinned reactor thread, built like a server's; a socket is adopted with
//! one short mutex section and a wake-up; the runtime stops when its last clone and the last
//! client on it are dropped (never joining itself from its own thread).

use std::sync::{Arc, Mutex};

use super::ClientError;
use crate::conn::handle::ConnHandle;
use crate::conn::hooks::Hooks;
use crate::error::{CallError, DisconnectReason};
use crate::reactor::CoreSockets;
use crate::reactor::runtime::{ReactorThreads, join_all, new_mailboxes, spawn_reactors};
use crate::reactor::settings::ReactorSettings;
use crate::reactor::shared::{Adoption, ConnPolicy, Shared, StreamSocket};
use crate::router::Router;
use crate::server::StartError;
use crate::transport::tls::TlsLayer;

/// A reactor thread that serves client connections; cheap to clone, shared by as many
/// clients as you like. It stops when the last clone and the last client using it drop.
#[derive(Clone, Debug)]
pub struct ClientRuntime {
    inner: Arc<RuntimeInner>,
}

#[derive(Debug)]
struct RuntimeInner {
    shared: Arc<Shared>,
    threads: Mutex<ReactorThreads>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.shared.shutdown();
        // Dropped from a callback on its own reactor: joining would wait for ourselves.
        if crate::conn::handle::on_reactor_thread() {
            return;
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for failure in join_all(threads).into_iter().filter_map(Result::err) {
            tracing::error!("client reactor failed: {failure}");
        }
    }
}

impl ClientRuntime {
    /// A runtime: one reactor thread, unpinned, serving the connections of every client
    /// built on it — each with its own handlers, keepalive and idle timeout.
    pub fn new() -> Result<ClientRuntime, ClientError> {
        let settings = ReactorSettings::client();
        let start = |e| ClientError::Start(StartError::from(e));
        let mailboxes = new_mailboxes(1, settings.mailbox_capacity);
        let shared = Arc::new(Shared::new(mailboxes, Hooks::default()));
        let threads = spawn_reactors(
            &Arc::new(settings),
            &Arc::new(Router::new()),
            &shared,
            vec![CoreSockets::default()],
        )
        .map_err(start)?;
        Ok(ClientRuntime {
            inner: Arc::new(RuntimeInner {
                shared,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Hands a connected socket to the reactor, served under `policy`; `closed` runs on the
    /// reactor thread when it is gone. Returns its handle once the reactor serves it.
    pub(super) fn adopt(
        &self,
        stream: StreamSocket,
        tls: Option<Box<TlsLayer>>,
        policy: Arc<ConnPolicy>,
        closed: impl FnOnce(&DisconnectReason) + Send + 'static,
    ) -> Result<ConnHandle, CallError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner.shared.adopt(
            0,
            Adoption {
                stream,
                tls,
                policy,
                opened: Box::new(move |handle| {
                    let _ = tx.send(handle);
                }),
                closed: Box::new(closed),
            },
        );
        // The reactor either serves it (sends the handle) or, stopping or stopped, drops it.
        rx.recv().map_err(|_| CallError::Stopped)
    }
}
