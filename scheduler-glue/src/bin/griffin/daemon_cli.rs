//! `griffin daemon`: the long-lived per-node process. Today it discovers the
//! node and serves the read-only node-score endpoint until SIGTERM/SIGINT
//! (graceful: `/readyz` turns 503, in-flight requests finish).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use griffin_runtime::config::{Config, DEFAULT_TOML};
use griffin_scheduler_glue::http;

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
    let topo = griffin_devices::discover(&cfg.root)
        .with_context(|| format!("discovering the node below {}", cfg.root.display()))?;
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
        score_requests: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving node scores");
        // The one line tests and operators look for.
        println!("griffin: node-score endpoint on http://{addr} (GET /v1/node, POST /v1/score)");
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
        let router = http::router(node.clone(), cfg.max_body_bytes);
        http::serve(listener, router, shutdown)
            .await
            .context("serving")?;
        println!(
            "griffin: stopped after {} score requests",
            node.score_requests.load(Ordering::Relaxed)
        );
        anyhow::Ok(())
    })
}
