//! `griffin sriov`: show VF state, and reconcile declared SR-IOV state (the
//! daemon config's `sriov` list) without the daemon.

use std::path::{Path, PathBuf};

use anyhow::Context;
use griffin_runtime::vfplan::{self, Kernel, PfOutcome};

#[derive(Debug, clap::Args)]
pub struct SriovArgs {
    /// sysfs root (a test tree, or the node's `/sys`).
    #[arg(long, default_value = "/sys", global = true)]
    sys: PathBuf,
    #[command(subcommand)]
    command: SriovCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SriovCommand {
    /// Bring PFs to the `sriov` list of a daemon config file: VF counts and
    /// per-VF MAC, VLAN/QoS, trust and spoof checking. Only differences are
    /// written, so running it again does nothing; a PF whose count must
    /// change while an allocation holds one of its VFs is left alone and
    /// reported (no drain). Exit status 1 when a PF is not as declared.
    Apply {
        /// Daemon configuration file (TOML or YAML) with a `sriov` list.
        #[arg(long)]
        config: PathBuf,
        /// State directory whose allocations hold VFs.
        #[arg(long, default_value = "/var/lib/griffin")]
        state_dir: PathBuf,
        /// Report what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show each PF's VFs as its driver reports them (over rtnetlink).
    Show {
        /// PF netdev names or PCI addresses.
        #[arg(required = true)]
        pf: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: SriovArgs) -> anyhow::Result<()> {
    let kernel = Kernel { sys: args.sys };
    match args.command {
        SriovCommand::Apply {
            config,
            state_dir,
            dry_run,
            json,
        } => {
            let cfg = griffin_runtime::config::Config::load(&config)?;
            let plans = vfplan::plan(&cfg.sriov)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", config.display()))?;
            let held = held_devices(&state_dir)?;
            let out = vfplan::reconcile(&kernel, &plans, &|a| held.contains(&a), dry_run);
            print_outcomes(&out, dry_run, json)?;
            if out.iter().any(|o| o.error.is_some()) {
                std::process::exit(1);
            }
            Ok(())
        }
        SriovCommand::Show { pf, json } => show(&kernel, &pf, json),
    }
}

/// Devices held by the allocations of a state directory (none when it has
/// no checkpoint).
pub fn held_devices(
    state_dir: &Path,
) -> anyhow::Result<std::collections::HashSet<griffin_devices::PciAddress>> {
    if !state_dir.is_dir() {
        return Ok(Default::default());
    }
    let store = griffin_runtime::checkpoint::Store::open(state_dir)?;
    let state = griffin_runtime::checkpoint::Reader::new(&store, Default::default())
        .state()
        .with_context(|| format!("reading the allocations in {}", state_dir.display()))?;
    Ok(state.taken_devices())
}

fn print_outcomes(out: &[PfOutcome], dry_run: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(out)?);
        return Ok(());
    }
    let verb = if dry_run { "would set" } else { "set" };
    for o in out {
        let at = o.pci_address.map(|a| format!(" ({a})")).unwrap_or_default();
        let mut did = Vec::new();
        if let Some((from, to)) = o.num_vfs_changed {
            did.push(format!("{verb} sriov_numvfs {from} -> {to}"));
        }
        if !o.configured.is_empty() {
            let vfs: Vec<String> = o.configured.iter().map(ToString::to_string).collect();
            did.push(format!("{verb} VF {}", vfs.join(",")));
        }
        if did.is_empty() && o.error.is_none() {
            did.push("as declared".into());
        }
        if let Some(e) = &o.error {
            did.push(format!("NOT as declared: {e}"));
        }
        println!("{}{at}: {}", o.pf, did.join("; "));
    }
    Ok(())
}

fn show(kernel: &Kernel, pfs: &[String], json: bool) -> anyhow::Result<()> {
    use griffin_runtime::vfplan::VfOps;
    let mut all = Vec::new();
    for pf in pfs {
        let (addr, iface) = kernel.resolve(pf)?;
        let vfs = kernel.vfs(addr)?;
        let states = kernel.vf_states(&iface)?;
        all.push((pf, addr, iface, vfs, states));
    }
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|(pf, addr, iface, vfs, states)| {
                serde_json::json!({
                    "pf": pf, "pci_address": addr.to_string(), "iface": iface,
                    "vfs": states.iter().map(|s| serde_json::json!({
                        "vf": s.vf,
                        "pci_address": vfs.get(s.vf as usize).map(ToString::to_string),
                        "mac": mac(&s.mac), "vlan": s.vlan.0, "qos": s.vlan.1,
                        "trust": s.trust, "spoof_check": s.spoof_check,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let onoff = |b: Option<bool>| match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "?",
    };
    for (pf, addr, iface, vfs, states) in &all {
        println!("{pf}: {iface} at {addr}, {} VFs", vfs.len());
        for s in states {
            let at = vfs
                .get(s.vf as usize)
                .map(ToString::to_string)
                .unwrap_or_default();
            println!(
                "  vf {} {at} mac {} vlan {} qos {} trust {} spoof-check {}",
                s.vf,
                mac(&s.mac),
                s.vlan.0,
                s.vlan.1,
                onoff(s.trust),
                onoff(s.spoof_check)
            );
        }
    }
    Ok(())
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
