//! The e2e scenarios: each a named function on the running cluster that
//! returns what it saw (for the report) or an error saying what did not
//! happen. A scenario that needs an earlier one which failed is reported
//! as not run, which fails the run too.
//!
//! Adding one: a function `fn(&mut Ctx) -> Result<String>` and a line in
//! [`SCENARIOS`].

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::cluster::{condition, http_get, wait_for, Cluster, GRIFFIN, KUBE_RESERVED};
use super::{host, Timings};
use crate::image::Built;

/// What the scenarios work with.
pub(crate) struct Ctx<'a> {
    pub c: &'a mut Cluster,
    pub griffin: Built,
    pub busybox: Built,
    /// The host's `griffin` CLI (the release build the image holds).
    pub griffin_cli: std::path::PathBuf,
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
        "griffin-pins-a-pod",
        "`griffin alloc --pid` through the control socket (hostPath) on a pod's process: the daemon in its pod moves it into an exclusive cpuset, sets its affinity and migrates its memory (CAP_SYS_NICE, CAP_SYS_PTRACE), then releases it",
        &["griffin-ready"],
        griffin_pins_a_pod,
    ),
    (
        "kubelet-static-cpu",
        "side by side: a Guaranteed pod placed by the real kube-scheduler (through Griffin's extender) gets an exclusive CPU from the kubelet's static CPU manager",
        &["griffin-ready"],
        kubelet_static_cpu,
    ),
    (
        "device-plugin-registered",
        "issue 16 scenario 2: a device pool of this machine (its virtio functions that are not NICs) in the ConfigMap; Griffin's device plugin registers with the kubelet, the Node's allocatable lists the resource with the pool's count",
        &["griffin-ready"],
        device_plugin_registered,
    ),
    (
        "device-pod-allocated",
        "issue 16 scenario 3: a pod with limits griffin.dev/virtio: 1 scheduled by kube-scheduler through Griffin's extender runs with Griffin's Allocate answer applied (PCIDEVICE_ env in the container)",
        &["device-plugin-registered"],
        device_pod_allocated,
    ),
    (
        "kubelet-restart",
        "issue 16 scenario 4: the kubelet stopped by pid and started again with the same flags: Griffin re-registers (allocatable back), the device pod untouched (same container, still running)",
        &["device-pod-allocated"],
        kubelet_restart,
    ),
    (
        "device-freed-on-delete",
        "issue 16 scenario 6: the device pod's device is held in /v1/node while it runs and free again within two PodResources checks of its deletion",
        &["device-pod-allocated"],
        device_freed_on_delete,
    ),
    (
        "griffin-pod-restart",
        "issue 16 scenario 5 (partial): Griffin's container SIGKILLed, then its pod deleted: the kubelet and the DaemonSet bring it back, /v1/node answers again, the checkpoint and running pods untouched",
        &["griffin-ready"],
        griffin_restart,
    ),
    (
        "xdp-split-adopted",
        "issue 16 scenario 5 (XDP part): the config's XDP split attached by the pod on a host veth, the pod deleted, the new pod adopts the pinned program (same program id, no detach)",
        &["griffin-ready"],
        xdp_split_adopted,
    ),
    (
        "capabilities-each-needed",
        "each capability of deploy/30-daemonset.yaml removed in turn (kubectl patch) makes its operation fail with the kernel's refusal; then the list restored",
        &["griffin-ready", "griffin-pins-a-pod", "xdp-split-adopted"],
        capabilities_each_needed,
    ),
    (
        "kubelet-cpu-manager-none",
        "issue 17: the kubelet restarted with --cpu-manager-policy=none (its state file removed), Griffin's pod given the loopback API server and the kubelet's --cgroup-root: Griffin lists the node's pods and takes over container cpusets",
        &["griffin-ready"],
        kubelet_cpu_manager_none,
    ),
    (
        "griffin-pins-guaranteed-pod",
        "issue 17: a Guaranteed pod with a whole CPU, no annotation: Griffin's allocation on its container's cgroup; the cgroup's cpuset, the Cpus_allowed_list of its process and Griffin's allocation agree; the other containers are in the shared pool; the window from the container's cgroup appearing to pinned",
        &["kubelet-cpu-manager-none"],
        griffin_pins_guaranteed_pod,
    ),
    (
        "griffin-pinned-pod-freed",
        "issue 17: the pinned pod deleted: Griffin releases its allocation and the CPU is back in the shared pool",
        &["griffin-pins-guaranteed-pod"],
        griffin_pinned_pod_freed,
    ),
    (
        "acceleration-realized",
        "issue 17: a Burstable pod (cpu 1, memory request below its limit: the static rule would not pin it) requesting one of Griffin's devices, with the seed's Acceleration annotation written as the seed writes it: exclusive CPU on its container's cgroup, GET /v1/accelerations lists the request, the CPU, the device and state realized, the NodeResourceTopology object follows; deleted: released",
        &["griffin-pinned-pod-freed", "device-plugin-registered"],
        acceleration_realized,
    ),
    (
        "acceleration-refused",
        "issue 17: a pod whose annotation has a bad value: an AccelerationRefused event on the pod naming the field, the container in the shared pool, no record",
        &["acceleration-realized"],
        acceleration_refused,
    ),
    (
        "flows-steered",
        "issue 17: a pod declaring a UDP flow gets an XDP rule on the node's data interface (the e2e's split, [pods] flows_iface) steering the flow to its interface: frames addressed to another host's MAC, which the node's stack drops, reach the pod's UDP layer (its netns counters) exactly as many as were sent, another port none; Griffin's pod replaced: the rule stays in force throughout and the flow still arrives; deleted: its rule goes",
        &["acceleration-realized", "xdp-split-adopted"],
        flows_steered,
    ),
    (
        "acceleration-rolled-back",
        "issue 17, all or nothing: a pod asking for an exclusive CPU and more flows than the split holds (17 flows of 64 port ranges: 1,088 rules, the limit is 1,024): pinned, then its flows refused, so its pinning is undone: an AccelerationRolledBack event naming the cause, its container a shared consumer again, its record failed \"rolled back after\"",
        &["flows-steered"],
        acceleration_rolled_back,
    ),
    (
        "griffin-killed-during-pod-creation",
        "issue 17: Griffin's process SIGKILLed right after a Guaranteed pod is applied: once Griffin is back the pod's container is pinned, with exactly one allocation, and no allocation is left on a container cgroup that does not exist",
        &["griffin-pinned-pod-freed"],
        griffin_killed_during_pod_creation,
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
    // The node name comes from the pod's spec.nodeName, not the host name.
    let env = &pod["spec"]["containers"][0]["env"];
    let from_spec = env.as_array().into_iter().flatten().any(|e| {
        e["name"] == "GRIFFIN_NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    });
    if !from_spec {
        bail!("the Griffin container gets no GRIFFIN_NODE_NAME from spec.nodeName: env {env}");
    }
    if v["node_name"] != json!(c.node) {
        bail!(
            "/v1/node names node {}, the Node is {}",
            v["node_name"],
            c.node
        );
    }
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
        &["get", "noderesourcetopologies.topology.node.k8s.io"],
        &["create", "noderesourcetopologies.topology.node.k8s.io"],
        &["update", "noderesourcetopologies.topology.node.k8s.io"],
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
        &["delete", "noderesourcetopologies.topology.node.k8s.io"],
        &["patch", "noderesourcetopologies.topology.node.k8s.io"],
        &["list", "noderesourcetopologies.topology.node.k8s.io"],
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
/// The memory nodes process `pid` may use (`Mems_allowed_list`).
fn mems_of(pid: u32) -> Result<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Mems_allowed_list:"))
        .map(|m| m.trim().to_owned())
        .with_context(|| format!("no Mems_allowed_list in /proc/{pid}/status"))
}

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
const PINNED: &str = "pinned-by-griffin";
const RESTART_PROBE: &str = "restart-probe";

/// A busybox pod in `default` that sleeps; `resources` as given.
fn sleeper(name: &str, image: &str, resources: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "work",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                "resources": resources,
            }],
        },
    })
}

/// Applies a pod and waits until it runs and is Ready.
fn run_pod(c: &mut Cluster, pod: &Value) -> Result<Value> {
    let name = str_of(&pod["metadata"]["name"], "pod name")?.to_owned();
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod.to_string()))?;
    let p = wait_for(
        &format!("pod {name} Running"),
        Duration::from_secs(180),
        || {
            c.check_alive()?;
            let p = c.get_json(&["-n", "default", "get", "pod", &name])?;
            let running = p["status"]["phase"] == "Running" && condition(&p, "Ready");
            if running || p["status"]["phase"] == "Failed" {
                return Ok(Some(p));
            }
            bail!("{}", pod_status(&p))
        },
    )?;
    if p["status"]["phase"] == "Failed" {
        bail!("pod {name} failed: {}", pod_status(&p));
    }
    Ok(p)
}

/// Why a pod is where it is: phase, reason, message, false conditions,
/// waiting containers.
fn pod_status(p: &Value) -> String {
    let st = &p["status"];
    let mut parts = vec![format!("phase {}", st["phase"].as_str().unwrap_or("?"))];
    for k in ["reason", "message"] {
        if let Some(v) = st[k].as_str() {
            parts.push(format!("{k} {v}"));
        }
    }
    for cnd in st["conditions"].as_array().into_iter().flatten() {
        if cnd["status"] != "True" {
            parts.push(format!(
                "{} false: {} {}",
                cnd["type"].as_str().unwrap_or("?"),
                cnd["reason"].as_str().unwrap_or(""),
                cnd["message"].as_str().unwrap_or("")
            ));
        }
    }
    for cs in st["containerStatuses"].as_array().into_iter().flatten() {
        if let Some(w) = cs["state"]["waiting"].as_object() {
            parts.push(format!(
                "container {} waiting: {} {}",
                cs["name"].as_str().unwrap_or("?"),
                w.get("reason").and_then(Value::as_str).unwrap_or(""),
                w.get("message").and_then(Value::as_str).unwrap_or("")
            ));
        }
    }
    parts.join("; ")
}

/// The current log of a pod's first container (the kubelet's file).
fn container_log(pod: &Value) -> String {
    let dir = format!(
        "/var/log/pods/{}_{}_{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        pod["metadata"]["name"].as_str().unwrap_or_default(),
        pod["metadata"]["uid"].as_str().unwrap_or_default(),
        pod["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or_default()
    );
    let mut text = String::new();
    if let Ok(rd) = fs::read_dir(&dir) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            text.push_str(&fs::read_to_string(f).unwrap_or_default());
        }
    }
    text
}

/// The host's `griffin` CLI on the DaemonSet's state directory (through
/// the daemon's control socket, a hostPath); stdout or an error with
/// stderr.
fn cli(bin: &Path, args: &[&str]) -> Result<String> {
    let mut a = args.to_vec();
    if args.first() != Some(&"xdp") {
        a.extend(["--state-dir", host::GRIFFIN_STATE]);
    }
    let out = std::process::Command::new(bin)
        .args(&a)
        .output()
        .context("running the griffin CLI")?;
    if !out.status.success() {
        bail!(
            "griffin {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `griffin alloc --cpus 1 --pid PID`: (allocation id, its CPUs).
fn alloc_pid(bin: &Path, pid: u32) -> Result<(String, BTreeSet<u32>)> {
    let out = cli(
        bin,
        &["alloc", "--cpus", "1", "--pid", &pid.to_string(), "--json"],
    )?;
    let v: Value = serde_json::from_str(&out).context("griffin alloc --json")?;
    let id = str_of(&v["id"], "allocation id")?.to_owned();
    let cpus = v["cpus"]
        .as_array()
        .context("no cpus in the allocation")?
        .iter()
        .filter_map(|c| c.as_u64().and_then(|c| u32::try_from(c).ok()))
        .collect();
    Ok((id, cpus))
}

fn griffin_pins_a_pod(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let p = run_pod(c, &sleeper(PINNED, &ctx.busybox.name, json!({})))?;
    let pid = container_pid(c, &p)?;
    let (cpus_before, _) = cpus_of(pid)?;
    let bin = ctx.griffin_cli.clone();
    let cli = |args: &[&str]| cli(&bin, args);
    let (id, cpus) = alloc_pid(&bin, pid)?;
    let (cg_cpus, allowed) = cpus_of(pid)?;
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let in_alloc = cgroup
        .lines()
        .any(|l| l.contains(":cpuset:") && l.ends_with(&format!("/griffin/{id}")));
    let gpod = griffin_pod(c)?.context("no Griffin pod")?;
    let log = container_log(&gpod);
    let released = cli(&["release", &id]);
    if !in_alloc {
        bail!("after griffin alloc the process {pid} is not in the cpuset griffin/{id}: {cgroup}");
    }
    if cpulist(&cg_cpus)? != cpus || cpulist(&allowed)? != cpus {
        bail!(
            "allocation {id} has CPUs {cpus:?}, the process's cpuset is {cg_cpus}, its Cpus_allowed_list {allowed}"
        );
    }
    if let Some(l) = log.lines().find(|l| l.contains("migrate_pages")) {
        bail!("the daemon could not migrate the process's memory: {l}");
    }
    released?;
    let (cpus_after, _) = cpus_of(pid)?;
    c.kubectl(&["-n", "default", "delete", "pod", PINNED, "--wait=false"])?;
    Ok(format!(
        "pod {PINNED} process {pid} (cpuset {cpus_before}): allocation {id} moved it to griffin/{id} with CPUs {cg_cpus} (Cpus_allowed_list {allowed}), memory migrated without a warning; released: cpuset {cpus_after}"
    ))
}

fn kubelet_static_cpu(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let before = metric("griffin_score_requests_total")?;
    let whole_cpu = json!({"cpu": "1", "memory": "32Mi"});
    let t = Instant::now();
    let p = run_pod(
        c,
        &sleeper(
            GUARANTEED,
            &ctx.busybox.name,
            json!({"requests": whole_cpu, "limits": whole_cpu}),
        ),
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
    // The kubelet's own record of its decision.
    let state_text = fs::read_to_string("/var/lib/kubelet/cpu_manager_state")
        .context("reading the kubelet's cpu_manager_state")?;
    let state: Value = serde_json::from_str(&state_text).context("cpu_manager_state")?;
    let shared = cpulist(str_of(&state["defaultCpuSet"], "defaultCpuSet")?)?;
    let uid = str_of(&p["metadata"]["uid"], "uid")?;
    let assigned = state["entries"][uid]["work"].as_str().unwrap_or("");
    if set.len() != 1
        || !set.is_disjoint(&shared)
        || cpulist(&allowed)? != set
        || cpulist(assigned)? != set
    {
        bail!(
            "the Guaranteed pod's container has cpuset {cpus} (Cpus_allowed_list {allowed}); the kubelet recorded {assigned:?} for it and the shared pool {:?}: not one exclusive CPU",
            shared
        );
    }
    // The kubelet moves the other containers out of the new exclusive CPU
    // at its next reconcile (every 10 s by default).
    let gpod = griffin_pod(c)?.context("no Griffin pod")?;
    let gpid = container_pid(c, &gpod)?;
    let t_shrink = Instant::now();
    let gcpus = wait_for(
        "Griffin's container confined to the kubelet's shared pool",
        Duration::from_secs(60),
        || {
            let (g, _) = cpus_of(gpid)?;
            if cpulist(&g)? == shared {
                Ok(Some(g))
            } else {
                bail!("Griffin's container runs on {g}, the shared pool is {shared:?}")
            }
        },
    )?;
    let shrink = t_shrink.elapsed();
    ctx.timings.placement(
        "kubelet: --cpu-manager-policy=static, --topology-manager-policy=single-numa-node, no Griffin",
        format!(
            "CPU {cpus}, memory nodes {}; the other containers on {gcpus}",
            mems_of(pid)?
        ),
    );
    let (_, node) = http_get(GRIFFIN, "/v1/node")?;
    Ok(format!(
        "Running {:.1} s after kubectl apply; scheduled by kube-scheduler onto {} with Griffin's extender called ({} score requests); kubelet static CPU manager (--kube-reserved={KUBE_RESERVED}, --topology-manager-policy=single-numa-node) gave it CPU {cpus} (its cgroup's cpuset, its Cpus_allowed_list and cpu_manager_state agree), shared pool {gcpus} (Griffin's Burstable container confined to it {:.1} s after the pod ran); Griffin's /v1/node meanwhile (it does not see the kubelet's exclusive CPUs): {}",
        running.as_secs_f64(),
        c.node,
        after - before,
        shrink.as_secs_f64(),
        summarize_node(&serde_json::from_str(&node).unwrap_or(Value::Null))
    ))
}

fn griffin_restart(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let bin = ctx.griffin_cli.clone();
    // An allocation that must survive: a pod's process pinned by Griffin.
    let probe = run_pod(c, &sleeper(RESTART_PROBE, &ctx.busybox.name, json!({})))?;
    let probe_pid = container_pid(c, &probe)?;
    let (alloc_id, alloc_cpus) = alloc_pid(&bin, probe_pid)?;
    let checkpoint = Path::new(host::GRIFFIN_STATE).join("checkpoint");
    let cp_before = fs::read(&checkpoint).ok();
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
    host::kill(pid, libc::SIGKILL);
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

    // The allocation survived both: listed by the new daemon, the process
    // still in its cpuset on its CPUs.
    let allocs: Value = serde_json::from_str(&cli(&bin, &["allocs", "--json"])?)
        .context("griffin allocs --json")?;
    let listed = allocs
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["id"] == json!(alloc_id) && a["target"]["pid"] == json!(probe_pid));
    let (probe_cpus, probe_allowed) = cpus_of(probe_pid)?;
    if !listed || cpulist(&probe_cpus)? != alloc_cpus || cpulist(&probe_allowed)? != alloc_cpus {
        bail!(
            "allocation {alloc_id} (pid {probe_pid}, CPUs {alloc_cpus:?}) did not survive: listed {listed}, cpuset {probe_cpus}, Cpus_allowed_list {probe_allowed}"
        );
    }
    cli(&bin, &["release", &alloc_id])?;
    c.kubectl(&[
        "-n",
        "default",
        "delete",
        "pod",
        RESTART_PROBE,
        "--wait=false",
    ])?;
    let cp_after = fs::read(&checkpoint).ok();
    let cp = match (&cp_before, &cp_after) {
        (Some(_), Some(_)) => format!(
            "allocation {alloc_id} (pod {RESTART_PROBE}'s pid {probe_pid} on CPUs {probe_cpus}) kept across both and listed by the new daemon, then released"
        ),
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

/// The XDP program id attached to `link` (`ip -d link show`).
fn xdp_prog_id(link: &str) -> Result<Option<u32>> {
    let out = std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", link])
        .output()
        .context("running ip")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "prog/xdp" {
            if let (Some("id"), Some(id)) = (words.next(), words.next()) {
                return Ok(id.parse().ok());
            }
        }
    }
    Ok(None)
}

/// The rules of the e2e's split: harmless (nothing is sent through it but
/// what the test sends).
const SPLIT_RULES: &str = r#"[[rules]]
name = "e2e-drop"
priority = 10
action = "drop"
protocol = "udp"
dst_ports = "9"
src = ["198.18.200.0/24"]
"#;

/// Deletes the Griffin pod and waits for the DaemonSet's next one to be
/// Ready and answering; returns it.
fn replace_griffin_pod(c: &mut Cluster, why: &str) -> Result<Value> {
    let old = griffin_pod(c)?.context("no Griffin pod")?;
    let name = str_of(&old["metadata"]["name"], "pod name")?.to_owned();
    let uid = old["metadata"]["uid"].clone();
    c.kubectl(&["-n", NS, "delete", "pod", &name, "--wait=false"])?;
    wait_griffin(c, why, |p| p["metadata"]["uid"] != uid)
}

fn xdp_split_adopted(ctx: &mut Ctx) -> Result<String> {
    use host::{XDP_LINK, XDP_PEER};
    let c = &mut *ctx.c;
    crate::sh(std::process::Command::new("ip").args([
        "link", "add", XDP_LINK, "type", "veth", "peer", "name", XDP_PEER,
    ]))?;
    for l in [XDP_LINK, XDP_PEER] {
        crate::sh(std::process::Command::new("ip").args(["link", "set", l, "up"]))?;
    }
    // The operator's way: edit the ConfigMap, restart the pod.
    let cm = c.get_json(&["-n", NS, "get", "configmap", "griffin-config"])?;
    let config = str_of(&cm["data"]["config.toml"], "config.toml")?;
    if !config.lines().any(|l| l.trim() == "xdp = []") {
        bail!("deploy/20-config.yaml's config.toml has no `xdp = []` line to configure a split in");
    }
    let config = config.replace(
        "xdp = []",
        &format!(r#"xdp = [{{ iface = "{XDP_LINK}", rules = "/etc/griffin/split.toml", mode = "generic" }}]"#),
    );
    patch_config(c, json!({"config.toml": config, "split.toml": SPLIT_RULES}))?;
    let first = replace_griffin_pod(c, "a Griffin pod with the XDP split")?;
    let id = xdp_prog_id(XDP_LINK)?.with_context(|| {
        format!(
            "no XDP program on {XDP_LINK} after the pod started: {}",
            container_log(&first)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        )
    })?;
    let pins = Path::new(host::BPFFS).join("griffin").join(XDP_LINK);
    if !pins.is_dir() {
        bail!("no pins at {}", pins.display());
    }
    let t = Instant::now();
    let second = replace_griffin_pod(c, "the next Griffin pod adopting the split")?;
    let took = t.elapsed();
    let id2 = xdp_prog_id(XDP_LINK)?;
    if id2 != Some(id) {
        bail!("the XDP program on {XDP_LINK} was {id}, after the pod's replacement it is {id2:?}: not adopted");
    }
    let log = container_log(&second);
    let adopted = log
        .lines()
        .find(|l| l.contains("adopted pinned Griffin XDP state"))
        .with_context(|| {
            format!(
                "the new pod's log does not say it adopted the pins: {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
            )
        })?;
    let _ = adopted;
    let (_, metrics) = http_get(GRIFFIN, "/metrics")?;
    let xdp_metrics = metrics
        .lines()
        .filter(|l| l.starts_with("griffin_xdp"))
        .count();
    if xdp_metrics == 0 {
        bail!("/metrics has no griffin_xdp counters");
    }
    Ok(format!(
        "split on {XDP_LINK} (generic mode) attached by {} as program {id}, pinned under {}; pod deleted: {} Ready after {:.1} s, logged the adoption, program {id} still attached throughout; /metrics has {xdp_metrics} griffin_xdp lines",
        first["metadata"]["name"].as_str().unwrap_or("?"),
        pins.display(),
        second["metadata"]["name"].as_str().unwrap_or("?"),
        took.as_secs_f64()
    ))
}

/// Sets the Griffin container's added capabilities (a rolling update).
fn set_caps(c: &Cluster, caps: &[String]) -> Result<()> {
    let patch = json!([{
        "op": "replace",
        "path": "/spec/template/spec/containers/0/securityContext/capabilities/add",
        "value": caps,
    }]);
    c.kubectl(&[
        "-n",
        NS,
        "patch",
        "daemonset",
        "griffin",
        "--type",
        "json",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

/// Waits for the Griffin pod created with capability list `caps`; with
/// `ready`, for it to be Ready, else for its log to contain `expect`.
fn wait_caps_pod(c: &mut Cluster, caps: &[String], ready: bool, expect: &str) -> Result<Value> {
    let want = json!(caps);
    wait_for(
        &format!(
            "a Griffin pod with capabilities {caps:?} {}",
            if ready {
                "Ready".to_owned()
            } else {
                format!("logging {expect:?}")
            }
        ),
        Duration::from_secs(180),
        || {
            c.check_alive()?;
            let Some(p) = griffin_pod(c)? else {
                return Ok(None);
            };
            if p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] != want {
                return Ok(None);
            }
            if ready {
                return Ok(condition(&p, "Ready").then_some(p));
            }
            Ok(container_log(&p).contains(expect).then_some(p))
        },
    )
}

fn capabilities_each_needed(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let bin = ctx.griffin_cli.clone();
    let ds = c.get_json(&["-n", NS, "get", "daemonset", "griffin"])?;
    let full: Vec<String> = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["capabilities"]["add"]
        .as_array()
        .context("no capabilities in the DaemonSet")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let probe = run_pod(c, &sleeper("cap-probe", &ctx.busybox.name, json!({})))?;
    let pid = container_pid(c, &probe)?;
    let without =
        |cap: &str| -> Vec<String> { full.iter().filter(|c| *c != cap).cloned().collect() };
    let mut proved = Vec::new();
    let mut unproved = Vec::new();
    for cap in &full {
        let caps = without(cap);
        let what = match cap.as_str() {
            "DAC_OVERRIDE" | "SYS_NICE" | "SYS_PTRACE" => {
                // A fresh node: Griffin's cgroup not created yet.
                let _ = fs::remove_dir(Path::new("/sys/fs/cgroup/cpuset").join("griffin"));
                set_caps(c, &caps)?;
                wait_caps_pod(c, &caps, true, "")?;
                let r = alloc_pid(&bin, pid);
                let log = container_log(&griffin_pod(c)?.context("no Griffin pod")?);
                let (want, got) = match (cap.as_str(), &r) {
                    ("DAC_OVERRIDE", Err(e)) => (
                        "cannot create cgroup … griffin … Permission denied",
                        format!("{e:#}").contains("cannot create cgroup")
                            && format!("{e:#}").contains("Permission denied"),
                    ),
                    ("SYS_NICE", Err(e)) => (
                        "cannot move process into cgroup … Operation not permitted",
                        format!("{e:#}").contains("cannot move process into cgroup")
                            && format!("{e:#}").contains("Operation not permitted"),
                    ),
                    ("SYS_PTRACE", Ok(_)) => (
                        "cannot migrate_pages … EPERM (logged)",
                        log.contains("cannot migrate_pages") && log.contains("EPERM"),
                    ),
                    _ => ("the refusal", false),
                };
                if let Ok((id, _)) = &r {
                    cli(&bin, &["release", id])?;
                }
                if !got {
                    unproved.push(format!(
                        "without {cap}: expected {want}, got {:?}",
                        r.map(|(id, _)| id).map_err(|e| format!("{e:#}"))
                    ));
                    continue;
                }
                format!("without {cap}: griffin alloc --pid → {want}")
            }
            "BPF" | "NET_ADMIN" | "PERFMON" => {
                // A fresh node: nothing attached, nothing pinned.
                cli(&bin, &["xdp", "detach", host::XDP_LINK]).ok();
                let expect = match cap.as_str() {
                    "PERFMON" => "pointer -= pointer prohibited",
                    _ => "Operation not permitted",
                };
                set_caps(c, &caps)?;
                match wait_caps_pod(c, &caps, false, expect) {
                    Ok(_) => format!(
                        "without {cap}: the pod's XDP attach fails with {expect:?} (pod not Ready)"
                    ),
                    Err(e) => {
                        unproved.push(format!("without {cap}: {e:#}"));
                        continue;
                    }
                }
            }
            other => {
                unproved.push(format!("{other}: no operation known to need it"));
                continue;
            }
        };
        proved.push(what);
    }
    // Back to the full list: Ready, the split attached again.
    cli(&bin, &["xdp", "detach", host::XDP_LINK]).ok();
    set_caps(c, &full)?;
    wait_caps_pod(c, &full, true, "")?;
    wait_griffin(c, "the Griffin pod with every capability back", |_| true)?;
    c.kubectl(&[
        "-n",
        "default",
        "delete",
        "pod",
        "cap-probe",
        "--wait=false",
    ])?;
    if xdp_prog_id(host::XDP_LINK)?.is_none() {
        unproved.push("with every capability back the split is not attached".into());
    }
    if !unproved.is_empty() {
        bail!("{}", unproved.join("; "));
    }
    Ok(proved.join("; "))
}

/// The e2e's device pool: the virtio PCI functions of this machine that are
/// not NICs (kind `other`), served as a Griffin-flavoured pool.
const POOL: &str =
    r#"pools = [{ resource = "griffin.dev/virtio", kinds = ["other"], drivers = ["virtio-pci"] }]"#;
const RESOURCE: &str = "griffin.dev/virtio";
/// The env var Griffin's Allocate gives for [`RESOURCE`] (alloc_env.rs:
/// sriov-network-device-plugin's `PCIDEVICE_<RESOURCE>` rule).
const RESOURCE_ENV: &str = "PCIDEVICE_GRIFFIN_DEV_VIRTIO";
const DEVICE_POD: &str = "virtio-user";

/// The healthy device ids of [`POOL`] as the host's `griffin devices`
/// selects them (the same release build the image holds).
fn pool_devices(bin: &Path, run: &Path) -> Result<Vec<String>> {
    let cfg = run.join("e2e-pool.toml");
    fs::write(&cfg, format!("{POOL}\n"))?;
    let out = std::process::Command::new(bin)
        .args(["devices", "--json", "--config"])
        .arg(&cfg)
        .output()
        .context("running griffin devices")?;
    if !out.status.success() {
        bail!(
            "griffin devices --config {}: {}",
            cfg.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("griffin devices --json")?;
    let pool = v["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["resource"] == RESOURCE)
        .with_context(|| format!("griffin devices lists no pool {RESOURCE}: {v}"))?;
    Ok(pool["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["healthy"] == json!(true))
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect())
}

/// The Node's `status.<field>` count of [`RESOURCE`] (absent: None).
fn node_count(c: &Cluster, field: &str) -> Result<Option<u64>> {
    let n = c.get_json(&["get", "node", &c.node])?;
    Ok(n["status"][field][RESOURCE]
        .as_str()
        .and_then(|v| v.parse().ok()))
}

/// Waits for the Node's allocatable and capacity of [`RESOURCE`] to be
/// `want`.
fn wait_allocatable(c: &mut Cluster, want: u64, limit: Duration) -> Result<()> {
    wait_for(
        &format!("node allocatable {RESOURCE}: {want}"),
        limit,
        || {
            c.check_alive()?;
            let a = node_count(c, "allocatable")?;
            let cap = node_count(c, "capacity")?;
            if a == Some(want) && cap == Some(want) {
                return Ok(Some(()));
            }
            bail!("allocatable {a:?}, capacity {cap:?}")
        },
    )
}

fn device_plugin_registered(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let ids = pool_devices(&ctx.griffin_cli, &c.run)?;
    if ids.is_empty() {
        bail!("the pool {POOL} selects no healthy device on this machine (griffin devices)");
    }
    // The DaemonSet must let the daemon reach the kubelet's sockets.
    let ds = c.get_json(&["-n", NS, "get", "daemonset", "griffin"])?;
    let mounts: Vec<&str> = ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for dir in [
        "/var/lib/kubelet/device-plugins",
        "/var/lib/kubelet/pod-resources",
    ] {
        if !mounts.contains(&dir) {
            bail!("deploy/30-daemonset.yaml does not mount {dir}");
        }
    }
    // The operator's way: the pool in the ConfigMap, the pod restarted.
    let cm = c.get_json(&["-n", NS, "get", "configmap", "griffin-config"])?;
    let config = str_of(&cm["data"]["config.toml"], "config.toml")?;
    if !config.lines().any(|l| l.trim() == "pools = []") {
        bail!(
            "deploy/20-config.yaml's config.toml has no `pools = []` line to configure a pool in"
        );
    }
    let socket = r#"pod_resources_socket = "/var/lib/kubelet/pod-resources/kubelet.sock""#;
    if !config.lines().any(|l| l.trim() == socket) {
        bail!("deploy/20-config.yaml's config.toml does not set {socket} (the mounted PodResources socket)");
    }
    let config = config.replace("pools = []", POOL);
    patch_config(c, json!({"config.toml": config}))?;
    let t = Instant::now();
    let pod = replace_griffin_pod(c, "a Griffin pod serving the pool")?;
    let want = ids.len() as u64;
    wait_allocatable(c, want, Duration::from_secs(60))?;
    let took = t.elapsed();
    ctx.timings.add(
        "device pool in allocatable (pod deleted to allocatable listing it)",
        took,
    );
    let sockets: Vec<String> = fs::read_dir("/var/lib/kubelet/device-plugins")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let log = fs::read_to_string(c.logs.join("kubelet.log")).unwrap_or_default();
    if !log.contains(&format!(
        "Got registration request from device plugin with resource name \"{RESOURCE}\""
    )) {
        bail!("allocatable lists {RESOURCE} but the kubelet's log has no registration of it");
    }
    Ok(format!(
        "pool {RESOURCE} = {} (griffin devices on the host); pod {} registered it: the Node's allocatable and capacity {RESOURCE}: {want} {:.1} s after the old pod's deletion; the kubelet logged the registration; sockets in /var/lib/kubelet/device-plugins: {}",
        ids.join(", "),
        pod["metadata"]["name"].as_str().unwrap_or("?"),
        took.as_secs_f64(),
        sockets.join(", ")
    ))
}

/// The `NAME=value` lines a container printed (its log), for names
/// starting with `prefix`.
fn env_lines(log: &str, prefix: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            // CRI log lines: TIME STREAM TAG MESSAGE.
            let msg = l.splitn(4, ' ').nth(3)?;
            msg.starts_with(prefix).then(|| msg.to_owned())
        })
        .collect()
}

/// `NAME=value` of a process's environment (/proc/PID/environ).
fn environ(pid: u32, name: &str) -> Result<Option<String>> {
    let raw = fs::read(format!("/proc/{pid}/environ"))
        .with_context(|| format!("reading /proc/{pid}/environ"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned)))
}

fn device_pod_allocated(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let ids = pool_devices(&ctx.griffin_cli, &c.run)?;
    let before = metric("griffin_score_requests_total")?;
    let mut pod = sleeper(
        DEVICE_POD,
        &ctx.busybox.name,
        json!({"limits": {RESOURCE: "1"}}),
    );
    // The container prints what it was given, then sleeps.
    pod["spec"]["containers"][0]["command"] = json!([
        "/bin/sh",
        "-c",
        "env | grep ^PCIDEVICE_ | sort; trap 'exit 0' TERM; while :; do sleep 1; done"
    ]);
    let t = Instant::now();
    let p = run_pod(c, &pod)?;
    let running = t.elapsed();
    ctx.timings
        .add("device pod Running (kubectl apply to Ready)", running);
    if p["spec"]["nodeName"] != json!(c.node) || !condition(&p, "PodScheduled") {
        bail!("the pod was not scheduled onto {}", c.node);
    }
    let after = metric("griffin_score_requests_total")?;
    if after <= before {
        bail!("kube-scheduler did not call Griffin's extender for the pod (griffin_score_requests_total stayed {before})");
    }
    let pid = container_pid(c, &p)?;
    let given = environ(pid, RESOURCE_ENV)?.with_context(|| {
        format!("the container's process {pid} has no {RESOURCE_ENV} in its environment")
    })?;
    if !ids.contains(&given) {
        bail!(
            "{RESOURCE_ENV}={given}: not one device of the pool {}",
            ids.join(", ")
        );
    }
    let info = environ(pid, &format!("{RESOURCE_ENV}_INFO"))?
        .with_context(|| format!("no {RESOURCE_ENV}_INFO in the container's environment"))?;
    let info_v: Value = serde_json::from_str(&info)
        .with_context(|| format!("{RESOURCE_ENV}_INFO is not JSON: {info}"))?;
    if info_v[&given]["generic"]["deviceID"] != json!(given) {
        bail!("{RESOURCE_ENV}_INFO does not give {given} its generic deviceID: {info}");
    }
    // What the container itself printed.
    let printed = wait_for(
        "the container's printed environment",
        Duration::from_secs(20),
        || {
            let lines = env_lines(&container_log(&p), "PCIDEVICE_");
            Ok((!lines.is_empty()).then_some(lines))
        },
    )?;
    if !printed.contains(&format!("{RESOURCE_ENV}={given}")) {
        bail!("the container printed {printed:?}, not {RESOURCE_ENV}={given}");
    }
    // The kubelet's record of the assignment.
    let cp = fs::read_to_string("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
        .context("reading the kubelet's device checkpoint")?;
    let uid = str_of(&p["metadata"]["uid"], "uid")?;
    let cpv: Value = serde_json::from_str(&cp).context("kubelet_internal_checkpoint")?;
    let recorded = cpv["Data"]["PodDeviceEntries"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| {
            e["PodUID"] == uid
                && e["ResourceName"] == RESOURCE
                && e["DeviceIDs"].to_string().contains(&given)
        });
    if !recorded {
        bail!("the kubelet's device checkpoint has no entry of pod {uid} with {given}");
    }
    Ok(format!(
        "pod {DEVICE_POD} scheduled by kube-scheduler onto {} (Griffin's extender called: {} score requests), Running {:.1} s after kubectl apply; the container printed {}; its process {pid} has {RESOURCE_ENV}={given} and {RESOURCE_ENV}_INFO={info}; the kubelet's checkpoint records {given} for it",
        c.node,
        after - before,
        running.as_secs_f64(),
        printed.join(" ")
    ))
}

fn kubelet_restart(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let want = node_count(c, "allocatable")?.context("no allocatable device before")?;
    let before = c.get_json(&["-n", "default", "get", "pod", DEVICE_POD])?;
    let cid = str_of(
        &before["status"]["containerStatuses"][0]["containerID"],
        "containerID",
    )?
    .to_owned();
    let pid = container_pid(c, &before)?;
    let gpod = griffin_pod(c)?.context("no Griffin pod")?;
    let g_restarts = gpod["status"]["containerStatuses"][0]["restartCount"].clone();
    let log_path = c.logs.join("kubelet.log");
    let log_len = fs::metadata(&log_path).map_or(0, |m| m.len()) as usize;
    let t = Instant::now();
    let (old, new) = c.restart_kubelet()?;
    let registration =
        format!("Got registration request from device plugin with resource name \"{RESOURCE}\"");
    wait_for(
        "Griffin's registration with the restarted kubelet",
        Duration::from_secs(120),
        || {
            c.check_alive()?;
            let log = fs::read(&log_path)?;
            let tail = String::from_utf8_lossy(log.get(log_len..).unwrap_or_default());
            Ok(tail.contains(&registration).then_some(()))
        },
    )?;
    let registered = t.elapsed();
    c.wait_node_ready()?;
    wait_allocatable(c, want, Duration::from_secs(120))?;
    let back = t.elapsed();
    ctx.timings.add(
        "kubelet restart: Griffin re-registered (stop to registration logged)",
        registered,
    );
    let now = c.get_json(&["-n", "default", "get", "pod", DEVICE_POD])?;
    let cs = &now["status"]["containerStatuses"][0];
    let same = now["metadata"]["uid"] == before["metadata"]["uid"]
        && cs["containerID"] == json!(cid)
        && cs["restartCount"] == before["status"]["containerStatuses"][0]["restartCount"]
        && cs["state"]["running"].is_object()
        && Path::new(&format!("/proc/{pid}")).exists()
        && container_pid(c, &now)? == pid;
    if !same {
        bail!(
            "the device pod was disturbed by the kubelet's restart: before container {cid} pid {pid}, now {} ({})",
            cs["containerID"],
            pod_status(&now)
        );
    }
    let g_now = griffin_pod(c)?.context("no Griffin pod")?;
    let g_same = g_now["metadata"]["uid"] == gpod["metadata"]["uid"]
        && g_now["status"]["containerStatuses"][0]["restartCount"] == g_restarts;
    Ok(format!(
        "kubelet pid {old} stopped (SIGTERM) and started again as pid {new} with the same flags; Griffin's registration of {RESOURCE} logged by the new kubelet {:.1} s after the stop, allocatable {RESOURCE}: {want} after {:.1} s; pod {DEVICE_POD} untouched (container {cid}, pid {pid}, running); Griffin's pod {} ",
        registered.as_secs_f64(),
        back.as_secs_f64(),
        if g_same { "not restarted" } else { "restarted meanwhile" }
    ))
}

/// /v1/node's (total, free) devices of kind `other`.
fn other_devices() -> Result<(u64, u64)> {
    let (code, body) = http_get(GRIFFIN, "/v1/node")?;
    if code != 200 {
        bail!("/v1/node answered {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body).context("/v1/node is not JSON")?;
    let d = &v["devices"]["other"];
    match (d["total"].as_u64(), d["free"].as_u64()) {
        (Some(t), Some(f)) => Ok((t, f)),
        _ => bail!("/v1/node has no devices.other total/free: {}", v["devices"]),
    }
}

fn device_freed_on_delete(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let cm = c.get_json(&["-n", NS, "get", "configmap", "griffin-config"])?;
    let config = str_of(&cm["data"]["config.toml"], "config.toml")?;
    let key = |k: &str| -> Result<u64> {
        config
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(k)?
                    .trim()
                    .strip_prefix('=')?
                    .trim()
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no {k} in the ConfigMap's config.toml"))
    };
    // PodResources listed the running pod's device, so the Allocate grace
    // (allocate_grace_s) no longer applies: the first List after the pod
    // is gone frees it. Two check intervals and a little slack.
    let interval = key("check_interval_s")?;
    let (total, free) = other_devices()?;
    if free + 1 != total {
        bail!("while pod {DEVICE_POD} holds a device, /v1/node's devices.other is {free} free of {total}, not one less than all");
    }
    let pod = c.get_json(&["-n", "default", "get", "pod", DEVICE_POD])?;
    let uid = str_of(&pod["metadata"]["uid"], "metadata.uid")?.to_owned();
    let log_path = c.logs.join("kubelet.log");
    let log_len = fs::metadata(&log_path).map_or(0, |m| m.len()) as usize;
    let t = Instant::now();
    c.kubectl(&["-n", "default", "delete", "pod", DEVICE_POD, "--wait=false"])?;
    // The kubelet deletes the pod object in its status sync (every 10 s)
    // once the pod's containers, volumes and cgroup are gone; a CI run saw
    // that take over a minute after a kubelet restart. That is the
    // kubelet's time, not Griffin's (measured from the object's removal
    // below), so the wait is generous and a timeout says what the kubelet
    // logged about the pod meanwhile.
    let gone = wait_for(
        &format!("pod {DEVICE_POD} gone"),
        Duration::from_secs(180),
        || {
            let (ok, _, err) = c.kubectl_raw(&["-n", "default", "get", "pod", DEVICE_POD])?;
            Ok((!ok && err.contains("NotFound")).then(|| t.elapsed()))
        },
    )
    .map_err(|e| {
        let log = fs::read(&log_path).unwrap_or_default();
        let since = String::from_utf8_lossy(log.get(log_len..).unwrap_or_default()).into_owned();
        let about: Vec<&str> = since.lines().filter(|l| l.contains(&uid)).collect();
        e.context(format!(
            "the kubelet's last lines about pod uid {uid} since the delete: {}",
            about[about.len().saturating_sub(6)..].join(" | ")
        ))
    })?;
    ctx.timings
        .add("device pod deleted to gone from the API", gone);
    let limit = Duration::from_secs(2 * interval + 3);
    let t_gone = Instant::now();
    wait_for("the device free again in /v1/node", limit, || {
        let (tt, f) = other_devices()?;
        if f == tt {
            return Ok(Some(()));
        }
        bail!("devices.other {f} free of {tt}")
    })?;
    let freed = t_gone.elapsed();
    ctx.timings.add(
        "device free in /v1/node after the pod object was gone",
        freed,
    );
    Ok(format!(
        "while {DEVICE_POD} ran /v1/node had devices.other {free} free of {total}; pod deleted: gone from the API after {:.1} s, its device free again ({total} of {total}) {:.1} s later (limit 2 x check_interval_s + 3 = {} s)",
        gone.as_secs_f64(),
        freed.as_secs_f64(),
        limit.as_secs()
    ))
}

/// Merges `data` into Griffin's ConfigMap (the pod reads it when replaced).
fn patch_config(c: &Cluster, data: Value) -> Result<()> {
    let patch = json!({ "data": data });
    c.kubectl(&[
        "-n",
        NS,
        "patch",
        "configmap",
        "griffin-config",
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

const REALIZED: &str = "realized-by-griffin";

fn kubelet_cpu_manager_none(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    // The static CPU manager's Guaranteed pod goes first: its CPU request
    // would leave no room for the pods Griffin is to pin (2 CPUs here), and
    // its cpuset was the kubelet's.
    c.kubectl(&[
        "-n",
        "default",
        "delete",
        "pod",
        GUARANTEED,
        "--ignore-not-found",
        "--timeout=120s",
    ])?;
    c.set_cpu_manager_policy("none")?;
    let state = Path::new("/var/lib/kubelet/cpu_manager_state");
    // The kubelet refuses a state file of another policy: stop it first.
    let (old, new) = c.restart_kubelet_with(|| {
        let _ = fs::remove_file(state);
    })?;
    c.wait_node_ready()?;
    // The e2e cluster has no kube-proxy: the `kubernetes` service's cluster
    // IP leads nowhere, so Griffin's pod gets the API server's loopback
    // address (hostNetwork) the way a real node's pods get the service.
    let cm = c.get_json(&["-n", NS, "get", "configmap", "griffin-config"])?;
    let config = str_of(&cm["data"]["config.toml"], "config.toml")?;
    let line = r#"kubelet_cgroup_root = """#;
    if !config.lines().any(|l| l.trim() == line) {
        bail!("deploy/20-config.yaml's config.toml has no `{line}` line to set the kubelet's --cgroup-root in");
    }
    let config = config.replace(
        line,
        &format!(r#"kubelet_cgroup_root = "{}""#, host::CGROUP_ROOT),
    );
    patch_config(c, json!({"config.toml": config}))?;
    c.kubectl(&[
        "-n",
        NS,
        "set",
        "env",
        "daemonset/griffin",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "KUBERNETES_SERVICE_PORT=6443",
    ])?;
    let before = griffin_pod(c)?.map(|p| p["metadata"]["uid"].clone());
    let pod = wait_griffin(c, "a Griffin pod with the API server", |p| {
        Some(p["metadata"]["uid"].clone()) != before
            && p["spec"]["containers"][0]["env"]
                .as_array()
                .is_some_and(|e| e.iter().any(|v| v["name"] == "KUBERNETES_SERVICE_HOST"))
    })?;
    let listed = wait_for(
        "Griffin listing the node's pods",
        Duration::from_secs(60),
        || {
            let log = container_log(&pod);
            if let Some(l) = log.lines().find(|l| l.contains("pods of this node listed")) {
                return Ok(Some(l.to_owned()));
            }
            if let Some(l) = log
                .lines()
                .rev()
                .find(|l| l.contains("pods:") || l.contains("pod watch"))
            {
                bail!("not yet; last: {l}");
            }
            bail!("not yet")
        },
    )?;
    Ok(format!(
        "kubelet {old} stopped, {new} started with --cpu-manager-policy=none; Griffin's pod {} logged: {}",
        pod["metadata"]["name"].as_str().unwrap_or("?"),
        listed.trim()
    ))
}

/// The cpuset directory of pod `uid` below the kubelet's cgroup root.
fn pod_cgroup_dir(uid: &str) -> std::path::PathBuf {
    Path::new("/sys/fs/cgroup/cpuset")
        .join(host::CGROUP_ROOT)
        .join("kubepods")
        .join(format!("pod{uid}"))
}

/// Griffin's allocations (`griffin allocs --json`).
fn allocations(bin: &Path) -> Result<Vec<Value>> {
    let v: Value =
        serde_json::from_str(&cli(bin, &["allocs", "--json"])?).context("griffin allocs --json")?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Griffin's allocations on the containers of the pod with `uid`.
fn pod_allocations(bin: &Path, uid: &str) -> Result<Vec<Value>> {
    let dir = format!("/pod{uid}/");
    Ok(allocations(bin)?
        .into_iter()
        .filter(|a| {
            a["target"]["container"]
                .as_str()
                .is_some_and(|t| t.contains(&dir))
        })
        .collect())
}

fn griffin_pins_guaranteed_pod(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let whole_cpu = json!({"cpu": "1", "memory": "32Mi"});
    let mut pod = sleeper(
        REALIZED,
        &ctx.busybox.name,
        json!({"requests": whole_cpu, "limits": whole_cpu}),
    );
    // The container's first process prints the CPUs it starts on.
    pod["spec"]["containers"][0]["command"] = json!([
        "/bin/sh",
        "-c",
        "grep Cpus_allowed_list /proc/self/status; trap 'exit 0' TERM; while :; do sleep 1; done"
    ]);
    let nri = c.containerd_bin.is_some();
    let applied = c.kubectl_stdin(&["apply", "-o", "json", "-f", "-"], Some(&pod.to_string()))?;
    let applied: Value = serde_json::from_str(&applied).context("kubectl apply -o json")?;
    let uid = str_of(&applied["metadata"]["uid"], "uid")?.to_owned();
    let dir = pod_cgroup_dir(&uid);
    // Watch the pod's cgroup: when each container's cgroup appears, and
    // when it first has a single CPU.
    let t0 = Instant::now();
    let mut seen: std::collections::BTreeMap<String, (Duration, Option<Duration>)> =
        Default::default();
    let mut container_id: Option<String> = None;
    let mut pod_state = String::from("not read yet");
    let mut last_status = Instant::now() - Duration::from_secs(1);
    let pinned_after = loop {
        if t0.elapsed() > Duration::from_secs(180) {
            bail!(
                "pod {REALIZED}'s container was not pinned within 180 s; its cgroups: {seen:?}, container id {container_id:?}, pod: {pod_state}"
            );
        }
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if !e.path().is_dir() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let now = t0.elapsed();
                let entry = seen.entry(name).or_insert((now, None));
                if entry.1.is_none() {
                    let cpus = fs::read_to_string(e.path().join("cpuset.cpus")).unwrap_or_default();
                    if cpulist(cpus.trim()).is_ok_and(|s| s.len() == 1) {
                        entry.1 = Some(now);
                    }
                }
            }
        }
        if container_id.is_none() && last_status.elapsed() > Duration::from_millis(500) {
            last_status = Instant::now();
            let p = c.get_json(&["-n", "default", "get", "pod", REALIZED])?;
            pod_state = pod_status(&p);
            container_id = p["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .map(|s| s.trim_start_matches("containerd://").to_owned());
        }
        if let Some((appeared, Some(pinned))) = container_id.as_ref().and_then(|id| seen.get(id)) {
            break *pinned - *appeared;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let p = c.get_json(&["-n", "default", "get", "pod", REALIZED])?;
    let pid = container_pid(c, &p)?;
    let (cpus, allowed) = cpus_of(pid)?;
    let set = cpulist(&cpus)?;
    let id = container_id.unwrap_or_default();
    let cgroup = format!("{}/kubepods/pod{uid}/{id}", host::CGROUP_ROOT);
    let allocs = allocations(&ctx.griffin_cli)?;
    let alloc = allocs
        .iter()
        .find(|a| a["target"]["container"] == json!(cgroup))
        .with_context(|| format!("griffin allocs has no allocation on {cgroup}: {allocs:?}"))?;
    let alloc_cpus: BTreeSet<u32> = alloc["cpus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_u64().and_then(|c| u32::try_from(c).ok()))
        .collect();
    if set.len() != 1 || set != alloc_cpus || cpulist(&allowed)? != set {
        bail!(
            "the container's cgroup has cpuset {cpus}, its process Cpus_allowed_list {allowed}, Griffin's allocation {} CPUs {alloc_cpus:?}: not one exclusive CPU everywhere",
            alloc["id"]
        );
    }
    // What the first process started on: with NRI (containerd 1.7) its
    // CPU already; without, every CPU until Griffin pins the cgroup.
    // The kubelet's log file (the e2e node has no address for `kubectl
    // logs` to reach the kubelet through).
    let log = container_log(&p);
    let first = log
        .lines()
        .find_map(|l| l.split_once("Cpus_allowed_list:").map(|(_, v)| v))
        .map(str::trim)
        .with_context(|| format!("pod {REALIZED}'s log has no Cpus_allowed_list line: {log:?}"))?
        .to_owned();
    let started_pinned = cpulist(&first)? == set;
    if nri && !started_pinned {
        bail!("the container's first process started on CPUs {first}, not its CPU {cpus}: with containerd 1.7 and NRI, Griffin must create it pinned");
    }
    // Griffin's own container (Burstable) is a shared consumer.
    let gpod = griffin_pod(c)?.context("no Griffin pod")?;
    let gpid = container_pid(c, &gpod)?;
    let (gcpus, _) = cpus_of(gpid)?;
    if !cpulist(&gcpus)?.is_disjoint(&set) {
        bail!(
            "Griffin's own container still runs on {gcpus}, which includes the pinned CPU {cpus}"
        );
    }
    ctx.timings.add(
        "container cgroup appeared to pinned by Griffin",
        pinned_after,
    );
    let how = if nri {
        "created pinned through NRI"
    } else {
        "pinned after start"
    };
    ctx.timings.placement(
        &format!("Griffin ([pods] exclusive_guaranteed, policy best-effort), kubelet --cpu-manager-policy=none, {how}"),
        format!(
            "CPU {cpus}, memory nodes {} (allocation {}, mems {}); Griffin's own container on {gcpus}; first process started on CPUs {first}; pinned {:.0} ms after the container's cgroup appeared",
            mems_of(pid)?,
            alloc["id"].as_str().unwrap_or("?"),
            alloc["mems"],
            pinned_after.as_secs_f64() * 1e3
        ),
    );
    Ok(format!(
        "pod {REALIZED} (Guaranteed, cpu 1, no annotation): container {} pinned by allocation {} to CPU {cpus} (its cgroup's cpuset, Cpus_allowed_list of pid {pid} and griffin allocs agree; Griffin's container on {gcpus}); {how}: its first process started on CPUs {first}; pinned {:.0} ms after its cgroup appeared (polled every 10 ms from the host)",
        &id[..12.min(id.len())],
        alloc["id"].as_str().unwrap_or("?"),
        pinned_after.as_secs_f64() * 1e3
    ))
}

fn griffin_pinned_pod_freed(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let p = c.get_json(&["-n", "default", "get", "pod", REALIZED])?;
    let uid = str_of(&p["metadata"]["uid"], "uid")?.to_owned();
    let held = pod_allocations(&ctx.griffin_cli, &uid)?;
    if held.is_empty() {
        bail!("Griffin holds no allocation for pod {REALIZED}");
    }
    let t = Instant::now();
    c.kubectl(&["-n", "default", "delete", "pod", REALIZED, "--wait=false"])?;
    let bin = ctx.griffin_cli.clone();
    wait_for(
        "the pod's allocations released",
        Duration::from_secs(120),
        || {
            let left = pod_allocations(&bin, &uid)?;
            if left.is_empty() {
                return Ok(Some(()));
            }
            bail!("still held: {left:?}")
        },
    )?;
    let took = t.elapsed();
    ctx.timings
        .add("pinned pod deleted to its allocation released", took);
    Ok(format!(
        "{} allocation(s) of pod {REALIZED} released {:.1} s after kubectl delete",
        held.len(),
        took.as_secs_f64()
    ))
}

const ACCEL: &str = "accelerated-by-griffin";
const REFUSED: &str = "refused-by-griffin";

/// The seed's `Acceleration` block as its service specs write it.
const SEED_ANNOTATION: &str = "Acceleration:\n  topologyAware: true\n  communication: '[\"SRIOV\", \"RDMA\"]'\n  compute: '[\"GPU, FPGA, AIX...\"]'\n";

/// A Burstable sleeper (cpu 1; memory request below its limit; `extra`
/// resources in requests and limits) carrying the acceleration annotation
/// `value`.
fn annotated(name: &str, image: &str, value: &str, extra: Value) -> Value {
    let mut requests = json!({"cpu": "1", "memory": "16Mi"});
    let mut limits = json!({"cpu": "1", "memory": "32Mi"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        requests[k] = v.clone();
        limits[k] = v.clone();
    }
    let mut pod = sleeper(name, image, json!({"requests": requests, "limits": limits}));
    pod["metadata"]["annotations"] = json!({ "griffin.gedge.io/acceleration": value });
    pod
}

/// The sum of `cpu` available over the zones of the node's
/// NodeResourceTopology object.
fn nrt_cpu_available(c: &Cluster) -> Result<u64> {
    let node = super::cluster::node_name()?;
    let o = c.get_json(&["get", "noderesourcetopologies.topology.node.k8s.io", &node])?;
    let zones = o["zones"]
        .as_array()
        .with_context(|| format!("NodeResourceTopology {node} has no zones: {o}"))?;
    let mut n = 0;
    for z in zones {
        let r = z["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == "cpu")
            .with_context(|| format!("zone {} has no cpu: {z}", z["name"]))?;
        n += str_of(&r["available"], "cpu available")?
            .parse::<u64>()
            .context("cpu available")?;
    }
    Ok(n)
}

/// Griffin's record of the pod with `uid` in `GET /v1/accelerations`.
fn acceleration_record(uid: &str) -> Result<Option<Value>> {
    let (code, body) = http_get(GRIFFIN, "/v1/accelerations")?;
    if code != 200 {
        bail!("/v1/accelerations answered {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body).context("/v1/accelerations is not JSON")?;
    let list = v
        .as_array()
        .or_else(|| v["accelerations"].as_array())
        .with_context(|| format!("/v1/accelerations is not a list: {v}"))?;
    Ok(list.iter().find(|r| r["pod"]["uid"] == json!(uid)).cloned())
}

fn acceleration_realized(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let nrt_before = nrt_cpu_available(c)?;
    let t = Instant::now();
    let p = run_pod(
        c,
        &annotated(
            ACCEL,
            &ctx.busybox.name,
            SEED_ANNOTATION,
            json!({ RESOURCE: "1" }),
        ),
    )?;
    let running = Instant::now();
    let uid = str_of(&p["metadata"]["uid"], "uid")?.to_owned();
    if p["status"]["qosClass"] != "Burstable" {
        bail!("pod {ACCEL} is {}, not Burstable", p["status"]["qosClass"]);
    }
    let rec = wait_for(
        "the pod's acceleration realized in /v1/accelerations",
        Duration::from_secs(60),
        || {
            let Some(r) = acceleration_record(&uid)? else {
                bail!("no record of pod {ACCEL}")
            };
            let cpus = r["containers"][0]["cpus"].as_array().map_or(0, Vec::len);
            let devices = r["containers"][0]["devices"][RESOURCE]
                .as_array()
                .map_or(0, Vec::len);
            if r["state"] == "realized" && cpus == 1 && devices == 1 {
                return Ok(Some(r));
            }
            bail!("record: {r}")
        },
    )?;
    let took = t.elapsed();
    let after_running = running.elapsed();
    let req = &rec["request"];
    if req["topologyAware"] != json!(true)
        || req["communication"] != json!(["SRIOV", "RDMA"])
        || req["placement"] != "best-effort"
    {
        bail!("the recorded request is not the seed's: {req}");
    }
    let want: BTreeSet<u32> = rec["containers"][0]["cpus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_u64().and_then(|c| u32::try_from(c).ok()))
        .collect();
    let pid = container_pid(c, &p)?;
    let (cpus, allowed) = cpus_of(pid)?;
    if cpulist(&cpus)? != want || cpulist(&allowed)? != want {
        bail!("the record says CPUs {want:?}, the container's cgroup has {cpus}, its process Cpus_allowed_list {allowed}");
    }
    // The NodeResourceTopology object follows (within a second of the
    // change; the poll allows for kubectl's own time).
    let nrt_after = wait_for(
        "the NodeResourceTopology object's available cpu one lower",
        Duration::from_secs(10),
        || {
            let n = nrt_cpu_available(c)?;
            if n + 1 == nrt_before {
                return Ok(Some(n));
            }
            bail!("available cpu {n}, before the pod {nrt_before}")
        },
    )?;
    // Deleted: released in the record, the allocation gone.
    let t_del = Instant::now();
    c.kubectl(&["-n", "default", "delete", "pod", ACCEL, "--wait=false"])?;
    let bin = ctx.griffin_cli.clone();
    wait_for(
        "the pod's acceleration released",
        Duration::from_secs(120),
        || {
            let r = acceleration_record(&uid)?;
            let held = pod_allocations(&bin, &uid)?.len();
            match r {
                Some(r) if r["state"] == "released" && held == 0 => Ok(Some(())),
                r => bail!("record {r:?}, {held} allocation(s) held"),
            }
        },
    )?;
    ctx.timings.add(
        "annotated pod Running and Ready to its acceleration realized",
        after_running,
    );
    Ok(format!(
        "pod {ACCEL} (Burstable, the seed's annotation, {RESOURCE} {}): realized on CPU {cpus} {:.1} s after kubectl apply, {:.1} s after it was Running and Ready (record, cgroup cpuset and Cpus_allowed_list of pid {pid} agree; NodeResourceTopology available cpu {nrt_before} -> {nrt_after}); released {:.1} s after kubectl delete",
        rec["containers"][0]["devices"][RESOURCE],
        took.as_secs_f64(),
        after_running.as_secs_f64(),
        t_del.elapsed().as_secs_f64()
    ))
}

fn acceleration_refused(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let bad = r#"{"topologyAware": true, "communication": ["SRIOV", "SRIOVX"]}"#;
    let p = run_pod(c, &annotated(REFUSED, &ctx.busybox.name, bad, json!({})))?;
    let uid = str_of(&p["metadata"]["uid"], "uid")?.to_owned();
    let note = event_note(c, &uid, "AccelerationRefused")?;
    if !note.contains("communication[1]") || !note.contains("SRIOVX") {
        bail!("the event does not name the field: {note}");
    }
    let pid = container_pid(c, &p)?;
    let (cpus, _) = cpus_of(pid)?;
    let shared = pod_allocations(&ctx.griffin_cli, &uid)?
        .iter()
        .any(|a| a["cpus"].as_array().is_some_and(Vec::is_empty));
    if !shared {
        bail!("the refused pod's container is not a shared consumer in griffin allocs");
    }
    if acceleration_record(&uid)?.is_some() {
        bail!("a refused request has a record in /v1/accelerations");
    }
    // Gone before the next scenario asks for its CPU.
    c.kubectl(&["-n", "default", "delete", "pod", REFUSED, "--timeout=120s"])?;
    Ok(format!(
        "pod {REFUSED}: event AccelerationRefused \"{note}\"; its container in the shared pool (CPUs {cpus})"
    ))
}

/// The message of the first event `reason` on the pod `uid`, waiting up
/// to a minute for it.
fn event_note(c: &mut Cluster, uid: &str, reason: &str) -> Result<String> {
    wait_for(
        &format!("an {reason} event on the pod"),
        Duration::from_secs(60),
        || {
            let ev = c.get_json(&[
                "-n",
                "default",
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.uid={uid}"),
            ])?;
            let found = ev["items"].as_array().into_iter().flatten().find_map(|e| {
                (e["reason"] == reason).then(|| e["message"].as_str().unwrap_or("").to_owned())
            });
            match found {
                Some(m) => Ok(Some(m)),
                None => bail!("events: {}", ev["items"]),
            }
        },
    )
}

const ROLLED: &str = "rolled-back-by-griffin";

fn acceleration_rolled_back(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    // 17 flows of 64 single ports: one rule each, 1,088 in all.
    let flows: Vec<Value> = (0..17u16)
        .map(|f| {
            let ports: Vec<u16> = (0..64).map(|p| 20000 + f * 64 + p).collect();
            json!({"name": format!("f{f}"), "protocol": "udp", "ports": ports})
        })
        .collect();
    let value = json!({"topologyAware": true, "flows": flows}).to_string();
    let pod = annotated(ROLLED, &ctx.busybox.name, &value, json!({}));
    let p = run_pod(c, &pod)?;
    let uid = str_of(&p["metadata"]["uid"], "uid")?.to_owned();
    let pinned = event_note(c, &uid, "Pinned")?;
    let note = event_note(c, &uid, "AccelerationRolledBack")?;
    if !note.contains("more than 1024 rules") {
        bail!("the rollback event does not name the failed step: {note}");
    }
    let bin = ctx.griffin_cli.clone();
    let rec = wait_for(
        "the pod a shared consumer again, its record failed",
        Duration::from_secs(30),
        || {
            let held = pod_allocations(&bin, &uid)?;
            let shared = !held.is_empty()
                && held
                    .iter()
                    .all(|a| a["cpus"].as_array().is_some_and(Vec::is_empty));
            let rec = acceleration_record(&uid)?;
            let failed = rec.as_ref().is_some_and(|r| {
                r["state"] == "failed"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|m| m.contains("rolled back after"))
            });
            if shared && failed {
                return Ok(Some(rec));
            }
            bail!("allocations {held:?}, record {rec:?}")
        },
    )?;
    let pid = container_pid(c, &p)?;
    let (cpus, allowed) = cpus_of(pid)?;
    if cpulist(&cpus)?.len() < 2 || cpulist(&allowed)? != cpulist(&cpus)? {
        bail!("the rolled-back container runs on {cpus} (allowed {allowed}), not the shared pool");
    }
    c.kubectl(&["-n", "default", "delete", "pod", ROLLED, "--timeout=120s"])?;
    Ok(format!(
        "pod {ROLLED} (17 flows of 64 ports): event Pinned \"{pinned}\", then AccelerationRolledBack \"{note}\"; its container a shared consumer on CPUs {cpus}; record: {}",
        rec.map(|r| r["reason"].clone()).unwrap_or_default()
    ))
}

const KILLED: &str = "created-while-killed";

fn griffin_killed_during_pod_creation(ctx: &mut Ctx) -> Result<String> {
    let c = &mut *ctx.c;
    let gpod = griffin_pod(c)?.context("no Griffin pod")?;
    let gpid = container_pid(c, &gpod)?;
    let whole_cpu = json!({"cpu": "1", "memory": "32Mi"});
    let pod = sleeper(
        KILLED,
        &ctx.busybox.name,
        json!({"requests": whole_cpu, "limits": whole_cpu}),
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod.to_string()))?;
    host::kill(gpid, libc::SIGKILL);
    let t = Instant::now();
    let p = run_pod(c, &pod)?;
    let uid = str_of(&p["metadata"]["uid"], "uid")?.to_owned();
    let pid = container_pid(c, &p)?;
    let bin = ctx.griffin_cli.clone();
    let (cpus, held) = wait_for(
        "the pod's container pinned by the restarted Griffin",
        Duration::from_secs(120),
        || {
            let held = pod_allocations(&bin, &uid)?;
            let (cpus, allowed) = cpus_of(pid)?;
            let one = cpulist(&cpus)?.len() == 1 && cpulist(&allowed)? == cpulist(&cpus)?;
            if held.len() == 1 && one {
                return Ok(Some((cpus, held)));
            }
            bail!("{} allocation(s), cpuset {cpus}", held.len())
        },
    )?;
    let took = t.elapsed();
    // Nothing leaked: every container allocation is on a cgroup that exists.
    let leaked: Vec<String> = allocations(&bin)?
        .iter()
        .filter_map(|a| a["target"]["container"].as_str())
        .filter(|cg| !Path::new("/sys/fs/cgroup/cpuset").join(cg).is_dir())
        .map(str::to_owned)
        .collect();
    if !leaked.is_empty() {
        bail!("allocations on container cgroups that do not exist: {leaked:?}");
    }
    c.kubectl(&["-n", "default", "delete", "pod", KILLED, "--wait=false"])?;
    wait_for(
        "the pod's allocation released",
        Duration::from_secs(120),
        || match pod_allocations(&bin, &uid)?.len() {
            0 => Ok(Some(())),
            n => bail!("{n} allocation(s) held"),
        },
    )?;
    Ok(format!(
        "Griffin (pid {gpid}) SIGKILLed right after kubectl apply of {KILLED}: the container pinned to CPU {cpus} by allocation {} {:.1} s later, one allocation, none on a missing cgroup; released after delete",
        held[0]["id"].as_str().unwrap_or("?"),
        took.as_secs_f64()
    ))
}

const FLOWS_POD: &str = "flows-by-griffin";
/// The flow's port.
const FLOW_PORT: u16 = 7400;
/// The sender's address, on the subnet of the e2e's data link (which gets
/// [`FLOW_NET`]): the pod's ICMP answers to a port nobody listens on go
/// back to that link (and end there, nobody answers ARP), never out of the
/// host.
const FLOW_SRC: [u8; 4] = [198, 19, 99, 1];
/// The data link's address while the flow runs (it goes with the link).
const FLOW_NET: &str = "198.19.99.2/24";
/// The frames' destination MAC: not the data link's, so the node's stack
/// drops them (another host's); only the split's redirect, which rewrites
/// it, delivers them.
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xee, 0x01];

/// A pod's UDP receive counters (InDatagrams + NoPorts of its network
/// namespace, from /proc/PID/net/snmp): every datagram its UDP layer got.
fn udp_received(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/net/snmp");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut rows = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(head), Some(vals)) = (rows.next(), rows.next()) else {
        bail!("{path} has no Udp rows");
    };
    let mut n = 0;
    for (k, v) in head.split_whitespace().zip(vals.split_whitespace()) {
        if k == "InDatagrams" || k == "NoPorts" {
            n += v
                .parse::<u64>()
                .with_context(|| format!("{path}: Udp {k} {v:?}"))?;
        }
    }
    Ok(n)
}

/// Sends `n` IPv4/UDP frames to `dst:port` out of `iface` through a packet
/// socket, addressed to [`OTHER_MAC`], from [`FLOW_SRC`] (UDP checksum 0).
fn send_frames(iface: &str, dst: std::net::Ipv4Addr, port: u16, n: u32) -> Result<()> {
    let ifindex = fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .with_context(|| format!("ifindex of {iface}"))?
        .trim()
        .parse::<i32>()
        .with_context(|| format!("ifindex of {iface}"))?;
    let src_mac = fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .with_context(|| format!("MAC of {iface}"))?;
    use griffin_tests::frames;
    let other = OTHER_MAC.map(|b| format!("{b:02x}")).join(":");
    let udp = frames::udp(5000, port, b"griffin flows e2e");
    let ip = frames::ipv4(17, FLOW_SRC.into(), dst, 0, &udp);
    let frame = frames::eth_between(&other, src_mac.trim(), 0x0800, &ip);
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("packet socket");
    }
    // SAFETY: `fd` was just opened and is owned here alone.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&OTHER_MAC);
    for _ in 0..n {
        // SAFETY: `frame` and `to` are alive for the call and their
        // lengths are passed; the kernel only reads them.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending a frame out of {iface}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Waits up to 10 s until the UDP layer of process `pid`'s namespace
/// counted `n` datagrams more than `before`; returns how many it counted.
fn datagrams_arrived(pid: u32, before: u64, n: u32, what: &str) -> Result<u64> {
    wait_for(what, Duration::from_secs(10), || {
        let got = udp_received(pid)? - before;
        if got >= u64::from(n) {
            return Ok(Some(got));
        }
        bail!("{got} of {n}")
    })
}

fn flows_steered(ctx: &mut Ctx) -> Result<String> {
    use host::{XDP_LINK, XDP_PEER};
    let c = &mut *ctx.c;
    if xdp_prog_id(XDP_LINK)?.is_none() {
        bail!("no XDP split on {XDP_LINK} (scenario xdp-split-adopted sets it up)");
    }
    let cm = c.get_json(&["-n", NS, "get", "configmap", "griffin-config"])?;
    let config = str_of(&cm["data"]["config.toml"], "config.toml")?;
    let line = r#"flows_iface = """#;
    if !config.lines().any(|l| l.trim() == line) {
        bail!("deploy/20-config.yaml's config.toml has no `{line}` line");
    }
    let config = config.replace(line, &format!(r#"flows_iface = "{XDP_LINK}""#));
    patch_config(c, json!({ "config.toml": config }))?;
    replace_griffin_pod(c, "a Griffin pod steering flows on the e2e's split")?;
    let value =
        format!(r#"{{"flows": [{{"name": "video", "protocol": "udp", "ports": {FLOW_PORT}}}]}}"#);
    let mut pod = sleeper(FLOWS_POD, &ctx.busybox.name, json!({}));
    pod["metadata"]["annotations"] = json!({ "griffin.gedge.io/acceleration": value });
    let t = Instant::now();
    let p = run_pod(c, &pod)?;
    let uid = str_of(&p["metadata"]["uid"], "uid")?.to_owned();
    let ip: std::net::Ipv4Addr = str_of(&p["status"]["podIP"], "status.podIP")?
        .parse()
        .context("status.podIP")?;
    let rec = wait_for(
        "the pod's flow steered in /v1/accelerations",
        Duration::from_secs(60),
        || {
            let Some(r) = acceleration_record(&uid)? else {
                bail!("no record of pod {FLOWS_POD}")
            };
            let steered = r["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["xdp_rules"].as_array().is_some_and(|l| !l.is_empty()));
            if r["state"] == "realized" && steered {
                return Ok(Some(r));
            }
            bail!("record: {r}")
        },
    )?;
    let took = t.elapsed();
    let rules = rec["containers"][0]["xdp_rules"].clone();
    let names = fs::read_to_string(host::xdp_record())
        .map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default()["names"].clone())
        .unwrap_or_default();
    let name = format!("default/{FLOWS_POD}/video");
    if !names
        .as_array()
        .is_some_and(|n| n.iter().any(|x| x == name.as_str()))
    {
        bail!("the split's record names {names}, not {name}");
    }
    let pid = container_pid(c, &p)?;
    crate::sh(
        std::process::Command::new("ip").args(["addr", "replace", FLOW_NET, "dev", XDP_LINK]),
    )?;
    const N: u32 = 200;
    let before = udp_received(pid)?;
    send_frames(XDP_PEER, ip, FLOW_PORT, N)?;
    // Not the pod's flow: the node's stack drops these (another host's MAC).
    send_frames(XDP_PEER, ip, FLOW_PORT + 1, 20)?;
    let got = datagrams_arrived(
        pid,
        before,
        N,
        "the steered datagrams in the pod's UDP counters",
    )?;
    // Anything late would show now.
    std::thread::sleep(Duration::from_millis(500));
    let got = got.max(udp_received(pid)? - before);
    if got != u64::from(N) {
        bail!("the pod's UDP layer counted {got} datagrams: {N} steered ones were sent, and 20 to port {} that are not its flow", FLOW_PORT + 1);
    }
    // Griffin restarted (its pod replaced): the adopted split keeps the
    // pod's rule in force throughout (its record, rewritten atomically with
    // every update, names it at every look), and the flow still arrives.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, name) = (watching.clone(), name.clone());
        std::thread::spawn(move || {
            let (mut looks, mut missing) = (0u32, 0u32);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(t) = fs::read_to_string(host::xdp_record()) {
                    looks += 1;
                    missing += u32::from(!t.contains(&name));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (looks, missing)
        })
    };
    let restarted = replace_griffin_pod(c, "a restarted Griffin keeping the pods' flow rules");
    // Past the new daemon's first reconcile, which sets the rules again.
    std::thread::sleep(Duration::from_secs(3));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (looks, missing) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the record watcher panicked"))?;
    restarted?;
    if missing > 0 || looks == 0 {
        bail!("while Griffin restarted, the split's record lacked the pod's rule {name} at {missing} of {looks} looks");
    }
    let before = udp_received(pid)?;
    send_frames(XDP_PEER, ip, FLOW_PORT, N)?;
    let after_restart = datagrams_arrived(
        pid,
        before,
        N,
        "the steered datagrams after Griffin's restart",
    )?;
    c.kubectl(&["-n", "default", "delete", "pod", FLOWS_POD, "--wait=false"])?;
    let gone = Instant::now();
    wait_for(
        "the pod's rule gone from the split's record",
        Duration::from_secs(60),
        || {
            let t = fs::read_to_string(host::xdp_record()).context("the split's record")?;
            Ok((!t.contains(&name)).then_some(()))
        },
    )?;
    Ok(format!(
        "pod {FLOWS_POD} ({ip}, flow video udp/{FLOW_PORT}): rules {rules} on {XDP_LINK} ({name}) {:.1} s after kubectl apply; {N} frames sent out of {XDP_PEER} to another host's MAC reached the pod's UDP layer (its /proc/{pid}/net/snmp), all {N} of them, and none of 20 to port {}; Griffin's pod replaced: the split's record named the rule at all {looks} looks (every 20 ms), then {after_restart} of {N} arrived; deleted: the rule gone {:.1} s later",
        took.as_secs_f64(),
        FLOW_PORT + 1,
        gone.elapsed().as_secs_f64()
    ))
}
