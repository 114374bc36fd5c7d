//! `griffin daemon`: the long-lived per-node process. It discovers the node,
//! serves the read-only node-score endpoint and the GS-Scheduler listener,
//! runs the RTT probes, until SIGTERM/SIGINT (graceful: `/readyz` turns
//! 503, in-flight requests finish on both listeners). It discovers again on
//! SIGHUP and, when serving the live node (`root` is `/`), on kernel uevents
//! that change the hardware (PCI add/remove, VF creation, driver binding,
//! CPU on/offline); a failed re-discovery keeps the previous topology.
//! Allocation changes come only through the control socket in the state
//! directory ([`griffin_runtime::control::Server`]), never over TCP; the
//! allocation state is opened (reconciled) once before serving, so a
//! damaged checkpoint is repaired before the first HTTP answer. The XDP splits
//! of the configuration are attached (or adopted from their pins) at start,
//! their redirect targets follow link state (withdrawn when down or gone),
//! their counters are on `/metrics`, and they are left running on exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use griffin_ebpf::split::{self, Split, SplitPaths};
use griffin_runtime::config::{Config, DEFAULT_TOML};
use griffin_scheduler_glue::{gsch, http, node, serve};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file (TOML or YAML by extension) over the embedded
    /// default; unknown keys are errors. Flags override the file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// State directory holding the allocator checkpoint [default: /var/lib/griffin].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Node-score endpoint address [default: 127.0.0.1:8420]; port 0 picks one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// GS-Scheduler compatible listener [default: 127.0.0.1:8787].
    #[arg(long)]
    gsch_listen: Option<SocketAddr>,
    /// Discovery root (as `griffin topo --root`) [default: /].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Cgroup root allocations are enforced below [default: detected].
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// CPUs never handed out exclusively (cpulist).
    #[arg(long)]
    reserved: Option<String>,
}

impl DaemonArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(v) = &self.state_dir {
            c.state_dir.clone_from(v);
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.gsch_listen {
            c.gsch_listen = v;
        }
        if let Some(v) = &self.root {
            c.root.clone_from(v);
        }
        if let Some(v) = &self.cgroup_root {
            c.cgroup_root.clone_from(v);
        }
        if let Some(v) = &self.reserved {
            c.reserved.clone_from(v);
        }
        c.validate()?;
        Ok(c)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    if args.print_default_config {
        print!("{DEFAULT_TOML}");
        return Ok(());
    }
    let cfg = args.config()?;
    let files = raise_open_files();
    let t = std::time::Instant::now();
    let topo = discover(&cfg.root)?;
    let discovery = t.elapsed();
    let reserved = griffin_devices::parse::cpulist(&cfg.reserved).context("reserved")?;
    // Before anything is changed on the node: a second daemon on the same
    // state stops here.
    let control = griffin_runtime::control::Server::bind(&cfg.state_dir)?;
    let node = Arc::new(node::Node::new(
        topo,
        control.store(),
        griffin_runtime::cpuset::CpuSet::from(&reserved),
        if cfg.node_name.is_empty() {
            host_name()
        } else {
            cfg.node_name.clone()
        },
        cfg.cluster_name.clone(),
    ));
    node.metrics.discovery_seconds.set(discovery.as_secs_f64());
    node.metrics.discoveries.inc();
    let open = manager_opener(node.clone(), cfg.state_dir.clone(), cfg.cgroup_root.clone());
    // Reconcile once before serving: a damaged checkpoint is repaired now,
    // not at the first control request, so the HTTP side sees the repaired
    // state from its first answer.
    if let Err(e) = open() {
        tracing::error!(
            error = %griffin_devices::Chain(&*e),
            "cannot open the allocation state; control requests will retry"
        );
    }
    node.invalidate();
    let splits = attach_splits(&cfg.xdp)?;
    node.metrics
        .register_collector(Box::new(XdpMetrics(splits.clone())));
    // The one stop signal of the daemon: cancelled on SIGTERM/SIGINT; every
    // listener, task and thread ends on it.
    let stop = CancellationToken::new();
    let watchers = watch_links(&splits, &stop);
    let limits = serve::Limits::for_files(files, 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let gsch_listener = tokio::net::TcpListener::bind(cfg.gsch_listen)
            .await
            .with_context(|| format!("binding {} (GS-Scheduler listener)", cfg.gsch_listen))?;
        // Installed before the address is printed: whoever reads that line
        // may send SIGHUP at once, which would otherwise kill the process.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        // Subscribed before the address is printed too, so a change made
        // once the daemon says it serves is never missed.
        let uevents = (cfg.root == std::path::Path::new("/")).then(open_uevents).flatten();
        let (term, int) = {
            use tokio::signal::unix::{signal, SignalKind};
            (
                signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            )
        };
        let addr = listener.local_addr()?;
        let gsch_addr = gsch_listener.local_addr()?;
        tracing::info!(%addr, %gsch_addr, max_connections = limits.max_connections, "serving");
        // The lines tests and operators look for.
        say(&format!("griffin: node-score endpoint on http://{addr} (GET /v1/node, POST /v1/score)"));
        say(&format!("griffin: GS-Scheduler endpoint on http://{gsch_addr} (/monitoring/..., /v1/gsch/resources)"));
        let g = Arc::new(gsch::Gsch {
            node: node.clone(),
            probes: cfg.probes.clone(),
            cache: Arc::default(),
        });
        tokio::spawn(stop.clone().run_until_cancelled_owned(gsch::run_probes(
            cfg.probes.clone(),
            g.cache.clone(),
        )));
        let (changed, changes) = tokio::sync::mpsc::unbounded_channel();
        if let Some(l) = uevents {
            watch_uevents(l, changed.clone(), stop.clone());
        }
        tokio::spawn(stop.clone().run_until_cancelled_owned(on_sighup(hup, changed)));
        tokio::spawn(rediscover(node.clone(), cfg.root.clone(), changes));
        let control_task = tokio::spawn(control.serve(
            open,
            {
                let node = node.clone();
                move || node.invalidate()
            },
            stop.clone().cancelled_owned(),
        ));
        tokio::spawn({
            let (node, stop, mut term, mut int) = (node.clone(), stop.clone(), term, int);
            async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
                node.ready.store(false, Ordering::Relaxed);
                stop.cancel();
            }
        });
        let router = serve::guard(
            http::router(node.clone(), cfg.max_body_bytes).merge(gsch::resources_router(g.clone())),
            limits,
            http::error_body,
        );
        let gsch_server = tokio::spawn(serve::serve(
            gsch_listener,
            serve::guard(gsch::router(g), limits, gsch::error_body),
            limits,
            stop.clone().cancelled_owned(),
        ));
        serve::serve(listener, router, limits, stop.clone().cancelled_owned())
            .await
            .context("serving")?;
        gsch_server
            .await
            .context("GS-Scheduler listener")?
            .context("serving the GS-Scheduler listener")?;
        for w in watchers {
            let _ = w.join();
        }
        match control_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %griffin_devices::Chain(&e), "control socket"),
            Err(e) => tracing::warn!(error = %e, "control socket task"),
        }
        say(&format!(
            "griffin: stopped after {} score requests",
            node.metrics.score_requests.get()
        ));
        anyhow::Ok(())
    })
}

/// Raises the soft open-file limit to the hard one (a node agent serves
/// many connections; systemd and container runtimes start it at 1024) and
/// returns the limit in force.
fn raise_open_files() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            1024
        }
    }
}

/// A line on stdout for whoever started the daemon; a closed stdout (the
/// starter went away) is not a reason to stop serving.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn discover(root: &std::path::Path) -> anyhow::Result<griffin_devices::Topology> {
    griffin_devices::discover(root)
        .with_context(|| format!("discovering the node below {}", root.display()))
}

/// Why a re-discovery was asked for.
type Change = String;

async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    changed: tokio::sync::mpsc::UnboundedSender<Change>,
) {
    while hup.recv().await.is_some() {
        if changed.send("SIGHUP".into()).is_err() {
            return;
        }
    }
}

fn open_uevents() -> Option<griffin_runtime::uevent::Listener> {
    griffin_runtime::uevent::Listener::open()
        .inspect_err(|e| {
            tracing::warn!(
                error = %e,
                "no uevents: hardware changes are picked up on SIGHUP only"
            );
        })
        .ok()
}

/// Reads kernel uevents on a thread of its own (a blocking netlink socket)
/// and forwards those that change the topology.
fn watch_uevents(
    listener: griffin_runtime::uevent::Listener,
    changed: tokio::sync::mpsc::UnboundedSender<Change>,
    stop: CancellationToken,
) {
    use griffin_runtime::uevent;
    let spawned = std::thread::Builder::new()
        .name("uevents".into())
        .spawn(move || {
            while !stop.is_cancelled() {
                match listener.next(Duration::from_millis(500)) {
                    Ok(Some(e)) if uevent::changes_topology(&e) => {
                        tracing::debug!(action = %e.action, devpath = %e.devpath, "uevent");
                        let why = format!("uevent {} {} {}", e.action, e.subsystem, e.devpath);
                        if changed.send(why).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "uevents stopped");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the uevent thread");
    }
}

/// Discovers again after each change, coalescing bursts (creating 64 VFs is
/// hundreds of uevents): it waits until the events have been quiet for a
/// moment, then discovers once.
async fn rediscover(
    node: Arc<node::Node>,
    root: PathBuf,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
) {
    const QUIET: Duration = Duration::from_millis(200);
    while let Some(first) = changes.recv().await {
        let mut coalesced = 1usize;
        while let Ok(Some(_)) = tokio::time::timeout(QUIET, changes.recv()).await {
            coalesced += 1;
        }
        let t = std::time::Instant::now();
        let r = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || discover(&root)).await
        };
        match r {
            Ok(Ok(topo)) => {
                let elapsed = t.elapsed();
                tracing::info!(
                    reason = %first,
                    coalesced,
                    cpus = topo.online_cpus.len(),
                    devices = topo.devices.len(),
                    ms = elapsed.as_secs_f64() * 1e3,
                    "re-discovered the node"
                );
                node.set_topo(topo);
                node.metrics.discovery_seconds.set(elapsed.as_secs_f64());
                node.metrics.discoveries.inc();
            }
            Ok(Err(e)) => tracing::error!(
                reason = %first,
                error = format!("{e:#}"),
                "re-discovery failed; keeping the previous topology"
            ),
            Err(e) => tracing::error!(error = %e, "re-discovery task failed"),
        }
    }
}

/// Opens the allocation manager for one control operation: the daemon's
/// topology, cgroup root and reserved CPUs (reconciling on open).
fn manager_opener(
    node: Arc<node::Node>,
    state_dir: PathBuf,
    cgroup_root: PathBuf,
) -> impl Fn() -> Result<griffin_runtime::manager::Manager, griffin_runtime::control::BoxError>
       + Send
       + Sync
       + 'static {
    move || {
        use griffin_runtime::enforce::Cgroups;
        let cgroups = if cgroup_root.as_os_str().is_empty() {
            Cgroups::detect()?
        } else {
            Cgroups::open(&cgroup_root)?
        };
        let m = griffin_runtime::manager::Manager::open(
            (*node.topo()).clone(),
            &state_dir,
            cgroups,
            node.reserved.clone(),
        )?;
        for r in &m.report {
            tracing::info!("reconcile: {r}");
        }
        Ok(m)
    }
}

fn attach_splits(xdp: &[griffin_runtime::config::XdpSplit]) -> anyhow::Result<Vec<Split>> {
    let paths = SplitPaths::default();
    let mut splits = Vec::new();
    for x in xdp {
        let attached = split::attach(&paths, &x.iface, &x.rules, x.mode)
            .with_context(|| format!("xdp split on {}", x.iface))?;
        for w in &attached.warnings {
            tracing::warn!(iface = %x.iface, "{w}");
        }
        tracing::info!(iface = %x.iface, "xdp: {attached}");
        splits.push(attached.split);
    }
    Ok(splits)
}

/// One link watcher thread per split (see [`Split::watch_links`]).
fn watch_links(splits: &[Split], stop: &CancellationToken) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for s in splits {
        let stop = stop.clone();
        match s.watch_links(move || stop.is_cancelled()) {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(
                iface = %s.iface(),
                error = %griffin_devices::Chain(&e),
                "no link watcher: redirect targets are not withdrawn when down"
            ),
        }
    }
    threads
}

/// The XDP counters, read from the BPF maps at scrape time.
#[derive(Debug)]
struct XdpMetrics(Vec<Split>);

impl prometheus_client::collector::Collector for XdpMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::MetricType;
        let mut snapshot = Vec::new();
        for s in &self.0 {
            match s.counters() {
                Ok(c) => snapshot.push((s.iface(), c)),
                Err(e) => {
                    tracing::warn!(iface = %s.iface(), error = %griffin_devices::Chain(&e), "reading XDP counters")
                }
            }
        }
        type Get = fn(&griffin_ebpf::Counters) -> Vec<(String, griffin_ebpf::Counter)>;
        let families: [(&str, &str, &str, Get); 3] = [
            ("xdp_action", "action", "Frames (and bytes) by XDP action", |c| {
                let a = &c.actions;
                [("pass", a.pass), ("drop", a.drop), ("redirect", a.redirect), ("xsk", a.xsk), ("cpu", a.cpu)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
            }),
            ("xdp_frames", "outcome", "Frames that failed to parse, fell back to the stack for a missing target, or matched no rule", |c| {
                vec![
                    ("parse_failure".into(), c.parse_failures),
                    ("fallback".into(), c.fallbacks),
                    ("no_match".into(), c.no_match),
                ]
            }),
            ("xdp_rule", "rule", "Frames (and bytes) per rule id of the active rule set (from zero at each rule change)", |c| {
                c.rules.iter().map(|(id, v)| (id.to_string(), *v)).collect()
            }),
        ];
        for (name, key, help, get) in families {
            for (suffix, bytes) in [("packets", false), ("bytes", true)] {
                let full = format!("{name}_{suffix}");
                let mut family =
                    encoder.encode_descriptor(&full, help, None, MetricType::Counter)?;
                for (iface, c) in &snapshot {
                    for (label, v) in get(c) {
                        let labels = [("iface", (*iface).to_owned()), (key, label)];
                        let value = if bytes { v.bytes } else { v.packets };
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
