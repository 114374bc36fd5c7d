//! The one seam for privileged calls: cpuset cgroups (v1 and v2, through
//! `cgroups-rs`), CPU affinity (`sched_setaffinity`, through nix) and memory
//! placement (`set_mempolicy` / `migrate_pages`, through libc). What the
//! allocation manager calls is the [`Cpusets`] trait: [`Cgroups`] on a real
//! node, [`crate::fake::FakeCpusets`] in tests.
//!
//! Griffin keeps its cgroups below `<cgroup root>/griffin/`: one per
//! allocation (`griffin/<id>`), holding the allocation's CPUs and memory
//! nodes. That tree is the durable, kernel-side record of what is allocated:
//! it survives a crash of Griffin and is what a lost checkpoint is rebuilt
//! from. A workload is confined either by moving its process into that cgroup
//! (`--pid`) or by writing the same CPUs and nodes into a cgroup the workload
//! already lives in (`--cgroup PATH`, e.g. a pod's).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::Controller;
use cgroups_rs::CgroupPid;
use griffin_devices::{parse, IoAt};

use crate::cpuset::CpuSet;

/// The directory below the cgroup root that Griffin owns.
pub const GRIFFIN_DIR: &str = "griffin";

/// Why an enforcement step failed. Messages name the cgroup or process.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// A cgroup file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoAt),
    /// `cgroups-rs` refused an operation.
    #[error("cannot {op} cgroup {path}")]
    Cgroup {
        /// What was being done.
        op: &'static str,
        /// The cgroup.
        path: PathBuf,
        /// The cause.
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    /// The cgroup root is not a cpuset hierarchy.
    #[error("{0} is not a cgroup v1 cpuset or cgroup v2 hierarchy with the cpuset controller")]
    NotCpuset(PathBuf),
    /// No cpuset hierarchy is mounted.
    #[error("no cpuset cgroup hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoHierarchy,
    /// A cgroup path that would leave the cgroup root.
    #[error("cgroup path {0:?} must be relative and stay below the cgroup root")]
    BadPath(String),
    /// A syscall on a process failed.
    #[error("cannot {op} for process {pid}")]
    Process {
        /// What was being done.
        op: &'static str,
        /// The process.
        pid: u32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

type Result<T> = std::result::Result<T, EnforceError>;

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> EnforceError {
    IoAt::on(op, path)
}

/// cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// cgroup v1 cpuset hierarchy.
    V1,
    /// cgroup v2 unified hierarchy.
    V2,
}

/// A cgroup and the exclusive CPUs it holds (`cpuset.cpus.exclusive`).
pub type Exclusive = (String, CpuSet);

/// What a cpuset cgroup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupCpuset {
    /// `cpuset.cpus`.
    pub cpus: CpuSet,
    /// `cpuset.mems`.
    pub mems: Vec<u32>,
}

/// Checks that `rel` is a cgroup path relative to the cgroup root that
/// stays below it: not empty, not absolute, no `.` or `..` component.
pub fn check_path(rel: &str) -> Result<()> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(EnforceError::BadPath(rel.to_owned()));
    }
    Ok(())
}

/// The privileged calls the allocation manager makes, as one seam: the
/// cpuset hierarchy below a root, and the per-process calls
/// (`sched_setaffinity`, `migrate_pages`). [`Cgroups`] is the kernel's
/// (cgroup v1 and v2); [`crate::fake::FakeCpusets`] an in-memory model of
/// the same rules, for tests. Every `rel` is a path relative to the root.
pub trait Cpusets: std::fmt::Debug {
    /// The hierarchy's version.
    fn version(&self) -> Version;
    /// Creates (if needed) cgroup `rel` and sets its CPUs and memory nodes.
    fn apply(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<()>;
    /// Sets the CPUs and memory nodes of cgroup `rel` if it exists, never
    /// creating it (a container's, made and removed by its runtime);
    /// returns whether it existed.
    fn apply_existing(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<bool> {
        if self.read(rel)?.is_none() {
            return Ok(false);
        }
        self.apply(rel, cpus, mems).map(|()| true)
    }

    /// A cgroup's CPUs and nodes; `None` if it does not exist.
    fn read(&self, rel: &str) -> Result<Option<CgroupCpuset>>;
    /// Moves process `pid` (all its threads) into cgroup `rel`.
    fn add_process(&self, rel: &str, pid: u32) -> Result<()>;
    /// Processes in cgroup `rel` (none if it does not exist).
    fn processes(&self, rel: &str) -> Result<Vec<u32>>;
    /// Removes cgroup `rel`, its processes moved to the root. Absent is fine.
    fn remove(&self, rel: &str) -> Result<()>;
    /// Makes `rel` an isolated partition on `cpus` (v2 only); `ancestors`
    /// are the cgroups above it (below the root, top down) with the
    /// exclusive CPUs each must hold (see [`Cgroups::isolate`]).
    fn isolate(&self, rel: &str, cpus: &CpuSet, ancestors: &[Exclusive]) -> Result<()>;
    /// Undoes [`Cpusets::isolate`]: `rel` back to a member, `ancestors`
    /// left with the exclusive CPUs they keep; absent cgroups are fine.
    fn unisolate(&self, rel: &str, ancestors: &[Exclusive]) -> Result<()>;
    /// Whether `rel` is an isolated partition now.
    fn is_isolated_partition(&self, rel: &str) -> bool;
    /// Whether remote partitions can be made (cgroup v2 with
    /// `cpuset.cpus.exclusive`).
    fn remote_partitions(&self) -> bool {
        self.version() == Version::V2
    }
    /// Griffin's allocation cgroups: `(id, cpuset)` for each `griffin/<id>`.
    fn allocations(&self) -> Result<Vec<(String, CgroupCpuset)>>;
    /// Whether process `pid` exists.
    fn process_exists(&self, pid: u32) -> bool;
    /// The CPUs any thread of `pid` may run on (the union of their masks).
    fn affinity(&self, pid: u32) -> Result<CpuSet>;
    /// Pins every thread of `pid` to `cpus`; returns how many.
    fn pin_threads(&self, pid: u32, cpus: &CpuSet) -> Result<usize>;
    /// Moves the pages of `pid` to `mems`; returns how many could not move.
    fn migrate_memory(&self, pid: u32, all_nodes: &[u32], mems: &[u32]) -> Result<i64>;
}

impl Cpusets for Cgroups {
    fn version(&self) -> Version {
        self.version
    }
    fn apply(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<()> {
        Cgroups::apply(self, rel, cpus, mems)
    }
    fn apply_existing(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<bool> {
        Cgroups::apply_existing(self, rel, cpus, mems)
    }
    fn read(&self, rel: &str) -> Result<Option<CgroupCpuset>> {
        Cgroups::read(self, rel)
    }
    fn add_process(&self, rel: &str, pid: u32) -> Result<()> {
        Cgroups::add_process(self, rel, pid)
    }
    fn processes(&self, rel: &str) -> Result<Vec<u32>> {
        Cgroups::processes(self, rel)
    }
    fn remove(&self, rel: &str) -> Result<()> {
        Cgroups::remove(self, rel)
    }
    fn isolate(&self, rel: &str, cpus: &CpuSet, ancestors: &[Exclusive]) -> Result<()> {
        Cgroups::isolate(self, rel, cpus, ancestors)
    }
    fn unisolate(&self, rel: &str, ancestors: &[Exclusive]) -> Result<()> {
        Cgroups::unisolate(self, rel, ancestors)
    }
    fn is_isolated_partition(&self, rel: &str) -> bool {
        self.version == Version::V2
            && self.path_of(rel).is_ok_and(|d| {
                fs::read_to_string(d.join("cpuset.cpus.partition"))
                    .is_ok_and(|s| s.trim() == "isolated")
            })
    }
    fn remote_partitions(&self) -> bool {
        // Every child cgroup has the file where the kernel has them.
        self.version == Version::V2
            && fs::read_dir(&self.root).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.path().join("cpuset.cpus.exclusive").exists())
            })
    }
    fn allocations(&self) -> Result<Vec<(String, CgroupCpuset)>> {
        Cgroups::allocations(self)
    }
    fn process_exists(&self, pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }
    fn affinity(&self, pid: u32) -> Result<CpuSet> {
        thread_affinity(pid)
    }
    fn pin_threads(&self, pid: u32, cpus: &CpuSet) -> Result<usize> {
        pin_threads(pid, cpus)
    }
    fn migrate_memory(&self, pid: u32, all_nodes: &[u32], mems: &[u32]) -> Result<i64> {
        migrate_memory(pid, all_nodes, mems)
    }
}

/// A cpuset hierarchy rooted at a directory (configurable for tests and
/// containers).
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    version: Version,
}

fn mems_text(mems: &[u32]) -> String {
    parse::CpuList::from_ids(mems.iter().copied()).to_string()
}

impl Cgroups {
    /// Opens a hierarchy at `root`, telling v1 from v2 by its files.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else if root.join("cpuset.cpus").exists() && root.join("tasks").exists() {
            Version::V1
        } else {
            return Err(EnforceError::NotCpuset(root));
        };
        if version == Version::V2 {
            let ctl = fs::read_to_string(root.join("cgroup.controllers"))
                .map_err(io_err("read", root.join("cgroup.controllers")))?;
            if !ctl.split_whitespace().any(|c| c == "cpuset") {
                return Err(EnforceError::NotCpuset(root));
            }
        }
        Ok(Self { root, version })
    }

    /// Finds the node's cpuset hierarchy from `/proc/self/mountinfo`: a
    /// cgroup2 mount whose root offers `cpuset`, else the v1 `cpuset` mount.
    pub fn detect() -> Result<Self> {
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err("read", "/proc/self/mountinfo"))?;
        let mounts = parse_mountinfo(&info);
        for (point, fstype, opts) in &mounts {
            if fstype == "cgroup2" {
                if let Ok(c) = Self::open(point) {
                    return Ok(c);
                }
            } else if fstype == "cgroup" && opts.split(',').any(|o| o == "cpuset") {
                return Self::open(point);
            }
        }
        Err(EnforceError::NoHierarchy)
    }

    /// The hierarchy's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The hierarchy's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Absolute path of a relative cgroup path, refusing `..` and absolute
    /// paths.
    pub fn path_of(&self, rel: &str) -> Result<PathBuf> {
        check_path(rel)?;
        Ok(self.root.join(rel))
    }

    /// The Griffin-owned cgroup of allocation `id` (relative path).
    pub fn allocation_path(id: &str) -> String {
        format!("{GRIFFIN_DIR}/{id}")
    }

    fn controller(&self, rel: &str) -> Result<CpuSetController> {
        let path = self.path_of(rel)?;
        Ok(CpuSetController::new(
            path,
            self.root.clone(),
            self.version == Version::V2,
        ))
    }

    /// In v2, makes `cpuset` available to the children of every ancestor of
    /// `rel` (writes `+cpuset` to `cgroup.subtree_control` from the root down).
    fn enable_v2_ancestors(&self, rel: &str) -> Result<()> {
        if self.version != Version::V2 {
            return Ok(());
        }
        let mut dir = self.root.clone();
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        for (i, c) in comps.iter().enumerate() {
            let ctl = dir.join("cgroup.subtree_control");
            let cur = fs::read_to_string(&ctl).map_err(io_err("read", &ctl))?;
            if !cur.split_whitespace().any(|x| x == "cpuset") {
                fs::write(&ctl, "+cpuset").map_err(io_err("enable cpuset in", &ctl))?;
            }
            if i + 1 < comps.len() {
                dir = dir.join(c);
                if !dir.exists() {
                    fs::create_dir(&dir).map_err(io_err("create", &dir))?;
                }
            }
        }
        Ok(())
    }

    /// In v1, gives every ancestor of `rel` with an empty `cpuset.cpus` or
    /// `cpuset.mems` its parent's (v1 refuses a child more than its parent).
    fn fill_v1_ancestors(&self, rel: &str) -> Result<()> {
        if self.version != Version::V1 {
            return Ok(());
        }
        let mut parent = self.root.clone();
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            let dir = parent.join(c);
            if !dir.is_dir() {
                break;
            }
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let p = dir.join(f);
                let cur = fs::read_to_string(&p).map_err(io_err("read", &p))?;
                if cur.trim().is_empty() {
                    let from = parent.join(f);
                    let v = fs::read_to_string(&from).map_err(io_err("read", &from))?;
                    fs::write(&p, v.trim()).map_err(io_err("write", &p))?;
                }
            }
            parent = dir;
        }
        Ok(())
    }

    /// Creates (if needed) the cgroup `rel` and sets its CPUs and memory
    /// nodes. In v1, ancestors with an empty cpuset get their parent's, and
    /// the cgroups below `rel` (a pod's containers) get the same CPUs and
    /// nodes: v1 keeps a child within its parent, so `rel` could not shrink
    /// past them otherwise. (In v2 they follow by themselves.)
    pub fn apply(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<()> {
        self.enable_v2_ancestors(rel)?;
        self.fill_v1_ancestors(rel)?;
        let ctl = self.controller(rel)?;
        if !ctl.exists() {
            ctl.create().map_err(|source| EnforceError::Cgroup {
                op: "create",
                path: ctl.path().to_path_buf(),
                source,
            })?;
        }
        if self.version == Version::V1 {
            return set_v1_subtree(ctl.path(), cpus, mems);
        }
        // v1 refuses cpus/mems outside the parent's; mems first keeps a
        // process never without a node.
        ctl.set_mems(&mems_text(mems))
            .map_err(|source| EnforceError::Cgroup {
                op: "set cpuset.mems of",
                path: ctl.path().to_path_buf(),
                source,
            })?;
        ctl.set_cpus(&cpus.to_string())
            .map_err(|source| EnforceError::Cgroup {
                op: "set cpuset.cpus of",
                path: ctl.path().to_path_buf(),
                source,
            })?;
        Ok(())
    }

    /// Sets the CPUs and memory nodes of cgroup `rel` if it exists, never
    /// creating it or its ancestors; returns whether it existed. A cgroup
    /// that disappears while being written (its container ended) counts
    /// as absent.
    pub fn apply_existing(&self, rel: &str, cpus: &CpuSet, mems: &[u32]) -> Result<bool> {
        let path = self.path_of(rel)?;
        if !path.is_dir() {
            return Ok(false);
        }
        let r = if self.version == Version::V1 {
            set_v1_subtree(&path, cpus, mems)
        } else {
            // mems first: a process is never without a node.
            [
                ("cpuset.mems", mems_text(mems)),
                ("cpuset.cpus", cpus.to_string()),
            ]
            .into_iter()
            .try_for_each(|(f, v)| {
                let p = path.join(f);
                fs::write(&p, v).map_err(io_err("write", p))
            })
        };
        match r {
            Ok(()) => Ok(true),
            Err(_) if !path.is_dir() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a cgroup's CPUs and nodes; `None` if it does not exist.
    pub fn read(&self, rel: &str) -> Result<Option<CgroupCpuset>> {
        let path = self.path_of(rel)?;
        if !path.is_dir() {
            return Ok(None);
        }
        let read = |f: &str| -> Result<parse::CpuList> {
            let p = path.join(f);
            let t = fs::read_to_string(&p).map_err(io_err("read", &p))?;
            parse::cpulist(&t)
                .map_err(|e| io_err("parse", p)(io::Error::new(io::ErrorKind::InvalidData, e)))
        };
        Ok(Some(CgroupCpuset {
            cpus: CpuSet::from(&read("cpuset.cpus")?),
            mems: read("cpuset.mems")?.iter().collect(),
        }))
    }

    /// Moves process `pid` (all its threads) into cgroup `rel`.
    pub fn add_process(&self, rel: &str, pid: u32) -> Result<()> {
        let ctl = self.controller(rel)?;
        ctl.add_task_by_tgid(&CgroupPid::from(u64::from(pid)))
            .map_err(|source| EnforceError::Cgroup {
                op: "move process into",
                path: ctl.path().to_path_buf(),
                source,
            })
    }

    /// Processes in cgroup `rel`.
    pub fn processes(&self, rel: &str) -> Result<Vec<u32>> {
        let ctl = self.controller(rel)?;
        Ok(ctl.procs().into_iter().map(|p| p.pid as u32).collect())
    }

    /// Removes cgroup `rel`, first moving any process in it to the cgroup
    /// root (which always has every CPU). Absent is fine.
    pub fn remove(&self, rel: &str) -> Result<()> {
        let ctl = self.controller(rel)?;
        if !ctl.exists() {
            return Ok(());
        }
        for pid in ctl.procs() {
            let procs = self.root.join("cgroup.procs");
            // A process that exited meanwhile is gone already.
            if let Err(e) = fs::write(&procs, pid.pid.to_string()) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(io_err("move process out via", procs)(e));
                }
            }
        }
        ctl.delete().map_err(|source| EnforceError::Cgroup {
            op: "remove",
            path: ctl.path().to_path_buf(),
            source,
        })
    }

    /// cgroup v2 only: makes `rel` an isolated cpuset partition on `cpus`:
    /// a remote partition (kernel 6.7 and later), so each cgroup above it
    /// holds every isolated CPU below it in its `cpuset.cpus.exclusive`
    /// (`ancestors`, top down, written first; siblings' exclusive CPUs never
    /// overlap). For an allocation's own cgroup that is `griffin/`; for a
    /// container's, the kubelet's QoS and pod cgroups. The CPUs leave every
    /// other cpuset and get no load balancing. Fails, naming the kernel's
    /// reason, if the partition comes out invalid.
    pub fn isolate(&self, rel: &str, cpus: &CpuSet, ancestors: &[Exclusive]) -> Result<()> {
        let dir = self.path_of(rel)?;
        if self.version != Version::V2 {
            return Err(io_err("isolate (cgroup v2 only)", dir)(io::Error::from(
                io::ErrorKind::Unsupported,
            )));
        }
        let write = |p: PathBuf, v: String| fs::write(&p, v).map_err(io_err("write", p));
        for (a, exclusive) in ancestors {
            write(
                self.path_of(a)?.join("cpuset.cpus.exclusive"),
                exclusive.to_string(),
            )?;
        }
        write(dir.join("cpuset.cpus.exclusive"), cpus.to_string())?;
        write(dir.join("cpuset.cpus.partition"), "isolated".into())?;
        let state_path = dir.join("cpuset.cpus.partition");
        let state = fs::read_to_string(&state_path).map_err(io_err("read", &state_path))?;
        if state.trim() != "isolated" {
            let _ = fs::write(&state_path, "member");
            return Err(io_err("make an isolated partition of", dir)(
                io::Error::other(state.trim().to_owned()),
            ));
        }
        Ok(())
    }

    /// Undoes [`Cgroups::isolate`]: `rel` back to a member (if it is a
    /// partition), then each of `ancestors`, bottom up, left with the
    /// exclusive CPUs it keeps (written only where they change). Absent
    /// cgroups are fine.
    pub fn unisolate(&self, rel: &str, ancestors: &[Exclusive]) -> Result<()> {
        if self.version != Version::V2 {
            return Ok(());
        }
        let dir = self.path_of(rel)?;
        let p = dir.join("cpuset.cpus.partition");
        if fs::read_to_string(&p).is_ok_and(|s| s.trim() != "member") {
            fs::write(&p, "member").map_err(io_err("write", p))?;
            let p = dir.join("cpuset.cpus.exclusive");
            // A newline: an empty write never reaches the kernel.
            fs::write(&p, "\n").map_err(io_err("write", p))?;
        }
        for (a, keep) in ancestors.iter().rev() {
            let p = self.path_of(a)?.join("cpuset.cpus.exclusive");
            let Ok(now) = fs::read_to_string(&p) else {
                continue;
            };
            if now.trim() != keep.to_string() {
                fs::write(&p, format!("{keep}\n")).map_err(io_err("write", p))?;
            }
        }
        Ok(())
    }

    /// Griffin's allocation cgroups: `(id, cpuset)` for each `griffin/<id>`.
    pub fn allocations(&self) -> Result<Vec<(String, CgroupCpuset)>> {
        let dir = self.root.join(GRIFFIN_DIR);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err("list", &dir))?;
            if !entry.path().is_dir() {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Some(c) = self.read(&Self::allocation_path(&id))? {
                out.push((id, c));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// v1: gives the cgroup at `dir` and every cgroup below it exactly `cpus`
/// and `mems`, nodes first. A child must stay within its parent, so each
/// cgroup lacking part of the new set is first widened to its current set
/// plus the new one, parents before children; then each gets the new set,
/// children before parents. Cgroups already right are not written.
fn set_v1_subtree(dir: &Path, cpus: &CpuSet, mems: &[u32]) -> Result<()> {
    // Breadth first: every cgroup comes after its ancestors.
    let mut tree = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < tree.len() {
        let here = tree[i].clone();
        for e in fs::read_dir(&here).map_err(io_err("list", &here))? {
            let e = e.map_err(io_err("list", &here))?;
            if e.file_type().map_err(io_err("list", &here))?.is_dir() {
                tree.push(e.path());
            }
        }
        i += 1;
    }
    let mems = CpuSet::from_ids(mems.iter().copied());
    for (file, want) in [("cpuset.mems", &mems), ("cpuset.cpus", cpus)] {
        let read = |d: &Path| -> Result<CpuSet> {
            let p = d.join(file);
            let t = fs::read_to_string(&p).map_err(io_err("read", &p))?;
            let l = parse::cpulist(&t)
                .map_err(|e| io_err("parse", p)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            Ok(CpuSet::from(&l))
        };
        let write = |d: &Path, v: &CpuSet| {
            let p = d.join(file);
            fs::write(&p, v.to_string()).map_err(io_err("write", p))
        };
        for d in &tree {
            let mut cur = read(d)?;
            if !want.is_subset(&cur) {
                cur.union_with(want);
                write(d, &cur)?;
            }
        }
        for d in tree.iter().rev() {
            if read(d)? != *want {
                write(d, want)?;
            }
        }
    }
    Ok(())
}

/// `(mount point, fs type, super options)` of each mountinfo line.
pub fn parse_mountinfo(text: &str) -> Vec<(PathBuf, String, String)> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let point = pre.split_whitespace().nth(4)?;
            let mut post = post.split_whitespace();
            let fstype = post.next()?.to_owned();
            let _source = post.next()?;
            let opts = post.next().unwrap_or("").to_owned();
            Some((PathBuf::from(unescape_mount(point)), fstype, opts))
        })
        .collect()
}

fn unescape_mount(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The thread ids of process `pid`.
fn threads(pid: u32) -> Result<Vec<i32>> {
    let task_dir = PathBuf::from(format!("/proc/{pid}/task"));
    Ok(fs::read_dir(&task_dir)
        .map_err(io_err("list threads in", &task_dir))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// The CPUs any thread of `pid` may run on (`sched_getaffinity` of each).
pub fn thread_affinity(pid: u32) -> Result<CpuSet> {
    use nix::sched::{sched_getaffinity, CpuSet as NixSet};
    use nix::unistd::Pid;
    let mut out = CpuSet::new();
    for tid in threads(pid)? {
        match sched_getaffinity(Pid::from_raw(tid)) {
            Ok(set) => {
                for c in 0..NixSet::count() {
                    if set.is_set(c).unwrap_or(false) {
                        out.insert(c as u32);
                    }
                }
            }
            // A thread that exited between listing and reading.
            Err(nix::Error::ESRCH) => {}
            Err(source) => {
                return Err(EnforceError::Process {
                    op: "get CPU affinity",
                    pid,
                    source,
                })
            }
        }
    }
    Ok(out)
}

/// Pins every thread of `pid` to `cpus` with `sched_setaffinity`.
pub fn pin_threads(pid: u32, cpus: &CpuSet) -> Result<usize> {
    use nix::sched::{sched_setaffinity, CpuSet as NixSet};
    use nix::unistd::Pid;
    let mut set = NixSet::new();
    for c in cpus.iter() {
        set.set(c as usize)
            .map_err(|source| EnforceError::Process {
                op: "build the CPU mask",
                pid,
                source,
            })?;
    }
    let tids = threads(pid)?;
    let mut pinned = 0;
    for tid in tids {
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) => pinned += 1,
            // A thread that exited between listing and pinning.
            Err(nix::Error::ESRCH) => {}
            Err(source) => {
                return Err(EnforceError::Process {
                    op: "set CPU affinity",
                    pid,
                    source,
                })
            }
        }
    }
    Ok(pinned)
}

fn node_mask(mems: &[u32]) -> (Vec<libc::c_ulong>, libc::c_ulong) {
    let bits = libc::c_ulong::BITS;
    let max = mems.iter().copied().max().unwrap_or(0) + 1;
    let mut mask = vec![0 as libc::c_ulong; max.div_ceil(bits) as usize];
    for &m in mems {
        mask[(m / bits) as usize] |= 1 << (m % bits);
    }
    // maxnode counts bits; the kernel reads maxnode-1 of them.
    (mask, libc::c_ulong::from(max) + 1)
}

/// Binds the calling thread's future memory allocations to `mems`
/// (`set_mempolicy(MPOL_BIND)`), for workloads Griffin starts itself.
pub fn bind_current_memory(mems: &[u32]) -> Result<()> {
    const MPOL_BIND: libc::c_int = 2;
    let (mask, maxnode) = node_mask(mems);
    // SAFETY: `mask` outlives the call and holds `maxnode - 1` bits; the
    // syscall only reads it.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, MPOL_BIND, mask.as_ptr(), maxnode) };
    if rc != 0 {
        return Err(EnforceError::Process {
            op: "set_mempolicy",
            pid: std::process::id(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// Moves the pages of `pid` from any node to `mems` (`migrate_pages`);
/// returns how many pages could not be moved.
pub fn migrate_memory(pid: u32, all_nodes: &[u32], mems: &[u32]) -> Result<i64> {
    let (from, maxa) = node_mask(all_nodes);
    let (mut to, maxb) = node_mask(mems);
    let maxnode = maxa.max(maxb);
    let words = from.len().max(to.len());
    let mut from = from;
    from.resize(words, 0);
    to.resize(words, 0);
    // SAFETY: both masks hold `words` longs, enough for `maxnode - 1` bits,
    // and outlive the call; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            pid as libc::pid_t,
            maxnode,
            from.as_ptr(),
            to.as_ptr(),
        )
    };
    if rc < 0 {
        return Err(EnforceError::Process {
            op: "migrate_pages",
            pid,
            source: nix::Error::last(),
        });
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let t =
            "30 25 0:26 / /sys/fs/cgroup/cpuset rw,relatime shared:12 - cgroup cgroup rw,cpuset\n\
                 35 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                 36 25 0:32 / /mnt/with\\040space rw - tmpfs tmpfs rw\n\
                 garbage line\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            (
                PathBuf::from("/sys/fs/cgroup/cpuset"),
                "cgroup".into(),
                "rw,cpuset".into()
            )
        );
        assert_eq!(m[1].1, "cgroup2");
        assert_eq!(m[2].0, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn cgroup_paths_stay_below_the_root() {
        let c = Cgroups {
            root: "/sys/fs/cgroup/cpuset".into(),
            version: Version::V1,
        };
        assert_eq!(
            c.path_of("griffin/a-1").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpuset/griffin/a-1")
        );
        for bad in ["", "/abs", "../up", "a/../../b", "./x"] {
            assert!(
                matches!(c.path_of(bad), Err(EnforceError::BadPath(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn node_masks() {
        let (m, max) = node_mask(&[0, 2]);
        assert_eq!(m, vec![0b101]);
        assert_eq!(max, 4);
        let (m, _) = node_mask(&[65]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], 0b10);
    }

    #[test]
    fn open_refuses_non_cgroup_dirs() {
        let d = std::env::temp_dir();
        assert!(matches!(Cgroups::open(&d), Err(EnforceError::NotCpuset(_))));
    }
}
