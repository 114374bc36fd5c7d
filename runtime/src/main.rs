//! `griffin`: the node runtime's command line.

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
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

fn topo(root: &std::path::Path, json: bool, all: bool) -> anyhow::Result<()> {
    let topo = griffin_devices::discover(root)
        .with_context(|| format!("discovering the node below {}", root.display()))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &topo)?;
        writeln!(out)?;
    } else {
        out.write_all(griffin_devices::render::table(&topo, all).as_bytes())?;
    }
    Ok(())
}
