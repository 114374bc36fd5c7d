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
//! The config's SR-IOV state is reconciled at start; its device pools are
//! served to the kubelet as device plugins, rebuilt on every re-discovery
//! and on link usability changes, with the devices pods hold kept in the
//! checkpoint (see `griffin_runtime::plugin::backend`). The pods'
//! acceleration records are served on `GET /v1/accelerations` from the
//! node's [`griffin_runtime::accel::AccelerationBook`]. In a cluster (or
//! when `[nrt] enabled`), the node's NodeResourceTopology object is kept
//! current (`griffin_scheduler_glue::nrt`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use griffin_ebpf::split::{self, Split, SplitPaths};
use griffin_runtime::config::{Config, DEFAULT_TOML};
use griffin_scheduler_glue::{gsch, http, metrics, node, serve};
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
    /// The Node's name reported to schedulers and in /v1/node [default:
    /// the config's node_name, else the host name]; in a pod, the
    /// downward API's `spec.nodeName`.
    #[arg(long, env = "GRIFFIN_NODE_NAME")]
    node_name: Option<String>,
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
        if let Some(v) = self.node_name.as_ref().filter(|v| !v.is_empty()) {
            c.node_name.clone_from(v);
        }
        c.validate()?;
        Ok(c)
    }
}

/// Brings the config's SR-IOV state about (VFs held by allocations keep
/// their PF's count); a PF that cannot be brought to it is logged, and the
/// daemon serves anyway.
fn apply_sriov(cfg: &Config) -> anyhow::Result<()> {
    if cfg.sriov.is_empty() {
        return Ok(());
    }
    let plans = griffin_runtime::vfplan::plan(&cfg.sriov).map_err(anyhow::Error::msg)?;
    let held = crate::sriov_cli::held_devices(&cfg.state_dir)?;
    let kernel = griffin_runtime::vfplan::Kernel {
        sys: cfg.root.join("sys"),
    };
    for o in griffin_runtime::vfplan::reconcile(&kernel, &plans, &|a| held.contains(&a), false) {
        match &o.error {
            None => {
                tracing::info!(pf = %o.pf, num_vfs_changed = ?o.num_vfs_changed, configured = ?o.configured, "SR-IOV as declared")
            }
            Some(e) => tracing::error!(pf = %o.pf, error = %e, "SR-IOV not as declared"),
        }
    }
    Ok(())
}

/// The device pool definitions of the config (its `[[pools]]` and
/// sriovdp config.json); ignored sriovdp keys are logged.
fn pool_defs(cfg: &Config) -> anyhow::Result<Vec<griffin_runtime::pools::PoolDef>> {
    let (defs, warnings) = griffin_runtime::pools::defs_from_config(cfg, None)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(defs)
}

/// Serves the pools to the kubelet: the device plugin manager, the pools
/// rebuilt on each re-discovery, and the holdings kept true (PodResources)
/// and saved in the checkpoint.
async fn serve_device_plugins(
    cfg: &Config,
    node: &Arc<node::Node>,
    open: impl Fn() -> Result<griffin_runtime::manager::Manager, griffin_runtime::control::BoxError>
        + Send
        + Sync
        + 'static,
    defs: Vec<griffin_runtime::pools::PoolDef>,
    stop: &CancellationToken,
) -> anyhow::Result<(
    griffin_runtime::plugin::server::DevicePluginManager,
    Arc<griffin_runtime::plugin::backend::NodeBackend>,
)> {
    use griffin_runtime::plugin::{backend, podresources, server};
    let topo = node.topo();
    let pools = {
        let defs = defs.clone();
        tokio::task::spawn_blocking(move || griffin_runtime::pools::Pools::discover(&topo, &defs))
            .await??
    };
    let saved = match node.state().await {
        Ok(s) => s.plugin_devices.clone(),
        Err(e) => {
            tracing::error!(error = %e.0, "device holdings not read; starting from PodResources");
            Default::default()
        }
    };
    for p in pools.iter() {
        tracing::info!(resource = %p.resource, devices = p.devices.len(), "device pool");
    }
    let backend = Arc::new(backend::NodeBackend::new(
        pools,
        &saved,
        std::time::Duration::from_secs(cfg.device_plugins.allocate_grace_s),
    ));
    let manager = server::DevicePluginManager::start(
        backend.clone(),
        cfg.device_plugins.settings(),
        stop.clone(),
    );
    let faults = griffin_runtime::gpuhealth::Faults::default();
    if cfg.device_plugins.gpu_health {
        watch_gpu_health(&cfg.device_plugins, node, &backend, faults.clone(), stop)?;
    }
    tokio::spawn(backend::follow_topology(
        backend.clone(),
        node.watch_topology(),
        defs,
        faults,
    ));
    let socket = &cfg.device_plugins.pod_resources_socket;
    let pod_resources = (!socket.as_os_str().is_empty())
        .then(|| podresources::PodResourcesClient::new(socket, podresources::DEFAULT_TIMEOUT));
    let save = {
        let node = node.clone();
        let rt = tokio::runtime::Handle::current();
        move |changed: Option<_>| {
            if let Some(h) = changed {
                let mut m = open().map_err(|e| griffin_devices::Chain(&*e).to_string())?;
                m.set_plugin_devices(h)
                    .map_err(|e| griffin_devices::Chain(&e).to_string())?;
                node.invalidate();
            }
            let state = rt.block_on(node.state()).map_err(|e| e.0)?;
            Ok(griffin_runtime::alloc::free_cpus_by_numa(
                &node.topo(),
                &state,
            ))
        }
    };
    tokio::spawn(backend::maintain(
        backend.clone(),
        pod_resources,
        save,
        std::time::Duration::from_secs(cfg.device_plugins.check_interval_s),
        stop.clone(),
    ));
    Ok((manager, backend))
}

/// Whether `[pods]` realizes pods here: mode `on`, or `auto` with
/// Kubernetes credentials (a pod's service account, or KUBECONFIG).
fn pods_wanted(cfg: &Config) -> bool {
    use griffin_runtime::config::PodsMode;
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some();
    match cfg.pods.mode {
        PodsMode::Off => false,
        PodsMode::Auto => in_cluster,
        PodsMode::On => true,
    }
}

/// The daemon's Kubernetes client and its one watch of the node's pods.
type Cluster = (kube::Client, griffin_runtime::pods::watch::NodePods);

/// The [`Cluster`] shared by the pods engine and the NodeResourceTopology
/// publisher, made when either is wanted. No client is an error with
/// `[pods] mode = on`, else a warning (neither then runs).
async fn cluster(
    cfg: &Config,
    node: &node::Node,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Cluster>> {
    use griffin_runtime::config::PodsMode;
    let nrt = cfg
        .nrt
        .enabled(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some());
    if !pods_wanted(cfg) && !nrt {
        if cfg.pods.mode == PodsMode::Auto {
            tracing::info!(
                "pods: not in a cluster (no service account, no KUBECONFIG); pods are not realized"
            );
        }
        return Ok(None);
    }
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) if cfg.pods.mode == PodsMode::On => {
            return Err(e).context("pods.mode = on: Kubernetes client");
        }
        Err(e) => {
            tracing::warn!(error = %griffin_devices::Chain(&e), "no Kubernetes client: pods are not realized, the NodeResourceTopology object is not published");
            return Ok(None);
        }
    };
    let pods = griffin_runtime::pods::watch::NodePods::follow(
        client.clone(),
        &node.node_name,
        stop.clone(),
    );
    Ok(Some((client, pods)))
}

/// Realizes the pods of this node (`[pods]`, see griffin_runtime::pods)
/// when [`pods_wanted`] says so and there is a [`Cluster`].
fn start_pods(
    cfg: &Config,
    open: impl Fn() -> Result<griffin_runtime::manager::Manager, griffin_runtime::control::BoxError>
        + Send
        + Sync
        + 'static,
    backend: Option<Arc<griffin_runtime::plugin::backend::NodeBackend>>,
    node: Arc<node::Node>,
    flows: griffin_runtime::pods::flows::Flows,
    cluster: Option<&Cluster>,
    stop: &CancellationToken,
) {
    use griffin_runtime::pods::{self, watch};
    let Some((client, node_pods)) = cluster.filter(|_| pods_wanted(cfg)) else {
        return;
    };
    let socket = &cfg.device_plugins.pod_resources_socket;
    let settings = watch::Settings {
        node_name: node.node_name.clone(),
        open: Arc::new(open),
        wants: Arc::new(pods::accel::AccelRule {
            fallback: pods::StaticRule {
                enabled: cfg.pods.exclusive_guaranteed,
                policy: cfg.pods.policy,
            },
        }),
        pod_resources: (!socket.as_os_str().is_empty()).then(|| {
            griffin_runtime::plugin::podresources::PodResourcesClient::new(
                socket,
                griffin_runtime::plugin::podresources::DEFAULT_TIMEOUT,
            )
        }),
        address_of: Arc::new(move |r: &str, id: &str| {
            let pools = backend.as_ref()?.pools();
            pools.pool(r)?.device(id).map(|d| d.pci_address)
        }),
        resync: std::time::Duration::from_secs(cfg.pods.resync_s),
        kubelet_cgroup_root: cfg.pods.kubelet_cgroup_root.clone(),
        netns: Some(Arc::new(pods::netns::Kernel {
            sys: cfg.root.join("sys"),
        })),
        flows,
        nri: (!cfg.pods.nri_socket.as_os_str().is_empty()).then(|| {
            griffin_runtime::nri::Settings {
                socket: cfg.pods.nri_socket.clone(),
                name: "griffin".into(),
                index: "10".into(),
            }
        }),
        on_outcomes: {
            let keeper = pods::accel::BookKeeper::new(node.accelerations.clone());
            Arc::new(move |out, pods, devices| {
                keeper.update(out, pods, devices);
                // The engine changed the checkpoint outside the control
                // socket: /v1/node, scores and the NRT object read it again.
                if !out.is_empty() {
                    node.invalidate();
                }
            })
        },
    };
    tracing::info!(node = %settings.node_name, "pods: realizing the pods of this node");
    tokio::spawn(watch::run(
        client.clone(),
        node_pods.clone(),
        settings,
        stop.clone(),
    ));
}

/// Publishes the node's NodeResourceTopology object when the config's
/// `[nrt]` says so (by default: in a cluster); a missing client is logged,
/// never fatal.
fn publish_nrt(
    cfg: &Config,
    node: &Arc<node::Node>,
    plugins: Option<Arc<griffin_runtime::plugin::backend::NodeBackend>>,
    cluster: Option<&Cluster>,
    stop: &CancellationToken,
) {
    use griffin_scheduler_glue::nrt;
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !cfg.nrt.enabled(in_cluster) {
        return;
    }
    let Some((client, pods)) = cluster else {
        tracing::error!("no Kubernetes client: the NodeResourceTopology object is not published");
        return;
    };
    let settings = nrt::Settings {
        policy: cfg.nrt.topology_manager_policy.unwrap_or(cfg.pods.policy),
        scope: cfg.nrt.topology_manager_scope,
    };
    let pace = nrt::Pace {
        resync: std::time::Duration::from_secs(cfg.nrt.resync_s),
        ..nrt::Pace::default()
    };
    nrt::start(
        client.clone(),
        pods,
        node.clone(),
        plugins,
        settings,
        pace,
        stop.clone(),
    );
    tracing::info!(node = %node.node_name, "publishing the NodeResourceTopology object");
}

/// Watches NVML's critical XID events for the pooled NVIDIA GPUs on a
/// thread of its own until `stop` ([`griffin_runtime::gpuhealth::supervise`]:
/// started over on every re-discovery), recording the GPUs they fault in
/// `faults`, which the pool rebuilds read.
fn watch_gpu_health(
    cfg: &griffin_runtime::config::DevicePlugins,
    node: &Arc<node::Node>,
    backend: &Arc<griffin_runtime::plugin::backend::NodeBackend>,
    faults: griffin_runtime::gpuhealth::Faults,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    use griffin_runtime::gpuhealth;
    let library = cfg.nvml_library.clone();
    let policy = gpuhealth::Policy {
        ignored: cfg.gpu_health_ignored_xids.iter().copied().collect(),
    };
    let (node, backend, stop) = (node.clone(), backend.clone(), stop.clone());
    let mut topo = node.watch_topology();
    std::thread::Builder::new()
        .name("griffin-gpu-health".into())
        .spawn(move || {
            let pooled = || {
                let pools = backend.pools();
                let addrs = pools
                    .iter()
                    .flat_map(|p| p.devices.iter().map(|d| d.pci_address));
                gpuhealth::nvidia_gpus(&node.topo(), addrs)
            };
            let changed = || {
                let c = topo.has_changed().unwrap_or(false);
                topo.mark_unchanged();
                c
            };
            gpuhealth::supervise(&library, &policy, &faults, pooled, changed, || {
                stop.is_cancelled()
            });
        })
        .context("starting the GPU health thread")?;
    Ok(())
}

/// Sends a change to re-discovery whenever a link becomes usable or
/// unusable (a PF's link down makes its VFs unhealthy), until `stop`.
fn watch_links_for_pools(
    stop: &CancellationToken,
    changed: &tokio::sync::mpsc::UnboundedSender<String>,
) {
    let run = griffin_ebpf::linkwatch::LinkWatcher::new(std::time::Duration::from_millis(200))
        .and_then(|w| {
            w.run_usability(
                || stop.is_cancelled(),
                || changed.send("link state".into()).is_ok(),
            )
        });
    if let Err(e) = run {
        tracing::warn!(error = %griffin_devices::Chain(&e), "no link watch: a PF going down is seen at the next re-discovery only");
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
    let node_name = if cfg.node_name.is_empty() {
        host_name()
    } else {
        cfg.node_name.clone()
    };
    let node = Arc::new(node::Node::new(
        topo,
        control.store(),
        griffin_runtime::cpuset::CpuSet::from(&reserved),
        node_name.clone(),
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
    apply_sriov(&cfg)?;
    let pool_defs = pool_defs(&cfg)?;
    let splits = attach_splits(&cfg.xdp, &cfg.pods.flows_iface)?;
    node.metrics
        .register_collector(Box::new(metrics::XdpCollector(splits.clone())));
    let flows = flows_steering(&cfg, &splits)?;
    let relays = start_relays(&cfg.relays, &splits);
    node.metrics
        .register_collector(Box::new(metrics::RelayCollector(
            relays.iter().map(|r| r.handle()).collect(),
        )));
    let stop = CancellationToken::new();
    let relay_publisher = publish_relays(&relays, &stop);
    // `stop` (above) is the one stop signal of the daemon: cancelled on
    // SIGTERM/SIGINT; every listener, task and thread ends on it.
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
            let (stop, changed) = (stop.clone(), changed.clone());
            if let Err(e) = l.watch(move || stop.is_cancelled(), move |why| changed.send(why).is_ok()) {
                tracing::error!(error = %e, "cannot start the uevent thread");
            }
        }
        if !pool_defs.is_empty() {
            let (stop, changed) = (stop.clone(), changed.clone());
            std::thread::Builder::new()
                .name("griffin-links".into())
                .spawn(move || watch_links_for_pools(&stop, &changed))
                .context("starting the link thread")?;
        }
        tokio::spawn(stop.clone().run_until_cancelled_owned(on_sighup(hup, changed.clone())));
        let (plugins, backend) = if pool_defs.is_empty() {
            (None, None)
        } else {
            let (p, b) = serve_device_plugins(&cfg, &node, open.clone(), pool_defs, &stop).await?;
            (Some(p), Some(b))
        };
        let cluster = cluster(&cfg, &node, &stop).await?;
        start_pods(
            &cfg,
            open.clone(),
            backend.clone(),
            node.clone(),
            flows,
            cluster.as_ref(),
            &stop,
        );
        publish_nrt(&cfg, &node, backend, cluster.as_ref(), &stop);
        tokio::spawn(node.clone().follow_changes(cfg.root.clone(), changes));
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
        if let Some(p) = relay_publisher {
            let _ = p.join();
        }
        for relay in relays {
            let name = relay.spec().name.clone();
            if let Err(e) = relay.stop() {
                tracing::warn!(error = %griffin_devices::Chain(&e), "relay");
            }
            griffin_runtime::relay::unpublish_stats(
                std::path::Path::new(griffin_runtime::relay::STATS_DIR),
                &name,
            );
        }
        match control_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %griffin_devices::Chain(&e), "control socket"),
            Err(e) => tracing::warn!(error = %e, "control socket task"),
        }
        // Device plugin sockets removed: the kubelet sees the resources go.
        if let Some(p) = plugins {
            p.join().await;
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

async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    changed: tokio::sync::mpsc::UnboundedSender<String>,
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

/// Opens the allocation manager for one control operation: the daemon's
/// topology, cgroup root and reserved CPUs (reconciling on open).
fn manager_opener(
    node: Arc<node::Node>,
    state_dir: PathBuf,
    cgroup_root: PathBuf,
) -> impl Fn() -> Result<griffin_runtime::manager::Manager, griffin_runtime::control::BoxError>
       + Clone
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

/// The steering of pods' `flows` on the split `[pods] flows_iface` names
/// (none when it is empty): the pod path loaded, its address map pinned
/// beside the split's pins, its devmap program on the split.
fn flows_steering(
    cfg: &Config,
    splits: &[Split],
) -> anyhow::Result<griffin_runtime::pods::flows::Flows> {
    use griffin_runtime::pods::flows::{Flows, Kernel};
    let iface = &cfg.pods.flows_iface;
    if iface.is_empty() {
        return Ok(Flows::new(None));
    }
    let split = splits
        .iter()
        .find(|s| s.iface() == iface)
        .with_context(|| format!("pods.flows_iface: {iface} has no xdp split"))?;
    let pins =
        griffin_ebpf::podpath::pin_dir(std::path::Path::new(griffin_ebpf::DEFAULT_BPFFS), iface);
    let kernel = Kernel::new(split.clone(), &pins)
        .map_err(|e| anyhow::anyhow!("pods.flows_iface: the pod path on {iface}: {e}"))?;
    tracing::info!(iface = %iface, "pods' flows are steered on this split");
    Ok(Flows::new(Some(Arc::new(kernel))))
}

/// Attaches (or adopts) the config's splits. An adopted split keeps the
/// pods' flow rules in force (no gap until the first reconcile sets them
/// again) on the split `flows_iface` names; on any other they are removed.
fn attach_splits(
    xdp: &[griffin_runtime::config::XdpSplit],
    flows_iface: &str,
) -> anyhow::Result<Vec<Split>> {
    let paths = SplitPaths::default();
    let mut splits = Vec::new();
    for x in xdp {
        let attached = split::attach(&paths, &x.iface, &x.rules, x.mode)
            .with_context(|| format!("xdp split on {}", x.iface))?;
        for w in &attached.warnings {
            tracing::warn!(iface = %x.iface, "{w}");
        }
        tracing::info!(iface = %x.iface, "xdp: {attached}");
        if attached.run_time_rules > 0 && x.iface != flows_iface {
            attached
                .split
                .set_extra(&griffin_ebpf::RulesFile::default())
                .with_context(|| format!("xdp split on {}: removing pods' flow rules", x.iface))?;
            tracing::info!(iface = %x.iface, "xdp: pods' flow rules removed (not the flows interface)");
        }
        splits.push(attached.split);
    }
    Ok(splits)
}

/// Starts the config's relays on their splits; a relay that cannot start
/// is reported and left out (the split keeps working: its frames fall back
/// to the stack).
fn start_relays(
    specs: &[griffin_runtime::relay::RelaySpec],
    splits: &[Split],
) -> Vec<griffin_runtime::relay::Relay> {
    let mut relays = Vec::new();
    for spec in specs {
        let Some(split) = splits.iter().find(|s| s.iface() == spec.iface) else {
            tracing::error!(relay = %spec.name, iface = %spec.iface, "relay: no split on its interface");
            continue;
        };
        let started =
            griffin_runtime::relay::Relay::start(spec, &Default::default(), &mut split.lock());
        match started {
            Ok(relay) => {
                for (queue, mode) in relay.modes() {
                    tracing::info!(relay = %spec.name, queue, %mode, "relay: AF_XDP socket bound");
                }
                relays.push(relay);
            }
            Err(e) => tracing::error!(error = %griffin_devices::Chain(&e), "relay not started"),
        }
    }
    relays
}

/// Publishes the relays' counters every second for `griffin xdp stats`
/// (a plain thread, until `stop`).
fn publish_relays(
    relays: &[griffin_runtime::relay::Relay],
    stop: &CancellationToken,
) -> Option<std::thread::JoinHandle<()>> {
    if relays.is_empty() {
        return None;
    }
    let handles: Vec<_> = relays.iter().map(|r| r.handle()).collect();
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("relay-stats".into())
        .spawn(move || {
            while !stop.is_cancelled() {
                for h in &handles {
                    let dir = std::path::Path::new(griffin_runtime::relay::STATS_DIR);
                    if let Err(e) = griffin_runtime::relay::publish_stats(dir, &h.stats()) {
                        tracing::debug!(error = %e, "relay: publishing counters");
                    }
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        })
        .ok()
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
