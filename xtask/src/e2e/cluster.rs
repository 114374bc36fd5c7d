//! The single-node cluster: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler (with Griffin's extender), containerd and the kubelet,
//! each with its state under the run directory (the kubelet's root aside,
//! see [`super::host::HOST_PATHS`]) and its log under `target/e2e/logs`.
//!
//! Every address is loopback. The apiserver authenticates with a token
//! (one `system:masters` user every component and kubectl use) and
//! authorizes with RBAC, so the manifests' ClusterRole is what Griffin's
//! service account really gets. The pod network is a bridge with
//! host-local addresses in 198.18.0.0/24; services get 198.19.0.0/24 (no
//! kube-proxy): both inside 198.18.0.0/15.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::host::{self, Record, BRIDGE, CGROUP_ROOT, MACHINE_DIR};
use crate::kube::Bins;

const ETCD: &str = "127.0.0.1:23790";
const ETCD_PEER: &str = "127.0.0.1:23800";
/// The apiserver's address.
pub(crate) const APISERVER: &str = "127.0.0.1:6443";
/// Griffin's listener (the DaemonSet's config): the extender's prefix.
pub(crate) const GRIFFIN: &str = "127.0.0.1:8420";
const POD_SUBNET: &str = "198.18.0.0/24";
const SERVICE_RANGE: &str = "198.19.0.0/24";
/// What the kubelet reserves for system daemons (`--kube-reserved`): its
/// static CPU manager keeps one whole CPU out of the exclusive pool, while
/// the node's allocatable stays 1.9 CPUs on this 2-CPU machine, room for
/// Griffin's 50m and a Guaranteed pod's whole CPU.
pub(crate) const KUBE_RESERVED: &str = "cpu=100m";

/// Ports the cluster listens on; all must be free before it starts.
const PORTS: &[(u16, &str)] = &[
    (23790, "etcd"),
    (23800, "etcd peer"),
    (6443, "kube-apiserver"),
    (10250, "kubelet"),
    (10248, "kubelet healthz"),
    (10251, "kube-scheduler healthz"),
    (8420, "Griffin (the DaemonSet's listener)"),
    (8787, "Griffin's GS-Scheduler listener"),
];

/// The cluster's processes and files. Dropping it tears everything down.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The run directory (state of every component).
    pub run: PathBuf,
    /// The component logs.
    pub logs: PathBuf,
    /// The kubeconfig every client uses.
    pub kubeconfig: PathBuf,
    /// The node's name (the host name, lowercase, as the kubelet derives it).
    pub node: String,
    /// kubectl of the same build.
    pub kubectl: PathBuf,
    /// ctr (containerd's CLI).
    ctr: PathBuf,
    /// containerd's own `bin/` when not Debian's 1.6 from PATH (1.7 with
    /// NRI enabled).
    pub containerd_bin: Option<PathBuf>,
    children: Vec<(String, Child)>,
    /// The kubelet's program and arguments (to start it again).
    kubelet_cmd: Option<(PathBuf, Vec<String>)>,
    /// What has been changed on the host.
    pub record: Record,
    torn_down: bool,
}

/// The node's name as kubelet 1.20 derives it (host name, lowercase).
pub(crate) fn node_name() -> Result<String> {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(h.trim().to_lowercase())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A GET on a loopback HTTP listener: (status, body). HTTP/1.0, so the
/// body is never chunked.
pub(crate) fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&addr.parse().context("an address")?, Duration::from_secs(2))
            .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .with_context(|| format!("reading the answer of {addr}{path}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status from {addr}{path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `f` every 500 ms until it returns `Some`, for at most `limit`;
/// the error names `what` and the last reason `f` gave. Stops early when
/// the run is interrupted.
pub(crate) fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t = Instant::now();
    let mut last = String::from("nothing yet");
    loop {
        super::check_interrupted()?;
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if t.elapsed() > limit {
            bail!("{what}: not within {limit:?} (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Free space the e2e needs on the kubelet's and the run's file systems.
const MIN_FREE_BYTES: u64 = 6 << 30;

impl Cluster {
    /// Checks the host is fit for a run and notes what it will change.
    /// `run` is created fresh, `logs` emptied.
    pub(crate) fn prepare(run: &Path, logs: &Path, bins: &Bins) -> Result<Self> {
        let node = node_name()?;
        for (port, what) in PORTS {
            if !port_free(*port) {
                bail!("127.0.0.1:{port} ({what}) is in use: another cluster or griffin daemon runs here; stop it first");
            }
        }
        // The kubelet evicts images and pods below 1% free (its
        // --eviction-hard here): a nearly full disk fails every scenario
        // with a sandbox image "not found". Say so at once.
        for (p, what) in [
            ("/var/lib", "the kubelet's and containerd's"),
            (run.to_str().unwrap_or("/"), "the run's"),
        ] {
            let free = host::free_bytes(Path::new(p))
                .or_else(|| host::free_bytes(Path::new("/")))
                .unwrap_or(u64::MAX);
            if free < MIN_FREE_BYTES {
                bail!("{p} ({what} file system) has {} MiB free, the e2e needs {} MiB (the kubelet evicts images and pods on a full disk): free some space first", free >> 20, MIN_FREE_BYTES >> 20);
            }
        }
        if Path::new("/var/lib/kubelet").exists() {
            bail!("/var/lib/kubelet exists: a kubelet has state on this machine; the e2e uses this path and removes it afterwards, so it refuses to run (move it away first)");
        }
        if Path::new(host::NRI_SOCKET).exists() {
            bail!(
                "{} exists: a container runtime with NRI runs here; stop it first",
                host::NRI_SOCKET
            );
        }
        for link in [BRIDGE, host::XDP_LINK, host::XDP_PEER] {
            if Path::new("/sys/class/net").join(link).exists() {
                bail!("the link {link} exists (left by another run?)");
            }
        }
        let _ = fs::remove_dir_all(run);
        fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
        let _ = fs::remove_dir_all(logs);
        fs::create_dir_all(logs)?;
        let mut record = Record::begin(run)?;
        record.stash_stopped_daemon_state(host::GRIFFIN_STATE)?;
        host::ensure_bpffs(&mut record)?;
        let ctr = PathBuf::from("/usr/bin/ctr");
        Ok(Self {
            run: run.to_path_buf(),
            logs: logs.to_path_buf(),
            kubeconfig: run.join("kubeconfig"),
            node,
            kubectl: bins.path("kubectl"),
            ctr,
            containerd_bin: None,
            children: Vec::new(),
            kubelet_cmd: None,
            record,
            torn_down: false,
        })
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<()> {
        // Appended: a component started again keeps its first run's log.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        writeln!(&log, "+ {cmd:?}")?;
        use std::os::unix::process::CommandExt;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal reaches
            // xtask only, which then stops everything in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.record.add_proc(name, child.id())?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Fails when a component has exited, naming it and its log.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Some(st) = child.try_wait()? {
                bail!(
                    "{name} exited ({st}); see {}",
                    self.logs.join(format!("{name}.log")).display()
                );
            }
        }
        Ok(())
    }

    /// kubectl with the cluster's kubeconfig; the output (stdout) or an
    /// error with stderr.
    pub(crate) fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_stdin(args, None)
    }

    /// kubectl with `input` on stdin.
    pub(crate) fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting kubectl")?;
        if let Some(i) = input {
            child
                .stdin
                .take()
                .context("kubectl stdin")?
                .write_all(i.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// kubectl whatever its exit status: (success, stdout, stderr).
    pub(crate) fn kubectl_raw(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// kubectl … -o json, parsed.
    pub(crate) fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let text = self.kubectl(&a)?;
        serde_json::from_str(&text).context("parsing kubectl's JSON")
    }

    /// ctr against the e2e's containerd, namespace k8s.io.
    pub(crate) fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.ctr)
            .args(["--address", &format!("{MACHINE_DIR}/containerd.sock")])
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts every component and waits for the node to be Ready.
    /// The images are imported once containerd serves, before the kubelet
    /// starts (the sandbox image must be there when it asks).
    pub(crate) fn start(
        &mut self,
        bins: &Bins,
        images: &[&crate::image::Built],
        sandbox_image: &str,
    ) -> Result<()> {
        let run = self.run.clone();
        let pki = run.join("pki");
        fs::create_dir_all(&pki)?;
        // The one token, and the service-account signing key.
        let mut token = [0u8; 16];
        fs::File::open("/dev/urandom")?.read_exact(&mut token)?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        write(
            &pki.join("tokens.csv"),
            &format!("{token},admin,admin,system:masters\n"),
        )?;
        crate::sh(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(pki.join("sa.key"))
                .arg("2048")
                .stderr(Stdio::null()),
        )?;
        write(
            &self.kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://{APISERVER}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\ncurrent-context: e2e\n"
            ),
        )?;

        // etcd
        let mut etcd = Command::new("etcd");
        etcd.args(["--name", "e2e", "--data-dir"])
            .arg(run.join("etcd"))
            .arg(format!("--listen-client-urls=http://{ETCD}"))
            .arg(format!("--advertise-client-urls=http://{ETCD}"))
            .arg(format!("--listen-peer-urls=http://{ETCD_PEER}"))
            .arg(format!("--initial-advertise-peer-urls=http://{ETCD_PEER}"))
            .arg(format!("--initial-cluster=e2e=http://{ETCD_PEER}"));
        self.spawn("etcd", &mut etcd)?;
        wait_for("etcd healthy", Duration::from_secs(60), || {
            self.check_alive()?;
            Ok(http_get(ETCD, "/health")
                .ok()
                .filter(|(c, b)| *c == 200 && b.contains("true"))
                .map(drop))
        })?;

        // kube-apiserver
        let key = pki.join("sa.key");
        let mut api = Command::new(bins.path("kube-apiserver"));
        api.arg(format!("--etcd-servers=http://{ETCD}"))
            .args([
                "--bind-address=127.0.0.1",
                "--secure-port=6443",
                "--insecure-port=0",
            ])
            .arg(format!("--cert-dir={}", pki.join("apiserver").display()))
            .arg(format!(
                "--token-auth-file={}",
                pki.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=Node,RBAC")
            // Proves the DaemonSet is not privileged: a privileged
            // container would be refused.
            .arg("--allow-privileged=false")
            .arg(format!("--service-account-key-file={}", key.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                key.display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-cluster-ip-range={SERVICE_RANGE}"))
            // A loopback apiserver cannot be a service endpoint.
            .arg("--endpoint-reconciler-type=none")
            .arg("--anonymous-auth=false");
        self.spawn("kube-apiserver", &mut api)?;
        wait_for("kube-apiserver ready", Duration::from_secs(120), || {
            self.check_alive()?;
            Ok(self
                .kubectl(&["get", "--raw", "/readyz"])
                .ok()
                .filter(|s| s.trim() == "ok")
                .map(drop))
        })?;

        // kube-controller-manager: the DaemonSet, service-account, token,
        // namespace and node-lifecycle controllers (no cloud, no IPAM).
        let mut kcm = Command::new(bins.path("kube-controller-manager"));
        kcm.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!(
                "--service-account-private-key-file={}",
                key.display()
            ))
            .arg(format!(
                "--root-ca-file={}",
                pki.join("apiserver/apiserver.crt").display()
            ))
            .args([
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--use-service-account-credentials=false",
            ]);
        self.spawn("kube-controller-manager", &mut kcm)?;

        // kube-scheduler with Griffin's extender.
        let sched_cfg = run.join("scheduler.yaml");
        write(
            &sched_cfg,
            &format!(
                "apiVersion: kubescheduler.config.k8s.io/v1beta1\nkind: KubeSchedulerConfiguration\nclientConnection:\n  kubeconfig: {kc}\nleaderElection:\n  leaderElect: false\nhealthzBindAddress: 127.0.0.1:10251\nmetricsBindAddress: 127.0.0.1:10251\nextenders:\n- urlPrefix: http://{GRIFFIN}\n  filterVerb: filter\n  prioritizeVerb: prioritize\n  weight: 1\n  nodeCacheCapable: false\n  # Griffin's own pod is scheduled before Griffin runs, and while it\n  # restarts: the extender may be absent.\n  ignorable: true\n",
                kc = self.kubeconfig.display()
            ),
        )?;
        let mut sched = Command::new(bins.path("kube-scheduler"));
        sched
            .arg(format!("--config={}", sched_cfg.display()))
            .args(["--secure-port=0", "--v=2"]);
        self.spawn("kube-scheduler", &mut sched)?;

        // containerd, and the images.
        self.start_containerd(sandbox_image)?;
        for i in images {
            self.import(i)?;
        }

        // kubelet
        self.prepare_cgroups()?;
        let kubelet_dir = Path::new("/var/lib/kubelet");
        fs::create_dir_all(kubelet_dir.join("device-plugins"))?;
        fs::create_dir_all(kubelet_dir.join("pod-resources"))?;
        let mut kubelet = Command::new(bins.path("kubelet"));
        kubelet
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--root-dir=/var/lib/kubelet")
            .arg(format!("--cert-dir={}", run.join("kubelet-pki").display()))
            .arg(format!(
                "--volume-plugin-dir={}",
                run.join("volume-plugins").display()
            ))
            .args([
                "--container-runtime=remote",
                &format!("--container-runtime-endpoint=unix://{MACHINE_DIR}/containerd.sock"),
                "--cgroup-driver=cgroupfs",
                &format!("--cgroup-root=/{CGROUP_ROOT}"),
                "--fail-swap-on=false",
                "--node-ip=127.0.0.1",
                "--address=127.0.0.1",
                "--healthz-bind-address=127.0.0.1",
                "--read-only-port=0",
                "--anonymous-auth=false",
                "--authorization-mode=AlwaysAllow",
                // Leaves the host's iptables alone.
                "--make-iptables-util-chains=false",
                // The kubelet's own placement, side by side with Griffin's.
                "--cpu-manager-policy=static",
                &format!("--kube-reserved={KUBE_RESERVED}"),
                "--topology-manager-policy=single-numa-node",
                // This machine's root has no CAP_SYS_RESOURCE.
                "--oom-score-adj=0",
                // Shared build machines run with little free disk.
                "--eviction-hard=memory.available<50Mi,nodefs.available<1%,imagefs.available<1%",
                "--image-gc-high-threshold=100",
                "--image-gc-low-threshold=99",
                "--v=2",
            ]);
        self.kubelet_cmd = Some((
            bins.path("kubelet"),
            kubelet
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        ));
        let t = Instant::now();
        self.spawn("kubelet", &mut kubelet)?;
        self.wait_node_ready()?;
        eprintln!(
            "e2e: node {} Ready {:.0?} after the kubelet started",
            self.node,
            t.elapsed()
        );
        Ok(())
    }

    /// Stops the kubelet by its pid (SIGTERM, as a service manager does;
    /// SIGKILL after 30 s) and starts it again with the same flags; its
    /// log goes on in `kubelet.log`. Returns the old and the new pid.
    pub(crate) fn restart_kubelet(&mut self) -> Result<(u32, u32)> {
        self.restart_kubelet_with(|| {})
    }

    /// [`Cluster::restart_kubelet`], running `between` after the old
    /// kubelet has stopped and before the new one starts.
    pub(crate) fn restart_kubelet_with(&mut self, between: impl FnOnce()) -> Result<(u32, u32)> {
        let (prog, args) = self
            .kubelet_cmd
            .clone()
            .context("the kubelet was never started")?;
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == "kubelet")
            .context("no kubelet process")?;
        let (_, mut old) = self.children.remove(i);
        let old_pid = old.id();
        host::kill(old_pid, libc::SIGTERM);
        let t = Instant::now();
        while old.try_wait()?.is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                old.kill()?;
                old.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        between();
        let mut log = fs::OpenOptions::new()
            .append(true)
            .open(self.logs.join("kubelet.log"))?;
        writeln!(
            log,
            "\n===== e2e: kubelet {old_pid} stopped (SIGTERM), started again ====="
        )?;
        let mut cmd = Command::new(prog);
        cmd.args(args);
        self.spawn("kubelet", &mut cmd)?;
        let new_pid = self.children.last().map_or(0, |(_, c)| c.id());
        Ok((old_pid, new_pid))
    }

    /// Replaces the kubelet's `--cpu-manager-policy` for its next start
    /// (see [`Cluster::restart_kubelet`]); the kubelet refuses a state file
    /// of another policy, so the caller removes it between the two.
    pub(crate) fn set_cpu_manager_policy(&mut self, policy: &str) -> Result<()> {
        let (_, args) = self
            .kubelet_cmd
            .as_mut()
            .context("the kubelet was never started")?;
        let flag = args
            .iter_mut()
            .find(|a| a.starts_with("--cpu-manager-policy="))
            .context("the kubelet has no --cpu-manager-policy flag")?;
        *flag = format!("--cpu-manager-policy={policy}");
        Ok(())
    }

    /// Waits for the node to be Ready (its kubelet alive).
    pub(crate) fn wait_node_ready(&mut self) -> Result<()> {
        let node = self.node.clone();
        wait_for(
            &format!("node {node} Ready"),
            Duration::from_secs(180),
            || {
                self.check_alive()?;
                let n = match self.get_json(&["get", "node", &node]) {
                    Ok(n) => n,
                    Err(_) => return Ok(None),
                };
                Ok(condition(&n, "Ready").then_some(()))
            },
        )
    }

    fn start_containerd(&mut self, sandbox_image: &str) -> Result<()> {
        let run = self.run.clone();
        let cni = run.join("cni");
        fs::create_dir_all(cni.join("net.d"))?;
        write(
            &cni.join("net.d/10-griffin-e2e.conflist"),
            &serde_json::to_string_pretty(&serde_json::json!({
                "cniVersion": "0.4.0",
                "name": "griffin-e2e",
                "plugins": [{
                    "type": "bridge",
                    "bridge": BRIDGE,
                    // No gateway: the bridge gets no address and the
                    // plugin leaves ip_forward alone; no masquerading.
                    "isGateway": false,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "dataDir": cni.join("ipam"),
                    },
                }],
            }))?,
        )?;
        let config = run.join("containerd.toml");
        write(
            &config,
            &format!(
                r#"version = 2
root = "{root}"
state = "{MACHINE_DIR}/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{MACHINE_DIR}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # This machine's root lacks CAP_SYS_RESOURCE: the sandbox's
  # oom_score_adj of -998 would fail inside runc.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{MACHINE_DIR}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{confdir}"
    max_conf_num = 1
{nri}"#,
                root = run.join("containerd").display(),
                opt = run.join("containerd-opt").display(),
                confdir = cni.join("net.d").display(),
                nri = match &self.containerd_bin {
                    // NRI (containerd 1.7): on, at its default socket (the
                    // DaemonSet mounts that directory; Griffin's pod is
                    // its plugin), plugin directories inside the run's.
                    Some(_) => format!(
                        "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false\n  socket_path = \"{}\"\n  plugin_path = \"{}\"\n  plugin_config_path = \"{}\"\n",
                        host::NRI_SOCKET,
                        run.join("nri/plugins").display(),
                        run.join("nri/conf.d").display()
                    ),
                    None => String::new(),
                },
            ),
        )?;
        let mut c = match &self.containerd_bin {
            Some(bin) => {
                // Its own shim first in PATH (runc stays Debian's).
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut dirs = vec![bin.clone()];
                dirs.extend(std::env::split_paths(&path));
                let mut c = Command::new(bin.join("containerd"));
                c.env("PATH", std::env::join_paths(dirs)?);
                c
            }
            None => Command::new("containerd"),
        };
        c.arg("--config").arg(&config);
        self.spawn("containerd", &mut c)?;
        wait_for("containerd serving", Duration::from_secs(60), || {
            self.check_alive()?;
            Ok(self.ctr(&["version"]).ok().map(drop))
        })?;
        if self.containerd_bin.is_some() {
            let sock = Path::new(host::NRI_SOCKET);
            wait_for("containerd's NRI socket", Duration::from_secs(30), || {
                Ok(sock.exists().then_some(()))
            })?;
        }
        Ok(())
    }

    /// Creates `/griffin-e2e` in every cgroup hierarchy (the kubelet's
    /// `--cgroup-root` must exist), cpuset's with its parent's CPUs and
    /// memory nodes.
    fn prepare_cgroups(&self) -> Result<()> {
        for d in host::cgroup_trees() {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            let parent = d.parent().context("a cgroup tree has a parent")?;
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if d.join(f).exists() {
                    let v = fs::read_to_string(parent.join(f))?;
                    fs::write(d.join(f), v.trim())
                        .with_context(|| format!("writing {}", d.join(f).display()))?;
                }
            }
        }
        Ok(())
    }

    /// Imports an OCI archive into the CRI namespace and checks containerd
    /// reports it under its name with the expected digest.
    pub(crate) fn import(&self, image: &crate::image::Built) -> Result<()> {
        self.ctr(&[
            "images",
            "import",
            image.archive.to_str().context("archive path")?,
        ])?;
        let list = self.ctr(&["images", "list"])?;
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(image.name.as_str()))
            .with_context(|| format!("containerd does not list {} after the import", image.name))?;
        if !line.contains(&image.digest) {
            bail!(
                "containerd lists {} with another digest than {}: {line}",
                image.name,
                image.digest
            );
        }
        Ok(())
    }

    /// Stops the cluster: workloads deleted through the API first (so the
    /// kubelet and CNI clean their own state), then [`host::teardown`].
    /// Returns what teardown did and what is left.
    pub(crate) fn teardown(&mut self) -> (Vec<String>, Vec<String>) {
        if self.torn_down {
            return (Vec::new(), Vec::new());
        }
        self.torn_down = true;
        let mut did = Vec::new();
        let api_up = self.kubectl(&["get", "--raw", "/readyz"]).is_ok();
        let kubelet_up = self
            .children
            .iter_mut()
            .any(|(n, c)| n == "kubelet" && c.try_wait().ok().flatten().is_none());
        if api_up && kubelet_up {
            let _ = self.kubectl(&[
                "delete",
                "namespace",
                "griffin",
                "--wait=false",
                "--ignore-not-found",
            ]);
            let _ = self.kubectl(&[
                "delete",
                "pods",
                "--all",
                "-n",
                "default",
                "--grace-period=1",
                "--wait=false",
            ]);
            let t = Instant::now();
            // The kubelet stops the containers and sandboxes (CNI DEL).
            while t.elapsed() < Duration::from_secs(60) {
                let tasks = self.ctr(&["tasks", "list", "-q"]).unwrap_or_default();
                if tasks.trim().is_empty() {
                    did.push(format!(
                        "the kubelet stopped every pod in {:.0?}",
                        t.elapsed()
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        // Children are stopped by pid through the record; reap the handles.
        did.extend(host::teardown(&self.record));
        for (_, c) in &mut self.children {
            let _ = c.try_wait();
        }
        let left = host::leftovers(&self.record);
        (did, left)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.torn_down {
            let (did, left) = self.teardown();
            for d in did {
                eprintln!("e2e teardown: {d}");
            }
            for l in left {
                eprintln!("e2e teardown: LEFT BEHIND: {l}");
            }
        }
    }
}

/// Whether the object's status has condition `kind` with status True.
pub(crate) fn condition(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}
