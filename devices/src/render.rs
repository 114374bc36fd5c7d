//! The text form of a [`Topology`], laid out like `nvidia-smi topo -m`.

use std::fmt::Write;

use crate::{DeviceKind, Level, NvmlStatus, PciDevice, Topology};

/// Above this many endpoints, devices of kind `other` are left out of the
/// matrix unless the caller asks for all of them.
pub const OTHER_DEVICES_SHOWN_UP_TO: usize = 16;

/// Renders the summary, the matrix with CPU and NUMA affinity columns, the
/// legend and the device list. `all` keeps devices of kind `other` even on
/// a node with many functions.
pub fn table(topo: &Topology, all: bool) -> String {
    let mut out = String::new();
    summary(topo, &mut out);

    let endpoints: Vec<(usize, &PciDevice)> = topo
        .devices
        .iter()
        .filter(|d| d.kind != DeviceKind::Bridge)
        .enumerate()
        .collect();
    let crowded = endpoints.len() > OTHER_DEVICES_SHOWN_UP_TO;
    let shown: Vec<(usize, &PciDevice)> = endpoints
        .iter()
        .copied()
        .filter(|(_, d)| all || !crowded || d.kind != DeviceKind::Other)
        .collect();
    let hidden = endpoints.len() - shown.len();

    let mut counters: std::collections::BTreeMap<&str, usize> = Default::default();
    let labels: Vec<String> = shown
        .iter()
        .map(|(_, d)| {
            let c = counters.entry(d.kind.label()).or_default();
            let l = format!("{}{}", d.kind.label(), c);
            *c += 1;
            l
        })
        .collect();

    if shown.is_empty() {
        out.push_str("\nNo PCI endpoint devices.\n");
    } else {
        let w = labels.iter().map(String::len).max().unwrap_or(4).max(4) + 2;
        let _ = write!(out, "\n{:w$}", "");
        for l in &labels {
            let _ = write!(out, "{l:<w$}");
        }
        out.push_str("CPU Affinity    NUMA Affinity\n");
        for (r, (i, d)) in shown.iter().enumerate() {
            let _ = write!(out, "{:<w$}", labels[r]);
            for (j, _) in &shown {
                let level = topo.matrix.at(*i, *j);
                let mark = if topo.matrix.is_unknown(*i, *j) {
                    "?"
                } else {
                    ""
                };
                let _ = write!(out, "{:<w$}", format!("{level}{mark}"));
            }
            let cpus = if d.local_cpus.is_empty() {
                "N/A".to_owned()
            } else {
                d.local_cpus.to_string()
            };
            let numa = d
                .numa_node
                .map_or_else(|| "N/A".to_owned(), |n| n.to_string());
            let _ = writeln!(out, "{cpus:<16}{numa}");
        }
    }

    out.push_str("\nLegend:\n\n");
    for l in Level::ALL {
        let _ = writeln!(out, "  {:<5}= {}", l.name(), l.description());
    }
    if !topo.matrix_unknown_numa.is_empty() {
        out.push_str("  ?    = SYS because a device's NUMA node is unknown\n");
    }

    if !shown.is_empty() {
        out.push_str("\nDevices:\n\n");
        let lw = labels.iter().map(String::len).max().unwrap_or(4) + 2;
        let kw = shown
            .iter()
            .map(|(_, d)| d.kind.name().len())
            .max()
            .unwrap_or(0)
            + 2;
        let dw = shown
            .iter()
            .map(|(_, d)| d.driver.as_deref().unwrap_or("-").len())
            .max()
            .unwrap_or(0)
            + 2;
        for (r, (_, d)) in shown.iter().enumerate() {
            let mut extra = Vec::new();
            if !d.netdevs.is_empty() {
                extra.push(d.netdevs.join(","));
            }
            if !d.rdma_devices.is_empty() {
                extra.push(format!("rdma:{}", d.rdma_devices.join(",")));
            }
            if !d.nvme_controllers.is_empty() {
                extra.push(d.nvme_controllers.join(","));
            }
            if let Some(pf) = d.sriov.pf {
                extra.push(format!("pf:{pf}"));
            }
            if d.sriov.total_vfs > 0 {
                extra.push(format!("vfs:{}/{}", d.sriov.num_vfs, d.sriov.total_vfs));
            }
            if let Some(g) = &d.gpu {
                extra.push(g.name.clone());
            }
            let _ = writeln!(
                out,
                "  {:<lw$}{}  {:<kw$}{:<dw$}{}:{}  {}",
                labels[r],
                d.pci_address,
                d.kind.name(),
                d.driver.as_deref().unwrap_or("-"),
                d.vendor,
                d.device,
                extra.join("  "),
            );
        }
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "\n{hidden} devices of kind 'other' not shown; use --all to show them."
        );
    }
    for w in &topo.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

fn summary(topo: &Topology, out: &mut String) {
    let mut packages: Vec<u32> = topo.cpus.iter().map(|c| c.package).collect();
    packages.sort_unstable();
    packages.dedup();
    let _ = writeln!(
        out,
        "CPUs: {} online ({}), {} cores in {} package(s){}",
        topo.cpus.len(),
        topo.online_cpus,
        topo.core_count(),
        packages.len(),
        if topo.isolated_cpus.is_empty() {
            String::new()
        } else {
            format!(", isolated {}", topo.isolated_cpus)
        }
    );
    for n in &topo.numa_nodes {
        let cpus = if n.cpus.is_empty() {
            "none".to_owned()
        } else {
            n.cpus.to_string()
        };
        let _ = writeln!(
            out,
            "NUMA node {}: CPUs {}, memory {} MiB ({} MiB free), distances {:?}",
            n.id,
            cpus,
            n.memory_bytes >> 20,
            n.free_bytes >> 20,
            n.distances
        );
    }
    match &topo.nvml {
        NvmlStatus::NotQueried => out.push_str("NVML: not queried (captured tree)\n"),
        NvmlStatus::NoNvidiaGpu => out.push_str("NVML: not queried (no NVIDIA GPU on PCI)\n"),
        NvmlStatus::Absent { reason } => {
            let _ = writeln!(out, "NVML: absent ({reason}); GPUs from PCI only");
        }
        NvmlStatus::Loaded {
            driver_version,
            gpus,
        } => {
            let _ = writeln!(out, "NVML: driver {driver_version}, {} GPU(s)", gpus.len());
        }
    }
}
