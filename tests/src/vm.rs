//! Guest test-bed topologies, defined once as data: the QEMU machine each
//! one builds (`cargo xtask vm-test` turns it into a command line), and, next
//! to it, what a guest booted on it must discover, written by hand from the
//! construction (never produced by the code under test).
//!
//! QEMU numbers vCPUs socket-major (`socket * cores * threads + core *
//! threads + thread`), so with 2 threads per core CPUs `2k` and `2k+1` are
//! SMT siblings. Expander host bridges (`pxb-pcie`) are root buses of their
//! own, `pci0000:<bus_nr>`, with the NUMA node they are given; devices on
//! the root complex (`pcie.0`) have no NUMA node. Addresses are fixed with
//! `addr=` so the expectations can name them.
//!
//! [`GUEST_TESTS`] says what each guest test needs ([`Need`]); `cargo xtask
//! vm-test` leaves out, and reports, the tests a topology cannot run.

/// A NUMA node of the guest.
#[derive(Debug, Clone)]
pub struct VmNode {
    /// vCPUs, `first..=last`; `None` for a memory-only node.
    pub cpus: Option<(u32, u32)>,
    /// Memory, MiB.
    pub mem_mib: u32,
}

/// A guest machine.
#[derive(Debug, Clone)]
pub struct VmTopology {
    /// Name used on the command line (`--topology NAME`).
    pub name: &'static str,
    /// Sockets, cores per socket, threads per core.
    pub smp: (u32, u32, u32),
    /// NUMA nodes (empty: no NUMA configuration).
    pub nodes: Vec<VmNode>,
    /// SLIT, row per node.
    pub distances: Vec<Vec<u32>>,
    /// `-device`/`-netdev`/`-blockdev` arguments after the machine's own.
    pub devices: Vec<String>,
    /// What discovery must find.
    pub expected: Expected,
}

/// What a guest must discover.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Online CPUs.
    pub cpus: u32,
    /// `(cpu, its SMT siblings)` for every CPU.
    pub siblings: Vec<(u32, Vec<u32>)>,
    /// `(node, its CPUs)`.
    pub node_cpus: Vec<(u32, Vec<u32>)>,
    /// `(PCI address, kind, NUMA node)` of every endpoint that must be there
    /// (others, such as the chipset's, may exist too).
    pub devices: Vec<(&'static str, &'static str, Option<u32>)>,
    /// `(a, b, level)` pairs of the distance matrix.
    pub levels: Vec<(&'static str, &'static str, &'static str)>,
    /// SR-IOV capable NIC PF whose VFs tests create, with its total VFs.
    pub sriov_nic: Option<(&'static str, u32)>,
    /// SR-IOV capable NVMe PF.
    pub sriov_nvme: Option<&'static str>,
    /// Two NICs on one QEMU hub (frames one sends the other receives),
    /// with native XDP: (igb, virtio-net).
    pub wired_nics: Option<(&'static str, &'static str)>,
}

/// The network of every QEMU user-mode (`-netdev user`) NIC, given
/// explicitly (`net=`) so that guest traffic stays inside 198.18.0.0/15:
/// QEMU's gateway is [`USER_NET_GATEWAY`], its first DHCP address
/// [`USER_NET_GUEST`].
pub const USER_NET: &str = "198.19.64.0/24";
/// The gateway (and ARP responder) of [`USER_NET`].
pub const USER_NET_GATEWAY: &str = "198.19.64.2";
/// The first address QEMU's DHCP server hands out on [`USER_NET`].
pub const USER_NET_GUEST: &str = "198.19.64.15";

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `edge2s`: 8 vCPUs (2 sockets × 2 cores × 2 threads), 4 NUMA nodes with a
/// SLIT; an expander host bridge on NUMA 0 with a root port → PCIe switch →
/// igb NIC + NVMe; one on NUMA 1 with an SR-IOV NVMe; one on NUMA 3 with
/// virtio-net; one igb on the root complex (NUMA unknown). A and E sit
/// on one QEMU hub with the user network (a wire between them).
///
/// ```text
/// pcie.0 (pci0000:00, no NUMA)
/// ├── 00:05.0 igb                                   A
/// pxb0 bus_nr 0x10, node 0 (pci0000:10)
/// └── 10:00.0 root port
///     └── 11:00.0 switch upstream (x3130)
///         ├── 12:00.0 downstream → 13:00.0 igb PF (7 VFs; VF n at 13:10.(2n))   P
///         └── 12:01.0 downstream → 14:00.0 NVMe                                N
/// pxb1 bus_nr 0x20, node 1 (pci0000:20)
/// └── 20:00.0 root port → 21:00.0 NVMe, SR-IOV (2 VFs: 21:00.1, 21:00.2)       M
/// pxb3 bus_nr 0x30, node 3 (pci0000:30)
/// └── 30:00.0 root port → 31:00.0 virtio-net                                   E
/// ```
pub fn edge2s() -> VmTopology {
    const A: &str = "0000:00:05.0";
    const P: &str = "0000:13:00.0";
    const N: &str = "0000:14:00.0";
    const M: &str = "0000:21:00.0";
    const E: &str = "0000:31:00.0";
    VmTopology {
        name: "edge2s",
        smp: (2, 2, 2),
        nodes: (0..4)
            .map(|n| VmNode {
                cpus: Some((2 * n, 2 * n + 1)),
                mem_mib: 384,
            })
            .collect(),
        distances: vec![
            vec![10, 21, 31, 41],
            vec![21, 10, 21, 31],
            vec![31, 21, 10, 21],
            vec![41, 31, 21, 10],
        ],
        devices: args(&[
            // A and E share one hub with QEMU's user network: frames one
            // sends the other receives (the relay's native-mode test).
            "-netdev", "user,id=nu,net=198.19.64.0/24",
            "-netdev", "hubport,id=hu,hubid=1,netdev=nu",
            "-netdev", "hubport,id=na,hubid=1",
            "-device", "igb,netdev=na,bus=pcie.0,addr=0x5",
            "-device", "pxb-pcie,id=pxb0,bus_nr=0x10,numa_node=0,bus=pcie.0,addr=0x10",
            "-device", "pcie-root-port,id=rp0,bus=pxb0,chassis=10,slot=0,addr=0x0",
            "-device", "x3130-upstream,id=up0,bus=rp0,addr=0x0",
            "-device", "xio3130-downstream,id=dn0,bus=up0,chassis=11,slot=0,addr=0x0",
            "-device", "xio3130-downstream,id=dn1,bus=up0,chassis=12,slot=1,addr=0x1",
            "-netdev", "user,id=np,net=198.19.64.0/24",
            "-device", "igb,netdev=np,bus=dn0,addr=0x0",
            "-blockdev", "null-co,node-name=nul0,size=67108864,read-zeroes=on",
            "-device", "nvme,id=nvme0,serial=griffin0,bus=dn1,addr=0x0",
            "-device", "nvme-ns,drive=nul0,bus=nvme0",
            "-device", "pxb-pcie,id=pxb1,bus_nr=0x20,numa_node=1,bus=pcie.0,addr=0x11",
            "-device", "pcie-root-port,id=rp1,bus=pxb1,chassis=20,slot=0,addr=0x0",
            "-device", "nvme-subsys,id=subsys1",
            "-blockdev", "null-co,node-name=nul1,size=67108864,read-zeroes=on",
            "-device", "nvme,id=nvme1,serial=griffin1,subsys=subsys1,bus=rp1,addr=0x0,sriov_max_vfs=2,sriov_vq_flexible=4,sriov_vi_flexible=2,max_ioqpairs=6,msix_qsize=8",
            "-device", "nvme-ns,drive=nul1,bus=nvme1",
            "-device", "pxb-pcie,id=pxb3,bus_nr=0x30,numa_node=3,bus=pcie.0,addr=0x12",
            "-device", "pcie-root-port,id=rp3,bus=pxb3,chassis=30,slot=0,addr=0x0",
            "-netdev", "hubport,id=ne,hubid=1",
            "-device", "virtio-net-pci,netdev=ne,bus=rp3,addr=0x0",
        ]),
        expected: Expected {
            cpus: 8,
            siblings: (0..8).map(|c| (c, vec![c & !1, c | 1])).collect(),
            node_cpus: (0..4).map(|n| (n, vec![2 * n, 2 * n + 1])).collect(),
            devices: vec![
                (A, "nic-pf", None),
                (P, "nic-pf", Some(0)),
                (N, "nvme", Some(0)),
                (M, "nvme", Some(1)),
                (E, "nic-pf", Some(3)),
            ],
            levels: vec![
                (P, P, "X"),
                (P, N, "PIX"),
                (N, P, "PIX"),
                (P, M, "SYS"),
                (P, E, "SYS"),
                (N, M, "SYS"),
                (M, E, "SYS"),
                (A, P, "SYS"),
                (A, M, "SYS"),
                (A, E, "SYS"),
            ],
            sriov_nic: Some((P, 7)),
            sriov_nvme: Some(M),
            wired_nics: Some((A, E)),
        },
    }
}

/// `small`: 2 vCPUs, virtio-net only, for fast smoke runs.
pub fn small() -> VmTopology {
    VmTopology {
        name: "small",
        smp: (1, 2, 1),
        nodes: vec![],
        distances: vec![],
        devices: args(&[
            "-netdev",
            "user,id=n0,net=198.19.64.0/24",
            "-device",
            "virtio-net-pci,netdev=n0,bus=pcie.0,addr=0x5",
        ]),
        expected: Expected {
            cpus: 2,
            siblings: vec![(0, vec![0]), (1, vec![1])],
            node_cpus: vec![(0, vec![0, 1])],
            devices: vec![("0000:00:05.0", "nic-pf", Some(0))],
            levels: vec![("0000:00:05.0", "0000:00:05.0", "X")],
            sriov_nic: None,
            sriov_nvme: None,
            wired_nics: None,
        },
    }
}

/// Every topology, by name.
pub fn all() -> Vec<VmTopology> {
    vec![edge2s(), small()]
}

/// The topology called `name`.
pub fn by_name(name: &str) -> Option<VmTopology> {
    all().into_iter().find(|t| t.name == name)
}

/// Hardware a guest test needs beyond what every topology has (a NIC PF
/// with a netdev, cgroup v2, a 9p root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// An SR-IOV capable NIC PF ([`Expected::sriov_nic`]).
    SriovNic,
    /// An SR-IOV capable NVMe PF ([`Expected::sriov_nvme`]).
    SriovNvme,
    /// Two NICs wired to each other ([`Expected::wired_nics`]).
    WiredNics,
    /// At least `count` online CPUs, for the reason `why`.
    Cpus {
        /// Online CPUs needed.
        count: u32,
        /// What they are for.
        why: &'static str,
    },
}

impl Need {
    /// Whether topology `t` has it.
    pub fn met_by(self, t: &VmTopology) -> bool {
        match self {
            Need::SriovNic => t.expected.sriov_nic.is_some(),
            Need::SriovNvme => t.expected.sriov_nvme.is_some(),
            Need::WiredNics => t.expected.wired_nics.is_some(),
            Need::Cpus { count, .. } => t.expected.cpus >= count,
        }
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::SriovNic => f.write_str("an SR-IOV NIC"),
            Need::SriovNvme => f.write_str("an SR-IOV NVMe controller"),
            Need::WiredNics => f.write_str("two NICs wired to each other"),
            Need::Cpus { count, why } => write!(f, "{count} CPUs ({why})"),
        }
    }
}

/// Every test of `tests/guest.rs` with the hardware it needs. `cargo xtask
/// vm-test` checks this list against the test binary's own (a test missing
/// here is an error, not a silent run), and leaves out, reporting why, the
/// tests whose needs the topology does not meet.
pub const GUEST_TESTS: &[(&str, &[Need])] = &[
    ("discovery_matches_the_construction", &[]),
    (
        "sriov_vfs_appear_in_discovery_and_go_away",
        &[Need::SriovNic],
    ),
    (
        "daemon_follows_vf_creation_through_uevents",
        &[Need::SriovNic],
    ),
    ("nvme_vfs_appear_as_functions", &[Need::SriovNvme]),
    (
        "cgroup_v2_single_numa_node_placement",
        &[Need::Cpus {
            count: 2,
            why: "a 2-CPU allocation",
        }],
    ),
    ("capture_for_fixture", &[]),
    ("sriov_vf_config_over_netlink", &[Need::SriovNic]),
    ("sriov_apply_reconciles_real_vfs", &[Need::SriovNic]),
    (
        "device_plugin_serves_real_vfs_and_soft_roce",
        &[Need::SriovNic],
    ),
    ("soft_roce_via_rdma_netlink", &[]),
    (
        "cgroup_v2_shared_pool_follows_allocations",
        &[Need::Cpus {
            count: 5,
            why: "4 exclusive and 1 left to the shared pool",
        }],
    ),
    (
        "xdp_native_on_igb_and_virtio_generic_on_vf",
        &[Need::SriovNic],
    ),
    (
        "cgroup_v2_isolated_partition",
        &[Need::Cpus {
            count: 3,
            why: "2 for an isolated partition and 1 left to the root partition",
        }],
    ),
    (
        "vf_and_rdma_device_move_into_a_network_namespace",
        &[Need::SriovNic],
    ),
    (
        "relay_on_igb_and_virtio_net_in_native_mode",
        &[Need::WiredNics],
    ),
    (
        "a_containers_cgroup_becomes_an_isolated_partition",
        &[Need::Cpus {
            count: 2,
            why: "1 for the container's isolated partition and 1 left to the root partition",
        }],
    ),
];

/// The guest tests topology `t` cannot run, each with the needs it does not
/// meet, in [`GUEST_TESTS`] order.
pub fn unmet_needs(t: &VmTopology) -> Vec<(&'static str, Vec<Need>)> {
    GUEST_TESTS
        .iter()
        .filter_map(|(name, needs)| {
            let unmet: Vec<Need> = needs.iter().copied().filter(|n| !n.met_by(t)).collect();
            (!unmet.is_empty()).then_some((*name, unmet))
        })
        .collect()
}

/// The needs [`GUEST_TESTS`] declares for `test`; `None` for a test it does
/// not list.
pub fn needs_of(test: &str) -> Option<&'static [Need]> {
    GUEST_TESTS
        .iter()
        .find(|(name, _)| *name == test)
        .map(|(_, needs)| *needs)
}

impl VmTopology {
    /// Memory of the whole guest, MiB.
    pub fn mem_mib(&self) -> u32 {
        if self.nodes.is_empty() {
            512
        } else {
            self.nodes.iter().map(|n| n.mem_mib).sum()
        }
    }

    /// The machine's QEMU arguments (CPU, memory, NUMA, devices), without
    /// accelerator, kernel, console and share.
    pub fn qemu_args(&self) -> Vec<String> {
        let (s, c, t) = self.smp;
        let mut a = vec![
            "-machine".to_owned(),
            "q35".to_owned(),
            "-smp".to_owned(),
            format!("{},sockets={s},cores={c},threads={t}", s * c * t),
            "-m".to_owned(),
            format!("{}M", self.mem_mib()),
        ];
        for (i, n) in self.nodes.iter().enumerate() {
            a.push("-object".into());
            a.push(format!("memory-backend-ram,id=mem{i},size={}M", n.mem_mib));
            a.push("-numa".into());
            a.push(match n.cpus {
                Some((f, l)) => format!("node,nodeid={i},cpus={f}-{l},memdev=mem{i}"),
                None => format!("node,nodeid={i},memdev=mem{i}"),
            });
        }
        for (i, row) in self.distances.iter().enumerate() {
            for (j, d) in row.iter().enumerate() {
                if i < j {
                    a.push("-numa".into());
                    a.push(format!("dist,src={i},dst={j},val={d}"));
                }
            }
        }
        a.extend(self.devices.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge2s_command_line_is_consistent() {
        let t = edge2s();
        let a = t.qemu_args();
        assert!(a.contains(&"8,sockets=2,cores=2,threads=2".to_owned()));
        assert_eq!(a.iter().filter(|x| x.starts_with("dist,")).count(), 6);
        assert_eq!(t.mem_mib(), 1536);
        // Every expected device's bus exists in the construction.
        for (addr, _, _) in &t.expected.devices {
            let bus = &addr[5..7];
            assert!(
                bus == "00"
                    || a.iter()
                        .any(|x| x.contains(&format!("bus_nr=0x{}", &bus[..1]))),
                "{addr}"
            );
        }
        for (cpu, sib) in &t.expected.siblings {
            assert!(sib.contains(cpu));
        }
    }

    #[test]
    fn every_user_netdev_is_on_the_test_network() {
        for t in all() {
            let a = t.qemu_args();
            let users: Vec<&String> = a.iter().filter(|x| x.starts_with("user,")).collect();
            assert!(!users.is_empty(), "{}", t.name);
            for u in users {
                assert!(
                    u.split(',').any(|o| o == format!("net={USER_NET}")),
                    "{}: {u}",
                    t.name
                );
            }
        }
    }

    #[test]
    fn edge2s_runs_every_guest_test() {
        assert_eq!(unmet_needs(&edge2s()), vec![]);
    }

    #[test]
    fn small_leaves_out_what_it_lacks() {
        let unmet = unmet_needs(&small());
        let names: Vec<&str> = unmet.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "sriov_vfs_appear_in_discovery_and_go_away",
                "daemon_follows_vf_creation_through_uevents",
                "nvme_vfs_appear_as_functions",
                "sriov_vf_config_over_netlink",
                "sriov_apply_reconciles_real_vfs",
                "device_plugin_serves_real_vfs_and_soft_roce",
                "cgroup_v2_shared_pool_follows_allocations",
                "xdp_native_on_igb_and_virtio_generic_on_vf",
                "cgroup_v2_isolated_partition",
                "vf_and_rdma_device_move_into_a_network_namespace",
                "relay_on_igb_and_virtio_net_in_native_mode",
            ]
        );
        assert_eq!(unmet[2].1, [Need::SriovNvme]);
        assert_eq!(
            unmet[8].1[0].to_string(),
            "3 CPUs (2 for an isolated partition and 1 left to the root partition)"
        );
    }

    /// libtest's `--skip NAME` skips every test whose name contains NAME:
    /// exact only while no listed name is part of another.
    #[test]
    fn no_guest_test_name_contains_another() {
        for (a, _) in GUEST_TESTS {
            for (b, _) in GUEST_TESTS {
                assert!(a == b || !a.contains(b), "{a} contains {b}");
            }
        }
    }
}
