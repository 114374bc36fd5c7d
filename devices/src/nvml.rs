//! GPUs through NVML, when `libnvidia-ml` can be loaded at run time.
//!
//! `nvml-wrapper` opens the library with `dlopen`; on a node without the
//! NVIDIA driver that fails and discovery goes on from PCI alone, recording
//! why NVML is absent.

use serde::{Deserialize, Serialize};

use crate::parse::{self, PciAddress};
use crate::pci::GpuInfo;

/// What NVML contributed to discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum NvmlStatus {
    /// Not asked: discovery read a captured tree, not this node.
    NotQueried,
    /// Not asked: PCI shows no NVIDIA GPU on this node.
    NoNvidiaGpu,
    /// The library could not be loaded or initialised.
    Absent {
        /// Why, as NVML or the loader put it.
        reason: String,
    },
    /// NVML answered.
    Loaded {
        /// Driver version.
        driver_version: String,
        /// GPUs by PCI address.
        gpus: Vec<(PciAddress, GpuInfo)>,
    },
}

/// `NVML_NVLINK_MAX_LINKS` of the NVML headers.
const NVLINK_MAX_LINKS: u32 = 18;

/// Parses NVML's bus id (`00000000:3B:00.0`).
fn bus_id(s: &str) -> Option<PciAddress> {
    parse::pci_address(s.trim_end_matches('\0')).ok()
}

/// Queries NVML. Never fails: a missing library or a failing call gives
/// [`NvmlStatus::Absent`].
pub fn query() -> NvmlStatus {
    use nvml_wrapper::Nvml;
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            let reason = crate::Chain(&e).to_string();
            tracing::info!(%reason, "NVML not available; GPUs come from PCI only");
            return NvmlStatus::Absent { reason };
        }
    };
    let run = || -> Result<NvmlStatus, nvml_wrapper::error::NvmlError> {
        let driver_version = nvml.sys_driver_version()?;
        let mut gpus = Vec::new();
        for i in 0..nvml.device_count()? {
            let dev = nvml.device_by_index(i)?;
            let Some(addr) = bus_id(&dev.pci_info()?.bus_id) else {
                continue;
            };
            let mut nvlink_peers = Vec::new();
            for l in 0..NVLINK_MAX_LINKS {
                let link = dev.link_wrapper_for(l);
                if link.is_active().unwrap_or(false) {
                    if let Some(peer) = link.remote_pci_info().ok().and_then(|p| bus_id(&p.bus_id))
                    {
                        if !nvlink_peers.contains(&peer) {
                            nvlink_peers.push(peer);
                        }
                    }
                }
            }
            gpus.push((
                addr,
                GpuInfo {
                    name: dev.name()?,
                    uuid: dev.uuid()?,
                    memory_bytes: dev.memory_info()?.total,
                    nvlink_peers,
                    minor: dev.minor_number().ok(),
                },
            ));
        }
        Ok(NvmlStatus::Loaded {
            driver_version,
            gpus,
        })
    };
    run().unwrap_or_else(|e| NvmlStatus::Absent {
        reason: crate::Chain(&e).to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn nvml_bus_ids() {
        assert_eq!(
            super::bus_id("00000000:3B:00.0").unwrap().to_string(),
            "0000:3b:00.0"
        );
        assert!(super::bus_id("garbage").is_none());
    }
}
