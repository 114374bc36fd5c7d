//! What a container gets for the devices allocated to it (the answer to
//! the kubelet's Allocate).
//!
//! Every pool follows sriov-network-device-plugin's conventions, so pods
//! and NetworkAttachmentDefinitions written for that plugin work unchanged:
//!
//! * `PCIDEVICE_<PREFIX>_<NAME>`: the allocated PCI addresses, joined with
//!   `,`, in the order asked. The name is `PCIDEVICE_`, the resource prefix,
//!   `_`, the resource name, upper-cased with `.` replaced by `_` (exactly
//!   the plugin's rule: `intel.com/intel_sriov_netdevice` gives
//!   `PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE`; a `-` in the prefix
//!   stays).
//! * `PCIDEVICE_<PREFIX>_<NAME>_INFO`: a JSON object, per PCI address, per
//!   information provider, key → value, as the plugin's Go code marshals it
//!   (keys sorted, `<`, `>`, `&` escaped): `generic` `{"deviceID": addr}`
//!   always; `vfio` `{"mount": "/dev/vfio/vfio", "dev-mount":
//!   "/dev/vfio/<group>"}` for a `vfio-pci` device; `uio` `{"mount":
//!   "/dev/uioN"}` for a UIO one; `rdma` `{"rdma_cm", "uverbs", "umad",
//!   "issm", "rdma_dev"}` for an RDMA one (sriovdp pools: with `isRdma`);
//!   `vhost` `{"net-mount", "tun-mount"}` with `needVhostNet`; `extra` with
//!   `additionalInfo`.
//!
//! Device nodes (permissions `rw`, same path in the container): `vfio-pci`
//! → `/dev/vfio/vfio` and `/dev/vfio/<iommu group>`; UIO → `/dev/uioN`;
//! RDMA → its `/dev/infiniband/uverbsN` (and `umadN`, `issmN`) found
//! through `/sys/class/infiniband_verbs` and `infiniband_mad`, and
//! `/dev/infiniband/rdma_cm` when the `rdma_cm` misc device exists;
//! `needVhostNet` → `/dev/vhost-net`, `/dev/net/tun`. In Griffin's own pools
//! an NVIDIA GPU gets `/dev/nvidiaN` (minor from NVML, else from
//! `/proc/driver/nvidia/gpus/<address>/information`), `/dev/nvidiactl`,
//! `/dev/nvidia-uvm` and `/dev/nvidia-uvm-tools` (when the `nvidia-uvm`
//! driver is loaded) and `NVIDIA_VISIBLE_DEVICES` (its UUID from NVML,
//! else its minor); any other device that is not a NIC gets the character
//! devices sysfs shows below it (`misc`, `drm`, `accel`, `uio`, `xdma`, …,
//! each `/dev/<DEVNAME>`). A node is listed once however many devices
//! bring it.

use std::collections::BTreeMap;

use griffin_devices::{DeviceKind, PciDevice};

use super::facts::{DeviceFacts, HostFacts};
use super::select::Selector;
use super::{Flavor, Pool, PoolDef, PoolDevice, PoolError};
use crate::plugin::{ContainerDevices, DeviceNode};

/// What one device brings a container, decided when the pool is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Give {
    /// Device nodes.
    pub nodes: Vec<DeviceNode>,
    /// `_INFO` entries: provider → key → value.
    pub info: BTreeMap<String, BTreeMap<String, String>>,
    /// Its `NVIDIA_VISIBLE_DEVICES` entry.
    pub nvidia: Option<String>,
    /// Why it cannot be given to a container.
    pub problem: Option<String>,
}

fn rw(path: &str) -> DeviceNode {
    DeviceNode {
        container_path: path.to_owned(),
        host_path: path.to_owned(),
        permissions: "rw".to_owned(),
    }
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Give {
    /// What `d` (taken by `sel` of `def`) brings.
    pub(crate) fn of(
        def: &PoolDef,
        sel: &Selector,
        d: &PciDevice,
        f: &DeviceFacts,
        host: &HostFacts,
    ) -> Self {
        let mut g = Give::default();
        let addr = d.pci_address.to_string();
        g.info
            .insert("generic".into(), kv(&[("deviceID", addr.as_str())]));
        let driver = d.driver.as_deref().unwrap_or("");
        if driver == "vfio-pci" {
            let mut info = kv(&[("mount", "/dev/vfio/vfio")]);
            g.nodes.push(rw("/dev/vfio/vfio"));
            if let Some(group) = &f.iommu_group {
                let path = format!("/dev/vfio/{group}");
                g.nodes.push(rw(&path));
                info.insert("dev-mount".into(), path);
            }
            g.info.insert("vfio".into(), info);
        }
        let uio = match def.flavor {
            Flavor::Griffin => !f.uio.is_empty(),
            Flavor::SriovNet | Flavor::SriovAccel => matches!(driver, "uio" | "igb_uio"),
        };
        if uio {
            let mut info = BTreeMap::new();
            if let Some(u) = f.uio.first() {
                let path = format!("/dev/{u}");
                g.nodes.push(rw(&path));
                info.insert("mount".into(), path);
            }
            g.info.insert("uio".into(), info);
        }
        let rdma: &[String] = match def.flavor {
            Flavor::Griffin => &d.rdma_devices,
            Flavor::SriovNet if sel.is_rdma == Some(true) => &f.infiniband,
            _ => &[],
        };
        if let Some(first) = rdma.first() {
            let mut info = BTreeMap::new();
            for name in rdma {
                for c in host.rdma_char.get(name).into_iter().flatten() {
                    let path = c.path();
                    g.nodes.push(rw(&path));
                    for key in ["uverbs", "umad", "issm"] {
                        if c.name.contains(key) {
                            info.insert(key.to_owned(), path.clone());
                        }
                    }
                }
            }
            if host.misc.contains("rdma_cm") {
                g.nodes.push(rw("/dev/infiniband/rdma_cm"));
                info.insert("rdma_cm".into(), "/dev/infiniband/rdma_cm".into());
            }
            info.insert("rdma_dev".into(), first.clone());
            g.info.insert("rdma".into(), info);
        }
        if sel.vhost_net && host.misc.contains("vhost-net") {
            if host.misc.contains("tun") {
                g.nodes.push(rw("/dev/vhost-net"));
                g.nodes.push(rw("/dev/net/tun"));
            }
            g.info.insert(
                "vhost".into(),
                kv(&[
                    ("net-mount", "/dev/vhost-net"),
                    ("tun-mount", "/dev/net/tun"),
                ]),
            );
        }
        if let Some(extra) = &def.additional_info {
            let mut info = BTreeMap::new();
            for key in ["*", addr.as_str()] {
                if let Some(m) = extra.get(key) {
                    info.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            g.info.insert("extra".into(), info);
        }
        if def.flavor == Flavor::Griffin {
            if d.kind == DeviceKind::Gpu && d.vendor == "10de" {
                g.nvidia_gpu(d, f, host);
            } else if !matches!(d.kind, DeviceKind::NicPf | DeviceKind::NicVf) {
                g.nodes.extend(f.char_devs.iter().map(|c| rw(&c.path())));
            }
        }
        g
    }

    fn nvidia_gpu(&mut self, d: &PciDevice, f: &DeviceFacts, host: &HostFacts) {
        let minor = d.gpu.as_ref().and_then(|g| g.minor).or(f.gpu_minor);
        if let Some(m) = minor {
            self.nodes.push(rw(&format!("/dev/nvidia{m}")));
            self.nodes.push(rw("/dev/nvidiactl"));
            if host.char_drivers.contains("nvidia-uvm") {
                self.nodes.push(rw("/dev/nvidia-uvm"));
                self.nodes.push(rw("/dev/nvidia-uvm-tools"));
            }
        }
        self.nvidia = d
            .gpu
            .as_ref()
            .map(|g| g.uuid.clone())
            .or_else(|| minor.map(|m| m.to_string()));
        if self.nvidia.is_none() {
            self.problem = Some(
                "an NVIDIA GPU whose UUID and minor number (NVML, /proc/driver/nvidia/gpus) are both unknown"
                    .to_owned(),
            );
        }
    }
}

/// The environment variable of a resource's PCI addresses (sriovdp's rule,
/// see the module documentation); the `_INFO` one appends `_INFO`.
pub fn env_name(resource: &str) -> String {
    let (prefix, name) = resource.split_once('/').unwrap_or(("", resource));
    format!("PCIDEVICE_{prefix}_{name}")
        .replace('.', "_")
        .to_uppercase()
}

/// JSON as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and
/// U+2029 escaped (they only occur inside strings).
fn go_json<T: serde::Serialize>(v: &T) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned());
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// What a container gets for `devs` of `pool`.
pub(crate) fn container(pool: &Pool, devs: &[&PoolDevice]) -> Result<ContainerDevices, PoolError> {
    let mut out = ContainerDevices::default();
    let mut info: BTreeMap<&str, &BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
    let mut nvidia = Vec::new();
    for d in devs {
        if let Some(why) = &d.give.problem {
            return Err(PoolError::Unusable {
                resource: pool.resource.clone(),
                id: d.id.clone(),
                why: why.clone(),
            });
        }
        info.insert(&d.id, &d.give.info);
        for n in &d.give.nodes {
            if !out.devices.iter().any(|x| x.host_path == n.host_path) {
                out.devices.push(n.clone());
            }
        }
        nvidia.extend(d.give.nvidia.clone());
    }
    let key = env_name(&pool.resource);
    let ids: Vec<&str> = devs.iter().map(|d| d.id.as_str()).collect();
    out.envs.insert(format!("{key}_INFO"), go_json(&info));
    out.envs.insert(key, ids.join(","));
    if !nvidia.is_empty() {
        out.envs
            .insert("NVIDIA_VISIBLE_DEVICES".into(), nvidia.join(","));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_plugin() {
        assert_eq!(
            env_name("intel.com/intel_sriov_netdevice"),
            "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE"
        );
        assert_eq!(env_name("nvidia.com/gpu"), "PCIDEVICE_NVIDIA_COM_GPU");
        // Only '.' is replaced, as the plugin's GetEnvs does.
        assert_eq!(
            env_name("my-corp.io/fast_nic"),
            "PCIDEVICE_MY-CORP_IO_FAST_NIC"
        );
    }

    #[test]
    fn json_is_escaped_as_go_escapes_it() {
        let mut m = BTreeMap::new();
        m.insert("b", "x<y>&z\u{2028}");
        m.insert("a", "plain");
        assert_eq!(
            go_json(&m),
            r#"{"a":"plain","b":"x\u003cy\u003e\u0026z\u2028"}"#
        );
    }
}
