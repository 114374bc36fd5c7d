//! Allocation manager: decides with [`crate::alloc`], persists with
//! [`crate::checkpoint`] before applying through the [`Cpusets`] seam
//! ([`crate::enforce::Cgroups`] on a real node), and reconciles the
//! checkpoint with the live cgroups on start.
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
//! A kill inside a checkpoint save needs no repair: the new file is written
//! to a temporary name, synced and renamed over the old one, so the
//! checkpoint is always the old one or the new one, never a mix (a leftover
//! temporary file is never read).
//!
//! Ids: an exclusive allocation is `a<n>`, a shared-pool one `s<n>` (one
//! counter), so the kind of a `griffin/<id>` cgroup is known without the
//! checkpoint.
//!
//! Reconcile (on open): verify the checkpoint; if it is corrupt it is kept
//! aside and the state is rebuilt from `checkpoint.prev` and the live
//! `griffin/*` cgroups (never a refusal to start). Entries naming a cgroup
//! outside the cgroup root or inside `griffin/` are reported and dropped.
//! Then: finish pending cleanups, adopt (after a rebuild) or remove
//! (otherwise) `griffin/*` cgroups the state does not know, and re-apply
//! allocations whose cgroup, target cgroup or process has drifted (shared
//! consumers against the current shared pool). A failure on one entry is
//! reported and retried on the next open; it never stops the others or the
//! command. An empty shared pool (every online CPU exclusive: possible only
//! if CPUs went offline, `--reserved` changed or an older Griffin left it)
//! is a state, not an error: shared consumers keep the CPUs they have until
//! a CPU comes back to the pool. Every action is reported.

use std::path::Path;

use griffin_devices::Topology;

use crate::alloc::{self, Placement, Rejection, Request};
use crate::checkpoint::{Checkpoint, CheckpointError, Lock, Store, Target};
use crate::cpuset::CpuSet;
use crate::enforce::{self, CgroupCpuset, Cgroups, Cpusets, EnforceError, Exclusive, GRIFFIN_DIR};

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
/// directory for as long as it lives. Generic over the cpuset seam: the
/// kernel's [`Cgroups`] by default.
#[derive(Debug)]
pub struct Manager<C: Cpusets = Cgroups> {
    topo: Topology,
    store: Store,
    cgroups: C,
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

/// True for the id of a shared-pool allocation (`s<n>`).
fn is_shared_id(id: &str) -> bool {
    id.strip_prefix('s')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The number in an id (`a12` or `s12`: 12).
fn id_number(id: &str) -> Option<u64> {
    id.strip_prefix(['a', 's'])?.parse().ok()
}

/// Why `id` cannot name a cgroup below `griffin/`, if it cannot.
fn bad_id(id: &str) -> Option<String> {
    if id.contains('/') || enforce::check_path(id).is_err() {
        return Some(format!(
            "allocation id {id:?} is not a single cgroup name below {GRIFFIN_DIR}/"
        ));
    }
    None
}

/// Why `target` cannot be enforced, if it cannot: a cgroup path must stay
/// below the cgroup root and outside Griffin's own `griffin/` tree (whose
/// CPUs Griffin hands out itself: confining it would starve every later
/// exclusive allocation).
pub fn bad_target(target: &Target) -> Option<String> {
    let p = target.cgroup()?;
    if enforce::check_path(p).is_err() {
        return Some(format!(
            "cgroup {p:?} must be relative and stay below the cgroup root"
        ));
    }
    if inside(p, GRIFFIN_DIR) {
        return Some(format!(
            "cgroup {p:?} is inside Griffin's own {GRIFFIN_DIR}/ tree"
        ));
    }
    None
}

/// True when cgroup path `p` is `top` or below it.
fn inside(p: &str, top: &str) -> bool {
    p == top || p.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

impl<C: Cpusets> Manager<C> {
    /// Opens the state directory (taking its lock, waiting for another
    /// holder), loads and reconciles.
    pub fn open(topo: Topology, state_dir: &Path, cgroups: C, reserved: CpuSet) -> Result<Self> {
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

    /// The cpuset seam.
    pub fn cgroups(&self) -> &C {
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
    /// pool for a shared allocation; `None` for a shared allocation while
    /// the shared pool is empty (it keeps what it has).
    fn cpus_for(&self, p: &Placement) -> Option<CpuSet> {
        if p.cpus.is_empty() {
            Some(self.shared_pool()).filter(|s| !s.is_empty())
        } else {
            Some(p.cpus.clone())
        }
    }

    fn mems_for(&self, p: &Placement) -> Vec<u32> {
        if p.mems.is_empty() {
            self.all_mems()
        } else {
            p.mems.clone()
        }
    }

    fn apply_one(&self, id: &str) -> std::result::Result<(), EnforceError> {
        let a = &self.cp.state.allocations[id];
        let Some(cpus) = self.cpus_for(&a.placement) else {
            tracing::warn!("allocation {id}: the shared pool is empty; it keeps its CPUs");
            return Ok(());
        };
        let mems = self.mems_for(&a.placement);
        let own = Cgroups::allocation_path(id);
        self.cgroups.apply(&own, &cpus, &mems)?;
        let target = self.cp.targets.get(id).unwrap_or(&Target::None);
        let isolated = a.request.options.isolated_partition;
        if isolated && !matches!(target, Target::Container(_)) {
            self.cgroups
                .isolate(&own, &cpus, &self.exclusive_above(&own))?;
        }
        match target {
            Target::None => {}
            Target::Cgroup(path) => self.cgroups.apply(path, &cpus, &mems)?,
            Target::Container(path) => {
                // A cgroup made later (the allocation decided at the
                // container's creation) gets its partition then
                // ([`Manager::reapply`]).
                if self.cgroups.apply_existing(path, &cpus, &mems)? && isolated {
                    self.cgroups
                        .isolate(path, &cpus, &self.exclusive_above(path))?;
                }
            }
            Target::Pid(pid) => {
                if self.cgroups.process_exists(*pid) {
                    self.cgroups.add_process(&own, *pid)?;
                    self.cgroups.pin_threads(*pid, &cpus)?;
                    if let Err(e) = self.cgroups.migrate_memory(*pid, &self.all_mems(), &mems) {
                        tracing::warn!("allocation {id}: {}", griffin_devices::Chain(&e));
                    }
                }
            }
        }
        Ok(())
    }

    fn shared_ids(&self) -> Vec<String> {
        self.cp
            .state
            .allocations
            .values()
            .filter(|a| a.placement.cpus.is_empty())
            .map(|a| a.id.clone())
            .collect()
    }

    /// Brings every shared consumer (an allocation of 0 exclusive CPUs) to
    /// the current shared pool.
    fn update_shared(&self) -> std::result::Result<(), EnforceError> {
        for id in self.shared_ids() {
            self.apply_one(&id)?;
        }
        Ok(())
    }

    /// The cgroups above `rel` (below the root, top down), each with every
    /// CPU of the isolated partitions below it: an isolated allocation's
    /// partition is its container's cgroup, else its own.
    fn exclusive_above(&self, rel: &str) -> Vec<Exclusive> {
        let partitions: Vec<(String, &CpuSet)> = self
            .cp
            .state
            .allocations
            .values()
            .filter(|a| a.request.options.isolated_partition)
            .map(|a| {
                let at = match self.cp.targets.get(&a.id) {
                    Some(Target::Container(p)) => p.clone(),
                    _ => Cgroups::allocation_path(&a.id),
                };
                (at, &a.placement.cpus)
            })
            .collect();
        let mut out = Vec::new();
        let mut above = String::new();
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !above.is_empty() {
                above.push('/');
            }
            above.push_str(part);
            let mut cpus = CpuSet::new();
            for (p, c) in &partitions {
                if p.starts_with(&format!("{above}/")) {
                    cpus.union_with(c);
                }
            }
            out.push((above.clone(), cpus));
        }
        out
    }

    fn cleanup(&self, id: &str, target: &Target) -> std::result::Result<(), EnforceError> {
        // Leaving an isolated partition first gives the CPUs back to the
        // other cpusets (the allocation is already out of the state).
        let own = Cgroups::allocation_path(id);
        let partition = match target {
            Target::Container(p) => p,
            _ => &own,
        };
        self.cgroups
            .unisolate(partition, &self.exclusive_above(partition))?;
        let pool = self.shared_pool();
        match target {
            Target::None => {}
            Target::Cgroup(path) => {
                if !pool.is_empty() && self.cgroups.read(path)?.is_some() {
                    self.cgroups.apply(path, &pool, &self.all_mems())?;
                }
            }
            Target::Container(path) => {
                if !pool.is_empty() {
                    self.cgroups.apply_existing(path, &pool, &self.all_mems())?;
                }
            }
            Target::Pid(pid) => {
                if self.cgroups.process_exists(*pid) && !pool.is_empty() {
                    // Leaving Griffin's cgroup puts it back in the root's.
                    let _ = self.cgroups.pin_threads(*pid, &pool);
                }
            }
        }
        self.cgroups.remove(&Cgroups::allocation_path(id))
    }

    /// Reports a failure or a damaged entry (logged as a warning).
    fn warn(&mut self, msg: String) {
        tracing::warn!("reconcile: {msg}");
        self.report.push(msg);
    }

    /// Reports an action (logged as information).
    fn note(&mut self, msg: String) {
        tracing::info!("reconcile: {msg}");
        self.report.push(msg);
    }

    /// Drops checkpoint entries that name a cgroup outside the cgroup root
    /// or inside `griffin/` (a damaged or hand-edited checkpoint): reported,
    /// never followed. Returns whether anything changed.
    fn sanitise(&mut self) -> bool {
        let mut changed = false;
        let pending = std::mem::take(&mut self.cp.pending_cleanup);
        for (id, target) in pending {
            if let Some(why) = bad_id(&id).or_else(|| bad_target(&target)) {
                self.warn(format!("dropped the pending cleanup of {id:?}: {why}"));
                changed = true;
            } else {
                self.cp.pending_cleanup.push((id, target));
            }
        }
        let bad: Vec<(String, String)> = self
            .cp
            .state
            .allocations
            .keys()
            .filter_map(|id| bad_id(id).map(|w| (id.clone(), w)))
            .collect();
        for (id, why) in bad {
            self.cp.state.release(&id);
            self.cp.targets.remove(&id);
            self.warn(format!("dropped allocation {id:?}: {why}"));
            changed = true;
        }
        let bad: Vec<(String, String)> = self
            .cp
            .targets
            .iter()
            .filter_map(|(id, t)| bad_target(t).map(|w| (id.clone(), w)))
            .collect();
        for (id, why) in bad {
            self.cp.targets.insert(id.clone(), Target::None);
            self.warn(format!(
                "allocation {id}: target dropped, only its own cgroup is enforced: {why}"
            ));
            changed = true;
        }
        changed
    }

    /// After a rebuild: takes over a live `griffin/<id>` the state does not
    /// know, if it can be an allocation (a shared one by its id; an
    /// exclusive one if its CPUs are free and leave the shared pool some).
    fn adopt(&mut self, id: &str, cg: &CgroupCpuset) -> Result<bool> {
        let shared = is_shared_id(id);
        if !shared {
            let mut pool_after = self.shared_pool();
            pool_after.subtract(&cg.cpus);
            let free = !cg.cpus.intersects(&self.cp.state.exclusive())
                && !cg.cpus.intersects(&self.cp.state.reserved)
                && cg.cpus.is_subset(&CpuSet::from(&self.topo.online_cpus));
            if cg.cpus.is_empty() || !free || pool_after.is_empty() {
                return Ok(false);
            }
        }
        let placement = Placement {
            cpus: if shared {
                CpuSet::new()
            } else {
                cg.cpus.clone()
            },
            mems: cg.mems.clone(),
            devices: vec![],
            memory_bytes: 0,
            reasons: vec!["adopted from its live cgroup after the checkpoint was lost".into()],
            cost: 0,
        };
        let req = Request {
            cpus: placement.cpus.len() as u32,
            ..Default::default()
        };
        self.cp.state.commit(id.to_owned(), req, placement)?;
        let pids = self.cgroups.processes(&Cgroups::allocation_path(id))?;
        let target = pids.first().map_or(Target::None, |p| Target::Pid(*p));
        self.cp.targets.insert(id.to_owned(), target);
        self.note(if shared {
            format!(
                "adopted shared-pool allocation {id} (nodes {:?}) from its cgroup; its workload cgroup is unknown",
                cg.mems
            )
        } else {
            format!(
                "adopted allocation {id} (CPUs {}, nodes {:?}) from its cgroup; its devices and workload cgroup are unknown",
                cg.cpus, cg.mems
            )
        });
        if let Some(n) = id_number(id) {
            self.cp.next_id = self.cp.next_id.max(n + 1);
        }
        Ok(true)
    }

    /// Why allocation `id` needs re-applying, if it does.
    fn drift(
        &self,
        id: &str,
        live: &[(String, CgroupCpuset)],
    ) -> std::result::Result<Option<String>, EnforceError> {
        let p = &self.cp.state.allocations[id].placement;
        let Some(want) = self.cpus_for(p) else {
            return Ok(None);
        };
        let mems = self.mems_for(p);
        let Some((_, have)) = live.iter().find(|(l, _)| l == id) else {
            return Ok(Some("its cgroup was missing".into()));
        };
        if have.cpus != want {
            return Ok(Some(format!("CPUs had drifted to {}", have.cpus)));
        }
        if have.mems != mems {
            return Ok(Some(format!("memory nodes had drifted to {:?}", have.mems)));
        }
        Ok(match self.cp.targets.get(id) {
            Some(Target::Container(t)) => match self.cgroups.read(t)? {
                // The container is gone: its pod's release is due, not a repair.
                None => None,
                Some(c) if c.cpus != want => {
                    Some(format!("its container cgroup {t} had CPUs {}", c.cpus))
                }
                Some(_) => None,
            },
            Some(Target::Cgroup(t)) => match self.cgroups.read(t)? {
                None => Some(format!("its target cgroup {t} was missing")),
                Some(c) if c.cpus != want => {
                    Some(format!("its target cgroup {t} had CPUs {}", c.cpus))
                }
                Some(_) => None,
            },
            Some(Target::Pid(pid)) if self.cgroups.process_exists(*pid) => {
                let own = Cgroups::allocation_path(id);
                if !self.cgroups.processes(&own)?.contains(pid) {
                    Some(format!("process {pid} was not in its cgroup"))
                } else {
                    // Kernels since 6.2 keep a pinned process's mask when its
                    // cgroup grows: a kill between the two leaves it narrow.
                    let aff = self.cgroups.affinity(*pid)?;
                    (aff != want).then(|| format!("process {pid} ran on CPUs {aff}"))
                }
            }
            _ => None,
        })
    }

    fn reconcile(&mut self, rebuilt: bool) -> Result<()> {
        let mut changed = rebuilt | self.sanitise();
        // 1. Finish cleanups a crash interrupted.
        for (id, target) in std::mem::take(&mut self.cp.pending_cleanup) {
            match self.cleanup(&id, &target) {
                Ok(()) => self.note(format!("finished the release of {id}")),
                Err(e) => {
                    self.warn(format!(
                        "the release of {id} is still unfinished: {}",
                        griffin_devices::Chain(&e)
                    ));
                    self.cp.pending_cleanup.push((id, target));
                }
            }
            changed = true;
        }
        // 2. Live Griffin cgroups the state does not know.
        let live = self.cgroups.allocations()?;
        for (id, cg) in &live {
            if self.cp.state.allocations.contains_key(id) {
                continue;
            }
            changed = true;
            if rebuilt && bad_id(id).is_none() && self.adopt(id, cg)? {
                continue;
            }
            match self.cgroups.remove(&Cgroups::allocation_path(id)) {
                Ok(()) => self.note(format!(
                    "removed cgroup {GRIFFIN_DIR}/{id}: no allocation of that id"
                )),
                Err(e) => self.warn(format!(
                    "cgroup {GRIFFIN_DIR}/{id} has no allocation and could not be removed: {}",
                    griffin_devices::Chain(&e)
                )),
            }
        }
        // 3. Allocations whose cgroups, target or process drifted; shared
        // consumers against the current shared pool.
        let shared = self.shared_ids();
        if !shared.is_empty() && self.shared_pool().is_empty() {
            self.warn(format!(
                "the shared pool is empty (every online CPU is allocated exclusively): shared allocations {} keep their CPUs until one is released",
                shared.join(", ")
            ));
        }
        let ids: Vec<String> = self.cp.state.allocations.keys().cloned().collect();
        for id in ids {
            let why = match self.drift(&id, &live) {
                Ok(None) => continue,
                Ok(Some(why)) => why,
                Err(e) => format!(
                    "its state could not be read ({})",
                    griffin_devices::Chain(&e)
                ),
            };
            match self.apply_one(&id) {
                Ok(()) => self
                    .report
                    .push(format!("re-applied allocation {id}: {why}")),
                Err(e) => self.warn(format!(
                    "allocation {id} could not be re-applied ({why}): {}",
                    griffin_devices::Chain(&e)
                )),
            }
            changed = true;
        }
        if changed {
            self.store.save(&self.cp)?;
        }
        Ok(())
    }

    /// Refuses a target that cannot be enforced or is already another
    /// allocation's: a process with an allocation (release it first), or a
    /// cgroup equal to, inside or above another allocation's target cgroup
    /// (one would overwrite the other's CPUs).
    fn check_target(&self, target: &Target) -> Result<()> {
        if let Some(why) = bad_target(target) {
            return Err(Rejection(why).into());
        }
        for (id, t) in &self.cp.targets {
            let clash = match (target, t) {
                (Target::Pid(a), Target::Pid(b)) => a == b,
                (a, b) => match (a.cgroup(), b.cgroup()) {
                    (Some(a), Some(b)) => inside(a, b) || inside(b, a),
                    _ => false,
                },
            };
            if clash {
                return Err(Rejection(match target {
                    Target::Pid(p) => {
                        format!("process {p} already has allocation {id}; release it first")
                    }
                    Target::Cgroup(p) | Target::Container(p) => format!(
                        "cgroup {p} overlaps the target cgroup of allocation {id}; release it first"
                    ),
                    Target::None => unreachable!("only pids and cgroups clash"),
                })
                .into());
            }
        }
        if let Target::Pid(pid) = target {
            if !self.cgroups.process_exists(*pid) {
                return Err(ManagerError::NoProcess(*pid));
            }
        }
        Ok(())
    }

    /// Why `req` on `target` is refused before any placement (the checks
    /// [`Manager::allocate`] makes first), if it is.
    pub fn refusal(&self, req: &Request, target: &Target) -> Option<String> {
        if !req.options.isolated_partition {
            return None;
        }
        if matches!(target, Target::Cgroup(_)) {
            return Some("an isolated partition confines a process (--pid) or a container, not another cgroup: that cgroup would lose its CPUs to the partition".into());
        }
        if self.cgroups.version() != enforce::Version::V2 {
            return Some("isolated partitions need cgroup v2".into());
        }
        if !self.cgroups.remote_partitions() {
            return Some("isolated partitions need cpuset.cpus.exclusive (remote partitions, Linux 6.7 or later)".into());
        }
        if req.cpus == 0 {
            return Some("an isolated partition needs exclusive CPUs".into());
        }
        None
    }

    /// Applies allocation `id` to its cgroups again (a container's cgroup
    /// that appeared after the allocation was made for it gets its
    /// isolated partition).
    pub fn reapply(&mut self, id: &str) -> Result<()> {
        if !self.cp.state.allocations.contains_key(id) {
            return Err(ManagerError::NotFound(id.to_owned()));
        }
        Ok(self.apply_one(id)?)
    }

    /// Decides, persists and applies an allocation; returns its view.
    pub fn allocate(&mut self, req: Request, target: Target) -> Result<AllocationView> {
        self.check_target(&target)?;
        if let Some(why) = self.refusal(&req, &target) {
            return Err(Rejection(why).into());
        }
        let placement = alloc::allocate(&self.topo, &self.cp.state, &req)?;
        let kind = if placement.cpus.is_empty() { 's' } else { 'a' };
        let id = format!("{kind}{:06}", self.cp.next_id);
        self.cp.next_id += 1;
        self.cp.state.commit(id.clone(), req, placement)?;
        self.cp.targets.insert(id.clone(), target);
        self.store.save(&self.cp)?;
        if let Err(e) = self.apply_one(&id).and_then(|()| self.update_shared()) {
            tracing::error!(
                "allocation {id} could not be applied, rolling back: {}",
                griffin_devices::Chain(&e)
            );
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

    /// Records the devices pods hold through device plugins (saved only
    /// when they changed); returns whether they did. A device that an
    /// allocation also holds is reported: the kubelet handed it out anyway.
    pub fn set_plugin_devices(
        &mut self,
        devices: std::collections::BTreeMap<String, Vec<alloc::HeldDevice>>,
    ) -> Result<bool> {
        if self.cp.state.plugin_devices == devices {
            return Ok(false);
        }
        for a in self.cp.state.allocations.values() {
            for d in devices.values().flatten() {
                if d.pci_address
                    .is_some_and(|p| a.placement.devices.contains(&p))
                {
                    tracing::warn!(device = %d.id, allocation = %a.id, "a pod holds a device of an allocation");
                }
            }
        }
        self.cp.state.plugin_devices = devices;
        self.store.save(&self.cp)?;
        Ok(true)
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

    /// The CPUs and memory nodes an allocation's cgroups get now: its own,
    /// or for a shared one the shared pool and every memory node (`None`:
    /// no such allocation, or a shared one while the pool is empty).
    pub fn effective(&self, id: &str) -> Option<(CpuSet, Vec<u32>)> {
        let p = &self.cp.state.allocations.get(id)?.placement;
        Some((self.cpus_for(p)?, self.mems_for(p)))
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

/// Test helpers: a node on the in-memory seam and the invariants.
#[cfg(test)]
mod tests_support {
    use std::collections::BTreeSet;

    use super::*;
    use crate::enforce::Version;
    use crate::fake::FakeCpusets;

    pub(super) fn machine(cpus: u32) -> Topology {
        griffin_tests::synthetic::Shape {
            packages: 1,
            nodes_per_package: 1,
            cores_per_node: cpus,
            threads: 1,
            devices_per_node: vec![],
            memory_per_node: 1 << 30,
        }
        .topology()
    }

    /// A node: topology, in-memory cgroups and processes, state directory.
    pub(super) struct Node {
        pub(super) topo: Topology,
        pub(super) fake: FakeCpusets,
        pub(super) dir: tempfile::TempDir,
    }

    impl Node {
        pub(super) fn new(version: Version, cpus: u32) -> Self {
            let topo = machine(cpus);
            let fake = FakeCpusets::new(version, CpuSet::from(&topo.online_cpus), vec![0]);
            Self {
                topo,
                fake,
                dir: tempfile::tempdir().unwrap(),
            }
        }

        pub(super) fn try_open(&self) -> Result<Manager<FakeCpusets>> {
            Manager::open(
                self.topo.clone(),
                self.dir.path(),
                self.fake.clone(),
                CpuSet::new(),
            )
        }

        pub(super) fn open(&self) -> Manager<FakeCpusets> {
            self.try_open().unwrap()
        }
    }

    pub(super) fn excl(cpus: u32) -> Request {
        Request {
            cpus,
            ..Default::default()
        }
    }

    pub(super) fn pool(m: &Manager<FakeCpusets>) -> CpuSet {
        m.checkpoint().state.shared_pool(m.topology())
    }

    /// The invariants: no CPU in two allocations, the shared pool never
    /// empty, exactly one `griffin/<id>` per allocation and no other, every
    /// allocation enforced as decided (its cgroup, its target cgroup, its
    /// process: in its cgroup, pinned to its CPUs; shared consumers on the
    /// shared pool), no cleanup left, every confirmed allocation present,
    /// and reconcile reported no failure.
    pub(super) fn check(m: &Manager<FakeCpusets>, confirmed: &BTreeSet<String>, ctx: &str) {
        let f = m.cgroups();
        let ctx = format!("{ctx}\nsteps:\n  {}", f.log().join("\n  "));
        let state = &m.checkpoint().state;
        let mut seen = CpuSet::new();
        for a in state.allocations.values() {
            assert!(
                !a.placement.cpus.intersects(&seen),
                "{ctx}: CPUs of {} in two allocations",
                a.id
            );
            seen.union_with(&a.placement.cpus);
        }
        let pool = pool(m);
        assert!(!pool.is_empty(), "{ctx}: the shared pool is empty");
        let ids: BTreeSet<String> = state.allocations.keys().cloned().collect();
        let live: BTreeSet<String> = f
            .cgroups()
            .into_iter()
            .filter_map(|c| c.strip_prefix("griffin/").map(str::to_owned))
            .collect();
        assert_eq!(live, ids, "{ctx}: griffin/* cgroups and allocations differ");
        for id in confirmed {
            assert!(ids.contains(id), "{ctx}: confirmed allocation {id} lost");
        }
        for a in state.allocations.values() {
            let want = if a.placement.cpus.is_empty() {
                pool.clone()
            } else {
                a.placement.cpus.clone()
            };
            let own = Cgroups::allocation_path(&a.id);
            assert_eq!(f.read(&own).unwrap().unwrap().cpus, want, "{ctx}: {own}");
            match &m.checkpoint().targets[&a.id] {
                Target::None => {}
                Target::Cgroup(p) | Target::Container(p) => {
                    assert_eq!(f.read(p).unwrap().unwrap().cpus, want, "{ctx}: {p}");
                    for (pid, cg, aff) in f.all_processes() {
                        if cg == *p || cg.starts_with(&format!("{p}/")) {
                            assert_eq!(aff, want, "{ctx}: process {pid} in {cg}");
                        }
                    }
                }
                Target::Pid(pid) => {
                    if let Some((cg, aff)) = f.process(*pid) {
                        assert_eq!(cg, own, "{ctx}: cgroup of process {pid}");
                        assert_eq!(aff, want, "{ctx}: affinity of process {pid}");
                    }
                }
            }
            if a.request.options.isolated_partition {
                assert!(f.is_isolated(&own), "{ctx}: {own} is not isolated");
            }
        }
        assert!(
            m.checkpoint().pending_cleanup.is_empty(),
            "{ctx}: cleanups left"
        );
        for r in &m.report {
            assert!(
                !r.contains("could not") && !r.contains("unfinished") && !r.contains("dropped"),
                "{ctx}: reconcile failed: {r}"
            );
        }
    }

    /// Every command still works: list, a shared and an exclusive
    /// allocation (if a CPU can be had), their release.
    pub(super) fn commands_work(m: &mut Manager<FakeCpusets>, ctx: &str) {
        let n = m.list().len();
        let s = m.allocate(Request::default(), Target::None);
        let s = s.unwrap_or_else(|e| panic!("{ctx}: shared alloc: {}", griffin_devices::Chain(&e)));
        let e = (pool(m).len() > 1).then(|| {
            m.allocate(excl(1), Target::None)
                .unwrap_or_else(|e| panic!("{ctx}: alloc: {}", griffin_devices::Chain(&e)))
        });
        assert_eq!(m.list().len(), n + 1 + usize::from(e.is_some()), "{ctx}");
        for v in [Some(s), e].into_iter().flatten() {
            m.release(&v.id)
                .unwrap_or_else(|e| panic!("{ctx}: release: {}", griffin_devices::Chain(&e)));
        }
        assert_eq!(m.list().len(), n, "{ctx}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

    use super::tests_support::*;
    use super::*;
    use crate::alloc::Options;
    use crate::enforce::Version;
    use crate::fake::{Crash, FakeCpusets};

    /// What a scenario starts from: on 4 CPUs, a shared consumer process,
    /// an exclusive process, a shared workload cgroup with a process in it;
    /// returns the confirmed ids.
    fn setup(n: &Node) -> BTreeSet<String> {
        let f = &n.fake;
        for pid in 100..110 {
            f.spawn(pid);
        }
        f.mkdir("pods/shared");
        f.move_process("pods/shared", 103);
        // A pod with a container cgroup below it (v1 keeps it within
        // the pod's CPUs: confining the pod must shrink it too).
        f.mkdir("pods/x/c");
        f.move_process("pods/x/c", 104);
        let mut m = n.open();
        let mut ids = BTreeSet::new();
        for (r, t) in [
            (Request::default(), Target::Pid(100)),
            (excl(1), Target::Pid(101)),
            (Request::default(), Target::Cgroup("pods/shared".into())),
        ] {
            ids.insert(m.allocate(r, t).unwrap().id);
        }
        check(&m, &ids, "setup");
        ids
    }

    type Op = fn(&mut Manager<FakeCpusets>, &BTreeSet<String>) -> Result<Option<String>>;

    fn by_target(m: &Manager<FakeCpusets>, t: &Target) -> String {
        let (id, _) = m
            .checkpoint()
            .targets
            .iter()
            .find(|(_, x)| *x == t)
            .unwrap();
        id.clone()
    }

    /// The operations crashed at every step; each returns the id it
    /// allocated, or released (then prefixed `-`).
    fn ops(version: Version) -> Vec<(&'static str, Op)> {
        let mut v: Vec<(&'static str, Op)> = vec![
            ("alloc exclusive pid", |m, _| {
                Ok(Some(m.allocate(excl(1), Target::Pid(102))?.id))
            }),
            ("alloc exclusive cgroup", |m, _| {
                Ok(Some(
                    m.allocate(excl(1), Target::Cgroup("pods/x".into()))?.id,
                ))
            }),
            ("alloc exclusive reservation", |m, _| {
                Ok(Some(m.allocate(excl(2), Target::None)?.id))
            }),
            ("alloc shared pid", |m, _| {
                Ok(Some(m.allocate(Request::default(), Target::Pid(105))?.id))
            }),
            ("release exclusive pid", |m, _| {
                let id = by_target(m, &Target::Pid(101));
                m.release(&id)?;
                Ok(Some(format!("-{id}")))
            }),
            ("release shared pid", |m, _| {
                let id = by_target(m, &Target::Pid(100));
                m.release(&id)?;
                Ok(Some(format!("-{id}")))
            }),
            ("release shared cgroup", |m, _| {
                let id = by_target(m, &Target::Cgroup("pods/shared".into()));
                m.release(&id)?;
                Ok(Some(format!("-{id}")))
            }),
        ];
        if version == Version::V2 {
            v.push(("alloc isolated", |m, _| {
                let r = Request {
                    cpus: 1,
                    options: Options {
                        isolated_partition: true,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                Ok(Some(m.allocate(r, Target::Pid(106))?.id))
            }));
        }
        v
    }

    /// Runs `f`, telling a simulated crash (true) from a return (false).
    fn crashes(f: impl FnOnce()) -> bool {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => false,
            Err(p) if p.downcast_ref::<Crash>().is_some() => true,
            Err(p) => resume_unwind(p),
        }
    }

    /// The requirement: a crash (SIGKILL) after every single step of
    /// alloc and release, on cgroup v1 and v2; a fresh manager on the same
    /// state directory and cgroups converges to the invariants, and every
    /// command works afterwards. Each crashed run is also crashed again at
    /// every step of the reconcile that repairs it.
    #[test]
    fn a_crash_after_any_step_of_alloc_or_release_converges() {
        for version in [Version::V1, Version::V2] {
            for (name, op) in ops(version) {
                let mut crashed = 0;
                for n in 0.. {
                    let node = Node::new(version, 4);
                    let mut confirmed = setup(&node);
                    node.fake.crash_after(n);
                    let mut m = node.open();
                    let mut out = None;
                    let hit = crashes(|| out = Some(op(&mut m, &confirmed)));
                    drop(m);
                    let ctx = format!("{version:?} {name}, crash after step {n}");
                    if !hit {
                        node.fake.no_crash();
                        let got = out
                            .unwrap()
                            .unwrap_or_else(|e| panic!("{ctx}: {}", griffin_devices::Chain(&e)));
                        let m = node.open();
                        match got {
                            Some(id) if id.starts_with('-') => {
                                confirmed.remove(&id[1..]);
                                assert!(!m.checkpoint().state.allocations.contains_key(&id[1..]));
                            }
                            Some(id) => {
                                confirmed.insert(id);
                            }
                            None => {}
                        }
                        check(
                            &m,
                            &confirmed,
                            &format!("{version:?} {name} without a crash"),
                        );
                        break;
                    }
                    crashed += 1;
                    if name.starts_with("release") {
                        let id = by_target_in(&node, name);
                        confirmed.remove(&id);
                    }
                    // A crash of the repair itself, at every step of it.
                    for k in 0.. {
                        node.fake.crash_after(k);
                        let mut m = None;
                        if !crashes(|| m = Some(node.open())) {
                            node.fake.no_crash();
                            break;
                        }
                    }
                    let mut m = node.open();
                    check(&m, &confirmed, &ctx);
                    commands_work(&mut m, &ctx);
                    check(&m, &confirmed, &format!("{ctx}, after more commands"));
                }
                assert!(crashed >= 3, "{version:?} {name}: only {crashed} steps");
            }
        }
    }

    /// The id a release scenario releases (targets are fixed by `setup`).
    fn by_target_in(node: &Node, name: &str) -> String {
        let cp = Store::open(node.dir.path()).unwrap().load_prev();
        let cp = cp.expect("a release saves twice");
        let t = match name {
            "release exclusive pid" => Target::Pid(101),
            "release shared pid" => Target::Pid(100),
            _ => Target::Cgroup("pods/shared".into()),
        };
        cp.targets
            .iter()
            .find(|(_, x)| **x == t)
            .map(|(id, _)| id.clone())
            .unwrap()
    }
}

#[cfg(test)]
mod regressions {
    use std::collections::BTreeSet;
    use std::fs;

    use super::tests_support::*;
    use super::*;
    use crate::enforce::Version;

    fn rejected(r: Result<AllocationView>) -> String {
        match r {
            Err(ManagerError::Rejected(Rejection(why))) => why,
            other => panic!("not a rejection: {other:?}"),
        }
    }

    /// Issue 14 D2: with A in the shared pool and B on CPU 1 of 2, an
    /// exclusive allocation for C would empty the shared pool (before: it was
    /// decided, saved, and a kill while pinning left a state in which every
    /// later command failed with `EINVAL` pinning A to no CPU). Now it is
    /// refused; and the state an older Griffin left (C holding the last
    /// shared CPU) opens, lists, releases and allocates: A keeps its CPUs
    /// until C's is released, then follows the pool again.
    #[test]
    fn d2_an_empty_shared_pool_is_a_state_not_an_error() {
        for version in [Version::V1, Version::V2] {
            let n = Node::new(version, 2);
            for pid in [1, 2, 3] {
                n.fake.spawn(pid);
            }
            let mut m = n.open();
            let a = m.allocate(Request::default(), Target::Pid(1)).unwrap();
            let b = m.allocate(excl(1), Target::Pid(2)).unwrap();
            let why = rejected(m.allocate(excl(1), Target::Pid(3)));
            assert!(why.contains("keeps at least one"), "{why}");
            // What the old binary, killed inside sched_setaffinity, left.
            let last = pool(&m);
            let placement = Placement {
                cpus: last.clone(),
                mems: vec![0],
                devices: vec![],
                memory_bytes: 0,
                reasons: vec![],
                cost: 0,
            };
            m.cp.state
                .commit("a000009".into(), excl(1), placement)
                .unwrap();
            m.cp.targets.insert("a000009".into(), Target::Pid(3));
            m.store.save(&m.cp).unwrap();
            let own = Cgroups::allocation_path("a000009");
            n.fake.apply(&own, &last, &[0]).unwrap();
            n.fake.add_process(&own, 3).unwrap();
            drop(m);

            let mut m = n
                .try_open()
                .unwrap_or_else(|e| panic!("{version:?}: reopen: {}", griffin_devices::Chain(&e)));
            assert!(
                m.report.iter().any(|r| r.contains("shared pool is empty")),
                "{:?}",
                m.report
            );
            assert_eq!(m.list().len(), 3);
            let (_, aff) = n.fake.process(1).unwrap();
            assert!(!aff.is_empty(), "A keeps CPUs");
            assert!(rejected(m.allocate(Request::default(), Target::None)).contains("empty"));
            assert!(!rejected(m.allocate(excl(1), Target::None)).is_empty());
            m.release("a000009").unwrap();
            let ids = BTreeSet::from([a.id.clone(), b.id.clone()]);
            check(&m, &ids, &format!("{version:?} after the release"));
            assert_eq!(n.fake.process(1).unwrap().1, pool(&m), "A follows the pool");
            commands_work(&mut m, "after D2");
            drop(m);
            check(&n.open(), &ids, &format!("{version:?} reopened"));
        }
    }

    /// Issue 14 D6 on the manager: the exclusive allocation that would take
    /// the last shared CPU is refused, so a shared allocation stays possible
    /// (before: `alloc --cpus 2` of 2 succeeded, then a shared one failed).
    #[test]
    fn d6_the_last_shared_cpu_is_never_handed_out() {
        let n = Node::new(Version::V1, 2);
        let mut m = n.open();
        assert!(rejected(m.allocate(excl(2), Target::None)).contains("keeps at least one"));
        let e = m.allocate(excl(1), Target::None).unwrap();
        let s = m.allocate(Request::default(), Target::None).unwrap();
        assert!(s.id.starts_with('s') && e.id.starts_with('a'));
        assert!(rejected(m.allocate(excl(1), Target::None)).contains("keeps at least one"));
        check(&m, &BTreeSet::from([e.id, s.id]), "d6");
    }

    /// Issue 14 D10: a second allocation for the same process is refused,
    /// naming the first (before: both were made, the first kept its CPU with
    /// an empty cgroup). So is a cgroup target overlapping another's.
    #[test]
    fn d10_the_same_target_twice_is_refused_naming_the_allocation() {
        let n = Node::new(Version::V1, 4);
        n.fake.spawn(7);
        n.fake.mkdir("pods/p1/c1");
        let mut m = n.open();
        let first = m.allocate(Request::default(), Target::Pid(7)).unwrap();
        let why = rejected(m.allocate(excl(1), Target::Pid(7)));
        assert!(
            why.contains(&first.id) && why.contains("process 7"),
            "{why}"
        );
        let pod = m
            .allocate(excl(1), Target::Cgroup("pods/p1".into()))
            .unwrap();
        for t in ["pods/p1", "pods/p1/c1", "pods"] {
            let why = rejected(m.allocate(excl(1), Target::Cgroup(t.into())));
            assert!(why.contains(&pod.id), "{t}: {why}");
        }
        assert_eq!(m.list().len(), 2);
        check(&m, &BTreeSet::from([first.id, pod.id]), "d10 pid twice");
    }

    /// Issue 14 D10: Griffin's own `griffin/` tree (before: accepted, and on
    /// the real kernel later exclusive allocations failed with EBUSY) and
    /// paths leaving the cgroup root are refused as targets.
    #[test]
    fn d10_targets_inside_griffin_or_outside_the_root_are_refused() {
        for version in [Version::V1, Version::V2] {
            let n = Node::new(version, 4);
            let mut m = n.open();
            let e = m.allocate(excl(1), Target::None).unwrap();
            for t in [
                "griffin",
                "griffin/",
                "griffin/a000000",
                "griffin/x/y",
                "../x",
                "/sys/fs/cgroup",
                "a/../../b",
                "./x",
                "",
            ] {
                let why = rejected(m.allocate(Request::default(), Target::Cgroup(t.into())));
                assert!(
                    why.contains("griffin") || why.contains("root"),
                    "{t}: {why}"
                );
            }
            assert_eq!(m.list().len(), 1);
            let e2 = m.allocate(excl(2), Target::None).unwrap();
            check(&m, &BTreeSet::from([e.id, e2.id]), "d10 griffin target");
        }
    }

    /// Issue 14 D4/D10: a checkpoint whose pending cleanups or targets name
    /// cgroups outside the root or inside `griffin/` (before: every command
    /// failed) opens; those entries are reported and dropped, the rest of
    /// reconcile goes on and every command works.
    #[test]
    fn d10_checkpoint_paths_escaping_the_root_are_reported_and_dropped() {
        let n = Node::new(Version::V1, 4);
        n.fake.spawn(5);
        let mut m = n.open();
        let e = m.allocate(excl(1), Target::Pid(5)).unwrap();
        let t = m.allocate(excl(1), Target::None).unwrap();
        m.cp.pending_cleanup = vec![
            ("../../x".into(), Target::None),
            ("a000077".into(), Target::Cgroup("../../y".into())),
            ("a000078".into(), Target::Cgroup("griffin".into())),
            ("a000079".into(), Target::Cgroup("/etc".into())),
        ];
        m.cp.targets
            .insert(t.id.clone(), Target::Cgroup("../../z".into()));
        m.store.save(&m.cp).unwrap();
        drop(m);
        let mut m = n
            .try_open()
            .unwrap_or_else(|e| panic!("{}", griffin_devices::Chain(&e)));
        let dropped = m.report.iter().filter(|r| r.contains("dropped")).count();
        assert_eq!(dropped, 5, "{:?}", m.report);
        assert!(m.checkpoint().pending_cleanup.is_empty());
        assert_eq!(m.checkpoint().targets[&t.id], Target::None);
        assert!(n.fake.cgroups().iter().all(|c| !c.contains("..")));
        commands_work(&mut m, "after dropping");
        drop(m);
        check(&n.open(), &BTreeSet::from([e.id, t.id]), "reopened");
    }

    /// Issue 14 D10: with both checkpoint files lost, the rebuild adopts a
    /// shared-pool consumer as shared (before: as the owner of the shared
    /// pool's CPUs, exclusively), and exclusive ones as exclusive.
    #[test]
    fn d10_a_lost_checkpoint_tells_shared_from_exclusive_cgroups() {
        for version in [Version::V1, Version::V2] {
            let n = Node::new(version, 4);
            n.fake.spawn(100);
            n.fake.spawn(101);
            let mut m = n.open();
            let s = m.allocate(Request::default(), Target::Pid(100)).unwrap();
            let e = m.allocate(excl(1), Target::Pid(101)).unwrap();
            let excl_cpus = e.cpus.clone();
            drop(m);
            for f in ["checkpoint", "checkpoint.prev"] {
                fs::remove_file(n.dir.path().join(f)).unwrap();
            }
            let mut m = n.open();
            assert!(
                m.report
                    .iter()
                    .any(|r| r.contains(&format!("adopted shared-pool allocation {}", s.id))),
                "{:?}",
                m.report
            );
            let list = m.list();
            assert_eq!(list.len(), 2);
            assert!(list[0].id == e.id && list[0].cpus == excl_cpus, "{list:?}");
            assert!(list[1].id == s.id && list[1].cpus.is_empty(), "{list:?}");
            assert_eq!(list[1].target, Target::Pid(100));
            assert_eq!(pool(&m).len(), 3);
            check(&m, &BTreeSet::from([s.id.clone(), e.id.clone()]), "rebuilt");
            commands_work(&mut m, "rebuilt");
            // Ids are not reused after the rebuild.
            let next = m.allocate(Request::default(), Target::None).unwrap();
            assert!(next.id > s.id, "{} after {}", next.id, s.id);
        }
    }

    /// A kill inside a checkpoint save leaves the temporary files of the
    /// write (the new checkpoint, the staged link of the previous one) next
    /// to the old checkpoint: the rename never happened, so the old one is
    /// loaded whole, and the leftovers are never read.
    #[test]
    fn a_kill_inside_a_checkpoint_save_leaves_the_old_checkpoint() {
        let n = Node::new(Version::V1, 4);
        let mut m = n.open();
        let e = m.allocate(excl(1), Target::None).unwrap();
        drop(m);
        let dir = n.dir.path();
        let old = fs::read(dir.join("checkpoint")).unwrap();
        fs::write(dir.join("checkpoint.tmp-4242"), &old[..old.len() / 2]).unwrap();
        fs::write(
            dir.join("checkpoint.prev.tmp-4242"),
            b"griffin-checkpoint v1",
        )
        .unwrap();
        let mut m = n.open();
        assert!(m.report.is_empty(), "{:?}", m.report);
        check(&m, &BTreeSet::from([e.id]), "after a torn save");
        commands_work(&mut m, "after a torn save");
    }
}
