//! `edge2s`: a two-socket, four-NUMA-node, multi-switch node (the shape of
//! the QEMU test bed), described as a fake sysfs tree. The expected topology,
//! written by hand from the level rules, is in `tests/fixture_edge2s.rs`.
//!
//! CPUs (8 = 2 sockets × 2 cores × 2 threads, CPU n and n+4 are siblings):
//!
//! | socket | core | cpus | NUMA node | L1d/L1i/L2 | L3          |
//! |--------|------|------|-----------|------------|-------------|
//! | 0      | 0    | 0,4  | 0         | per core   | 0,1,4,5     |
//! | 0      | 1    | 1,5  | 1         | per core   | 0,1,4,5     |
//! | 1      | 0    | 2,6  | 2         | per core   | 2,3,6,7     |
//! | 1      | 1    | 3,7  | 3         | per core   | 2,3,6,7     |
//!
//! SLIT `[[10,21,31,41],[21,10,21,31],[31,21,10,21],[41,31,21,10]]`.
//!
//! PCI (bridges have no `config`, so roles come from the tree shape):
//!
//! ```text
//! pci0000:00 (NUMA unknown: numa_node -1, local_cpulist 0-7)
//! ├── 0000:00:00.0  host bridge 060000
//! ├── 0000:00:02.0  igb NIC (eth0)                      [A]
//! ├── 0000:00:1c.0  root port
//! │   └── 0000:01:00.0  xHCI USB (other)                [U]
//! └── 0000:00:1f.2  AHCI SATA (other)                   [S]
//! pci0000:10 (node 0)
//! ├── 0000:10:00.0  root port
//! │   └── 0000:11:00.0  switch 1 upstream
//! │       ├── 0000:12:00.0  downstream
//! │       │   ├── 0000:13:00.0  igb PF (eth1), 7 VFs total, 2 enabled [P]
//! │       │   ├── 0000:13:10.0  igbvf VF0 (eth5)        [V0]
//! │       │   └── 0000:13:10.2  igbvf VF1 (eth6)        [V1]
//! │       ├── 0000:12:01.0  downstream
//! │       │   └── 0000:14:00.0  NVMe (nvme0)            [N]
//! │       └── 0000:12:02.0  downstream
//! │           └── 0000:16:00.0  switch 2 upstream
//! │               ├── 0000:17:00.0  downstream
//! │               │   └── 0000:18:00.0  accelerator 120000 [C]
//! │               └── 0000:17:01.0  downstream
//! │                   └── 0000:19:00.0  Xilinx FPGA     [F]
//! └── 0000:10:01.0  root port
//!     └── 0000:15:00.0  NVIDIA GPU 030200, no driver   [G]
//! pci0000:20 (node 1)
//! ├── 0000:20:00.0  root port
//! │   ├── 0000:21:00.0  SR-IOV NVMe PF (nvme1)          [M]
//! │   └── 0000:21:00.1  its VF (nvme2)                  [MV]
//! └── 0000:20:01.0  root port
//!     └── 0000:22:00.0  InfiniBand HCA 020700 (ib0, mlx5_0) [H]
//! pci0000:30 (node 3)
//! └── 0000:30:00.0  root port
//!     └── 0000:31:00.0  virtio-net, virtio3/net/eth3, numa_node -1 but
//!                       local_cpulist 3,7 → node 3 from local CPUs [E]
//!                       (soft-RoCE rxe0 with parent eth3 sits on it;
//!                       rxe1 on the virtual `lo` sits on nothing)
//! pci0000:40 (node 0)
//! └── 0000:40:00.0  root port
//!     └── 0000:41:00.0  E810 NIC (eth4), RDMA irdma0 via GID table [Q]
//! ```

use crate::sysfs::{Function, TreeBuilder};

pub const A: &str = "0000:00:02.0";
pub const S: &str = "0000:00:1f.2";
pub const U: &str = "0000:01:00.0";
pub const P: &str = "0000:13:00.0";
pub const V0: &str = "0000:13:10.0";
pub const V1: &str = "0000:13:10.2";
pub const N: &str = "0000:14:00.0";
pub const G: &str = "0000:15:00.0";
pub const C: &str = "0000:18:00.0";
pub const F: &str = "0000:19:00.0";
pub const M: &str = "0000:21:00.0";
pub const MV: &str = "0000:21:00.1";
pub const H: &str = "0000:22:00.0";
pub const E: &str = "0000:31:00.0";
pub const Q: &str = "0000:41:00.0";

/// Endpoints in ascending address order (the matrix order).
pub const ENDPOINTS: [&str; 15] = [A, S, U, P, V0, V1, N, G, C, F, M, MV, H, E, Q];

/// Bridges on a root bus, host bridge aside (root ports by tree shape).
pub const ROOT_PORTS: [&str; 7] = [
    "0000:00:1c.0",
    "0000:10:00.0",
    "0000:10:01.0",
    "0000:20:00.0",
    "0000:20:01.0",
    "0000:30:00.0",
    "0000:40:00.0",
];
pub const SWITCH_UPSTREAM: [&str; 2] = ["0000:11:00.0", "0000:16:00.0"];
pub const SWITCH_DOWNSTREAM: [&str; 5] = [
    "0000:12:00.0",
    "0000:12:01.0",
    "0000:12:02.0",
    "0000:17:00.0",
    "0000:17:01.0",
];
pub const HOST_BRIDGE: &str = "0000:00:00.0";

/// Every bridge of the tree.
pub fn bridges() -> Vec<&'static str> {
    let mut v = vec![HOST_BRIDGE];
    v.extend(ROOT_PORTS);
    v.extend(SWITCH_UPSTREAM);
    v.extend(SWITCH_DOWNSTREAM);
    v
}

/// The tree description.
pub fn tree() -> TreeBuilder {
    let mut t = TreeBuilder::new();
    // CPU n: socket (n / 2) % 2, core n % 2 within the socket; n and n+4
    // are SMT siblings.
    for id in 0..8u32 {
        let first = id % 4;
        t.cpu(id, first / 2, 0, first % 2, &[first, first + 4]);
    }
    for first in 0..4u32 {
        let core = [first, first + 4];
        t.cache(1, "Data", "32K", &core)
            .cache(1, "Instruction", "32K", &core)
            .cache(2, "Unified", "512K", &core);
    }
    t.cache(3, "Unified", "16384K", &[0, 1, 4, 5])
        .cache(3, "Unified", "16384K", &[2, 3, 6, 7]);
    let slit = [
        [10, 21, 31, 41],
        [21, 10, 21, 31],
        [31, 21, 10, 21],
        [41, 31, 21, 10],
    ];
    let mem_kib = [1 << 20, 1 << 20, 1 << 20, 512 << 10];
    for n in 0..4u32 {
        let i = n as usize;
        t.node(n, &[n, n + 4], mem_kib[i], mem_kib[i] / 2, &slit[i]);
    }

    t.root_bus("pci0000:00", None)
        .root_bus("pci0000:10", Some(0))
        .root_bus("pci0000:20", Some(1))
        .root_bus("pci0000:30", Some(3))
        .root_bus("pci0000:40", Some(0));

    // Root bus 0: NUMA unknown.
    t.pci(Function::host_bridge(HOST_BRIDGE, "pci0000:00"));
    t.pci(
        Function::new(A, "pci0000:00", 0x020000, 0x8086, 0x10c9)
            .driver("igb")
            .numa(-1)
            .local_cpus(&[0, 1, 2, 3, 4, 5, 6, 7])
            .link("2.5 GT/s PCIe", 1, "2.5 GT/s PCIe", 1),
    );
    t.pci(Function::new(S, "pci0000:00", 0x010601, 0x8086, 0x2922).driver("ahci"));
    t.pci(Function::bridge("0000:00:1c.0", "pci0000:00"));
    t.pci(Function::new(U, "0000:00:1c.0", 0x0c0330, 0x1b36, 0x000d).driver("xhci_hcd"));

    // Root bus 0x10, node 0: switch 1 below root port 10:00.0, switch 2
    // below switch 1's third downstream port.
    t.pci(Function::bridge("0000:10:00.0", "pci0000:10"))
        .pci(Function::bridge("0000:11:00.0", "0000:10:00.0").ids(0x104c, 0x8232))
        .pci(Function::bridge("0000:12:00.0", "0000:11:00.0").ids(0x104c, 0x8233))
        .pci(Function::bridge("0000:12:01.0", "0000:11:00.0").ids(0x104c, 0x8233))
        .pci(Function::bridge("0000:12:02.0", "0000:11:00.0").ids(0x104c, 0x8233))
        .pci(Function::bridge("0000:16:00.0", "0000:12:02.0").ids(0x104c, 0x8232))
        .pci(Function::bridge("0000:17:00.0", "0000:16:00.0").ids(0x104c, 0x8233))
        .pci(Function::bridge("0000:17:01.0", "0000:16:00.0").ids(0x104c, 0x8233));
    t.pci(
        Function::new(P, "0000:12:00.0", 0x020000, 0x8086, 0x10c9)
            .driver("igb")
            .subsystem(0x8086, 0xa03c)
            .sriov(7, 2)
            .link("5.0 GT/s PCIe", 4, "5.0 GT/s PCIe", 4),
    );
    for vf in [V0, V1] {
        t.pci(
            Function::new(vf, "0000:12:00.0", 0x020000, 0x8086, 0x10ca)
                .driver("igbvf")
                .vf_of(P),
        );
    }
    t.pci(
        Function::new(N, "0000:12:01.0", 0x010802, 0x1b36, 0x0010)
            .driver("nvme")
            .link("8.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 4),
    );
    t.pci(Function::new(C, "0000:17:00.0", 0x120000, 0x1da3, 0x1020).driver("habanalabs"));
    t.pci(Function::new(F, "0000:17:01.0", 0x120000, 0x10ee, 0x903f).driver("xdma"));
    t.pci(Function::bridge("0000:10:01.0", "pci0000:10"));
    t.pci(
        Function::new(G, "0000:10:01.0", 0x030200, 0x10de, 0x20b0).link(
            "16.0 GT/s PCIe",
            16,
            "16.0 GT/s PCIe",
            16,
        ),
    );

    // Root bus 0x20, node 1: SR-IOV NVMe with one VF enabled.
    t.pci(Function::bridge("0000:20:00.0", "pci0000:20"));
    t.pci(
        Function::new(M, "0000:20:00.0", 0x010802, 0x1b36, 0x0010)
            .driver("nvme")
            .sriov(4, 1),
    );
    t.pci(
        Function::new(MV, "0000:20:00.0", 0x010802, 0x1b36, 0x0010)
            .driver("nvme")
            .vf_of(M),
    );
    t.pci(Function::bridge("0000:20:01.0", "pci0000:20"));
    t.pci(
        Function::new(H, "0000:20:01.0", 0x020700, 0x15b3, 0x101b)
            .driver("mlx5_core")
            .link("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16),
    );

    // Root bus 0x30, node 3: virtio-net whose numa_node is -1.
    t.pci(Function::bridge("0000:30:00.0", "pci0000:30"));
    t.pci(
        Function::new(E, "0000:30:00.0", 0x020000, 0x1af4, 0x1041)
            .driver("virtio-pci")
            .numa(-1)
            .local_cpus(&[3, 7]),
    );

    // Root bus 0x40, node 0 again.
    t.pci(Function::bridge("0000:40:00.0", "pci0000:40"));
    t.pci(Function::new(Q, "0000:40:00.0", 0x020000, 0x8086, 0x1593).driver("ice"));

    t.netdev("eth0", A)
        .netdev("eth1", P)
        .netdev_via("eth3", E, "virtio3")
        .netdev("eth4", Q)
        .netdev("eth5", V0)
        .netdev("eth6", V1)
        .netdev("ib0", H)
        .virtual_netdev("lo")
        .nvme("nvme0", N)
        .nvme("nvme1", M)
        .nvme("nvme2", MV)
        .rdma("irdma0", Q, &["eth4"])
        .rdma("mlx5_0", H, &["ib0"])
        .soft_rdma("rxe0", "eth3")
        .soft_rdma("rxe1", "lo");
    // Link types (`type`: ARPHRD_ETHER, ARPHRD_INFINIBAND, ARPHRD_LOOPBACK).
    for eth in ["eth0", "eth1", "eth3", "eth4", "eth5", "eth6"] {
        t.netdev_attr(eth, "type", "1");
    }
    t.netdev_attr("ib0", "type", "32")
        .netdev_attr("lo", "type", "772");
    t
}
