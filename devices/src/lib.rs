//! Node discovery for Griffin: CPUs, caches, NUMA nodes, PCI functions,
//! SR-IOV, RDMA, NVMe and GPUs, and the PCIe distance matrix between every
//! pair of devices.
//!
//! Everything is read below a root directory ([`discover`]`("/")` on the live
//! node, a captured tree in tests), and nothing is ever written: this crate
//! is read-only. Text formats are parsed by the pure functions of [`parse`].
//!
//! The JSON form of [`Topology`] is a contract (see `docs/topology-json.md`):
//! `griffin topo --json` prints it and later components read it.

pub mod capture;
pub mod cpu;
pub mod error;
pub mod matrix;
pub mod nvml;
pub mod parse;
pub mod pci;
pub mod render;
pub mod sysfs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cpu::{Cache, Cpu, NumaNode};
pub use error::{Chain, DiscoveryError, IoAt};
pub use matrix::{DistanceMatrix, Level};
pub use nvml::NvmlStatus;
pub use parse::{CpuList, PciAddress};
pub use pci::{DeviceKind, GpuInfo, NumaSource, PciDevice, PortType, RdmaDevice, Sriov};
pub use sysfs::SysRoot;

/// Version of the JSON schema of [`Topology`]; bumped on incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything discovery found on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Topology {
    /// [`SCHEMA_VERSION`] of this document.
    pub schema_version: u32,
    /// The root directory that was read.
    pub root: PathBuf,
    /// Online CPUs.
    pub online_cpus: CpuList,
    /// CPUs isolated from the scheduler (`isolcpus=`).
    pub isolated_cpus: CpuList,
    /// Online logical CPUs, ascending id.
    pub cpus: Vec<Cpu>,
    /// Distinct cache instances.
    pub caches: Vec<Cache>,
    /// NUMA nodes, ascending id.
    pub numa_nodes: Vec<NumaNode>,
    /// Every PCI function, ascending address (bridges included).
    pub devices: Vec<PciDevice>,
    /// RDMA devices.
    pub rdma_devices: Vec<RdmaDevice>,
    /// What NVML said.
    pub nvml: NvmlStatus,
    /// Level for every pair of non-bridge devices.
    pub matrix: DistanceMatrix,
    /// Device pairs whose `SYS` level is due to an unknown NUMA node.
    pub matrix_unknown_numa: Vec<(PciAddress, PciAddress)>,
    /// Oddities that did not stop discovery (a VF whose PF is gone, …).
    pub warnings: Vec<String>,
}

/// When discovery asks NVML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmlMode {
    /// Never (a captured tree: NVML knows nothing of it).
    Never,
    /// When PCI shows an NVIDIA display/3D controller (loading the library
    /// costs milliseconds; there is nothing to ask it otherwise).
    IfNvidiaGpu,
    /// Always try, even without an NVIDIA GPU.
    Always,
}

/// What [`discover_with`] does besides reading sysfs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Whether to ask NVML for GPU details.
    pub nvml: NvmlMode,
}

/// Discovers the node below `root`. NVML is asked only on the live node
/// (`root` is `/`) and only when an NVIDIA GPU is on PCI.
pub fn discover(root: impl AsRef<Path>) -> Result<Topology, DiscoveryError> {
    let root = root.as_ref();
    let nvml = if root == Path::new("/") {
        NvmlMode::IfNvidiaGpu
    } else {
        NvmlMode::Never
    };
    discover_with(root, Options { nvml })
}

/// Discovers the node below `root` with explicit options.
pub fn discover_with(root: impl AsRef<Path>, opts: Options) -> Result<Topology, DiscoveryError> {
    let sys = SysRoot::new(root.as_ref());
    let cpu_info = cpu::discover_cpus(&sys)?;
    let numa_nodes = cpu::discover_numa(&sys, &cpu_info.online)?;
    let mut cpus = cpu_info.cpus;
    for c in &mut cpus {
        c.numa_node = numa_nodes
            .iter()
            .find(|n| n.cpus.contains(c.id))
            .map(|n| n.id);
    }
    let pci = pci::discover_pci(&sys, &numa_nodes, &cpu_info.online)?;
    let mut devices = pci.devices;
    let has_nvidia_gpu = devices
        .iter()
        .any(|d| d.kind == DeviceKind::Gpu && d.vendor == "10de");
    let nvml = match opts.nvml {
        NvmlMode::Never => NvmlStatus::NotQueried,
        NvmlMode::IfNvidiaGpu if !has_nvidia_gpu => NvmlStatus::NoNvidiaGpu,
        NvmlMode::IfNvidiaGpu | NvmlMode::Always => nvml::query(),
    };
    if let NvmlStatus::Loaded { gpus, .. } = &nvml {
        for (addr, info) in gpus {
            if let Some(d) = devices.iter_mut().find(|d| d.pci_address == *addr) {
                d.gpu = Some(info.clone());
            }
        }
    }
    let matrix = DistanceMatrix::compute(&devices);
    let matrix_unknown_numa = matrix.unknown_pairs();
    for w in &pci.warnings {
        tracing::warn!("{w}");
    }
    Ok(Topology {
        schema_version: SCHEMA_VERSION,
        root: sys.root().to_path_buf(),
        online_cpus: cpu_info.online,
        isolated_cpus: cpu_info.isolated,
        cpus,
        caches: cpu_info.caches,
        numa_nodes,
        devices,
        rdma_devices: pci.rdma,
        nvml,
        matrix,
        matrix_unknown_numa,
        warnings: pci.warnings,
    })
}

impl Topology {
    /// The device at `addr`.
    pub fn device(&self, addr: PciAddress) -> Option<&PciDevice> {
        self.devices
            .binary_search_by_key(&addr, |d| d.pci_address)
            .ok()
            .map(|i| &self.devices[i])
    }

    /// The NUMA node with id `id`.
    pub fn numa_node(&self, id: u32) -> Option<&NumaNode> {
        self.numa_nodes.iter().find(|n| n.id == id)
    }

    /// SLIT distance between two NUMA nodes (10 = local).
    pub fn numa_distance(&self, from: u32, to: u32) -> Option<u32> {
        let j = self.numa_nodes.iter().position(|n| n.id == to)?;
        self.numa_node(from)?.distances.get(j).copied()
    }

    /// Distance from a device to the CPUs of a NUMA node: the SLIT distance
    /// between the device's node and `node`, or `None` when the device's
    /// node is unknown.
    pub fn device_numa_distance(&self, addr: PciAddress, node: u32) -> Option<u32> {
        self.numa_distance(self.device(addr)?.numa_node?, node)
    }

    /// Non-bridge devices, in matrix order.
    pub fn endpoints(&self) -> impl Iterator<Item = &PciDevice> {
        self.devices.iter().filter(|d| d.kind != DeviceKind::Bridge)
    }

    /// Number of physical cores (distinct package/core pairs).
    pub fn core_count(&self) -> usize {
        let mut cores: Vec<(u32, Option<u32>, u32)> = self
            .cpus
            .iter()
            .map(|c| (c.package, c.die, c.core))
            .collect();
        cores.sort_unstable();
        cores.dedup();
        cores.len()
    }
}
