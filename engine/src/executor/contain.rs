//! Containing panics of user code that runs on a reactor thread: handlers have their own
//! rules (`router`), and every other callback — call completions, connection hooks,
//! broadcast filters, adoption callbacks — goes through [`contain`].
//!
//! Invariants: a leaf module; a panic inside `f` never unwinds into the reactor's loop: it is
//! logged with what was running and the panic's message, and counted on its thread (the
//! reactor moves the count into `CoreStats::callback_panics` every turn).

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a call's completion is called in panic reports.
pub(crate) const CALL_DONE: &str = "a call's completion";

thread_local! {
    /// Panics contained on this thread since the last [`take_panics`].
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

/// Panics contained on this thread since the last call (a reactor adds them to its stats).
pub(crate) fn take_panics() -> u64 {
    PANICS.with(|n| n.replace(0))
}

/// Runs `f`, containing a panic: logs `what` and the message and returns `None`.
pub(crate) fn contain<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(panic) => {
            PANICS.with(|n| n.set(n.get() + 1));
            tracing::error!("{what} panicked: {}", panic_message(&*panic));
            None
        }
    }
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic payload that is not text)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_contained_and_its_message_read() {
        assert_eq!(contain("ok", || 7), Some(7));
        take_panics();
        assert_eq!(contain("boom", || -> u8 { panic!("no {}", 1) }), None);
        assert_eq!(take_panics(), 1);
        let caught = catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_message(&*caught), "static text");
    }
}
