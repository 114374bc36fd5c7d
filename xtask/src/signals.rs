//! Ctrl-C and SIGTERM for long xtask runs (the e2e cluster, the
//! seed-claims harness): a flag their waits check, so their drop guards
//! undo what they made instead of the process dying with it in place.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set a flag the run's waits check (then what the run
/// made is undone by its drop guards) instead of killing xtask, until the
/// returned guard is dropped (the previous handlers are then restored).
pub(crate) fn catch() -> SignalGuard {
    let mut old = Vec::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs an async-signal-safe handler (one atomic store)
        // through a zeroed, then filled, sigaction; the previous one is
        // saved into a zeroed sigaction this function owns.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut prev: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, &sa, &mut prev);
            old.push((sig, prev));
        }
    }
    SignalGuard(old)
}

pub(crate) struct SignalGuard(Vec<(libc::c_int, libc::sigaction)>);

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, prev) in &self.0 {
            // SAFETY: restores a sigaction saved by catch.
            unsafe {
                libc::sigaction(*sig, prev, std::ptr::null_mut());
            }
        }
    }
}

/// An error when Ctrl-C or SIGTERM arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted (SIGINT/SIGTERM)");
    }
    Ok(())
}
