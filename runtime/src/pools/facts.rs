//! What pools need of the node beyond discovery's [`Topology`]: link
//! states (health), the interfaces carrying the default route (never
//! pooled), and what containers get for a device (IOMMU groups, UIO and
//! RDMA character devices, GPU minors, device nodes found through sysfs).
//!
//! [`HostFacts::read`] reads it below a root directory, through the same
//! guarded reader as discovery ([`SysRoot`]); everything else in
//! [`super`] is pure over a [`Topology`] and a `HostFacts`, so a test
//! writes a tree (or builds the value) and checks the result.

use std::collections::{BTreeMap, BTreeSet};

use griffin_devices::{parse, DeviceKind, DiscoveryError, PciAddress, SysRoot, Topology};
use serde::Serialize;

/// A character device found in sysfs: `<dir>/dev` and `DEVNAME` of
/// `<dir>/uevent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CharDev {
    /// The class directory it sits in (`misc`, `drm`, `accel`, `uio`, …).
    pub class: String,
    /// Its sysfs name (`renderD128`).
    pub name: String,
    /// Its node below `/dev` (`dri/renderD128`): `DEVNAME` of its uevent,
    /// else its name.
    pub devname: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl CharDev {
    /// `/dev/<devname>`.
    pub fn path(&self) -> String {
        format!("/dev/{}", self.devname)
    }
}

/// What is known of one PCI function beyond discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceFacts {
    /// Its IOMMU group (the name `iommu_group` links to).
    pub iommu_group: Option<String>,
    /// RDMA devices sysfs places on the function itself (`<dev>/infiniband`):
    /// hardware RDMA, what sriovdp's `isRdma` counts (soft-RoCE devices
    /// sit on a netdev, not here).
    pub infiniband: Vec<String>,
    /// Its UIO devices (`<dev>/uio/uioN`).
    pub uio: Vec<String>,
    /// Character devices below the function (`<dev>/<class>/<name>/dev`),
    /// for accelerators, FPGAs, GPUs and NVMe; RDMA ones come from
    /// [`HostFacts::rdma_char`].
    pub char_devs: Vec<CharDev>,
    /// An NVIDIA GPU's minor number (`Device Minor` of
    /// `/proc/driver/nvidia/gpus/<address>/information`).
    pub gpu_minor: Option<u32>,
}

/// Facts of the node read below a root ([`HostFacts::read`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// `operstate` of every netdev that has one.
    pub operstate: BTreeMap<String, String>,
    /// Interfaces holding an IPv4 default route (`/proc/net/route`): in use
    /// by the host, never pooled (as sriovdp leaves them out).
    pub default_route: BTreeSet<String>,
    /// Names in `/sys/class/misc` (`rdma_cm`, `vhost-net`, `tun`, …).
    pub misc: BTreeSet<String>,
    /// Character device drivers of `/proc/devices` (`nvidia-uvm`, …).
    pub char_drivers: BTreeSet<String>,
    /// RDMA character devices by RDMA device (`ibdev`): from
    /// `/sys/class/infiniband_verbs` and `/sys/class/infiniband_mad`.
    pub rdma_char: BTreeMap<String, Vec<CharDev>>,
    /// Per PCI function.
    pub devices: BTreeMap<PciAddress, DeviceFacts>,
    /// Faults a driver reported for a function, with why (NVML's critical
    /// XIDs, [`crate::gpuhealth`]): not read from sysfs, given by the
    /// daemon's watchers.
    pub faults: BTreeMap<PciAddress, String>,
}

/// Sysfs class directories below a function that hold no device node a
/// container needs (or that pools hand out in another way).
const SKIPPED_CLASSES: &[&str] = &[
    "net",
    "infiniband",
    "infiniband_verbs",
    "infiniband_mad",
    "vfio-dev",
    "power",
    "msi_irqs",
    "iommu",
    "iommu_group",
    "driver",
    "firmware_node",
    "physfn",
    "subsystem",
    "ptp",
    "hwmon",
];

impl HostFacts {
    /// Reads the facts of every endpoint of `topo` below `root` (the root
    /// `topo` was discovered from). Absent files mean absent facts; a file
    /// that exists but is not what sysfs has there (a FIFO, an over-size
    /// file) is an error naming it.
    pub fn read(sys: &SysRoot, topo: &Topology) -> Result<Self, DiscoveryError> {
        let mut f = HostFacts::default();
        for name in sys.list_opt("sys/class/net")? {
            if let Some(state) = sys.read_opt(&format!("sys/class/net/{name}/operstate"))? {
                f.operstate.insert(name, state.trim().to_owned());
            }
        }
        if let Some(text) = sys.read_opt("proc/net/route")? {
            f.default_route = default_route_ifaces(&text);
        }
        f.misc = sys.list_opt("sys/class/misc")?.into_iter().collect();
        if let Some(text) = sys.read_opt("proc/devices")? {
            f.char_drivers = char_drivers(&text);
        }
        for class in ["infiniband_verbs", "infiniband_mad"] {
            let dir = format!("sys/class/{class}");
            // The class devices (`uverbsN`, `umadN`, `issmN`), not the
            // class's own attribute files (`abi_version`).
            let devices = sys.list_opt(&dir)?.into_iter().filter(|n| {
                ["uverbs", "umad", "issm"]
                    .iter()
                    .any(|p| n.strip_prefix(p).is_some_and(|i| i.parse::<u32>().is_ok()))
            });
            for name in devices {
                let Some(ibdev) = sys.read_opt(&format!("{dir}/{name}/ibdev"))? else {
                    continue;
                };
                if let Some(c) = char_dev(sys, &dir, class, &name)? {
                    f.rdma_char
                        .entry(ibdev.trim().to_owned())
                        .or_default()
                        .push(c);
                }
            }
        }
        for d in topo.endpoints() {
            let dir = format!("sys/bus/pci/devices/{}", d.pci_address);
            let mut x = DeviceFacts {
                iommu_group: sys
                    .read_link_opt(&format!("{dir}/iommu_group"))?
                    .map(|t| parse::link_basename(&t).to_owned()),
                infiniband: sys.list_opt(&format!("{dir}/infiniband"))?,
                uio: sys.list_opt(&format!("{dir}/uio"))?,
                ..Default::default()
            };
            if !matches!(d.kind, DeviceKind::NicPf | DeviceKind::NicVf) {
                x.char_devs = char_devs_below(sys, &dir)?;
            }
            if d.kind == DeviceKind::Gpu && d.vendor == "10de" {
                let info = format!("proc/driver/nvidia/gpus/{}/information", d.pci_address);
                x.gpu_minor = sys.read_opt(&info)?.as_deref().and_then(nvidia_minor);
            }
            f.devices.insert(d.pci_address, x);
        }
        Ok(f)
    }

    /// The facts of one function (empty when none were read).
    pub fn device(&self, addr: PciAddress) -> DeviceFacts {
        self.devices.get(&addr).cloned().unwrap_or_default()
    }

    /// Whether `iface`'s link is down: its `operstate` is `down`,
    /// `lowerlayerdown`, `notpresent` or `dormant` (`unknown`, what many
    /// drivers report for a working link, and an absent state are not
    /// down).
    pub fn link_down(&self, iface: &str) -> bool {
        matches!(
            self.operstate.get(iface).map(String::as_str),
            Some("down" | "lowerlayerdown" | "notpresent" | "dormant")
        )
    }
}

/// The character devices in the class directories right below a PCI
/// function (`<dev>/<class>/<name>/dev`), sorted by class and name.
fn char_devs_below(sys: &SysRoot, dir: &str) -> Result<Vec<CharDev>, DiscoveryError> {
    let mut out = Vec::new();
    for class in sys.list_opt(dir)? {
        if SKIPPED_CLASSES.contains(&class.as_str()) {
            continue;
        }
        let cdir = format!("{dir}/{class}");
        // Attributes are files; only directories hold class devices, and a
        // link (driver, iommu_group, …) is never followed.
        let is_dir = std::fs::symlink_metadata(sys.path(&cdir)).is_ok_and(|m| m.is_dir());
        if !is_dir {
            continue;
        }
        for name in sys.list_opt(&cdir)? {
            // A class device is a directory; a child device's attribute
            // files (`virtio0/device`, …) are not.
            let entry = format!("{cdir}/{name}");
            if !std::fs::symlink_metadata(sys.path(&entry)).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if let Some(c) = char_dev(sys, &cdir, &class, &name)? {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// `<dir>/<name>` as a character device, when it has a `dev` attribute.
fn char_dev(
    sys: &SysRoot,
    dir: &str,
    class: &str,
    name: &str,
) -> Result<Option<CharDev>, DiscoveryError> {
    let base = format!("{dir}/{name}");
    let Some(dev) = sys.read_opt(&format!("{base}/dev"))? else {
        return Ok(None);
    };
    let Some((major, minor)) = major_minor(&dev) else {
        return Err(DiscoveryError::Inconsistent {
            path: sys.path(&format!("{base}/dev")),
            what: format!("{:?} is not major:minor", dev.trim()),
        });
    };
    let devname = match sys.read_opt(&format!("{base}/uevent"))? {
        Some(text) => parse::uevent(&text)
            .ok()
            .and_then(|kv| {
                kv.iter()
                    .find(|(k, _)| *k == "DEVNAME")
                    .map(|(_, v)| (*v).to_owned())
            })
            .filter(|v| safe_devname(v)),
        None => None,
    }
    .unwrap_or_else(|| name.to_owned());
    Ok(Some(CharDev {
        class: class.to_owned(),
        name: name.to_owned(),
        devname,
        major,
        minor,
    }))
}

/// A `DEVNAME` that stays below `/dev`: relative, no `..`, no empty part.
fn safe_devname(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with('/')
        && v.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
}

/// Parses `major:minor` (a `dev` attribute).
pub fn major_minor(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Interfaces with an IPv4 default route (destination and mask 0) in the
/// text of `/proc/net/route`.
pub fn default_route_ifaces(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000" {
            out.insert(f[0].to_owned());
        }
    }
    out
}

/// The character device drivers of `/proc/devices` (its first section).
pub fn char_drivers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Block devices") {
            break;
        }
        if let Some((num, name)) = line.split_once(char::is_whitespace) {
            if num.parse::<u32>().is_ok() {
                out.insert(name.trim().to_owned());
            }
        }
    }
    out
}

/// `Device Minor: N` of an NVIDIA GPU's `information` file.
pub fn nvidia_minor(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Device Minor").then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_come_from_proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                    eth1\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    eth2\t00000000\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        assert_eq!(
            default_route_ifaces(text).into_iter().collect::<Vec<_>>(),
            vec!["eth0"]
        );
        assert!(default_route_ifaces("").is_empty());
        assert!(default_route_ifaces("garbage\nmore garbage").is_empty());
    }

    #[test]
    fn proc_devices_and_nvidia_minors() {
        let text = "Character devices:\n  1 mem\n195 nvidia-frontend\n508 nvidia-uvm\n\nBlock devices:\n  8 sd\n";
        let d = char_drivers(text);
        assert!(d.contains("nvidia-uvm") && d.contains("mem"));
        assert!(!d.contains("sd"), "block devices are not character devices");
        let info = "Model: \t\t NVIDIA A100\nIRQ:   \t\t 35\nDevice Minor: \t 3\nBus Location: \t 0000:15:00.0\n";
        assert_eq!(nvidia_minor(info), Some(3));
        assert_eq!(nvidia_minor("Device Minor: x"), None);
        assert_eq!(nvidia_minor(""), None);
        assert_eq!(major_minor("240:0\n"), Some((240, 0)));
        assert_eq!(major_minor("240"), None);
        assert!(safe_devname("dri/renderD128"));
        assert!(!safe_devname("../etc/passwd") && !safe_devname("/dev/x") && !safe_devname(""));
    }
}
