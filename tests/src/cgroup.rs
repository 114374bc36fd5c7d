//! cgroup helpers of the privileged tests, benchmarks and harnesses.

use std::path::Path;

/// Removes the cgroup tree `dir` bottom-up, moving the processes still in
/// it to `root_procs` (the hierarchy root's `cgroup.procs`) first; errors
/// are ignored (a cleanup).
pub fn remove_tree(dir: &Path, root_procs: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), root_procs);
            }
        }
    }
    if let Ok(p) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in p.lines() {
            let _ = std::fs::write(root_procs, pid);
        }
    }
    let _ = std::fs::remove_dir(dir);
}
