//! Pools declared in Griffin's own daemon config (`[[pools]]`).

use griffin_devices::{DeviceKind, PciAddress};
use serde::{Deserialize, Serialize};

use super::select::{FuncSelector, Selector};
use super::{Flavor, PoolDef};

/// One `[[pools]]` entry: a resource name and selectors over what discovery
/// found (see [`super::select`] for what each selector compares). Every
/// selector is optional; all that are given must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// The full resource name, `vendor.com/name` (`name`: letters, digits
    /// and `_`, as sriov-network-device-plugin's).
    pub resource: String,
    /// Device kinds (`gpu`, `nic-vf`, `rdma-hca`, `fpga`, `accelerator`,
    /// `nvme`, `nic-pf`, `other`).
    #[serde(default)]
    pub kinds: Vec<DeviceKind>,
    /// Vendor ids, four lower-case hex digits (`8086`).
    #[serde(default)]
    pub vendors: Vec<String>,
    /// Device ids, four lower-case hex digits (`154c`).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Bound drivers (`vfio-pci`, `iavf`).
    #[serde(default)]
    pub drivers: Vec<String>,
    /// PCI addresses (`0000:3b:02.0`).
    #[serde(default)]
    pub pci_addresses: Vec<PciAddress>,
    /// PF netdev names, optionally with VF ranges (`eth1#0-3`, `eth1#1,3-5`).
    #[serde(default)]
    pub pf_names: Vec<FuncSelector>,
    /// PF PCI addresses, optionally with VF ranges (`0000:3b:00.0#0-7`).
    #[serde(default)]
    pub root_devices: Vec<FuncSelector>,
    /// NUMA nodes.
    #[serde(default)]
    pub numa_nodes: Vec<u32>,
    /// `true`: only functions carrying an RDMA device (hardware or
    /// soft-RoCE); `false`: only those without.
    #[serde(default)]
    pub is_rdma: Option<bool>,
    /// Link types of the device's netdev (or its PF's): `ether`,
    /// `infiniband`.
    #[serde(default)]
    pub link_types: Vec<String>,
    /// Send no NUMA node to the kubelet for these devices.
    #[serde(default)]
    pub exclude_topology: bool,
}

fn hex4(s: &str) -> bool {
    s.len() == 4
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PoolSpec {
    /// Checks what serde cannot; the message starts with the key path
    /// (`pools[2].vendors[0]: …`), `key` being `pools[i]`.
    pub fn check(&self, key: &str) -> Result<(), String> {
        let Some((prefix, name)) = self.resource.split_once('/') else {
            return Err(format!(
                "{key}.resource: {:?} is not vendor.com/name",
                self.resource
            ));
        };
        if !super::valid_prefix(prefix) {
            return Err(format!(
                "{key}.resource: {prefix:?} is not a resource prefix (a DNS subdomain such as example.com)"
            ));
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "{key}.resource: {name:?} is not a resource name (letters, digits and '_')"
            ));
        }
        for (field, list) in [("vendors", &self.vendors), ("devices", &self.devices)] {
            if let Some((i, bad)) = list.iter().enumerate().find(|(_, v)| !hex4(v)) {
                return Err(format!(
                    "{key}.{field}[{i}]: {bad:?} is not four lower-case hex digits (as 8086)"
                ));
            }
        }
        if let Some(i) = self.kinds.iter().position(|k| *k == DeviceKind::Bridge) {
            return Err(format!("{key}.kinds[{i}]: bridges are never pooled"));
        }
        Ok(())
    }

    /// The pool definition (`origin` names it in messages, `pools[i]`).
    pub fn to_def(&self, origin: &str) -> PoolDef {
        PoolDef {
            resource: self.resource.clone(),
            flavor: Flavor::Griffin,
            selectors: vec![Selector {
                kinds: self.kinds.clone(),
                vendors: self.vendors.clone(),
                devices: self.devices.clone(),
                drivers: self.drivers.clone(),
                pci_addresses: self.pci_addresses.iter().map(ToString::to_string).collect(),
                pf_names: self.pf_names.clone(),
                root_devices: self.root_devices.clone(),
                link_types: self.link_types.clone(),
                numa_nodes: self.numa_nodes.clone(),
                is_rdma: self.is_rdma,
                vhost_net: false,
            }],
            exclude_topology: self.exclude_topology,
            additional_info: None,
            origin: origin.to_owned(),
        }
    }
}
