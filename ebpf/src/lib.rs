//! Griffin's eBPF/XDP management/data path split.
//!
//! The kernel side is C (`bpf/griffin_xdp.c`, shared definitions in
//! `bpf/griffin_xdp.h`) compiled by `build.rs` with clang and embedded here
//! as [`OBJECT`]. The loader ([`Datapath`]) loads it with aya, attaches it in
//! native mode (falling back to generic), pins link, program and maps under
//! `/sys/fs/bpf/griffin/<iface>/`, adopts pinned state after a restart,
//! writes [`Rule`]s and [`PrefixSets`] into the maps and reads the per-CPU
//! counters (per rule, plus parse failures, no matches and fallbacks per
//! action; the per-action totals are derived from them, so a matched frame
//! costs the program one counter update).
//!
//! [`split`] is the split as `griffin xdp` and the daemon keep it: attach or
//! adopt, configure from a rules file, record the rule names, detach, watch
//! the redirect targets' links; warnings come back as values.
//!
//! The classifier fails open: malformed frames, frames no rule matches and
//! redirects whose target is missing are all passed to the stack.

pub mod afxdp;
pub mod bench;
pub mod classes;
pub mod format;
pub mod linkwatch;
mod loader;
pub mod podpath;
pub mod rtnl;
pub mod rules;
pub mod rules_file;
pub mod split;
mod sys;
pub mod types;

pub use loader::{
    pin_dir, ActionCounters, Applied, AttachMode, AttachModeError, AttachOptions, Attachment,
    Counter, Counters, Datapath, Error, TargetChange, TestRun, Update, XdpMode, XdpVerdict,
    DEFAULT_BPFFS, PIN_SUBDIR, PROGRAM_NAME,
};
pub use rules::{Action, Prefix, PrefixError, PrefixSets, Rule, RuleError};
pub use rules_file::{RulesFile, RulesFileError};

/// The compiled XDP object (ELF with BTF), aligned for aya.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/griffin_xdp.o"));
