//! Pods and fakes of the machine's seams for the pods engine's unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use griffin_devices::PciAddress;
use griffin_ebpf::{
    podpath::{Mac, PodLink, L2},
    RulesFile,
};

use griffin_devices::{DeviceKind, Topology};

use super::cgroup;
use super::flows::Steer;
use super::netns::Netns;
use super::{Action, ContainerId, ContainerInfo, Outcome, PodInfo, Qos};
use crate::cpuset::CpuSet;
use crate::enforce::{Cpusets, Version};
use crate::fake::FakeCpusets;
use crate::manager::Manager;

/// Pod `ns/p` (uid `u1`, Guaranteed) with one container `work` (one
/// whole CPU, runtime id `c1`), the Acceleration annotation when given.
pub(crate) fn one_container(annotation: Option<&str>, running: bool, ending: bool) -> PodInfo {
    PodInfo {
        uid: "u1".into(),
        namespace: "ns".into(),
        name: "p".into(),
        qos: Qos::Guaranteed,
        containers: vec![ContainerInfo {
            name: "work".into(),
            whole_cpus: Some(1),
            memory_bytes: 0,
            id: Some(ContainerId {
                runtime: "containerd".into(),
                id: "c1".into(),
            }),
            running,
        }],
        annotations: annotation
            .map(|a| [(crate::accel::ANNOTATION.to_owned(), a.to_owned())].into())
            .unwrap_or_default(),
        ending,
        ips: Vec::new(),
        host_network: false,
    }
}

/// A move back: the netdev, the RDMA devices, the pod's process.
pub(crate) type MovedBack = (Option<String>, Vec<String>, u32);

/// The VFs of the machine: their netdevs and RDMA devices in the host's
/// namespace, the moves made.
#[derive(Default)]
pub(crate) struct FakeNet {
    pub(crate) vfs: BTreeSet<PciAddress>,
    pub(crate) netdevs: Mutex<BTreeMap<PciAddress, Vec<String>>>,
    pub(crate) rdma: Mutex<BTreeMap<PciAddress, Vec<String>>>,
    pub(crate) exclusive: bool,
    /// A netdev whose move fails.
    pub(crate) fail: Option<String>,
    /// (device, pid) moved into a pod's namespace, in order.
    pub(crate) moved: Mutex<Vec<(String, u32)>>,
    /// What was moved back, in order.
    pub(crate) moved_back: Mutex<Vec<MovedBack>>,
}

impl Netns for FakeNet {
    fn is_vf(&self, a: PciAddress) -> bool {
        self.vfs.contains(&a)
    }
    fn host_netdevs(&self, a: PciAddress) -> Vec<String> {
        self.netdevs
            .lock()
            .unwrap()
            .get(&a)
            .cloned()
            .unwrap_or_default()
    }
    fn rdma_devices(&self, a: PciAddress) -> Vec<String> {
        self.rdma
            .lock()
            .unwrap()
            .get(&a)
            .cloned()
            .unwrap_or_default()
    }
    fn rdma_exclusive(&self) -> bool {
        self.exclusive
    }
    fn move_netdev(&self, iface: &str, pid: u32) -> Result<(), String> {
        if self.fail.as_deref() == Some(iface) {
            return Err("Operation not permitted".into());
        }
        for v in self.netdevs.lock().unwrap().values_mut() {
            v.retain(|n| n != iface);
        }
        self.moved.lock().unwrap().push((iface.into(), pid));
        Ok(())
    }
    fn move_rdma(&self, name: &str, pid: u32) -> Result<(), String> {
        for v in self.rdma.lock().unwrap().values_mut() {
            v.retain(|n| n != name);
        }
        self.moved.lock().unwrap().push((name.into(), pid));
        Ok(())
    }
    fn move_back(&self, netdev: Option<&str>, rdma: &[String], pid: u32) -> Result<(), String> {
        self.moved_back
            .lock()
            .unwrap()
            .push((netdev.map(str::to_owned), rdma.to_vec(), pid));
        Ok(())
    }
}

/// The split and the pods' veths: process id -> veth.
pub(crate) struct FakeSteer {
    pub(crate) links: BTreeMap<u32, PodLink>,
    /// The error every update fails with.
    pub(crate) fail_apply: Mutex<Option<String>>,
    /// Every update made.
    pub(crate) applied: Mutex<Vec<(RulesFile, BTreeMap<u32, L2>)>>,
    /// Rules of the split's file (the first run-time id).
    pub(crate) base: u32,
}

impl Steer for FakeSteer {
    fn iface(&self) -> &str {
        "eth1"
    }
    fn link(&self, pid: u32) -> Result<PodLink, String> {
        self.links.get(&pid).cloned().ok_or_else(|| {
            "no veth in this network namespace has its peer in namespace id 3".into()
        })
    }
    fn apply(&self, extra: &RulesFile, l2: &BTreeMap<u32, L2>) -> Result<u32, String> {
        if let Some(e) = self.fail_apply.lock().unwrap().clone() {
            return Err(e);
        }
        self.applied
            .lock()
            .unwrap()
            .push((extra.clone(), l2.clone()));
        Ok(self.base)
    }
}

impl FakeSteer {
    /// Processes 100 and 200 in pods with veths 1 and 2; the split's file
    /// has 3 rules.
    pub(crate) fn new() -> Self {
        Self {
            links: [(100, pod_link(1)), (200, pod_link(2))].into(),
            fail_apply: Mutex::new(None),
            applied: Mutex::default(),
            base: 3,
        }
    }
}

/// Veth `veth<n>` (ifindex 10+n) of a pod in namespace id n.
pub(crate) fn pod_link(n: u8) -> PodLink {
    PodLink {
        host_ifindex: 10 + u32::from(n),
        host_name: format!("veth{n}"),
        host_mac: Mac([2, 0, 0, 0, 1, n]),
        nsid: i32::from(n),
        peer_ifindex: 2,
        peer_mac: Mac([2, 0, 0, 0, 2, n]),
    }
}

/// Each outcome as (who, what): `ns/pod/container` (a cgroup for a pod
/// no longer known) and the action's kind.
pub(crate) fn kinds(out: &[Outcome]) -> Vec<(String, &'static str)> {
    out.iter()
        .map(|o| {
            let k = match o.action {
                Action::Pinned { .. } => "pinned",
                Action::Shared { .. } => "shared",
                Action::Refused { .. } => "refused",
                Action::Released { .. } => "released",
                Action::Failed { .. } => "failed",
                Action::Moved { .. } => "moved",
                Action::MoveFailed { .. } => "move-failed",
                Action::Steered { .. } => "steered",
                Action::SteerFailed { .. } => "steer-failed",
                Action::RolledBack { .. } => "rolled-back",
            };
            // A pod no longer known is named by its container's cgroup.
            let who = if o.pod.is_empty() {
                o.cgroup.clone()
            } else {
                format!("{}/{}", o.pod, o.container)
            };
            (who, k)
        })
        .collect()
}

/// A node of two NUMA nodes with fake cpusets and a checkpoint directory.
pub(crate) struct Node {
    pub(crate) topo: Topology,
    pub(crate) fake: FakeCpusets,
    dir: tempfile::TempDir,
}

impl Node {
    /// Two NUMA nodes of `cores` CPUs, a GPU under each node's switch;
    /// cgroup v1.
    pub(crate) fn new(cores: u32) -> Self {
        Self::with_version(cores, Version::V1)
    }

    /// The same on cgroup `version`.
    pub(crate) fn with_version(cores: u32, version: Version) -> Self {
        let topo = griffin_tests::synthetic::Shape {
            packages: 1,
            nodes_per_package: 2,
            cores_per_node: cores,
            threads: 1,
            devices_per_node: vec![DeviceKind::Gpu],
            memory_per_node: 1 << 30,
        }
        .topology();
        let fake = FakeCpusets::new(version, CpuSet::from(&topo.online_cpus), vec![0, 1]);
        Self {
            topo,
            fake,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    /// The manager over it.
    pub(crate) fn open(&self) -> Manager<FakeCpusets> {
        Manager::open(
            self.topo.clone(),
            self.dir.path(),
            self.fake.clone(),
            CpuSet::new(),
        )
        .unwrap()
    }
    /// A running container's cgroup, as the runtime makes it.
    pub(crate) fn start(&self, pod: &PodInfo, c: usize) -> String {
        let cg = cgroup::candidates(
            "",
            pod.qos,
            &pod.uid,
            pod.containers[c].id.as_ref().unwrap(),
        )
        .remove(0);
        self.fake.mkdir(&cg);
        cg
    }
    /// The cpuset of cgroup `cg`.
    pub(crate) fn cpus(&self, cg: &str) -> CpuSet {
        self.fake.read(cg).unwrap().unwrap().cpus
    }
}
