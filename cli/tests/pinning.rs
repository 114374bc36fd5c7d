//! CPU pinning on the real kernel of this machine: cgroup v1 cpuset at
//! `/sys/fs/cgroup/cpuset` (cgroup v2 cpuset is proven in the guest test
//! bed). Each test works below its own cgroup root, removed by a guard even
//! when the test fails, and drives the real `griffin` binary.
//!
//! These tests need root and a cpuset hierarchy, which CI has; without them
//! they fail (never skip).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod cli_common;

const CPUSET: &str = "/sys/fs/cgroup/cpuset";

/// A private cgroup root below the v1 cpuset hierarchy, plus a state
/// directory; both removed on drop (processes moved out first).
struct Sandbox {
    cgroot: PathBuf,
    state: tempfile::TempDir,
    children: Vec<Child>,
}

impl Sandbox {
    fn new(name: &str) -> Self {
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

    fn griffin(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_griffin"));
        c.args(args)
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--cgroup-root")
            .arg(&self.cgroot);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.griffin(args).output().unwrap();
        assert!(
            out.status.success(),
            "griffin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn allocs(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["allocs", "--json"])).unwrap();
        v.as_array().unwrap().clone()
    }

    fn sleeper(&mut self) -> u32 {
        let c = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = c.id();
        self.children.push(c);
        pid
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
fn remove_tree(dir: &Path) -> std::io::Result<()> {
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

fn cpus_allowed(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn online() -> String {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .unwrap()
        .trim()
        .to_owned()
}

fn cpulist(v: &serde_json::Value) -> String {
    let ids: Vec<u32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as u32)
        .collect();
    griffin_devices::CpuList::from_ids(ids).to_string()
}

#[test]
fn pins_a_real_process_and_releases_it() {
    let mut sb = Sandbox::new("pid");
    let pid = sb.sleeper();
    let out = sb.ok(&["alloc", "--cpus", "1", "--pid", &pid.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["id", "cpus", "mems", "devices", "reasons"] {
        assert!(v.get(key).is_some(), "JSON lacks {key}: {v}");
    }
    let cpus = cpulist(&v["cpus"]);
    assert_eq!(cpus.split(',').count(), 1);
    // The kernel agrees: the process may run only there.
    assert_eq!(cpus_allowed(pid), cpus);
    let cg = sb.cgroot.join(v["cgroup"].as_str().unwrap());
    assert_eq!(
        fs::read_to_string(cg.join("cpuset.cpus")).unwrap().trim(),
        cpus
    );
    assert!(fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap()
        .lines()
        .any(|l| l == pid.to_string()));
    sb.ok(&["release", v["id"].as_str().unwrap()]);
    assert_eq!(cpus_allowed(pid), online());
    assert!(!cg.exists());
    assert!(sb.allocs().is_empty());
}

#[test]
fn shared_consumers_follow_the_shared_pool() {
    let mut sb = Sandbox::new("shared");
    // A workload cgroup in the shared pool, with a process in it.
    let shared_cg = sb.cgroot.join("workloads/shared");
    fs::create_dir_all(&shared_cg).unwrap();
    let pid = sb.sleeper();
    sb.ok(&["alloc", "--cpus", "0", "--cgroup", "workloads/shared"]);
    fs::write(shared_cg.join("cgroup.procs"), pid.to_string()).unwrap();
    assert_eq!(cpus_allowed(pid), online());
    // An exclusive allocation shrinks the pool; the shared workload loses that CPU.
    let v: serde_json::Value =
        serde_json::from_str(&sb.ok(&["alloc", "--cpus", "1", "--json"])).unwrap();
    let excl = cpulist(&v["cpus"]);
    let allowed = cpus_allowed(pid);
    assert!(
        !allowed.split(',').any(|c| c == excl),
        "shared {allowed} still has exclusive {excl}"
    );
    assert_eq!(
        fs::read_to_string(shared_cg.join("cpuset.cpus"))
            .unwrap()
            .trim(),
        allowed
    );
    sb.ok(&["release", v["id"].as_str().unwrap()]);
    assert_eq!(cpus_allowed(pid), online());
    // Asking for more than the node has is refused, and nothing changes.
    let before = sb.allocs();
    let out = sb.griffin(&["alloc", "--cpus", "64"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected"));
    assert_eq!(sb.allocs().len(), before.len());
}

// The test prints its seed, so a failure can be replayed with
// GRIFFIN_TEST_SEED.
use griffin_tests::Rng;

#[test]
fn sigkill_at_random_points_loses_and_doubles_nothing() {
    let sb = Sandbox::new("kill");
    let seed = std::env::var("GRIFFIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    // What we know for sure: confirmed present, confirmed released.
    let mut confirmed: BTreeSet<String> = BTreeSet::new();
    let mut released: BTreeSet<String> = BTreeSet::new();
    let mut killed = 0;
    let rounds = 300;
    // How long one command takes here; kills land anywhere in twice that.
    let t = Instant::now();
    sb.allocs();
    let window = (t.elapsed().as_micros() as u64 * 2).max(1000);
    for round in 0..rounds {
        let known: Vec<String> = sb
            .allocs()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        let args: Vec<String> = if known.is_empty() || rng.next_u64() % 2 == 0 {
            let cpus = if rng.next_u64() % 3 == 0 { "0" } else { "1" };
            vec![
                "alloc".into(),
                "--cpus".into(),
                cpus.into(),
                "--json".into(),
            ]
        } else {
            vec![
                "release".into(),
                known[(rng.next_u64() % known.len() as u64) as usize].clone(),
            ]
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = sb
            .griffin(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill somewhere between "just started" and "probably done".
        std::thread::sleep(Duration::from_micros(rng.next_u64() % window));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            if args[0] == "alloc" {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                confirmed.insert(v["id"].as_str().unwrap().to_owned());
            } else {
                confirmed.remove(&args[1]);
                released.insert(args[1].clone());
            }
        } else {
            killed += 1;
            // A killed release may or may not have taken effect.
            if args[0] == "release" {
                confirmed.remove(&args[1]);
            }
        }
        // Restart (reconcile) and check.
        let list = sb.allocs();
        let ids: BTreeSet<String> = list
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), list.len(), "round {round}: an id twice");
        for id in &confirmed {
            assert!(
                ids.contains(id),
                "round {round} (seed {seed}): confirmed allocation {id} lost"
            );
        }
        for id in &released {
            assert!(
                !ids.contains(id),
                "round {round} (seed {seed}): released allocation {id} is back"
            );
        }
        let mut owner: BTreeMap<u64, String> = BTreeMap::new();
        for a in &list {
            let id = a["id"].as_str().unwrap();
            for c in a["cpus"].as_array().unwrap() {
                if let Some(other) = owner.insert(c.as_u64().unwrap(), id.to_owned()) {
                    panic!("round {round} (seed {seed}): CPU {c} in {other} and {id}");
                }
            }
            // State matches the cgroups.
            let cg = sb.cgroot.join(a["cgroup"].as_str().unwrap());
            let live = fs::read_to_string(cg.join("cpuset.cpus")).unwrap_or_default();
            if !a["cpus"].as_array().unwrap().is_empty() {
                assert_eq!(
                    live.trim(),
                    cpulist(&a["cpus"]),
                    "round {round}: cgroup of {id}"
                );
            }
        }
        let griffin_dir = sb.cgroot.join("griffin");
        if griffin_dir.exists() {
            for e in fs::read_dir(&griffin_dir).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    assert!(
                        ids.contains(&name),
                        "round {round} (seed {seed}): orphan cgroup griffin/{name}"
                    );
                }
            }
        }
    }
    eprintln!("{rounds} rounds, {killed} commands killed mid-flight");
    assert!(
        killed > 0,
        "the kill timing never hit a running command (seed {seed})"
    );
    assert!(killed < rounds, "every command was killed (seed {seed})");
}

#[test]
fn corrupt_checkpoint_is_kept_aside_and_rebuilt_from_cgroups() {
    let sb = Sandbox::new("corrupt");
    let v: serde_json::Value =
        serde_json::from_str(&sb.ok(&["alloc", "--cpus", "1", "--json"])).unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    let cp = sb.state.path().join("checkpoint");
    // Truncate it, as a torn write on a broken disk would.
    let bytes = fs::read(&cp).unwrap();
    fs::write(&cp, &bytes[..bytes.len() / 2]).unwrap();
    let out = sb.griffin(&["allocs", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "start must not be refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt"), "{err}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![id.as_str()],
        "the allocation survives through its cgroup"
    );
    assert_eq!(cpulist(&list[0]["cpus"]), cpulist(&v["cpus"]));
    let kept: Vec<_> = fs::read_dir(sb.state.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoint.corrupt-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the bad file is kept for inspection");
    // And the rebuilt checkpoint is good again.
    assert!(sb.griffin(&["allocs"]).output().unwrap().status.success());
}

#[test]
fn memory_policy_binds_the_calling_thread() {
    // On a thread of its own: set_mempolicy applies to the calling thread.
    std::thread::spawn(|| {
        griffin_runtime::enforce::bind_current_memory(&[0]).unwrap();
        let mut mode: libc::c_int = -1;
        let mut mask: libc::c_ulong = 0;
        // SAFETY: `mode` and `mask` are valid out-pointers; `maxnode` (64)
        // fits in the one `c_ulong` of `mask`; addr 0 and flags 0 ask for
        // the thread's policy.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &mut mode as *mut libc::c_int,
                &mut mask as *mut libc::c_ulong,
                64 as libc::c_ulong,
                0usize,
                0 as libc::c_ulong,
            )
        };
        assert_eq!(rc, 0, "get_mempolicy: {}", std::io::Error::last_os_error());
        assert_eq!(mode, 2, "MPOL_BIND");
        assert_eq!(mask, 1, "node 0 only");
    })
    .join()
    .unwrap();
    // A node that does not exist is refused with the process named.
    let err =
        std::thread::spawn(|| griffin_runtime::enforce::bind_current_memory(&[63]).unwrap_err())
            .join()
            .unwrap();
    assert!(err.to_string().contains("set_mempolicy"), "{err}");
}

/// The daemon on the live node, with the CLI going through its control
/// socket: allocations made through it are enforced and visible on the
/// score endpoint; after SIGKILL the socket is stale and the CLI acts on the
/// state directory itself; a restarted daemon finds the allocation intact,
/// replaces the stale socket, refuses a second daemon on the same state, and
/// exits cleanly on SIGTERM, removing its socket.
#[test]
fn cli_goes_through_the_daemon_which_survives_sigkill_and_exits_on_sigterm() {
    let mut sb = Sandbox::new("daemon");
    let start = |sb: &Sandbox| {
        cli_common::Daemon::start(&[
            std::ffi::OsStr::new("--state-dir"),
            sb.state.path().as_os_str(),
            std::ffi::OsStr::new("--cgroup-root"),
            sb.cgroot.as_os_str(),
        ])
    };
    let sock = sb.state.path().join("control.sock");
    let via_daemon = |sb: &Sandbox, args: &[&str]| -> (bool, String) {
        let out = sb
            .griffin(&[&["--log", "info"], args].concat())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "griffin {args:?}: {err}");
        (
            err.contains("via the daemon"),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let cpus = griffin_devices::parse::cpulist(online.trim())
        .unwrap()
        .len() as u64;
    let d = start(&sb);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600,
        "control socket is root only"
    );
    assert_eq!(
        d.json("GET", "/v1/node", "")["cpus"]["free_exclusive"],
        cpus
    );
    let pid = sb.sleeper();
    let (went, out) = via_daemon(
        &sb,
        &["alloc", "--cpus", "1", "--pid", &pid.to_string(), "--json"],
    );
    assert!(went, "alloc went through the daemon");
    let a: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Enforced by the daemon: the process is pinned in the sandbox's cgroup.
    assert_eq!(cpus_allowed(pid), cpulist(&a["cpus"]));
    let cg = sb.cgroot.join(a["cgroup"].as_str().unwrap());
    assert!(fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap()
        .contains(&pid.to_string()));
    let node = d.json("GET", "/v1/node", "");
    assert_eq!(node["allocations"], 1);
    assert_eq!(node["cpus"]["free_exclusive"], cpus - 1);
    let score_before = d.json("POST", "/v1/score", r#"{"cpus": 1}"#)["score"].clone();
    // Mutations are not on TCP.
    assert_eq!(d.request("POST", "/v1/alloc", br#"{"cpus": 1}"#).0, 404);

    drop(d); // SIGKILL: the socket file stays, nobody answers.
    assert!(sock.exists());
    let (went, out) = via_daemon(&sb, &["allocs", "--json"]);
    assert!(!went, "a stale socket falls back to the state directory");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["id"],
        a["id"]
    );

    let d = start(&sb);
    let node = d.json("GET", "/v1/node", "");
    assert_eq!(node["allocations"], 1, "{node}");
    assert_eq!(node["cpus"]["free_exclusive"], cpus - 1);
    assert_eq!(
        d.json("POST", "/v1/score", r#"{"cpus": 1}"#)["score"],
        score_before
    );
    let (went, out) = via_daemon(&sb, &["allocs", "--json"]);
    assert!(went);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], a["id"]);
    // A second daemon on the same state directory is refused.
    let second = cli_common::daemon_command()
        .arg("--state-dir")
        .arg(sb.state.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another griffin daemon"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let (went, _) = via_daemon(&sb, &["release", a["id"].as_str().unwrap()]);
    assert!(went);
    assert_eq!(d.json("GET", "/v1/node", "")["allocations"], 0);
    assert!(d.terminate().success(), "SIGTERM is a clean exit");
    assert!(!sock.exists(), "the socket is removed on a clean exit");
}

/// Only root may use the control socket: with the file and directory opened
/// up by hand, an unprivileged peer is still refused on its credentials.
#[test]
fn control_socket_refuses_unprivileged_peers() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new("control-perm");
    let d = cli_common::Daemon::start(&[
        std::ffi::OsStr::new("--state-dir"),
        sb.state.path().as_os_str(),
        std::ffi::OsStr::new("--cgroup-root"),
        sb.cgroot.as_os_str(),
    ]);
    let sock = sb.state.path().join("control.sock");
    fs::set_permissions(sb.state.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_griffin"))
        .args(["allocs", "--state-dir"])
        .arg(sb.state.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("permission denied: uid 65534 is not root"),
        "{err}"
    );
    // Root still gets through.
    assert!(sb.ok(&["allocs", "--json"]).trim() == "[]");
    drop(d);
}

/// D4: a `lock` link in the state directory to a missing path made Griffin
/// create that file. Links are never followed there, and a state directory
/// others may write to is refused by the CLI and the daemon, naming it.
#[test]
fn state_directory_links_and_open_modes_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("statedir");
    let other = tempfile::tempdir().unwrap();
    let victim = other.path().join("created-through-a-link");
    let lock = sb.state.path().join("lock");
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let out = sb.griffin(&["allocs", "--no-daemon"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "state file {} is unusable (a symbolic link, not followed)",
            lock.display()
        )),
        "{err}"
    );
    assert!(!victim.exists(), "the link was followed");
    fs::remove_file(&lock).unwrap();

    fs::set_permissions(sb.state.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let want = format!(
        "state directory {} is unsafe: writable by group or others (mode 0777)",
        sb.state.path().display()
    );
    let out = sb.griffin(&["allocs", "--no-daemon"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&want), "{err}");
    let out = cli_common::daemon_command()
        .arg("--state-dir")
        .arg(sb.state.path())
        .arg("--cgroup-root")
        .arg(&sb.cgroot)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&want), "{err}");
    fs::set_permissions(sb.state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(sb.ok(&["allocs", "--json"]).trim(), "[]");
}
