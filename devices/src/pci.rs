//! PCI functions: identity, kind, place in the PCIe tree, NUMA affinity,
//! links, SR-IOV, and the netdevs, RDMA devices and NVMe controllers on them.

use std::collections::BTreeMap;

use pci_info::pci_enums::{PciDeviceClass, PciDeviceSubclass};
use pci_info::pci_headers::PciCommonHeader;
use serde::{Deserialize, Serialize};

use crate::cpu::NumaNode;
use crate::error::DiscoveryError;
use crate::parse::{self, CpuList, PciAddress};
use crate::sysfs::SysRoot;

/// What a PCI function is, for placement purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Display or 3D controller from NVIDIA, AMD or Intel.
    Gpu,
    /// Network controller, physical function.
    NicPf,
    /// Network controller, SR-IOV virtual function.
    NicVf,
    /// InfiniBand controller, or a non-network function carrying an RDMA
    /// device.
    RdmaHca,
    /// FPGA card (Xilinx/AMD, Altera/Intel PAC and known Intel FPGA parts).
    Fpga,
    /// Processing accelerator (class 0x12) that is not a known FPGA.
    Accelerator,
    /// NVM Express controller (PF or VF).
    Nvme,
    /// Any bridge (host, PCI-to-PCI, root or switch port, ISA, …).
    Bridge,
    /// Anything else.
    Other,
}

impl DeviceKind {
    /// Every kind in declaration order (so `KINDS[kind as usize]` is
    /// `kind`'s row), with its matrix label and its name.
    const KINDS: [(DeviceKind, &'static str, &'static str); 9] = [
        (DeviceKind::Gpu, "GPU", "gpu"),
        (DeviceKind::NicPf, "NIC", "nic-pf"),
        (DeviceKind::NicVf, "VF", "nic-vf"),
        (DeviceKind::RdmaHca, "HCA", "rdma-hca"),
        (DeviceKind::Fpga, "FPGA", "fpga"),
        (DeviceKind::Accelerator, "ACC", "accelerator"),
        (DeviceKind::Nvme, "NVME", "nvme"),
        (DeviceKind::Bridge, "BR", "bridge"),
        (DeviceKind::Other, "DEV", "other"),
    ];

    /// Short label prefix used in the text matrix (`GPU0`, `NIC1`, …).
    pub fn label(self) -> &'static str {
        Self::KINDS[self as usize].1
    }

    /// The kebab-case name used in JSON and on the command line.
    pub fn name(self) -> &'static str {
        Self::KINDS[self as usize].2
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::KINDS
            .iter()
            .find(|(_, _, name)| *name == s)
            .map(|&(kind, _, _)| kind)
            .ok_or_else(|| format!("unknown device kind {s:?}"))
    }
}

/// PCIe port type, from the PCI Express capability in config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortType {
    /// PCIe endpoint.
    Endpoint,
    /// Legacy PCIe endpoint.
    LegacyEndpoint,
    /// Root port of a root complex.
    RootPort,
    /// Upstream port of a switch.
    UpstreamPort,
    /// Downstream port of a switch.
    DownstreamPort,
    /// PCIe-to-PCI/PCI-X bridge.
    PcieToPciBridge,
    /// PCI/PCI-X-to-PCIe bridge.
    PciToPcieBridge,
    /// Root-complex integrated endpoint.
    RootComplexEndpoint,
    /// Root-complex event collector.
    EventCollector,
}

impl PortType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => PortType::Endpoint,
            1 => PortType::LegacyEndpoint,
            4 => PortType::RootPort,
            5 => PortType::UpstreamPort,
            6 => PortType::DownstreamPort,
            7 => PortType::PcieToPciBridge,
            8 => PortType::PciToPcieBridge,
            9 => PortType::RootComplexEndpoint,
            10 => PortType::EventCollector,
            _ => return None,
        })
    }
}

/// Where a device's NUMA node came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NumaSource {
    /// The device's `numa_node` attribute.
    Sysfs,
    /// `numa_node` was -1 or absent, and `local_cpulist` lies in exactly one
    /// node.
    LocalCpus,
    /// Neither tells: the node is unknown.
    Unknown,
}

/// PCIe link state; each field is `None` when the device does not report it
/// (conventional PCI, virtual functions, virtio).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Current speed, GT/s.
    pub current_speed_gts: Option<f32>,
    /// Current width, lanes.
    pub current_width: Option<u32>,
    /// Maximum speed, GT/s.
    pub max_speed_gts: Option<f32>,
    /// Maximum width, lanes.
    pub max_width: Option<u32>,
}

/// SR-IOV state of a function. Present on every device: a function that is
/// neither PF nor VF has zeros, no `pf` and no `vfs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sriov {
    /// `sriov_totalvfs` (0 when not SR-IOV capable).
    pub total_vfs: u32,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
    /// For a VF, its PF (from the `physfn` link).
    pub pf: Option<PciAddress>,
    /// For a PF, its VFs (from the `virtfnN` links), in VF index order.
    pub vfs: Vec<PciAddress>,
}

/// A GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Product name.
    pub name: String,
    /// GPU UUID.
    pub uuid: String,
    /// Framebuffer memory, bytes.
    pub memory_bytes: u64,
    /// PCI addresses of active NVLink peers.
    pub nvlink_peers: Vec<PciAddress>,
    /// Its minor number (`/dev/nvidiaN`), when NVML tells.
    #[serde(default)]
    pub minor: Option<u32>,
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PciDevice {
    /// `domain:bus:device.function`.
    pub pci_address: PciAddress,
    /// What the function is.
    pub kind: DeviceKind,
    /// 24-bit class code, as six hex digits (`020000`).
    pub class: String,
    /// Human-readable class/subclass.
    pub class_name: String,
    /// Vendor id, four hex digits.
    pub vendor: String,
    /// Device id, four hex digits.
    pub device: String,
    /// Subsystem vendor id, when reported.
    pub subsystem_vendor: Option<String>,
    /// Subsystem device id, when reported.
    pub subsystem_device: Option<String>,
    /// Bound driver.
    pub driver: Option<String>,
    /// NUMA node (see `numa_source`).
    pub numa_node: Option<u32>,
    /// How `numa_node` was decided.
    pub numa_source: NumaSource,
    /// CPUs local to the device (`local_cpulist`).
    pub local_cpus: CpuList,
    /// Root bus (host bridge) the device hangs off, e.g. `pci0000:00`.
    pub root_bus: String,
    /// PCI functions between the root bus and the device, root port first.
    pub upstream: Vec<PciAddress>,
    /// PCIe port type from config space, when readable.
    pub port_type: Option<PortType>,
    /// PCIe link.
    pub link: Link,
    /// SR-IOV.
    pub sriov: Sriov,
    /// Network interfaces on the function.
    pub netdevs: Vec<String>,
    /// Link type of the first of `netdevs` (by name), from its `type`
    /// attribute: `ether`, `infiniband`, … ([`parse::link_type`]); `None`
    /// without a netdev or when the attribute is absent.
    #[serde(default)]
    pub link_type: Option<String>,
    /// RDMA devices on the function.
    pub rdma_devices: Vec<String>,
    /// NVMe controllers on the function.
    pub nvme_controllers: Vec<String>,
    /// NVML data, for NVIDIA GPUs when NVML is loaded.
    pub gpu: Option<GpuInfo>,
}

impl PciDevice {
    /// A device described only by where it sits: address, kind, root bus,
    /// upstream bridges and NUMA node (identity fields empty). For synthetic
    /// topologies in tests and benchmarks.
    pub fn placed(
        pci_address: PciAddress,
        kind: DeviceKind,
        root_bus: &str,
        upstream: Vec<PciAddress>,
        numa_node: Option<u32>,
        local_cpus: CpuList,
    ) -> Self {
        Self {
            pci_address,
            kind,
            class: String::new(),
            class_name: String::new(),
            vendor: String::new(),
            device: String::new(),
            subsystem_vendor: None,
            subsystem_device: None,
            driver: None,
            numa_node,
            numa_source: if numa_node.is_some() {
                NumaSource::Sysfs
            } else {
                NumaSource::Unknown
            },
            local_cpus,
            root_bus: root_bus.to_owned(),
            upstream,
            port_type: None,
            link: Link::default(),
            sriov: Sriov::default(),
            netdevs: vec![],
            link_type: None,
            rdma_devices: vec![],
            nvme_controllers: vec![],
            gpu: None,
        }
    }
}

/// An RDMA device from `/sys/class/infiniband`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaDevice {
    /// Device name (`mlx5_0`, `rxe0`).
    pub name: String,
    /// The PCI function it sits on, directly or through its netdev.
    pub pci_address: Option<PciAddress>,
    /// Its network interfaces (RoCE/iWARP/soft-RoCE parents).
    pub netdevs: Vec<String>,
}

const PCI_DIR: &str = "sys/bus/pci/devices";

/// The most VFs a PF can have: `TotalVFs` is a 16-bit field of the SR-IOV
/// capability.
const MAX_TOTAL_VFS: u32 = u16::MAX as u32;

/// Known FPGA parts whose vendor also makes other things.
const INTEL_FPGA_DEVICES: &[u16] = &[
    0x09c4, 0x09c5, // PAC with Arria 10 GX
    0x0b2b, 0x0b2c, // PAC D5005 (Stratix 10)
    0x0b30, 0x0b31, // N3000
    0xbcbd, 0xbcbe, 0xbcc0, 0xbcc1, // Arria 10 / Stratix 10 OPAE parts
    0xbcce, 0xbccf, // N6000/N6001 (Agilex)
];

/// Classifies a function from its class code and ids. `is_vf` comes from the
/// `physfn` link, `has_rdma` from `/sys/class/infiniband`.
pub fn classify(class: u32, vendor: u16, device: u16, is_vf: bool, has_rdma: bool) -> DeviceKind {
    let base = (class >> 16) as u8;
    let sub = (class >> 8) as u8;
    if base == 0x06 {
        return DeviceKind::Bridge;
    }
    if vendor == 0x10ee
        || vendor == 0x1172
        || (vendor == 0x8086 && INTEL_FPGA_DEVICES.contains(&device))
    {
        return DeviceKind::Fpga;
    }
    match (base, sub) {
        (0x01, 0x08) => DeviceKind::Nvme,
        (0x03, _) if matches!(vendor, 0x10de | 0x1002 | 0x8086) => DeviceKind::Gpu,
        (0x02, 0x07) => DeviceKind::RdmaHca,
        (0x02, _) if is_vf => DeviceKind::NicVf,
        (0x02, _) => DeviceKind::NicPf,
        (0x12, _) => DeviceKind::Accelerator,
        _ if has_rdma => DeviceKind::RdmaHca,
        _ => DeviceKind::Other,
    }
}

/// Human-readable class name via `pci-info`'s class tables.
pub fn class_name(class: u32) -> String {
    let base = (class >> 16) as u8;
    let sub = (class >> 8) as u8;
    let sub_name = format!("{:?}", PciDeviceSubclass::from_codes(base, sub));
    if !sub_name.contains("Unknown") {
        return sub_name;
    }
    match PciDeviceClass::from_code(base) {
        PciDeviceClass::Unknown(c) => format!("class {c:#04x}"),
        c => format!("{c:?}"),
    }
}

/// The PCIe device/port type from raw config space, walking the capability
/// list (bounded; a malformed list gives `None`).
pub fn pcie_port_type(config: &[u8]) -> Option<PortType> {
    pcie_port_type_with(|off, len| config.get(off..off + len).map(<[u8]>::to_vec))
}

/// [`pcie_port_type`] reading config space through `read(offset, len)`, so
/// that only the few dwords the walk needs are read: on a virtual machine
/// every config-space dword read traps to the hypervisor (about 17 µs each
/// measured here, over a millisecond for a whole 256-byte read).
pub fn pcie_port_type_with(
    mut read: impl FnMut(usize, usize) -> Option<Vec<u8>>,
) -> Option<PortType> {
    let head = read(0, PciCommonHeader::COMMON_HEADER_LEN)?;
    let header = PciCommonHeader::with_bytes(&head).ok()?;
    if header.vendor_id == 0xffff || header.status & 0x10 == 0 {
        return None;
    }
    let mut ptr = usize::from(*read(0x34, 1)?.first()?) & 0xfc;
    for _ in 0..48 {
        if ptr < 0x40 {
            return None;
        }
        let cap = read(ptr, 4)?;
        if cap.len() < 4 {
            return None;
        }
        if cap[0] == 0x10 {
            let caps = u16::from_le_bytes([cap[2], cap[3]]);
            return PortType::from_code(((caps >> 4) & 0xf) as u8);
        }
        ptr = usize::from(cap[1]) & 0xfc;
        if ptr == 0 {
            return None;
        }
    }
    None
}

/// Which NUMA node, from `numa_node` (may be -1) and `local_cpus`.
pub fn decide_numa(
    attr: Option<u32>,
    local_cpus: &CpuList,
    nodes: &[NumaNode],
) -> (Option<u32>, NumaSource) {
    if let Some(n) = attr {
        if nodes.iter().any(|node| node.id == n) {
            return (Some(n), NumaSource::Sysfs);
        }
    }
    let mut hit = nodes.iter().filter(|n| n.cpus.intersects(local_cpus));
    match (hit.next(), hit.next()) {
        (Some(only), None) if local_cpus.is_subset(&only.cpus) => {
            (Some(only.id), NumaSource::LocalCpus)
        }
        _ => (None, NumaSource::Unknown),
    }
}

fn hex4(v: u32) -> String {
    format!("{v:04x}")
}

/// Maps every entry of `/sys/class/CLASS` to the PCI function that owns it.
fn class_owners(
    sys: &SysRoot,
    class: &str,
) -> Result<Vec<(String, Option<PciAddress>)>, DiscoveryError> {
    let dir = format!("sys/class/{class}");
    let mut out = Vec::new();
    for name in sys.list_opt(&dir)? {
        let owner = sys
            .read_link_opt(&format!("{dir}/{name}"))?
            .and_then(|t| parse::device_path(&t))
            .and_then(|p| p.chain.last().copied());
        out.push((name, owner));
    }
    Ok(out)
}

pub(crate) struct PciInfo {
    pub devices: Vec<PciDevice>,
    pub rdma: Vec<RdmaDevice>,
    pub warnings: Vec<String>,
}

pub(crate) fn discover_pci(
    sys: &SysRoot,
    nodes: &[NumaNode],
    online: &CpuList,
) -> Result<PciInfo, DiscoveryError> {
    let mut warnings = Vec::new();

    let mut netdevs: BTreeMap<PciAddress, Vec<String>> = BTreeMap::new();
    let mut netdev_owner: BTreeMap<String, PciAddress> = BTreeMap::new();
    for (name, owner) in class_owners(sys, "net")? {
        if let Some(a) = owner {
            netdevs.entry(a).or_default().push(name.clone());
            netdev_owner.insert(name, a);
        }
    }
    let mut nvme: BTreeMap<PciAddress, Vec<String>> = BTreeMap::new();
    for (name, owner) in class_owners(sys, "nvme")? {
        if let Some(a) = owner {
            nvme.entry(a).or_default().push(name);
        }
    }
    let mut rdma = Vec::new();
    let mut rdma_by_pci: BTreeMap<PciAddress, Vec<String>> = BTreeMap::new();
    for (name, owner) in class_owners(sys, "infiniband")? {
        let ndevs = rdma_netdevs(sys, &name)?;
        let pci = owner.or_else(|| ndevs.iter().find_map(|n| netdev_owner.get(n).copied()));
        if let Some(a) = pci {
            rdma_by_pci.entry(a).or_default().push(name.clone());
        }
        rdma.push(RdmaDevice {
            name,
            pci_address: pci,
            netdevs: ndevs,
        });
    }

    let names = sys.list(PCI_DIR)?;
    let mut devices = Vec::with_capacity(names.len());
    for name in names {
        let rel = format!("{PCI_DIR}/{name}");
        let addr = parse::pci_address(&name).map_err(|source| DiscoveryError::Parse {
            path: sys.path(&rel),
            source,
        })?;
        let target = sys
            .read_link_opt(&rel)?
            .ok_or_else(|| DiscoveryError::Inconsistent {
                path: sys.path(&rel),
                what: "not a symlink into /sys/devices".into(),
            })?;
        let place = parse::device_path(&target).ok_or_else(|| DiscoveryError::Inconsistent {
            path: sys.path(&rel),
            what: format!("link target {target:?} is not below a PCI root bus"),
        })?;
        if place.chain.last() != Some(&addr) {
            return Err(DiscoveryError::Inconsistent {
                path: sys.path(&rel),
                what: format!("link target {target:?} does not end in {addr}"),
            });
        }
        let class = sys.parse(&format!("{rel}/class"), parse::hex_u32)?;
        let vendor = sys.parse(&format!("{rel}/vendor"), parse::hex_u32)?;
        let device = sys.parse(&format!("{rel}/device"), parse::hex_u32)?;
        let subsystem_vendor = sys.parse_opt(&format!("{rel}/subsystem_vendor"), parse::hex_u32)?;
        let subsystem_device = sys.parse_opt(&format!("{rel}/subsystem_device"), parse::hex_u32)?;
        let driver = sys
            .read_link_opt(&format!("{rel}/driver"))?
            .map(|t| parse::link_basename(&t).to_owned());

        let local_cpus = match sys.parse_opt(&format!("{rel}/local_cpulist"), parse::cpulist)? {
            Some(l) => l,
            None => sys
                .parse_opt(&format!("{rel}/local_cpus"), parse::cpumask)?
                .unwrap_or_else(|| online.clone()),
        };
        let local_cpus = CpuList::from_ids(local_cpus.iter().filter(|&c| online.contains(c)));
        let numa_attr = sys
            .parse_opt(&format!("{rel}/numa_node"), parse::optional_id)?
            .flatten();
        let (numa_node, numa_source) = decide_numa(numa_attr, &local_cpus, nodes);

        let link = Link {
            current_speed_gts: sys
                .parse_opt(&format!("{rel}/current_link_speed"), parse::link_speed)?
                .flatten(),
            current_width: sys
                .parse_opt(&format!("{rel}/current_link_width"), parse::dec_u32)?
                .filter(|&w| w > 0),
            max_speed_gts: sys
                .parse_opt(&format!("{rel}/max_link_speed"), parse::link_speed)?
                .flatten(),
            max_width: sys
                .parse_opt(&format!("{rel}/max_link_width"), parse::dec_u32)?
                .filter(|&w| w > 0),
        };

        let pf = match sys.read_link_opt(&format!("{rel}/physfn"))? {
            None => None,
            Some(t) => {
                let base = parse::link_basename(&t);
                let pf = parse::pci_address(base).map_err(|source| DiscoveryError::Parse {
                    path: sys.path(&format!("{rel}/physfn")),
                    source,
                })?;
                Some(pf)
            }
        };
        // Counts read from the tree are bounded by what the tree can hold:
        // TotalVFs is a 16-bit field of the SR-IOV capability, and NumVFs
        // is at most TotalVFs; the VF list holds only links that exist.
        let total_path = format!("{rel}/sriov_totalvfs");
        let total_vfs = sys.parse_opt(&total_path, parse::dec_u32)?.unwrap_or(0);
        if total_vfs > MAX_TOTAL_VFS {
            return Err(DiscoveryError::Inconsistent {
                path: sys.path(&total_path),
                what: format!(
                    "{total_vfs} VFs, more than the SR-IOV capability can offer ({MAX_TOTAL_VFS})"
                ),
            });
        }
        let num_vfs = if total_vfs > 0 {
            let num_path = format!("{rel}/sriov_numvfs");
            let n = sys.parse_opt(&num_path, parse::dec_u32)?.unwrap_or(0);
            if n > total_vfs {
                return Err(DiscoveryError::Inconsistent {
                    path: sys.path(&num_path),
                    what: format!("{n} VFs enabled, more than sriov_totalvfs ({total_vfs})"),
                });
            }
            n
        } else {
            0
        };
        // VFs are `virtfn0..virtfn{numvfs-1}`: probe those links rather than
        // list the (large) device directory.
        let mut vfs = Vec::new();
        for idx in 0..num_vfs {
            let link = format!("{rel}/virtfn{idx}");
            if let Some(t) = sys.read_link_opt(&link)? {
                let vf = parse::pci_address(parse::link_basename(&t)).map_err(|source| {
                    DiscoveryError::Parse {
                        path: sys.path(&link),
                        source,
                    }
                })?;
                vfs.push(vf);
            }
        }
        let sriov = Sriov {
            total_vfs,
            num_vfs,
            pf,
            vfs,
        };
        // Port types matter for bridges (switch and root ports); an
        // endpoint's costs a config-space read for nothing.
        let port_type = if (class >> 16) == 0x06 {
            sys.config_reader(&format!("{rel}/config"))?
                .and_then(|c| pcie_port_type_with(|offset, len| c.read(offset, len)))
        } else {
            None
        };

        let rdma_devices = rdma_by_pci.remove(&addr).unwrap_or_default();
        let kind = classify(
            class,
            vendor as u16,
            device as u16,
            sriov.pf.is_some(),
            !rdma_devices.is_empty(),
        );
        let mut upstream = place.chain;
        upstream.pop();
        let device_netdevs = netdevs.remove(&addr).unwrap_or_default();
        let link_type = match device_netdevs.first() {
            Some(n) => sys.parse_opt(&format!("sys/class/net/{n}/type"), parse::link_type)?,
            None => None,
        };
        devices.push(PciDevice {
            pci_address: addr,
            kind,
            class: format!("{class:06x}"),
            class_name: class_name(class),
            vendor: hex4(vendor),
            device: hex4(device),
            subsystem_vendor: subsystem_vendor.map(hex4),
            subsystem_device: subsystem_device.map(hex4),
            driver,
            numa_node,
            numa_source,
            local_cpus,
            root_bus: place.root_bus,
            upstream,
            port_type,
            link,
            sriov,
            link_type,
            netdevs: device_netdevs,
            rdma_devices,
            nvme_controllers: nvme.remove(&addr).unwrap_or_default(),
            gpu: None,
        });
    }
    devices.sort_by_key(|d| d.pci_address);

    for d in &devices {
        if let Some(pf) = d.sriov.pf {
            if devices
                .binary_search_by_key(&pf, |x| x.pci_address)
                .is_err()
            {
                warnings.push(format!("{}: its PF {pf} is not present", d.pci_address));
            }
        }
    }
    Ok(PciInfo {
        devices,
        rdma,
        warnings,
    })
}

/// The netdevs of an RDMA device: `parent` (soft-RoCE), else the GID table's
/// `ndevs` entries.
fn rdma_netdevs(sys: &SysRoot, name: &str) -> Result<Vec<String>, DiscoveryError> {
    let dir = format!("sys/class/infiniband/{name}");
    if let Some(p) = sys.read_opt(&format!("{dir}/parent"))? {
        let p = p.trim();
        if !p.is_empty() {
            return Ok(vec![p.to_owned()]);
        }
    }
    let mut out = Vec::new();
    for port in sys.list_opt(&format!("{dir}/ports"))? {
        let ndir = format!("{dir}/ports/{port}/gid_attrs/ndevs");
        for idx in sys.list_opt(&ndir)? {
            if let Some(n) = sys.read_opt(&format!("{ndir}/{idx}"))? {
                let n = n.trim();
                if !n.is_empty() && !out.iter().any(|o: &String| o == n) {
                    out.push(n.to_owned());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind's row sits at its index, and its name is the one serde
    /// writes and the one `FromStr` reads back.
    #[test]
    fn kind_table_matches_the_enum() {
        for (i, &(kind, _, name)) in DeviceKind::KINDS.iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
            assert_eq!(name.parse::<DeviceKind>(), Ok(kind));
        }
        assert_eq!(DeviceKind::KINDS.len(), DeviceKind::Other as usize + 1);
        assert_eq!(DeviceKind::NicVf.label(), "VF");
        assert!("tpu".parse::<DeviceKind>().is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(
            classify(0x030200, 0x10de, 0x20b0, false, false),
            DeviceKind::Gpu
        );
        assert_eq!(
            classify(0x030000, 0x1a03, 0x2000, false, false),
            DeviceKind::Other,
            "BMC VGA is no GPU"
        );
        assert_eq!(
            classify(0x020000, 0x8086, 0x10c9, false, false),
            DeviceKind::NicPf
        );
        assert_eq!(
            classify(0x020000, 0x8086, 0x10ca, true, false),
            DeviceKind::NicVf
        );
        assert_eq!(
            classify(0x020000, 0x15b3, 0x101b, false, true),
            DeviceKind::NicPf
        );
        assert_eq!(
            classify(0x020700, 0x15b3, 0x1003, false, true),
            DeviceKind::RdmaHca
        );
        assert_eq!(
            classify(0x010802, 0x1b36, 0x0010, false, false),
            DeviceKind::Nvme
        );
        assert_eq!(
            classify(0x010802, 0x1b36, 0x0010, true, false),
            DeviceKind::Nvme
        );
        assert_eq!(
            classify(0x120000, 0x1d0f, 0xefa0, false, false),
            DeviceKind::Accelerator
        );
        assert_eq!(
            classify(0x120000, 0x10ee, 0x5000, false, false),
            DeviceKind::Fpga
        );
        assert_eq!(
            classify(0x058000, 0x10ee, 0x5001, false, false),
            DeviceKind::Fpga
        );
        assert_eq!(
            classify(0x120000, 0x8086, 0x0b30, false, false),
            DeviceKind::Fpga
        );
        assert_eq!(
            classify(0x060400, 0x10ee, 0x0001, false, false),
            DeviceKind::Bridge
        );
        assert_eq!(
            classify(0x060000, 0x8086, 0x29c0, false, false),
            DeviceKind::Bridge
        );
        assert_eq!(
            classify(0xffff00, 0x1af4, 0x1045, false, false),
            DeviceKind::Other
        );
        assert_eq!(
            classify(0x0c0330, 0x8086, 0x1e31, false, true),
            DeviceKind::RdmaHca
        );
    }

    #[test]
    fn kind_names_roundtrip() {
        for k in [
            "gpu",
            "nic-pf",
            "nic-vf",
            "rdma-hca",
            "fpga",
            "accelerator",
            "nvme",
            "bridge",
            "other",
        ] {
            assert_eq!(k.parse::<DeviceKind>().unwrap().name(), k);
        }
        assert!("tpu".parse::<DeviceKind>().is_err());
    }

    #[test]
    fn class_names() {
        assert_eq!(class_name(0x020000), "NetworkController_Ethernet");
        assert_eq!(
            class_name(0x010802),
            "MassStorageController_NonVolatileMemory"
        );
        assert_eq!(class_name(0x128000), "ProcessingAccelerator");
        assert!(class_name(0xffff00).contains("0xff"));
    }

    fn config_with_pcie_cap(port: u8) -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[0..2].copy_from_slice(&0x8086u16.to_le_bytes());
        c[6] = 0x10; // status: capability list
        c[0x34] = 0x40;
        c[0x40] = 0x01; // power management
        c[0x41] = 0x60;
        c[0x60] = 0x10; // PCI Express
        c[0x61] = 0x00;
        c[0x62] = port << 4 | 2;
        c
    }

    #[test]
    fn port_types_from_config() {
        assert_eq!(
            pcie_port_type(&config_with_pcie_cap(4)),
            Some(PortType::RootPort)
        );
        assert_eq!(
            pcie_port_type(&config_with_pcie_cap(5)),
            Some(PortType::UpstreamPort)
        );
        assert_eq!(
            pcie_port_type(&config_with_pcie_cap(6)),
            Some(PortType::DownstreamPort)
        );
        assert_eq!(
            pcie_port_type(&config_with_pcie_cap(0)),
            Some(PortType::Endpoint)
        );
        // Only the 64-byte header (what an unprivileged read returns).
        assert_eq!(pcie_port_type(&config_with_pcie_cap(4)[..64]), None);
        // Truncated below the header.
        assert_eq!(pcie_port_type(&[0x86, 0x80]), None);
        // A capability loop must terminate.
        let mut looped = config_with_pcie_cap(4);
        looped[0x60] = 0x01;
        looped[0x61] = 0x40;
        assert_eq!(pcie_port_type(&looped), None);
        // No capability list.
        let mut nocap = config_with_pcie_cap(4);
        nocap[6] = 0;
        assert_eq!(pcie_port_type(&nocap), None);
    }

    fn node(id: u32, cpus: &[u32]) -> NumaNode {
        NumaNode {
            id,
            cpus: CpuList::from_ids(cpus.iter().copied()),
            memory_bytes: 0,
            free_bytes: 0,
            distances: vec![],
        }
    }

    #[test]
    fn numa_decisions() {
        let nodes = [node(0, &[0, 1]), node(1, &[2, 3]), node(2, &[])];
        let l = |ids: &[u32]| CpuList::from_ids(ids.iter().copied());
        assert_eq!(
            decide_numa(Some(1), &l(&[0, 1, 2, 3]), &nodes),
            (Some(1), NumaSource::Sysfs)
        );
        assert_eq!(
            decide_numa(Some(2), &l(&[]), &nodes),
            (Some(2), NumaSource::Sysfs)
        );
        assert_eq!(
            decide_numa(None, &l(&[2, 3]), &nodes),
            (Some(1), NumaSource::LocalCpus)
        );
        assert_eq!(
            decide_numa(None, &l(&[0, 1, 2, 3]), &nodes),
            (None, NumaSource::Unknown)
        );
        assert_eq!(
            decide_numa(None, &l(&[]), &nodes),
            (None, NumaSource::Unknown)
        );
        // A node id the system does not have is not believed.
        assert_eq!(
            decide_numa(Some(7), &l(&[0]), &nodes),
            (Some(0), NumaSource::LocalCpus)
        );
    }
}
