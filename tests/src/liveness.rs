//! Liveness bounds for regression tests of hangs. A bound is a liveness
//! limit (choose it generously), never a timing assertion: what hangs fails
//! the test instead of hanging it.

use std::{
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// Runs `f` on its own thread and returns its result, or `None` if it has
/// not returned within `bound` (the call is left behind on its thread).
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

/// Runs `command` (stdin empty, small outputs captured) and returns its
/// output, or `None`, having killed it, if it has not exited within `bound`.
pub fn output_within(command: &mut Command, bound: Duration) -> Option<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    let deadline = Instant::now() + bound;
    while child.try_wait().expect("waiting for the command").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().ok()
}
