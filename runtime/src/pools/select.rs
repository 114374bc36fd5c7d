//! Selectors: which discovered devices a pool takes.
//!
//! One [`Selector`] is a conjunction: a device is selected when every
//! selector field that is set matches it (an empty list matches anything).
//! A pool's selectors are a union ([`super::PoolDef::selectors`]), as the
//! list form of sriov-network-device-plugin's `selectors` is.
//!
//! The fields mean what sriov-network-device-plugin's mean:
//!
//! | field | compared with |
//! |---|---|
//! | `vendors`, `devices` | the vendor and device ids, four lower-case hex digits without `0x`, exactly |
//! | `drivers` | the bound driver's name, exactly |
//! | `pci_addresses` | the address as sysfs writes it (`0000:13:10.0`), exactly |
//! | `pf_names` | the PF's first netdev for a VF, the device's own first netdev otherwise; `NAME#RANGES` picks VFs by index |
//! | `root_devices` | the PF's address for a VF, the device's own otherwise; `ADDR#RANGES` as `pf_names` |
//! | `link_types` | the link type of the device's first netdev, else of its PF's (`ether`, `infiniband`, …) |
//! | `is_rdma` | whether the function carries an RDMA device |
//!
//! Griffin adds `kinds` ([`DeviceKind`] names) and `numa_nodes`.
//!
//! `NAME#RANGES` (sriovdp's VF ranges): `eth1#0-3` takes VFs 0 to 3 of
//! eth1, `eth1#1,3-5` VFs 1, 3, 4 and 5; a bare `eth1` takes every VF of
//! eth1 and eth1 itself when it is a pooled device. A PF is never selected
//! through a range (its function index is -1). Names compare
//! case-insensitively, as sriovdp's do; the first entry whose name matches
//! decides.

use std::fmt;

use griffin_devices::{DeviceKind, PciDevice, Topology};
use serde::{Deserialize, Serialize};

/// One conjunction of conditions on a device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selector {
    /// Device kinds.
    pub kinds: Vec<DeviceKind>,
    /// Vendor ids (`8086`).
    pub vendors: Vec<String>,
    /// Device ids (`154c`).
    pub devices: Vec<String>,
    /// Bound drivers.
    pub drivers: Vec<String>,
    /// PCI addresses (`0000:13:10.0`).
    pub pci_addresses: Vec<String>,
    /// PF netdev names, with optional VF ranges.
    pub pf_names: Vec<FuncSelector>,
    /// PF PCI addresses, with optional VF ranges.
    pub root_devices: Vec<FuncSelector>,
    /// Link types (`ether`, `infiniband`).
    pub link_types: Vec<String>,
    /// NUMA nodes.
    pub numa_nodes: Vec<u32>,
    /// `Some(true)`: only functions carrying an RDMA device;
    /// `Some(false)`: only those without.
    pub is_rdma: Option<bool>,
    /// sriovdp's `needVhostNet`: containers also get `/dev/vhost-net` and
    /// `/dev/net/tun` (allocation only, never selection).
    pub vhost_net: bool,
}

/// `NAME` or `NAME#RANGES`: a PF (by netdev name or PCI address) and
/// optionally which of its VFs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncSelector {
    /// The PF's netdev name or PCI address (before `#`).
    pub name: String,
    /// Inclusive VF index ranges after `#`; `None` without `#`.
    pub ranges: Option<Vec<(u32, u32)>>,
}

impl FuncSelector {
    /// Parses `eth1`, `eth1#0-3`, `eth1#1,3-5`. Refused: an empty name,
    /// more than one `#`, an empty range list or entry, a bound that is not
    /// a decimal number, a reversed range.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, ranges) = match text.split_once('#') {
            None => (text, None),
            Some((name, rest)) => {
                if rest.contains('#') {
                    return Err(format!("{text:?} has more than one '#'"));
                }
                let mut ranges = Vec::new();
                for entry in rest.split(',') {
                    let num = |s: &str| -> Result<u32, String> {
                        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(format!("{text:?}: {s:?} is not a VF index"));
                        }
                        s.parse()
                            .map_err(|_| format!("{text:?}: VF index {s} is too large"))
                    };
                    let (lo, hi) = match entry.split_once('-') {
                        Some((a, b)) => (num(a)?, num(b)?),
                        None => {
                            let v = num(entry)?;
                            (v, v)
                        }
                    };
                    if lo > hi {
                        return Err(format!("{text:?}: range {entry} is reversed"));
                    }
                    ranges.push((lo, hi));
                }
                (name, Some(ranges))
            }
        };
        if name.is_empty() {
            return Err(format!("{text:?} names no PF"));
        }
        Ok(Self {
            name: name.to_owned(),
            ranges,
        })
    }

    /// Whether a function with index `func` (a VF index, `None` for a
    /// function that is not a VF) is taken once the name matched.
    fn takes(&self, func: Option<u32>) -> bool {
        match (&self.ranges, func) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(r), Some(i)) => r.iter().any(|&(lo, hi)| lo <= i && i <= hi),
        }
    }
}

impl fmt::Display for FuncSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(r) = &self.ranges {
            let parts: Vec<String> = r
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect();
            write!(f, "#{}", parts.join(","))?;
        }
        Ok(())
    }
}

impl Serialize for FuncSelector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FuncSelector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What selection needs to know of a device beyond its [`PciDevice`]
/// entry, derived from the topology (and, for RDMA, the host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived {
    /// The PF's first netdev for a VF, the device's own otherwise.
    pub pf_name: Option<String>,
    /// The PF's address for a VF, the device's own otherwise.
    pub root_device: String,
    /// The VF index (its `virtfnN`), `None` for a function that is not a VF.
    pub vf_index: Option<u32>,
    /// The link type of the device's first netdev, else of its PF's.
    pub link_type: Option<String>,
    /// Whether it carries an RDMA device (as the pool's flavor counts them).
    pub rdma: bool,
}

impl Derived {
    /// Derives the PF name, root device, VF index and link type of `d`;
    /// `rdma` as given.
    pub fn of(topo: &Topology, d: &PciDevice, rdma: bool) -> Self {
        let pf = d.sriov.pf.and_then(|a| topo.device(a));
        let (pf_name, root_device, vf_index) = match (d.sriov.pf, pf) {
            (Some(pf_addr), pf) => (
                pf.and_then(|p| p.netdevs.first().cloned()),
                pf_addr.to_string(),
                pf.and_then(|p| p.sriov.vfs.iter().position(|v| *v == d.pci_address))
                    .map(|i| i as u32),
            ),
            (None, _) => (d.netdevs.first().cloned(), d.pci_address.to_string(), None),
        };
        let link_type = d
            .link_type
            .clone()
            .or_else(|| pf.and_then(|p| p.link_type.clone()));
        Self {
            pf_name,
            root_device,
            vf_index,
            link_type,
            rdma,
        }
    }
}

/// The first entry whose name equals `value` (ignoring case) decides.
fn func_match(list: &[FuncSelector], value: Option<&str>, func: Option<u32>) -> bool {
    if list.is_empty() {
        return true;
    }
    let Some(value) = value else {
        return false;
    };
    list.iter()
        .find(|s| s.name.eq_ignore_ascii_case(value))
        .is_some_and(|s| s.takes(func))
}

fn listed(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == value)
}

impl Selector {
    /// Whether `d` (with what was derived of it) is selected.
    pub fn matches(&self, d: &PciDevice, x: &Derived) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&d.kind))
            && listed(&self.vendors, &d.vendor)
            && listed(&self.devices, &d.device)
            && listed(&self.drivers, d.driver.as_deref().unwrap_or(""))
            && listed(&self.pci_addresses, &d.pci_address.to_string())
            && func_match(&self.pf_names, x.pf_name.as_deref(), x.vf_index)
            && func_match(&self.root_devices, Some(&x.root_device), x.vf_index)
            && listed(&self.link_types, x.link_type.as_deref().unwrap_or(""))
            && (self.numa_nodes.is_empty()
                || d.numa_node.is_some_and(|n| self.numa_nodes.contains(&n)))
            && self.is_rdma.is_none_or(|want| want == x.rdma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vf_ranges_parse_as_sriovdp_writes_them() {
        let s = FuncSelector::parse("eth1#1,3-5").unwrap();
        assert_eq!(s.name, "eth1");
        assert_eq!(s.ranges, Some(vec![(1, 1), (3, 5)]));
        assert_eq!(s.to_string(), "eth1#1,3-5");
        assert_eq!(FuncSelector::parse("eth1").unwrap().ranges, None);
        assert_eq!(
            FuncSelector::parse("0000:13:00.0#0-3").unwrap().ranges,
            Some(vec![(0, 3)])
        );
        for bad in [
            "",
            "#1",
            "eth1#",
            "eth1#a",
            "eth1#1-",
            "eth1#5-3",
            "a#1#2",
            "eth1#1,,2",
            "eth1#-1",
        ] {
            assert!(FuncSelector::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges_take_vfs_by_index_and_never_the_pf() {
        let s = FuncSelector::parse("ETH1#0,2-3").unwrap();
        let list = [s];
        assert!(func_match(&list, Some("eth1"), Some(0)));
        assert!(!func_match(&list, Some("eth1"), Some(1)));
        assert!(func_match(&list, Some("eth1"), Some(3)));
        assert!(!func_match(&list, Some("eth1"), Some(4)));
        assert!(!func_match(&list, Some("eth1"), None), "the PF itself");
        assert!(!func_match(&list, Some("eth10"), Some(0)));
        assert!(!func_match(&list, None, Some(0)), "no PF netdev");
        let bare = [FuncSelector::parse("eth1").unwrap()];
        assert!(func_match(&bare, Some("eth1"), None));
        assert!(func_match(&bare, Some("eth1"), Some(40)));
        // The first matching entry decides, as sriovdp's getItem.
        let two = [
            FuncSelector::parse("eth1#0").unwrap(),
            FuncSelector::parse("eth1#1").unwrap(),
        ];
        assert!(!func_match(&two, Some("eth1"), Some(1)));
        assert!(
            func_match(&[], None, None),
            "an empty list matches anything"
        );
    }
}
