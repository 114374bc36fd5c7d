//! The SIGKILL campaign (issue 14) on the real kernel of this machine
//! (cgroup v1 cpuset), driving the real `griffin` binary.
//!
//! Each trial works in a private cgroup root (see [`Sandbox`]), with or
//! without a `griffin daemon`, runs a seeded random sequence of operations
//! (`alloc --cpus 0|1` for a fresh sleeper process or a fresh workload
//! cgroup, `release` of a confirmed allocation, `allocs`) and SIGKILLs once,
//! at a random point, one of:
//! - the client, after a random delay;
//! - the daemon, while a client's request runs;
//! - the client (no daemon) or the daemon inside its N-th
//!   `sched_setaffinity` or `write` (cgroup files, the checkpoint, the
//!   reply), by `strace -e inject=…:signal=SIGKILL:when=N`.
//!
//! Then the daemon (if the trial has one) is started again and the state is
//! checked against independent witnesses, the cgroup files and
//! `/proc/PID/{status,cpuset}`, not only griffin's own view: no CPU in two
//! exclusive allocations, the `griffin/*` cgroups are exactly the listed
//! allocations, every allocation whose `alloc` exited 0 is there (unless its
//! `release` exited 0), every target runs on its allocation's CPUs (the
//! shared pool for a shared one), no other process is left confined, and
//! `allocs`, `alloc` and `release` all work.
//!
//! `GRIFFIN_KILL_TRIALS` sets the number of trials (default 40, the CI
//! run); `GRIFFIN_KILL_SEED` the seed. A broken trial is reported with its
//! own seed: `GRIFFIN_KILL_SEED=<it> GRIFFIN_KILL_TRIALS=1` replays it;
//! `GRIFFIN_KILL_VERBOSE` prints every trial's operations;
//! `GRIFFIN_TEST_BIN` runs a given `griffin` (a copy for a long run).
//! Needs root, the cpuset hierarchy and `strace` (`cargo xtask deps`);
//! without them it fails, never skips.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod cli_common;

use cli_common::sandbox::{cpulist, cpus_allowed, online, Sandbox, CPUSET};
use cli_common::Daemon;
use griffin_tests::Rng;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where a trial's one SIGKILL lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kill {
    /// The client, after a random delay.
    Client,
    /// The daemon, while a client's request runs.
    Daemon,
    /// Inside the N-th `sched_setaffinity`.
    SetAffinity,
    /// Inside the N-th `write`.
    Write,
}

impl Kill {
    /// The syscall strace kills in, and the highest N tried.
    fn syscall(self) -> Option<(&'static str, u64)> {
        match self {
            Kill::SetAffinity => Some(("sched_setaffinity", 3)),
            Kill::Write => Some(("write", 12)),
            _ => None,
        }
    }
}

/// One operation of a trial.
#[derive(Clone, Debug)]
enum Op {
    Alloc { cpus: u32, target: Target },
    Release(String),
    List,
}

#[derive(Clone, Debug)]
enum Target {
    Pid(u32),
    /// Relative to the cgroup root.
    Cgroup(String),
}

impl Op {
    fn args(&self) -> Vec<String> {
        match self {
            Op::Alloc { cpus, target } => {
                let (flag, value) = match target {
                    Target::Pid(p) => ("--pid", p.to_string()),
                    Target::Cgroup(c) => ("--cgroup", c.clone()),
                };
                ["alloc", "--json", "--cpus", &cpus.to_string(), flag, &value]
                    .map(String::from)
                    .to_vec()
            }
            Op::Release(id) => vec!["release".into(), id.clone()],
            Op::List => vec!["allocs".into(), "--json".into()],
        }
    }
}

/// A trial's daemon: plain, or under strace to die inside a syscall.
struct Served {
    d: Daemon,
    /// The daemon process itself (strace's child when traced).
    pid: u32,
}

impl Served {
    fn start(sb: &Sandbox) -> Self {
        let d = sb.daemon();
        let pid = d.child.id();
        Self { d, pid }
    }

    /// The daemon under strace, SIGKILLed at its `n`-th `syscall`; `None`
    /// when that came before it named its addresses (during start-up).
    fn start_traced(sb: &Sandbox, syscall: &str, n: u64, log: &Path) -> Option<Self> {
        let inner = sb.daemon_command();
        let mut c = Sandbox::strace_kill(syscall, n as u32, log);
        c.arg(inner.get_program()).args(inner.get_args());
        let d = Daemon::try_spawn(&mut c)?;
        let strace = d.child.id();
        let children = fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
            .expect("strace's children (CONFIG_PROC_CHILDREN)");
        let pid = children
            .split_whitespace()
            .next()
            .expect("strace runs the daemon")
            .parse()
            .unwrap();
        Some(Self { d, pid })
    }

    fn alive(&mut self) -> bool {
        self.d.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL; true when it was still running.
    fn kill(mut self) -> bool {
        let alive = self.alive();
        if alive {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        let _ = self.d.child.wait();
        alive
    }

    /// SIGTERM and the exit status (strace passes the daemon's on).
    fn stop(mut self) -> std::process::ExitStatus {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        }
        self.d.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // The process is ours while strace (its parent) has not exited.
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        // `Daemon`'s own drop then kills and reaps strace or the daemon.
    }
}

/// How long a command takes, per mode (index: with a daemon), so kills
/// land between "just started" and "probably done".
#[derive(Default)]
struct Timing {
    total: [Duration; 2],
    count: [u32; 2],
}

impl Timing {
    fn window(&self, with_daemon: bool) -> Duration {
        let i = usize::from(with_daemon);
        if self.count[i] == 0 {
            return Duration::from_millis(50);
        }
        (self.total[i] / self.count[i] * 3 / 2).max(Duration::from_millis(1))
    }

    fn add(&mut self, with_daemon: bool, d: Duration) {
        let i = usize::from(with_daemon);
        self.total[i] += d;
        self.count[i] += 1;
    }
}

/// What one trial did.
struct Outcome {
    with_daemon: bool,
    kind: Kill,
    /// The SIGKILL hit a running process (not one already finished, not
    /// a call number never reached).
    hit: bool,
    /// Where a kill inside a syscall landed.
    at: Option<String>,
}

/// One trial. Fields drop in order: the daemon before the sandbox.
struct Trial<'t> {
    daemon: Option<Served>,
    sb: Sandbox,
    rng: Rng,
    seed: u64,
    with_daemon: bool,
    timing: &'t mut Timing,
    /// `alloc` exited 0 (and no `release` of it was tried since).
    confirmed: BTreeSet<String>,
    /// `release` exited 0.
    released: BTreeSet<String>,
    workloads: u32,
    /// Processes whose `alloc` was refused (nobody killed it).
    refused: BTreeSet<u32>,
    /// strace's log of a kill inside a syscall.
    trace: tempfile::TempDir,
    /// Where that kill landed (see [`kill_point`]).
    at: Option<String>,
    /// What happened, for the failure message.
    log: Vec<String>,
}

impl Trial<'_> {
    fn ctx(&self, what: &str) -> String {
        format!(
            "seed {} ({}): {what}; ops: {}",
            self.seed,
            if self.with_daemon {
                "daemon"
            } else {
                "no daemon"
            },
            self.log.join(" | ")
        )
    }

    /// A fresh workload cgroup with a sleeper in it.
    fn workload(&mut self) -> String {
        let parent = self.sb.cgroot.join("workloads");
        let name = format!("workloads/w{}", self.workloads);
        self.workloads += 1;
        let dir = self.sb.cgroot.join(&name);
        for (d, from) in [(&parent, &self.sb.cgroot), (&dir, &parent)] {
            if d.exists() {
                continue;
            }
            fs::create_dir(d).unwrap();
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = fs::read_to_string(from.join(f)).unwrap();
                fs::write(d.join(f), v.trim()).unwrap();
            }
        }
        let pid = self.sb.sleeper();
        fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        name
    }

    fn next_op(&mut self) -> Op {
        self.next_op_for(None)
    }

    /// The next operation; for a kill inside `sched_setaffinity`, one that
    /// calls it (an `alloc` for a process).
    fn next_op_for(&mut self, kind: Option<Kill>) -> Op {
        if kind == Some(Kill::SetAffinity) {
            let cpus = self.rng.below(2) as u32;
            return Op::Alloc {
                cpus,
                target: Target::Pid(self.sb.sleeper()),
            };
        }
        if !self.confirmed.is_empty() && self.rng.below(3) == 0 {
            let ids: Vec<&String> = self.confirmed.iter().collect();
            return Op::Release(ids[self.rng.below(ids.len() as u64) as usize].clone());
        }
        if self.rng.below(8) == 0 {
            return Op::List;
        }
        let cpus = self.rng.below(2) as u32;
        let target = if self.rng.below(2) == 0 {
            Target::Pid(self.sb.sleeper())
        } else {
            Target::Cgroup(self.workload())
        };
        Op::Alloc { cpus, target }
    }

    fn command(&self, op: &Op) -> Command {
        let args = op.args();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = self.sb.griffin(&argv);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Books what an exit says: an `alloc` that exited 0 is confirmed, a
    /// `release` that exited 0 is released, one that did not may or may
    /// not have happened.
    fn book(&mut self, op: &Op, out: &Output) {
        let ok = out.status.success();
        self.log.push(format!(
            "{} -> {}",
            op.args().join(" "),
            match (ok, out.status.signal()) {
                (true, _) => "0".to_owned(),
                (false, Some(s)) => format!("signal {s}"),
                (false, None) => format!(
                    "exit {:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }
        ));
        match op {
            Op::Alloc { .. } if ok => {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{}", self.ctx(&format!("alloc output: {e}"))));
                self.confirmed.insert(v["id"].as_str().unwrap().to_owned());
            }
            Op::Release(id) => {
                self.confirmed.remove(id);
                if ok {
                    self.released.insert(id.clone());
                }
            }
            _ => {}
        }
    }

    /// An operation nobody kills: it must work (an exclusive `alloc` may be
    /// refused only when no CPU can be had).
    fn run(&mut self, op: &Op) {
        let t = Instant::now();
        let out = self.command(op).output().unwrap();
        self.timing.add(self.with_daemon, t.elapsed());
        self.book(op, &out);
        if out.status.success() {
            return;
        }
        if let Op::Alloc { cpus: 1, target } = op {
            let taken: usize = self
                .sb
                .allocs()
                .iter()
                .map(|a| a["cpus"].as_array().unwrap().len())
                .sum();
            let n = griffin_devices::parse::cpulist(&online()).unwrap().len();
            if taken + 1 >= n {
                // The shared pool keeps one CPU.
                match target {
                    Target::Pid(p) => {
                        self.refused.insert(*p);
                    }
                    Target::Cgroup(c) => {
                        let procs = fs::read_to_string(self.sb.cgroot.join(c).join("cgroup.procs"))
                            .unwrap();
                        self.refused
                            .extend(procs.lines().map(|l| l.parse::<u32>().unwrap()));
                    }
                }
                return;
            }
        }
        panic!("{}", self.ctx("a command nobody killed failed"));
    }

    /// The operation with the trial's one SIGKILL.
    fn run_killed(&mut self, op: &Op, kind: Kill) -> bool {
        let delay = |rng: &mut Rng, window: Duration| {
            Duration::from_micros(rng.below(window.as_micros() as u64 + 1))
        };
        let window = self.timing.window(self.with_daemon);
        let (out, hit) = match kind {
            Kill::Client => {
                let child = self.command(op).spawn().unwrap();
                let d = delay(&mut self.rng, window);
                self.log.push(format!("kill after {d:?} of {window:?}"));
                std::thread::sleep(d);
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let out = child.wait_with_output().unwrap();
                let hit = out.status.signal() == Some(libc::SIGKILL);
                (out, hit)
            }
            Kill::Daemon => {
                let mut child = self.command(op).spawn().unwrap();
                std::thread::sleep(delay(&mut self.rng, window));
                let running = child.try_wait().unwrap().is_none();
                let killed = self.daemon.take().expect("a daemon").kill();
                (child.wait_with_output().unwrap(), running && killed)
            }
            _ => {
                let (syscall, max) = kind.syscall().unwrap();
                let n = 1 + self.rng.below(max);
                self.log.push(format!("kill at {syscall} #{n}"));
                let log = self.trace.path().join("strace");
                if self.with_daemon {
                    self.daemon.take().expect("a daemon").stop();
                    self.daemon = Served::start_traced(&self.sb, syscall, n, &log);
                    let mut hit = self.daemon.is_none();
                    if hit {
                        self.log.push("the daemon died starting".into());
                    }
                    let out = self.command(op).output().unwrap();
                    if let Some(d) = self.daemon.take() {
                        hit = d.stop().signal() == Some(libc::SIGKILL);
                    }
                    (out, hit)
                } else {
                    let args = op.args();
                    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                    let out = self
                        .sb
                        .griffin_killed_at(syscall, n as u32, &log, &argv)
                        .output()
                        .expect("strace (cargo xtask deps installs it)");
                    let hit = out.status.signal() == Some(libc::SIGKILL);
                    (out, hit)
                }
            }
        };
        let log = self.trace.path().join("strace");
        if hit && log.exists() {
            self.at = kill_point(&log);
        }
        self.log
            .push(format!("{kind:?} kill (hit: {hit}, at {:?})", self.at));
        self.book(op, &out);
        hit
    }

    /// The invariants, on griffin's list and on the kernel's files.
    fn check(&self, what: &str) {
        let ctx = self.ctx(what);
        // Griffin's list against the cgroups (no CPU twice, `griffin/*` is
        // the list, each allocation's cgroup and pid target on its CPUs).
        let list = self.sb.check_invariants(&ctx);
        let ids: BTreeSet<String> = list
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &self.confirmed {
            assert!(ids.contains(id), "{ctx}: confirmed allocation {id} lost");
        }
        for id in &self.released {
            assert!(!ids.contains(id), "{ctx}: released allocation {id} is back");
        }
        // The kernel's own view: exclusive cpusets pairwise disjoint.
        let all = griffin_devices::parse::cpulist(&online()).unwrap();
        let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
        for a in &list {
            if a["cpus"].as_array().unwrap().is_empty() {
                continue;
            }
            let id = a["id"].as_str().unwrap();
            let cg = self.sb.cgroot.join(a["cgroup"].as_str().unwrap());
            let live = fs::read_to_string(cg.join("cpuset.cpus")).unwrap();
            for c in griffin_devices::parse::cpulist(live.trim()).unwrap().iter() {
                if let Some(other) = owner.insert(c, id) {
                    panic!("{ctx}: CPU {c} in the cgroups of {other} and {id}");
                }
            }
        }
        let pool =
            griffin_devices::CpuList::from_ids(all.iter().filter(|c| !owner.contains_key(c)))
                .to_string();
        // Every process of the trial: on its allocation's CPUs, or free.
        let root = self
            .sb
            .cgroot
            .strip_prefix(CPUSET)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for child in &self.sb.children {
            let pid = child.id();
            let cg = fs::read_to_string(format!("/proc/{pid}/cpuset")).unwrap();
            // Relative to the sandbox; `None` outside it (where the test
            // started the process).
            let rel = cg
                .trim()
                .strip_prefix(&format!("/{root}"))
                .map(|r| r.trim_start_matches('/').to_owned());
            let allowed = cpus_allowed(pid);
            let managing = list.iter().find(|a| {
                a["target"]["pid"].as_u64() == Some(u64::from(pid))
                    || (rel.is_some() && a["target"]["cgroup"].as_str() == rel.as_deref())
            });
            match managing {
                Some(a) => {
                    let rel = rel.unwrap_or_else(|| {
                        panic!(
                            "{ctx}: process {pid} of {} outside the sandbox: {cg}",
                            a["id"]
                        )
                    });
                    let want = if a["cpus"].as_array().unwrap().is_empty() {
                        pool.clone()
                    } else {
                        cpulist(&a["cpus"])
                    };
                    assert_eq!(
                        allowed, want,
                        "{ctx}: process {pid} in {rel}, of {}",
                        a["id"]
                    );
                    if a["target"]["cgroup"].is_string() {
                        let live =
                            fs::read_to_string(self.sb.cgroot.join(&rel).join("cpuset.cpus"))
                                .unwrap();
                        assert_eq!(live.trim(), want, "{ctx}: cgroup {rel} of {}", a["id"]);
                    } else {
                        assert_eq!(rel, a["cgroup"].as_str().unwrap(), "{ctx}: process {pid}");
                    }
                }
                None => {
                    assert!(
                        !rel.as_deref().is_some_and(|r| r.starts_with("griffin")),
                        "{ctx}: process {pid} of no allocation left in {rel:?}"
                    );
                    // A refusal changes nothing. (A released target stays
                    // on the shared pool of its release; one of a killed
                    // `alloc` may be anywhere outside `griffin/`.)
                    if self.refused.contains(&pid) {
                        assert_eq!(
                            allowed,
                            all.to_string(),
                            "{ctx}: process {pid} (in {rel:?}) of a refused alloc confined"
                        );
                    }
                }
            }
        }
    }
}

fn trial(seed: u64, timing: &mut Timing) -> Outcome {
    let mut rng = Rng(seed);
    let with_daemon = rng.below(2) == 0;
    let kinds: &[Kill] = if with_daemon {
        &[Kill::Client, Kill::Daemon, Kill::SetAffinity, Kill::Write]
    } else {
        &[Kill::Client, Kill::SetAffinity, Kill::Write]
    };
    let kind = rng.pick(kinds);
    let sb = Sandbox::new(&format!("kill-{seed:x}"));
    let daemon = with_daemon.then(|| Served::start(&sb));
    let mut t = Trial {
        daemon,
        sb,
        rng,
        seed,
        with_daemon,
        timing,
        confirmed: BTreeSet::new(),
        released: BTreeSet::new(),
        workloads: 0,
        refused: BTreeSet::new(),
        trace: tempfile::tempdir().unwrap(),
        at: None,
        log: Vec::new(),
    };
    for _ in 0..t.rng.below(5) {
        let op = t.next_op();
        t.run(&op);
    }
    let op = t.next_op_for(Some(kind));
    let hit = t.run_killed(&op, kind);
    if with_daemon && t.daemon.as_mut().is_none_or(|d| !d.alive()) {
        t.daemon = None;
        t.daemon = Some(Served::start(&t.sb));
    }
    t.check("after the kill");
    t.sb.commands_work(&t.ctx("commands after the kill"));
    for _ in 0..2 {
        let op = t.next_op();
        t.run(&op);
    }
    t.check("after the commands");
    if let Some(d) = t.daemon.take() {
        let status = d.stop();
        assert!(status.success(), "{}: {status}", t.ctx("daemon SIGTERM"));
    }
    if std::env::var_os("GRIFFIN_KILL_VERBOSE").is_some() {
        eprintln!("{}", t.ctx("passed"));
    }
    Outcome {
        with_daemon,
        kind,
        hit,
        at: t.at.take(),
    }
}

/// The call an strace log (`-y`) shows killed: the last traced call left
/// unfinished (`= ?`) before `+++ killed by SIGKILL +++`, by what it wrote
/// to: "sched_setaffinity", "write cgroup cpuset.cpus", "write checkpoint",
/// "write socket" (the control socket or HTTP), "write pipe" (stdout or
/// stderr) or "write <path>".
fn kill_point(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    if !text.contains("+++ killed by SIGKILL") {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.iter().rposition(|l| l.trim_end().ends_with("= ?"))?;
    let mut line = lines[last];
    // A call another thread interrupted: `PID <... write resumed>) = ?`,
    // begun on an earlier line `PID write(…<unfinished ...>`.
    if line.contains(" resumed>") {
        let pid = line.split_whitespace().next()?;
        line = lines[..last]
            .iter()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(pid) && l.contains("<unfinished"))?;
    }
    if line.contains("sched_setaffinity(") {
        return Some("sched_setaffinity".into());
    }
    let file = line.split_once('<')?.1.split_once('>')?.0;
    Some(if file.starts_with(CPUSET) {
        format!("write cgroup {}", file.rsplit('/').next().unwrap_or(file))
    } else if file.contains("/checkpoint") {
        "write checkpoint".into()
    } else if file.starts_with("socket:") || file.starts_with("UNIX") || file.starts_with("TCP") {
        "write socket".into()
    } else if file.starts_with("pipe:") {
        "write pipe".into()
    } else {
        format!("write {file}")
    })
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.parse().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")))
}

#[test]
fn sigkill_campaign_loses_doubles_and_wedges_nothing() {
    let trials = env_u64("GRIFFIN_KILL_TRIALS").unwrap_or(40);
    let seed = env_u64("GRIFFIN_KILL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("kill campaign: seed {seed}, {trials} trials");
    let started = Instant::now();
    let mut timing = Timing::default();
    let mut kills: BTreeMap<(bool, Kill), (u32, u32)> = BTreeMap::new();
    let mut broken: Vec<(u64, String)> = Vec::new();
    let mut points: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..trials {
        let s = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trial(s, &mut timing))) {
            Ok(o) => {
                let e = kills.entry((o.with_daemon, o.kind)).or_default();
                e.0 += 1;
                e.1 += u32::from(o.hit);
                if let Some(at) = o.at {
                    *points.entry(at).or_default() += 1;
                }
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("trial {i} broke; replay: GRIFFIN_KILL_SEED={s} GRIFFIN_KILL_TRIALS=1");
                broken.push((s, msg));
            }
        }
    }
    let ran: u32 = kills.values().map(|k| k.0).sum();
    let hits: u32 = kills.values().map(|k| k.1).sum();
    let with: u32 = kills.iter().filter(|(k, _)| k.0).map(|(_, v)| v.0).sum();
    eprintln!(
        "kill campaign: {trials} trials ({ran} passed, {} broken) in {:.1?}: \
         {with} with a daemon, {} without; {hits} kills hit a running process",
        broken.len(),
        started.elapsed(),
        ran - with
    );
    for ((d, k), (n, h)) in &kills {
        let mode = if *d { "daemon" } else { "no daemon" };
        eprintln!("  {mode:>9} {k:?}: {n} trials, {h} hit");
    }
    for (at, n) in &points {
        eprintln!("  killed inside {at}: {n}");
    }
    for (s, msg) in &broken {
        eprintln!("broken: GRIFFIN_KILL_SEED={s}: {msg}");
    }
    assert!(broken.is_empty(), "{} trials broke (above)", broken.len());
    assert!(
        hits > 0,
        "no kill hit a running process (seed {seed}): the campaign tested nothing"
    );
}
