//! `griffin`: the node runtime's command line.

mod accel_cli;
mod daemon_cli;
mod devices_cli;
mod relay_cli;
mod sriov_cli;
mod xdp_cli;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// Griffin: node runtime and data-path accelerator for cloud-edge clusters.
///
/// Discovers CPUs, NUMA nodes and PCI devices from sysfs and reports how far
/// apart every pair of devices is, in the `nvidia-smi topo -m` vocabulary.
#[derive(Debug, Parser)]
#[command(name = "griffin", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,

    /// Log filter, as RUST_LOG (e.g. `info`, `griffin_devices=debug`).
    #[arg(long, default_value = "warn", global = true, env = "GRIFFIN_LOG")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the node's topology: the device distance matrix with CPU and
    /// NUMA affinity (like `nvidia-smi topo -m`, for every device class).
    ///
    /// Levels: X (self), PIX (at most one PCIe switch), PXB (several
    /// switches under one root port), PHB (same host bridge), NODE (other
    /// host bridge, same NUMA node), SYS (other NUMA node, or unknown).
    Topo {
        /// Read sysfs/procfs below this directory instead of `/` (e.g. a
        /// tree made by `cargo xtask capture-sysfs`).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print the whole topology as one JSON object (schema in
        /// docs/topology-json.md).
        #[arg(long)]
        json: bool,
        /// Show devices of kind `other` even on nodes with many functions.
        #[arg(long)]
        all: bool,
    },
    /// Allocate exclusive CPUs (and memory nodes, devices) to a workload,
    /// confining it with a cpuset cgroup. Prints the allocation.
    Alloc(AllocArgs),
    /// Release an allocation: its CPUs return to the shared pool.
    Release {
        #[command(flatten)]
        state: StateArgs,
        /// Allocation id (as printed by `griffin alloc`).
        id: String,
    },
    /// List allocations (after reconciling the checkpoint with the cgroups).
    Allocs {
        #[command(flatten)]
        state: StateArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Attach the XDP classifier with a rules file, show its rules and counters, detach it.
    Xdp(xdp_cli::XdpArgs),
    /// Deliver the UDP payloads of the frames the split on
    /// IFACE steers to AF_XDP (rules with `action = "xsk"`) to a workload.
    ///
    /// One AF_XDP socket per queue is registered in the split's XSKMAP under
    /// its queue (zero-copy when the driver supports it, else copy mode, said
    /// in the log); each queue runs its own thread that strips the Ethernet,
    /// IP and UDP headers and sends the payloads in batches through io_uring.
    /// A consumer that is absent or full never holds the NIC queue: its
    /// datagrams are dropped and counted, and it is served again when it comes
    /// back. Counters are printed every --interval seconds and published in
    /// /run/griffin/relay/NAME.json, where `griffin xdp stats IFACE` shows
    /// them. SIGINT or SIGTERM stops the relay (its sockets leave the XSKMAP:
    /// the split's frames fall back to the kernel stack).
    ///
    /// Destinations (--to):
    ///   udp:ADDR:PORT   UDP from a socket opened in --netns (a pod's, e.g.
    ///                   /run/netns/NAME or /proc/PID/ns/net)
    ///   unix:PATH       a Unix datagram socket the consumer bound
    ///   shm:PATH        a shared-memory ring per queue, its memfd handed out on
    ///                   the Unix stream socket PATH.QUEUE (layout in the docs
    ///                   of griffin_runtime::relay::shm)
    #[command(verbatim_doc_comment)]
    Relay(relay_cli::RelayArgs),
    /// SR-IOV: show VFs, and reconcile VF counts and per-VF settings to a
    /// config's `sriov` list (idempotent, no drain).
    Sriov(sriov_cli::SriovArgs),
    /// List the device pools served to the kubelet (resource, devices with
    /// PCI address, health and NUMA node), or explain the devices Griffin
    /// prefers for a request (`griffin devices prefer`).
    ///
    /// Pools come from the `[[pools]]` of a Griffin config (--config) and
    /// from an sriov-network-device-plugin config.json taken unchanged
    /// (--sriovdp-config, or the config's `sriovdp_config`).
    Devices(devices_cli::DevicesArgs),
    /// List the pods' acceleration records from the daemon (GET
    /// /v1/accelerations), or check an annotation value offline
    /// (`griffin accelerations validate FILE|-`).
    ///
    /// A pod asks for acceleration with the annotation
    /// `griffin.gedge.io/acceleration`, its value JSON or YAML: the GEdge
    /// seed's fields `topologyAware` (true/false), `communication` (SRIOV,
    /// RDMA) and `compute` (GPU, FPGA, AIX, NPU) in the seed's forms
    /// (`'["SRIOV", "RDMA"]'`, `'["GPU, FPGA, AIX..."]'`, plain lists), bare
    /// or inside `Acceleration: {...}`, and Griffin's `placement` (none,
    /// best-effort, restricted, single-numa-node), `isolation` (none,
    /// isolated), `flows` (list of {name, protocol udp|tcp|any, ports,
    /// prefixes}: data flows steered to the pod by the XDP split) and
    /// `containers` (default: every container). Unknown fields are refused;
    /// errors name the field, e.g. `flows[0].ports: 70000 is not a port`.
    #[command(verbatim_doc_comment)]
    Accelerations(accel_cli::AccelArgs),
    /// Run the node daemon: discover the node and serve the read-only
    /// node-score HTTP endpoint (GET /v1/node, POST /v1/score,
    /// POST /v1/score:batch, /healthz, /readyz) until SIGTERM.
    Daemon(daemon_cli::DaemonArgs),
}

/// Where allocations live. When a `griffin daemon` serves the state
/// directory (its control socket `STATE_DIR/control.sock` answers), the
/// command goes through it and the daemon's own cgroup root, discovery root
/// and reserved CPUs apply; otherwise the command acts on the directory
/// itself, under its lock.
#[derive(Debug, clap::Args)]
struct StateArgs {
    /// State directory holding the allocation checkpoint.
    #[arg(long, default_value = "/var/lib/griffin")]
    state_dir: PathBuf,
    /// cpuset cgroup hierarchy root (default: found in /proc/self/mountinfo:
    /// cgroup v2 with cpuset, else the v1 cpuset mount).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Discovery root (as `griffin topo --root`) [default: /].
    #[arg(long)]
    root: Option<PathBuf>,
    /// CPUs never handed out exclusively (cpulist, e.g. `0-1`).
    #[arg(long)]
    reserved: Option<String>,
    /// Act on the state directory directly even when a daemon serves it.
    #[arg(long)]
    no_daemon: bool,
    /// Seconds to wait for the daemon's answer (an allocation that moves a
    /// process's memory can take seconds).
    #[arg(long, default_value_t = griffin_runtime::control::DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    daemon_timeout: u64,
}

impl StateArgs {
    /// Sends `req` to the daemon serving the state directory, if one does.
    fn via_daemon(
        &self,
        req: griffin_runtime::control::Request,
    ) -> anyhow::Result<Option<griffin_runtime::control::Reply>> {
        use griffin_runtime::control::{self, Reply};
        if self.no_daemon {
            return Ok(None);
        }
        let Some(reply) = control::call(
            &self.state_dir,
            &req,
            std::time::Duration::from_secs(self.daemon_timeout),
        )?
        else {
            return Ok(None);
        };
        let path = control::socket_path(&self.state_dir);
        tracing::info!(socket = %path.display(), "via the daemon");
        for (flag, given) in [
            ("--cgroup-root", self.cgroup_root.is_some()),
            ("--root", self.root.is_some()),
            ("--reserved", self.reserved.is_some()),
        ] {
            if given {
                eprintln!(
                    "griffin: {flag} ignored: the daemon at {} applies its own (use --no-daemon to act directly)",
                    path.display()
                );
            }
        }
        match reply {
            Reply::Error { message } => Err(anyhow::Error::msg(message))
                .with_context(|| format!("the daemon at {}", path.display())),
            r => Ok(Some(r)),
        }
    }
}

#[derive(Debug, clap::Args)]
struct AllocArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Exclusive CPUs (0: the workload joins the shared pool).
    #[arg(long)]
    cpus: u32,
    /// Memory to account on the chosen NUMA nodes, bytes.
    #[arg(long, default_value_t = 0)]
    memory: u64,
    /// Topology policy: none, best-effort, restricted, single-numa-node.
    #[arg(long, default_value = "best-effort")]
    policy: griffin_runtime::alloc::Policy,
    /// Devices to sit near, by PCI address (comma-separated).
    #[arg(long, value_delimiter = ',')]
    near: Vec<griffin_devices::PciAddress>,
    /// Devices by kind and count, e.g. `gpu:1,nic-vf:2`.
    #[arg(long, value_delimiter = ',')]
    device: Vec<String>,
    /// Whole physical cores only.
    #[arg(long)]
    full_pcpus_only: bool,
    /// Spread CPUs evenly over the NUMA nodes used.
    #[arg(long)]
    distribute_across_numa: bool,
    /// Use the closest NUMA nodes (SLIT) when several are needed.
    #[arg(long)]
    prefer_closest_numa: bool,
    /// cgroup v2: make the CPUs an isolated cpuset partition (no load
    /// balancing, taken out of every other cpuset); with --pid only.
    #[arg(long)]
    isolate: bool,
    /// Confine this cgroup (relative to the cgroup root).
    #[arg(long, conflicts_with = "pid")]
    cgroup: Option<String>,
    /// Confine this process and its threads.
    #[arg(long)]
    pid: Option<u32>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad log filter {filter:?}"))?;
    // Colour only for a person at a terminal: log files and collectors get
    // plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("griffin: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Topo { root, json, all } => topo(&root, json, all),
        Command::Alloc(a) => alloc_cmd(a),
        Command::Release { state, id } => release_cmd(&state, id),
        Command::Allocs { state, json } => allocs_cmd(&state, json),
        Command::Xdp(a) => xdp_cli::run(a),
        Command::Relay(a) => relay_cli::run(a),
        Command::Sriov(a) => sriov_cli::run(a),
        Command::Devices(a) => devices_cli::run(a),
        Command::Accelerations(a) => accel_cli::run(a),
        Command::Daemon(a) => daemon_cli::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A closed pipe (`griffin topo --json | head`) is not a failure.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("griffin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `e` is stdout closed under us (`griffin topo | head`): only
/// [`stdout`]'s own broken pipe; one on a socket (a daemon gone mid-request)
/// is a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<StdoutClosed>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// The mark [`stdout`] puts on a broken pipe.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout is closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Locked stdout whose broken pipe is marked [`StdoutClosed`], which
/// [`is_broken_pipe`] forgives.
pub(crate) fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// See [`stdout`].
pub(crate) struct Stdout(std::io::StdoutLock<'static>);

impl Stdout {
    fn mark(e: std::io::Error) -> std::io::Error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
        } else {
            e
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(Self::mark)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Self::mark)
    }
}

fn topo(root: &std::path::Path, json: bool, all: bool) -> anyhow::Result<()> {
    let topo = griffin_devices::discover(root)
        .with_context(|| format!("discovering the node below {}", root.display()))?;
    let mut out = std::io::BufWriter::new(stdout());
    if json {
        serde_json::to_writer_pretty(&mut out, &topo)?;
        writeln!(out)?;
    } else {
        out.write_all(griffin_devices::render::table(&topo, all).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn open_manager(s: &StateArgs) -> anyhow::Result<griffin_runtime::manager::Manager> {
    use griffin_runtime::enforce::Cgroups;
    let root = s.root.as_deref().unwrap_or(std::path::Path::new("/"));
    let topo = griffin_devices::discover(root)
        .with_context(|| format!("discovering the node below {}", root.display()))?;
    let cgroups = match &s.cgroup_root {
        Some(r) => Cgroups::open(r)?,
        None => Cgroups::detect()?,
    };
    let reserved = griffin_devices::parse::cpulist(s.reserved.as_deref().unwrap_or(""))
        .context("--reserved")?;
    let m = griffin_runtime::manager::Manager::open(
        topo,
        &s.state_dir,
        cgroups,
        griffin_runtime::cpuset::CpuSet::from(&reserved),
    )?;
    for r in &m.report {
        eprintln!("griffin: reconcile: {r}");
    }
    Ok(m)
}

fn alloc_cmd(a: AllocArgs) -> anyhow::Result<()> {
    use griffin_runtime::alloc::{DeviceWant, Options, Request};
    use griffin_runtime::checkpoint::Target;
    let mut devices: Vec<DeviceWant> = a.near.iter().map(|&p| DeviceWant::Address(p)).collect();
    for d in &a.device {
        let (kind, count) = d.split_once(':').unwrap_or((d, "1"));
        devices.push(DeviceWant::Kind {
            kind: kind
                .parse()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--device {d}"))?,
            count: count
                .parse()
                .with_context(|| format!("--device {d}: bad count"))?,
        });
    }
    let req = Request {
        cpus: a.cpus,
        memory_bytes: a.memory,
        devices,
        policy: a.policy,
        options: Options {
            full_pcpus_only: a.full_pcpus_only,
            distribute_across_numa: a.distribute_across_numa,
            prefer_closest_numa: a.prefer_closest_numa,
            isolated_partition: a.isolate,
        },
        assigned: Vec::new(),
    };
    let target = match (a.cgroup, a.pid) {
        (Some(c), _) => Target::Cgroup(c),
        (None, Some(p)) => Target::Pid(p),
        (None, None) => Target::None,
    };
    use griffin_runtime::control::{Reply, Request as Control};
    let v = match a.state.via_daemon(Control::Alloc {
        request: req.clone(),
        target: target.clone(),
    })? {
        Some(Reply::Allocated(v)) => v,
        Some(other) => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        None => open_manager(&a.state)?.allocate(req, target)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_alloc(&v);
    }
    Ok(())
}

fn print_alloc(v: &griffin_runtime::manager::AllocationView) {
    let devices: Vec<String> = v.devices.iter().map(ToString::to_string).collect();
    println!(
        "{}  cpus {}  mems {:?}  devices [{}]  cgroup {}  target {:?}",
        v.id,
        if v.cpus.is_empty() {
            "shared".to_owned()
        } else {
            v.cpus.to_string()
        },
        v.mems,
        devices.join(","),
        v.cgroup,
        v.target
    );
    for r in &v.reasons {
        println!("    {r}");
    }
}

fn release_cmd(s: &StateArgs, id: String) -> anyhow::Result<()> {
    use griffin_runtime::control::{Reply, Request as Control};
    match s.via_daemon(Control::Release { id: id.clone() })? {
        Some(Reply::Released { .. }) => {}
        Some(other) => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        None => open_manager(s)?.release(&id)?,
    }
    println!("released {id}");
    Ok(())
}

fn allocs_cmd(s: &StateArgs, json: bool) -> anyhow::Result<()> {
    use griffin_runtime::control::{Reply, Request as Control};
    let (list, shared_pool) = match s.via_daemon(Control::List {})? {
        Some(Reply::List {
            allocations,
            shared_pool,
        }) => (allocations, shared_pool),
        Some(other) => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        None => {
            let m = open_manager(s)?;
            let pool = m.checkpoint().state.shared_pool(m.topology()).to_string();
            (m.list(), pool)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("no allocations; shared pool {shared_pool}");
    } else {
        for v in &list {
            print_alloc(v);
        }
        println!("shared pool {shared_pool}");
    }
    Ok(())
}
