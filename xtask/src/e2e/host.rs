//! What the e2e changes on the host, recorded before it changes it, and the
//! teardown that undoes it: from the record alone, so a run killed with
//! SIGKILL is cleaned by the next one.
//!
//! The record, `/run/griffin-e2e/state.json`, holds the processes started
//! (pid, start time and executable, so a reused pid is never killed), the
//! host paths the cluster may create that did not exist before, and the
//! sysctls the kubelet rewrites, with their values before. Teardown: the
//! recorded processes stopped (SIGTERM, then SIGKILL), every process in the
//! kubelet's cgroup tree (`/griffin-e2e` in each v1 hierarchy, or the v2
//! one) and every containerd shim serving the e2e's containerd killed, mounts
//! below the e2e's directories detached (deepest first), the cgroup trees
//! removed (deepest first), the CNI bridge deleted, the sysctls restored,
//! created paths and the run directory removed. [`leftovers`] then lists
//! anything still there.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The machine-wide directory of the e2e (containerd's socket and state,
/// runc's root, the record). Short: unix socket paths live here.
pub(crate) const MACHINE_DIR: &str = "/run/griffin-e2e";
/// The cgroup below which the kubelet puts every pod (`--cgroup-root`).
pub(crate) const CGROUP_ROOT: &str = "griffin-e2e";
/// The CNI bridge of the pod network.
pub(crate) const BRIDGE: &str = "griffin-e2e0";
/// The veth pair (in the host's network namespace) Griffin's XDP split is
/// configured on in the e2e; the peer is [`XDP_PEER`].
pub(crate) const XDP_LINK: &str = "grfe2e-x0";
/// The other end of [`XDP_LINK`].
pub(crate) const XDP_PEER: &str = "grfe2e-x1";
/// Where Griffin pins its XDP state (the DaemonSet's hostPath).
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

/// Griffin's state directory on the host (the DaemonSet's hostPath).
pub(crate) const GRIFFIN_STATE: &str = "/var/lib/griffin";

/// containerd 1.7's NRI socket in the e2e: NRI's default, the path the
/// DaemonSet mounts (its directory, `/var/run/nri`).
pub(crate) const NRI_SOCKET: &str = "/run/nri/nri.sock";

/// Host paths the kubelet, containerd, the CNI plugins or Griffin's pod
/// create outside the run directory; each is removed at teardown when it
/// did not exist before the run.
pub(crate) const HOST_PATHS: &[&str] = &[
    // The kubelet's root: the device-plugin socket directory is fixed at
    // /var/lib/kubelet/device-plugins in 1.20, and the manifests mount the
    // real paths, so the e2e kubelet uses the real root.
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    // libcni's result cache (not configurable through containerd 1.6).
    "/var/lib/cni",
    // containerd's shim sockets (/run/containerd/s) whatever its state dir.
    "/run/containerd",
    // Griffin's state directory (the DaemonSet's hostPath).
    GRIFFIN_STATE,
    // Griffin's cgroup (v1 cpuset hierarchy, or the v2 one).
    "/sys/fs/cgroup/cpuset/griffin",
    "/sys/fs/cgroup/griffin",
    // Griffin's bpffs pins and their records (only with XDP splits).
    "/sys/fs/bpf/griffin",
    "/run/griffin",
    // NRI's socket directory (the DaemonSet's hostPath; containerd 1.7's
    // socket in it).
    "/run/nri",
];

/// The sysctls kubelet 1.20 sets at start (`setupKernelTunables`, when
/// `--protect-kernel-defaults` is false), plus the one the bridge plugin
/// would set for a gateway.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
];

fn state_path() -> PathBuf {
    Path::new(MACHINE_DIR).join("state.json")
}

/// The record of one run.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// The run directory (removed at teardown).
    pub run_dir: PathBuf,
    /// Processes started: name -> (pid, start time in ticks, exe).
    pub procs: BTreeMap<String, (u32, u64, String)>,
    /// Paths of [`HOST_PATHS`] that did not exist before the run.
    pub created: Vec<String>,
    /// Sysctl values before the run.
    pub sysctls: BTreeMap<String, String>,
    /// File systems the run mounted (bpffs when the host had none).
    pub mounted: Vec<String>,
    /// State a stopped daemon left, moved aside for the run: original path
    /// -> where it waits; put back at teardown.
    pub stashed: BTreeMap<String, String>,
}

impl Record {
    /// A new record: notes which host paths exist and the sysctls.
    pub(crate) fn begin(run_dir: &Path) -> Result<Self> {
        let mut r = Record {
            run_dir: run_dir.to_path_buf(),
            ..Default::default()
        };
        for p in HOST_PATHS {
            if fs::symlink_metadata(p).is_err() {
                r.created.push((*p).to_owned());
            }
        }
        for s in SYSCTLS {
            if let Ok(v) = fs::read_to_string(Path::new("/proc/sys").join(s)) {
                r.sysctls.insert((*s).to_owned(), v.trim().to_owned());
            }
        }
        r.save()?;
        Ok(r)
    }

    /// Writes the record (temporary file, renamed).
    pub(crate) fn save(&self) -> Result<()> {
        fs::create_dir_all(MACHINE_DIR).with_context(|| format!("creating {MACHINE_DIR}"))?;
        let v = json!({
            "run_dir": self.run_dir,
            "procs": self.procs,
            "created": self.created,
            "sysctls": self.sysctls,
            "mounted": self.mounted,
            "stashed": self.stashed,
        });
        let tmp = state_path().with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&v)?)?;
        fs::rename(&tmp, state_path())?;
        Ok(())
    }

    /// The record a previous run left, if any.
    pub(crate) fn load() -> Result<Option<Self>> {
        let text = match fs::read(state_path()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("reading the e2e record"),
        };
        let v: Value = serde_json::from_slice(&text).context("parsing the e2e record")?;
        Ok(Some(Record {
            run_dir: v["run_dir"].as_str().unwrap_or_default().into(),
            procs: serde_json::from_value(v["procs"].clone()).unwrap_or_default(),
            created: serde_json::from_value(v["created"].clone()).unwrap_or_default(),
            sysctls: serde_json::from_value(v["sysctls"].clone()).unwrap_or_default(),
            mounted: serde_json::from_value(v["mounted"].clone()).unwrap_or_default(),
            stashed: serde_json::from_value(v["stashed"].clone()).unwrap_or_default(),
        }))
    }

    /// Moves Griffin's state directory aside when a daemon that is not
    /// running left it (the README's `cargo xtask run` does, before a
    /// `cargo xtask test` on the same machine); teardown puts it back. A
    /// daemon that holds its lock is running: refused.
    pub(crate) fn stash_stopped_daemon_state(&mut self, dir: &str) -> Result<()> {
        let path = Path::new(dir);
        if fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        let lock = path.join("lock");
        if let Ok(f) = fs::File::open(&lock) {
            use std::os::fd::AsRawFd;
            // SAFETY: flock(2) on a descriptor this function owns; the
            // lock goes with it when `f` is dropped.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                anyhow::bail!(
                    "{} is locked: a griffin daemon runs on this machine; stop it first",
                    lock.display()
                );
            }
        }
        let aside = format!("{dir}.e2e-saved");
        if fs::symlink_metadata(&aside).is_ok() {
            anyhow::bail!(
                "{aside} exists (a run that could not put {dir} back?): restore or remove it first"
            );
        }
        fs::rename(path, &aside).with_context(|| format!("moving {dir} to {aside}"))?;
        println!("e2e: {dir} (left by a stopped griffin daemon) moved to {aside} for the run; put back at teardown");
        self.stashed.insert(dir.to_owned(), aside);
        self.save()
    }

    /// Notes a started process.
    pub(crate) fn add_proc(&mut self, name: &str, pid: u32) -> Result<()> {
        let (start, exe) = identity(pid).unwrap_or_default();
        self.procs.insert(name.to_owned(), (pid, start, exe));
        self.save()
    }
}

/// Bytes available to unprivileged users on the file system holding
/// `path` (`statvfs`), `None` when it cannot be asked (e.g. `path` does
/// not exist yet).
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct
    // this function owns; it only writes that struct.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then_some(st)
    }?;
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Where Griffin pins the split on [`XDP_LINK`].
fn xdp_pins() -> PathBuf {
    Path::new(BPFFS).join("griffin").join(XDP_LINK)
}

/// Where Griffin pins the pod path of the split on [`XDP_LINK`].
fn pod_pins() -> PathBuf {
    Path::new(BPFFS).join("griffin-pod").join(XDP_LINK)
}

/// Griffin's record of the split on [`XDP_LINK`] (rules in force).
pub(crate) fn xdp_record() -> PathBuf {
    Path::new("/run/griffin/xdp").join(format!("{XDP_LINK}.json"))
}

/// Whether a bpf file system is mounted at `path`.
pub(crate) fn is_bpffs(path: &str) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| {
        let Some((pre, post)) = l.split_once(" - ") else {
            return false;
        };
        pre.split_whitespace().nth(4) == Some(path) && post.split_whitespace().next() == Some("bpf")
    })
}

/// Mounts bpffs at [`BPFFS`] when the host has none there (systemd mounts
/// it on most distributions; Griffin's pod cannot, it lacks
/// CAP_SYS_ADMIN), noting it for teardown.
pub(crate) fn ensure_bpffs(rec: &mut Record) -> Result<()> {
    if is_bpffs(BPFFS) {
        return Ok(());
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .status()
        .context("running mount")?
        .success();
    if !ok {
        anyhow::bail!("cannot mount bpffs at {BPFFS}");
    }
    rec.mounted.push(BPFFS.to_owned());
    rec.save()
}

/// A process's start time (ticks since boot) and executable.
fn identity(pid: u32) -> Option<(u64, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?.parse().ok()?;
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some((start, exe))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
}

pub(crate) fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this run started (checked by its start time
    // and executable by the caller) or found in its own cgroup tree; no
    // memory is passed.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Stops a recorded process: SIGTERM, up to `grace`, then SIGKILL; only if
/// the pid still names the process started (same start time and exe).
pub(crate) fn stop_recorded(pid: u32, start: u64, exe: &str, grace: Duration) {
    match identity(pid) {
        Some((s, e)) if s == start && e == exe => {}
        _ => return,
    }
    kill(pid, libc::SIGTERM);
    let t = Instant::now();
    while alive(pid) && t.elapsed() < grace {
        reap();
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        kill(pid, libc::SIGKILL);
        let t = Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(10) {
            reap();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    reap();
}

/// Reaps exited children of this process (the components it started).
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on any child, non-blocking, with a valid
        // pointer to a local.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
    }
}

/// Directories of the cgroup tree the kubelet uses, one per hierarchy.
pub(crate) fn cgroup_trees() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = post.split_whitespace().next().unwrap_or_default();
        if fstype == "cgroup" || fstype == "cgroup2" {
            if let Some(point) = pre.split_whitespace().nth(4) {
                out.push(Path::new(point).join(CGROUP_ROOT));
            }
        }
    }
    out
}

/// Every pid in the cgroup trees below `dirs`.
pub(crate) fn pids_below(dirs: &[PathBuf]) -> Vec<u32> {
    let mut pids = Vec::new();
    fn walk(d: &Path, pids: &mut Vec<u32>) {
        if let Ok(t) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), pids);
                }
            }
        }
    }
    for d in dirs {
        walk(d, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Processes whose command line names the e2e's containerd socket (its
/// containerd shims), by pid.
fn shims() -> Vec<u32> {
    let sock = format!("{MACHINE_DIR}/containerd.sock");
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("containerd-shim") && cmd.contains(&sock) {
                out.push(pid);
            }
        }
    }
    out
}

/// Mount points at or below any of `dirs`, deepest first.
pub(crate) fn mounts_below(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| dirs.iter().any(|d| p.starts_with(d)))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn umount(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: umount2(2) with a valid NUL-terminated path; MNT_DETACH so a
    // busy mount is detached rather than failing.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) == 0 }
}

/// Removes a cgroup tree, deepest directories first (cgroup directories
/// are removed with rmdir only).
fn remove_cgroup_tree(d: &Path) {
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(d);
}

/// The directories whose mounts teardown detaches.
fn mount_roots(rec: &Record) -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from(MACHINE_DIR),
        PathBuf::from("/var/lib/kubelet"),
    ];
    if !rec.run_dir.as_os_str().is_empty() {
        v.push(rec.run_dir.clone());
    }
    v
}

/// Undoes everything the record names; returns what it did, one line
/// each. Never stops at an error.
pub(crate) fn teardown(rec: &Record) -> Vec<String> {
    let mut did = Vec::new();
    // The kubelet first (it restarts what is killed under it), then the
    // rest in reverse start order.
    let mut procs: Vec<_> = rec.procs.iter().collect();
    procs.sort_by_key(|(name, _)| match name.as_str() {
        "kubelet" => 0,
        "kube-controller-manager" => 1,
        "kube-scheduler" => 2,
        "containerd" => 4,
        "kube-apiserver" => 5,
        "etcd" => 6,
        _ => 3,
    });
    for (name, (pid, start, exe)) in procs {
        if alive(*pid) {
            stop_recorded(*pid, *start, exe, Duration::from_secs(15));
            did.push(format!("stopped {name} (pid {pid})"));
        }
        if *name == "kubelet" {
            // Pods and their shims, once nothing restarts them.
            let trees = cgroup_trees();
            for _ in 0..3 {
                let pids = pids_below(&trees);
                let shims = shims();
                if pids.is_empty() && shims.is_empty() {
                    break;
                }
                for p in pids.iter().chain(&shims) {
                    kill(*p, libc::SIGKILL);
                }
                did.push(format!(
                    "killed {} container processes and {} shims",
                    pids.len(),
                    shims.len()
                ));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    for p in shims() {
        kill(p, libc::SIGKILL);
        did.push(format!("killed leftover shim {p}"));
    }
    let trees = cgroup_trees();
    for p in pids_below(&trees) {
        kill(p, libc::SIGKILL);
        did.push(format!("killed leftover container process {p}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    reap();
    for m in mounts_below(&mount_roots(rec)) {
        if umount(&m) {
            did.push(format!("unmounted {}", m.display()));
        }
    }
    for t in &trees {
        if t.exists() {
            remove_cgroup_tree(t);
            did.push(format!("removed cgroup {}", t.display()));
        }
    }
    for link in [BRIDGE, XDP_LINK] {
        if Path::new("/sys/class/net").join(link).exists() {
            let ok = std::process::Command::new("ip")
                .args(["link", "del", link])
                .status()
                .is_ok_and(|s| s.success());
            did.push(format!("deleted the link {link}: {ok}"));
        }
    }
    // The split's pins on the e2e's own link, also when `griffin/` was
    // there before the run (then it is not the run's to remove whole).
    let pins = xdp_pins();
    if pins.exists() {
        let ok = fs::remove_dir_all(&pins).is_ok();
        did.push(format!("removed {}: {ok}", pins.display()));
    }
    let pins = pod_pins();
    if pins.exists() {
        let ok = fs::remove_dir_all(&pins).is_ok();
        if let Some(parent) = pins.parent() {
            // Only when no other split's pod path is there.
            let _ = fs::remove_dir(parent);
        }
        did.push(format!("removed {}: {ok}", pins.display()));
    }
    // And its record, also when `/run/griffin` was there before the run.
    let record = xdp_record();
    if record.exists() {
        let ok = fs::remove_file(&record).is_ok();
        did.push(format!("removed {}: {ok}", record.display()));
    }
    for (k, v) in &rec.sysctls {
        let path = Path::new("/proc/sys").join(k);
        if fs::read_to_string(&path).is_ok_and(|now| now.trim() != v) {
            let ok = fs::write(&path, v).is_ok();
            did.push(format!("restored {k} = {v}: {ok}"));
        }
    }
    for p in &rec.created {
        let path = Path::new(p);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        if p.starts_with(BPFFS) && rec.mounted.iter().any(|m| m == BPFFS) {
            // Goes with the bpffs the run mounted.
            continue;
        }
        let ok = if p.starts_with("/sys/fs/cgroup") {
            remove_cgroup_tree(path);
            !path.exists()
        } else {
            remove_unmounted(path, &mut did)
        };
        did.push(format!("removed {p}: {ok}"));
    }
    for (p, aside) in &rec.stashed {
        if fs::symlink_metadata(aside).is_err() {
            continue;
        }
        let path = Path::new(p);
        if fs::symlink_metadata(path).is_ok() && !remove_unmounted(path, &mut did) {
            did.push(format!(
                "NOT putting {aside} back: {p} could not be removed"
            ));
            continue;
        }
        let ok = fs::rename(aside, path).is_ok();
        did.push(format!("put {aside} back to {p}: {ok}"));
    }
    if !rec.run_dir.as_os_str().is_empty() && rec.run_dir.exists() {
        let ok = remove_unmounted(&rec.run_dir, &mut did);
        did.push(format!("removed {}: {ok}", rec.run_dir.display()));
    }
    for m in &rec.mounted {
        if is_bpffs(m) {
            let ok = umount(Path::new(m));
            did.push(format!("unmounted {m}: {ok}"));
        }
    }
    remove_unmounted(Path::new(MACHINE_DIR), &mut did);
    did
}

/// Removes a directory tree unless something is still mounted below it
/// (removing through a mount would delete what it shows).
fn remove_unmounted(path: &Path, did: &mut Vec<String>) -> bool {
    let m = mounts_below(&[path.to_path_buf()]);
    if !m.is_empty() {
        did.push(format!(
            "NOT removing {}: still mounted below it: {}",
            path.display(),
            m.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return false;
    }
    fs::remove_dir_all(path).is_ok() || !path.exists()
}

/// What a teardown left behind (empty when clean): live recorded
/// processes, container processes, shims, mounts, cgroups, the bridge,
/// created paths, changed sysctls.
pub(crate) fn leftovers(rec: &Record) -> Vec<String> {
    let mut left = Vec::new();
    for (name, (pid, start, exe)) in &rec.procs {
        if identity(*pid).is_some_and(|(s, e)| s == *start && e == *exe) {
            left.push(format!("process {name} (pid {pid})"));
        }
    }
    let trees = cgroup_trees();
    for p in pids_below(&trees) {
        left.push(format!("container process {p}"));
    }
    for p in shims() {
        left.push(format!("containerd shim {p}"));
    }
    for m in mounts_below(&mount_roots(rec)) {
        left.push(format!("mount {}", m.display()));
    }
    for t in trees {
        if t.exists() {
            left.push(format!("cgroup {}", t.display()));
        }
    }
    for link in [BRIDGE, XDP_LINK, XDP_PEER] {
        if Path::new("/sys/class/net").join(link).exists() {
            left.push(format!("link {link}"));
        }
    }
    if xdp_pins().exists() {
        left.push(format!("bpffs pins {}", xdp_pins().display()));
    }
    if pod_pins().exists() {
        left.push(format!("bpffs pins {}", pod_pins().display()));
    }
    if xdp_record().exists() {
        left.push(format!("split record {}", xdp_record().display()));
    }
    for m in &rec.mounted {
        if is_bpffs(m) {
            left.push(format!("bpffs mounted at {m}"));
        }
    }
    for p in &rec.created {
        if p.starts_with(BPFFS) && rec.mounted.iter().any(|m| m == BPFFS) {
            continue;
        }
        if fs::symlink_metadata(p).is_ok() {
            left.push(format!("path {p}"));
        }
    }
    for (k, v) in &rec.sysctls {
        if fs::read_to_string(Path::new("/proc/sys").join(k)).is_ok_and(|now| now.trim() != v) {
            left.push(format!("sysctl {k} changed from {v}"));
        }
    }
    if Path::new(MACHINE_DIR).exists() {
        left.push(format!("path {MACHINE_DIR}"));
    }
    left
}
