//! Loading, attaching, pinning and adopting the XDP classifier, and reading
//! and writing its maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, io,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{lpm_trie::Key, Array, CpuMap, DevMap, LpmTrie, Map, MapData, PerCpuArray, XskMap},
    programs::{links::FdLink, links::PinnedLink, ProgramError, ProgramFd, Xdp, XdpFlags},
    Ebpf,
};
use aya_obj::programs::XdpAttachType;

use crate::{
    classes,
    rules::{encode_rules, lpm_values, outermost, Prefix, PrefixSets, Rule, RuleError},
    sys,
    types::{
        self, GriffinBank, GriffinConfig, GriffinCounter, GriffinLpmValue, GriffinRule,
        MAX_PREFIXES, MAX_PREFIX_SETS, MAX_RULES, RULE_BANKS,
    },
    OBJECT,
};

/// Where bpffs is (or gets) mounted by default.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// Directory under bpffs holding one directory of pins per interface.
pub const PIN_SUBDIR: &str = "griffin";
/// The program's name in the object.
pub const PROGRAM_NAME: &str = "griffin_xdp";
/// Pin name of the XDP link.
const LINK_PIN: &str = "link";
/// Pin name of the program.
const PROGRAM_PIN: &str = "prog";

const RULES: &str = "griffin_rules";
const CONFIG: &str = "griffin_config";
/// The data section holding the program's `griffin_active_bank` (a
/// one-entry array of its one u32), pinned as [`ACTIVE_PIN`].
const ACTIVE: &str = ".data.griffin";
const ACTIVE_PIN: &str = "griffin_active_bank";
const BANKS: &str = "griffin_banks";
const RULE_STATS: &str = "griffin_rstats";
const STATS: &str = "griffin_stats";
const LPM_V4: &str = "griffin_lpm_v4";
const LPM_V6: &str = "griffin_lpm_v6";
const DEVMAP: &str = "griffin_devmap";
const XSKMAP: &str = "griffin_xskmap";
const CPUMAP: &str = "griffin_cpumap";
/// `BPF_F_LOCK` (linux/bpf.h): a map element read or written whole under
/// the `bpf_spin_lock` in its value.
const BPF_F_LOCK: u64 = 4;
/// Reads of the counters that may each see a rule set replaced before
/// [`Datapath::counters`] gives up.
const COUNTER_READ_TRIES: usize = 64;

/// Wraps a map re-opened from a pin in its `Map` variant.
type WrapMap = fn(MapData) -> Map;

/// Every map with the `Map` variant that wraps it when re-opened from a pin.
const MAPS: [(&str, WrapMap); 11] = [
    (RULES, Map::Array),
    (CONFIG, Map::Array),
    (ACTIVE, Map::Array),
    (BANKS, Map::Array),
    (RULE_STATS, Map::PerCpuArray),
    (STATS, Map::PerCpuArray),
    (LPM_V4, Map::LpmTrie),
    (LPM_V6, Map::LpmTrie),
    (DEVMAP, Map::DevMap),
    (XSKMAP, Map::XskMap),
    (CPUMAP, Map::CpuMap),
];

/// Errors of the loader; each names the interface, path or map involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded object failed to load (verifier, map creation, ...).
    #[error("loading the embedded XDP object")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object lacks something the loader expects.
    #[error("the XDP object has no {what} named {name}")]
    Missing {
        /// "map" or "program".
        what: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// A program operation failed.
    #[error("XDP program {PROGRAM_NAME}")]
    Program(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A map operation failed.
    #[error("map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No such interface in the calling thread's network namespace.
    #[error("interface {iface}")]
    Interface {
        /// The interface.
        iface: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Attaching failed in every mode tried.
    #[error("attaching XDP to {iface} in {mode} mode")]
    Attach {
        /// The interface.
        iface: String,
        /// The last mode tried.
        mode: XdpMode,
        /// What the kernel said.
        #[source]
        source: Box<ProgramError>,
    },
    /// Griffin state is already pinned for the interface.
    #[error("{iface} already has Griffin XDP state pinned at {path}; adopt or detach it")]
    AlreadyAttached {
        /// The interface.
        iface: String,
        /// The pin directory.
        path: PathBuf,
    },
    /// Nothing pinned to adopt.
    #[error("no Griffin XDP state pinned for {iface} at {path}")]
    NotAttached {
        /// The interface.
        iface: String,
        /// The pin directory.
        path: PathBuf,
    },
    /// The pinned state belongs to an interface index that no longer matches.
    #[error(
        "pinned state at {path} is for ifindex {pinned}, but {iface} is now ifindex {current}"
    )]
    Stale {
        /// The interface.
        iface: String,
        /// The pin directory.
        path: PathBuf,
        /// Index recorded at attach time.
        pinned: u32,
        /// Index now.
        current: u32,
    },
    /// The pinned state was made by a loader with other maps or map layouts
    /// (e.g. before the bit-vector classifier); purge and re-attach.
    #[error(
        "pinned state for {iface} at {path} is incompatible with this loader: {reason} \
         (purge it and attach again)"
    )]
    Incompatible {
        /// The interface.
        iface: String,
        /// The pin directory.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// Pinning to or opening from bpffs failed.
    #[error("pin {path}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A filesystem operation failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A rule cannot be encoded.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// An update needs more than a map holds: refused before any map write.
    #[error("{what}: the update needs {needed}, the limit is {limit} (map {map}){why}")]
    Limit {
        /// What runs out.
        what: &'static str,
        /// The map bounding it.
        map: &'static str,
        /// What the update needs.
        needed: usize,
        /// What the map holds.
        limit: usize,
        /// Why it needs that much, when not obvious (starts with "; ").
        why: &'static str,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN of {PROGRAM_NAME}")]
    TestRun(#[source] io::Error),
}

fn map_err<E: std::error::Error + Send + Sync + 'static>(
    name: &'static str,
) -> impl FnOnce(E) -> Error {
    move |source| Error::Map {
        name,
        source: Box::new(source),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn pin_err<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
) -> impl FnOnce(E) -> Error + '_ {
    move |source| Error::Pin {
        path: path.to_owned(),
        source: Box::new(source),
    }
}

/// The XDP attach mode in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// Generic / SKB mode (`XDP_FLAGS_SKB_MODE`), after the stack allocated an skb.
    Generic,
}

impl XdpMode {
    fn flags(self) -> XdpFlags {
        match self {
            Self::Native => XdpFlags::DRV_MODE,
            Self::Generic => XdpFlags::SKB_MODE,
        }
    }

    fn to_raw(self) -> u32 {
        match self {
            Self::Native => 1,
            Self::Generic => 2,
        }
    }

    fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Native),
            2 => Some(Self::Generic),
            _ => None,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// The attach mode asked for (`--mode`, the daemon's `mode`): which modes
/// to try. The mode actually attached is an [`XdpMode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native, falling back to generic when the driver refuses (the
    /// attachment then says why, [`Attachment::native_refused`]).
    #[default]
    Auto,
    /// Native or fail.
    Native,
    /// Generic (skb) only.
    Generic,
}

impl AttachMode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Self; 3] = [Self::Auto, Self::Native, Self::Generic];

    /// Its name (`auto`, `native`, `generic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    /// Whether attaching with this request could not have given `mode`
    /// (e.g. `native` asked, `generic` attached).
    pub fn excludes(self, mode: XdpMode) -> bool {
        matches!(
            (self, mode),
            (Self::Native, XdpMode::Generic) | (Self::Generic, XdpMode::Native)
        )
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attach mode name that is not `auto`, `native` or `generic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attach mode {0:?}: expected auto, native or generic")]
pub struct AttachModeError(String);

impl std::str::FromStr for AttachMode {
    type Err = AttachModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| AttachModeError(s.to_owned()))
    }
}

/// How to attach.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Attach modes to try.
    pub mode: AttachMode,
    /// bpffs mount point; pins go to `<bpffs>/griffin/<iface>/`. Mounted if
    /// it is not bpffs yet.
    pub bpffs: PathBuf,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            mode: AttachMode::default(),
            bpffs: PathBuf::from(DEFAULT_BPFFS),
        }
    }
}

/// Where and how the program is attached.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// Interface index at attach time.
    pub ifindex: u32,
    /// Mode in effect.
    pub mode: XdpMode,
    /// Why native mode was not used, when it was tried and refused.
    pub native_refused: Option<String>,
    /// The pin directory.
    pub pin_dir: PathBuf,
    link: PinnedLink,
}

/// `(packets, bytes)` summed over CPUs.
pub type Counter = GriffinCounter;

/// Counters by action actually taken (after fail-open fallback).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCounters {
    /// Passed to the stack (defaults, pass rules, fallbacks, malformed frames).
    pub pass: Counter,
    /// Dropped.
    pub drop: Counter,
    /// Redirected to an interface.
    pub redirect: Counter,
    /// Redirected to an AF_XDP socket.
    pub xsk: Counter,
    /// Redirected to another CPU.
    pub cpu: Counter,
}

/// A snapshot of every counter, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per rule id of the active rule set: frames the rule matched.
    pub rules: BTreeMap<u32, Counter>,
    /// Per action taken.
    pub actions: ActionCounters,
    /// Malformed or truncated frames (passed untouched).
    pub parse_failures: Counter,
    /// Redirects whose target was missing (passed instead).
    pub fallbacks: Counter,
    /// Well-formed frames no rule matched (passed).
    pub no_match: Counter,
}

/// The verdict of an XDP program run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpVerdict {
    /// `XDP_ABORTED`.
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT`.
    Redirect,
    /// Anything else.
    Other(u32),
}

impl From<u32> for XdpVerdict {
    fn from(raw: u32) -> Self {
        match raw {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Other(other),
        }
    }
}

/// Result of [`Datapath::test_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The verdict.
    pub verdict: XdpVerdict,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// The loaded classifier: program, maps and (when attached) its pinned link.
///
/// Dropping a `Datapath` that is attached leaves the program attached through
/// its pins; [`Datapath::adopt`] picks it up again and
/// [`Datapath::detach`] removes it. Rule updates assume one writer at a time.
pub struct Datapath {
    prog: ProgramFd,
    rules: Array<MapData, GriffinRule>,
    config: Array<MapData, GriffinConfig>,
    active: Array<MapData, u32>,
    banks: Array<MapData, GriffinBank>,
    rule_stats: PerCpuArray<MapData, GriffinCounter>,
    stats: PerCpuArray<MapData, GriffinCounter>,
    lpm_v4: LpmTrie<MapData, [u8; 4], GriffinLpmValue>,
    lpm_v6: LpmTrie<MapData, [u8; 16], GriffinLpmValue>,
    devmap: DevMap<MapData>,
    /// A second handle on the devmap, for deletes (aya 0.13 has none).
    devmap_fd: OwnedFd,
    /// Devmap slot -> ifindex the caller asked for ([`Datapath::set_redirect_target`]).
    redirect_targets: BTreeMap<u32, u32>,
    /// Slots of `redirect_targets` currently stored in the devmap.
    installed_targets: BTreeSet<u32>,
    /// The devmap program every redirect target gets
    /// ([`Datapath::set_egress_program`]).
    egress: Option<ProgramFd>,
    xskmap: XskMap<MapData>,
    cpumap: CpuMap<MapData>,
    attachment: Option<Attachment>,
    /// The prefix sets [`Datapath::set_rules`] applies with its rules.
    sets: PrefixSets,
    /// Tests: the map write (counted from 0) of the next updates that fails.
    #[cfg(test)]
    fail_write: Option<usize>,
}

/// A whole rule set for [`Datapath::update`]: the rules with the prefix
/// sets and the redirect and CPU targets they use.
#[derive(Clone, Copy, Debug)]
pub struct Update<'a> {
    /// The rules.
    pub rules: &'a [Rule],
    /// The prefix sets the rules name ([`Rule::src_set`], [`Rule::dst_set`]).
    pub sets: &'a PrefixSets,
    /// Redirect targets, `(devmap slot as the rules name it, ifindex)`. A
    /// redirect rule's slot that is not listed is used as it is (a target
    /// set with [`Datapath::set_redirect_target`]).
    pub redirect: &'a [(u32, u32)],
    /// CPU targets, `(cpu, queue size in frames)`.
    pub cpus: &'a [(u32, u32)],
}

/// Where [`Datapath::update`] put the rule set's prefix sets and redirect
/// slots in the maps ([`Datapath::active_rules`] shows these numbers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Prefix set as the rules name it -> set bit in the maps.
    pub sets: BTreeMap<u8, u8>,
    /// Listed devmap slot -> slot in the devmap.
    pub slots: BTreeMap<u32, u32>,
    /// Whether the rule set in force was replaced (`false`: it was the same
    /// rule set, nothing was switched and its counters go on).
    pub switched: bool,
}

/// What [`Datapath::sync_redirect_targets`] changed for one devmap slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetChange {
    /// The target became usable: its devmap entry was restored.
    Restored {
        /// Devmap slot.
        slot: u32,
        /// The target interface.
        ifindex: u32,
    },
    /// The target is down or gone: its devmap entry was removed, so frames
    /// for it fall back to the stack (and count as fallbacks).
    Withdrawn {
        /// Devmap slot.
        slot: u32,
        /// The target interface.
        ifindex: u32,
    },
}

impl fmt::Debug for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datapath")
            .field("prog", &self.prog.as_fd().as_raw_fd())
            .field("attachment", &self.attachment)
            .finish_non_exhaustive()
    }
}

/// Removes the listed pins on drop unless disarmed: attach is all or nothing.
struct PinGuard {
    paths: Vec<PathBuf>,
    dir: Option<PathBuf>,
}

impl PinGuard {
    fn disarm(mut self) {
        self.paths.clear();
        self.dir = None;
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        for path in self.paths.drain(..).rev() {
            let _ = std::fs::remove_file(&path);
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn ifindex(iface: &str) -> Result<u32, Error> {
    nix::net::if_::if_nametoindex(iface).map_err(|errno| Error::Interface {
        iface: iface.to_owned(),
        source: io::Error::from(errno),
    })
}

/// `<bpffs>/griffin/<iface>`.
pub fn pin_dir(bpffs: &Path, iface: &str) -> PathBuf {
    bpffs.join(PIN_SUBDIR).join(iface)
}

fn sum(values: &[GriffinCounter]) -> Counter {
    values.iter().fold(Counter::default(), |mut acc, v| {
        add(&mut acc, *v);
        acc
    })
}

fn add(total: &mut Counter, more: Counter) {
    total.packets = total.packets.wrapping_add(more.packets);
    total.bytes = total.bytes.wrapping_add(more.bytes);
}

/// The index of a rule's `action` among the action totals: an action the
/// program does not know, which it passes, counts as pass.
fn action_index(action: u8) -> usize {
    let index = usize::from(action);
    if index < types::action::COUNT as usize {
        index
    } else {
        usize::from(types::action::PASS)
    }
}

/// Per-action totals derived from what the program counts: a frame is
/// counted once, by its rule (by the action the rule names), or as a parse
/// failure or no match (passed); a redirect, xsk or cpu frame whose target
/// was missing also counts as that action's fallback (passed instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ActionTotals {
    /// By rule action: retired totals plus the rules' counters.
    by_rule: [Counter; types::action::COUNT as usize],
    /// `griffin_stats`, by [`types::stat`] index.
    stats: [Counter; types::stat::COUNT as usize],
}

impl ActionTotals {
    fn new(
        retired: &[Counter; types::action::COUNT as usize],
        stats: &[Counter; types::stat::COUNT as usize],
    ) -> Self {
        Self {
            by_rule: *retired,
            stats: *stats,
        }
    }

    /// Adds the counter of a rule with `action`.
    fn add_rule(&mut self, action: u8, counter: Counter) {
        add(&mut self.by_rule[action_index(action)], counter);
    }

    fn fallback(&self, action: u8) -> Counter {
        self.stats[usize::from(action)]
    }

    /// Frames of every action that fell back to the stack.
    fn fallbacks(&self) -> Counter {
        use types::action::{CPU, REDIRECT, XSK};
        sum(&[
            self.fallback(REDIRECT),
            self.fallback(XSK),
            self.fallback(CPU),
        ])
    }

    fn actions(&self) -> ActionCounters {
        use types::{action, stat};
        // The rules' frames of `action` that were not passed instead.
        let taken = |action: u8| {
            let rules = self.by_rule[usize::from(action)];
            let fallback = self.fallback(action);
            Counter {
                packets: rules.packets.saturating_sub(fallback.packets),
                bytes: rules.bytes.saturating_sub(fallback.bytes),
            }
        };
        ActionCounters {
            pass: sum(&[
                self.by_rule[usize::from(action::PASS)],
                self.stats[stat::PARSE_FAIL as usize],
                self.stats[stat::NO_MATCH as usize],
                self.fallbacks(),
            ]),
            drop: self.by_rule[usize::from(action::DROP)],
            redirect: taken(action::REDIRECT),
            xsk: taken(action::XSK),
            cpu: taken(action::CPU),
        }
    }
}

impl Datapath {
    /// Loads program and maps without attaching or pinning anything (for
    /// [`Datapath::test_run`] and for callers that attach themselves).
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = load_object()?;
        let prog = xdp_program(&mut ebpf)?
            .fd()
            .map_err(|e| Error::Program(Box::new(e)))?
            .try_clone()
            .map_err(|e| Error::Program(Box::new(e)))?;
        Self::from_maps(prog, |name| {
            ebpf.take_map(name)
                .ok_or(Error::Missing { what: "map", name })
        })
    }

    /// Loads the program, attaches it to `iface` and pins link, program and
    /// maps under `<bpffs>/griffin/<iface>/`.
    pub fn attach(iface: &str, options: &AttachOptions) -> Result<Self, Error> {
        let ifindex = ifindex(iface)?;
        sys::ensure_bpffs(&options.bpffs).map_err(io_err(&options.bpffs))?;
        let dir = pin_dir(&options.bpffs, iface);
        if dir.join(LINK_PIN).exists() {
            return Err(Error::AlreadyAttached {
                iface: iface.to_owned(),
                path: dir,
            });
        }
        if dir.exists() {
            tracing::warn!(path = %dir.display(), "removing stale Griffin pins without a link");
            remove_pins(&dir)?;
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut guard = PinGuard {
            paths: Vec::new(),
            dir: Some(dir.clone()),
        };

        let mut ebpf = load_object()?;
        let program = xdp_program(&mut ebpf)?;
        let (link_id, mode, native_refused) =
            attach_with_fallback(program, iface, ifindex, options.mode)?;
        let link = program
            .take_link(link_id)
            .map_err(|e| Error::Program(Box::new(e)))?;
        let link = FdLink::try_from(link).map_err(|e| Error::Program(Box::new(e)))?;

        let prog_path = dir.join(PROGRAM_PIN);
        program.pin(&prog_path).map_err(pin_err(&prog_path))?;
        guard.paths.push(prog_path);
        let prog = program
            .fd()
            .map_err(|e| Error::Program(Box::new(e)))?
            .try_clone()
            .map_err(io_err(&dir))?;

        let mut maps = BTreeMap::new();
        for (name, _) in MAPS {
            let map = ebpf
                .take_map(name)
                .ok_or(Error::Missing { what: "map", name })?;
            let path = dir.join(pin_name(name));
            map.pin(&path).map_err(pin_err(&path))?;
            guard.paths.push(path);
            maps.insert(name, map);
        }
        let mut datapath = Self::from_maps(prog, |name| {
            maps.remove(name)
                .ok_or(Error::Missing { what: "map", name })
        })?;
        datapath.update_config(|config| {
            config.attach_mode = mode.to_raw();
            config.ifindex = ifindex;
        })?;
        // The link pin goes last: its presence means the state is complete.
        let link_path = dir.join(LINK_PIN);
        let link = link.pin(&link_path).map_err(pin_err(&link_path))?;
        guard.disarm();
        tracing::info!(iface, ifindex, %mode, pins = %dir.display(), "Griffin XDP attached");
        datapath.attachment = Some(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode,
            native_refused,
            pin_dir: dir,
            link,
        });
        Ok(datapath)
    }

    /// Takes over the state pinned by an earlier [`Datapath::attach`] for
    /// `iface` (e.g. after a restart) without re-attaching.
    pub fn adopt(iface: &str, bpffs: &Path) -> Result<Self, Error> {
        let dir = pin_dir(bpffs, iface);
        let link_path = dir.join(LINK_PIN);
        if !link_path.exists() {
            return Err(Error::NotAttached {
                iface: iface.to_owned(),
                path: dir,
            });
        }
        let link = PinnedLink::from_pin(&link_path).map_err(pin_err(&link_path))?;
        let prog_path = dir.join(PROGRAM_PIN);
        let program =
            Xdp::from_pin(&prog_path, XdpAttachType::Interface).map_err(pin_err(&prog_path))?;
        let prog = program
            .fd()
            .map_err(|e| Error::Program(Box::new(e)))?
            .try_clone()
            .map_err(io_err(&prog_path))?;
        let object = aya_obj::Object::parse(OBJECT)
            .map_err(|e| Error::Load(Box::new(aya::EbpfError::from(e))))?;
        let incompatible = |reason: String| Error::Incompatible {
            iface: iface.to_owned(),
            path: dir.clone(),
            reason,
        };
        let mut datapath = Self::from_maps(prog, |name| {
            let pinned = pin_name(name);
            let path = dir.join(pinned);
            let wrap = MAPS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, wrap)| *wrap)
                .ok_or(Error::Missing { what: "map", name })?;
            let want = object
                .maps
                .get(name)
                .ok_or(Error::Missing { what: "map", name })?;
            // A pin set from a loader with other maps (e.g. before the
            // bit-vector classifier) must not drive this one's program.
            if !path.exists() {
                return Err(incompatible(format!("map {pinned} is not pinned")));
            }
            let data = MapData::from_pin(&path).map_err(pin_err(&path))?;
            let info = data.info().map_err(map_err(name))?;
            let have = (info.key_size(), info.value_size(), info.max_entries());
            let need = (want.key_size(), want.value_size(), want.max_entries());
            if have != need {
                return Err(incompatible(format!(
                    "map {pinned} has (key size, value size, entries) {have:?}, this loader needs {need:?}"
                )));
            }
            Ok(wrap(data))
        })?;
        let config = datapath.config()?;
        let current = ifindex(iface)?;
        if config.ifindex != current {
            return Err(Error::Stale {
                iface: iface.to_owned(),
                path: dir,
                pinned: config.ifindex,
                current,
            });
        }
        let mode = XdpMode::from_raw(config.attach_mode).unwrap_or(XdpMode::Generic);
        // The redirect targets in the devmap are what the previous loader
        // installed; a target it withdrew while down is not known here.
        for (slot, entry) in (0..).zip(datapath.devmap.iter()) {
            if let Ok(entry) = entry {
                datapath.redirect_targets.insert(slot, entry.if_index);
                datapath.installed_targets.insert(slot);
            }
        }
        tracing::info!(iface, ifindex = current, %mode, pins = %dir.display(), "adopted pinned Griffin XDP state");
        datapath.attachment = Some(Attachment {
            iface: iface.to_owned(),
            ifindex: current,
            mode,
            native_refused: None,
            pin_dir: dir,
            link,
        });
        Ok(datapath)
    }

    /// Detaches the program (once no other process holds the link) and
    /// removes every pin. A no-op for an unattached `Datapath`.
    pub fn detach(mut self) -> Result<(), Error> {
        let Some(attachment) = self.attachment.take() else {
            return Ok(());
        };
        let link_path = attachment.pin_dir.join(LINK_PIN);
        let link = attachment.link.unpin().map_err(io_err(&link_path))?;
        drop(link);
        remove_pins(&attachment.pin_dir)?;
        if let Some(parent) = attachment.pin_dir.parent() {
            // Only succeeds once no other interface has pins.
            let _ = std::fs::remove_dir(parent);
        }
        tracing::info!(iface = attachment.iface, "Griffin XDP detached");
        Ok(())
    }

    /// Removes whatever Griffin pinned for `iface` without adopting it (for
    /// state [`Datapath::adopt`] refuses, e.g. [`Error::Stale`] after the
    /// interface was re-created). Removing the link pin detaches the program
    /// once no process holds the link open. Returns whether anything was
    /// pinned.
    pub fn purge(iface: &str, bpffs: &Path) -> Result<bool, Error> {
        let dir = pin_dir(bpffs, iface);
        if !dir.exists() {
            return Ok(false);
        }
        tracing::warn!(iface, path = %dir.display(), "purging pinned Griffin XDP state");
        remove_pins(&dir)?;
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(true)
    }

    /// Where the program is attached, if it is.
    pub fn attachment(&self) -> Option<&Attachment> {
        self.attachment.as_ref()
    }

    fn from_maps(
        prog: ProgramFd,
        mut take: impl FnMut(&'static str) -> Result<Map, Error>,
    ) -> Result<Self, Error> {
        let devmap = take(DEVMAP)?;
        Ok(Self {
            prog,
            rules: Array::try_from(take(RULES)?).map_err(map_err(RULES))?,
            config: Array::try_from(take(CONFIG)?).map_err(map_err(CONFIG))?,
            active: Array::try_from(take(ACTIVE)?).map_err(map_err(ACTIVE))?,
            banks: Array::try_from(take(BANKS)?).map_err(map_err(BANKS))?,
            rule_stats: PerCpuArray::try_from(take(RULE_STATS)?).map_err(map_err(RULE_STATS))?,
            stats: PerCpuArray::try_from(take(STATS)?).map_err(map_err(STATS))?,
            lpm_v4: LpmTrie::try_from(take(LPM_V4)?).map_err(map_err(LPM_V4))?,
            lpm_v6: LpmTrie::try_from(take(LPM_V6)?).map_err(map_err(LPM_V6))?,
            devmap_fd: match &devmap {
                Map::DevMap(data) => data
                    .fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(map_err(DEVMAP))?,
                _ => {
                    return Err(Error::Missing {
                        what: "map",
                        name: DEVMAP,
                    })
                }
            },
            devmap: DevMap::try_from(devmap).map_err(map_err(DEVMAP))?,
            redirect_targets: BTreeMap::new(),
            installed_targets: BTreeSet::new(),
            egress: None,
            xskmap: XskMap::try_from(take(XSKMAP)?).map_err(map_err(XSKMAP))?,
            cpumap: CpuMap::try_from(take(CPUMAP)?).map_err(map_err(CPUMAP))?,
            attachment: None,
            sets: PrefixSets::new(),
            #[cfg(test)]
            fail_write: None,
        })
    }

    /// The loader's bookkeeping, read whole under its lock.
    fn config(&self) -> Result<GriffinConfig, Error> {
        self.config.get(&0, BPF_F_LOCK).map_err(map_err(CONFIG))
    }

    /// Changes the bookkeeping with `change` and bumps its generation, in
    /// one write under its lock: a reader sees all of a change or none.
    fn update_config(&mut self, change: impl FnOnce(&mut GriffinConfig)) -> Result<(), Error> {
        let mut config = self.config()?;
        change(&mut config);
        config.generation = config.generation.wrapping_add(1);
        self.config
            .set(0, config, BPF_F_LOCK)
            .map_err(map_err(CONFIG))
    }

    /// The bank the program classifies with.
    fn active_bank(&self) -> Result<u32, Error> {
        Ok(self.active.get(&0, 0).map_err(map_err(ACTIVE))? & 1)
    }

    /// Replaces the rule set atomically, with the prefix sets last given to
    /// [`Datapath::set_prefix_sets`] and the redirect and CPU targets as
    /// they are: [`Datapath::update`] without targets to fill (so redirect
    /// slots are used as the rules name them; a slot only the replaced
    /// rules used is emptied after the switch).
    pub fn set_rules(&mut self, rules: &[Rule]) -> Result<(), Error> {
        let sets = self.sets.clone();
        self.update(&Update {
            rules,
            sets: &sets,
            redirect: &[],
            cpus: &[],
        })
        .map(drop)
    }

    /// Replaces the rule set, with its prefix sets and targets, atomically:
    /// the program classifies with the old rule set, exactly, until one
    /// 32-bit write switches it to the new one; an update that fails at any
    /// point leaves the old one in force, exactly.
    ///
    /// Every limit of the maps (rules, their targets, set bits, trie
    /// entries, devmap slots) is checked before anything is written
    /// ([`Error::Limit`], [`Error::Rule`]). Then, while the old rule set is
    /// in force, the new one's prefixes go into the LPM tries under set bits
    /// the old one does not use (a set with the same members as one in
    /// force shares its bit) and its redirect targets into devmap slots the
    /// old one does not use (one with the same interface shares its slot):
    /// the old rules cannot see them, so the tries must hold the prefixes
    /// of both rule sets side by side. The rules, with those bits and
    /// slots ([`Applied`]), and their classification tables
    /// ([`crate::classes`], one `griffin_banks` update) go into the inactive
    /// bank, then the program is switched to it. Only then are the old rule
    /// set's prefixes and the devmap slots only it used removed; a failure
    /// there is logged and harmless (the next update removes them).
    ///
    /// The new rule set's per-rule counters start from zero (they are kept
    /// per bank, and the inactive bank's are zeroed before the switch); the
    /// per-action and fallback/parse/no-match counters keep their totals.
    /// A rule set identical to the one in force (same rules in the same
    /// order, sets of the same members, the same targets) is not a
    /// replacement: nothing is switched and the counters go on.
    pub fn update(&mut self, update: &Update<'_>) -> Result<Applied, Error> {
        let plan = self.plan(update)?;
        let mut have = plan.have.clone();
        // While the old rule set is in force: every write below leaves what
        // it sees unchanged.
        self.write_trie(&plan.during, &mut have)?;
        for &(slot, ifindex) in &plan.new_slots {
            self.fault(DEVMAP)?;
            self.set_redirect_target(slot, ifindex)?;
        }
        for &(cpu, queue) in update.cpus {
            let current = self.cpumap.get(cpu, 0).ok().map(|v| v.queue_size);
            if current != Some(queue) {
                self.fault(CPUMAP)?;
                self.set_cpu_target(cpu, queue)?;
            }
        }
        let switched = plan.rules != plan.current;
        if switched {
            self.switch_bank(&plan.rules)?;
        } else {
            tracing::debug!(rules = plan.rules.len(), "rule set unchanged");
        }
        self.sets = update.sets.clone();
        // The new rule set is in force: the old one's leftovers go.
        if let Err(e) = self.remove_leftovers(&plan, &mut have, switched) {
            tracing::warn!(
                error = %griffin_devices::Chain(&e),
                "leftovers of the replaced rule set stay in the maps until the next update"
            );
        }
        Ok(Applied {
            sets: plan.set_bits,
            slots: plan.slots,
            switched,
        })
    }

    /// Checks `update` against every limit and works out what goes where,
    /// without writing anything.
    fn plan(&self, update: &Update<'_>) -> Result<Plan, Error> {
        let encoded = encode_rules(update.rules)?;
        for rule in &encoded {
            let target = match rule.action {
                types::action::XSK if rule.target == types::TARGET_RX_QUEUE => None,
                types::action::REDIRECT | types::action::XSK | types::action::CPU => {
                    Some(rule.target)
                }
                _ => None,
            };
            if target.is_some_and(|t| t >= TARGET_SLOTS) {
                return Err(RuleError {
                    id: rule.id,
                    reason: format!("target {} must be below {TARGET_SLOTS}", rule.target),
                }
                .into());
            }
        }
        for &(slot, _) in update.redirect {
            if slot >= TARGET_SLOTS {
                return Err(limit("redirect slot", DEVMAP, slot as usize + 1, ""));
            }
        }
        for &(cpu, _) in update.cpus {
            if cpu >= TARGET_SLOTS {
                return Err(limit("cpu target", CPUMAP, cpu as usize + 1, ""));
            }
        }
        let current = self.active_rules()?;
        let have = self.trie_entries()?;

        // Set bits: those in force keep their members; each new set shares
        // the bit of a set with the same members, or takes a free one.
        let live: BTreeMap<u8, BTreeSet<Prefix>> = set_bits_of(&current)
            .into_iter()
            .map(|bit| {
                let members = have
                    .iter()
                    .filter(|(_, bits)| *bits & (1 << bit) != 0)
                    .map(|(prefix, _)| *prefix);
                (bit, outermost(members))
            })
            .collect();
        let members = update.sets.members();
        let mut taken: BTreeMap<u8, BTreeSet<Prefix>> = BTreeMap::new();
        let mut set_bits = BTreeMap::new();
        for set in set_bits_of(&encoded) {
            let content = members.get(&set).cloned().unwrap_or_default();
            let same = live
                .iter()
                .chain(&taken)
                .find(|(_, m)| **m == content)
                .map(|(bit, _)| *bit);
            let free =
                || (0..MAX_PREFIX_SETS).find(|b| !live.contains_key(b) && !taken.contains_key(b));
            let Some(bit) = same.or_else(free) else {
                let fresh: BTreeSet<&BTreeSet<Prefix>> = set_bits_of(&encoded)
                    .iter()
                    .map(|s| members.get(s).unwrap_or(&EMPTY))
                    .filter(|m| !live.values().any(|l| l == *m))
                    .collect();
                return Err(limit(
                    "prefix sets",
                    SET_BITS,
                    live.len() + fresh.len(),
                    SIDE_BY_SIDE,
                ));
            };
            taken.entry(bit).or_insert(content);
            set_bits.insert(set, bit);
        }

        // Redirect slots, alike: a slot in force keeps its interface.
        let unlisted: BTreeSet<u32> = redirect_slots(&encoded)
            .into_iter()
            .filter(|slot| !update.redirect.iter().any(|(s, _)| s == slot))
            .collect();
        let live_slots: BTreeMap<u32, Option<u32>> = redirect_slots(&current)
            .into_iter()
            .map(|slot| (slot, self.redirect_targets.get(&slot).copied()))
            .collect();
        let mut slots = BTreeMap::new();
        let mut new_slots: Vec<(u32, u32)> = Vec::new();
        for &(slot, ifindex) in update.redirect {
            let same = live_slots
                .iter()
                .find(|(_, t)| **t == Some(ifindex))
                .map(|(s, _)| *s)
                .or_else(|| {
                    new_slots
                        .iter()
                        .find(|(_, i)| *i == ifindex)
                        .map(|(s, _)| *s)
                });
            let free = || {
                (0..TARGET_SLOTS).find(|s| {
                    !live_slots.contains_key(s)
                        && !unlisted.contains(s)
                        && !new_slots.iter().any(|(n, _)| n == s)
                })
            };
            let physical = match same {
                Some(physical) => physical,
                None => {
                    let Some(physical) = free() else {
                        return Err(limit(
                            "redirect slots",
                            DEVMAP,
                            live_slots.len() + unlisted.len() + update.redirect.len(),
                            SIDE_BY_SIDE,
                        ));
                    };
                    new_slots.push((physical, ifindex));
                    physical
                }
            };
            slots.insert(slot, physical);
        }

        let rules: Vec<GriffinRule> = encoded
            .iter()
            .map(|rule| {
                let mut rule = *rule;
                if rule.match_flags & types::match_flags::SRC != 0 {
                    rule.src_set = set_bits[&rule.src_set];
                }
                if rule.match_flags & types::match_flags::DST != 0 {
                    rule.dst_set = set_bits[&rule.dst_set];
                }
                if rule.action == types::action::REDIRECT {
                    rule.target = slots.get(&rule.target).copied().unwrap_or(rule.target);
                }
                rule
            })
            .collect();

        // The tries while both rule sets may be in force, and after.
        let keys = |sets: &mut dyn Iterator<Item = (&u8, &BTreeSet<Prefix>)>| {
            let mut keys: BTreeMap<Prefix, u64> = BTreeMap::new();
            for (bit, members) in sets {
                for prefix in members {
                    *keys.entry(*prefix).or_default() |= 1 << bit;
                }
            }
            lpm_values(&keys)
        };
        let during = keys(&mut live.iter().chain(&taken));
        let after = keys(&mut taken.iter());
        for (what, map, v6) in [
            ("IPv4 prefixes", LPM_V4, false),
            ("IPv6 prefixes", LPM_V6, true),
        ] {
            let needed = during.keys().filter(|p| p.addr().is_ipv6() == v6).count();
            if needed > MAX_PREFIXES as usize {
                return Err(limit(what, map, needed, SIDE_BY_SIDE));
            }
        }
        Ok(Plan {
            current,
            rules,
            have,
            during,
            after,
            set_bits,
            slots,
            new_slots,
            old_slots: live_slots.into_keys().collect(),
        })
    }

    /// Makes the tries hold `want`: first removes the entries it lacks, then
    /// writes those that differ. Each write leaves every address's sets
    /// exact for the bits both `have` and `want` agree on (an entry's value
    /// is the union of the sets of every prefix containing it), so neither
    /// rule set sees a change of the bits it uses. `have` follows.
    fn write_trie(
        &mut self,
        want: &BTreeMap<Prefix, u64>,
        have: &mut BTreeMap<Prefix, u64>,
    ) -> Result<(), Error> {
        let stale: Vec<Prefix> = have
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for prefix in stale {
            self.trie_write(prefix, None)?;
            have.remove(&prefix);
        }
        // Changed values before new entries: kernels before 6.13 refuse
        // even an in-place update of a full trie (ENOSPC).
        let (changed, added): (Vec<_>, Vec<_>) = want
            .iter()
            .filter(|(prefix, bits)| have.get(prefix) != Some(bits))
            .partition(|(prefix, _)| have.contains_key(prefix));
        for (&prefix, &bits) in changed.into_iter().chain(added) {
            self.trie_write(prefix, Some(bits))?;
            have.insert(prefix, bits);
        }
        Ok(())
    }

    /// Inserts (or replaces) `prefix` with `bits`, or removes it.
    fn trie_write(&mut self, prefix: Prefix, bits: Option<u64>) -> Result<(), Error> {
        let len = u32::from(prefix.prefix_len());
        match prefix.addr() {
            IpAddr::V4(addr) => {
                self.fault(LPM_V4)?;
                let key = Key::new(len, addr.octets());
                match bits {
                    Some(sets) => self.lpm_v4.insert(&key, GriffinLpmValue { sets }, 0),
                    None => self.lpm_v4.remove(&key),
                }
                .map_err(map_err(LPM_V4))
            }
            IpAddr::V6(addr) => {
                self.fault(LPM_V6)?;
                let key = Key::new(len, addr.octets());
                match bits {
                    Some(sets) => self.lpm_v6.insert(&key, GriffinLpmValue { sets }, 0),
                    None => self.lpm_v6.remove(&key),
                }
                .map_err(map_err(LPM_V6))
            }
        }
    }

    /// Every entry of both tries.
    fn trie_entries(&self) -> Result<BTreeMap<Prefix, u64>, Error> {
        let bad = |name: &'static str| {
            move |e: crate::PrefixError| {
                map_err(name)(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        };
        let mut out = BTreeMap::new();
        for entry in self.lpm_v4.iter() {
            let (key, value) = entry.map_err(map_err(LPM_V4))?;
            let len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
            let prefix = Prefix::new(IpAddr::from(key.data()), len).map_err(bad(LPM_V4))?;
            out.insert(prefix, value.sets);
        }
        for entry in self.lpm_v6.iter() {
            let (key, value) = entry.map_err(map_err(LPM_V6))?;
            let len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
            let prefix = Prefix::new(IpAddr::from(key.data()), len).map_err(bad(LPM_V6))?;
            out.insert(prefix, value.sets);
        }
        Ok(out)
    }

    /// After the switch: the tries keep only the new rule set's prefixes,
    /// and the devmap only the slots of rules in force.
    fn remove_leftovers(
        &mut self,
        plan: &Plan,
        have: &mut BTreeMap<Prefix, u64>,
        switched: bool,
    ) -> Result<(), Error> {
        self.write_trie(&plan.after, have)?;
        if switched {
            let used = redirect_slots(&plan.rules);
            for &slot in plan.old_slots.iter().filter(|s| !used.contains(s)) {
                self.fault(DEVMAP)?;
                self.remove_redirect_target(slot)?;
            }
        }
        Ok(())
    }

    /// Switches the program to `rules` (with physical set bits and slots):
    /// they and their classification tables go into the inactive bank, then
    /// one 32-bit write flips the bank in use.
    fn switch_bank(&mut self, encoded: &[GriffinRule]) -> Result<(), Error> {
        let next = self.active_bank()? ^ 1;
        let tables = classes::build(encoded, next);
        let base = next * MAX_RULES;
        // The inactive bank still holds the rule set before the active one,
        // whose counts are part of the per-action totals. Fold them into
        // the retired totals and empty the bank's record in one write, so
        // that a reader of the counters counts them exactly once; only
        // then are its counters zeroed. (The program stopped counting into
        // this bank at the flip that made it inactive.)
        let old = self.bank_rules(&self.config()?, next)?;
        let mut retired = Vec::with_capacity(old.len());
        for rule in &old {
            retired.push((rule.action, self.counter_of(next, rule.id)?));
        }
        self.fault(CONFIG)?;
        self.update_config(|config| {
            for (action, counter) in retired {
                add(&mut config.retired[action_index(action)], counter);
            }
            config.rule_count[next as usize] = 0;
        })?;
        // The new rule set starts from zero: clear the inactive bank's
        // counters of every id it held and of every id it will hold (so
        // `rule_counter` never shows a count from two swaps ago).
        let clear: BTreeSet<u32> = old.iter().chain(encoded).map(|rule| rule.id).collect();
        self.clear_rule_counters(next, &clear)?;
        // The inactive bank (one update): the program does not read it
        // until the flip below. The box itself: `*tables.bank` would copy
        // 700 KiB to the stack.
        self.fault(BANKS)?;
        self.banks
            .set(next, tables.bank, 0)
            .map_err(map_err(BANKS))?;
        for (index, rule) in (base..).zip(encoded) {
            self.fault(RULES)?;
            self.rules.set(index, rule, 0).map_err(map_err(RULES))?;
        }
        // The record of the inactive bank, then the flip: one 32-bit word
        // the program reads (a loader stopped before it leaves the old rule
        // set in use, for the program and for this record alike).
        self.fault(CONFIG)?;
        self.update_config(|config| config.rule_count[next as usize] = encoded.len() as u32)?;
        self.fault(ACTIVE)?;
        self.active.set(0, next, 0).map_err(map_err(ACTIVE))?;
        tracing::debug!(rules = encoded.len(), bank = next, "rule set switched");
        Ok(())
    }

    /// Tests: fails the map write about to be made when it is the one
    /// [`Datapath::fail_write`] names.
    fn fault(&mut self, map: &'static str) -> Result<(), Error> {
        #[cfg(test)]
        if let Some(n) = self.fail_write {
            if n == 0 {
                self.fail_write = None;
                return Err(map_err(map)(io::Error::other("injected failure")));
            }
            self.fail_write = Some(n - 1);
        }
        let _ = map;
        Ok(())
    }

    /// The active rule set as stored, in match order.
    pub fn active_rules(&self) -> Result<Vec<GriffinRule>, Error> {
        self.bank_rules(&self.config()?, self.active_bank()?)
    }

    /// The rules `config` records for `bank`, in match order.
    fn bank_rules(&self, config: &GriffinConfig, bank: u32) -> Result<Vec<GriffinRule>, Error> {
        let count = config.rule_count[bank as usize].min(MAX_RULES);
        (0..count)
            .map(|i| {
                self.rules
                    .get(&(bank * MAX_RULES + i), 0)
                    .map_err(map_err(RULES))
            })
            .collect()
    }

    /// Sets the prefix sets the next [`Datapath::set_rules`] applies with its
    /// rules (nothing is written before: the rules and their sets change
    /// together). Refuses sets with more prefixes of a family than a trie
    /// holds.
    pub fn set_prefix_sets(&mut self, sets: &PrefixSets) -> Result<(), Error> {
        for (what, map, v6) in [
            ("IPv4 prefixes", LPM_V4, false),
            ("IPv6 prefixes", LPM_V6, true),
        ] {
            let needed = sets
                .entries()
                .iter()
                .filter(|(p, _)| p.addr().is_ipv6() == v6)
                .count();
            if needed > MAX_PREFIXES as usize {
                return Err(limit(what, map, needed, ""));
            }
        }
        self.sets = sets.clone();
        Ok(())
    }

    /// Points devmap `slot` ([`crate::Action::Redirect`]) at interface
    /// `ifindex`, and remembers it as a redirect target that
    /// [`Datapath::sync_redirect_targets`] (the link watcher,
    /// [`crate::linkwatch`]) withdraws while it is down and restores.
    ///
    /// The kernel resolves `ifindex` in the calling thread's network
    /// namespace (so do [`Datapath::sync_redirect_targets`] restores): call
    /// it from the namespace of the attached interface.
    pub fn set_redirect_target(&mut self, slot: u32, ifindex: u32) -> Result<(), Error> {
        self.devmap
            .set(slot, ifindex, self.egress.as_ref(), 0)
            .map_err(|e| map_err(DEVMAP)(e))?;
        self.redirect_targets.insert(slot, ifindex);
        self.installed_targets.insert(slot);
        Ok(())
    }

    /// Runs `program` (an XDP program loaded for `BPF_XDP_DEVMAP`, e.g.
    /// [`crate::podpath::PodPath::l2_program`]) on every frame redirected to
    /// any redirect target from now on, or none; the targets installed
    /// now are rewritten with it.
    pub fn set_egress_program(&mut self, program: Option<&ProgramFd>) -> Result<(), Error> {
        self.egress = program
            .map(ProgramFd::try_clone)
            .transpose()
            .map_err(|e| Error::Program(Box::new(e)))?;
        let installed: Vec<(u32, u32)> = self
            .installed_targets
            .iter()
            .filter_map(|slot| Some((*slot, *self.redirect_targets.get(slot)?)))
            .collect();
        for (slot, ifindex) in installed {
            self.devmap
                .set(slot, ifindex, self.egress.as_ref(), 0)
                .map_err(|e| map_err(DEVMAP)(e))?;
        }
        Ok(())
    }

    /// Forgets the redirect target at devmap `slot` and empties the slot
    /// (frames for it fall back to the stack).
    pub fn remove_redirect_target(&mut self, slot: u32) -> Result<(), Error> {
        self.devmap_delete(slot)?;
        self.redirect_targets.remove(&slot);
        self.installed_targets.remove(&slot);
        Ok(())
    }

    /// The redirect targets asked for (devmap slot -> ifindex), whether or
    /// not they are installed right now.
    pub fn redirect_targets(&self) -> &BTreeMap<u32, u32> {
        &self.redirect_targets
    }

    /// The ifindex stored in devmap `slot` as the kernel has it (`None`:
    /// empty, e.g. withdrawn by [`Datapath::sync_redirect_targets`] or
    /// removed by the kernel when the interface was deleted).
    pub fn redirect_target(&self, slot: u32) -> Result<Option<u32>, Error> {
        match self.devmap.get(slot, 0) {
            Ok(entry) => Ok(Some(entry.if_index)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(DEVMAP)(e)),
        }
    }

    /// Makes the devmap follow the targets' link state: every redirect
    /// target for which `usable(ifindex)` is false is removed from the
    /// devmap (the program then falls back to `XDP_PASS` and counts a
    /// fallback instead of losing the frame), and every usable one that was
    /// removed is restored. Only slots whose state changes are written.
    pub fn sync_redirect_targets(
        &mut self,
        mut usable: impl FnMut(u32) -> bool,
    ) -> Result<Vec<TargetChange>, Error> {
        let mut changes = Vec::new();
        let targets: Vec<(u32, u32)> = self
            .redirect_targets
            .iter()
            .map(|(s, i)| (*s, *i))
            .collect();
        for (slot, ifindex) in targets {
            let up = usable(ifindex);
            let installed = self.installed_targets.contains(&slot);
            if up && !installed {
                self.devmap
                    .set(slot, ifindex, self.egress.as_ref(), 0)
                    .map_err(|e| map_err(DEVMAP)(e))?;
                self.installed_targets.insert(slot);
                changes.push(TargetChange::Restored { slot, ifindex });
            } else if !up && installed {
                self.devmap_delete(slot)?;
                self.installed_targets.remove(&slot);
                changes.push(TargetChange::Withdrawn { slot, ifindex });
            }
        }
        Ok(changes)
    }

    /// `BPF_MAP_DELETE_ELEM` on the devmap; an empty slot is not an error.
    fn devmap_delete(&self, slot: u32) -> Result<(), Error> {
        /// The `bpf_attr` layout of the map element commands.
        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        /// `BPF_MAP_DELETE_ELEM` (linux/bpf.h).
        const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
        let attr = ElemAttr {
            map_fd: self.devmap_fd.as_raw_fd() as u32,
            pad: 0,
            key: &slot as *const u32 as u64,
            value: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a fully initialised `bpf_attr` prefix for the
        // element commands, its size is passed, and `key` points at a live
        // u32, the devmap's key size; the kernel only reads both.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_DELETE_ELEM,
                &attr as *const ElemAttr,
                size_of::<ElemAttr>(),
            )
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ENOENT) {
                return Err(map_err(DEVMAP)(error));
            }
        }
        Ok(())
    }

    /// Points cpumap entry `cpu` ([`crate::Action::Cpu`]) at that CPU with a
    /// queue of `queue_size` frames.
    pub fn set_cpu_target(&mut self, cpu: u32, queue_size: u32) -> Result<(), Error> {
        self.cpumap
            .set(cpu, queue_size, None, 0)
            .map_err(|e| map_err(CPUMAP)(e))
    }

    /// Stores the AF_XDP socket `socket` at xskmap `queue` ([`crate::Action::Xsk`]).
    pub fn set_xsk(&mut self, queue: u32, socket: impl AsRawFd) -> Result<(), Error> {
        self.xskmap.set(queue, socket, 0).map_err(map_err(XSKMAP))
    }

    fn counter(
        map: &PerCpuArray<MapData, GriffinCounter>,
        name: &'static str,
        index: u32,
    ) -> Result<Counter, Error> {
        map.get(&index, 0).map(|v| sum(&v)).map_err(map_err(name))
    }

    /// The counter of rule `id` (`< MAX_RULES`) of the active rule set,
    /// summed over CPUs. Every [`Datapath::set_rules`] starts its rules from
    /// zero (the action and stat counters keep their totals).
    pub fn rule_counter(&self, id: u32) -> Result<Counter, Error> {
        self.counter_of(self.active_bank()?, id)
    }

    /// The counter of rule `id` in `bank`, summed over CPUs.
    fn counter_of(&self, bank: u32, id: u32) -> Result<Counter, Error> {
        Self::counter(&self.rule_stats, RULE_STATS, bank * MAX_RULES + id)
    }

    /// Zeroes the per-rule counters of `ids` in `bank` on every CPU.
    fn clear_rule_counters(&mut self, bank: u32, ids: &BTreeSet<u32>) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| map_err(RULE_STATS)(e))?;
        for &id in ids.iter().filter(|&&id| id < MAX_RULES) {
            let zero = aya::maps::PerCpuValues::try_from(vec![GriffinCounter::default(); cpus])
                .map_err(map_err(RULE_STATS))?;
            self.fault(RULE_STATS)?;
            self.rule_stats
                .set(bank * MAX_RULES + id, zero, 0)
                .map_err(map_err(RULE_STATS))?;
        }
        Ok(())
    }

    /// Every counter, summed over CPUs.
    ///
    /// The program counts a matched frame in its rule's counter only; the
    /// per-action totals are derived here ([`ActionTotals`]) from the rules
    /// of both banks, the fallback counters and the totals of replaced rule
    /// sets. A rule set replaced during the read moves counts from a bank
    /// to those totals, so the read is made again until none was: a total
    /// never goes backwards.
    pub fn counters(&self) -> Result<Counters, Error> {
        for _ in 0..COUNTER_READ_TRIES {
            let config = self.config()?;
            // The stats before the rules: a fallback is counted after its
            // rule's counter, and is deducted from the rule's action.
            let mut stats = [Counter::default(); types::stat::COUNT as usize];
            for (index, stat) in (0..).zip(&mut stats) {
                *stat = Self::counter(&self.stats, STATS, index)?;
            }
            let active = self.active_bank()?;
            let mut totals = ActionTotals::new(&config.retired, &stats);
            let mut rules = BTreeMap::new();
            for bank in 0..RULE_BANKS {
                for rule in self.bank_rules(&config, bank)? {
                    let counter = self.counter_of(bank, rule.id)?;
                    totals.add_rule(rule.action, counter);
                    if bank == active {
                        rules.insert(rule.id, counter);
                    }
                }
            }
            if self.config()?.generation != config.generation {
                continue;
            }
            return Ok(Counters {
                rules,
                actions: totals.actions(),
                parse_failures: stats[types::stat::PARSE_FAIL as usize],
                fallbacks: totals.fallbacks(),
                no_match: stats[types::stat::NO_MATCH as usize],
            });
        }
        Err(map_err(CONFIG)(io::Error::other(format!(
            "rule sets replaced during each of {COUNTER_READ_TRIES} reads of the counters"
        ))))
    }

    /// The loaded program's descriptor, for the benchmark diagnostics.
    pub(crate) fn prog_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (counters
    /// are updated as for a real frame). The kernel rejects frames shorter
    /// than 14 bytes with `EINVAL`.
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRun, Error> {
        let (retval, frame) = sys::test_run(self.prog.as_fd(), frame).map_err(Error::TestRun)?;
        Ok(TestRun {
            verdict: retval.into(),
            frame,
        })
    }

    /// Runs the program `repeat` times on `frame` in one `BPF_PROG_TEST_RUN`
    /// call and returns the kernel's mean time per run (benchmarks; see
    /// [`crate::bench`]). Counters are updated on every repetition.
    pub fn test_run_timed(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<crate::bench::TimedRun, Error> {
        crate::bench::timed(self.prog.as_fd(), frame, repeat).map_err(Error::TestRun)
    }
}

fn load_object() -> Result<Ebpf, Error> {
    let mut ebpf = Ebpf::load(OBJECT).map_err(|e| Error::Load(Box::new(e)))?;
    xdp_program(&mut ebpf)?
        .load()
        .map_err(|e| Error::Program(Box::new(e)))?;
    Ok(ebpf)
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(Error::Missing {
            what: "program",
            name: PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|e| Error::Program(Box::new(e)))
}

fn attach_with_fallback(
    program: &mut Xdp,
    iface: &str,
    ifindex: u32,
    request: AttachMode,
) -> Result<(aya::programs::xdp::XdpLinkId, XdpMode, Option<String>), Error> {
    let attach = |program: &mut Xdp, mode: XdpMode| {
        program
            .attach_to_if_index(ifindex, mode.flags())
            .map_err(|source| Error::Attach {
                iface: iface.to_owned(),
                mode,
                source: Box::new(source),
            })
    };
    match request {
        AttachMode::Native => Ok((attach(program, XdpMode::Native)?, XdpMode::Native, None)),
        AttachMode::Generic => Ok((attach(program, XdpMode::Generic)?, XdpMode::Generic, None)),
        AttachMode::Auto => match attach(program, XdpMode::Native) {
            Ok(id) => Ok((id, XdpMode::Native, None)),
            Err(native) => {
                let reason = griffin_devices::Chain(&native).to_string();
                tracing::info!(iface, %reason, "native XDP refused, falling back to generic mode");
                let id = attach(program, XdpMode::Generic)?;
                Ok((id, XdpMode::Generic, Some(reason)))
            }
        },
    }
}

/// Entries of the devmap, xskmap and cpumap (`GRIFFIN_DEVMAP_SIZE` etc.).
const TARGET_SLOTS: u32 = 256;
/// Where the prefix-set bits are: the values of both tries.
const SET_BITS: &str = "griffin_lpm_v4/griffin_lpm_v6 values";
/// Why an update needs room for two rule sets.
const SIDE_BY_SIDE: &str = "; the rule set in force and the new one side by side until the switch";
static EMPTY: BTreeSet<Prefix> = BTreeSet::new();

/// What [`Datapath::update`] writes, worked out before any write.
struct Plan {
    /// The rules in force.
    current: Vec<GriffinRule>,
    /// The new rules with the set bits and slots they get.
    rules: Vec<GriffinRule>,
    /// The tries as they are.
    have: BTreeMap<Prefix, u64>,
    /// The tries while both rule sets may be in force.
    during: BTreeMap<Prefix, u64>,
    /// The tries after the switch.
    after: BTreeMap<Prefix, u64>,
    /// Set as the rules name it -> bit.
    set_bits: BTreeMap<u8, u8>,
    /// Listed slot -> devmap slot.
    slots: BTreeMap<u32, u32>,
    /// Devmap slots to fill before the switch, with their ifindex.
    new_slots: Vec<(u32, u32)>,
    /// Devmap slots of the rules in force.
    old_slots: BTreeSet<u32>,
}

/// An [`Error::Limit`]; the limit is the map's size (the trie's for the
/// LPM maps, else a target map's) unless `limit` says otherwise.
fn limit(what: &'static str, map: &'static str, needed: usize, why: &'static str) -> Error {
    let limit = match map {
        LPM_V4 | LPM_V6 => MAX_PREFIXES as usize,
        SET_BITS => usize::from(MAX_PREFIX_SETS),
        _ => TARGET_SLOTS as usize,
    };
    Error::Limit {
        what,
        map,
        needed,
        limit,
        why,
    }
}

/// The prefix-set bits `rules` match on.
fn set_bits_of(rules: &[GriffinRule]) -> BTreeSet<u8> {
    let mut bits = BTreeSet::new();
    for rule in rules {
        if rule.match_flags & types::match_flags::SRC != 0 {
            bits.insert(rule.src_set);
        }
        if rule.match_flags & types::match_flags::DST != 0 {
            bits.insert(rule.dst_set);
        }
    }
    bits
}

/// The devmap slots `rules` redirect to.
fn redirect_slots(rules: &[GriffinRule]) -> BTreeSet<u32> {
    rules
        .iter()
        .filter(|rule| rule.action == types::action::REDIRECT)
        .map(|rule| rule.target)
        .collect()
}

/// The file name `map` is pinned under.
fn pin_name(map: &str) -> &str {
    if map == ACTIVE {
        ACTIVE_PIN
    } else {
        map
    }
}

/// Maps earlier versions pinned that this one no longer has: removed with
/// the rest, so that an upgrade can purge the old state.
const RETIRED_MAPS: [&str; 3] = ["griffin_classes", "griffin_bitmaps", "griffin_astats"];

/// Removes the pins Griffin creates in `dir` (and those of earlier
/// versions), then `dir` itself.
fn remove_pins(dir: &Path) -> Result<(), Error> {
    let names = MAPS
        .iter()
        .map(|(name, _)| pin_name(name))
        .chain(RETIRED_MAPS)
        .chain([LINK_PIN, PROGRAM_PIN]);
    for name in names {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

// The bank flip in `set_rules` assumes exactly two banks.
const _: () = assert!(RULE_BANKS == 2);

#[cfg(test)]
mod tests {
    use super::*;
    use types::{action, stat};

    fn c(packets: u64) -> Counter {
        Counter {
            packets,
            bytes: packets * 100,
        }
    }

    /// An Ethernet + IPv4 + UDP frame.
    fn udp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 16];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(20u16 + 8 + 16).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&4242u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..40].copy_from_slice(&(8u16 + 16).to_be_bytes());
        f
    }

    /// What the program does with each probe: its verdict and the rule
    /// (id) that matched, if one did.
    fn behaviour(dp: &Datapath, probes: &[Vec<u8>]) -> Vec<(XdpVerdict, Option<u32>)> {
        probes
            .iter()
            .map(|frame| {
                let before = dp.counters().unwrap().rules;
                let verdict = dp.test_run(frame).unwrap().verdict;
                let after = dp.counters().unwrap().rules;
                let matched = after
                    .iter()
                    .find(|(id, c)| before.get(id).map_or(0, |b| b.packets) < c.packets)
                    .map(|(id, _)| *id);
                (verdict, matched)
            })
            .collect()
    }

    fn prefixes(list: &[&str]) -> Vec<Prefix> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    /// Rule 0 drops UDP from set 0, rule 1 redirects dport 7000 to slot 0,
    /// rule 2 drops UDP to set 1 on dport 7001.
    fn rule_set(src: &[Prefix], dst: &[Prefix]) -> (Vec<Rule>, PrefixSets) {
        use crate::Action;
        let mut sets = PrefixSets::new();
        for p in src {
            sets.insert(0, *p).unwrap();
        }
        for p in dst {
            sets.insert(1, *p).unwrap();
        }
        let rules = vec![
            Rule::new(0, 1, Action::Drop).ip_proto(17).src_set(0),
            Rule::new(1, 2, Action::Redirect { slot: 0 }).dst_ports(7000..=7000),
            Rule::new(2, 3, Action::Drop)
                .ip_proto(17)
                .dst_set(1)
                .dst_ports(7001..=7001),
        ];
        (rules, sets)
    }

    /// Issue 14 D1, the class: a failure at any single map write of an
    /// update (injected through the `fault` seam, every write in turn)
    /// leaves the old rule set in force exactly (same verdict and same
    /// matching rule for every probe, same rules, counters and redirect
    /// targets), and the next update still works. Needs root
    /// (`BPF_PROG_TEST_RUN`, a private network namespace with a veth).
    #[test]
    fn a_failure_at_any_map_write_leaves_the_old_rules_exactly_in_force() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            for args in [
                &["link", "set", "lo", "up"][..],
                &[
                    "link", "add", "gfe0", "type", "veth", "peer", "name", "gfe1",
                ],
                &["link", "set", "gfe0", "up"],
                &["link", "set", "gfe1", "up"],
            ] {
                let out = std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "ip {args:?}: {out:?}");
            }
            let (lo, veth) = (ifindex("lo").unwrap(), ifindex("gfe0").unwrap());
            every_failure_point(lo, veth);
        })
        .join()
        .unwrap();
    }

    fn every_failure_point(lo: u32, veth: u32) {
        let (rules_a, sets_a) = rule_set(
            &prefixes(&["198.19.1.0/24", "198.19.2.5/32", "2001:db8:19::/48"]),
            &prefixes(&["198.18.9.0/24"]),
        );
        // B: other sources (one more specific inside A's /24, and the host
        // A lets through), the same destinations (their bit is shared) and
        // another redirect target (a new slot).
        let (rules_b, sets_b) = rule_set(
            &prefixes(&[
                "198.18.40.2/32",
                "198.19.1.128/25",
                "198.20.0.0/16",
                "2001:db8:20::/48",
            ]),
            &prefixes(&["198.18.9.0/24"]),
        );
        let a = Update {
            rules: &rules_a,
            sets: &sets_a,
            redirect: &[(0, lo)],
            cpus: &[],
        };
        let b = Update {
            rules: &rules_b,
            sets: &sets_b,
            redirect: &[(0, veth)],
            cpus: &[],
        };
        let mut probes = Vec::new();
        for src in [
            [198, 19, 1, 7],
            [198, 19, 1, 200],
            [198, 19, 2, 5],
            [198, 18, 40, 2],
            [198, 20, 3, 4],
            [198, 21, 0, 1],
        ] {
            for (dst, dport) in [
                ([198, 18, 9, 1], 7001),
                ([198, 18, 8, 1], 7001),
                ([198, 18, 9, 1], 7000),
                ([198, 18, 8, 1], 9),
            ] {
                probes.push(udp4(src, dst, dport));
            }
        }
        let mut dp = Datapath::load().unwrap();
        let applied_a = dp.update(&a).unwrap();
        let expect_a = behaviour(&dp, &probes);
        assert!(
            expect_a.contains(&(XdpVerdict::Drop, Some(0))),
            "{expect_a:?}"
        );
        assert!(
            expect_a.contains(&(XdpVerdict::Redirect, Some(1))),
            "{expect_a:?}"
        );
        assert!(
            expect_a.contains(&(XdpVerdict::Drop, Some(2))),
            "{expect_a:?}"
        );
        let stored_a = dp.active_rules().unwrap();
        let slot_a = applied_a.slots[&0];

        let (mut failed, mut points) = (0, 0);
        for n in 0.. {
            dp.fail_write = Some(n);
            let before = dp.counters().unwrap();
            let result = dp.update(&b);
            let injected = dp.fail_write.is_none();
            dp.fail_write = None;
            match result {
                Err(e) => {
                    assert!(injected, "{e}");
                    failed += 1;
                    assert_eq!(dp.active_rules().unwrap(), stored_a, "write {n}");
                    assert_eq!(dp.counters().unwrap(), before, "write {n}");
                    assert_eq!(dp.redirect_target(slot_a).unwrap(), Some(lo), "write {n}");
                    assert_eq!(behaviour(&dp, &probes), expect_a, "write {n}: {e}");
                }
                Ok(applied) => {
                    // A failure after the switch: the new rules are in
                    // force (leftovers go with the next update).
                    assert_eq!(dp.redirect_target(applied.slots[&0]).unwrap(), Some(veth));
                    let expect_b = behaviour(&dp, &probes);
                    assert_ne!(expect_b, expect_a);
                    assert!(
                        expect_b.contains(&(XdpVerdict::Drop, Some(0))),
                        "{expect_b:?}"
                    );
                    if !injected {
                        points = n;
                        break;
                    }
                    dp.update(&a).unwrap();
                    assert_eq!(
                        behaviour(&dp, &probes),
                        expect_a,
                        "back to A after write {n}"
                    );
                }
            }
        }
        assert!(
            failed >= 10 && points > failed / 2,
            "{failed} failed of {points} writes"
        );
        // Clean after the last update: only B's prefixes are stored, and
        // A's redirect slot is gone unless B shares it.
        let stored: BTreeSet<Prefix> = dp.trie_entries().unwrap().into_keys().collect();
        let want: BTreeSet<Prefix> = sets_b.members().into_values().flatten().collect();
        assert_eq!(stored, want);
        assert_eq!(dp.redirect_targets().values().collect::<Vec<_>>(), [&veth]);
        // The same update again is not a replacement.
        assert!(!dp.update(&b).unwrap().switched);
    }

    /// Every limit is checked before the first map write (the `fault`
    /// seam fails that write: a limit error instead proves none was made)
    /// and its error names it. Needs root (`BPF_PROG_TEST_RUN` maps).
    #[test]
    fn the_limits_are_checked_before_any_write_and_named() {
        use crate::Action;
        let mut dp = Datapath::load().unwrap();
        let refused = |dp: &mut Datapath, update: &Update<'_>| {
            dp.fail_write = Some(0);
            let err = dp.update(update).unwrap_err();
            assert!(dp.fail_write.is_some(), "a map was written: {err}");
            dp.fail_write = None;
            err.to_string()
        };
        let drop_from = |set: u8| Rule::new(u32::from(set), 1, Action::Drop).src_set(set);
        // Trie entries.
        let mut many = PrefixSets::new();
        for i in 0..=MAX_PREFIXES {
            let addr = std::net::Ipv4Addr::from(0xc612_0000 + (i << 2));
            many.insert(0, Prefix::new(IpAddr::V4(addr), 30).unwrap())
                .unwrap();
        }
        let update = Update {
            rules: &[drop_from(0)],
            sets: &many,
            redirect: &[],
            cpus: &[],
        };
        assert_eq!(
            refused(&mut dp, &update),
            "IPv4 prefixes: the update needs 16385, the limit is 16384 (map griffin_lpm_v4); \
             the rule set in force and the new one side by side until the switch"
        );
        assert!(dp
            .set_prefix_sets(&many)
            .unwrap_err()
            .to_string()
            .contains("16384"));
        // Set bits: 40 sets in force, 40 others asked for.
        let sets_of = |base: u8| {
            let mut sets = PrefixSets::new();
            let rules: Vec<Rule> = (0..40).map(drop_from).collect();
            for set in 0..40u8 {
                let addr = std::net::Ipv4Addr::new(198, 18, base, set);
                sets.insert(set, Prefix::new(IpAddr::V4(addr), 32).unwrap())
                    .unwrap();
            }
            (rules, sets)
        };
        let (rules, sets) = sets_of(1);
        dp.update(&Update {
            rules: &rules,
            sets: &sets,
            redirect: &[],
            cpus: &[],
        })
        .unwrap();
        let (rules, sets) = sets_of(2);
        let text = refused(
            &mut dp,
            &Update {
                rules: &rules,
                sets: &sets,
                redirect: &[],
                cpus: &[],
            },
        );
        assert!(
            text.starts_with("prefix sets: the update needs 80, the limit is 64"),
            "{text}"
        );
        // Rules and targets.
        let too_many: Vec<Rule> = (0..=MAX_RULES)
            .map(|id| Rule::new(id, 1, Action::Pass))
            .collect();
        let update = Update {
            rules: &too_many,
            sets: &PrefixSets::new(),
            redirect: &[],
            cpus: &[],
        };
        assert!(refused(&mut dp, &update).contains("more than 1024 rules"));
        let update = Update {
            rules: &[Rule::new(0, 1, Action::Redirect { slot: 300 })],
            sets: &PrefixSets::new(),
            redirect: &[],
            cpus: &[],
        };
        assert_eq!(
            refused(&mut dp, &update),
            "rule 0: target 300 must be below 256"
        );
        let update = Update {
            rules: &[],
            sets: &PrefixSets::new(),
            redirect: &[],
            cpus: &[(256, 64)],
        };
        assert!(refused(&mut dp, &update).contains("the limit is 256 (map griffin_cpumap)"));
    }

    #[test]
    fn errors_name_the_map_and_leave_the_cause_to_the_chain() {
        let err = map_err(LPM_V4)(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(err.to_string(), "map griffin_lpm_v4");
        let chain = griffin_devices::Chain(&err).to_string();
        assert_eq!(
            chain.matches("No space left on device").count(),
            1,
            "{chain}"
        );
        assert!(chain.starts_with("map griffin_lpm_v4: "), "{chain}");
    }

    #[test]
    fn attach_mode_names_round_trip() {
        for mode in AttachMode::ALL {
            assert_eq!(mode.to_string().parse::<AttachMode>(), Ok(mode));
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
            assert_eq!(serde_json::from_str::<AttachMode>(&json).unwrap(), mode);
        }
        assert_eq!(AttachMode::default(), AttachMode::Auto);
        let err = "drv".parse::<AttachMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "attach mode \"drv\": expected auto, native or generic"
        );
        assert!(AttachMode::Native.excludes(XdpMode::Generic));
        assert!(AttachMode::Generic.excludes(XdpMode::Native));
        assert!(!AttachMode::Auto.excludes(XdpMode::Generic));
        assert!(!AttachMode::Native.excludes(XdpMode::Native));
    }

    #[test]
    fn action_totals_deduct_fallbacks_and_pass_them() {
        let mut retired = [Counter::default(); action::COUNT as usize];
        retired[usize::from(action::REDIRECT)] = c(10);
        retired[usize::from(action::DROP)] = c(1);
        let mut stats = [Counter::default(); stat::COUNT as usize];
        stats[stat::PARSE_FAIL as usize] = c(2);
        stats[stat::NO_MATCH as usize] = c(3);
        stats[stat::FALLBACK_REDIRECT as usize] = c(4);
        stats[stat::FALLBACK_CPU as usize] = c(1);
        let mut totals = ActionTotals::new(&retired, &stats);
        totals.add_rule(action::REDIRECT, c(5));
        totals.add_rule(action::CPU, c(1));
        totals.add_rule(action::XSK, c(7));
        totals.add_rule(action::PASS, c(20));
        // An action the program does not know is passed.
        totals.add_rule(200, c(6));
        let actions = totals.actions();
        assert_eq!(actions.redirect, c(10 + 5 - 4));
        assert_eq!(actions.cpu, c(0));
        assert_eq!(actions.xsk, c(7));
        assert_eq!(actions.drop, c(1));
        assert_eq!(actions.pass, c(20 + 6 + 2 + 3 + 4 + 1));
        assert_eq!(totals.fallbacks(), c(5));
        // Every counted frame is in exactly one action.
        let all = sum(&[
            actions.pass,
            actions.drop,
            actions.redirect,
            actions.xsk,
            actions.cpu,
        ]);
        assert_eq!(all, c(10 + 1 + 2 + 3 + 5 + 1 + 7 + 20 + 6));
    }
}
