//! The e2e scenarios: each a named function on the running cluster that
//! returns what it saw (for the report) or an error saying what did not
//! happen. A scenario that needs an earlier one which failed is reported
//! as not run, which fails the run too.
//!
//! Adding one (the device-plugin scenarios of issue 16: registration and
//! allocatable, a pod scheduled through the extender with the Allocate
//! response applied, kubelet restart, devices and CPUs freed on pod
//! deletion): a function `fn(&mut Ctx) -> Result<String>` and a line in
//! [`SCENARIOS`].

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::cluster::{condition, http_get, wait_for, Cluster, GRIFFIN, KUBELET_RESERVED_CPUS};
use super::Timings;
use crate::image::Built;

/// What the scenarios work with.
pub(crate) struct Ctx<'a> {
    pub c: &'a mut Cluster,
    pub griffin: Built,
    pub busybox: Built,
    pub timings: &'a mut Timings,
}

/// One scenario's result.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub name: &'static str,
    pub outcome: Result<String>,
    pub took: Duration,
}

type Run = fn(&mut Ctx) -> Result<String>;

/// The scenarios in order: name, what it proves, the scenarios it needs,
/// the function.
pub(crate) const SCENARIOS: &[(&str, &str, &[&str], Run)] = &[
    (
        "griffin-ready",
        "issue 16 scenario 1: deploy/ applied, the DaemonSet pod becomes Ready, /healthz, /readyz and /v1/node answer on the node",
        &[],
        griffin_ready,
    ),
    (
        "griffin-not-privileged",
        "the Griffin container runs with exactly the capabilities deploy/ lists (not privileged, no privilege escalation)",
        &["griffin-ready"],
        not_privileged,
    ),
    (
        "rbac-least-privilege",
        "Griffin's service account may do exactly what deploy/10-rbac.yaml grants",
        &["griffin-ready"],
        rbac,
    ),
    (
        "kubelet-static-cpu",
        "side by side: a Guaranteed pod placed by the real kube-scheduler (through Griffin's extender) gets an exclusive CPU from the kubelet's static CPU manager",
        &["griffin-ready"],
        kubelet_static_cpu,
    ),
    (
        "griffin-pod-restart",
        "issue 16 scenario 5 (partial): Griffin's container SIGKILLed, then its pod deleted: the kubelet and the DaemonSet bring it back, /v1/node answers again, the checkpoint and running pods untouched",
        &["griffin-ready"],
        griffin_restart,
    ),
];

/// Runs the scenarios (those whose name contains `filter`, with what they
/// need).
pub(crate) fn run_all(ctx: &mut Ctx, filter: Option<&str>) -> Result<Vec<Outcome>> {
    let mut wanted: BTreeSet<&str> = SCENARIOS
        .iter()
        .filter(|s| filter.is_none_or(|f| s.0.contains(f)))
        .map(|s| s.0)
        .collect();
    if wanted.is_empty() {
        bail!(
            "no scenario matches {filter:?}; scenarios: {}",
            SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        );
    }
    for s in SCENARIOS.iter().rev() {
        if wanted.contains(s.0) {
            wanted.extend(s.2.iter().copied());
        }
    }
    let mut out: Vec<Outcome> = Vec::new();
    for (name, what, needs, f) in SCENARIOS {
        if !wanted.contains(name) {
            continue;
        }
        super::check_interrupted()?;
        eprintln!("e2e: scenario {name}: {what}");
        let t = Instant::now();
        let failed: Vec<&str> = needs
            .iter()
            .filter(|n| !out.iter().any(|o| o.name == **n && o.outcome.is_ok()))
            .copied()
            .collect();
        let outcome = if failed.is_empty() {
            ctx.c.check_alive().and_then(|()| f(ctx))
        } else {
            Err(anyhow::anyhow!(
                "not run: needs {}, which did not pass",
                failed.join(", ")
            ))
        };
        match &outcome {
            Ok(d) => eprintln!("e2e: scenario {name}: pass ({d})"),
            Err(e) => eprintln!("e2e: scenario {name}: FAIL: {e:#}"),
        }
        out.push(Outcome {
            name,
            outcome,
            took: t.elapsed(),
        });
    }
    Ok(out)
}

const NS: &str = "griffin";
const SELECTOR: &str = "app.kubernetes.io/name=griffin";

/// The Griffin pod that is not being deleted, if any.
fn griffin_pod(c: &Cluster) -> Result<Option<Value>> {
    let pods = c.get_json(&["-n", NS, "get", "pods", "-l", SELECTOR])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned())
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str().with_context(|| format!("no {what}"))
}

/// The host pid of a pod's first container (from containerd's tasks).
fn container_pid(c: &Cluster, pod: &Value) -> Result<u32> {
    let id = str_of(
        &pod["status"]["containerStatuses"][0]["containerID"],
        "containerID",
    )?;
    let id = id.strip_prefix("containerd://").unwrap_or(id);
    let tasks = c.ctr(&["tasks", "list"])?;
    tasks
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("containerd lists no task {id}"))
}

/// Waits for a Ready Griffin pod whose uid and restart count satisfy `ok`,
/// then for /v1/node to answer; returns the pod.
fn wait_griffin(c: &mut Cluster, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
    let pod = wait_for(what, Duration::from_secs(180), || {
        c.check_alive()?;
        Ok(griffin_pod(c)?.filter(|p| condition(p, "Ready") && ok(p)))
    })?;
    let node = c.node.clone();
    wait_for("/v1/node answering", Duration::from_secs(30), || {
        let (code, body) = http_get(GRIFFIN, "/v1/node")?;
        if code != 200 {
            bail!("/v1/node answered {code}: {body}");
        }
        let v: Value = serde_json::from_str(&body).context("/v1/node is not JSON")?;
        if !body.contains(&format!("\"{node}\"")) {
            bail!("/v1/node does not name node {node}: {v}");
        }
        Ok(Some(()))
    })?;
    Ok(pod)
}

fn griffin_ready(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let deploy = crate::workspace_root().join("deploy");
    let t = Instant::now();
    c.kubectl(&["apply", "-f", deploy.to_str().context("deploy path")?])?;
    let ds = c.get_json(&["-n", NS, "get", "daemonset", "griffin"])?;
    let image = str_of(
        &ds["spec"]["template"]["spec"]["containers"][0]["image"],
        "image",
    )?;
    if image != ctx.griffin.name {
        bail!(
            "deploy/30-daemonset.yaml names the image {image}, but cargo xtask image built {}",
            ctx.griffin.name
        );
    }
    let pod = wait_griffin(c, "the Griffin DaemonSet pod Ready", |_| true)?;
    let ready = t.elapsed();
    ctx.timings.add(
        "Griffin Ready (kubectl apply to pod Ready and /v1/node answering)",
        ready,
    );
    let (h, _) = http_get(GRIFFIN, "/healthz")?;
    let (r, _) = http_get(GRIFFIN, "/readyz")?;
    if h != 200 || r != 200 {
        bail!("/healthz answered {h}, /readyz {r}");
    }
    let (_, node) = http_get(GRIFFIN, "/v1/node")?;
    let v: Value = serde_json::from_str(&node)?;
    let name = str_of(&pod["metadata"]["name"], "pod name")?;
    let image_id = pod["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or("?");
    Ok(format!(
        "pod {name} Ready {:.1} s after kubectl apply (image {}, imageID {image_id}); /healthz 200, /readyz 200, /v1/node: {}",
        ready.as_secs_f64(),
        ctx.griffin.name,
        summarize_node(&v)
    ))
}

/// A short view of /v1/node for the report.
fn summarize_node(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 300 {
        s.truncate(300);
        s.push('…');
    }
    s
}

/// Linux capability numbers and names.
const CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability names of a `/proc/PID/status` mask line.
fn caps_of(status: &str, field: &str) -> Result<BTreeSet<String>> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .with_context(|| format!("no {field} in the process status"))?;
    let mask = u64::from_str_radix(hex.trim(), 16).context("a capability mask")?;
    Ok((0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| {
            CAPS.get(b as usize)
                .map_or_else(|| format!("cap{b}"), |n| (*n).to_owned())
        })
        .collect())
}

fn not_privileged(ctx: &mut Ctx) -> Result<String> {
    let c = &*ctx.c;
    let pod = griffin_pod(c)?.context("no Griffin pod")?;
    let sc = &pod["spec"]["containers"][0]["securityContext"];
    if sc["privileged"] == json!(true) {
        bail!("the Griffin container is privileged");
    }
    let wanted: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .context("the Griffin container adds no capabilities")?
        .iter()
        .filter_map(|v| v.as_str())
        .map(|s| s.trim_start_matches("CAP_").to_owned())
        .collect();
    let pid = container_pid(c, &pod)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let eff = caps_of(&status, "CapEff")?;
    let bnd = caps_of(&status, "CapBnd")?;
    if eff != wanted || bnd != wanted {
        bail!(
            "the Griffin process (pid {pid}) has effective {:?} and bounding {:?}, the DaemonSet lists {:?}",
            eff,
            bnd,
            wanted
        );
    }
    let nnp = status
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:"))
        .map(str::trim);
    if nnp != Some("1") {
        bail!("the Griffin process may gain privileges (NoNewPrivs {nnp:?})");
    }
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned();
    Ok(format!(
        "pid {pid}: uid {uid}, effective = bounding = {} (the DaemonSet's list), NoNewPrivs 1; the apiserver runs with --allow-privileged=false",
        eff.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

fn rbac(ctx: &mut Ctx) -> Result<String> {
    let c = &*ctx.c;
    let sa = "system:serviceaccount:griffin:griffin";
    let can = |args: &[&str]| -> Result<bool> {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend(["--as", sa]);
        // kubectl answers "no" with exit status 1: read the answer itself.
        let (_, out, err) = c.kubectl_raw(&a)?;
        match out.trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => bail!(
                "kubectl {}: answered {other:?} ({})",
                a.join(" "),
                err.trim()
            ),
        }
    };
    let allowed: &[&[&str]] = &[
        &["get", "nodes"],
        &["get", "pods", "--all-namespaces"],
        &["list", "pods", "--all-namespaces"],
        &["watch", "pods", "--all-namespaces"],
    ];
    let denied: &[&[&str]] = &[
        &["list", "nodes"],
        &["watch", "nodes"],
        &["update", "nodes"],
        &["patch", "nodes"],
        &["update", "nodes/status"],
        &["create", "pods"],
        &["delete", "pods"],
        &["update", "pods"],
        &["create", "pods/eviction"],
        &["get", "secrets", "--all-namespaces"],
        &["get", "configmaps", "-n", "kube-system"],
        &["create", "events"],
    ];
    let mut wrong = Vec::new();
    for a in allowed {
        if !can(a)? {
            wrong.push(format!("cannot {}", a.join(" ")));
        }
    }
    for a in denied {
        if can(a)? {
            wrong.push(format!("can {}", a.join(" ")));
        }
    }
    if !wrong.is_empty() {
        bail!("{sa}: {}", wrong.join("; "));
    }
    Ok(format!(
        "{sa} may {} and may not {} (kubectl auth can-i, apiserver with RBAC)",
        allowed
            .iter()
            .map(|a| a.join(" "))
            .collect::<Vec<_>>()
            .join(", "),
        denied
            .iter()
            .map(|a| a.join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The value of an OpenMetrics counter in Griffin's /metrics.
fn metric(name: &str) -> Result<f64> {
    let (code, body) = http_get(GRIFFIN, "/metrics")?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    body.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok())?
        })
        .with_context(|| format!("no {name} in /metrics"))
}

/// A process's cpuset: (its cgroup's cpuset.cpus, its Cpus_allowed_list).
fn cpus_of(pid: u32) -> Result<(String, String)> {
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let path = cg
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            (ctrl.split(',').any(|c| c == "cpuset")).then(|| path.to_owned())
        })
        .context("no cpuset cgroup")?;
    let file = Path::new("/sys/fs/cgroup/cpuset")
        .join(path.trim_start_matches('/'))
        .join("cpuset.cpus");
    let cpus = fs::read_to_string(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_owned();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    Ok((cpus, allowed))
}

fn cpulist(s: &str) -> Result<BTreeSet<u32>> {
    Ok(griffin_devices::parse::cpulist(s)
        .with_context(|| format!("cpulist {s:?}"))?
        .iter()
        .collect())
}

const GUARANTEED: &str = "guaranteed-static";

fn kubelet_static_cpu(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let before = metric("griffin_score_requests_total")?;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": GUARANTEED, "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "work",
                "image": ctx.busybox.name,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                "resources": {
                    "requests": {"cpu": "1", "memory": "32Mi"},
                    "limits": {"cpu": "1", "memory": "32Mi"},
                },
            }],
        },
    });
    let t = Instant::now();
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod.to_string()))?;
    let p = wait_for(
        "the Guaranteed pod Running",
        Duration::from_secs(180),
        || {
            c.check_alive()?;
            let p = c.get_json(&["-n", "default", "get", "pod", GUARANTEED])?;
            Ok((p["status"]["phase"] == "Running" && condition(&p, "Ready")).then_some(p))
        },
    )?;
    let running = t.elapsed();
    if p["status"]["qosClass"] != "Guaranteed" {
        bail!(
            "the pod's QoS class is {}, not Guaranteed",
            p["status"]["qosClass"]
        );
    }
    if p["spec"]["nodeName"] != json!(c.node) || !condition(&p, "PodScheduled") {
        bail!("the pod was not scheduled onto {}", c.node);
    }
    let after = metric("griffin_score_requests_total")?;
    if after <= before {
        bail!("kube-scheduler did not call Griffin's extender for the pod (griffin_score_requests_total stayed {before})");
    }
    let pid = container_pid(c, &p)?;
    let (cpus, allowed) = cpus_of(pid)?;
    let set = cpulist(&cpus)?;
    let reserved = cpulist(KUBELET_RESERVED_CPUS)?;
    if set.len() != 1 || !set.is_disjoint(&reserved) || cpulist(&allowed)? != set {
        bail!(
            "the Guaranteed pod's container has cpuset {cpus} (Cpus_allowed_list {allowed}): not one exclusive CPU outside the kubelet's reserved {KUBELET_RESERVED_CPUS}"
        );
    }
    let state = fs::read_to_string("/var/lib/kubelet/cpu_manager_state").unwrap_or_default();
    let gpod = griffin_pod(c)?.context("no Griffin pod")?;
    let (gcpus, _) = cpus_of(container_pid(c, &gpod)?)?;
    let (_, node) = http_get(GRIFFIN, "/v1/node")?;
    Ok(format!(
        "Running {:.1} s after kubectl apply; scheduled by kube-scheduler onto {} with Griffin's extender called ({} score requests); kubelet static policy (reserved CPUs {KUBELET_RESERVED_CPUS}, topology single-numa-node): container cpuset {cpus}, Cpus_allowed_list {allowed}; Griffin's own (Burstable) container runs in the shared pool {gcpus}; kubelet cpu_manager_state {}; Griffin's /v1/node meanwhile: {}",
        running.as_secs_f64(),
        c.node,
        after - before,
        state.trim(),
        summarize_node(&serde_json::from_str(&node).unwrap_or(Value::Null))
    ))
}

fn griffin_restart(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let checkpoint = Path::new("/var/lib/griffin/checkpoint");
    let cp_before = fs::read(checkpoint).ok();
    let guaranteed = c
        .get_json(&["-n", "default", "get", "pod", GUARANTEED])
        .ok()
        .filter(|p| p["status"]["phase"] == "Running");
    let g_before = guaranteed
        .as_ref()
        .map(|p| -> Result<_> {
            let pid = container_pid(c, p)?;
            Ok((pid, cpus_of(pid)?.0))
        })
        .transpose()?;

    // (a) SIGKILL: the kubelet restarts the container in the same pod.
    let pod = griffin_pod(c)?.context("no Griffin pod")?;
    let uid = str_of(&pod["metadata"]["uid"], "uid")?.to_owned();
    let restarts = pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0);
    let pid = container_pid(c, &pod)?;
    let t = Instant::now();
    super::host::kill(pid, libc::SIGKILL);
    let back = wait_griffin(c, "the Griffin container restarted by the kubelet", |p| {
        p["metadata"]["uid"] == json!(uid)
            && p["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0)
                > restarts
    })?;
    let after_kill = t.elapsed();
    ctx.timings.add(
        "Griffin back after SIGKILL (/v1/node answering)",
        after_kill,
    );
    let new_pid = container_pid(c, &back)?;
    if new_pid == pid {
        bail!("the Griffin process {pid} survived SIGKILL");
    }

    // (b) Pod deleted: the DaemonSet controller creates a new one.
    let name = str_of(&back["metadata"]["name"], "pod name")?.to_owned();
    let t = Instant::now();
    c.kubectl(&["-n", NS, "delete", "pod", &name, "--wait=false"])?;
    let fresh = wait_griffin(c, "a new Griffin pod from the DaemonSet", |p| {
        p["metadata"]["uid"] != json!(uid)
    })?;
    let after_delete = t.elapsed();
    ctx.timings.add(
        "Griffin back after pod deletion (new pod, /v1/node answering)",
        after_delete,
    );
    let fresh_name = str_of(&fresh["metadata"]["name"], "pod name")?.to_owned();

    let cp_after = fs::read(checkpoint).ok();
    let cp = match (&cp_before, &cp_after) {
        (Some(a), Some(b)) if a == b => "the checkpoint is byte for byte the same".to_owned(),
        (Some(_), Some(_)) => "the checkpoint was rewritten (reconciled) by the new pod".to_owned(),
        (Some(_), None) => bail!("the checkpoint {} is gone", checkpoint.display()),
        (None, _) => "no checkpoint yet (no allocation was made)".to_owned(),
    };
    let mut untouched = String::new();
    if let (Some((gpid, gcpus)), Some(p)) = (g_before, guaranteed) {
        let now = c.get_json(&["-n", "default", "get", "pod", GUARANTEED])?;
        let same = now["metadata"]["uid"] == p["metadata"]["uid"]
            && now["status"]["containerStatuses"][0]["restartCount"] == json!(0)
            && Path::new(&format!("/proc/{gpid}")).exists()
            && cpus_of(gpid)?.0 == gcpus;
        if !same {
            bail!("the Guaranteed pod was disturbed by Griffin's restarts");
        }
        untouched = format!("; the Guaranteed pod kept its process {gpid} and cpuset {gcpus}");
    }
    Ok(format!(
        "SIGKILL of pid {pid}: restarted in pod {name} as pid {new_pid}, /v1/node answering after {:.1} s; pod {name} deleted: {fresh_name} Ready and answering after {:.1} s; {cp}{untouched}",
        after_kill.as_secs_f64(),
        after_delete.as_secs_f64()
    ))
}
