//! Benchmark support (`cargo xtask bench`, `benches/benches/xdp.rs`): timed
//! `BPF_PROG_TEST_RUN` with a repeat count, and the baselines the XDP
//! benchmarks compare Griffin against (`bpf/bench_xdp.c`): a trivial program
//! that returns `XDP_PASS` and does nothing else, and one that redirects
//! every frame to one interface (the data-path rate ceiling).
//!
//! [`crate::Datapath::test_run_timed`] and [`Baseline::test_run_timed`] run
//! their program on the same frame the same number of times in one syscall;
//! the kernel reports its mean time per run (`bpf_attr.test.duration`, in
//! nanoseconds), which excludes the syscall itself.

use std::{io, os::fd::AsFd};

use aya::{
    programs::{ProgramError, Xdp, XdpFlags},
    Ebpf, EbpfError, EbpfLoader,
};

use crate::{sys, XdpVerdict};

/// The compiled baseline object (`bpf/bench_xdp.c`), aligned for aya.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_xdp.o"));

/// The trivial `XDP_PASS` program's name in [`BENCH_OBJECT`].
pub const TRIVIAL_PROGRAM: &str = "trivial_pass";

/// The redirect-everything program's name in [`BENCH_OBJECT`].
pub const REDIRECT_PROGRAM: &str = "redirect_all";

/// The program that redirects every frame through slot 0 of a devmap.
pub const REDIRECT_MAP_PROGRAM: &str = "redirect_map_all";

/// Its target interface index (a load-time constant).
const REDIRECT_IFINDEX: &str = "redirect_ifindex";

/// Result of a timed `BPF_PROG_TEST_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedRun {
    /// The verdict of the last repetition.
    pub verdict: XdpVerdict,
    /// The kernel's mean time per repetition, in nanoseconds.
    pub ns_per_run: u32,
    /// How many times the program ran.
    pub repeat: u32,
}

/// Runs `prog` `repeat` times on `frame` (see the module doc).
pub(crate) fn timed(
    prog: std::os::fd::BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> io::Result<TimedRun> {
    let run = sys::run(prog, frame, repeat)?;
    Ok(TimedRun {
        verdict: run.retval.into(),
        ns_per_run: run.duration_ns,
        repeat: repeat.max(1),
    })
}

/// The kernel functions that the verified classifier calls, in program
/// order, named through `/proc/kallsyms` (needs root, or raw addresses
/// shown to the caller). A `bpf_redirect_map` call site that can see one
/// map only is rewritten by the verifier into a direct call of that map's
/// redirect function (`dev_map_redirect`, ...); one that can see several
/// stays the generic `bpf_xdp_redirect_map`, an indirect call (a retpoline
/// under Spectre v2 mitigations). Tests and benchmarks check which one the
/// program got.
pub fn kernel_calls(dp: &crate::Datapath) -> io::Result<Vec<String>> {
    let insns = sys::xlated_insns(dp.prog_fd())?;
    let kallsyms = std::fs::read_to_string("/proc/kallsyms")?;
    resolve_calls(&kallsyms, &insns).map_err(io::Error::other)
}

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;

/// Names the helper calls (`src_reg` 0: `imm` is the offset of the kernel
/// function from `__bpf_call_base`) of translated instructions.
fn resolve_calls(kallsyms: &str, insns: &[[u8; 8]]) -> Result<Vec<String>, String> {
    let symbols: std::collections::HashMap<u64, &str> = kallsyms
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _kind = fields.next()?;
            Some((addr, fields.next()?))
        })
        .filter(|&(addr, name)| addr != 0 && !name.starts_with("__pfx_"))
        .collect();
    let base = symbols
        .iter()
        .find(|&(_, &name)| name == "__bpf_call_base")
        .map(|(&addr, _)| addr)
        .ok_or("/proc/kallsyms shows no address for __bpf_call_base")?;
    insns
        .iter()
        .filter(|insn| insn[0] == CALL && insn[1] >> 4 == 0)
        .map(|insn| {
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            let addr = base.wrapping_add_signed(i64::from(imm));
            symbols
                .get(&addr)
                .map(|name| (*name).to_owned())
                .ok_or_else(|| format!("no kernel symbol at {addr:#x} (helper call offset {imm})"))
        })
        .collect()
}

/// Errors of the baseline program.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The embedded object failed to load.
    #[error("loading the baseline XDP object")]
    Load(#[source] Box<EbpfError>),
    /// The object lacks the program.
    #[error("the baseline XDP object has no program named {0}")]
    Missing(&'static str),
    /// Loading or inspecting the program failed.
    #[error("baseline XDP program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// The failure.
        #[source]
        source: Box<ProgramError>,
    },
    /// The baseline's devmap could not be set up.
    #[error("baseline devmap {map}")]
    Map {
        /// The map.
        map: &'static str,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Attaching in native mode failed.
    #[error("attaching the baseline XDP program {name} to {iface} in native mode")]
    Attach {
        /// The program.
        name: &'static str,
        /// The interface.
        iface: String,
        /// What the kernel said.
        #[source]
        source: Box<ProgramError>,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN of {name}")]
    TestRun {
        /// The program.
        name: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// A loaded baseline program, for benchmarks only: [`Baseline::load`] (the
/// trivial `XDP_PASS`) or [`Baseline::redirect_all`].
///
/// It can be test-run like the classifier, and attached in native mode to
/// interfaces (not pinned): it stays attached until the `Baseline` is
/// dropped.
pub struct Baseline {
    ebpf: Ebpf,
    name: &'static str,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline")
            .field("program", &self.name)
            .finish_non_exhaustive()
    }
}

impl Baseline {
    /// Loads the trivial program, `return XDP_PASS;` (nothing attached).
    pub fn load() -> Result<Self, BaselineError> {
        let ebpf = Ebpf::load(BENCH_OBJECT).map_err(|e| BaselineError::Load(Box::new(e)))?;
        Self::with(ebpf, TRIVIAL_PROGRAM)
    }

    /// Loads the program that redirects every frame to interface `ifindex`
    /// with `bpf_redirect` (nothing attached).
    pub fn redirect_all(ifindex: u32) -> Result<Self, BaselineError> {
        let ebpf = EbpfLoader::new()
            .set_global(REDIRECT_IFINDEX, &ifindex, true)
            .load(BENCH_OBJECT)
            .map_err(|e| BaselineError::Load(Box::new(e)))?;
        Self::with(ebpf, REDIRECT_PROGRAM)
    }

    /// Loads the program that redirects every frame through slot 0 of a
    /// devmap holding `ifindex` (`bpf_redirect_map`, as Griffin's redirect
    /// action; nothing attached).
    pub fn redirect_map_all(ifindex: u32) -> Result<Self, BaselineError> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT).map_err(|e| BaselineError::Load(Box::new(e)))?;
        const MAP: &str = "bench_devmap";
        let err = |source: Box<dyn std::error::Error + Send + Sync>| BaselineError::Map {
            map: MAP,
            source,
        };
        let map = ebpf
            .map_mut(MAP)
            .ok_or_else(|| err("not in the object".into()))?;
        let mut devmap = aya::maps::DevMap::try_from(map).map_err(|e| err(Box::new(e)))?;
        devmap
            .set(0, ifindex, None, 0)
            .map_err(|e| err(Box::new(e)))?;
        Self::with(ebpf, REDIRECT_MAP_PROGRAM)
    }

    fn with(mut ebpf: Ebpf, name: &'static str) -> Result<Self, BaselineError> {
        program(&mut ebpf, name)?
            .load()
            .map_err(|e| BaselineError::Program {
                name,
                source: Box::new(e),
            })?;
        Ok(Self { ebpf, name })
    }

    /// Runs the program `repeat` times on `frame` in one `BPF_PROG_TEST_RUN`
    /// call and returns the kernel's mean time per run.
    pub fn test_run_timed(&mut self, frame: &[u8], repeat: u32) -> Result<TimedRun, BaselineError> {
        let name = self.name;
        let prog = program(&mut self.ebpf, name)?;
        let fd = prog.fd().map_err(|e| BaselineError::Program {
            name,
            source: Box::new(e),
        })?;
        timed(fd.as_fd(), frame, repeat).map_err(|source| BaselineError::TestRun { name, source })
    }

    /// Attaches the program to `iface` (in the calling thread's network
    /// namespace) in native (driver) mode; it is detached when `self` drops.
    /// A veth receives `XDP_REDIRECT`ed frames only when it runs an XDP
    /// program itself (its NAPI does the receiving): the trivial program
    /// provides that and nothing else.
    pub fn attach_native(&mut self, iface: &str) -> Result<(), BaselineError> {
        let name = self.name;
        program(&mut self.ebpf, name)?
            .attach(iface, XdpFlags::DRV_MODE)
            .map_err(|e| BaselineError::Attach {
                name,
                iface: iface.to_owned(),
                source: Box::new(e),
            })?;
        Ok(())
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, BaselineError> {
    ebpf.program_mut(name)
        .ok_or(BaselineError::Missing(name))?
        .try_into()
        .map_err(|e| BaselineError::Program {
            name,
            source: Box::new(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(src_reg: u8, imm: i32) -> [u8; 8] {
        let mut insn = [CALL, src_reg << 4, 0, 0, 0, 0, 0, 0];
        insn[4..].copy_from_slice(&imm.to_le_bytes());
        insn
    }

    const KALLSYMS: &str = "\
ffffffff814cc800 T __pfx___bpf_call_base
ffffffff814cc810 T __bpf_call_base
ffffffff8154ac50 t __pfx_dev_map_redirect
ffffffff8154ac60 t dev_map_redirect
ffffffff81e89b10 T bpf_xdp_redirect_map
";

    #[test]
    fn helper_calls_are_named_and_other_instructions_ignored() {
        let insns = [
            call(0, 0x7_e450),
            [0xb7, 0x01, 0, 0, 2, 0, 0, 0], // r1 = 2
            call(1, 7),                     // a call of a subprogram
            call(0, 0x9b_d300),
        ];
        assert_eq!(
            resolve_calls(KALLSYMS, &insns).unwrap(),
            ["dev_map_redirect", "bpf_xdp_redirect_map"]
        );
    }

    #[test]
    fn hidden_addresses_and_unknown_targets_are_errors() {
        let hidden: String = KALLSYMS
            .lines()
            .map(|line| format!("0000000000000000{}\n", &line[16..]))
            .collect();
        let err = resolve_calls(&hidden, &[call(0, 16)]).unwrap_err();
        assert!(err.contains("__bpf_call_base"), "{err}");
        let err = resolve_calls(KALLSYMS, &[call(0, 4)]).unwrap_err();
        assert!(err.contains("0xffffffff814cc814"), "{err}");
    }
}
