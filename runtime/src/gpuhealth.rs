//! GPU health from NVML's critical XID events.
//!
//! Discovery sees a GPU's driver, not its faults. A GPU that raised a
//! critical XID (a double-bit ECC error, a GPU fallen off the bus, …)
//! keeps its driver bound, so without NVML's events its pool would go on
//! listing it healthy and the kubelet would hand it to the next pod.
//!
//! [`supervise`] keeps NVML watching the pooled NVIDIA GPUs that have a
//! driver: it loads NVML (again and again, with a back-off, while it
//! cannot: the driver may come later), registers those GPUs
//! ([`NvmlEvents`], over `nvml-wrapper`'s `EventSet`), runs [`watch`], and
//! starts over, releasing NVML in between, whenever the topology changes.
//! [`watch`] judges each event with a [`Policy`] and records the GPUs it
//! faults in [`Faults`]; every new fault wakes the pool rebuilds
//! ([`Faults::subscribe`], [`crate::plugin::backend::follow_topology`]),
//! which list a faulted GPU unhealthy
//! ([`crate::pools::Pools::discover_with_faults`]).
//!
//! The policy is the one NVIDIA's device plugin applies, so that swapping
//! plugins changes nothing for pods: XIDs an application causes (13, 31,
//! 43, 45, 68, 109, [`APPLICATION_XIDS`]) leave the GPU healthy; any other
//! critical XID, an XID NVML cannot name, and a GPU lost from the bus make
//! it unhealthy; an event that names no GPU faults every GPU watched; a
//! GPU NVML cannot find or watch is unhealthy. Unlike that plugin, a fault
//! is not for the daemon's life: it is forgotten when a re-discovery finds
//! the GPU gone or without a driver ([`Faults::forget_reset`]), the ways a
//! GPU is reset and comes back. A reset that keeps the driver bound
//! (`nvidia-smi -r`) is not seen: the fault then lasts until the daemon
//! restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use griffin_devices::{DeviceKind, PciAddress, Topology};

/// XIDs NVIDIA's device plugin treats as application errors: they say
/// something about the program that ran, not about the GPU (13 graphics
/// engine exception, 31 memory page fault, 43 channel stopped by a reset,
/// 45 preemptive cleanup, 68 video processor exception, 109 context switch
/// timeout).
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// How long one wait for an event lasts, so that the stop condition is
/// looked at.
const WAIT: Duration = Duration::from_millis(500);

/// Failed waits in a row after which every GPU is faulted and watching
/// ends.
const MAX_FAILED_WAITS: u32 = 3;

/// What a source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuEvent {
    /// A critical XID. `gpu`: `None` when NVML did not say which GPU;
    /// `xid`: `None` when NVML could not name it (its value 999).
    Xid {
        /// The GPU.
        gpu: Option<PciAddress>,
        /// The XID.
        xid: Option<u64>,
    },
    /// A GPU fell off the bus or became inaccessible (`None`: which one is
    /// not known).
    Lost {
        /// The GPU.
        gpu: Option<PciAddress>,
    },
}

/// Where NVML's events come from: [`NvmlEvents`], or a fake in tests.
pub trait EventSource {
    /// The GPUs whose events this source reports.
    fn gpus(&self) -> Vec<PciAddress>;
    /// The next event, or `None` when `timeout` passed without one.
    fn wait(&mut self, timeout: Duration) -> Result<Option<GpuEvent>, GpuHealthError>;
}

/// Errors of GPU health watching.
#[derive(Debug, thiserror::Error)]
pub enum GpuHealthError {
    /// NVML could not be loaded or initialised.
    #[error("NVML ({library})")]
    Init {
        /// The library asked for.
        library: String,
        /// Why.
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    /// An NVML call failed.
    #[error("NVML: {call}")]
    Call {
        /// The call, and the device when it concerns one.
        call: String,
        /// Why.
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
}

/// Which events fault a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// XIDs that leave the GPU healthy.
    pub ignored: BTreeSet<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            ignored: APPLICATION_XIDS.into_iter().collect(),
        }
    }
}

impl Policy {
    /// The GPUs `event` faults among `gpus` (the GPUs watched), each with
    /// the reason (pure).
    pub fn judge(&self, event: &GpuEvent, gpus: &[PciAddress]) -> Vec<(PciAddress, String)> {
        let (gpu, reason) = match *event {
            GpuEvent::Xid { xid: Some(x), .. } if self.ignored.contains(&x) => return Vec::new(),
            GpuEvent::Xid { gpu, xid: Some(x) } => (gpu, format!("critical XID {x}")),
            GpuEvent::Xid { gpu, xid: None } => (gpu, "critical XID NVML cannot name".to_owned()),
            GpuEvent::Lost { gpu } => (gpu, "lost: fallen off the bus".to_owned()),
        };
        match gpu {
            Some(g) => vec![(g, reason)],
            None => gpus
                .iter()
                .map(|g| (*g, format!("{reason} (NVML named no GPU)")))
                .collect(),
        }
    }
}

/// The GPUs found faulty, with why: shared by the watcher, which records,
/// and pool builds, which read.
#[derive(Debug, Clone)]
pub struct Faults(Arc<FaultsInner>);

#[derive(Debug)]
struct FaultsInner {
    map: Mutex<BTreeMap<PciAddress, String>>,
    /// Counts new faults.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self(Arc::new(FaultsInner {
            map: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }))
    }
}

impl Faults {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<PciAddress, String>> {
        self.0.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `gpu` faulty for `reason` (logged) and wakes the
    /// subscribers. False when it already was (the first reason is kept).
    pub fn record(&self, gpu: PciAddress, reason: String) -> bool {
        {
            let mut m = self.map();
            if m.contains_key(&gpu) {
                return false;
            }
            tracing::warn!(%gpu, %reason, "GPU unhealthy");
            m.insert(gpu, reason);
        }
        self.0.changed.send_modify(|n| *n += 1);
        true
    }

    /// Whether every one of `gpus` is faulty.
    pub fn all(&self, gpus: &[PciAddress]) -> bool {
        let m = self.map();
        gpus.iter().all(|g| m.contains_key(g))
    }

    /// Changes with every new fault.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changed.subscribe()
    }

    /// The faults now.
    pub fn snapshot(&self) -> BTreeMap<PciAddress, String> {
        self.map().clone()
    }

    /// Forgets the faults of GPUs that `topo` no longer has or that have
    /// no driver bound: a GPU is reset by unbinding its driver or removing
    /// it, and comes back healthy when rebound. Returns those forgotten
    /// (subscribers are not woken: the caller rebuilds).
    pub fn forget_reset(&self, topo: &Topology) -> Vec<PciAddress> {
        let mut m = self.map();
        let reset: Vec<PciAddress> = m
            .keys()
            .filter(|a| topo.device(**a).is_none_or(|d| d.driver.is_none()))
            .copied()
            .collect();
        for a in &reset {
            m.remove(a);
            tracing::info!(gpu = %a, "GPU reset (gone or unbound): its fault is forgotten");
        }
        reset
    }
}

/// The NVIDIA GPUs among `addrs` (a pool's devices) that have a driver
/// bound in `topo`: those whose health NVML can report.
pub fn nvidia_gpus(
    topo: &Topology,
    addrs: impl IntoIterator<Item = PciAddress>,
) -> Vec<PciAddress> {
    let mut out: Vec<PciAddress> = addrs
        .into_iter()
        .filter(|a| {
            topo.device(*a).is_some_and(|d| {
                d.kind == DeviceKind::Gpu && d.vendor == "10de" && d.driver.is_some()
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Why [`watch`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// `stop()` held.
    Stopped,
    /// Every GPU watched is faulty: nothing is left to watch.
    AllFaulty,
}

/// Waits on `source` until `stop()` holds, recording the GPUs each event
/// faults under `policy` in `faults`. After [`MAX_FAILED_WAITS`] failed
/// waits in a row, every GPU is faulted (NVML can no longer say which are
/// healthy). Returns early once every GPU watched is faulty; an event that
/// faults nothing new is followed by a short pause, so a source that keeps
/// repeating one (a lost GPU) cannot spin.
pub fn watch(
    source: &mut dyn EventSource,
    policy: &Policy,
    faults: &Faults,
    mut stop: impl FnMut() -> bool,
) -> WatchEnd {
    let gpus = source.gpus();
    let mut failed = 0;
    while !stop() {
        if faults.all(&gpus) {
            return WatchEnd::AllFaulty;
        }
        let found = match source.wait(WAIT) {
            Ok(None) => {
                failed = 0;
                continue;
            }
            Ok(Some(ev)) => {
                failed = 0;
                tracing::debug!(?ev, "NVML event");
                policy.judge(&ev, &gpus)
            }
            Err(e) => {
                failed += 1;
                let error = griffin_devices::Chain(&e).to_string();
                if failed < MAX_FAILED_WAITS {
                    tracing::warn!(%error, failed, "waiting for NVML events failed; trying again");
                    std::thread::sleep(WAIT);
                    continue;
                }
                tracing::error!(%error, "waiting for NVML events keeps failing: every GPU watched is unhealthy");
                gpus.iter()
                    .map(|g| (*g, format!("NVML events failing: {error}")))
                    .collect()
            }
        };
        let mut new = false;
        for (gpu, reason) in found {
            new |= faults.record(gpu, reason);
        }
        if !new {
            std::thread::sleep(WAIT / 5);
        }
    }
    WatchEnd::Stopped
}

/// Keeps NVML watching the GPUs `gpus()` names until `stop()`: loads NVML
/// from `library` (while it cannot, again after a back-off doubling from
/// 1 s to 60 s), registers them ([`NvmlEvents::register`]; those NVML
/// cannot find or watch are faulted), and [`watch`]es until `stop()` or
/// `changed()` (the topology changed: NVML is released and everything is
/// done again for the GPUs then named). Runs on the calling thread.
pub fn supervise(
    library: &str,
    policy: &Policy,
    faults: &Faults,
    mut gpus: impl FnMut() -> Vec<PciAddress>,
    mut changed: impl FnMut() -> bool,
    stop: impl Fn() -> bool,
) {
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    // Waits `d` (Duration::MAX: for ever) or until a stop or a change.
    let pause = |d: Duration, changed: &mut dyn FnMut() -> bool| {
        let end = std::time::Instant::now().checked_add(d);
        while end.is_none_or(|e| std::time::Instant::now() < e) && !stop() && !changed() {
            std::thread::sleep(WAIT.min(d));
        }
    };
    let mut backoff = Duration::from_secs(1);
    let mut last_error = String::new();
    while !stop() {
        let want = gpus();
        if want.is_empty() {
            pause(Duration::MAX, &mut changed);
            continue;
        }
        let nvml = match init(library) {
            Ok(n) => n,
            Err(e) => {
                let error = griffin_devices::Chain(&e).to_string();
                if error != last_error {
                    tracing::warn!(%error, retry_s = backoff.as_secs(), "no GPU health events yet: GPUs' health comes from discovery only");
                    last_error = error;
                }
                pause(backoff, &mut changed);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        last_error.clear();
        let end = watch_with(&nvml, &want, policy, faults, || stop() || changed());
        // Released before any wait: NVML holds the GPUs' device nodes.
        drop(nvml);
        match end {
            Ok(WatchEnd::Stopped) => {}
            // Nothing to watch until a GPU is reset (the topology changes).
            Ok(WatchEnd::AllFaulty) => pause(Duration::MAX, &mut changed),
            Err(e) => {
                tracing::warn!(error = %griffin_devices::Chain(&e), "NVML event set not made; trying again");
                pause(backoff, &mut changed);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Registers `gpus` with `nvml`, faults those it cannot watch, and
/// [`watch`]es the others.
fn watch_with(
    nvml: &nvml_wrapper::Nvml,
    gpus: &[PciAddress],
    policy: &Policy,
    faults: &Faults,
    stop: impl FnMut() -> bool,
) -> Result<WatchEnd, GpuHealthError> {
    let (mut events, unwatched) = NvmlEvents::register(nvml, gpus)?;
    for (gpu, reason) in unwatched {
        faults.record(gpu, reason);
    }
    tracing::info!(gpus = ?events.gpus(), "watching GPU health events");
    Ok(watch(&mut events, policy, faults, stop))
}

/// The real [`EventSource`]: NVML's `EventSet` with every GPU that
/// supports critical XID events registered for them.
pub struct NvmlEvents<'n> {
    set: nvml_wrapper::EventSet<'n>,
    /// Registered GPUs: NVML's device handle (as an address, only
    /// compared) and PCI address.
    handles: Vec<(usize, PciAddress)>,
}

impl std::fmt::Debug for NvmlEvents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlEvents")
            .field("gpus", &self.gpus())
            .finish_non_exhaustive()
    }
}

/// Loads and initialises NVML from `library` (a file name the dynamic
/// loader searches for, or a path).
pub fn init(library: &str) -> Result<nvml_wrapper::Nvml, GpuHealthError> {
    nvml_wrapper::Nvml::builder()
        .lib_path(std::ffi::OsStr::new(library))
        .init()
        .map_err(|source| GpuHealthError::Init {
            library: library.to_owned(),
            source,
        })
}

impl<'n> NvmlEvents<'n> {
    /// Registers each of `gpus` for critical XID events. A GPU NVML cannot
    /// find or whose registration fails is returned with the reason, to be
    /// faulted, as NVIDIA's plugin does; one too old for these events is
    /// left out (logged), its health coming from discovery only.
    pub fn register(
        nvml: &'n nvml_wrapper::Nvml,
        gpus: &[PciAddress],
    ) -> Result<(Self, Vec<(PciAddress, String)>), GpuHealthError> {
        use nvml_wrapper::bitmasks::event::EventTypes;
        use nvml_wrapper::error::NvmlError;
        let mut unwatched = Vec::new();
        let mut devices = Vec::new();
        for &addr in gpus {
            let dev = match nvml.device_by_pci_bus_id(addr.to_string()) {
                Ok(d) => d,
                Err(NvmlError::GpuLost) => {
                    unwatched.push((addr, "lost: fallen off the bus".to_owned()));
                    continue;
                }
                Err(e) => {
                    let why = griffin_devices::Chain(&e).to_string();
                    unwatched.push((addr, format!("NVML cannot find it: {why}")));
                    continue;
                }
            };
            match dev.supported_event_types() {
                Ok(t) if t.contains(EventTypes::CRITICAL_XID_ERROR) => devices.push((dev, addr)),
                Ok(_) | Err(NvmlError::NotSupported) => {
                    tracing::warn!(gpu = %addr, "GPU without critical XID events: its health comes from discovery only");
                }
                Err(e) => {
                    let why = griffin_devices::Chain(&e).to_string();
                    unwatched.push((addr, format!("NVML cannot watch it: {why}")));
                }
            }
        }
        // A failed registration frees the set (nvml-wrapper): start again
        // with a new set without that GPU.
        'again: loop {
            let mut set = nvml
                .create_event_set()
                .map_err(|source| GpuHealthError::Call {
                    call: "create event set".into(),
                    source,
                })?;
            let mut handles = Vec::new();
            for (k, (dev, addr)) in devices.iter().enumerate() {
                match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                    Ok(s) => {
                        set = s;
                        // SAFETY: the handle is only compared with the
                        // handles events carry, never used to call NVML.
                        handles.push((unsafe { dev.handle() } as usize, *addr));
                    }
                    Err(e) => {
                        let why = griffin_devices::Chain(&e.error).to_string();
                        unwatched.push((*addr, format!("NVML cannot watch it: {why}")));
                        devices.remove(k);
                        continue 'again;
                    }
                }
            }
            return Ok((Self { set, handles }, unwatched));
        }
    }

    /// The GPUs registered.
    pub fn gpus(&self) -> Vec<PciAddress> {
        self.handles.iter().map(|(_, a)| *a).collect()
    }
}

impl EventSource for NvmlEvents<'_> {
    fn gpus(&self) -> Vec<PciAddress> {
        NvmlEvents::gpus(self)
    }

    fn wait(&mut self, timeout: Duration) -> Result<Option<GpuEvent>, GpuHealthError> {
        use nvml_wrapper::enums::event::XidError;
        use nvml_wrapper::error::NvmlError;
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        use nvml_wrapper::bitmasks::event::EventTypes;
        let data = match self.set.wait(ms) {
            Ok(d) => d,
            Err(NvmlError::Timeout) => return Ok(None),
            Err(NvmlError::GpuLost) => return Ok(Some(GpuEvent::Lost { gpu: None })),
            Err(source) => {
                return Err(GpuHealthError::Call {
                    call: "wait for events".into(),
                    source,
                })
            }
        };
        // Only XID events are asked for; anything else is not a fault.
        if !data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
            return Ok(None);
        }
        // SAFETY: compared only, as in `register`.
        let handle = unsafe { data.device.handle() } as usize;
        let gpu = self
            .handles
            .iter()
            .find(|(h, _)| *h == handle)
            .map(|(_, a)| *a);
        let xid = match data.event_data {
            Some(XidError::Value(x)) => Some(x),
            Some(XidError::Unknown) | None => None,
        };
        Ok(Some(GpuEvent::Xid { gpu, xid }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn a(s: &str) -> PciAddress {
        griffin_devices::parse::pci_address(s).unwrap()
    }

    #[test]
    fn application_xids_leave_the_gpu_healthy_and_others_fault_it() {
        let p = Policy::default();
        let gpus = [a("0000:3b:00.0"), a("0000:86:00.0")];
        for x in APPLICATION_XIDS {
            let ev = GpuEvent::Xid {
                gpu: Some(gpus[0]),
                xid: Some(x),
            };
            assert!(p.judge(&ev, &gpus).is_empty(), "XID {x}");
        }
        let ev = GpuEvent::Xid {
            gpu: Some(gpus[1]),
            xid: Some(79),
        };
        assert_eq!(
            p.judge(&ev, &gpus),
            [(gpus[1], "critical XID 79".to_owned())]
        );
        let unnamed = GpuEvent::Xid {
            gpu: Some(gpus[0]),
            xid: None,
        };
        assert_eq!(
            p.judge(&unnamed, &gpus)[0].1,
            "critical XID NVML cannot name"
        );
        // No GPU named: all of them.
        let all = p.judge(&GpuEvent::Lost { gpu: None }, &gpus);
        assert_eq!(all.len(), 2);
        assert!(all[1].1.contains("NVML named no GPU"), "{all:?}");
        // An operator's own list replaces the default one.
        let mine = Policy {
            ignored: [79].into(),
        };
        assert!(mine.judge(&ev, &gpus).is_empty());
        let xid13 = GpuEvent::Xid {
            gpu: Some(gpus[0]),
            xid: Some(13),
        };
        assert_eq!(mine.judge(&xid13, &gpus).len(), 1);
    }

    /// Events, then `None` (timeouts) until the test stops.
    struct Script {
        gpus: Vec<PciAddress>,
        events: VecDeque<Result<Option<GpuEvent>, GpuHealthError>>,
    }

    impl EventSource for Script {
        fn gpus(&self) -> Vec<PciAddress> {
            self.gpus.clone()
        }
        fn wait(&mut self, _: Duration) -> Result<Option<GpuEvent>, GpuHealthError> {
            self.events.pop_front().unwrap_or(Ok(None))
        }
    }

    fn failure() -> GpuHealthError {
        GpuHealthError::Call {
            call: "wait for events".into(),
            source: nvml_wrapper::error::NvmlError::Unknown,
        }
    }

    #[test]
    fn the_watch_records_each_fault_once_and_wakes_subscribers_once() {
        let gpus = vec![a("0000:3b:00.0"), a("0000:86:00.0")];
        let xid = |g: usize, x| {
            Ok(Some(GpuEvent::Xid {
                gpu: Some(gpus[g]),
                xid: Some(x),
            }))
        };
        let mut s = Script {
            gpus: gpus.clone(),
            events: [xid(0, 13), Ok(None), xid(0, 48), xid(0, 79), Err(failure())].into(),
        };
        let faults = Faults::default();
        let mut woken = faults.subscribe();
        let mut rounds = 0;
        let end = watch(&mut s, &Policy::default(), &faults, || {
            rounds += 1;
            rounds > 8
        });
        assert_eq!(end, WatchEnd::Stopped);
        assert_eq!(
            faults.snapshot(),
            [(gpus[0], "critical XID 48".to_owned())].into()
        );
        assert!(woken.has_changed().unwrap());
        assert_eq!(*woken.borrow_and_update(), 1, "one new fault, one wake-up");
    }

    #[test]
    fn failing_waits_fault_every_gpu_and_end_the_watch() {
        let gpus = vec![a("0000:3b:00.0"), a("0000:86:00.0")];
        let mut s = Script {
            gpus: gpus.clone(),
            events: [Err(failure()), Err(failure()), Err(failure())].into(),
        };
        let faults = Faults::default();
        let end = watch(&mut s, &Policy::default(), &faults, || false);
        assert_eq!(end, WatchEnd::AllFaulty);
        let f = faults.snapshot();
        assert_eq!(f.keys().copied().collect::<Vec<_>>(), gpus);
        assert!(
            f[&gpus[1]].starts_with("NVML events failing: NVML: wait for events"),
            "{f:?}"
        );
    }

    #[test]
    fn a_lost_gpu_repeating_ends_the_watch_instead_of_spinning() {
        let gpus = vec![a("0000:3b:00.0"), a("0000:86:00.0")];
        // NVML keeps saying a GPU is lost, naming none.
        let mut s = Script {
            gpus: gpus.clone(),
            events: (0..1000)
                .map(|_| Ok(Some(GpuEvent::Lost { gpu: None })))
                .collect(),
        };
        let faults = Faults::default();
        let end = watch(&mut s, &Policy::default(), &faults, || false);
        assert_eq!(end, WatchEnd::AllFaulty);
        assert!(s.events.len() >= 998, "read on after every GPU was faulty");
    }

    #[test]
    fn a_reset_gpu_is_forgotten() {
        let mut topo = griffin_tests::synthetic::two_nodes_with_gpus(1 << 30);
        for d in topo
            .devices
            .iter_mut()
            .filter(|d| d.kind == DeviceKind::Gpu)
        {
            d.vendor = "10de".into();
        }
        let gpus: Vec<PciAddress> = topo
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Gpu)
            .map(|d| d.pci_address)
            .collect();
        assert!(gpus.len() >= 2);
        // Only NVIDIA GPUs with a driver are watched.
        let all = topo.devices.iter().map(|d| d.pci_address);
        assert_eq!(nvidia_gpus(&topo, all), gpus);
        let faults = Faults::default();
        for g in &gpus {
            faults.record(*g, "critical XID 79".into());
        }
        assert!(!faults.record(gpus[0], "again".into()));
        assert!(faults.forget_reset(&topo).is_empty());
        // Unbound: forgotten; removed: forgotten; still bound: kept.
        topo.devices
            .iter_mut()
            .find(|d| d.pci_address == gpus[0])
            .unwrap()
            .driver = None;
        assert_eq!(nvidia_gpus(&topo, gpus.clone()), gpus[1..]);
        topo.devices.retain(|d| d.pci_address != gpus[1]);
        assert_eq!(faults.forget_reset(&topo), [gpus[0], gpus[1]]);
        assert_eq!(faults.snapshot().len(), gpus.len() - 2);
    }
}
