//! Allocation manager: decides with [`crate::alloc`], persists with
//! [`crate::checkpoint`] before applying with [`crate::enforce`], and
//! reconciles the checkpoint with the live cgroups on start.
//!
//! Order of every change (so a crash at any point loses nothing):
//!
//! * allocate: decide → save checkpoint (allocation recorded) → create
//!   `griffin/<id>` and confine the target → update shared consumers. A crash
//!   after the save is repaired by reconcile, which re-applies what is
//!   missing.
//! * release: save checkpoint (allocation gone, cleanup recorded in
//!   `pending_cleanup`) → return the target to the shared pool, remove
//!   `griffin/<id>` → update shared consumers → save (cleanup done).
//!
//! Reconcile (on open): verify the checkpoint; if it is corrupt it is kept
//! aside and the state is rebuilt from `checkpoint.prev` and the live
//! `griffin/*` cgroups (never a refusal to start). Then: finish pending
//! cleanups, re-apply allocations whose cgroups are missing or drifted,
//! adopt (after a rebuild) or remove (otherwise) `griffin/*` cgroups the
//! state does not know, and bring shared consumers to the shared pool. Every
//! action is reported.

use std::path::Path;

use griffin_devices::Topology;

use crate::alloc::{self, Placement, Rejection, Request};
use crate::checkpoint::{Checkpoint, CheckpointError, Lock, Store, Target};
use crate::cpuset::CpuSet;
use crate::enforce::{self, Cgroups, EnforceError};

/// Why a manager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The allocator refused the request.
    #[error("request rejected")]
    Rejected(#[from] Rejection),
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Enforcement failed (the change was rolled back).
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// No such allocation.
    #[error("no allocation {0}")]
    NotFound(String),
    /// The target process does not exist.
    #[error("process {0} does not exist")]
    NoProcess(u32),
}

type Result<T> = std::result::Result<T, ManagerError>;

/// The allocations of one node, with exclusive access to its state
/// directory for as long as it lives.
#[derive(Debug)]
pub struct Manager {
    topo: Topology,
    store: Store,
    cgroups: Cgroups,
    cp: Checkpoint,
    _lock: Lock,
    /// What reconcile did when the manager was opened.
    pub report: Vec<String>,
}

/// An allocation as shown to users.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AllocationView {
    /// Stable id.
    pub id: String,
    /// Exclusive CPUs (empty for a shared-pool allocation).
    pub cpus: CpuSet,
    /// Memory nodes.
    pub mems: Vec<u32>,
    /// Devices.
    pub devices: Vec<griffin_devices::PciAddress>,
    /// Why.
    pub reasons: Vec<String>,
    /// Where it is enforced.
    pub target: Target,
    /// Griffin's cgroup for it, relative to the cgroup root.
    pub cgroup: String,
}

impl Manager {
    /// Opens the state directory (taking its lock, waiting for another
    /// holder), loads and reconciles.
    pub fn open(
        topo: Topology,
        state_dir: &Path,
        cgroups: Cgroups,
        reserved: CpuSet,
    ) -> Result<Self> {
        let store = Store::open(state_dir)?;
        let lock = store.lock()?;
        let mut report = Vec::new();
        let (cp, rebuilt) = match store.load() {
            Ok(Some(cp)) => (cp, false),
            Ok(None) => (Checkpoint::default(), true),
            Err(CheckpointError::Corrupt { path, why, kept }) => {
                let msg = format!(
                    "checkpoint {} is corrupt ({why}); kept as {}; rebuilding from {} and the live cgroups",
                    path.display(),
                    kept.display(),
                    store.prev_path().display()
                );
                tracing::error!("{msg}");
                report.push(msg);
                (store.load_prev().unwrap_or_default(), true)
            }
            Err(e) => return Err(e.into()),
        };
        let mut m = Self {
            topo,
            store,
            cgroups,
            cp,
            _lock: lock,
            report,
        };
        m.cp.state.reserved = reserved;
        m.reconcile(rebuilt)?;
        Ok(m)
    }

    /// The topology decisions are made on.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The persisted state.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.cp
    }

    /// The cgroup hierarchy.
    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    fn shared_pool(&self) -> CpuSet {
        self.cp.state.shared_pool(&self.topo)
    }

    fn all_mems(&self) -> Vec<u32> {
        self.topo
            .numa_nodes
            .iter()
            .filter(|n| n.memory_bytes > 0)
            .map(|n| n.id)
            .collect()
    }

    /// CPUs an allocation's cgroups get: its exclusive CPUs, or the shared
    /// pool for a shared allocation.
    fn cpus_for(&self, p: &Placement) -> CpuSet {
        if p.cpus.is_empty() {
            self.shared_pool()
        } else {
            p.cpus.clone()
        }
    }

    fn apply_one(&self, id: &str) -> std::result::Result<(), EnforceError> {
        let a = &self.cp.state.allocations[id];
        let cpus = self.cpus_for(&a.placement);
        let mems = if a.placement.mems.is_empty() {
            self.all_mems()
        } else {
            a.placement.mems.clone()
        };
        let own = Cgroups::allocation_path(id);
        self.cgroups.apply(&own, &cpus, &mems)?;
        if a.request.options.isolated_partition {
            self.cgroups.isolate(&own, &cpus, &self.isolated_cpus())?;
        }
        match self.cp.targets.get(id).unwrap_or(&Target::None) {
            Target::None => {}
            Target::Cgroup(path) => self.cgroups.apply(path, &cpus, &mems)?,
            Target::Pid(pid) => {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    self.cgroups.add_process(&own, *pid)?;
                    enforce::pin_threads(*pid, &cpus)?;
                    if let Err(e) = enforce::migrate_memory(*pid, &self.all_mems(), &mems) {
                        tracing::warn!("allocation {id}: {e}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Brings every shared consumer (an allocation of 0 exclusive CPUs) to
    /// the current shared pool.
    fn update_shared(&self) -> std::result::Result<(), EnforceError> {
        let shared_ids: Vec<String> = self
            .cp
            .state
            .allocations
            .values()
            .filter(|a| a.placement.cpus.is_empty())
            .map(|a| a.id.clone())
            .collect();
        for id in shared_ids {
            self.apply_one(&id)?;
        }
        Ok(())
    }

    /// CPUs of every allocation that asked for an isolated partition.
    fn isolated_cpus(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for a in self.cp.state.allocations.values() {
            if a.request.options.isolated_partition {
                s.union_with(&a.placement.cpus);
            }
        }
        s
    }

    fn cleanup(&self, id: &str, target: &Target) -> std::result::Result<(), EnforceError> {
        // Leaving an isolated partition first gives the CPUs back to the
        // other cpusets (the allocation is already out of the state).
        self.cgroups
            .unisolate(&Cgroups::allocation_path(id), &self.isolated_cpus())?;
        let pool = self.shared_pool();
        match target {
            Target::None => {}
            Target::Cgroup(path) => {
                if self.cgroups.read(path)?.is_some() {
                    self.cgroups.apply(path, &pool, &self.all_mems())?;
                }
            }
            Target::Pid(pid) => {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    // Leaving Griffin's cgroup puts it back in the root's.
                    let _ = enforce::pin_threads(*pid, &pool);
                }
            }
        }
        self.cgroups.remove(&Cgroups::allocation_path(id))
    }

    fn reconcile(&mut self, rebuilt: bool) -> Result<()> {
        let mut changed = rebuilt;
        // 1. Finish cleanups a crash interrupted.
        for (id, target) in std::mem::take(&mut self.cp.pending_cleanup) {
            self.cleanup(&id, &target)?;
            self.report.push(format!("finished the release of {id}"));
            changed = true;
        }
        // 2. Live Griffin cgroups the state does not know.
        let live = self.cgroups.allocations()?;
        for (id, cg) in &live {
            if self.cp.state.allocations.contains_key(id) {
                continue;
            }
            let overlaps = cg.cpus.intersects(&self.cp.state.exclusive())
                || cg.cpus.intersects(&self.cp.state.reserved);
            if rebuilt
                && !cg.cpus.is_empty()
                && !overlaps
                && cg.cpus != CpuSet::from(&self.topo.online_cpus)
            {
                let placement = Placement {
                    cpus: cg.cpus.clone(),
                    mems: cg.mems.clone(),
                    devices: vec![],
                    memory_bytes: 0,
                    reasons: vec![
                        "adopted from its live cgroup after the checkpoint was lost".into()
                    ],
                    cost: 0,
                };
                let req = Request {
                    cpus: cg.cpus.len() as u32,
                    ..Default::default()
                };
                self.cp.state.commit(id.clone(), req, placement)?;
                let pids = self.cgroups.processes(&Cgroups::allocation_path(id))?;
                let target = pids.first().map_or(Target::None, |p| Target::Pid(*p));
                self.cp.targets.insert(id.clone(), target);
                self.report.push(format!(
                    "adopted allocation {id} (CPUs {}, nodes {:?}) from its cgroup; its devices and workload cgroup are unknown",
                    cg.cpus, cg.mems
                ));
                if let Some(n) = id.strip_prefix("a").and_then(|n| n.parse::<u64>().ok()) {
                    self.cp.next_id = self.cp.next_id.max(n + 1);
                }
            } else {
                self.cgroups.remove(&Cgroups::allocation_path(id))?;
                self.report.push(format!(
                    "removed cgroup griffin/{id}: no allocation of that id"
                ));
            }
            changed = true;
        }
        // 3. Allocations whose cgroups are missing or drifted.
        let ids: Vec<String> = self.cp.state.allocations.keys().cloned().collect();
        for id in ids {
            let want = self.cpus_for(&self.cp.state.allocations[&id].placement);
            let have = live
                .iter()
                .find(|(l, _)| *l == id)
                .map(|(_, c)| c.cpus.clone());
            let target_ok = match self.cp.targets.get(&id) {
                Some(Target::Cgroup(p)) => self.cgroups.read(p)?.is_some_and(|c| c.cpus == want),
                _ => true,
            };
            if have.as_ref() != Some(&want) || !target_ok {
                self.apply_one(&id)?;
                self.report.push(match have {
                    None => format!("re-applied allocation {id}: its cgroup was missing"),
                    Some(h) => format!("re-applied allocation {id}: CPUs had drifted to {h}"),
                });
                changed = true;
            }
        }
        self.update_shared()?;
        if changed {
            self.store.save(&self.cp)?;
        }
        for r in &self.report {
            tracing::info!("reconcile: {r}");
        }
        Ok(())
    }

    /// Decides, persists and applies an allocation; returns its view.
    pub fn allocate(&mut self, req: Request, target: Target) -> Result<AllocationView> {
        if let Target::Pid(pid) = target {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(ManagerError::NoProcess(pid));
            }
        }
        if let Target::Cgroup(path) = &target {
            self.cgroups.path_of(path)?;
            if req.options.isolated_partition {
                return Err(Rejection(
                    "an isolated partition confines a process (--pid), not another cgroup: that cgroup would lose its CPUs to the partition".into(),
                )
                .into());
            }
        }
        if req.options.isolated_partition {
            if self.cgroups.version() != enforce::Version::V2 {
                return Err(Rejection("isolated partitions need cgroup v2".into()).into());
            }
            if req.cpus == 0 {
                return Err(Rejection("an isolated partition needs exclusive CPUs".into()).into());
            }
        }
        let placement = alloc::allocate(&self.topo, &self.cp.state, &req)?;
        let id = format!("a{:06}", self.cp.next_id);
        self.cp.next_id += 1;
        self.cp.state.commit(id.clone(), req, placement)?;
        self.cp.targets.insert(id.clone(), target);
        self.store.save(&self.cp)?;
        if let Err(e) = self.apply_one(&id).and_then(|()| self.update_shared()) {
            tracing::error!("allocation {id} could not be applied, rolling back: {e}");
            self.release(&id)?;
            return Err(e.into());
        }
        Ok(self.view(&id))
    }

    /// Releases an allocation.
    pub fn release(&mut self, id: &str) -> Result<()> {
        self.cp
            .state
            .release(id)
            .ok_or_else(|| ManagerError::NotFound(id.to_owned()))?;
        let target = self.cp.targets.remove(id).unwrap_or(Target::None);
        self.cp
            .pending_cleanup
            .push((id.to_owned(), target.clone()));
        self.store.save(&self.cp)?;
        self.cleanup(id, &target)?;
        self.update_shared()?;
        self.cp.pending_cleanup.retain(|(p, _)| p != id);
        self.store.save(&self.cp)?;
        Ok(())
    }

    /// One allocation as shown to users.
    pub fn view(&self, id: &str) -> AllocationView {
        let a = &self.cp.state.allocations[id];
        AllocationView {
            id: id.to_owned(),
            cpus: a.placement.cpus.clone(),
            mems: a.placement.mems.clone(),
            devices: a.placement.devices.clone(),
            reasons: a.placement.reasons.clone(),
            target: self.cp.targets.get(id).cloned().unwrap_or(Target::None),
            cgroup: Cgroups::allocation_path(id),
        }
    }

    /// Every allocation, by id.
    pub fn list(&self) -> Vec<AllocationView> {
        self.cp
            .state
            .allocations
            .keys()
            .map(|id| self.view(id))
            .collect()
    }
}
