//! `Cgroups::apply_existing` on this machine's real cpuset hierarchy (root):
//! a container's cgroup, made by "its runtime" (this test), is set while it
//! exists and never made again once it is gone.

use griffin_runtime::cpuset::CpuSet;
use griffin_runtime::enforce::Cgroups;

/// Removes the scratch tree whatever happens.
struct Scratch(std::path::PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0.join("ctr"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn mkdir_like_a_runtime(dir: &std::path::Path, parent: &std::path::Path) {
    std::fs::create_dir(dir).unwrap();
    // v1 leaves a new cpuset empty; runtimes copy the parent's.
    for f in ["cpuset.mems", "cpuset.cpus"] {
        let p = dir.join(f);
        if std::fs::read_to_string(&p).unwrap().trim().is_empty() {
            std::fs::write(&p, std::fs::read_to_string(parent.join(f)).unwrap().trim()).unwrap();
        }
    }
}

#[test]
fn a_container_cgroup_is_set_while_it_exists_and_never_recreated() {
    let cg = Cgroups::detect().expect("a cpuset hierarchy (run as root)");
    let rel = format!("griffin-test-ctr-{}", std::process::id());
    let top = cg.root().join(&rel);
    let _scratch = Scratch(top.clone());
    mkdir_like_a_runtime(&top, cg.root());
    mkdir_like_a_runtime(&top.join("ctr"), &top);
    let ctr = format!("{rel}/ctr");
    let one = CpuSet::from_ids([0]);
    assert!(cg.apply_existing(&ctr, &one, &[0]).unwrap());
    assert_eq!(cg.read(&ctr).unwrap().unwrap().cpus, one);
    std::fs::remove_dir(top.join("ctr")).unwrap();
    assert!(!cg.apply_existing(&ctr, &one, &[0]).unwrap());
    assert!(
        !top.join("ctr").exists(),
        "the container's cgroup was made again"
    );
    assert!(!cg
        .apply_existing("griffin-test-never-made/x", &one, &[0])
        .unwrap());
    assert!(!cg.root().join("griffin-test-never-made").exists());
}
