//! `griffin devices`: the device pools Griffin serves to the kubelet, and
//! the devices it would prefer for a request. Pools, their selection and
//! preferences are [`griffin_runtime::pools`]'; this is argument parsing
//! and presentation.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use griffin_runtime::config::Config;
use griffin_runtime::pools::{Pool, Pools};
use serde::Serialize;

/// `griffin devices ...`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevicesArgs {
    #[command(flatten)]
    source: Source,
    /// Print the pools as one JSON object (`{"pools": [...], "warnings": [...]}`).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<DevicesCommand>,
}

/// Where the pools come from.
#[derive(Debug, Clone, clap::Args)]
struct Source {
    /// Read sysfs/procfs below this directory instead of `/` (e.g. a tree
    /// made by `cargo xtask capture-sysfs`).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Griffin daemon config (TOML or YAML) whose `[[pools]]` and
    /// `sriovdp_config` define the pools [default: the embedded default,
    /// which defines none].
    #[arg(long)]
    config: Option<PathBuf>,
    /// An sriov-network-device-plugin `config.json`, taken unchanged (its
    /// resources are pooled too; overrides the config's `sriovdp_config`).
    #[arg(long)]
    sriovdp_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// The devices Griffin would prefer for a request of one resource (what
    /// it answers the kubelet's GetPreferredAllocation), with the cost and
    /// the reason.
    ///
    /// The preferred set has the lowest sum of pairwise PCIe distance costs
    /// (PIX 20, PXB 30, PHB 35, NODE 40, SYS 50), then the most free
    /// exclusive CPUs on the devices' NUMA nodes, then the lowest addresses.
    Prefer(PreferArgs),
}

#[derive(Debug, clap::Args)]
struct PreferArgs {
    #[command(flatten)]
    source: Source,
    /// The resource (`intel.com/intel_sriov_netdevice`).
    #[arg(long)]
    resource: String,
    /// How many devices.
    #[arg(long)]
    size: usize,
    /// Device ids to choose from, comma-separated [default: every healthy
    /// device of the pool].
    #[arg(long, value_delimiter = ',')]
    available: Option<Vec<String>>,
    /// Device ids the choice must contain, comma-separated.
    #[arg(long, value_delimiter = ',')]
    must_include: Vec<String>,
    /// State directory whose allocations take CPUs (read only, when it
    /// exists): free exclusive CPUs per NUMA node break ties [default:
    /// every online CPU but --reserved is free].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// CPUs never handed out exclusively (cpulist, e.g. `0-1`).
    #[arg(long, default_value = "")]
    reserved: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs `griffin devices ...`.
pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    match args.command {
        None => list(&args.source, args.json),
        Some(DevicesCommand::Prefer(p)) => prefer(p),
    }
}

/// The topology and pools of `s`, with the warnings of the sriovdp config.
fn load(s: &Source) -> anyhow::Result<(griffin_devices::Topology, Pools, Vec<String>)> {
    let config = match &s.config {
        Some(path) => Config::load(path)?,
        None => Config::parse(
            griffin_runtime::config::DEFAULT_TOML,
            griffin_runtime::config::Format::Toml,
        )
        .map_err(anyhow::Error::msg)
        .context("the embedded default config")?,
    };
    let (defs, warnings) =
        griffin_runtime::pools::defs_from_config(&config, s.sriovdp_config.as_deref())?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let topo = griffin_devices::discover(&s.root)
        .with_context(|| format!("discovering the node below {}", s.root.display()))?;
    let pools = Pools::discover(&topo, &defs)?;
    Ok((topo, pools, warnings))
}

#[derive(Serialize)]
struct Listing<'a> {
    pools: Vec<&'a Pool>,
    warnings: &'a [String],
}

fn list(s: &Source, json: bool) -> anyhow::Result<()> {
    let (_, pools, warnings) = load(s)?;
    let mut out = std::io::BufWriter::new(crate::stdout());
    if json {
        let listing = Listing {
            pools: pools.iter().collect(),
            warnings: &warnings,
        };
        serde_json::to_writer_pretty(&mut out, &listing)?;
        writeln!(out)?;
    } else {
        write_pools(&mut out, &pools)?;
    }
    out.flush()?;
    Ok(())
}

fn write_pools(out: &mut impl Write, pools: &Pools) -> std::io::Result<()> {
    let mut any = false;
    for p in pools.iter() {
        any = true;
        let healthy = p.devices.iter().filter(|d| d.healthy).count();
        writeln!(
            out,
            "{}  ({}, {})  {} devices, {healthy} healthy",
            p.resource,
            p.origin,
            match p.flavor {
                griffin_runtime::pools::Flavor::Griffin => "griffin",
                griffin_runtime::pools::Flavor::SriovNet => "sriovdp netDevice",
                griffin_runtime::pools::Flavor::SriovAccel => "sriovdp accelerator",
            },
            p.devices.len(),
        )?;
        for d in &p.devices {
            let mut extra = Vec::new();
            if let Some(n) = &d.netdev {
                extra.push(n.clone());
            }
            if let (Some(pf), Some(vf)) = (&d.pf_name, d.vf_index) {
                extra.push(format!("pf {pf} vf {vf}"));
            }
            writeln!(
                out,
                "  {}  {:<11} {:<11} {}:{}  NUMA {:<3}  {}{}",
                d.id,
                d.kind.name(),
                d.driver.as_deref().unwrap_or("-"),
                d.vendor,
                d.device,
                d.numa_node
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                match &d.unhealthy {
                    None => "healthy".to_owned(),
                    Some(why) => format!("unhealthy: {why}"),
                },
                if extra.is_empty() {
                    String::new()
                } else {
                    format!("  {}", extra.join("  "))
                },
            )?;
        }
    }
    if !any {
        writeln!(
            out,
            "no pools defined (give --config with [[pools]] or sriovdp_config, or --sriovdp-config)"
        )?;
    }
    Ok(())
}

/// Free exclusive CPUs per NUMA node: from the state directory's
/// checkpoint when there is one, else every online CPU but `reserved`.
fn free_cpus(
    topo: &griffin_devices::Topology,
    state_dir: Option<&Path>,
    reserved: &str,
) -> anyhow::Result<BTreeMap<u32, usize>> {
    use griffin_runtime::cpuset::CpuSet;
    let reserved = CpuSet::from(&griffin_devices::parse::cpulist(reserved).context("--reserved")?);
    let state = match state_dir.filter(|d| d.is_dir()) {
        Some(dir) => {
            let store = griffin_runtime::checkpoint::Store::open(dir)?;
            let reader = griffin_runtime::checkpoint::Reader::new(&store, reserved);
            (*reader
                .state()
                .with_context(|| format!("reading the allocations of {}", dir.display()))?)
            .clone()
        }
        None => griffin_runtime::alloc::State::new(reserved),
    };
    Ok(griffin_runtime::alloc::free_cpus_by_numa(topo, &state))
}

fn prefer(a: PreferArgs) -> anyhow::Result<()> {
    let (topo, pools, _) = load(&a.source)?;
    let pool = pools
        .pool(&a.resource)
        .with_context(|| format!("--resource: no pool serves {}", a.resource))?;
    let available = a.available.clone().unwrap_or_else(|| {
        pool.devices
            .iter()
            .filter(|d| d.healthy)
            .map(|d| d.id.clone())
            .collect()
    });
    let free = free_cpus(&topo, a.state_dir.as_deref(), &a.reserved)?;
    let p = pools.prefer(&a.resource, &available, &a.must_include, a.size, &free)?;
    let mut out = std::io::BufWriter::new(crate::stdout());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &p)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}: {}", p.resource, p.ids.join(","))?;
        writeln!(out, "cost {}  NUMA score {}", p.cost, p.numa_score)?;
        writeln!(out, "{}", p.reason)?;
    }
    out.flush()?;
    Ok(())
}
