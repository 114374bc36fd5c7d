//! Synthetic topologies built in memory, for allocator property tests and
//! benchmarks at sizes no test machine has (up to 64 NUMA nodes / 1024 CPUs).
//!
//! Layout: `packages` sockets, each with `nodes_per_package` NUMA nodes (one
//! L3 per node), `cores_per_node` cores of `threads` SMT threads. CPU ids
//! are numbered core-major per node, siblings last (Linux's usual
//! enumeration: thread 0 of every core, then thread 1 …). SLIT: 10 local,
//! 12 same package, 20 + 10 × package hops otherwise. Each node has its own
//! root bus with one root port → one switch, under which sit the node's
//! devices; node 0 also has a device directly on the root complex whose NUMA
//! node is unknown.

use griffin_devices::pci::Sriov;
use griffin_devices::{
    Cache, Cpu, CpuList, DeviceKind, DistanceMatrix, NumaNode, NvmlStatus, PciAddress, PciDevice,
    Topology,
};

/// Shape of a synthetic node.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Sockets.
    pub packages: u32,
    /// NUMA nodes per socket.
    pub nodes_per_package: u32,
    /// Cores per NUMA node.
    pub cores_per_node: u32,
    /// SMT threads per core.
    pub threads: u32,
    /// Devices under each node's switch.
    pub devices_per_node: Vec<DeviceKind>,
    /// Memory per node, bytes.
    pub memory_per_node: u64,
}

impl Shape {
    /// Total CPUs.
    pub fn cpu_count(&self) -> u32 {
        self.packages * self.nodes_per_package * self.cores_per_node * self.threads
    }

    /// Total NUMA nodes.
    pub fn node_count(&self) -> u32 {
        self.packages * self.nodes_per_package
    }

    /// One-line description.
    pub fn describe(&self) -> String {
        format!(
            "{} packages, {} NUMA nodes, {} CPUs, {} devices",
            self.packages,
            self.node_count(),
            self.cpu_count(),
            self.node_count() as usize
                * (self.devices_per_node.len()
                    + self
                        .devices_per_node
                        .iter()
                        .filter(|k| **k == DeviceKind::NicVf)
                        .count())
                + 1
        )
    }

    /// The largest shape the allocator is designed for: 16 sockets × 4 nodes
    /// × 8 cores × 2 threads = 64 NUMA nodes, 1024 CPUs, 4 devices a node.
    pub fn huge() -> Self {
        Self {
            packages: 16,
            nodes_per_package: 4,
            cores_per_node: 8,
            threads: 2,
            devices_per_node: vec![
                DeviceKind::Gpu,
                DeviceKind::NicVf,
                DeviceKind::NicVf,
                DeviceKind::Nvme,
            ],
            memory_per_node: 64 << 30,
        }
    }

    /// Builds the topology.
    pub fn topology(&self) -> Topology {
        let nodes = self.node_count();
        let per_node = self.cores_per_node * self.threads;
        let cores_total = nodes * self.cores_per_node;
        let mut cpus = Vec::new();
        let mut caches = Vec::new();
        let mut numa_nodes = Vec::new();
        for n in 0..nodes {
            let package = n / self.nodes_per_package;
            let mut node_cpus = Vec::new();
            for c in 0..self.cores_per_node {
                let core_global = n * self.cores_per_node + c;
                let siblings: Vec<u32> = (0..self.threads)
                    .map(|t| t * cores_total + core_global)
                    .collect();
                node_cpus.extend(&siblings);
                for &id in &siblings {
                    cpus.push(Cpu {
                        id,
                        package,
                        die: Some(0),
                        core: (n % self.nodes_per_package) * self.cores_per_node + c,
                        numa_node: Some(n),
                        siblings: CpuList::from_ids(siblings.iter().copied()),
                        l2: None,
                        l3: Some(n as usize),
                    });
                }
            }
            let node_cpus = CpuList::from_ids(node_cpus);
            caches.push(Cache {
                level: 3,
                kind: "Unified".into(),
                size_bytes: Some(32 << 20),
                cpus: node_cpus.clone(),
            });
            let distances = (0..nodes)
                .map(|m| {
                    let (pa, pb) = (n / self.nodes_per_package, m / self.nodes_per_package);
                    if m == n {
                        10
                    } else if pa == pb {
                        12
                    } else {
                        20 + 10 * pa.abs_diff(pb).min(3)
                    }
                })
                .collect();
            numa_nodes.push(NumaNode {
                id: n,
                cpus: node_cpus,
                memory_bytes: self.memory_per_node,
                free_bytes: self.memory_per_node,
                distances,
            });
        }
        cpus.sort_by_key(|c| c.id);
        debug_assert_eq!(cpus.len() as u32, nodes * per_node);

        let mut devices = Vec::new();
        let addr = |bus: u32, dev: u8, func: u8| PciAddress {
            domain: bus >> 8,
            bus: (bus & 0xff) as u8,
            device: dev,
            function: func,
        };
        for n in 0..nodes {
            let root = format!("pci{:04x}:{:02x}", (n * 4 + 1) >> 8, ((n * 4 + 1) & 0xff));
            let base = n * 4 + 1;
            let rp = addr(base, 0, 0);
            let up = addr(base + 1, 0, 0);
            let local = &numa_nodes[n as usize].cpus;
            // Every device of node n: on its root bus, with its CPUs.
            let placed = |a, kind, upstream| {
                with_ids(PciDevice::placed(
                    a,
                    kind,
                    &root,
                    upstream,
                    Some(n),
                    local.clone(),
                ))
            };
            devices.push(placed(rp, DeviceKind::Bridge, vec![]));
            devices.push(placed(up, DeviceKind::Bridge, vec![rp]));
            for (i, kind) in self.devices_per_node.iter().enumerate() {
                let dp = addr(base + 2, i as u8, 0);
                devices.push(placed(dp, DeviceKind::Bridge, vec![rp, up]));
                let ep = addr(base + 3, i as u8, 0);
                let under = vec![rp, up, dp];
                if *kind == DeviceKind::NicVf {
                    // A VF comes with its PF (function 0); the VF is function 1.
                    let vf_addr = addr(base + 3, i as u8, 1);
                    let mut pf = placed(ep, DeviceKind::NicPf, under.clone());
                    pf.sriov = Sriov {
                        total_vfs: 7,
                        num_vfs: 1,
                        pf: None,
                        vfs: vec![vf_addr],
                    };
                    let mut vf = placed(vf_addr, DeviceKind::NicVf, under);
                    vf.sriov.pf = Some(ep);
                    devices.push(pf);
                    devices.push(vf);
                } else {
                    devices.push(placed(ep, *kind, under));
                }
            }
        }
        let all = CpuList::from_ids(cpus.iter().map(|c| c.id));
        devices.push(with_ids(PciDevice::placed(
            addr(0, 2, 0),
            DeviceKind::NicPf,
            "pci0000:00",
            vec![],
            None,
            all.clone(),
        )));
        devices.sort_by_key(|d| d.pci_address);
        let matrix = DistanceMatrix::compute(&devices);
        let matrix_unknown_numa = matrix.unknown_pairs();
        Topology {
            schema_version: griffin_devices::SCHEMA_VERSION,
            root: "synthetic".into(),
            online_cpus: all,
            isolated_cpus: CpuList::new(),
            cpus,
            caches,
            numa_nodes,
            devices,
            rdma_devices: vec![],
            nvml: NvmlStatus::NotQueried,
            matrix,
            matrix_unknown_numa,
            warnings: vec![],
        }
    }
}

/// Class, vendor and device ids the sysfs form uses for each kind.
fn ids_of(kind: DeviceKind) -> (u32, u16, u16) {
    match kind {
        DeviceKind::Gpu => (0x030200, 0x10de, 0x20b0),
        DeviceKind::NicPf => (0x020000, 0x8086, 0x10c9),
        DeviceKind::NicVf => (0x020000, 0x8086, 0x10ca),
        DeviceKind::RdmaHca => (0x020700, 0x15b3, 0x1003),
        DeviceKind::Fpga => (0x120000, 0x10ee, 0x5000),
        DeviceKind::Accelerator => (0x120000, 0x1d0f, 0xefa0),
        DeviceKind::Nvme => (0x010802, 0x1b36, 0x0010),
        DeviceKind::Bridge => (0x060400, 0x1b36, 0x000c),
        DeviceKind::Other => (0xff0000, 0x1af4, 0x1045),
    }
}

impl Shape {
    /// The same node as a sysfs tree description (write it with
    /// [`crate::sysfs::TreeBuilder::write`]): discovering the written tree
    /// gives [`Shape::topology`] back.
    pub fn tree(&self) -> crate::sysfs::TreeBuilder {
        use crate::sysfs::Function;
        let topo = self.topology();
        let mut t = crate::sysfs::TreeBuilder::new();
        for c in &topo.cpus {
            t.cpu(c.id, c.package, 0, c.core, c.siblings.as_slice());
        }
        for c in &topo.caches {
            t.cache(c.level, &c.kind, "32768K", c.cpus.as_slice());
        }
        for n in &topo.numa_nodes {
            t.node(
                n.id,
                n.cpus.as_slice(),
                n.memory_bytes >> 10,
                n.free_bytes >> 10,
                &n.distances,
            );
        }
        let mut buses: Vec<(String, Option<u32>)> = topo
            .devices
            .iter()
            .map(|d| (d.root_bus.clone(), d.numa_node))
            .collect();
        buses.sort();
        buses.dedup_by(|a, b| a.0 == b.0);
        for (bus, numa) in &buses {
            t.root_bus(bus, *numa);
        }
        for d in &topo.devices {
            let parent = d
                .upstream
                .last()
                .map_or_else(|| d.root_bus.clone(), ToString::to_string);
            let addr = d.pci_address.to_string();
            if d.kind == DeviceKind::Bridge {
                t.pci(Function::bridge(&addr, &parent));
                continue;
            }
            let (class, vendor, device) = ids_of(d.kind);
            let mut f = Function::new(&addr, &parent, class, vendor, device);
            if let Some(pf) = d.sriov.pf {
                f = f.vf_of(&pf.to_string());
            }
            if d.sriov.total_vfs > 0 {
                f = f.sriov(d.sriov.total_vfs, d.sriov.num_vfs);
            }
            t.pci(f);
        }
        t
    }
}

/// `d` with vendor and device ids `0000` (a synthetic device is no known
/// part).
fn with_ids(mut d: PciDevice) -> PciDevice {
    d.vendor = "0000".into();
    d.device = "0000".into();
    d
}

/// Node `n`'s first bus in [`vf_farm`].
fn farm_bus(n: u32) -> u32 {
    0x10 + 0x20 * n
}

/// The PF `p` of NUMA node `n` in [`vf_farm`].
pub fn farm_pf(n: u32, p: u32) -> String {
    format!("0000:{:02x}:00.0", farm_bus(n) + 3 + p)
}

/// VF `v` of PF `p` of NUMA node `n` in [`vf_farm`].
pub fn farm_vf(n: u32, p: u32, v: u32) -> String {
    format!(
        "0000:{:02x}:{:02x}.{}",
        farm_bus(n) + 3 + p,
        1 + v / 8,
        v % 8
    )
}

/// The netdev of PF `p` of NUMA node `n` in [`vf_farm`].
pub fn farm_pf_netdev(n: u32, p: u32) -> String {
    format!("p{n}p{p}")
}

/// A VF-heavy edge node as a sysfs tree: `nodes` NUMA nodes (two CPUs
/// each, SLIT 10/21), each with its own root bus, one root port and one
/// PCIe switch, below which sit `pfs` SR-IOV NICs (igb `8086:10c9`, netdev
/// [`farm_pf_netdev`], link type ether) with `vfs` VFs enabled each (igbvf
/// `8086:10ca`, no netdev, IOMMU group = a running number). Addresses:
/// [`farm_pf`], [`farm_vf`]. At most 7 nodes, 16 PFs a node, 248 VFs a PF.
pub fn vf_farm(nodes: u32, pfs: u32, vfs: u32) -> crate::sysfs::TreeBuilder {
    use crate::sysfs::Function;
    assert!(nodes <= 7 && pfs <= 16 && vfs <= 248, "vf_farm: too large");
    let mut t = crate::sysfs::TreeBuilder::new();
    for n in 0..nodes {
        let (a, b) = (2 * n, 2 * n + 1);
        t.cpu(a, n, 0, 0, &[a]).cpu(b, n, 0, 1, &[b]);
        let row: Vec<u32> = (0..nodes).map(|m| if m == n { 10 } else { 21 }).collect();
        t.node(n, &[a, b], 1 << 20, 1 << 19, &row);
    }
    let mut group = 0;
    for n in 0..nodes {
        let base = farm_bus(n);
        let bus = format!("pci0000:{base:02x}");
        let rp = format!("0000:{base:02x}:00.0");
        let up = format!("0000:{:02x}:00.0", base + 1);
        t.root_bus(&bus, Some(n));
        t.pci(Function::bridge(&rp, &bus));
        t.pci(Function::bridge(&up, &rp));
        for p in 0..pfs {
            let dp = format!("0000:{:02x}:{p:02x}.0", base + 2);
            t.pci(Function::bridge(&dp, &up));
            let pf = farm_pf(n, p);
            t.pci(
                Function::new(&pf, &dp, 0x020000, 0x8086, 0x10c9)
                    .driver("igb")
                    .sriov(vfs.max(1), vfs)
                    .iommu_group(group),
            );
            group += 1;
            let name = farm_pf_netdev(n, p);
            t.netdev(&name, &pf).netdev_attr(&name, "type", "1");
            for v in 0..vfs {
                t.pci(
                    Function::new(&farm_vf(n, p, v), &dp, 0x020000, 0x8086, 0x10ca)
                        .driver("igbvf")
                        .vf_of(&pf)
                        .iommu_group(group),
                );
                group += 1;
            }
        }
    }
    t
}

/// [`vf_farm`] built in memory (no sysfs tree to write): the same CPUs,
/// NUMA nodes, bridges, PFs (with netdev and link type) and VFs, with
/// identity fields (class, ids, drivers) set as the tree has them.
pub fn vf_farm_topology(nodes: u32, pfs: u32, vfs: u32) -> Topology {
    assert!(nodes <= 7 && pfs <= 16 && vfs <= 248, "vf_farm: too large");
    let addr = |s: &str| -> PciAddress { s.parse().expect("a farm address") };
    let mut cpus = Vec::new();
    let mut numa_nodes = Vec::new();
    for n in 0..nodes {
        let (a, b) = (2 * n, 2 * n + 1);
        for (id, core) in [(a, 0), (b, 1)] {
            cpus.push(Cpu {
                id,
                package: n,
                die: Some(0),
                core,
                numa_node: Some(n),
                siblings: CpuList::from_ids([id]),
                l2: None,
                l3: None,
            });
        }
        numa_nodes.push(NumaNode {
            id: n,
            cpus: CpuList::from_ids([a, b]),
            memory_bytes: 1 << 30,
            free_bytes: 1 << 29,
            distances: (0..nodes).map(|m| if m == n { 10 } else { 21 }).collect(),
        });
    }
    let mut devices = Vec::new();
    for n in 0..nodes {
        let base = farm_bus(n);
        let root = format!("pci0000:{base:02x}");
        let local = numa_nodes[n as usize].cpus.clone();
        let placed = |a: PciAddress, kind, upstream: Vec<PciAddress>| {
            PciDevice::placed(a, kind, &root, upstream, Some(n), local.clone())
        };
        let rp = addr(&format!("0000:{base:02x}:00.0"));
        let up = addr(&format!("0000:{:02x}:00.0", base + 1));
        devices.push(placed(rp, DeviceKind::Bridge, vec![]));
        devices.push(placed(up, DeviceKind::Bridge, vec![rp]));
        for p in 0..pfs {
            let dp = addr(&format!("0000:{:02x}:{p:02x}.0", base + 2));
            devices.push(placed(dp, DeviceKind::Bridge, vec![rp, up]));
            let pf_addr = addr(&farm_pf(n, p));
            let vf_addrs: Vec<PciAddress> = (0..vfs).map(|v| addr(&farm_vf(n, p, v))).collect();
            let identity = |mut d: PciDevice, device: &str, driver: &str| {
                d.class = "020000".into();
                d.class_name = "NetworkController_Ethernet".into();
                d.vendor = "8086".into();
                d.device = device.into();
                d.subsystem_vendor = Some("8086".into());
                d.subsystem_device = Some(device.into());
                d.driver = Some(driver.into());
                d
            };
            let mut pf = identity(
                placed(pf_addr, DeviceKind::NicPf, vec![rp, up, dp]),
                "10c9",
                "igb",
            );
            pf.sriov = Sriov {
                total_vfs: vfs.max(1),
                num_vfs: vfs,
                pf: None,
                vfs: vf_addrs.clone(),
            };
            pf.netdevs = vec![farm_pf_netdev(n, p)];
            pf.link_type = Some("ether".into());
            devices.push(pf);
            for a in vf_addrs {
                let mut vf = identity(
                    placed(a, DeviceKind::NicVf, vec![rp, up, dp]),
                    "10ca",
                    "igbvf",
                );
                vf.sriov.pf = Some(pf_addr);
                devices.push(vf);
            }
        }
    }
    devices.sort_by_key(|d| d.pci_address);
    let matrix = DistanceMatrix::compute(&devices);
    let matrix_unknown_numa = matrix.unknown_pairs();
    Topology {
        schema_version: griffin_devices::SCHEMA_VERSION,
        root: "synthetic".into(),
        online_cpus: CpuList::from_ids(cpus.iter().map(|c| c.id)),
        isolated_cpus: CpuList::new(),
        cpus,
        caches: vec![],
        numa_nodes,
        devices,
        rdma_devices: vec![],
        nvml: NvmlStatus::NotQueried,
        matrix,
        matrix_unknown_numa,
        warnings: vec![],
    }
}

/// Two packages, one NUMA node each, 4 cores (no SMT) and two GPUs bound to
/// a driver (healthy pool devices) per node, `memory_per_node` bytes each.
pub fn two_nodes_with_gpus(memory_per_node: u64) -> Topology {
    let mut t = Shape {
        packages: 2,
        nodes_per_package: 1,
        cores_per_node: 4,
        threads: 1,
        devices_per_node: vec![DeviceKind::Gpu, DeviceKind::Gpu],
        memory_per_node,
    }
    .topology();
    for d in t.devices.iter_mut().filter(|d| d.kind == DeviceKind::Gpu) {
        d.driver = Some("nvidia".into());
    }
    t
}
