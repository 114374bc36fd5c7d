//! The multi-NUMA, multi-switch fixture captured from a real kernel: the
//! `edge2s` QEMU guest (`cargo xtask vm-test --update-fixture`), with two igb
//! VFs enabled. Discovery of the capture must match what the guest was built
//! to be (`griffin_tests::vm::edge2s`, written by hand), like discovery
//! inside the guest does.

use std::path::PathBuf;

use griffin_devices::{discover, DeviceKind, Level, PciAddress, PortType};
use griffin_tests::vm;

fn capture() -> griffin_devices::Topology {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/edge2s-qemu");
    discover(&root).unwrap()
}

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

#[test]
fn capture_matches_the_construction() {
    let t = vm::edge2s();
    let e = &t.expected;
    let topo = capture();
    assert_eq!(topo.cpus.len() as u32, e.cpus);
    for (cpu, sib) in &e.siblings {
        let c = topo.cpus.iter().find(|c| c.id == *cpu).unwrap();
        assert_eq!(c.siblings.as_slice(), sib.as_slice(), "CPU {cpu}");
    }
    for (n, cpus) in &e.node_cpus {
        assert_eq!(topo.numa_node(*n).unwrap().cpus.as_slice(), cpus.as_slice());
    }
    for (i, row) in t.distances.iter().enumerate() {
        assert_eq!(&topo.numa_nodes[i].distances, row);
    }
    for (a, kind, numa) in &e.devices {
        let d = topo
            .device(addr(a))
            .unwrap_or_else(|| panic!("{a} missing"));
        assert_eq!(d.kind.name(), *kind, "{a}");
        assert_eq!(d.numa_node, *numa, "{a}");
    }
    for (a, b, level) in &e.levels {
        assert_eq!(
            topo.matrix.get(addr(a), addr(b)).unwrap().name(),
            *level,
            "{a} ~ {b}"
        );
    }
}

#[test]
fn capture_has_the_vfs_and_real_port_types() {
    let topo = capture();
    let (pf, total) = vm::edge2s().expected.sriov_nic.unwrap();
    let p = topo.device(addr(pf)).unwrap();
    assert_eq!(p.sriov.total_vfs, total);
    assert_eq!(p.sriov.num_vfs, 2);
    // igb's VF offset 0x80 and stride 2: VF n at 13:10.(2n).
    assert_eq!(
        p.sriov.vfs,
        vec![addr("0000:13:10.0"), addr("0000:13:10.2")]
    );
    assert_eq!(p.link_type.as_deref(), Some("ether"));
    for vf in &p.sriov.vfs {
        let d = topo.device(*vf).unwrap();
        assert_eq!(d.kind, DeviceKind::NicVf);
        assert_eq!(d.link_type.as_deref(), Some("ether"));
        assert_eq!(d.sriov.pf, Some(p.pci_address));
        assert_eq!(d.numa_node, Some(0));
        assert_eq!(topo.matrix.get(p.pci_address, *vf), Some(Level::PIX));
    }
    // The capture was taken as root: bridges' config space declares their
    // PCIe port types.
    let port = |a: &str| topo.device(addr(a)).unwrap().port_type;
    assert_eq!(port("0000:10:00.0"), Some(PortType::RootPort));
    assert_eq!(port("0000:11:00.0"), Some(PortType::UpstreamPort));
    assert_eq!(port("0000:12:00.0"), Some(PortType::DownstreamPort));
    assert_eq!(port("0000:12:01.0"), Some(PortType::DownstreamPort));
    // Devices on the root complex have no NUMA node, and the pairs they form
    // with expander-bridge devices are flagged.
    let a = addr("0000:00:05.0");
    assert!(topo
        .matrix_unknown_numa
        .iter()
        .any(|(x, y)| *x == a && *y == addr(pf)));
}
