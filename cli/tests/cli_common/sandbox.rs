//! A private cgroup root on the real kernel (cgroup v1 cpuset at
//! [`CPUSET`]) with a state directory, sleeper processes as targets, and
//! the real `griffin` binary run against them; plus the invariant checks
//! the kernel witnesses (cgroup files, `/proc/PID/status`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub const CPUSET: &str = "/sys/fs/cgroup/cpuset";

/// A private cgroup root below the v1 cpuset hierarchy, plus a state
/// directory; both removed on drop (processes moved out first).
pub struct Sandbox {
    pub cgroot: PathBuf,
    pub state: tempfile::TempDir,
    pub children: Vec<Child>,
}

impl Sandbox {
    pub fn new(name: &str) -> Self {
        assert!(
            Path::new(CPUSET).join("cpuset.cpus").exists(),
            "these tests need the cgroup v1 cpuset hierarchy at {CPUSET} and root"
        );
        let cgroot = Path::new(CPUSET).join(format!("griffin-test-{name}-{}", std::process::id()));
        let _ = remove_tree(&cgroot);
        fs::create_dir(&cgroot).unwrap();
        for f in ["cpuset.cpus", "cpuset.mems"] {
            fs::write(
                cgroot.join(f),
                fs::read_to_string(Path::new(CPUSET).join(f))
                    .unwrap()
                    .trim(),
            )
            .unwrap();
        }
        Self {
            cgroot,
            state: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    /// `griffin ARGS --state-dir … --cgroup-root …` on this sandbox.
    pub fn griffin(&self, args: &[&str]) -> Command {
        let mut c = super::griffin();
        c.args(args);
        self.on_sandbox(&mut c);
        c
    }

    /// Appends this sandbox's `--state-dir` and `--cgroup-root`.
    fn on_sandbox(&self, c: &mut Command) {
        c.arg("--state-dir")
            .arg(self.state.path())
            .arg("--cgroup-root")
            .arg(&self.cgroot);
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.griffin(args).output().unwrap();
        assert!(
            out.status.success(),
            "griffin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn allocs(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["allocs", "--json"])).unwrap();
        v.as_array().unwrap().clone()
    }

    pub fn sleeper(&mut self) -> u32 {
        let c = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = c.id();
        self.children.push(c);
        pid
    }

    /// Runs griffin expecting failure; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.griffin(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "griffin {args:?} succeeded: {err}");
        err
    }

    /// Runs griffin expecting success; returns (stdout, stderr).
    pub fn ok_err(&self, args: &[&str]) -> (String, String) {
        let out = self.griffin(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "griffin {args:?}: {err}");
        (String::from_utf8(out.stdout).unwrap(), err)
    }

    pub fn alloc(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(&[&["alloc", "--json"], args].concat())).unwrap()
    }

    /// Checks the state against the kernel: no CPU in two allocations, one
    /// `griffin/<id>` per allocation and no other, each process in its
    /// allocation's cgroup and pinned to its CPUs (the shared pool for a
    /// shared allocation), the shared pool never empty.
    pub fn check_invariants(&self, ctx: &str) -> Vec<serde_json::Value> {
        let list = self.allocs();
        let online = griffin_devices::parse::cpulist(&online()).unwrap();
        let mut pool: BTreeSet<u32> = online.iter().collect();
        let mut ids = BTreeSet::new();
        for a in &list {
            ids.insert(a["id"].as_str().unwrap().to_owned());
            for c in a["cpus"].as_array().unwrap() {
                let c = c.as_u64().unwrap() as u32;
                assert!(pool.remove(&c), "{ctx}: CPU {c} twice or offline");
            }
        }
        assert!(!pool.is_empty(), "{ctx}: the shared pool is empty");
        let pool = griffin_devices::CpuList::from_ids(pool).to_string();
        let griffin_dir = self.cgroot.join("griffin");
        let live: BTreeSet<String> = fs::read_dir(&griffin_dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().unwrap().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(live, ids, "{ctx}: griffin/* cgroups and allocations differ");
        for a in &list {
            let want = if a["cpus"].as_array().unwrap().is_empty() {
                pool.clone()
            } else {
                cpulist(&a["cpus"])
            };
            let cg = self.cgroot.join(a["cgroup"].as_str().unwrap());
            let have = fs::read_to_string(cg.join("cpuset.cpus")).unwrap();
            assert_eq!(have.trim(), want, "{ctx}: {}", cg.display());
            if let Some(pid) = a["target"]["pid"].as_u64() {
                let pid = pid as u32;
                assert!(
                    fs::read_to_string(cg.join("cgroup.procs"))
                        .unwrap()
                        .lines()
                        .any(|l| l == pid.to_string()),
                    "{ctx}: process {pid} not in {}",
                    cg.display()
                );
                assert_eq!(cpus_allowed(pid), want, "{ctx}: affinity of {pid}");
            }
        }
        list
    }

    /// Every command works: list, alloc (shared, and exclusive if a CPU can
    /// be had), release.
    pub fn commands_work(&self, ctx: &str) {
        let before = self.allocs().len();
        let s = self.alloc(&["--cpus", "0"]);
        let mut made = vec![s];
        let pool = self.check_invariants(ctx).iter().fold(
            griffin_devices::parse::cpulist(&online()).unwrap().len(),
            |n, a| n - a["cpus"].as_array().unwrap().len(),
        );
        if pool > 1 {
            made.push(self.alloc(&["--cpus", "1"]));
        }
        assert_eq!(self.allocs().len(), before + made.len(), "{ctx}");
        for a in made {
            self.ok(&["release", a["id"].as_str().unwrap()]);
        }
        assert_eq!(self.allocs().len(), before, "{ctx}");
    }

    pub fn store(&self) -> griffin_runtime::checkpoint::Store {
        griffin_runtime::checkpoint::Store::open(self.state.path()).unwrap()
    }

    /// A `griffin daemon` on this sandbox's state and cgroup root
    /// (ephemeral ports; killed when dropped).
    pub fn daemon(&self) -> super::Daemon {
        super::Daemon::spawn(&mut self.daemon_command())
    }

    /// `griffin daemon` on this sandbox, with `--root /`.
    pub fn daemon_command(&self) -> Command {
        let mut c = super::daemon_command();
        self.on_sandbox(&mut c);
        c.args(["--root", "/"]);
        c
    }

    /// strace, to be given a program and its arguments: SIGKILL at the
    /// program's `call`-th `syscall` (counted per thread, child processes
    /// too); those calls are logged to `log` with their files (`-y`).
    pub fn strace_kill(syscall: &str, call: u32, log: &Path) -> Command {
        let mut c = Command::new("strace");
        c.args(["-f", "-y", "-o"])
            .arg(log)
            .arg("-e")
            .arg(format!("trace={syscall}"))
            .arg("-e")
            .arg(format!("inject={syscall}:signal=SIGKILL:when={call}"));
        c
    }

    /// `griffin ARGS` on this sandbox under [`Sandbox::strace_kill`].
    pub fn griffin_killed_at(
        &self,
        syscall: &str,
        call: u32,
        log: &Path,
        args: &[&str],
    ) -> Command {
        let mut c = Self::strace_kill(syscall, call, log);
        c.arg(super::griffin_path()).args(args);
        self.on_sandbox(&mut c);
        c
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = remove_tree(&self.cgroot) {
            eprintln!("cleanup of {}: {e}", self.cgroot.display());
        }
    }
}

/// Removes a cgroup tree bottom-up, moving processes to the hierarchy root.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree(&e.path())?;
        }
    }
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for p in procs.lines() {
            let _ = fs::write(Path::new(CPUSET).join("cgroup.procs"), p);
        }
    }
    fs::remove_dir(dir)
}

pub fn cpus_allowed(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn online() -> String {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .unwrap()
        .trim()
        .to_owned()
}

pub fn cpulist(v: &serde_json::Value) -> String {
    let ids: Vec<u32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as u32)
        .collect();
    griffin_devices::CpuList::from_ids(ids).to_string()
}
