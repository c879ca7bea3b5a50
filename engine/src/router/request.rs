//! A Request or Notify owned, as typed, async and blocking handlers receive it, and the
//! state registered with the builders that its `State` extractor reads.
//!
//! Invariants: a [`Request`] holds its own copy of the method and payload (or shares the
//! buffer the frame was assembled in), so it outlives the receive buffer and may move to
//! another thread; one value per type in [`Extensions`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::conn::handle::ConnHandle;

/// One Request or Notify, owned, as a blocking handler receives it on a worker thread.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Request {
    /// The method name.
    pub method: Bytes,
    /// The payload, copied once out of the receive buffer.
    pub payload: Bytes,
    /// The caller's sequence number.
    pub seq: u64,
    /// The eight application flag bits.
    pub user_flags: u8,
    /// Whether this is a Notify, whose result is discarded.
    pub is_notify: bool,
    /// The connection it came on (to notify or call the peer, or close).
    pub conn: ConnHandle,
    /// The request's metadata (arpc's `md` block), already taken off `payload`.
    pub metadata: Option<ringrpc_protocol::metadata::Metadata>,
    /// The state registered with the builder's `state(..)` (see [`Request::state`]).
    pub(crate) extensions: Arc<Extensions>,
}

impl Request {
    /// The application state of type `T` registered with the builder's `state(..)` (as the
    /// `State` extractor gives typed and async handlers), for a blocking handler.
    pub fn state<T: Clone + 'static>(&self) -> Option<T> {
        self.extensions.get::<T>().cloned()
    }
}

/// Values registered with the builders' `state(..)`, one per type.
#[derive(Clone, Default)]
pub(crate) struct Extensions(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl Extensions {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("values", &self.0.len())
            .finish()
    }
}
