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

#[cfg(test)]
mod tests {
    use crate::config::{Config, Format};
    use griffin_ebpf::format;
    use proptest::prelude::*;

    /// Pools using every selector, in TOML.
    const SAMPLE: &str = r#"sriovdp_config = "/etc/pcidp/config.json"

[[pools]]
resource = "intel.com/intel_sriov_netdevice"
kinds = ["nic-vf"]
vendors = ["8086"]
devices = ["154c"]
drivers = ["iavf", "vfio-pci"]
pf_names = ["ens1f0#0-7", "ens1f1#1,3-5"]
root_devices = ["0000:3b:00.0#0-3"]
link_types = ["ether"]
numa_nodes = [0, 1]
is_rdma = false
exclude_topology = true

[[pools]]
resource = "example.com/accel"
kinds = ["accelerator", "fpga"]
pci_addresses = ["0000:18:00.0", "0000:19:00.0"]
"#;

    #[test]
    fn the_sample_parses() {
        let c = Config::parse(SAMPLE, Format::Toml).unwrap();
        assert_eq!(c.pools.len(), 2);
        let d = c.pools[0].to_def("pools[0]");
        assert_eq!(
            d.selectors[0].pf_names[1].ranges,
            Some(vec![(1, 1), (3, 5)])
        );
        assert!(d.exclude_topology);
        assert_eq!(
            c.pools[1].to_def("pools[1]").selectors[0].pci_addresses[1],
            "0000:19:00.0"
        );
    }

    /// The commented example of the embedded default is valid config.
    #[test]
    fn the_default_configs_example_parses() {
        let text = crate::config::DEFAULT_TOML;
        let start = text.find("# [[pools]]").unwrap();
        let end = text.find("\npools = []").unwrap() + 1;
        let example: String = text[start..end]
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let edited = format!(
            "{}{example}\n{}",
            &text[..start],
            &text[end + "pools = []".len()..]
        );
        let c = Config::parse(&edited, Format::Toml).unwrap();
        assert_eq!(c.pools.len(), 2);
        assert_eq!(c.pools[1].resource, "nvidia.com/gpu");
        assert_eq!(c.pools[0].pf_names[0].ranges, Some(vec![(0, 7)]));
    }

    /// Where a refusal says it is: a key path, or a located syntax error.
    fn located(text: &str, f: Format) -> Result<(), String> {
        match format::parse::<Config>(text, f) {
            Err(e) if e.path.is_empty() => {
                let shown = e.to_string();
                let ok = match f {
                    Format::Toml => shown.starts_with("TOML: line "),
                    Format::Yaml => shown.starts_with("YAML: "),
                };
                if ok {
                    Ok(())
                } else {
                    Err(shown)
                }
            }
            Err(_) => Ok(()),
            Ok(c) => match c.validate() {
                Err(crate::config::ConfigError::Value(m))
                    if !m.contains(": ") || m.starts_with(' ') =>
                {
                    Err(m)
                }
                _ => Ok(()),
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(griffin_tests::fuzz_cases(256)))]

        /// Mangled pool specs (cut, flipped, lines dropped or repeated,
        /// noise), read as TOML and as YAML: never a panic; a refusal names
        /// the key (`pools[1].pf_names[0]: …`) or the line.
        #[test]
        fn mangled_pool_specs_never_panic(seed in 1..u64::MAX, yaml in any::<bool>()) {
            let text = griffin_tests::hostile::mangle(SAMPLE, &mut griffin_tests::Rng(seed));
            let f = if yaml { Format::Yaml } else { Format::Toml };
            let parsed = Config::parse(&text, f);
            prop_assert_eq!(located(&text, f), Ok(()), "{:?}", text);
            if let Ok(c) = parsed {
                for (i, p) in c.pools.iter().enumerate() {
                    let key = format!("pools[{i}]");
                    prop_assert!(p.check(&key).is_ok());
                }
            }
        }

        /// Any resource name and selector values: accepted only when valid,
        /// refused naming the key.
        #[test]
        fn any_resource_and_values_are_checked(
            resource in "[a-zA-Z0-9./_ -]{0,24}",
            vendor in "[0-9a-fA-Fx]{0,6}",
            pf in "[a-z0-9#,-]{0,12}",
        ) {
            let text = format!(
                "[[pools]]\nresource = {resource:?}\nvendors = [{vendor:?}]\npf_names = [{pf:?}]\n"
            );
            match Config::parse(&text, Format::Toml) {
                Ok(c) => {
                    prop_assert!(c.pools[0].resource.contains('/'));
                    prop_assert_eq!(c.pools[0].vendors[0].len(), 4);
                }
                Err(e) => prop_assert!(e.starts_with("pools[0]."), "{}", e),
            }
        }
    }
}
