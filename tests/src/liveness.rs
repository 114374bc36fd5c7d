//! Liveness bounds for regression tests of hangs.

use std::{sync::mpsc, thread, time::Duration};

/// Runs `f` on its own thread and returns its result, or `None` if it has
/// not returned within `bound`. The bound is a liveness limit (choose it
/// generously), not a timing assertion; a call that hangs is left behind on
/// its thread so that the test fails instead of hanging.
pub fn within<T: Send + 'static>(
    bound: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound).ok()
}
