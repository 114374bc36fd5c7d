//! An in-memory cpuset hierarchy and process table behind the
//! [`Cpusets`] seam, for tests of the allocation manager (here and in
//! other crates, hence public).
//!
//! It models what the manager relies on, with the kernel's rules that
//! matter and its error numbers:
//!
//! * cgroups form a tree below the root (`""`); a cgroup is created only
//!   below an existing parent, removed only when it holds no process and no
//!   child (`EBUSY`);
//! * cgroup v1: a new cgroup starts with empty `cpuset.cpus`/`cpuset.mems`;
//!   a cgroup's CPUs and nodes must be within its parent's (`EINVAL`) and
//!   cover its children's (`EBUSY`); emptying either while processes are in
//!   it, or attaching a process while either is empty, fails (`ENOSPC`);
//!   like [`crate::enforce::Cgroups`], `apply` in v1 sets the cgroup's
//!   whole subtree (widening top down, then setting bottom up);
//! * cgroup v2: `cpuset` must be enabled in the parent's
//!   `cgroup.subtree_control` before a child has cpuset files (`ENOENT`);
//!   empty `cpuset.cpus` means the parent's effective CPUs; the effective
//!   CPUs are the written ones within the parent's effective ones (the
//!   parent's when that leaves none), minus CPUs of isolated partitions
//!   elsewhere;
//! * a process runs on its cgroup's effective CPUs within the mask it last
//!   asked for with `sched_setaffinity` (all of them when that leaves none),
//!   as kernels since 6.2 keep it across cgroup changes: growing a cgroup
//!   does not widen a pinned process; `sched_setaffinity` fails with
//!   `EINVAL` when the mask has no online CPU of the process's cgroup (an
//!   empty mask included); calls on a process that does not exist fail
//!   with `ESRCH`.
//!
//! Crashes: [`FakeCpusets::crash_after`] makes the `n+1`-th mutating step
//! (each cgroup file written, directory created or removed, process moved,
//! affinity set, memory migrated) unwind instead of happening, with a
//! [`Crash`] payload and no panic message: the caller stops right there, as
//! a `SIGKILL` would stop it. Clones share one hierarchy (one "kernel"), so a
//! test opens a fresh manager on it after the crash.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use griffin_devices::IoAt;

use crate::cpuset::CpuSet;
use crate::enforce::{
    check_path, CgroupCpuset, Cpusets, EnforceError, Exclusive, Version, GRIFFIN_DIR,
};

/// The payload a simulated crash unwinds with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash;

#[derive(Debug, Clone, Default)]
struct Cgroup {
    cpus: CpuSet,
    mems: Vec<u32>,
    /// v2: `cpuset` in `cgroup.subtree_control`.
    subtree_cpuset: bool,
    /// v2: `cpuset.cpus.exclusive`.
    exclusive: CpuSet,
    /// v2: an isolated partition.
    isolated: bool,
}

#[derive(Debug, Clone)]
struct Process {
    cgroup: String,
    /// The mask of its last `sched_setaffinity`.
    user: Option<CpuSet>,
}

#[derive(Debug)]
struct Tree {
    version: Version,
    online: CpuSet,
    nodes: Vec<u32>,
    cgroups: BTreeMap<String, Cgroup>,
    procs: BTreeMap<u32, Process>,
    steps: u64,
    crash_after: Option<u64>,
    log: Vec<String>,
}

/// The in-memory hierarchy (see the module docs). Cloning shares it.
#[derive(Debug, Clone)]
pub struct FakeCpusets {
    tree: Arc<Mutex<Tree>>,
}

type Result<T> = std::result::Result<T, EnforceError>;

fn errno(op: &'static str, rel: &str, e: i32) -> EnforceError {
    IoAt::on(op, format!("/fake/{rel}"))(io::Error::from_raw_os_error(e))
}

fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

fn is_below(rel: &str, top: &str) -> bool {
    top.is_empty() || rel == top || rel.starts_with(&format!("{top}/"))
}

fn subset(a: &[u32], b: &[u32]) -> bool {
    a.iter().all(|x| b.contains(x))
}

impl Tree {
    fn effective(&self, rel: &str) -> CpuSet {
        let mut eff = if rel.is_empty() {
            self.online.clone()
        } else {
            let parent = self.effective(parent_of(rel));
            let own = &self.cgroups[rel].cpus;
            if self.cgroups[rel].isolated {
                // A valid partition root has its exclusive CPUs.
                return self.cgroups[rel].exclusive.intersection(&self.online);
            }
            match self.version {
                Version::V1 => own.intersection(&self.online),
                Version::V2 => {
                    let i = own.intersection(&parent);
                    if i.is_empty() {
                        parent
                    } else {
                        i
                    }
                }
            }
        };
        if self.version == Version::V2 {
            for (path, c) in &self.cgroups {
                if c.isolated && !is_below(rel, path) {
                    eff.subtract(&c.exclusive);
                }
            }
        }
        eff
    }

    fn effective_mems(&self, rel: &str) -> Vec<u32> {
        let own = &self.cgroups[rel].mems;
        if self.version == Version::V2 && own.is_empty() && !rel.is_empty() {
            return self.effective_mems(parent_of(rel));
        }
        own.clone()
    }

    fn has_procs(&self, rel: &str) -> bool {
        self.procs.values().any(|p| p.cgroup == rel)
    }

    fn children<'a>(&'a self, rel: &'a str) -> impl Iterator<Item = (&'a String, &'a Cgroup)> {
        self.cgroups
            .iter()
            .filter(move |(k, _)| !k.is_empty() && parent_of(k) == rel)
    }

    /// The CPUs process `pid` may run on.
    fn affinity(&self, pid: u32) -> CpuSet {
        let p = &self.procs[&pid];
        let eff = self.effective(&p.cgroup);
        match &p.user {
            Some(u) if u.intersects(&eff) => u.intersection(&eff),
            _ => eff,
        }
    }

    /// v2: a cgroup has cpuset files only if its parent enables `cpuset`.
    fn has_cpuset_files(&self, rel: &str) -> bool {
        self.version == Version::V1 || rel.is_empty() || self.cgroups[parent_of(rel)].subtree_cpuset
    }

    fn write_cpus(&mut self, rel: &str, cpus: &CpuSet) -> Result<()> {
        const OP: &str = "set cpuset.cpus of";
        if !self.has_cpuset_files(rel) {
            return Err(errno(OP, rel, libc::ENOENT));
        }
        if self.version == Version::V1 {
            if !cpus.is_subset(&self.cgroups[parent_of(rel)].cpus) || !cpus.is_subset(&self.online)
            {
                return Err(errno(OP, rel, libc::EINVAL));
            }
            if cpus.is_empty() && self.has_procs(rel) {
                return Err(errno(OP, rel, libc::ENOSPC));
            }
            if self.children(rel).any(|(_, c)| !c.cpus.is_subset(cpus)) {
                return Err(errno(OP, rel, libc::EBUSY));
            }
        }
        self.cgroups.get_mut(rel).unwrap().cpus = cpus.clone();
        Ok(())
    }

    fn write_mems(&mut self, rel: &str, mems: &[u32]) -> Result<()> {
        const OP: &str = "set cpuset.mems of";
        if !self.has_cpuset_files(rel) {
            return Err(errno(OP, rel, libc::ENOENT));
        }
        if !subset(mems, &self.nodes) {
            return Err(errno(OP, rel, libc::EINVAL));
        }
        if self.version == Version::V1 {
            if !subset(mems, &self.cgroups[parent_of(rel)].mems) {
                return Err(errno(OP, rel, libc::EINVAL));
            }
            if mems.is_empty() && self.has_procs(rel) {
                return Err(errno(OP, rel, libc::ENOSPC));
            }
            if self.children(rel).any(|(_, c)| !subset(&c.mems, mems)) {
                return Err(errno(OP, rel, libc::EBUSY));
            }
        }
        self.cgroups.get_mut(rel).unwrap().mems = mems.to_vec();
        Ok(())
    }

    fn mkdir(&mut self, rel: &str) -> Result<()> {
        let parent = parent_of(rel);
        if !self.cgroups.contains_key(parent) {
            return Err(errno("create", rel, libc::ENOENT));
        }
        self.cgroups.insert(rel.to_owned(), Cgroup::default());
        Ok(())
    }

    fn attach(&mut self, rel: &str, pid: u32) -> Result<()> {
        const OP: &str = "move process into";
        if !self.cgroups.contains_key(rel) {
            return Err(errno(OP, rel, libc::ENOENT));
        }
        if !self.procs.contains_key(&pid) {
            return Err(errno(OP, rel, libc::ESRCH));
        }
        if self.version == Version::V1 {
            let c = &self.cgroups[rel];
            if c.cpus.is_empty() || c.mems.is_empty() {
                return Err(errno(OP, rel, libc::ENOSPC));
            }
        }
        self.procs.get_mut(&pid).unwrap().cgroup = rel.to_owned();
        Ok(())
    }
}

impl FakeCpusets {
    /// A hierarchy of `version` on a machine with `online` CPUs and memory
    /// nodes `nodes`; the root holds all of them.
    pub fn new(version: Version, online: CpuSet, nodes: Vec<u32>) -> Self {
        let mut cgroups = BTreeMap::new();
        cgroups.insert(
            String::new(),
            Cgroup {
                cpus: online.clone(),
                mems: nodes.clone(),
                ..Default::default()
            },
        );
        Self {
            tree: Arc::new(Mutex::new(Tree {
                version,
                online,
                nodes,
                cgroups,
                procs: BTreeMap::new(),
                steps: 0,
                crash_after: None,
                log: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        // A crash unwinds with the lock released (see `step`); a failed
        // assertion elsewhere must not hide the tree from the next test step.
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one mutating step, or crashes in its place.
    fn step<'a>(&self, t: MutexGuard<'a, Tree>, what: String) -> MutexGuard<'a, Tree> {
        let mut t = t;
        if t.crash_after.is_some_and(|n| t.steps >= n) {
            t.crash_after = None;
            t.log.push(format!("CRASH before: {what}"));
            drop(t);
            std::panic::resume_unwind(Box::new(Crash));
        }
        t.steps += 1;
        t.log.push(what);
        t
    }

    /// Crashes in place of the next mutating step after `n` more.
    pub fn crash_after(&self, n: u64) {
        let mut t = self.lock();
        t.crash_after = Some(t.steps + n);
    }

    /// Clears a crash that did not happen.
    pub fn no_crash(&self) {
        self.lock().crash_after = None;
    }

    /// Mutating steps so far.
    pub fn steps(&self) -> u64 {
        self.lock().steps
    }

    /// The steps done so far, one line each (for failure messages).
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Starts a process in the root cgroup, with every online CPU.
    pub fn spawn(&self, pid: u32) {
        self.lock().procs.insert(
            pid,
            Process {
                cgroup: String::new(),
                user: None,
            },
        );
    }

    /// Ends a process.
    pub fn exit(&self, pid: u32) {
        self.lock().procs.remove(&pid);
    }

    /// A process's cgroup and affinity, if it exists.
    pub fn process(&self, pid: u32) -> Option<(String, CpuSet)> {
        let t = self.lock();
        let p = t.procs.get(&pid)?;
        Some((p.cgroup.clone(), t.affinity(pid)))
    }

    /// Every process: `(pid, cgroup, CPUs it may run on)`.
    pub fn all_processes(&self) -> Vec<(u32, String, CpuSet)> {
        let t = self.lock();
        t.procs
            .iter()
            .map(|(pid, p)| (*pid, p.cgroup.clone(), t.affinity(*pid)))
            .collect()
    }

    /// Creates a cgroup outside Griffin's (a workload's), with its parent's
    /// CPUs and nodes, as a container runtime would.
    pub fn mkdir(&self, rel: &str) {
        let mut t = self.lock();
        let mut path = String::new();
        for c in rel.split('/') {
            let parent = path.clone();
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(c);
            if !t.cgroups.contains_key(&path) {
                t.cgroups.get_mut(&parent).unwrap().subtree_cpuset = true;
                let p = t.cgroups[&parent].clone();
                t.cgroups.insert(
                    path.clone(),
                    Cgroup {
                        cpus: p.cpus,
                        mems: p.mems,
                        ..Default::default()
                    },
                );
            }
        }
    }

    /// Moves a process into a cgroup, as a container runtime would.
    pub fn move_process(&self, rel: &str, pid: u32) {
        self.lock().attach(rel, pid).unwrap();
    }

    /// Every cgroup path below the root, sorted.
    pub fn cgroups(&self) -> Vec<String> {
        self.lock()
            .cgroups
            .keys()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect()
    }

    /// Whether `rel` is a valid isolated partition.
    pub fn is_isolated(&self, rel: &str) -> bool {
        self.lock().cgroups.get(rel).is_some_and(|c| c.isolated)
    }

    /// The exclusive CPUs of cgroup `rel` (`cpuset.cpus.exclusive`).
    pub fn exclusive(&self, rel: &str) -> CpuSet {
        self.lock()
            .cgroups
            .get(rel)
            .map(|c| c.exclusive.clone())
            .unwrap_or_default()
    }
}

impl FakeCpusets {
    /// What `Cgroups::apply` does in v1 below `rel` (see there): widen top
    /// down where needed, then set bottom up, nodes first.
    fn set_v1_subtree(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<()> {
        let mut tree: Vec<String> = self
            .lock()
            .cgroups
            .keys()
            .filter(|k| is_below(k, rel))
            .cloned()
            .collect();
        tree.sort_by_key(|k| k.matches('/').count());
        let as_set = |m: &[u32]| CpuSet::from_ids(m.iter().copied());
        let want_mems = as_set(mems);
        for mems_pass in [true, false] {
            let want = if mems_pass { &want_mems } else { cpus };
            let cur = |t: &Tree, d: &str| {
                if mems_pass {
                    as_set(&t.cgroups[d].mems)
                } else {
                    t.cgroups[d].cpus.clone()
                }
            };
            let write = |t: &mut Tree, d: &str, v: &CpuSet| {
                if mems_pass {
                    t.write_mems(d, &v.iter().collect::<Vec<_>>())
                } else {
                    t.write_cpus(d, v)
                }
            };
            let what = if mems_pass { "mems" } else { "cpus" };
            for d in &tree {
                let t = self.lock();
                let mut c = cur(&t, d);
                if !want.is_subset(&c) {
                    c.union_with(want);
                    let mut t = self.step(t, format!("{what} of {d} := {c}"));
                    write(&mut t, d, &c)?;
                }
            }
            for d in tree.iter().rev() {
                let t = self.lock();
                if cur(&t, d) != *want {
                    let mut t = self.step(t, format!("{what} of {d} := {want}"));
                    write(&mut t, d, want)?;
                }
            }
        }
        Ok(())
    }
}

impl Cpusets for FakeCpusets {
    fn version(&self) -> Version {
        self.lock().version
    }

    fn apply(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<()> {
        check_path(rel)?;
        let comps: Vec<&str> = rel.split('/').collect();
        let mut path = String::new();
        for c in &comps {
            let parent = path.clone();
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(c);
            let mut t = self.lock();
            if t.version == Version::V2 && !t.cgroups[&parent].subtree_cpuset {
                t = self.step(t, format!("enable cpuset below /{parent}"));
                t.cgroups.get_mut(&parent).unwrap().subtree_cpuset = true;
            }
            if !t.cgroups.contains_key(&path) {
                t = self.step(t, format!("mkdir {path}"));
                t.mkdir(&path)?;
            }
            if t.version == Version::V1 {
                // A cgroup with an empty cpuset gets its parent's (the
                // ancestors before, the new cgroup right after its mkdir).
                if t.cgroups[&path].cpus.is_empty() {
                    let c = t.cgroups[&parent].cpus.clone();
                    t = self.step(t, format!("fill cpus of {path}"));
                    t.write_cpus(&path, &c)?;
                }
                if t.cgroups[&path].mems.is_empty() {
                    let m = t.cgroups[&parent].mems.clone();
                    t = self.step(t, format!("fill mems of {path}"));
                    t.write_mems(&path, &m)?;
                }
            }
        }
        let t = self.lock();
        if t.version == Version::V1 {
            drop(t);
            return self.set_v1_subtree(rel, cpus, mems);
        }
        let mut t = self.step(t, format!("mems of {rel} := {mems:?}"));
        t.write_mems(rel, mems)?;
        let mut t = self.step(t, format!("cpus of {rel} := {cpus}"));
        t.write_cpus(rel, cpus)
    }

    fn read(&self, rel: &str) -> Result<Option<CgroupCpuset>> {
        check_path(rel)?;
        let t = self.lock();
        Ok(t.cgroups.get(rel).map(|c| CgroupCpuset {
            cpus: c.cpus.clone(),
            mems: c.mems.clone(),
        }))
    }

    fn add_process(&self, rel: &str, pid: u32) -> Result<()> {
        check_path(rel)?;
        let t = self.lock();
        let mut t = self.step(t, format!("move {pid} into {rel}"));
        t.attach(rel, pid)
    }

    fn processes(&self, rel: &str) -> Result<Vec<u32>> {
        check_path(rel)?;
        let t = self.lock();
        Ok(t.procs
            .iter()
            .filter(|(_, p)| p.cgroup == rel)
            .map(|(k, _)| *k)
            .collect())
    }

    fn remove(&self, rel: &str) -> Result<()> {
        check_path(rel)?;
        for pid in self.processes(rel)? {
            let t = self.lock();
            let mut t = self.step(t, format!("move {pid} out of {rel}"));
            t.attach("", pid)?;
        }
        let t = self.lock();
        if !t.cgroups.contains_key(rel) {
            return Ok(());
        }
        if t.children(rel).next().is_some() || t.has_procs(rel) {
            return Err(errno("remove", rel, libc::EBUSY));
        }
        let mut t = self.step(t, format!("rmdir {rel}"));
        t.cgroups.remove(rel);
        Ok(())
    }

    fn isolate(&self, rel: &str, cpus: &CpuSet, ancestors: &[Exclusive]) -> Result<()> {
        check_path(rel)?;
        let mut t = self.lock();
        if t.version != Version::V2 {
            return Err(errno("isolate (cgroup v2 only)", rel, libc::EOPNOTSUPP));
        }
        for (a, exclusive) in ancestors {
            t = self.step(t, format!("exclusive of {a} := {exclusive}"));
            if let Some(c) = t.cgroups.get_mut(a) {
                c.exclusive = exclusive.clone();
            }
        }
        let mut t = self.step(t, format!("exclusive of {rel} := {cpus}"));
        t.cgroups.get_mut(rel).unwrap().exclusive = cpus.clone();
        let mut t = self.step(t, format!("partition of {rel} := isolated"));
        let overlaps = t
            .cgroups
            .iter()
            .any(|(k, c)| k != rel && c.isolated && c.exclusive.intersects(cpus));
        // A remote partition: every cgroup above it (below the root)
        // holds its CPUs.
        let mut above = parent_of(rel);
        let mut granted = true;
        while !above.is_empty() {
            granted &= t
                .cgroups
                .get(above)
                .is_some_and(|c| cpus.is_subset(&c.exclusive));
            above = parent_of(above);
        }
        let valid = granted && !cpus.is_empty() && !overlaps;
        t.cgroups.get_mut(rel).unwrap().isolated = valid;
        if !valid {
            return Err(errno("make an isolated partition of", rel, libc::EINVAL));
        }
        Ok(())
    }

    fn is_isolated_partition(&self, rel: &str) -> bool {
        self.is_isolated(rel)
    }

    fn unisolate(&self, rel: &str, ancestors: &[Exclusive]) -> Result<()> {
        check_path(rel)?;
        let t = self.lock();
        if t.version != Version::V2 {
            return Ok(());
        }
        let mut t = t;
        if t.cgroups.get(rel).is_some_and(|c| c.isolated) {
            t = self.step(t, format!("partition of {rel} := member"));
            let c = t.cgroups.get_mut(rel).unwrap();
            c.isolated = false;
            c.exclusive = CpuSet::new();
        }
        for (a, keep) in ancestors.iter().rev() {
            if t.cgroups.get(a).is_some_and(|c| &c.exclusive != keep) {
                t = self.step(t, format!("exclusive of {a} := {keep}"));
                t.cgroups.get_mut(a).unwrap().exclusive = keep.clone();
            }
        }
        Ok(())
    }

    fn allocations(&self) -> Result<Vec<(String, CgroupCpuset)>> {
        let t = self.lock();
        Ok(t.children(GRIFFIN_DIR)
            .map(|(k, c)| {
                (
                    k[GRIFFIN_DIR.len() + 1..].to_owned(),
                    CgroupCpuset {
                        cpus: c.cpus.clone(),
                        mems: c.mems.clone(),
                    },
                )
            })
            .collect())
    }

    fn process_exists(&self, pid: u32) -> bool {
        self.lock().procs.contains_key(&pid)
    }

    fn affinity(&self, pid: u32) -> Result<CpuSet> {
        let t = self.lock();
        if !t.procs.contains_key(&pid) {
            return Err(EnforceError::Process {
                op: "get CPU affinity",
                pid,
                source: nix::Error::ESRCH,
            });
        }
        Ok(t.affinity(pid))
    }

    fn pin_threads(&self, pid: u32, cpus: &CpuSet) -> Result<usize> {
        let t = self.lock();
        let mut t = self.step(t, format!("pin {pid} to {cpus}"));
        let Some(p) = t.procs.get(&pid) else {
            return Err(EnforceError::Process {
                op: "set CPU affinity",
                pid,
                source: nix::Error::ESRCH,
            });
        };
        let allowed = t.effective(&p.cgroup.clone());
        if !cpus.intersects(&allowed.intersection(&t.online)) {
            return Err(EnforceError::Process {
                op: "set CPU affinity",
                pid,
                source: nix::Error::EINVAL,
            });
        }
        t.procs.get_mut(&pid).unwrap().user = Some(cpus.clone());
        Ok(1)
    }

    fn migrate_memory(&self, pid: u32, _all_nodes: &[u32], mems: &[u32]) -> Result<i64> {
        let t = self.lock();
        let t = self.step(t, format!("migrate {pid} to {mems:?}"));
        let Some(p) = t.procs.get(&pid) else {
            return Err(EnforceError::Process {
                op: "migrate_pages",
                pid,
                source: nix::Error::ESRCH,
            });
        };
        if mems.is_empty() || !subset(mems, &t.effective_mems(&p.cgroup.clone())) {
            return Err(EnforceError::Process {
                op: "migrate_pages",
                pid,
                source: nix::Error::EINVAL,
            });
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno_of(r: Result<impl std::fmt::Debug>) -> i32 {
        match r {
            Err(EnforceError::Io(IoAt { source, .. })) => source.raw_os_error().unwrap(),
            Err(EnforceError::Process { source, .. }) => source as i32,
            other => panic!("not an errno: {other:?}"),
        }
    }

    fn set(ids: &[u32]) -> CpuSet {
        CpuSet::from_ids(ids.iter().copied())
    }

    #[test]
    fn v1_rules() {
        let f = FakeCpusets::new(Version::V1, set(&[0, 1, 2, 3]), vec![0]);
        f.spawn(1);
        f.apply("griffin/a", &set(&[1]), &[0]).unwrap();
        f.add_process("griffin/a", 1).unwrap();
        assert_eq!(f.process(1).unwrap().1, set(&[1]));
        // Emptying a populated cpuset, CPUs outside the parent's, offline.
        assert_eq!(
            errno_of(f.lock().write_cpus("griffin/a", &set(&[]))),
            libc::ENOSPC
        );
        f.apply("griffin", &set(&[0, 1]), &[0]).unwrap();
        assert_eq!(
            errno_of(f.lock().write_cpus("griffin/a", &set(&[2]))),
            libc::EINVAL
        );
        assert_eq!(
            errno_of(f.lock().write_cpus("griffin", &set(&[0]))),
            libc::EBUSY
        );
        assert_eq!(
            errno_of(f.lock().write_cpus("griffin", &set(&[0, 9]))),
            libc::EINVAL
        );
        // Attaching to an empty cpuset.
        f.lock().mkdir("empty").unwrap();
        assert_eq!(errno_of(f.add_process("empty", 1)), libc::ENOSPC);
        // Removing a populated cgroup moves its process out first.
        f.remove("griffin/a").unwrap();
        assert_eq!(f.process(1).unwrap().0, "");
        // A cgroup with a child stays.
        f.apply("griffin/b", &set(&[0]), &[0]).unwrap();
        assert_eq!(errno_of(f.remove("griffin")), libc::EBUSY);
    }

    #[test]
    fn affinity_rules() {
        let f = FakeCpusets::new(Version::V2, set(&[0, 1, 2, 3]), vec![0]);
        f.spawn(1);
        assert_eq!(errno_of(f.pin_threads(1, &set(&[]))), libc::EINVAL);
        assert_eq!(errno_of(f.pin_threads(1, &set(&[7]))), libc::EINVAL);
        assert_eq!(errno_of(f.pin_threads(2, &set(&[0]))), libc::ESRCH);
        f.apply("griffin/s", &set(&[0, 1]), &[0]).unwrap();
        f.add_process("griffin/s", 1).unwrap();
        assert_eq!(errno_of(f.pin_threads(1, &set(&[3]))), libc::EINVAL);
        f.pin_threads(1, &set(&[1])).unwrap();
        // Growing the cgroup keeps the pinned mask (kernels since 6.2).
        f.apply("griffin/s", &set(&[0, 1, 2]), &[0]).unwrap();
        assert_eq!(f.affinity(1).unwrap(), set(&[1]));
        // Shrinking past it falls back to the cgroup's CPUs.
        f.apply("griffin/s", &set(&[2]), &[0]).unwrap();
        assert_eq!(f.affinity(1).unwrap(), set(&[2]));
        // v2: an empty cpuset.cpus means the parent's (within the mask).
        f.apply("griffin/s", &set(&[]), &[0]).unwrap();
        assert_eq!(f.affinity(1).unwrap(), set(&[1]));
        f.pin_threads(1, &set(&[0, 3])).unwrap();
        assert_eq!(f.affinity(1).unwrap(), set(&[0, 3]));
    }

    #[test]
    fn a_crash_stops_before_the_step() {
        let f = FakeCpusets::new(Version::V2, set(&[0, 1]), vec![0]);
        // Enabling cpuset below the root, then mkdir griffin.
        f.crash_after(2);
        let r = std::panic::catch_unwind(|| f.apply("griffin/a", &set(&[1]), &[0]));
        assert!(r.unwrap_err().downcast_ref::<Crash>().is_some());
        assert_eq!(f.steps(), 2);
        assert_eq!(f.cgroups(), vec!["griffin".to_owned()], "two steps done");
        f.apply("griffin/a", &set(&[1]), &[0]).unwrap();
        assert_eq!(f.read("griffin/a").unwrap().unwrap().cpus, set(&[1]));
    }
}
