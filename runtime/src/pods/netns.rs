//! `communication: SRIOV` / `RDMA` of an `Acceleration` request: the
//! virtual functions the kubelet assigned to a container (PodResources)
//! are moved into the container's network namespace when no CNI did (the
//! VF's netdev is still in the host's namespace), and with `RDMA` the
//! VF's RDMA devices too when the RDMA subsystem is in exclusive netns
//! mode (in shared mode every namespace sees them already).
//!
//! [`move_assigned`] decides over a [`Netns`] seam (sysfs reads, the
//! container's process, the two netlink moves), so the decision is
//! unit-tested with a fake; the moves themselves run on a real igb VF in
//! the QEMU test bed. It is idempotent: a moved netdev is no longer in the
//! host's namespace, so the next reconcile finds nothing to do; a failed
//! move is reported and tried again.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use griffin_devices::PciAddress;

use super::{Action, Assigned, Outcome, PodInfo};
use crate::accel::request::{from_annotations, Communication};

/// What [`move_assigned`] needs from the machine.
pub trait Netns {
    /// Whether `addr` is a virtual function (it has a `physfn`).
    fn is_vf(&self, addr: PciAddress) -> bool;
    /// The netdevs of `addr` in the host's network namespace.
    fn host_netdevs(&self, addr: PciAddress) -> Vec<String>;
    /// The RDMA devices of `addr` in the host's namespace.
    fn rdma_devices(&self, addr: PciAddress) -> Vec<String>;
    /// Whether the RDMA subsystem is in exclusive netns mode.
    fn rdma_exclusive(&self) -> bool;
    /// Moves netdev `iface` into the network namespace of process `pid`.
    fn move_netdev(&self, iface: &str, pid: u32) -> Result<(), String>;
    /// Moves RDMA device `name` into the network namespace of `pid`.
    fn move_rdma(&self, name: &str, pid: u32) -> Result<(), String>;
    /// Moves netdev `netdev` and then RDMA devices `rdma` out of the
    /// network namespace of `pid`, back to the host's (a rollback).
    fn move_back(&self, netdev: Option<&str>, rdma: &[String], pid: u32) -> Result<(), String>;
}

/// The machine: sysfs under `sys`, rtnetlink and RDMA netlink.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The sysfs root (`/sys`).
    pub sys: PathBuf,
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Kernel {
    fn function(&self, addr: PciAddress) -> PathBuf {
        self.sys.join("bus/pci/devices").join(addr.to_string())
    }

    fn netns_of(pid: u32) -> Result<std::fs::File, String> {
        let p = format!("/proc/{pid}/ns/net");
        std::fs::File::open(&p).map_err(|e| format!("{p}: {e}"))
    }
}

impl Netns for Kernel {
    fn is_vf(&self, addr: PciAddress) -> bool {
        self.function(addr).join("physfn").exists()
    }
    fn host_netdevs(&self, addr: PciAddress) -> Vec<String> {
        names_in(&self.function(addr).join("net"))
    }
    fn rdma_devices(&self, addr: PciAddress) -> Vec<String> {
        names_in(&self.function(addr).join("infiniband"))
    }
    fn rdma_exclusive(&self) -> bool {
        crate::rdma::netns_shared().is_ok_and(|shared| !shared)
    }
    fn move_netdev(&self, iface: &str, pid: u32) -> Result<(), String> {
        let ns = Self::netns_of(pid)?;
        crate::sriov::move_to_netns(&self.sys, iface, ns.as_fd())
            .map_err(|e| griffin_devices::Chain(&e).to_string())
    }
    fn move_rdma(&self, name: &str, pid: u32) -> Result<(), String> {
        let ns = Self::netns_of(pid)?;
        crate::rdma::move_to_netns(name, ns.as_fd())
            .map_err(|e| griffin_devices::Chain(&e).to_string())
    }
    fn move_back(&self, netdev: Option<&str>, rdma: &[String], pid: u32) -> Result<(), String> {
        let pod = Self::netns_of(pid)?;
        // This thread's namespace: the host's (the daemon runs there).
        let p = "/proc/thread-self/ns/net";
        let host = std::fs::File::open(p).map_err(|e| format!("{p}: {e}"))?;
        if let Some(n) = netdev {
            crate::sriov::move_from_netns(pod.as_fd(), n, host.as_fd())
                .map_err(|e| griffin_devices::Chain(&e).to_string())?;
        }
        for r in rdma {
            crate::rdma::move_from_netns(pod.as_fd(), r, host.as_fd())
                .map_err(|e| griffin_devices::Chain(&e).to_string())?;
        }
        Ok(())
    }
}

/// Moves the VFs assigned to the running containers of `pods` whose
/// request asks for `SRIOV` (and their RDMA devices for `RDMA`) into the
/// containers' network namespaces; one [`Outcome`] per VF moved or per
/// failure. `cgroups` gives a running container's cgroup (pod,
/// container name), `process_of` a process of a cgroup.
pub fn move_assigned(
    net: &dyn Netns,
    pods: &[PodInfo],
    assigned: &Assigned,
    cgroups: &dyn Fn(&PodInfo, &str) -> Option<String>,
    process_of: &dyn Fn(&str) -> Option<u32>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for pod in pods.iter().filter(|p| !p.ending) {
        let Some(Ok(req)) = from_annotations(Some(&pod.annotations)) else {
            continue;
        };
        let sriov = req.communication.contains(&Communication::Sriov);
        let rdma = req.communication.contains(&Communication::Rdma);
        if !sriov && !rdma {
            continue;
        }
        for c in pod
            .containers
            .iter()
            .filter(|c| c.running && req.applies_to(&c.name))
        {
            let key = (pod.namespace.clone(), pod.name.clone(), c.name.clone());
            let Some(addrs) = assigned.get(&key) else {
                continue;
            };
            let vfs: Vec<PciAddress> = addrs.iter().copied().filter(|a| net.is_vf(*a)).collect();
            let pending: Vec<(PciAddress, Vec<String>, Vec<String>)> = vfs
                .iter()
                .map(|&a| {
                    let netdevs = if sriov {
                        net.host_netdevs(a)
                    } else {
                        Vec::new()
                    };
                    let rdmas = if rdma && net.rdma_exclusive() {
                        net.rdma_devices(a)
                    } else {
                        Vec::new()
                    };
                    (a, netdevs, rdmas)
                })
                .filter(|(_, n, r)| !n.is_empty() || !r.is_empty())
                .collect();
            if pending.is_empty() {
                continue;
            }
            let Some(cg) = cgroups(pod, &c.name) else {
                continue;
            };
            let outcome = |action| Outcome {
                pod: pod.key(),
                pod_uid: pod.uid.clone(),
                container: c.name.clone(),
                cgroup: cg.clone(),
                action,
            };
            let Some(pid) = process_of(&cg) else {
                continue;
            };
            for (vf, netdevs, rdmas) in pending {
                // RDMA devices first: a soft-RoCE device follows its
                // netdev's events, and an HCA's RDMA device is bound to
                // its function, not to the netdev's namespace.
                let mut failed = None;
                let mut moved_rdma = Vec::new();
                for r in &rdmas {
                    if let Err(e) = net.move_rdma(r, pid) {
                        failed = Some(format!(
                            "communication RDMA: moving RDMA device {r} of VF {vf} into the pod's network namespace: {e}"
                        ));
                        break;
                    }
                    moved_rdma.push(r.clone());
                }
                if failed.is_none() {
                    for n in &netdevs {
                        if let Err(e) = net.move_netdev(n, pid) {
                            failed = Some(format!(
                                "communication SRIOV: moving {n} of VF {vf} into the pod's network namespace: {e}"
                            ));
                            break;
                        }
                    }
                }
                // All of a VF or nothing: its RDMA devices moved before a
                // failure go back.
                if let (Some(error), false) = (&mut failed, moved_rdma.is_empty()) {
                    if let Err(e) = net.move_back(None, &moved_rdma, pid) {
                        error.push_str(&format!(
                            "; RDMA devices {moved_rdma:?} stay in the pod's network namespace (moving them back: {e})"
                        ));
                    }
                }
                out.push(outcome(match failed {
                    Some(error) => Action::MoveFailed { vf, error },
                    None => Action::Moved {
                        vf,
                        netdev: netdevs.first().cloned(),
                        rdma: rdmas,
                        netns: format!("/proc/{pid}/ns/net"),
                    },
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use crate::pods::testing::FakeNet as Fake;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn pod(annotation: Option<&str>) -> PodInfo {
        crate::pods::testing::one_container(annotation, true, false)
    }

    fn assigned(addrs: &[&str]) -> Assigned {
        Assigned::from([(
            ("ns".into(), "p".into(), "work".into()),
            addrs.iter().map(|a| addr(a)).collect(),
        )])
    }

    fn cg(_: &PodInfo, _: &str) -> Option<String> {
        Some("kubepods/podu1/c1".into())
    }

    fn pid(cg: &str) -> Option<u32> {
        (cg == "kubepods/podu1/c1").then_some(42)
    }

    fn fake() -> Fake {
        let vf = addr("0000:01:10.0");
        Fake {
            vfs: BTreeSet::from([vf]),
            netdevs: Mutex::new(BTreeMap::from([
                (vf, vec!["eth5".into()]),
                (addr("0000:01:00.0"), vec!["eth1".into()]),
            ])),
            rdma: Mutex::new(BTreeMap::from([(vf, vec!["mlx5_3".into()])])),
            exclusive: true,
            ..Fake::default()
        }
    }

    #[test]
    fn an_assigned_vf_and_its_rdma_device_move_once() {
        let f = fake();
        let p = [pod(Some(r#"{"communication": "SRIOV, RDMA"}"#))];
        // The PF is assigned too: it is not a VF, it stays.
        let a = assigned(&["0000:01:10.0", "0000:01:00.0"]);
        let out = move_assigned(&f, &p, &a, &cg, &pid);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].action,
            Action::Moved {
                vf: addr("0000:01:10.0"),
                netdev: Some("eth5".into()),
                rdma: vec!["mlx5_3".into()],
                netns: "/proc/42/ns/net".into(),
            }
        );
        assert_eq!(
            *f.moved.lock().unwrap(),
            [("mlx5_3".to_owned(), 42), ("eth5".to_owned(), 42)]
        );
        // Moved: nothing left to do.
        assert!(move_assigned(&f, &p, &a, &cg, &pid).is_empty());
    }

    #[test]
    fn nothing_moves_without_the_request_or_in_shared_rdma_mode() {
        let a = assigned(&["0000:01:10.0"]);
        for p in [pod(None), pod(Some("{}")), pod(Some("{broken"))] {
            assert!(move_assigned(&fake(), &[p], &a, &cg, &pid).is_empty());
        }
        // RDMA alone in shared mode: every namespace sees the device.
        let f = Fake {
            exclusive: false,
            ..fake()
        };
        let p = [pod(Some(r#"{"communication": ["RDMA"]}"#))];
        assert!(move_assigned(&f, &p, &a, &cg, &pid).is_empty());
        // A container the request does not apply to.
        let p = [pod(Some(
            r#"{"communication": "SRIOV", "containers": ["other"]}"#,
        ))];
        assert!(move_assigned(&fake(), &p, &a, &cg, &pid).is_empty());
    }

    #[test]
    fn a_failed_move_is_reported_naming_the_vf_and_tried_again() {
        let f = Fake {
            fail: Some("eth5".into()),
            ..fake()
        };
        let p = [pod(Some(r#"{"communication": "SRIOV"}"#))];
        let a = assigned(&["0000:01:10.0"]);
        for _ in 0..2 {
            let out = move_assigned(&f, &p, &a, &cg, &pid);
            match &out[..] {
                [Outcome {
                    action: Action::MoveFailed { error, .. },
                    ..
                }] => assert!(
                    error.contains("eth5") && error.contains("0000:01:10.0"),
                    "{error}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rdma_devices_moved_before_a_failed_netdev_move_go_back() {
        let f = Fake {
            fail: Some("eth5".into()),
            ..fake()
        };
        let p = [pod(Some(r#"{"communication": ["SRIOV", "RDMA"]}"#))];
        let a = assigned(&["0000:01:10.0"]);
        let out = move_assigned(&f, &p, &a, &cg, &pid);
        assert!(
            matches!(
                &out[..],
                [Outcome {
                    action: Action::MoveFailed { .. },
                    ..
                }]
            ),
            "{out:?}"
        );
        assert_eq!(*f.moved.lock().unwrap(), [("mlx5_3".to_owned(), 42)]);
        assert_eq!(
            *f.moved_back.lock().unwrap(),
            [(None, vec!["mlx5_3".to_owned()], 42)]
        );
    }
}
