//! `griffin daemon`: the long-lived per-node process. It discovers the node,
//! serves the read-only node-score endpoint and the GS-Scheduler listener,
//! runs the RTT probes, until SIGTERM/SIGINT (graceful: `/readyz` turns
//! 503, in-flight requests finish on both listeners).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
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
    let topo = griffin_devices::discover(&cfg.root)
        .with_context(|| format!("discovering the node below {}", cfg.root.display()))?;
    let discovery = t.elapsed();
    let reserved = griffin_devices::parse::cpulist(&cfg.reserved).context("reserved")?;
    let node = Arc::new(http::Node {
        topo,
        state_dir: cfg.state_dir.clone(),
        reserved: griffin_runtime::cpuset::CpuSet::from(&reserved),
        node_name: if cfg.node_name.is_empty() {
            host_name()
        } else {
            cfg.node_name.clone()
        },
        cluster_name: cfg.cluster_name.clone(),
        ready: AtomicBool::new(true),
        metrics: Default::default(),
    });
    node.metrics.discovery_seconds.set(discovery.as_secs_f64());
    node.metrics.discoveries.inc();
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
        let addr = listener.local_addr()?;
        let gsch_addr = gsch_listener.local_addr()?;
        tracing::info!(%addr, %gsch_addr, "serving");
        // The lines tests and operators look for.
        println!("griffin: node-score endpoint on http://{addr} (GET /v1/node, POST /v1/score)");
        println!("griffin: GS-Scheduler endpoint on http://{gsch_addr} (/monitoring/..., /v1/gsch/resources)");
        let g = Arc::new(gsch::Gsch {
            node: node.clone(),
            probes: cfg.probes.clone(),
            cache: Arc::default(),
        });
        tokio::spawn(gsch::run_probes(cfg.probes.clone(), g.cache.clone()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let shutdown = {
            let node = node.clone();
            async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    tracing::error!("cannot install signal handlers");
                    return std::future::pending().await;
                };
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
        println!(
            "griffin: stopped after {} score requests",
            node.metrics.score_requests.get()
        );
        anyhow::Ok(())
    })
}
