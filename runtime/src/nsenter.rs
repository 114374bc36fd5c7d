//! Work done inside another network namespace: on a thread of its own
//! that enters the namespace (`setns`, which needs `CAP_SYS_ADMIN`) and
//! ends with the work, so no other thread of the process ever moves.

use std::os::fd::BorrowedFd;

/// Runs `f` on a thread that entered the network namespace `ns`; the
/// error is `setns`'s (a panic in `f` is resumed on the caller).
pub fn in_netns<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
