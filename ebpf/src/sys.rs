//! The few raw kernel interfaces aya 0.13 does not wrap: `BPF_PROG_TEST_RUN`,
//! a program's translated instructions and mounting bpffs.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    path::Path,
};

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

/// `BPF_PROG_TEST_RUN` from `enum bpf_cmd` (linux/bpf.h).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Debug, Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// Room for the program to grow the frame (XDP tail adjustments).
const OUT_SLACK: usize = 4096;

/// Runs the XDP program `prog` once on `frame` with `BPF_PROG_TEST_RUN`,
/// returning the program's return value and the frame as it left the
/// program. The kernel refuses frames shorter than an Ethernet header
/// (`EINVAL`).
pub(crate) fn test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    let run = run(prog, frame, 1)?;
    Ok((run.retval, run.frame))
}

/// What one `BPF_PROG_TEST_RUN` call reported.
#[derive(Debug)]
pub(crate) struct Run {
    /// The program's return value (of the last repetition).
    pub(crate) retval: u32,
    /// The kernel's mean time per repetition in nanoseconds (`duration`).
    pub(crate) duration_ns: u32,
    /// The frame as the (last) repetition left it.
    pub(crate) frame: Vec<u8>,
}

/// The `bpf(2)` command `cmd` with `attr` (its size passed along).
///
/// # Safety
///
/// `attr` must be the `union bpf_attr` member that `cmd` reads, and every
/// pointer in it valid for what the kernel reads or writes through it until
/// the call returns.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a live, exclusive `T` of the size passed; the caller
    // vouches for its layout and the pointers in it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the XDP program `prog` `repeat` times (at least once) on `frame` in
/// one `BPF_PROG_TEST_RUN` call, returning the last return value, the
/// kernel's mean nanoseconds per run and the frame as it left the program.
pub(crate) fn run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<Run> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "frame too large");
    let mut out = vec![0u8; frame.len() + OUT_SLACK];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).map_err(|_| too_big())?,
        data_size_in: u32::try_from(frame.len()).map_err(|_| too_big())?,
        data_size_out: u32::try_from(out.len()).map_err(|_| too_big())?,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a correctly laid out `bpf_attr.test`; `data_in`
    // points to `frame.len()` readable bytes and `data_out` to `out.len()`
    // writable bytes, both alive until the syscall returns; the kernel writes
    // only into `attr` and `out`.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr)? };
    out.truncate(attr.data_size_out as usize);
    Ok(Run {
        retval: attr.retval,
        duration_ns: attr.duration,
        frame: out,
    })
}

/// `BPF_OBJ_GET_INFO_BY_FD` from `enum bpf_cmd`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`, up to the translated instructions
/// (the kernel fills in no more than the length it is given).
#[repr(C)]
#[derive(Debug, Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
}

fn prog_info(prog: BorrowedFd<'_>, info: &mut ProgInfoHead) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(prog.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        info_len: size_of::<ProgInfoHead>() as u32,
        info: info as *mut ProgInfoHead as u64,
    };
    // SAFETY: `attr` is a correctly laid out `bpf_attr.info`; `info` points
    // to `info_len` writable bytes, and its `xlated_prog_insns`, when not
    // zero, to `xlated_prog_len` writable bytes (see `xlated_insns`), both
    // alive until the syscall returns.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }
}

/// The program's instructions as the verifier left them (8 bytes each,
/// `struct bpf_insn`): helper calls carry their kernel function's offset
/// from `__bpf_call_base` (zeroed for callers the kernel does not show raw
/// addresses to).
pub(crate) fn xlated_insns(prog: BorrowedFd<'_>) -> io::Result<Vec<[u8; 8]>> {
    let mut info = ProgInfoHead::default();
    prog_info(prog, &mut info)?;
    let mut insns = vec![[0u8; 8]; info.xlated_prog_len as usize / 8];
    info = ProgInfoHead {
        xlated_prog_len: (insns.len() * 8) as u32,
        xlated_prog_insns: insns.as_mut_ptr() as u64,
        ..ProgInfoHead::default()
    };
    prog_info(prog, &mut info)?;
    insns.truncate(info.xlated_prog_len as usize / 8);
    Ok(insns)
}

/// Whether `path` is on a BPF filesystem.
pub(crate) fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at `path` unless it is already there.
pub(crate) fn ensure_bpffs(path: &Path) -> io::Result<()> {
    if is_bpffs(path) {
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    tracing::info!(path = %path.display(), "mounting bpffs");
    mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(io::Error::from)
}
