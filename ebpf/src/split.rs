//! An XDP split: the classifier attached to one interface with the rules of
//! a rules file, as `griffin xdp attach` and the daemon keep it.
//!
//! [`attach`] attaches the classifier (or adopts the attachment pinned by
//! an earlier run and updates its rules), and writes the file's rules with
//! the prefix sets and redirect and CPU targets they need in one atomic
//! [`Datapath::update`], all or nothing for a new attachment too;
//! it records what the maps do not hold (rule names, redirect interfaces,
//! the prefixes of each set) in `<meta_dir>/<iface>.json` ([`Meta`]).
//! [`detach`] removes the attachment, its pins and that record. What an
//! operator should know but that does not stop the split (a purged
//! incompatible pin set, a mode that could not be honoured, an unwritten
//! record) comes back as [`Warning`] values for the caller to print or log.
//!
//! [`Split::watch_links`] starts the link watcher ([`crate::linkwatch`]) of
//! a split on a thread of its own.

use std::{
    collections::BTreeMap,
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

use griffin_devices::Chain;
use serde::{Deserialize, Serialize};

use crate::{
    linkwatch::{LinkWatcher, WatchError},
    pin_dir,
    rules_file::{self, RulesFile, RulesFileError},
    AttachMode, AttachOptions, Counters, Datapath, Error, Update, XdpMode, DEFAULT_BPFFS,
};

/// Where the records of attached interfaces go by default.
pub const META_DIR: &str = "/run/griffin/xdp";
/// cpumap queue size for `cpu` actions, in frames.
pub const CPU_QUEUE: u32 = 2048;
/// How often a split's link watcher re-checks its targets without events.
pub const WATCH_TICK: Duration = Duration::from_millis(200);

/// Where a split keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPaths {
    /// bpffs mount point (pins go to `<bpffs>/griffin/<iface>/`).
    pub bpffs: PathBuf,
    /// Directory of the [`Meta`] records, `<meta_dir>/<iface>.json`.
    pub meta_dir: PathBuf,
}

impl Default for SplitPaths {
    fn default() -> Self {
        Self {
            bpffs: PathBuf::from(DEFAULT_BPFFS),
            meta_dir: PathBuf::from(META_DIR),
        }
    }
}

impl SplitPaths {
    /// The default record directory with pins under `bpffs`.
    pub fn with_bpffs(bpffs: &Path) -> Self {
        Self {
            bpffs: bpffs.to_owned(),
            ..Self::default()
        }
    }

    /// The [`Meta`] record of `iface`.
    pub fn meta_path(&self, iface: &str) -> PathBuf {
        self.meta_dir.join(format!("{iface}.json"))
    }
}

/// What [`attach`] records about a rule set (the maps hold only numbers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The rules file applied.
    pub rules_file: PathBuf,
    /// Rule names by id.
    pub names: Vec<String>,
    /// Interface of each devmap slot, as the stored rules name it.
    pub redirect: BTreeMap<u32, String>,
    /// Prefixes of each set, by set bit as the stored rules name it (a set
    /// the rules do not use is empty).
    pub sets: Vec<Vec<String>>,
    /// The run-time rules in force after the file's ([`Split::set_extra`]),
    /// so that an adopting [`attach`] keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraRule>,
}

/// A run-time rule as [`Meta`] keeps it: what [`RulesFile::push`] was
/// given. Only redirects are kept (run-time rules are pods' flows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraRule {
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: u32,
    /// Outer VLAN id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// IP protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_proto: Option<u8>,
    /// Destination ports, first and last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<(u16, u16)>,
    /// DSCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u8>,
    /// Source prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Vec<String>>,
    /// Destination prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Vec<String>>,
    /// The interface it redirects to.
    pub to: String,
}

/// `extra`'s rules as [`Meta`] keeps them (its redirects).
fn extra_records(extra: &RulesFile) -> Vec<ExtraRule> {
    let set = |bit: Option<u8>| {
        bit.and_then(|b| extra.sets.get(usize::from(b)))
            .map(|l| l.iter().map(ToString::to_string).collect())
    };
    extra
        .rules
        .iter()
        .zip(&extra.names)
        .filter_map(|(r, name)| {
            let crate::Action::Redirect { slot } = r.action else {
                return None;
            };
            let to = extra
                .redirect_targets
                .iter()
                .find(|t| t.slot == slot)?
                .iface
                .clone();
            Some(ExtraRule {
                name: name.clone(),
                priority: r.priority,
                vlan: r.vlan,
                ip_proto: r.ip_proto,
                dst_ports: r.dst_ports.as_ref().map(|p| (*p.start(), *p.end())),
                dscp: r.dscp,
                src: set(r.src_set),
                dst: set(r.dst_set),
                to,
            })
        })
        .collect()
}

/// The recorded run-time rules whose target still exists, as a rule set;
/// the others are dropped (their pod is gone), each named in the log.
fn recorded_extra(records: &[ExtraRule], iface: &str) -> RulesFile {
    let mut extra = RulesFile::default();
    for r in records {
        if ifindex(&r.to).is_err() {
            tracing::info!(iface, rule = %r.name, to = %r.to, "run-time rule dropped: its target is gone");
            continue;
        }
        let prefixes = |l: &Option<Vec<String>>| -> Result<Option<Vec<crate::Prefix>>, String> {
            l.as_ref()
                .map(|l| {
                    l.iter()
                        .map(|p| p.parse::<crate::Prefix>().map_err(|e| format!("{p}: {e}")))
                        .collect()
                })
                .transpose()
        };
        let mut rule = crate::Rule::new(0, r.priority, crate::Action::Redirect { slot: 0 });
        rule.vlan = r.vlan;
        rule.ip_proto = r.ip_proto;
        rule.dst_ports = r.dst_ports.map(|(a, b)| a..=b);
        rule.dscp = r.dscp;
        let pushed = prefixes(&r.src)
            .and_then(|src| Ok((src, prefixes(&r.dst)?)))
            .and_then(|(src, dst)| extra.push(&r.name, &rule, src, dst, Some(&r.to)));
        if let Err(error) = pushed {
            tracing::warn!(iface, rule = %r.name, error = %error, "recorded run-time rule not kept");
        }
    }
    extra
}

/// The record of `iface`; empty when there is none or it cannot be read
/// (the rules then show without names).
pub fn read_meta(paths: &SplitPaths, iface: &str) -> Meta {
    std::fs::read(paths.meta_path(iface))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_meta(paths: &SplitPaths, iface: &str, meta: &Meta) -> Result<(), (PathBuf, io::Error)> {
    let path = paths.meta_path(iface);
    std::fs::create_dir_all(&paths.meta_dir).map_err(|e| (paths.meta_dir.clone(), e))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| (tmp.clone(), io::Error::from(e)))?;
    std::fs::write(&tmp, bytes).map_err(|e| (tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| (path.clone(), e))
}

/// Why a split could not be attached, configured, adopted or detached.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The rules file could not be read (the cause names it).
    #[error("rules file")]
    RulesFileAccess(#[source] RulesFileError),
    /// The rules file is invalid.
    #[error("rules file {path}")]
    RulesFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: RulesFileError,
    },
    /// `/sys/class/net/<iface>/ifindex` holds no number.
    #[error("{path}: not an ifindex: {text:?}")]
    BadIfindex {
        /// The file.
        path: PathBuf,
        /// Its content.
        text: String,
    },
    /// `/sys/class/net/<iface>/ifindex` could not be read.
    #[error("reading {path}")]
    ReadIfindex {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A redirect target of the rules file does not exist.
    #[error("redirect target {iface}: no such interface")]
    NoTarget {
        /// The interface.
        iface: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Nothing is pinned for the interface.
    #[error("griffin xdp is not attached to {iface} (nothing pinned at {path})")]
    NotAttached {
        /// The interface.
        iface: String,
        /// The pin directory.
        path: PathBuf,
    },
    /// An operation of the loader on the interface failed.
    #[error("{what} {iface}")]
    Datapath {
        /// What was being done ("griffin xdp on", "attaching XDP to", ...).
        what: &'static str,
        /// The interface.
        iface: String,
        /// The failure.
        #[source]
        source: Error,
    },
    /// Writing the file's targets or rules into the maps failed.
    #[error("{what}")]
    Configure {
        /// What was being written.
        what: String,
        /// The failure.
        #[source]
        source: Error,
    },
    /// Rules added at run time do not fit with the file's.
    #[error("run-time rules on {iface}: {message}")]
    Extra {
        /// The interface.
        iface: String,
        /// What does not fit.
        message: String,
    },
    /// Starting a link watcher failed.
    #[error("link watcher for {iface}")]
    Watch {
        /// The interface.
        iface: String,
        /// The failure.
        #[source]
        source: WatchError,
    },
    /// Starting the link watcher's thread failed.
    #[error("starting the link watcher thread for {iface}")]
    Thread {
        /// The interface.
        iface: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn datapath_err<'a>(what: &'static str, iface: &'a str) -> impl FnOnce(Error) -> SplitError + 'a {
    move |source| SplitError::Datapath {
        what,
        iface: iface.to_owned(),
        source,
    }
}

/// Something the operator should know that did not stop the operation.
#[derive(Debug)]
pub enum Warning {
    /// A loader of another version pinned the interface's state: it was
    /// purged and the classifier attached afresh (frames took the stack
    /// meanwhile).
    IncompatiblePurged {
        /// Why the pins could not be adopted.
        error: Error,
    },
    /// Already attached in another mode than asked: the rules were updated
    /// without re-attaching.
    ModeKept {
        /// The interface.
        iface: String,
        /// The mode asked for.
        asked: AttachMode,
        /// The mode in effect.
        current: XdpMode,
    },
    /// `auto`: the driver refused native mode, generic was attached.
    NativeRefused {
        /// The interface.
        iface: String,
        /// What the kernel said.
        reason: String,
    },
    /// The [`Meta`] record could not be written: the rules show without
    /// names.
    MetaNotWritten {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        error: io::Error,
    },
    /// [`detach`] found stale or partial pinned state and removed it.
    StalePurged {
        /// Why it could not be adopted.
        error: Error,
    },
    /// [`detach`] could not remove the [`Meta`] record.
    MetaNotRemoved {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: io::Error,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IncompatiblePurged { error } => {
                write!(f, "{}; purged it and attached afresh", Chain(error))
            }
            Self::ModeKept {
                iface,
                asked,
                current,
            } => write!(
                f,
                "{iface} is already attached in {current} mode (asked: {asked}); updating its \
                 rules without re-attaching (detach first to change the mode)"
            ),
            Self::NativeRefused { iface, reason } => write!(
                f,
                "native XDP refused on {iface} ({reason}); attached in generic mode"
            ),
            Self::MetaNotWritten { path, error } => write!(
                f,
                "rule names not recorded: writing {}: {}",
                path.display(),
                Chain(error)
            ),
            Self::StalePurged { error } => write!(f, "{}; purged the pins", Chain(error)),
            Self::MetaNotRemoved { path, error } => {
                write!(f, "removing {}: {}", path.display(), Chain(error))
            }
        }
    }
}

/// What [`attach`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The classifier was attached now, in `mode`.
    AttachedFresh {
        /// The mode in effect.
        mode: XdpMode,
    },
    /// Griffin was attached already: the pinned attachment was adopted and
    /// its rules replaced (the mode stays).
    Adopted {
        /// The mode in effect.
        mode: XdpMode,
    },
}

impl Outcome {
    /// The mode in effect.
    pub fn mode(self) -> XdpMode {
        match self {
            Self::AttachedFresh { mode } | Self::Adopted { mode } => mode,
        }
    }
}

/// A split [`attach`] set up.
#[derive(Debug)]
pub struct Attached {
    /// The split.
    pub split: Split,
    /// Attached now or adopted.
    pub outcome: Outcome,
    /// The interface's index.
    pub ifindex: u32,
    /// Rules applied.
    pub rules: usize,
    /// Run-time rules kept after them (adopted; see [`Split::set_extra`]).
    pub run_time_rules: usize,
    /// Their file.
    pub rules_file: PathBuf,
    /// What the operator should know.
    pub warnings: Vec<Warning>,
}

impl fmt::Display for Attached {
    /// `attached to eth0 (ifindex 2) in native mode with 3 rule(s) from r.toml`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (ifindex {}) in {} mode with {} rule(s) from {}",
            match self.outcome {
                Outcome::AttachedFresh { .. } => "attached to",
                Outcome::Adopted { .. } => "updated",
            },
            self.split.iface,
            self.ifindex,
            self.outcome.mode(),
            self.rules,
            self.rules_file.display()
        )?;
        if self.run_time_rules > 0 {
            write!(f, " and {} run-time rule(s) kept", self.run_time_rules)?;
        }
        Ok(())
    }
}

/// One interface's classifier, shareable between the threads that read its
/// counters and the one that watches its redirect targets.
#[derive(Debug, Clone)]
pub struct Split {
    iface: String,
    datapath: Arc<Mutex<Datapath>>,
    /// The rules file [`attach`] applied, with where its record goes, for
    /// [`Split::set_extra`].
    base: Option<Arc<Base>>,
}

#[derive(Debug)]
struct Base {
    file: RulesFile,
    rules_path: PathBuf,
    paths: SplitPaths,
}

impl Split {
    /// A split of `datapath`, attached to `iface`.
    pub fn new(iface: &str, datapath: Datapath) -> Self {
        Self {
            iface: iface.to_owned(),
            datapath: Arc::new(Mutex::new(datapath)),
            base: None,
        }
    }

    /// Replaces the rules added at run time (pods' flows) with `extra`:
    /// the split's rules become its file's followed by `extra`'s
    /// ([`RulesFile::append`]), written as one atomic update with the
    /// targets both need, and the record ([`Meta`]) names them all.
    /// Returns the id of `extra`'s first rule (the others follow in order).
    /// On failure the rules in force stay, exactly.
    pub fn set_extra(&self, extra: &RulesFile) -> Result<u32, SplitError> {
        let base = self.base.as_ref().ok_or_else(|| SplitError::Configure {
            what: format!("run-time rules on {}", self.iface),
            source: Error::NotAttached {
                iface: self.iface.clone(),
                path: PathBuf::new(),
            },
        })?;
        let merged = base
            .file
            .append(extra)
            .map_err(|message| SplitError::Extra {
                iface: self.iface.clone(),
                message,
            })?;
        let mut targets = Vec::new();
        for target in &merged.redirect_targets {
            targets.push((target.slot, ifindex(&target.iface)?));
        }
        let mut meta = configure(&mut self.lock(), &merged, &base.rules_path, &targets)?;
        meta.extra = extra_records(extra);
        if let Err((path, error)) = write_meta(&base.paths, &self.iface, &meta) {
            tracing::warn!(path = %path.display(), error = %Chain(&error), "split record not written");
        }
        Ok(base.file.rules.len() as u32)
    }

    /// Whether `extra` fits after the file's rules ([`Split::set_extra`]
    /// would not refuse it for the limits); the error names the limit.
    pub fn check_extra(&self, extra: &RulesFile) -> Result<(), String> {
        match &self.base {
            Some(base) => base.file.append(extra).map(drop),
            None => Ok(()),
        }
    }

    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The datapath, locked (a panic of another holder does not make it
    /// unusable: each of its updates is whole or absent in the maps).
    pub fn lock(&self) -> MutexGuard<'_, Datapath> {
        self.datapath
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every counter ([`Datapath::counters`]).
    pub fn counters(&self) -> Result<Counters, Error> {
        self.lock().counters()
    }

    /// Starts the link watcher of this split on a thread of its own, in
    /// the calling thread's network namespace: a redirect target that goes
    /// down or away leaves the devmap (its frames then fall back to the
    /// stack) and comes back when it is usable again. It runs until
    /// `stopped()` says so (checked every [`WATCH_TICK`] at least); an error
    /// that stops it is logged.
    pub fn watch_links(
        &self,
        stopped: impl Fn() -> bool + Send + 'static,
    ) -> Result<JoinHandle<()>, SplitError> {
        let watcher = LinkWatcher::new(WATCH_TICK).map_err(|source| SplitError::Watch {
            iface: self.iface.clone(),
            source,
        })?;
        let split = self.clone();
        std::thread::Builder::new()
            .name(format!("linkwatch-{}", self.iface))
            .spawn(move || {
                if let Err(e) = watcher.run(&split.datapath, stopped) {
                    tracing::error!(iface = %split.iface, error = %Chain(&e), "link watcher stopped");
                }
            })
            .map_err(|source| SplitError::Thread {
                iface: self.iface.clone(),
                source,
            })
    }
}

/// Adopts the state pinned for `iface` (to read its rules and counters).
pub fn adopt(paths: &SplitPaths, iface: &str) -> Result<Datapath, SplitError> {
    Datapath::adopt(iface, &paths.bpffs).map_err(datapath_err("griffin xdp on", iface))
}

/// The ifindex of redirect target `iface`, from
/// `/sys/class/net/<iface>/ifindex`. sysfs shows the network namespace it
/// was mounted in, which is not ours after `nsenter --net` or `setns`; so
/// the kernel's answer for our namespace (`if_nametoindex`) wins when the
/// two disagree or sysfs lacks the name.
fn ifindex(iface: &str) -> Result<u32, SplitError> {
    let path = Path::new("/sys/class/net").join(iface).join("ifindex");
    let sysfs = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            text.trim()
                .parse::<u32>()
                .map_err(|_| SplitError::BadIfindex {
                    path: path.clone(),
                    text: text.clone(),
                })?,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(SplitError::ReadIfindex { path, source }),
    };
    match (sysfs, nix::net::if_::if_nametoindex(iface)) {
        (Some(a), Ok(b)) if a == b => Ok(a),
        (_, Ok(b)) => Ok(b),
        (_, Err(errno)) => Err(SplitError::NoTarget {
            iface: iface.to_owned(),
            source: io::Error::from(errno),
        }),
    }
}

/// Loads and checks the rules file at `path`.
fn load_rules(path: &Path) -> Result<RulesFile, SplitError> {
    rules_file::load(path).map_err(|e| match e {
        // These name the file already.
        RulesFileError::Read { .. } | RulesFileError::Extension { .. } => {
            SplitError::RulesFileAccess(e)
        }
        source => SplitError::RulesFile {
            path: path.to_owned(),
            source,
        },
    })
}

/// Attaches the classifier to `iface` with the rules of `rules_path`, or
/// adopts the pinned attachment and replaces its rules atomically (on any
/// failure the old rules stay in force, exactly, and so does the record). Pins left by an
/// incompatible loader version are purged and the program attached afresh
/// (a short gap in the split: frames meanwhile take the stack, as without
/// Griffin). A new attachment whose rules cannot be written is detached
/// again.
pub fn attach(
    paths: &SplitPaths,
    iface: &str,
    rules_path: &Path,
    mode: AttachMode,
) -> Result<Attached, SplitError> {
    let file = load_rules(rules_path)?;
    // Resolve targets before touching the interface.
    let mut targets = Vec::new();
    for target in &file.redirect_targets {
        targets.push((target.slot, ifindex(&target.iface)?));
    }
    let mut warnings = Vec::new();
    let mut adopted = None;
    if pin_dir(&paths.bpffs, iface).join("link").exists() {
        match Datapath::adopt(iface, &paths.bpffs) {
            Ok(dp) => adopted = Some(dp),
            Err(error @ Error::Incompatible { .. }) => {
                Datapath::purge(iface, &paths.bpffs)
                    .map_err(datapath_err("purging the pinned state of", iface))?;
                warnings.push(Warning::IncompatiblePurged { error });
            }
            Err(e) => return Err(datapath_err("griffin xdp on", iface)(e)),
        }
    }
    let (mut dp, fresh) = if let Some(dp) = adopted {
        if let Some(current) = dp.attachment().map(|a| a.mode) {
            if mode.excludes(current) {
                warnings.push(Warning::ModeKept {
                    iface: iface.to_owned(),
                    asked: mode,
                    current,
                });
            }
        }
        (dp, false)
    } else {
        let options = AttachOptions {
            mode,
            bpffs: paths.bpffs.clone(),
        };
        let dp =
            Datapath::attach(iface, &options).map_err(datapath_err("attaching XDP to", iface))?;
        if let Some(reason) = dp.attachment().and_then(|a| a.native_refused.clone()) {
            warnings.push(Warning::NativeRefused {
                iface: iface.to_owned(),
                reason,
            });
        }
        (dp, true)
    };
    // An adopted split keeps the run-time rules in force (pods' flows,
    // until their owner sets them again) whose targets still exist.
    let kept = if fresh {
        RulesFile::default()
    } else {
        recorded_extra(&read_meta(paths, iface).extra, iface)
    };
    let merged = match file.append(&kept) {
        Ok(merged) => merged,
        Err(message) => {
            tracing::warn!(iface, error = %message, "run-time rules not kept");
            file.clone()
        }
    };
    let mut kept_targets = Vec::new();
    for target in merged
        .redirect_targets
        .iter()
        .skip(file.redirect_targets.len())
    {
        match ifindex(&target.iface) {
            Ok(index) => kept_targets.push((target.slot, index)),
            Err(e) => {
                tracing::warn!(iface, target = %target.iface, error = %Chain(&e), "run-time rules not kept");
                kept_targets.clear();
                break;
            }
        }
    }
    let (merged, kept) =
        if kept_targets.len() == merged.redirect_targets.len() - file.redirect_targets.len() {
            targets.extend(kept_targets);
            (merged, kept)
        } else {
            (file.clone(), RulesFile::default())
        };
    let kept_rules = merged.rules.len() - file.rules.len();
    let meta = match configure(&mut dp, &merged, rules_path, &targets) {
        Ok(mut meta) => {
            if kept_rules > 0 {
                meta.extra = extra_records(&kept);
            }
            meta
        }
        Err(e) => {
            if fresh {
                // All or nothing for a new attachment; an update that
                // failed left the old rules in force.
                if let Err(undo) = dp.detach() {
                    tracing::error!(iface, error = %Chain(&undo), "detaching after the failure");
                }
            }
            return Err(e);
        }
    };
    if let Err((path, error)) = write_meta(paths, iface, &meta) {
        warnings.push(Warning::MetaNotWritten { path, error });
    }
    let attachment = dp.attachment().ok_or_else(|| {
        datapath_err("griffin xdp on", iface)(Error::NotAttached {
            iface: iface.to_owned(),
            path: pin_dir(&paths.bpffs, iface),
        })
    })?;
    let (ifindex, mode) = (attachment.ifindex, attachment.mode);
    let rules = file.rules.len();
    let mut split = Split::new(iface, dp);
    split.base = Some(Arc::new(Base {
        file,
        rules_path: rules_path.to_owned(),
        paths: paths.clone(),
    }));
    Ok(Attached {
        split,
        outcome: if fresh {
            Outcome::AttachedFresh { mode }
        } else {
            Outcome::Adopted { mode }
        },
        ifindex,
        rules,
        run_time_rules: kept_rules,
        rules_file: rules_path.to_owned(),
        warnings,
    })
}

/// Writes the file's rules with their prefix sets and targets, as one
/// atomic update ([`Datapath::update`]), and returns the record of what
/// went where (the maps' set bits and devmap slots, which the rules show).
fn configure(
    dp: &mut Datapath,
    file: &RulesFile,
    rules_path: &Path,
    targets: &[(u32, u32)],
) -> Result<Meta, SplitError> {
    let cpus: Vec<(u32, u32)> = file
        .cpu_targets
        .iter()
        .map(|&cpu| (cpu, CPU_QUEUE))
        .collect();
    let applied = dp
        .update(&Update {
            rules: &file.rules,
            sets: &file.prefix_sets,
            redirect: targets,
            cpus: &cpus,
        })
        .map_err(|source| SplitError::Configure {
            what: "writing the rules".to_owned(),
            source,
        })?;
    let mut sets = Vec::new();
    for (&set, &bit) in &applied.sets {
        let bit = usize::from(bit);
        if sets.len() <= bit {
            sets.resize(bit + 1, Vec::new());
        }
        sets[bit] = file
            .sets
            .get(usize::from(set))
            .map(|s| s.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
    }
    Ok(Meta {
        rules_file: rules_path.to_owned(),
        names: file.names.clone(),
        redirect: file
            .redirect_targets
            .iter()
            .map(|t| {
                (
                    applied.slots.get(&t.slot).copied().unwrap_or(t.slot),
                    t.iface.clone(),
                )
            })
            .collect(),
        sets,
        extra: Vec::new(),
    })
}

/// Detaches the classifier from `iface` and removes its pins and record;
/// stale or partial pinned state is purged (with a warning).
pub fn detach(paths: &SplitPaths, iface: &str) -> Result<Vec<Warning>, SplitError> {
    let dir = pin_dir(&paths.bpffs, iface);
    let mut warnings = Vec::new();
    match Datapath::adopt(iface, &paths.bpffs) {
        Ok(dp) => dp
            .detach()
            .map_err(datapath_err("detaching XDP from", iface))?,
        Err(Error::NotAttached { .. }) if !dir.exists() => {
            return Err(SplitError::NotAttached {
                iface: iface.to_owned(),
                path: dir,
            })
        }
        Err(error) => {
            // Stale or partial state: remove the pins anyway.
            Datapath::purge(iface, &paths.bpffs)
                .map_err(datapath_err("purging the pins of", iface))?;
            warnings.push(Warning::StalePurged { error });
        }
    }
    if let Err(error) = crate::podpath::remove_pins(&paths.bpffs, iface) {
        warnings.push(Warning::MetaNotRemoved {
            path: crate::podpath::pin_dir(&paths.bpffs, iface),
            error,
        });
    }
    let path = paths.meta_path(iface);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => warnings.push(Warning::MetaNotRemoved { path, error }),
    }
    // Both only go once empty.
    let _ = std::fs::remove_dir(&paths.meta_dir);
    if let Some(parent) = paths.meta_dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_run_time_rules_come_back_as_pushed_and_a_gone_target_is_dropped() {
        let mut extra = RulesFile::default();
        let mut rule = crate::Rule::new(0, 7, crate::Action::Redirect { slot: 0 });
        rule.ip_proto = Some(17);
        rule.dst_ports = Some(5000..=5100);
        let prefixes = |p: &str| Some(vec![p.parse::<crate::Prefix>().unwrap()]);
        let video = |file: &mut RulesFile| {
            file.push(
                "ns/a/video",
                &rule,
                prefixes("198.18.0.0/15"),
                prefixes("198.19.1.2/32"),
                Some("lo"),
            )
            .unwrap()
        };
        video(&mut extra);
        extra
            .push(
                "ns/b/any",
                &rule,
                None,
                prefixes("198.19.1.3/32"),
                Some("grf-gone0"),
            )
            .unwrap();
        let records = extra_records(&extra);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].dst_ports, Some((5000, 5100)));
        assert_eq!(
            records[0].src.as_deref(),
            Some(&["198.18.0.0/15".to_owned()][..])
        );
        // Through the record's JSON, as an adopting daemon reads it.
        let meta = Meta {
            extra: records,
            ..Meta::default()
        };
        let back: Meta = serde_json::from_slice(&serde_json::to_vec(&meta).unwrap()).unwrap();
        let kept = recorded_extra(&back.extra, "eth9");
        // The second one's target does not exist here: dropped.
        let mut only_first = RulesFile::default();
        video(&mut only_first);
        assert_eq!(kept, only_first);
        // A record without run-time rules does not mention them.
        let text = serde_json::to_string(&Meta::default()).unwrap();
        assert!(!text.contains("extra"), "{text}");
    }

    fn paths(dir: &Path) -> SplitPaths {
        SplitPaths {
            bpffs: dir.join("bpffs"),
            meta_dir: dir.join("run").join("xdp"),
        }
    }

    #[test]
    fn meta_is_written_read_back_and_garbage_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        assert_eq!(read_meta(&paths, "eth0"), Meta::default());
        let meta = Meta {
            rules_file: "/etc/griffin/r.toml".into(),
            names: vec!["a".into(), "b".into()],
            redirect: BTreeMap::from([(0, "eth1".to_owned())]),
            sets: vec![vec!["198.18.0.0/15".into()]],
            extra: Vec::new(),
        };
        write_meta(&paths, "eth0", &meta).unwrap();
        assert_eq!(
            paths.meta_path("eth0"),
            dir.path().join("run/xdp/eth0.json")
        );
        assert_eq!(read_meta(&paths, "eth0"), meta);
        assert!(!paths.meta_dir.join("eth0.json.tmp").exists());
        std::fs::write(paths.meta_path("eth0"), b"{not json").unwrap();
        assert_eq!(read_meta(&paths, "eth0"), Meta::default());
    }

    #[test]
    fn rules_file_errors_name_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = attach(&paths(dir.path()), "gfenosuch0", &missing, AttachMode::Auto).unwrap_err();
        assert!(matches!(err, SplitError::RulesFileAccess(_)), "{err}");
        let chain = Chain(&err).to_string();
        assert_eq!(chain.matches("missing.toml").count(), 1, "{chain}");
        assert!(chain.starts_with("rules file: reading "), "{chain}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[[rules]]\nname = \"x\"\npriority = 1\naction = \"jump\"\n",
        )
        .unwrap();
        let err = attach(&paths(dir.path()), "gfenosuch0", &bad, AttachMode::Auto).unwrap_err();
        assert!(matches!(err, SplitError::RulesFile { .. }), "{err}");
        assert_eq!(err.to_string(), format!("rules file {}", bad.display()));
        assert!(
            Chain(&err).to_string().contains("rule \"x\" (#0)"),
            "{}",
            Chain(&err)
        );
    }

    #[test]
    fn detach_of_nothing_pinned_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = detach(&paths(dir.path()), "gfenosuch0").unwrap_err();
        assert!(matches!(err, SplitError::NotAttached { .. }), "{err}");
        assert!(err.to_string().contains("gfenosuch0"), "{err}");
    }

    #[test]
    fn warnings_print_their_cause_once() {
        let w = Warning::MetaNotWritten {
            path: "/run/griffin/xdp".into(),
            error: io::Error::from_raw_os_error(libc::EROFS),
        };
        let text = w.to_string();
        assert!(
            text.starts_with("rule names not recorded: writing /run/griffin/xdp: "),
            "{text}"
        );
        assert_eq!(text.matches("Read-only file system").count(), 1, "{text}");
        let w = Warning::ModeKept {
            iface: "eth0".into(),
            asked: AttachMode::Generic,
            current: XdpMode::Native,
        };
        assert!(
            w.to_string().contains("already attached in native mode"),
            "{w}"
        );
    }
}
