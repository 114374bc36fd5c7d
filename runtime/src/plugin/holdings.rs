//! Which plugin devices pods hold (pure).
//!
//! The kubelet tells a device plugin what it hands out (Allocate) but never
//! what it takes back: a pod's devices are free again when the pod is gone,
//! which only the kubelet's PodResources API shows. So a device is held
//! from its Allocate until PodResources stops listing it; a device
//! allocated within the grace period is kept even when not (yet) listed
//! (Allocate comes before the pod is admitted), and nothing is dropped when
//! PodResources cannot be asked. Holdings are persisted in the checkpoint
//! (`alloc::State::plugin_devices`), so the allocator, `/v1/score` and
//! `/v1/node` see them, and a restarted daemon starts from them and
//! corrects itself from PodResources.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use griffin_devices::PciAddress;

use crate::alloc::HeldDevice;

/// How long an allocated device is held without PodResources listing it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    pci_address: Option<PciAddress>,
    /// When Allocate handed it out (`None`: known from the checkpoint or
    /// PodResources only).
    allocated_at: Option<Instant>,
}

/// Devices held by pods, by resource and id.
#[derive(Debug, Clone)]
pub struct Holdings {
    grace: Duration,
    held: BTreeMap<String, BTreeMap<String, Hold>>,
}

/// What PodResources reported: device ids by resource, of every pod.
pub type Listed = BTreeMap<String, BTreeSet<String>>;

impl Holdings {
    /// Holdings restored from the checkpoint.
    pub fn new(saved: &BTreeMap<String, Vec<HeldDevice>>, grace: Duration) -> Self {
        let held = saved
            .iter()
            .map(|(r, devs)| {
                let m = devs
                    .iter()
                    .map(|d| {
                        (
                            d.id.clone(),
                            Hold {
                                pci_address: d.pci_address,
                                allocated_at: None,
                            },
                        )
                    })
                    .collect();
                (r.clone(), m)
            })
            .collect();
        Self { grace, held }
    }

    /// Records an Allocate of `devices` of `resource` at `now`.
    pub fn allocate(
        &mut self,
        resource: &str,
        devices: &[(String, Option<PciAddress>)],
        now: Instant,
    ) {
        let r = self.held.entry(resource.to_owned()).or_default();
        for (id, pci_address) in devices {
            r.insert(
                id.clone(),
                Hold {
                    pci_address: *pci_address,
                    allocated_at: Some(now),
                },
            );
        }
    }

    /// Applies what PodResources lists for `ours` (the resources Griffin
    /// serves; other plugins' resources are not its business): listed
    /// devices are held, unlisted ones are released unless allocated
    /// within the grace period and never listed since. `addr` maps an id of a resource to its PCI
    /// function. Returns whether anything changed.
    pub fn observe(
        &mut self,
        listed: &Listed,
        ours: &BTreeSet<String>,
        now: Instant,
        addr: impl Fn(&str, &str) -> Option<PciAddress>,
    ) -> bool {
        let before = self.to_saved();
        for r in ours {
            let want = listed.get(r);
            let held = self.held.entry(r.clone()).or_default();
            held.retain(|id, h| {
                want.is_some_and(|w| w.contains(id))
                    || h.allocated_at
                        .is_some_and(|t| now.saturating_duration_since(t) < self.grace)
            });
            for id in want.into_iter().flatten() {
                // Listed: confirmed, so the Allocate grace no longer
                // applies and the device goes with the first List that
                // leaves it out.
                held.entry(id.clone())
                    .and_modify(|h| h.allocated_at = None)
                    .or_insert_with(|| Hold {
                        pci_address: addr(r, id),
                        allocated_at: None,
                    });
            }
        }
        self.held.retain(|_, m| !m.is_empty());
        self.to_saved() != before
    }

    /// Whether `id` of `resource` is held.
    pub fn is_held(&self, resource: &str, id: &str) -> bool {
        self.held.get(resource).is_some_and(|m| m.contains_key(id))
    }

    /// The form kept in the checkpoint.
    pub fn to_saved(&self) -> BTreeMap<String, Vec<HeldDevice>> {
        self.held
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(r, m)| {
                let v = m
                    .iter()
                    .map(|(id, h)| HeldDevice {
                        id: id.clone(),
                        pci_address: h.pci_address,
                    })
                    .collect();
                (r.clone(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "intel.com/sriov";

    fn dev(id: &str) -> (String, Option<PciAddress>) {
        (id.to_owned(), id.parse().ok())
    }

    fn listed(ids: &[&str]) -> Listed {
        [(R.to_owned(), ids.iter().map(|s| s.to_string()).collect())].into()
    }

    fn ours() -> BTreeSet<String> {
        [R.to_owned()].into()
    }

    #[test]
    fn allocated_devices_stay_held_until_podresources_stops_listing_them() {
        let t0 = Instant::now();
        let mut h = Holdings::new(&BTreeMap::new(), Duration::from_secs(60));
        h.allocate(R, &[dev("0000:13:10.0"), dev("0000:13:10.2")], t0);
        // Not yet listed, within the grace period: kept.
        assert!(!h.observe(
            &listed(&[]),
            &ours(),
            t0 + Duration::from_secs(5),
            |_, _| None
        ));
        assert!(h.is_held(R, "0000:13:10.0"));
        // Listed: kept past the grace period.
        h.observe(
            &listed(&["0000:13:10.0"]),
            &ours(),
            t0 + Duration::from_secs(61),
            |_, _| None,
        );
        assert!(h.is_held(R, "0000:13:10.0"));
        assert!(!h.is_held(R, "0000:13:10.2"), "never listed, grace over");
        // The pod is gone.
        assert!(h.observe(
            &listed(&[]),
            &ours(),
            t0 + Duration::from_secs(62),
            |_, _| None
        ));
        assert!(h.to_saved().is_empty());
    }

    #[test]
    fn a_listed_device_goes_with_its_pod_even_within_the_grace_period() {
        // A pod that lives shorter than the grace period: once PodResources
        // has listed its device, the first List without it frees it.
        let t0 = Instant::now();
        let mut h = Holdings::new(&BTreeMap::new(), Duration::from_secs(120));
        h.allocate(R, &[dev("0000:13:10.0")], t0);
        let at = |s| t0 + Duration::from_secs(s);
        h.observe(&listed(&["0000:13:10.0"]), &ours(), at(2), |_, _| None);
        assert!(h.is_held(R, "0000:13:10.0"));
        assert!(h.observe(&listed(&[]), &ours(), at(30), |_, _| None));
        assert!(!h.is_held(R, "0000:13:10.0"));
        // Allocated again to a new pod: the grace applies again until listed.
        h.allocate(R, &[dev("0000:13:10.0")], at(31));
        assert!(!h.observe(&listed(&[]), &ours(), at(33), |_, _| None));
        assert!(h.is_held(R, "0000:13:10.0"));
    }

    #[test]
    fn a_restart_keeps_saved_holdings_until_podresources_answers() {
        let saved: BTreeMap<String, Vec<HeldDevice>> = [(
            R.to_owned(),
            vec![HeldDevice {
                id: "0000:13:10.0".into(),
                pci_address: "0000:13:10.0".parse().ok(),
            }],
        )]
        .into();
        let mut h = Holdings::new(&saved, DEFAULT_GRACE);
        assert_eq!(h.to_saved(), saved);
        // PodResources lists a device the checkpoint lost (a crash between
        // Allocate and the save): it is held again, with its address.
        let now = Instant::now();
        let changed = h.observe(
            &listed(&["0000:13:10.0", "0000:13:10.2"]),
            &ours(),
            now,
            |r, id| (r == R).then(|| id.parse().ok()).flatten(),
        );
        assert!(changed);
        assert_eq!(h.to_saved()[R][1].pci_address, "0000:13:10.2".parse().ok());
        // Other resources are left alone.
        let mut other = listed(&["0000:13:10.0", "0000:13:10.2"]);
        other.insert("nvidia.com/gpu".into(), ["GPU-1".to_owned()].into());
        assert!(!h.observe(&other, &ours(), now, |_, _| None));
        assert!(!h.is_held("nvidia.com/gpu", "GPU-1"));
    }
}
