//! `griffin daemon`: the long-lived per-node process. It discovers the node,
//! serves the read-only node-score endpoint and the GS-Scheduler listener,
//! runs the RTT probes, until SIGTERM/SIGINT (graceful: `/readyz` turns
//! 503, in-flight requests finish on both listeners). It discovers again on
//! SIGHUP and, when serving the live node (`root` is `/`), on kernel uevents
//! that change the hardware (PCI add/remove, VF creation, driver binding,
//! CPU on/offline); a failed re-discovery keeps the previous topology.
//! Allocation changes come only through the control socket in the state
//! directory ([`griffin_runtime::control`]), never over TCP. The XDP splits
//! of the configuration are attached (or adopted from their pins) at start,
//! their redirect targets follow link state (withdrawn when down or gone),
//! their counters are on `/metrics`, and they are left running on exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use griffin_ebpf::split::{self, Split, SplitPaths};
use griffin_runtime::config::{Config, DEFAULT_TOML};
use griffin_scheduler_glue::{gsch, http};

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
    let t = std::time::Instant::now();
    let topo = discover(&cfg.root)?;
    let discovery = t.elapsed();
    let reserved = griffin_devices::parse::cpulist(&cfg.reserved).context("reserved")?;
    let node = Arc::new(http::Node::new(
        topo,
        cfg.state_dir.clone(),
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
    // Before anything is changed on the node: a second daemon on the same
    // state stops here.
    let control = bind_control(&cfg.state_dir)?;
    let splits = attach_splits(&cfg.xdp)?;
    node.metrics
        .register_collector(Box::new(XdpMetrics(splits.clone())));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watchers = watch_links(&splits, &watch_stop);
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
        let control = tokio::net::UnixListener::from_std(control)
            .context("registering the control socket")?;
        let (term, int) = {
            use tokio::signal::unix::{signal, SignalKind};
            (
                signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            )
        };
        let addr = listener.local_addr()?;
        let gsch_addr = gsch_listener.local_addr()?;
        tracing::info!(%addr, %gsch_addr, "serving");
        // The lines tests and operators look for.
        say(&format!("griffin: node-score endpoint on http://{addr} (GET /v1/node, POST /v1/score)"));
        say(&format!("griffin: GS-Scheduler endpoint on http://{gsch_addr} (/monitoring/..., /v1/gsch/resources)"));
        let g = Arc::new(gsch::Gsch {
            node: node.clone(),
            probes: cfg.probes.clone(),
            cache: Arc::default(),
        });
        tokio::spawn(gsch::run_probes(cfg.probes.clone(), g.cache.clone()));
        let (changed, changes) = tokio::sync::mpsc::unbounded_channel();
        let uevents_stop = Arc::new(AtomicBool::new(false));
        if let Some(l) = uevents {
            watch_uevents(l, changed.clone(), uevents_stop.clone());
        }
        tokio::spawn(on_sighup(hup, changed));
        tokio::spawn(rediscover(node.clone(), cfg.root.clone(), changes));
        let stop = Arc::new(tokio::sync::Notify::new());
        let (control_stop, control_stop_rx) = tokio::sync::watch::channel(false);
        let control_task = tokio::spawn(serve_control(
            control,
            Arc::new(ControlCtx {
                node: node.clone(),
                cgroup_root: cfg.cgroup_root.clone(),
            }),
            control_stop_rx,
        ));
        let shutdown = {
            let node = node.clone();
            let (mut term, mut int) = (term, int);
            async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
                node.ready.store(false, Ordering::Relaxed);
            }
        };
        let router = http::router(node.clone(), cfg.max_body_bytes).merge(gsch::resources_router(g.clone()));
        let gsch_server = {
            let stop = stop.clone();
            tokio::spawn(http::serve(gsch_listener, gsch::router(g), async move {
                stop.notified().await
            }))
        };
        let stop2 = stop.clone();
        http::serve(listener, router, async move {
            shutdown.await;
            stop2.notify_one();
        })
        .await
        .context("serving")?;
        gsch_server
            .await
            .context("GS-Scheduler listener")?
            .context("serving the GS-Scheduler listener")?;
        uevents_stop.store(true, Ordering::Relaxed);
        watch_stop.store(true, Ordering::Relaxed);
        for w in watchers {
            let _ = w.join();
        }
        let _ = control_stop.send(true);
        let _ = control_task.await;
        let sock = griffin_runtime::control::socket_path(&cfg.state_dir);
        if let Err(e) = std::fs::remove_file(&sock) {
            tracing::warn!(error = %e, path = %sock.display(), "removing the control socket");
        }
        say(&format!(
            "griffin: stopped after {} score requests",
            node.metrics.score_requests.get()
        ));
        anyhow::Ok(())
    })
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
    stop: Arc<AtomicBool>,
) {
    use griffin_runtime::uevent;
    let spawned = std::thread::Builder::new()
        .name("uevents".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
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
    node: Arc<http::Node>,
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

/// Binds `STATE_DIR/control.sock`, root only. A socket a live daemon
/// answers on means a second daemon on the same state: refused. A stale one
/// (its daemon was killed) is replaced.
fn bind_control(state_dir: &std::path::Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let path = griffin_runtime::control::socket_path(state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        anyhow::bail!(
            "another griffin daemon serves {} (its control socket {} answers)",
            state_dir.display(),
            path.display()
        );
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(path = %path.display(), "replaced a stale control socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    // The default umask already leaves others without the write permission
    // connect(2) needs; 0600 then makes it explicit. Peer credentials are
    // checked on every connection regardless.
    let l = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    l.set_nonblocking(true)
        .with_context(|| format!("binding {}", path.display()))?;
    Ok(l)
}

struct ControlCtx {
    node: Arc<http::Node>,
    cgroup_root: PathBuf,
}

impl ControlCtx {
    fn open(
        &self,
    ) -> Result<griffin_runtime::manager::Manager, Box<dyn std::error::Error + Send + Sync>> {
        use griffin_runtime::enforce::Cgroups;
        let cgroups = if self.cgroup_root.as_os_str().is_empty() {
            Cgroups::detect()?
        } else {
            Cgroups::open(&self.cgroup_root)?
        };
        let m = griffin_runtime::manager::Manager::open(
            (*self.node.topo()).clone(),
            &self.node.state_dir,
            cgroups,
            self.node.reserved.clone(),
        )?;
        for r in &m.report {
            tracing::info!("reconcile: {r}");
        }
        Ok(m)
    }
}

/// Accepts control connections until `stop`, then lets the operations
/// already running finish and answer.
async fn serve_control(
    listener: tokio::net::UnixListener,
    ctx: Arc<ControlCtx>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    running.spawn(control_conn(stream, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    while running.join_next().await.is_some() {}
}

async fn control_conn(mut stream: tokio::net::UnixStream, ctx: Arc<ControlCtx>) {
    use griffin_runtime::control::{self, Reply};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let euid = nix::unistd::geteuid().as_raw();
    // The request is read whoever sent it: closing on unread data would
    // reset the connection and the peer would never see why it was refused.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        (&mut stream)
            .take(control::MAX_MESSAGE)
            .read_to_end(&mut buf),
    )
    .await;
    let reply = match (uid, read) {
        (Some(uid), _) if uid != 0 && uid != euid => {
            tracing::warn!(uid, "control connection refused: not root");
            Reply::Error {
                message: format!("permission denied: uid {uid} is not root"),
            }
        }
        (None, _) => Reply::Error {
            message: "permission denied: peer credentials unavailable".into(),
        },
        (Some(uid), Ok(Ok(_))) => match control::parse(&buf) {
            Ok(req) => {
                tracing::info!(uid, request = ?req, "control request");
                let ctx = ctx.clone();
                tokio::task::spawn_blocking(move || {
                    let reply = control::handle(req, || ctx.open());
                    ctx.node.invalidate();
                    reply
                })
                .await
                .unwrap_or_else(|e| Reply::Error {
                    message: format!("control operation failed: {e}"),
                })
            }
            Err(message) => Reply::Error { message },
        },
        (_, Ok(Err(e))) => Reply::Error {
            message: format!("reading the request: {e}"),
        },
        (_, Err(_)) => Reply::Error {
            message: "no request within 10 s".into(),
        },
    };
    if let Reply::Error { message } = &reply {
        tracing::info!(%message, "control request failed");
    }
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
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
fn watch_links(splits: &[Split], stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for s in splits {
        let stop = stop.clone();
        match s.watch_links(move || stop.load(Ordering::Relaxed)) {
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
