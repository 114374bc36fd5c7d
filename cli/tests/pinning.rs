//! CPU pinning on the real kernel of this machine: cgroup v1 cpuset at
//! `/sys/fs/cgroup/cpuset` (cgroup v2 cpuset is proven in the guest test
//! bed). Each test works below its own cgroup root, removed by a guard even
//! when the test fails, and drives the real `griffin` binary.
//!
//! These tests need root and a cpuset hierarchy, which CI has; without them
//! they fail (never skip).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod cli_common;

use cli_common::sandbox::{cpulist, cpus_allowed, online, Sandbox};

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
        let args: Vec<String> = if known.is_empty() || rng.next_u64().is_multiple_of(2) {
            let cpus = if rng.next_u64().is_multiple_of(3) {
                "0"
            } else {
                "1"
            };
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
    let start = |sb: &Sandbox| sb.daemon();
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
    let d = sb.daemon();
    let sock = sb.state.path().join("control.sock");
    fs::set_permissions(sb.state.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let out = cli_common::griffin()
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

/// Issue 14 D2, the reproducer: A in the shared pool, B on one CPU, then an
/// exclusive allocation for C killed at its second `sched_setaffinity`.
/// Before: it was decided and saved (taking the last shared CPU), and every
/// later command exited 1 with `cannot set CPU affinity for process A:
/// EINVAL`. Now it is refused (it would empty the shared pool) and every
/// command works.
#[test]
fn reconcile_d2_a_kill_inside_sched_setaffinity_wedges_nothing() {
    let mut sb = Sandbox::new("reconcile-d2");
    let cpus = griffin_devices::parse::cpulist(&online()).unwrap().len();
    let (a, b, c) = (sb.sleeper(), sb.sleeper(), sb.sleeper());
    sb.alloc(&["--cpus", "0", "--pid", &a.to_string()]);
    // B takes all but one CPU: the shared pool keeps one.
    let n = (cpus - 1).to_string();
    let bv = sb.alloc(&["--cpus", &n, "--pid", &b.to_string()]);
    let out = sb
        .griffin_killed_at(
            "sched_setaffinity",
            2,
            Path::new("/dev/null"),
            &["alloc", "--cpus", "1", "--pid", &c.to_string()],
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("keeps at least one"), "{err}");
    let list = sb.check_invariants("after the killed alloc");
    assert_eq!(list.len(), 2);
    sb.commands_work("after the killed alloc");
    sb.ok(&["release", bv["id"].as_str().unwrap()]);
    sb.check_invariants("after releasing B");
}

/// Issue 14 D2, the state an older Griffin left behind (C holding the last
/// shared CPU, A in the shared pool, on the real kernel): an empty shared
/// pool is a state, not an error. Every command works; A keeps its CPUs
/// until C's is released, then follows the shared pool.
#[test]
fn reconcile_d2_an_empty_shared_pool_left_by_an_older_griffin_opens() {
    use griffin_runtime::alloc::{Placement, Request};
    use griffin_runtime::checkpoint::Target;
    let mut sb = Sandbox::new("reconcile-d2-old");
    let cpus = griffin_devices::parse::cpulist(&online()).unwrap();
    let (a, b, c) = (sb.sleeper(), sb.sleeper(), sb.sleeper());
    sb.alloc(&["--cpus", "0", "--pid", &a.to_string()]);
    let n = (cpus.len() - 1).to_string();
    let bv = sb.alloc(&["--cpus", &n, "--pid", &b.to_string()]);
    let taken: BTreeSet<u64> = bv["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let last = cpus
        .iter()
        .find(|c| !taken.contains(&u64::from(*c)))
        .unwrap();
    // What the old binary saved and applied before it was killed.
    let store = sb.store();
    let mut cp = store.load().unwrap().unwrap();
    let placement = Placement {
        cpus: griffin_runtime::cpuset::CpuSet::from_ids([last]),
        mems: vec![0],
        devices: vec![],
        memory_bytes: 0,
        reasons: vec![],
        cost: 0,
    };
    cp.state
        .commit(
            "a000009".into(),
            Request {
                cpus: 1,
                ..Default::default()
            },
            placement,
        )
        .unwrap();
    cp.targets.insert("a000009".into(), Target::Pid(c));
    store.save(&cp).unwrap();
    let cg = sb.cgroot.join("griffin/a000009");
    fs::create_dir(&cg).unwrap();
    fs::write(cg.join("cpuset.mems"), "0").unwrap();
    fs::write(cg.join("cpuset.cpus"), last.to_string()).unwrap();
    fs::write(cg.join("cgroup.procs"), c.to_string()).unwrap();

    let (out, err) = sb.ok_err(&["allocs", "--json"]);
    assert!(err.contains("shared pool is empty"), "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(sb
        .fails(&["alloc", "--cpus", "0"])
        .contains("shared pool is empty"));
    assert_eq!(cpus_allowed(c), last.to_string());
    sb.ok(&["release", "a000009"]);
    sb.check_invariants("after releasing C");
    sb.commands_work("after releasing C");
}

/// A kill at each `sched_setaffinity` of an alloc and of a release (pinning
/// the new process, then the shared consumer): reconcile converges, every
/// command works afterwards.
#[test]
fn reconcile_kills_inside_sched_setaffinity_converge() {
    let mut sb = Sandbox::new("reconcile-kills");
    let a = sb.sleeper();
    sb.alloc(&["--cpus", "0", "--pid", &a.to_string()]);
    for call in 1..=3 {
        let c = sb.sleeper();
        let out = sb
            .griffin_killed_at(
                "sched_setaffinity",
                call,
                Path::new("/dev/null"),
                &["alloc", "--cpus", "1", "--pid", &c.to_string()],
            )
            .output()
            .unwrap();
        let ctx = format!("alloc killed at sched_setaffinity #{call}");
        let list = sb.check_invariants(&ctx);
        if out.status.success() {
            assert!(call > 2, "{ctx}: not killed");
        }
        sb.commands_work(&ctx);
        let Some(id) = list
            .iter()
            .find(|x| x["target"]["pid"] == u64::from(c))
            .map(|x| x["id"].as_str().unwrap().to_owned())
        else {
            continue;
        };
        let out = sb
            .griffin_killed_at(
                "sched_setaffinity",
                call,
                Path::new("/dev/null"),
                &["release", &id],
            )
            .output()
            .unwrap();
        let ctx = format!("release killed at sched_setaffinity #{call}");
        let list = sb.check_invariants(&ctx);
        if out.status.success() {
            assert!(call > 2, "{ctx}: not killed");
        }
        assert!(list.iter().all(|x| x["id"] != id.as_str()), "{ctx}: back");
        sb.commands_work(&ctx);
    }
}

/// Issue 14 D10: the same process twice is refused, naming the first
/// allocation (before: both were made, the first kept its CPU with an
/// empty cgroup).
#[test]
fn reconcile_d10_the_same_pid_twice_is_refused() {
    let mut sb = Sandbox::new("reconcile-pid-twice");
    let p = sb.sleeper().to_string();
    let first = sb.alloc(&["--cpus", "0", "--pid", &p]);
    let err = sb.fails(&["alloc", "--cpus", "1", "--pid", &p]);
    assert!(err.contains(first["id"].as_str().unwrap()), "{err}");
    assert_eq!(sb.check_invariants("pid twice").len(), 1);
}

/// Issue 14 D10: Griffin's own parent as a target (before: accepted, and
/// the next exclusive allocation failed with EBUSY), and paths leaving the
/// cgroup root, are refused; exclusive allocations still work.
#[test]
fn reconcile_d10_targets_in_griffin_or_outside_the_root_are_refused() {
    let sb = Sandbox::new("reconcile-target");
    for t in [
        "griffin",
        "griffin/a000000",
        "../x",
        "/sys/fs/cgroup/cpuset",
    ] {
        let err = sb.fails(&["alloc", "--cpus", "0", "--cgroup", t]);
        assert!(err.contains("rejected"), "{t}: {err}");
    }
    sb.alloc(&["--cpus", "0"]);
    sb.alloc(&["--cpus", "1"]);
    sb.check_invariants("after refused targets");
}

/// Issue 14 D4/D10: a pending cleanup `"../../x"` in the checkpoint (before:
/// every command exited 1) is reported and dropped; the rest goes on.
#[test]
fn reconcile_d10_a_pending_cleanup_escaping_the_root_is_dropped() {
    use griffin_runtime::checkpoint::Target;
    let sb = Sandbox::new("reconcile-escape");
    let e = sb.alloc(&["--cpus", "1"]);
    let store = sb.store();
    let mut cp = store.load().unwrap().unwrap();
    cp.pending_cleanup.push(("../../x".into(), Target::None));
    cp.pending_cleanup
        .push(("a000042".into(), Target::Cgroup("../../y".into())));
    store.save(&cp).unwrap();
    let (_, err) = sb.ok_err(&["allocs"]);
    let reported = err
        .lines()
        .filter(|l| l.starts_with("griffin: reconcile: dropped the pending cleanup"))
        .count();
    assert_eq!(reported, 2, "{err}");
    let list = sb.check_invariants("after dropping");
    assert_eq!(list[0]["id"], e["id"]);
    sb.commands_work("after dropping");
}

/// Issue 14 D10: both checkpoint files lost; the rebuild adopts the shared
/// consumer as shared (before: as the exclusive owner of the shared pool's
/// CPUs) and the exclusive one as exclusive.
#[test]
fn reconcile_d10_a_lost_checkpoint_tells_shared_from_exclusive() {
    let mut sb = Sandbox::new("reconcile-rebuild");
    let (a, b) = (sb.sleeper(), sb.sleeper());
    let s = sb.alloc(&["--cpus", "0", "--pid", &a.to_string()]);
    let e = sb.alloc(&["--cpus", "1", "--pid", &b.to_string()]);
    for f in ["checkpoint", "checkpoint.prev"] {
        fs::remove_file(sb.state.path().join(f)).unwrap();
    }
    let list = sb.check_invariants("rebuilt");
    let by_id = |id: &serde_json::Value| list.iter().find(|x| x["id"] == *id).unwrap().clone();
    assert_eq!(by_id(&s["id"])["cpus"], serde_json::json!([]));
    assert_eq!(by_id(&e["id"])["cpus"], e["cpus"]);
    assert_eq!(by_id(&s["id"])["target"]["pid"], u64::from(a));
    sb.commands_work("rebuilt");
}

/// Issue 14 D6: the score and the allocation agree on feasibility. Before:
/// after `alloc --cpus 2` on 2 CPUs, `{"cpus":0}` scored feasible but its
/// allocation failed with EINVAL.
#[test]
fn reconcile_d6_score_and_alloc_agree() {
    let sb = Sandbox::new("reconcile-d6");
    let d = sb.daemon();
    let cpus = griffin_devices::parse::cpulist(&online()).unwrap().len();
    for want in [cpus, cpus - 1, 1, 0, 0] {
        let shape = format!(r#"{{"cpus": {want}}}"#);
        let feasible = d.json("POST", "/v1/score", &shape)["feasible"] == true;
        let out = sb
            .griffin(&["alloc", "--cpus", &want.to_string()])
            .output()
            .unwrap();
        assert_eq!(
            feasible,
            out.status.success(),
            "{shape}: score says feasible={feasible}, alloc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sb.check_invariants("after the score checks");
    drop(d);
}

/// A pod's cgroup with a container cgroup below it, as a target (cgroup
/// v1): the container gets the allocation's CPUs too. Before: v1 refused
/// to shrink the pod past its container (EBUSY) and the allocation failed.
#[test]
fn reconcile_a_target_cgroup_with_children_is_confined_whole() {
    let mut sb = Sandbox::new("reconcile-pod");
    let pod = sb.cgroot.join("workloads/pod");
    let container = pod.join("c1");
    let mut dir = sb.cgroot.clone();
    for c in ["workloads", "pod", "c1"] {
        let parent = dir.clone();
        dir = dir.join(c);
        fs::create_dir(&dir).unwrap();
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let v = fs::read_to_string(parent.join(f)).unwrap();
            fs::write(dir.join(f), v.trim()).unwrap();
        }
    }
    let pid = sb.sleeper();
    fs::write(container.join("cgroup.procs"), pid.to_string()).unwrap();
    let a = sb.alloc(&["--cpus", "1", "--cgroup", "workloads/pod"]);
    let cpus = cpulist(&a["cpus"]);
    for cg in [&pod, &container] {
        let have = fs::read_to_string(cg.join("cpuset.cpus")).unwrap();
        assert_eq!(have.trim(), cpus, "{}", cg.display());
    }
    assert_eq!(cpus_allowed(pid), cpus);
    sb.check_invariants("pod confined");
    sb.ok(&["release", a["id"].as_str().unwrap()]);
    let have = fs::read_to_string(container.join("cpuset.cpus")).unwrap();
    assert_eq!(have.trim(), online());
    assert_eq!(cpus_allowed(pid), online());
}
