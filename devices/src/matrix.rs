//! The PCIe distance matrix, in the `nvidia-smi topo -m` vocabulary, for
//! every pair of endpoint functions (all functions that are not bridges).
//!
//! | level  | meaning                                                                  | cost |
//! |--------|--------------------------------------------------------------------------|------|
//! | `X`    | the device itself                                                        | 0    |
//! | `PIX`  | path crosses at most one PCIe switch (or only a shared parent bridge)    | 20   |
//! | `PXB`  | same root port, path crosses two or more switches                        | 30   |
//! | `PHB`  | same host bridge (root bus), different root ports                        | 35   |
//! | `NODE` | different host bridges on the same NUMA node                             | 40   |
//! | `SYS`  | different NUMA nodes (or unknown NUMA and no shared host bridge)         | 50   |
//!
//! Costs are the seed's figures (PIX 2, PXB 3, NODE 4, SYS 5) times ten, with
//! PHB half-way between PXB and NODE, so that a sum of costs stays integral.
//!
//! A switch is its upstream port plus its downstream ports and is counted
//! once however many of its ports a path uses. Root ports are not switches.
//! A bridge's role comes from the PCIe capability in config space when that
//! is readable, else from its place in the tree (a bridge on the root bus is
//! a root port; a bridge with bridges below it, under a root or downstream
//! port, is a switch upstream port; a bridge under an upstream port is a
//! downstream port; any other bridge counts as a switch of its own).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::parse::PciAddress;
use crate::pci::{DeviceKind, PciDevice, PortType};

/// How far apart two devices are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// Same device.
    X,
    /// At most one PCIe switch between them.
    PIX,
    /// Same root port, two or more switches.
    PXB,
    /// Same host bridge, different root ports.
    PHB,
    /// Different host bridges, same NUMA node.
    NODE,
    /// Different NUMA nodes (or unknown).
    SYS,
}

impl Level {
    /// The numeric cost of this level (see the module documentation).
    pub const fn cost(self) -> u32 {
        match self {
            Level::X => 0,
            Level::PIX => 20,
            Level::PXB => 30,
            Level::PHB => 35,
            Level::NODE => 40,
            Level::SYS => 50,
        }
    }

    /// The level's name as `nvidia-smi topo -m` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Level::X => "X",
            Level::PIX => "PIX",
            Level::PXB => "PXB",
            Level::PHB => "PHB",
            Level::NODE => "NODE",
            Level::SYS => "SYS",
        }
    }

    /// One-line description for legends.
    pub const fn description(self) -> &'static str {
        match self {
            Level::X => "Self",
            Level::PIX => "Connection traversing at most a single PCIe switch",
            Level::PXB => "Connection traversing multiple PCIe switches under one root port",
            Level::PHB => "Connection traversing a PCIe host bridge (different root ports)",
            Level::NODE => "Connection between PCIe host bridges within a NUMA node",
            Level::SYS => "Connection across NUMA nodes (SMP interconnect), or NUMA unknown",
        }
    }

    /// All levels, nearest first.
    pub const ALL: [Level; 6] = [
        Level::X,
        Level::PIX,
        Level::PXB,
        Level::PHB,
        Level::NODE,
        Level::SYS,
    ];
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level of every pair of endpoint devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistanceMatrix {
    devices: Vec<PciAddress>,
    index: HashMap<PciAddress, usize>,
    levels: Vec<Level>,
    unknown: Vec<bool>,
}

impl DistanceMatrix {
    /// The devices of the matrix, in row order.
    pub fn devices(&self) -> &[PciAddress] {
        &self.devices
    }

    /// Row index of a device.
    pub fn index_of(&self, a: PciAddress) -> Option<usize> {
        self.index.get(&a).copied()
    }

    /// Level between rows `i` and `j`.
    pub fn at(&self, i: usize, j: usize) -> Level {
        self.levels[i * self.devices.len() + j]
    }

    /// Level between two devices, `None` if either is not in the matrix.
    pub fn get(&self, a: PciAddress, b: PciAddress) -> Option<Level> {
        Some(self.at(self.index_of(a)?, self.index_of(b)?))
    }

    /// True when the pair's level is `SYS` only because a NUMA node is
    /// unknown.
    pub fn is_unknown(&self, i: usize, j: usize) -> bool {
        self.unknown[i * self.devices.len() + j]
    }

    /// Pairs (each once, `a < b`) whose level is `SYS` for want of NUMA
    /// information.
    pub fn unknown_pairs(&self) -> Vec<(PciAddress, PciAddress)> {
        let n = self.devices.len();
        let mut out = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                if self.unknown[i * n + j] {
                    out.push((self.devices[i], self.devices[j]));
                }
            }
        }
        out
    }

    /// Computes the matrix over every non-bridge device of `devices` (which
    /// must hold the bridges too, to know their roles).
    pub fn compute(devices: &[PciDevice]) -> Self {
        let roles = BridgeRoles::new(devices);
        let endpoints: Vec<&PciDevice> = devices
            .iter()
            .filter(|d| d.kind != DeviceKind::Bridge)
            .collect();
        let n = endpoints.len();
        // Per endpoint: the switch each upstream bridge belongs to.
        let switch_ids: Vec<Vec<Option<PciAddress>>> = endpoints
            .iter()
            .map(|d| d.upstream.iter().map(|b| roles.switch_of(*b)).collect())
            .collect();
        let mut levels = vec![Level::X; n * n];
        let mut unknown = vec![false; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let (level, unk) =
                    pair_level(endpoints[i], endpoints[j], &switch_ids[i], &switch_ids[j]);
                levels[i * n + j] = level;
                levels[j * n + i] = level;
                unknown[i * n + j] = unk;
                unknown[j * n + i] = unk;
            }
        }
        let devices: Vec<PciAddress> = endpoints.iter().map(|d| d.pci_address).collect();
        let index = devices.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        Self {
            devices,
            index,
            levels,
            unknown,
        }
    }
}

fn pair_level(
    a: &PciDevice,
    b: &PciDevice,
    sw_a: &[Option<PciAddress>],
    sw_b: &[Option<PciAddress>],
) -> (Level, bool) {
    if a.root_bus != b.root_bus {
        return match (a.numa_node, b.numa_node) {
            (Some(x), Some(y)) if x == y => (Level::NODE, false),
            (Some(_), Some(_)) => (Level::SYS, false),
            _ => (Level::SYS, true),
        };
    }
    let k = a
        .upstream
        .iter()
        .zip(&b.upstream)
        .take_while(|(x, y)| x == y)
        .count();
    if k == 0 {
        return (Level::PHB, false);
    }
    // Bridges on the path: the common (turn-around) bridge, then each side's
    // bridges below it.
    let mut switches: Vec<PciAddress> = sw_a[k - 1..]
        .iter()
        .chain(&sw_b[k..])
        .filter_map(|s| *s)
        .collect();
    switches.sort_unstable();
    switches.dedup();
    if switches.len() <= 1 {
        (Level::PIX, false)
    } else {
        (Level::PXB, false)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Root,
    Upstream,
    Downstream,
    Other,
}

struct BridgeRoles {
    roles: HashMap<PciAddress, (Role, Option<PciAddress>)>,
}

impl BridgeRoles {
    fn new(devices: &[PciDevice]) -> Self {
        let bridges: BTreeMap<PciAddress, &PciDevice> = devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Bridge)
            .map(|d| (d.pci_address, d))
            .collect();
        let mut has_bridge_child: HashMap<PciAddress, bool> = HashMap::new();
        for b in bridges.values() {
            if let Some(p) = b.upstream.last() {
                has_bridge_child.insert(*p, true);
            }
        }
        // Parents come before children when sorted by depth.
        let mut order: Vec<&PciDevice> = bridges.values().copied().collect();
        order.sort_by_key(|d| d.upstream.len());
        let mut roles: HashMap<PciAddress, (Role, Option<PciAddress>)> = HashMap::new();
        for b in order {
            let parent = b.upstream.last().copied();
            let parent_role = parent.and_then(|p| roles.get(&p).map(|r| r.0));
            let role = match b.port_type {
                Some(PortType::RootPort) => Role::Root,
                Some(PortType::UpstreamPort) => Role::Upstream,
                Some(PortType::DownstreamPort) => Role::Downstream,
                _ if parent.is_none() => Role::Root,
                _ if parent_role == Some(Role::Upstream) => Role::Downstream,
                _ if has_bridge_child
                    .get(&b.pci_address)
                    .copied()
                    .unwrap_or(false)
                    && matches!(parent_role, Some(Role::Root | Role::Downstream)) =>
                {
                    Role::Upstream
                }
                _ => Role::Other,
            };
            roles.insert(b.pci_address, (role, parent));
        }
        Self { roles }
    }

    /// The switch a bridge belongs to, identified by its upstream port;
    /// `None` for root ports (and for non-bridges in the chain).
    fn switch_of(&self, bridge: PciAddress) -> Option<PciAddress> {
        match self.roles.get(&bridge)? {
            (Role::Root, _) => None,
            (Role::Upstream | Role::Other, _) => Some(bridge),
            (Role::Downstream, parent) => Some(parent.unwrap_or(bridge)),
        }
    }
}

impl Serialize for DistanceMatrix {
    /// `{ "0000:01:00.0": { "0000:01:00.0": "X", "0000:02:00.0": "PIX" }, … }`
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Row<'a>(&'a DistanceMatrix, usize);
        impl Serialize for Row<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.devices.len()))?;
                for (j, d) in self.0.devices.iter().enumerate() {
                    m.serialize_entry(d, &self.0.at(self.1, j))?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(self.devices.len()))?;
        for (i, d) in self.devices.iter().enumerate() {
            m.serialize_entry(d, &Row(self, i))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for DistanceMatrix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let rows: BTreeMap<PciAddress, BTreeMap<PciAddress, Level>> = BTreeMap::deserialize(d)?;
        let devices: Vec<PciAddress> = rows.keys().copied().collect();
        let n = devices.len();
        let index: HashMap<PciAddress, usize> =
            devices.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let mut levels = vec![Level::X; n * n];
        for (a, row) in &rows {
            if row.len() != n {
                return Err(serde::de::Error::custom(format!(
                    "matrix row {a} has {} entries, expected {n}",
                    row.len()
                )));
            }
            for (b, l) in row {
                let j = *index.get(b).ok_or_else(|| {
                    serde::de::Error::custom(format!("matrix row {a} names unknown device {b}"))
                })?;
                levels[index[a] * n + j] = *l;
            }
        }
        Ok(Self {
            devices,
            index,
            levels,
            unknown: vec![false; n * n],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{pci_address, CpuList};

    fn dev(
        addr: &str,
        kind: DeviceKind,
        root: &str,
        up: &[&str],
        port: Option<PortType>,
        numa: Option<u32>,
    ) -> PciDevice {
        let upstream = up.iter().map(|a| pci_address(a).unwrap()).collect();
        let mut d = PciDevice::placed(
            pci_address(addr).unwrap(),
            kind,
            root,
            upstream,
            numa,
            CpuList::new(),
        );
        d.port_type = port;
        d
    }

    /// A switch whose ports declare their type in config space, and one leaf
    /// bridge with no bridge below it: a PCIe-to-PCI bridge counts as a
    /// switch of its own, so crossing it and the switch is PXB.
    #[test]
    fn config_space_port_types_decide_roles() {
        use DeviceKind::{Bridge, NicPf, Other};
        let b = "pci0000:00";
        // The bridges above each device, root port first.
        let root_port = ["0000:00:01.0"];
        let switch = ["0000:00:01.0", "0000:01:00.0"];
        let port0 = ["0000:00:01.0", "0000:01:00.0", "0000:02:00.0"];
        let port1 = ["0000:00:01.0", "0000:01:00.0", "0000:02:01.0"];
        let pci_bridge = [
            "0000:00:01.0",
            "0000:01:00.0",
            "0000:02:01.0",
            "0000:04:00.0",
        ];
        let bridge = |addr, up: &[&str], port| dev(addr, Bridge, b, up, Some(port), Some(0));
        let devices = vec![
            bridge("0000:00:01.0", &[], PortType::RootPort),
            bridge("0000:01:00.0", &root_port, PortType::UpstreamPort),
            bridge("0000:02:00.0", &switch, PortType::DownstreamPort),
            bridge("0000:02:01.0", &switch, PortType::DownstreamPort),
            dev("0000:03:00.0", NicPf, b, &port0, None, Some(0)),
            bridge("0000:04:00.0", &port1, PortType::PcieToPciBridge),
            dev("0000:05:00.0", Other, b, &pci_bridge, None, Some(0)),
            dev("0000:05:01.0", Other, b, &pci_bridge, None, Some(0)),
            dev("0000:00:1f.0", Other, b, &[], None, None),
            dev("0001:00:00.0", Other, "pci0001:00", &[], None, None),
        ];
        let m = DistanceMatrix::compute(&devices);
        let get = |a: &str, b: &str| {
            m.get(pci_address(a).unwrap(), pci_address(b).unwrap())
                .unwrap()
        };
        assert_eq!(m.devices().len(), 5);
        assert_eq!(get("0000:03:00.0", "0000:03:00.0"), Level::X);
        assert_eq!(get("0000:03:00.0", "0000:05:00.0"), Level::PXB);
        assert_eq!(get("0000:05:00.0", "0000:05:01.0"), Level::PIX);
        assert_eq!(get("0000:03:00.0", "0000:00:1f.0"), Level::PHB);
        assert_eq!(get("0000:00:1f.0", "0001:00:00.0"), Level::SYS);
        let i = m.index_of(pci_address("0000:00:1f.0").unwrap()).unwrap();
        let j = m.index_of(pci_address("0001:00:00.0").unwrap()).unwrap();
        assert!(m.is_unknown(i, j));
        assert_eq!(
            m.unknown_pairs().len(),
            4,
            "0001:00:00.0 against each device of the other root bus"
        );
        for l in Level::ALL.windows(2) {
            assert!(l[0].cost() < l[1].cost());
        }
    }

    #[test]
    fn json_roundtrip_keeps_levels() {
        use DeviceKind::NicPf;
        let devices = vec![
            dev("0000:00:01.0", NicPf, "pci0000:00", &[], None, Some(0)),
            dev("0000:40:01.0", NicPf, "pci0000:40", &[], None, Some(0)),
        ];
        let m = DistanceMatrix::compute(&devices);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"0000:00:01.0":{"0000:00:01.0":"X","0000:40:01.0":"NODE"},"0000:40:01.0":{"0000:00:01.0":"NODE","0000:40:01.0":"X"}}"#
        );
        let back: DistanceMatrix = serde_json::from_str(&text).unwrap();
        assert_eq!(back.at(0, 1), Level::NODE);
        assert!(
            serde_json::from_str::<DistanceMatrix>(r#"{"0000:00:01.0":{"0000:00:02.0":"X"}}"#)
                .is_err()
        );
    }
}
