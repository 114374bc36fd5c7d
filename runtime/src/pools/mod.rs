//! Device pools: the resources Griffin serves to the kubelet as a device
//! plugin, each a set of discovered devices chosen by selectors.
//!
//! Pools come from Griffin's daemon config (`[[pools]]`, [`PoolSpec`]) and
//! from an sriov-network-device-plugin `config.json` taken unchanged
//! ([`sriovdp`]); both become [`PoolDef`]s. [`Pools::build`] applies them
//! to a discovered [`Topology`] and the node's [`HostFacts`] (pure: a test
//! gives both). Then, per resource:
//!
//! * [`Pools::snapshot`]: every device with its health and NUMA node, what
//!   ListAndWatch sends;
//! * [`Pools::prefer`]: the preferred devices among those available, by
//!   PCIe distance ([`prefer`]), what GetPreferredAllocation answers;
//! * [`Pools::allocate`]: what a container gets for some devices, what
//!   Allocate answers ([`alloc_env`]).
//!
//! Which devices can be pooled: never a bridge; for network pools (sriovdp
//! `netDevice` and Griffin's own) never a PF that has VFs enabled (its VFs
//! are pooled instead) nor a function whose netdev carries the host's IPv4
//! default route, as sriov-network-device-plugin leaves them out; an
//! sriovdp `netDevice` pool takes only network functions (class `02`), an
//! `accelerator` pool only processing accelerators (class `12`). A device
//! selected by two pools is an error naming both.
//!
//! A device is unhealthy when no driver is bound, when it is a VF and
//! its PF's link is down ([`HostFacts::link_down`]), or when its driver
//! reported a fault (a GPU's critical XID, [`crate::gpuhealth`]); sriovdp leaves a
//! function without a driver out of its pool, Griffin lists it unhealthy
//! so that binding a driver brings it back without a restart.

pub mod alloc_env;
pub mod facts;
pub mod prefer;
pub mod select;
pub mod spec;
pub mod sriovdp;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use griffin_devices::{DeviceKind, Level, PciAddress, PciDevice, Topology};
use serde::Serialize;

use crate::plugin::{ContainerDevices, DeviceState, Snapshot};

pub use facts::{DeviceFacts, HostFacts};
pub use prefer::{Method, Preference};
pub use select::{FuncSelector, Selector};
pub use spec::PoolSpec;

/// sriovdp's `additionalInfo`: PCI address (or `*`) → key → value.
pub type ExtraInfo = BTreeMap<String, BTreeMap<String, String>>;

/// Which conventions a pool follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// Griffin's own `[[pools]]`: any device kind; containers get the
    /// sriovdp variables plus the device nodes of the kind (GPUs,
    /// accelerators, FPGAs, RDMA).
    Griffin,
    /// sriovdp `deviceType: netDevice`.
    SriovNet,
    /// sriovdp `deviceType: accelerator`.
    SriovAccel,
}

/// A pool as configured: what [`Pools::build`] applies to a topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolDef {
    /// Full resource name (`intel.com/intel_sriov_netdevice`).
    pub resource: String,
    /// Conventions.
    pub flavor: Flavor,
    /// A device is selected by the first selector it matches (a union).
    pub selectors: Vec<Selector>,
    /// Send no NUMA node for these devices.
    pub exclude_topology: bool,
    /// sriovdp's `additionalInfo`.
    pub additional_info: Option<ExtraInfo>,
    /// Where it was defined, for messages (`pools[0]`,
    /// `resourceList[2]`).
    pub origin: String,
}

/// Why pools could not be defined, built or used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The sriovdp config could not be read.
    #[error("reading sriov-network-device-plugin config {path}")]
    ReadSriovdp {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: griffin_ebpf::format::ReadError,
    },
    /// The sriovdp config is refused.
    #[error("sriov-network-device-plugin config {path}")]
    Sriovdp {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        #[source]
        source: sriovdp::SriovdpError,
    },
    /// Two definitions name one resource.
    #[error("resource {resource} is defined twice ({first} and {second})")]
    DuplicateResource {
        /// The resource.
        resource: String,
        /// Where first.
        first: String,
        /// Where again.
        second: String,
    },
    /// One device selected by two pools.
    #[error("device {device} is selected by two pools: {first} ({first_origin}) and {second} ({second_origin})")]
    Overlap {
        /// The device.
        device: PciAddress,
        /// One resource.
        first: String,
        /// Where it is defined.
        first_origin: String,
        /// The other.
        second: String,
        /// Where it is defined.
        second_origin: String,
    },
    /// No pool serves this resource.
    #[error("no pool serves resource {0}")]
    UnknownResource(String),
    /// An id that is not a device of the pool.
    #[error("{resource}: no device {id} in the pool")]
    UnknownDevice {
        /// The resource.
        resource: String,
        /// The id.
        id: String,
    },
    /// A must-include device that is not among the available ones.
    #[error("{resource}: must-include device {id} is not available")]
    NotAvailable {
        /// The resource.
        resource: String,
        /// The id.
        id: String,
    },
    /// More devices asked than offered.
    #[error("{resource}: {size} devices wanted, {available} available")]
    TooFew {
        /// The resource.
        resource: String,
        /// Wanted.
        size: usize,
        /// Offered.
        available: usize,
    },
    /// More must-include devices than the size.
    #[error("{resource}: {must} must-include devices, more than the {size} wanted")]
    TooManyRequired {
        /// The resource.
        resource: String,
        /// Must-include count.
        must: usize,
        /// Wanted.
        size: usize,
    },
    /// A device a container cannot be given (what is missing is named).
    #[error("{resource}: device {id}: {why}")]
    Unusable {
        /// The resource.
        resource: String,
        /// The id.
        id: String,
        /// Why.
        why: String,
    },
}

/// A resource prefix: a DNS subdomain (lower-case letters, digits, `-`
/// and `.`, labels not starting or ending with `-`), at most 253 bytes.
pub fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 253
        && p.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The pool definitions of a daemon config: its `[[pools]]`, then the
/// resources of the sriovdp `config.json` it names (`sriovdp`, which
/// overrides the config's `sriovdp_config` when given). Also returns the
/// sriovdp keys that were ignored, as warnings.
pub fn defs_from_config(
    config: &crate::config::Config,
    sriovdp: Option<&std::path::Path>,
) -> Result<(Vec<PoolDef>, Vec<String>), PoolError> {
    let mut defs: Vec<PoolDef> = config
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| p.to_def(&format!("pools[{i}]")))
        .collect();
    let mut warnings = Vec::new();
    let path = sriovdp.map(std::path::Path::to_path_buf).or_else(|| {
        (!config.sriovdp_config.as_os_str().is_empty()).then(|| config.sriovdp_config.clone())
    });
    if let Some(path) = path {
        let parsed = sriovdp::load(&path)?;
        for mut d in parsed.pools {
            d.origin = format!("{}: {}", path.display(), d.origin);
            defs.push(d);
        }
        warnings.extend(
            parsed
                .warnings
                .into_iter()
                .map(|w| format!("{}: {w}", path.display())),
        );
    }
    Ok((defs, warnings))
}

/// One device of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolDevice {
    /// The id the kubelet sees: the PCI address.
    pub id: String,
    /// PCI address.
    pub pci_address: PciAddress,
    /// Kind.
    pub kind: DeviceKind,
    /// Vendor id.
    pub vendor: String,
    /// Device id.
    pub device: String,
    /// Bound driver.
    pub driver: Option<String>,
    /// Its first netdev.
    pub netdev: Option<String>,
    /// The PF's first netdev for a VF, its own otherwise.
    pub pf_name: Option<String>,
    /// Its VF index.
    pub vf_index: Option<u32>,
    /// Whether it may be handed out.
    pub healthy: bool,
    /// Why not, when it may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    /// The NUMA node sent to the kubelet (`None` under
    /// `exclude_topology`, or when unknown).
    pub numa_node: Option<u32>,
    /// The device's NUMA node, whatever is sent (for preferences).
    #[serde(skip)]
    pub device_numa_node: Option<u32>,
    /// Which selector of the pool took it.
    pub selector: usize,
    /// What a container gets for it.
    #[serde(skip)]
    pub(crate) give: alloc_env::Give,
}

/// One resource's pool.
#[derive(Debug, Clone, Serialize)]
pub struct Pool {
    /// Full resource name.
    pub resource: String,
    /// Where it was defined.
    pub origin: String,
    /// Conventions.
    pub flavor: Flavor,
    /// Devices, ascending address.
    pub devices: Vec<PoolDevice>,
    #[serde(skip)]
    index: HashMap<String, usize>,
    #[serde(skip)]
    dist: prefer::Distances,
}

impl Pool {
    /// The device with id `id`.
    pub fn device(&self, id: &str) -> Option<&PoolDevice> {
        self.index.get(id).map(|&i| &self.devices[i])
    }

    /// Whether the distance levels between the pool's devices form a
    /// hierarchy, so that preferences are exact at any size ([`prefer`]).
    pub fn hierarchical(&self) -> bool {
        self.dist.hierarchical()
    }

    fn position(&self, id: &str) -> Result<usize, PoolError> {
        self.index
            .get(id)
            .copied()
            .ok_or_else(|| PoolError::UnknownDevice {
                resource: self.resource.clone(),
                id: id.to_owned(),
            })
    }
}

/// Every resource's pool, built from a topology and pool definitions.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Pools {
    pools: BTreeMap<String, Pool>,
}

/// Whether `d` can be in a pool of `flavor` at all.
fn candidate(flavor: Flavor, d: &PciDevice, facts: &HostFacts) -> bool {
    if d.kind == DeviceKind::Bridge {
        return false;
    }
    let base = u32::from_str_radix(&d.class, 16).map_or(u32::MAX, |c| c >> 16);
    let class_ok = match flavor {
        Flavor::Griffin => true,
        Flavor::SriovNet => base == 0x02,
        Flavor::SriovAccel => base == 0x12,
    };
    let network_rules = flavor != Flavor::SriovAccel;
    let pf_with_vfs = d.sriov.pf.is_none() && d.sriov.num_vfs > 0;
    let host_uplink = d.netdevs.iter().any(|n| facts.default_route.contains(n));
    class_ok && !(network_rules && (pf_with_vfs || host_uplink))
}

/// Health: a driver must be bound and have reported no fault, and a VF's
/// PF link must not be down.
fn health(topo: &Topology, d: &PciDevice, facts: &HostFacts) -> Option<String> {
    if d.driver.is_none() {
        return Some("no driver bound".to_owned());
    }
    if let Some(why) = facts.faults.get(&d.pci_address) {
        return Some(why.clone());
    }
    let pf = d.sriov.pf.and_then(|a| topo.device(a))?;
    pf.netdevs
        .iter()
        .find(|n| facts.link_down(n))
        .map(|n| format!("its PF {} link {n} is down", pf.pci_address))
}

impl Pools {
    /// Applies `defs` to `topo` with `facts` (pure). Refused: two
    /// definitions of one resource, a device selected by two pools.
    pub fn build(topo: &Topology, defs: &[PoolDef], facts: &HostFacts) -> Result<Self, PoolError> {
        let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
        let mut owner: HashMap<PciAddress, usize> = HashMap::new();
        for (di, def) in defs.iter().enumerate() {
            if let Some(p) = pools.get(&def.resource) {
                return Err(PoolError::DuplicateResource {
                    resource: def.resource.clone(),
                    first: p.origin.clone(),
                    second: def.origin.clone(),
                });
            }
            let mut devices = Vec::new();
            for d in topo.endpoints() {
                if !candidate(def.flavor, d, facts) {
                    continue;
                }
                let f = facts.device(d.pci_address);
                let rdma = match def.flavor {
                    Flavor::Griffin => !d.rdma_devices.is_empty(),
                    Flavor::SriovNet => !f.infiniband.is_empty(),
                    Flavor::SriovAccel => false,
                };
                let x = select::Derived::of(topo, d, rdma);
                let Some(si) = def.selectors.iter().position(|s| s.matches(d, &x)) else {
                    continue;
                };
                if let Some(&other) = owner.get(&d.pci_address) {
                    return Err(PoolError::Overlap {
                        device: d.pci_address,
                        first: defs[other].resource.clone(),
                        first_origin: defs[other].origin.clone(),
                        second: def.resource.clone(),
                        second_origin: def.origin.clone(),
                    });
                }
                owner.insert(d.pci_address, di);
                let unhealthy = health(topo, d, facts);
                let give = alloc_env::Give::of(def, &def.selectors[si], d, &f, facts);
                devices.push(PoolDevice {
                    id: d.pci_address.to_string(),
                    pci_address: d.pci_address,
                    kind: d.kind,
                    vendor: d.vendor.clone(),
                    device: d.device.clone(),
                    driver: d.driver.clone(),
                    netdev: d.netdevs.first().cloned(),
                    pf_name: x.pf_name,
                    vf_index: x.vf_index,
                    healthy: unhealthy.is_none(),
                    unhealthy,
                    numa_node: if def.exclude_topology {
                        None
                    } else {
                        d.numa_node
                    },
                    device_numa_node: d.numa_node,
                    selector: si,
                    give,
                });
            }
            let addrs: Vec<PciAddress> = devices.iter().map(|d| d.pci_address).collect();
            let level = |a: PciAddress, b: PciAddress| topo.matrix.get(a, b).unwrap_or(Level::SYS);
            let dist = prefer::Distances::new(&addrs, level);
            let index = devices
                .iter()
                .enumerate()
                .map(|(i, d)| (d.id.clone(), i))
                .collect();
            pools.insert(
                def.resource.clone(),
                Pool {
                    resource: def.resource.clone(),
                    origin: def.origin.clone(),
                    flavor: def.flavor,
                    devices,
                    index,
                    dist,
                },
            );
        }
        Ok(Self { pools })
    }

    /// Reads the host facts below `topo.root` and builds the pools.
    pub fn discover(topo: &Topology, defs: &[PoolDef]) -> Result<Self, PoolBuildError> {
        Self::discover_with_faults(topo, defs, &BTreeMap::new())
    }

    /// [`Pools::discover`], with the devices of `faults` unhealthy for the
    /// reason given.
    pub fn discover_with_faults(
        topo: &Topology,
        defs: &[PoolDef],
        faults: &BTreeMap<PciAddress, String>,
    ) -> Result<Self, PoolBuildError> {
        let sys = griffin_devices::SysRoot::new(&topo.root);
        let mut facts = HostFacts::read(&sys, topo).map_err(PoolBuildError::Facts)?;
        facts.faults = faults.clone();
        Self::build(topo, defs, &facts).map_err(PoolBuildError::Pools)
    }

    /// The pools, by resource.
    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// The pool of `resource`.
    pub fn pool(&self, resource: &str) -> Option<&Pool> {
        self.pools.get(resource)
    }

    fn get(&self, resource: &str) -> Result<&Pool, PoolError> {
        self.pool(resource)
            .ok_or_else(|| PoolError::UnknownResource(resource.to_owned()))
    }

    /// Every resource's devices with health and NUMA node, as ListAndWatch
    /// sends them (a pool with no device is listed empty).
    pub fn snapshot(&self) -> Snapshot {
        Arc::new(
            self.pools
                .iter()
                .map(|(r, p)| {
                    let devs = p
                        .devices
                        .iter()
                        .map(|d| DeviceState {
                            id: d.id.clone(),
                            healthy: d.healthy,
                            numa_node: d.numa_node,
                        })
                        .collect();
                    (r.clone(), devs)
                })
                .collect(),
        )
    }

    /// The preferred `size` devices of `resource` among `available`,
    /// containing every `must_include` ([`prefer`] explains the choice);
    /// `free_cpus` is the free exclusive CPUs per NUMA node
    /// ([`crate::alloc::free_cpus_by_numa`]).
    pub fn prefer(
        &self,
        resource: &str,
        available: &[String],
        must_include: &[String],
        size: usize,
        free_cpus: &BTreeMap<u32, usize>,
    ) -> Result<Preference, PoolError> {
        let pool = self.get(resource)?;
        let mut avail = Vec::with_capacity(available.len());
        for id in available {
            avail.push(pool.position(id)?);
        }
        avail.sort_unstable();
        avail.dedup();
        let mut must = Vec::with_capacity(must_include.len());
        for id in must_include {
            let i = pool.position(id)?;
            if avail.binary_search(&i).is_err() {
                return Err(PoolError::NotAvailable {
                    resource: resource.to_owned(),
                    id: id.clone(),
                });
            }
            must.push(i);
        }
        must.sort_unstable();
        must.dedup();
        if size > avail.len() {
            return Err(PoolError::TooFew {
                resource: resource.to_owned(),
                size,
                available: avail.len(),
            });
        }
        if must.len() > size {
            return Err(PoolError::TooManyRequired {
                resource: resource.to_owned(),
                must: must.len(),
                size,
            });
        }
        let score: Vec<u64> = pool
            .devices
            .iter()
            .map(|d| {
                d.device_numa_node
                    .and_then(|n| free_cpus.get(&n))
                    .map_or(0, |&c| c as u64)
            })
            .collect();
        let choice = pool.dist.choose(&avail, &must, size, &score);
        Ok(prefer::explain(pool, choice, avail.len(), free_cpus))
    }

    /// What a container gets for `ids` of `resource`: the
    /// sriov-network-device-plugin variables
    /// (`PCIDEVICE_<PREFIX>_<NAME>`, `…_INFO`) and the device nodes of each
    /// device ([`alloc_env`]).
    pub fn allocate(&self, resource: &str, ids: &[String]) -> Result<ContainerDevices, PoolError> {
        let pool = self.get(resource)?;
        let mut devs = Vec::with_capacity(ids.len());
        for id in ids {
            devs.push(&pool.devices[pool.position(id)?]);
        }
        alloc_env::container(pool, &devs)
    }
}

/// Why [`Pools::discover`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolBuildError {
    /// Reading the host facts.
    #[error("reading device facts")]
    Facts(#[source] griffin_devices::DiscoveryError),
    /// Building the pools.
    #[error(transparent)]
    Pools(PoolError),
}

#[cfg(test)]
mod tests;
