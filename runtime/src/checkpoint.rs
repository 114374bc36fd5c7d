//! The crash-safe checkpoint of the allocator's state.
//!
//! File `STATE_DIR/checkpoint`: one header line
//! `griffin-checkpoint v1 len=<bytes> crc32=<hex>` followed by the JSON
//! payload ([`Checkpoint`]). Written atomically: a temporary file created
//! fresh in the same directory (`O_CREAT|O_EXCL|O_NOFOLLOW` under a new
//! name, so nothing planted there is ever written through), `fsync`,
//! `rename` over the old file, `fsync` of the directory. The previous good
//! checkpoint is kept as `checkpoint.prev` (hard-linked before the rename),
//! so one bad write never leaves nothing to fall back on.
//!
//! Loading verifies the header, the length and the checksum. A file that
//! fails, or is not a regular file (a symbolic link is never followed, a
//! FIFO never opened for a blocking read), or is over [`MAX_BYTES`], is
//! moved aside to `checkpoint.corrupt-<unix time>` for inspection; the
//! caller then rebuilds the state (see `crate::manager`).
//!
//! The state directory must be a directory owned by root (or the effective
//! user) and not writable by group or others; [`Store::open`] creates it
//! mode 0700 when missing and refuses it otherwise. Its lock file
//! ([`Store::lock`]) is never opened through a link either.
//!
//! [`Reader`] is the read-only view for the daemon's HTTP side: it never
//! takes the lock and caches the decoded state by file identity.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use griffin_devices::IoAt;

use crate::alloc::State;
use crate::cpuset::CpuSet;

/// Current on-disk format version.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &str = "griffin-checkpoint";

/// Largest checkpoint read or written: 16 MiB. An allocation encodes to
/// well under 2 KiB (its CPU ids, nodes, devices, reasons and target), so
/// this holds over 8,000 allocations, far more than a node runs pods.
pub const MAX_BYTES: u64 = 16 << 20;

/// Where an allocation is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Only Griffin's own cgroup (a reservation; no workload attached yet).
    None,
    /// A workload's own cgroup, relative to the cgroup root.
    Cgroup(String),
    /// A process moved into Griffin's cgroup for the allocation.
    Pid(u32),
    /// A container's cgroup, relative to the cgroup root: made and removed
    /// by its container runtime, so it is set while it exists and never
    /// created (its absence is not drift).
    Container(String),
}

impl Target {
    /// The workload cgroup it names (of a cgroup or a container target).
    pub fn cgroup(&self) -> Option<&str> {
        match self {
            Target::Cgroup(p) | Target::Container(p) => Some(p),
            Target::None | Target::Pid(_) => None,
        }
    }
}

/// Everything persisted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The allocator state (reserved CPUs and allocations).
    pub state: State,
    /// Enforcement target per allocation id.
    pub targets: std::collections::BTreeMap<String, Target>,
    /// Next allocation number (ids are never reused).
    pub next_id: u64,
    /// Cleanups still to do after a release (the target's cgroup to reset
    /// to the shared pool, Griffin's cgroup to remove).
    pub pending_cleanup: Vec<(String, Target)>,
}

/// What is wrong with a state file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// A symbolic link where a state file should be (never followed).
    #[error("a symbolic link, not followed")]
    Symlink,
    /// A FIFO, socket, device or directory.
    #[error("a {0}, not a regular file")]
    NotRegular(&'static str),
    /// Over [`MAX_BYTES`].
    #[error("{0} bytes, over the {limit} MiB checkpoint limit", limit = MAX_BYTES >> 20)]
    TooLarge(u64),
    /// The header, length, checksum or payload does not verify.
    #[error("{0}")]
    Content(String),
}

/// Why the checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O on the state directory.
    #[error(transparent)]
    Io(#[from] IoAt),
    /// The file exists but is damaged (moved aside to `kept`).
    #[error("checkpoint {path} is corrupt ({why}); kept as {kept}")]
    Corrupt {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        why: Damage,
        /// Where it was moved.
        kept: PathBuf,
    },
    /// A state file that is not a regular file (the lock, a checkpoint
    /// about to be written over its size limit).
    #[error("state file {path} is unusable ({why})")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: Damage,
    },
    /// The state directory could be changed by someone other than root.
    #[error("state directory {path} is unsafe: {why}")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong (owner or mode).
        why: String,
    },
}

type Result<T> = std::result::Result<T, CheckpointError>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    IoAt::on(op, path.to_path_buf())
}

/// Encodes a checkpoint: header line plus JSON.
pub fn encode(cp: &Checkpoint) -> Vec<u8> {
    let payload = serde_json::to_vec(cp).expect("checkpoint serialises");
    let mut out = format!(
        "{MAGIC} v{FORMAT_VERSION} len={} crc32={:08x}\n",
        payload.len(),
        crc32fast::hash(&payload)
    )
    .into_bytes();
    out.extend_from_slice(&payload);
    out
}

/// Decodes and verifies a checkpoint; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err("not a Griffin checkpoint".into());
    }
    let version = words.next().ok_or("no version")?;
    if version != format!("v{FORMAT_VERSION}") {
        return Err(format!("unsupported format {version}"));
    }
    let field = |w: Option<&str>, key: &str| -> std::result::Result<String, String> {
        w.and_then(|w| w.strip_prefix(key))
            .map(str::to_owned)
            .ok_or_else(|| format!("header lacks {key}"))
    };
    let len: usize = field(words.next(), "len=")?
        .parse()
        .map_err(|_| "bad length")?;
    let crc = u32::from_str_radix(&field(words.next(), "crc32=")?, 16)
        .map_err(|_| "bad checksum field")?;
    let payload = &bytes[nl + 1..];
    if payload.len() != len {
        return Err(format!(
            "payload is {} bytes, header says {len} (truncated?)",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(payload).map_err(|e| format!("payload: {e}"))
}

/// Opening or reading a state file failed.
enum Refused {
    Missing,
    Damaged(Damage),
    Io(io::Error),
}

/// Opens a state file for reading: never through a symbolic link, never
/// blocking (a FIFO opens and is then refused), only a regular file of at
/// most [`MAX_BYTES`].
fn open_regular(path: &Path) -> std::result::Result<(fs::File, fs::Metadata), Refused> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            _ if e.kind() == io::ErrorKind::NotFound => Refused::Missing,
            Some(libc::ELOOP) => Refused::Damaged(Damage::Symlink),
            _ => Refused::Io(e),
        })?;
    let m = f.metadata().map_err(Refused::Io)?;
    if !m.is_file() {
        return Err(Refused::Damaged(Damage::NotRegular(
            griffin_devices::sysfs::file_kind(m.file_type()),
        )));
    }
    if m.len() > MAX_BYTES {
        return Err(Refused::Damaged(Damage::TooLarge(m.len())));
    }
    Ok((f, m))
}

/// Reads an opened regular file, at most [`MAX_BYTES`] (it may have grown
/// since it was looked at).
fn read_bounded(mut f: fs::File) -> std::result::Result<Vec<u8>, Refused> {
    let mut bytes = Vec::new();
    (&mut f)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Refused::Io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Refused::Damaged(Damage::TooLarge(bytes.len() as u64)));
    }
    Ok(bytes)
}

/// Reads a state file: `Missing` when there is none.
fn read_state_file(path: &Path) -> std::result::Result<Vec<u8>, Refused> {
    read_bounded(open_regular(path)?.0)
}

/// Refuses a state directory someone other than root (or the effective
/// user) could change: not a directory, another owner, or writable by
/// group or others.
pub fn check_dir(dir: &Path) -> Result<()> {
    let m = fs::metadata(dir).map_err(io_err("inspect", dir))?;
    let unsafe_dir = |why: String| CheckpointError::UnsafeDir {
        path: dir.to_path_buf(),
        why,
    };
    if !m.is_dir() {
        return Err(unsafe_dir(format!(
            "a {}, not a directory",
            griffin_devices::sysfs::file_kind(m.file_type())
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if m.uid() != 0 && m.uid() != euid {
        return Err(unsafe_dir(format!("owned by uid {}, not root", m.uid())));
    }
    if m.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "writable by group or others (mode {:04o})",
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// A name for a new file in the state directory; each call gives another.
fn fresh_name(stem: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{stem}-{}-{nanos:09}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `make` on fresh names in `dir` until one does not exist yet
/// (`make` must fail with `AlreadyExists` on an existing name, whatever it
/// is: a file, a link, a FIFO).
fn create_fresh<T>(
    dir: &Path,
    stem: &str,
    mut make: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<(PathBuf, T)> {
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(fresh_name(stem));
        match make(&path) {
            Ok(t) => return Ok((path, t)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

/// The checkpoint file of a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The state directory's exclusive lock, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _flock: nix::fcntl::Flock<fs::File>,
}

const TEMP_STEM: &str = "checkpoint.tmp";
const PREV_TEMP_STEM: &str = "checkpoint.prev.tmp";

impl Store {
    /// The store in `dir`: created (mode 0700) if missing, refused if it
    /// is not a directory only root can change ([`check_dir`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create", &dir))?;
        check_dir(&dir)?;
        Ok(Self { dir })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the checkpoint file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    /// Path of the previous good checkpoint.
    pub fn prev_path(&self) -> PathBuf {
        self.dir.join("checkpoint.prev")
    }

    /// Path of the lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Takes the state directory's exclusive lock, waiting for another
    /// holder. The lock file is created mode 0600 if missing and never
    /// opened through a link. Temporary files a killed writer left behind
    /// are removed once the lock is held.
    pub fn lock(&self) -> Result<Lock> {
        let path = self.lock_path();
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => CheckpointError::Unusable {
                    path: path.clone(),
                    why: Damage::Symlink,
                },
                _ => io_err("open", &path)(e),
            })?;
        let m = file.metadata().map_err(io_err("inspect", &path))?;
        if !m.is_file() {
            return Err(CheckpointError::Unusable {
                path,
                why: Damage::NotRegular(griffin_devices::sysfs::file_kind(m.file_type())),
            });
        }
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("lock", &path)(e.into()))?;
        self.remove_stale_temps();
        Ok(Lock { _flock: flock })
    }

    /// Removes temporary files of writes that never finished (under the
    /// lock, so no write is under way). Unlinking never follows a link.
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{TEMP_STEM}-"))
                || name.starts_with(&format!("{PREV_TEMP_STEM}-"))
            {
                if let Err(err) = fs::remove_file(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "removing a stale temporary file");
                }
            }
        }
    }

    /// Loads the checkpoint: `Ok(None)` when there is none yet; a damaged
    /// one (or anything but a regular file within [`MAX_BYTES`]) is moved
    /// aside and reported as [`CheckpointError::Corrupt`].
    pub fn load(&self) -> Result<Option<Checkpoint>> {
        let path = self.path();
        let why = match read_state_file(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(cp) => return Ok(Some(cp)),
                Err(why) => Damage::Content(why),
            },
            Err(Refused::Missing) => return Ok(None),
            Err(Refused::Io(e)) => return Err(io_err("read", &path)(e)),
            Err(Refused::Damaged(why)) => why,
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let kept = self.dir.join(format!("checkpoint.corrupt-{stamp}"));
        // rename(2) moves a link or a FIFO itself, never what it points to.
        fs::rename(&path, &kept).map_err(io_err("move aside", &path))?;
        Err(CheckpointError::Corrupt { path, why, kept })
    }

    /// Loads `checkpoint.prev` if it is intact (a regular file that
    /// verifies).
    pub fn load_prev(&self) -> Option<Checkpoint> {
        decode(&read_state_file(&self.prev_path()).ok()?).ok()
    }

    /// Writes the checkpoint atomically and durably.
    pub fn save(&self, cp: &Checkpoint) -> Result<()> {
        let path = self.path();
        let bytes = encode(cp);
        if bytes.len() as u64 > MAX_BYTES {
            return Err(CheckpointError::Unusable {
                path,
                why: Damage::TooLarge(bytes.len() as u64),
            });
        }
        let (tmp, mut f) = create_fresh(&self.dir, TEMP_STEM, |p| {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(p)
        })
        .map_err(io_err("create a temporary file in", &self.dir))?;
        let written = f
            .write_all(&bytes)
            .map_err(io_err("write", &tmp))
            .and_then(|()| f.sync_all().map_err(io_err("fsync", &tmp)));
        drop(f);
        let done = written
            .and_then(|()| self.keep_prev(&path))
            .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("rename", &tmp)));
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let d = fs::File::open(&self.dir).map_err(io_err("open", &self.dir))?;
        d.sync_all().map_err(io_err("fsync", &self.dir))?;
        Ok(())
    }

    /// Keeps the current checkpoint, if it is a regular file, as
    /// `checkpoint.prev` (a hard link under a fresh name renamed into place:
    /// no copy, atomic).
    fn keep_prev(&self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("inspect", path)(e)),
        }
        // link(2) never follows a link at its source and fails on any
        // existing name.
        let (staged, ()) = create_fresh(&self.dir, PREV_TEMP_STEM, |p| fs::hard_link(path, p))
            .map_err(io_err("link", path))?;
        fs::rename(&staged, self.prev_path()).map_err(|e| {
            let _ = fs::remove_file(&staged);
            io_err("rename", &staged)(e)
        })
    }
}

/// How long a look at the checkpoint file is trusted by [`Reader::state`].
pub const RECHECK: Duration = Duration::from_millis(1);

/// Why [`Reader`] has no state to give.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the file failed.
    #[error("cannot read {path}")]
    Io {
        /// The checkpoint.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is damaged or not a regular file within [`MAX_BYTES`].
    #[error("checkpoint {path} is unusable ({why})")]
    Unusable {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        why: Damage,
    },
}

/// The read-only view of a store's checkpoint, for the daemon's HTTP side:
/// it never takes the lock (so `griffin alloc` keeps working beside it),
/// never follows a link, never blocks on a FIFO, and caches the decoded
/// state.
///
/// [`Reader::state`] looks at the file again at most every [`RECHECK`] (a
/// `stat` per request was a measurable share of a score's cost); changes
/// made through the daemon are seen at once ([`Reader::invalidate`]),
/// changes made behind its back within `RECHECK`. Decoding is skipped when
/// the file is unchanged: same inode, size and mtime for a file settled
/// before it was cached, else the same bytes (inode numbers are reused and
/// mtimes are per clock tick, so identity alone could miss two quick
/// replacements).
///
/// The state directory itself is checked by [`Store::open`] (the daemon
/// opens it before serving), not on every read.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    reserved: CpuSet,
    cache: Mutex<Option<Cached>>,
}

/// A decoded checkpoint and the file version it came from.
#[derive(Debug)]
struct Cached {
    /// `None`: there was no checkpoint (an empty state).
    id: Option<FileId>,
    /// When the file was last looked at.
    checked: Instant,
    /// The file's mtime was over a second old when it was read: a later
    /// replacement cannot carry the same (coarse, per-tick) mtime, so an
    /// equal identity proves an equal file.
    settled: bool,
    bytes: Vec<u8>,
    state: Arc<State>,
}

/// What identifies one version of the checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn settled(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - self.mtime_ns > 1_000_000_000
    }

    fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

impl Reader {
    /// A reader of `store`'s checkpoint; every state it hands out carries
    /// `reserved` (the reader's own configuration, not the checkpoint's).
    pub fn new(store: &Store, reserved: CpuSet) -> Self {
        Self {
            path: store.path(),
            reserved,
            cache: Mutex::new(None),
        }
    }

    /// The checkpoint's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached state if the file was looked at within [`RECHECK`]: no
    /// I/O and no waiting (`None` while a look at the file is under way),
    /// for callers that must not block.
    pub fn fresh(&self) -> Option<Arc<State>> {
        let cache = match self.cache.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        cache
            .as_ref()
            .filter(|c| c.checked.elapsed() < RECHECK)
            .map(|c| c.state.clone())
    }

    /// The current allocation state (an empty one when there is no
    /// checkpoint). May read the file: call it where blocking is allowed.
    pub fn state(&self) -> std::result::Result<Arc<State>, ReadError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.checked.elapsed() < RECHECK {
                return Ok(c.state.clone());
            }
        }
        let checked = Instant::now();
        let io = |source| ReadError::Io {
            path: self.path.clone(),
            source,
        };
        let unusable = |why| ReadError::Unusable {
            path: self.path.clone(),
            why,
        };
        // The cheap look first: lstat never follows a link or opens a FIFO.
        let id = match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_file() => Some(FileId::of(&m)),
            // Anything else is refused by the open below, with its kind.
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        if let Some(c) = cache.as_mut() {
            if id.is_some() && c.id == id && c.settled {
                c.checked = checked;
                return Ok(c.state.clone());
            }
        }
        let (id, bytes) = match open_regular(&self.path) {
            Ok((f, m)) => {
                let id = FileId::of(&m);
                match read_bounded(f) {
                    Ok(bytes) => (Some(id), bytes),
                    Err(Refused::Damaged(why)) => return Err(unusable(why)),
                    Err(Refused::Io(e)) => return Err(io(e)),
                    Err(Refused::Missing) => (None, Vec::new()),
                }
            }
            Err(Refused::Missing) => (None, Vec::new()),
            Err(Refused::Damaged(why)) => return Err(unusable(why)),
            Err(Refused::Io(e)) => return Err(io(e)),
        };
        if let Some(c) = cache.as_mut() {
            if c.id.is_none() && id.is_none() {
                c.checked = checked;
                return Ok(c.state.clone());
            }
        }
        let settled = id.is_none_or(|id| id.settled());
        // `id` was taken before reading: if the file was replaced in between,
        // the cached identity is older than the bytes and a later look reads
        // again.
        if let Some(c) = cache.as_mut() {
            if c.id.is_some() && id.is_some() && c.bytes == bytes {
                c.id = id;
                c.settled = settled;
                c.checked = checked;
                return Ok(c.state.clone());
            }
        }
        let mut state = if id.is_some() {
            decode(&bytes)
                .map_err(|why| unusable(Damage::Content(why)))?
                .state
        } else {
            State::default()
        };
        state.reserved = self.reserved.clone();
        let state = Arc::new(state);
        *cache = Some(Cached {
            id,
            checked,
            settled,
            bytes,
            state: state.clone(),
        });
        Ok(state)
    }

    /// Forgets the cached state: the next [`Reader::state`] reads the file.
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Checkpoint {
        let mut cp = Checkpoint {
            next_id: 7,
            ..Default::default()
        };
        cp.targets.insert("a-1".into(), Target::Pid(42));
        cp.targets
            .insert("a-2".into(), Target::Cgroup("pods/p1".into()));
        cp
    }

    /// Runs `f` on a thread and fails (instead of hanging the suite) when it
    /// never returns: the defects below were reads blocking forever.
    fn returns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("blocked (on a FIFO?)")
    }

    #[test]
    fn roundtrip_and_damage_is_detected() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes).unwrap(), sample());
        // Truncation.
        assert!(decode(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        // A flipped byte in the payload.
        let mut bad = bytes.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0x01;
        assert!(decode(&bad).is_err());
        // Garbage and empty files.
        assert!(decode(b"").is_err());
        assert!(decode(b"hello\nworld")
            .unwrap_err()
            .contains("not a Griffin"));
        assert!(decode(b"griffin-checkpoint v9 len=0 crc32=0\n")
            .unwrap_err()
            .contains("unsupported"));
    }

    #[test]
    fn save_load_keeps_prev_and_moves_corrupt_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let store = Store::open(&dir).unwrap();
        assert!(store.load().unwrap().is_none());
        let mut cp = sample();
        store.save(&cp).unwrap();
        cp.next_id = 8;
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap().unwrap().next_id, 8);
        assert_eq!(store.load_prev().unwrap().next_id, 7);
        fs::write(store.path(), b"griffin-checkpoint v1 len=3 crc32=0\nabc").unwrap();
        match store.load() {
            Err(CheckpointError::Corrupt { kept, .. }) => assert!(kept.exists()),
            other => panic!("{other:?}"),
        }
        assert!(!store.path().exists());
    }

    #[test]
    fn a_missing_state_dir_is_created_0700_and_an_open_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/state");
        Store::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for (mode, needle) in [(0o777, "mode 0777"), (0o720, "mode 0720")] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let e = Store::open(&dir).unwrap_err().to_string();
            assert!(
                e.contains(&dir.display().to_string()) && e.contains(needle),
                "{e}"
            );
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let e = Store::open(&dir).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let e = Store::open(&file).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
    }

    /// D4: a link planted under the temporary name a writer used
    /// (`checkpoint.tmp-<pid>`) or under `checkpoint` itself is never
    /// written through; the checkpoint ends up a regular file.
    #[test]
    fn planted_links_are_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("state")).unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let pid = std::process::id();
        for name in [
            format!("checkpoint.tmp-{pid}"),
            format!("checkpoint.prev.tmp-{pid}"),
        ] {
            std::os::unix::fs::symlink(&victim, store.dir().join(name)).unwrap();
        }
        store.save(&sample()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let m = fs::symlink_metadata(store.path()).unwrap();
        assert!(m.is_file(), "checkpoint is a {:?}", m.file_type());
        assert_eq!(store.load().unwrap().unwrap(), sample());

        // `checkpoint` itself a link: the next save replaces the link and
        // keeps no `.prev` of it.
        fs::remove_file(store.path()).unwrap();
        fs::remove_file(store.prev_path()).ok();
        std::os::unix::fs::symlink(&victim, store.path()).unwrap();
        store.save(&sample()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(store.path()).unwrap().is_file());
        assert!(!store.prev_path().exists());

        // Loading never reads through a link: it is moved aside.
        fs::remove_file(store.path()).unwrap();
        std::os::unix::fs::symlink(&victim, store.path()).unwrap();
        match store.load() {
            Err(CheckpointError::Corrupt { why, kept, .. }) => {
                assert_eq!(why, Damage::Symlink);
                assert!(fs::symlink_metadata(&kept).unwrap().is_symlink());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // The lock, with the planted links gone from the directory.
        drop(store.lock().unwrap());
        let left: Vec<String> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// D4: a `lock` link to a missing path made Griffin create that file.
    #[test]
    fn the_lock_is_never_opened_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("state")).unwrap();
        let elsewhere = tmp.path().join("created-elsewhere");
        std::os::unix::fs::symlink(&elsewhere, store.lock_path()).unwrap();
        let e = store.lock().unwrap_err();
        assert!(
            matches!(
                &e,
                CheckpointError::Unusable {
                    why: Damage::Symlink,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("lock"), "{e}");
        assert!(!elsewhere.exists());
        fs::remove_file(store.lock_path()).unwrap();
        nix::unistd::mkfifo(&store.lock_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let s = store.clone();
        let e = returns(move || s.lock().unwrap_err());
        assert!(e.to_string().contains("FIFO"), "{e}");
        fs::remove_file(store.lock_path()).unwrap();
        let _held = store.lock().unwrap();
        assert!(fs::symlink_metadata(store.lock_path()).unwrap().is_file());
    }

    /// D3: a FIFO, a device link or a huge file where the checkpoint should
    /// be is refused at once, naming what it is; loading moves it aside.
    #[test]
    fn only_bounded_regular_files_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("state")).unwrap();
        let reader = Arc::new(Reader::new(&store, CpuSet::default()));
        nix::unistd::mkfifo(&store.path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let r = reader.clone();
        let e = returns(move || r.state().unwrap_err());
        assert!(e.to_string().contains("a FIFO, not a regular file"), "{e}");
        let s = store.clone();
        match returns(move || s.load()) {
            Err(CheckpointError::Corrupt { why, .. }) => {
                assert_eq!(why, Damage::NotRegular("FIFO"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!store.path().exists());

        std::os::unix::fs::symlink("/dev/zero", store.path()).unwrap();
        let e = reader.state().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        fs::remove_file(store.path()).unwrap();

        // Sparse: nothing is written, the size alone is refused.
        let f = fs::File::create(store.path()).unwrap();
        f.set_len(MAX_BYTES + 1).unwrap();
        let e = reader.state().unwrap_err();
        assert!(e.to_string().contains("over the 16 MiB"), "{e}");
        assert!(matches!(
            store.load(),
            Err(CheckpointError::Corrupt {
                why: Damage::TooLarge(_),
                ..
            })
        ));
        store.save(&sample()).unwrap();
        assert_eq!(
            reader.state().unwrap().allocations,
            sample().state.allocations
        );
    }

    fn checkpoint_with(marker: &[u32]) -> Vec<u8> {
        // Allocations are what the state shows; the marker makes each
        // version distinct while keeping the encoded length equal.
        let mut cp = Checkpoint::default();
        for &cpu in marker {
            let id = format!("a{cpu:06}");
            cp.state.allocations.insert(
                id.clone(),
                crate::alloc::Allocation {
                    id,
                    request: Default::default(),
                    placement: crate::alloc::Placement {
                        cpus: CpuSet::from_ids([cpu]),
                        mems: vec![0],
                        devices: vec![],
                        memory_bytes: 0,
                        reasons: vec![],
                        cost: 0,
                    },
                },
            );
        }
        encode(&cp)
    }

    #[test]
    fn quick_same_length_rewrites_are_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let reserved = CpuSet::from_ids([3]);
        let n = Reader::new(&store, reserved.clone());
        let path = store.path();
        // Past the re-check window, whatever the machine's speed.
        let later = || std::thread::sleep(RECHECK * 2);
        assert!(n.state().unwrap().allocations.is_empty());
        let (a, b) = (checkpoint_with(&[1]), checkpoint_with(&[2]));
        assert_eq!(a.len(), b.len());
        fs::write(&path, &a).unwrap();
        // Within the window the last look stands; invalidate() ends it.
        n.invalidate();
        let s = n.state().unwrap();
        assert!(s.allocations.contains_key("a000001"));
        assert_eq!(s.reserved, reserved, "the reader's reserved CPUs apply");
        // Same inode, same length, same coarse mtime tick: only the bytes
        // tell the versions apart.
        fs::write(&path, &b).unwrap();
        later();
        let s = n.state().unwrap();
        assert!(s.allocations.contains_key("a000002"), "{s:?}");
        // Unchanged file: the same decoded state is handed out.
        later();
        assert!(Arc::ptr_eq(&s, &n.state().unwrap()));
        fs::remove_file(&path).unwrap();
        later();
        assert!(n.state().unwrap().allocations.is_empty());
        fs::write(&path, b"garbage").unwrap();
        later();
        assert!(matches!(
            n.state().unwrap_err(),
            ReadError::Unusable {
                why: Damage::Content(_),
                ..
            }
        ));
    }

    proptest! {
        /// Checkpoint bytes from disk: any bytes decode to an error or a
        /// checkpoint, never a panic.
        #[test]
        fn garbage_checkpoints_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// Mangled valid checkpoints (edited bytes, cut, a header made to
        /// match the edited payload so the JSON itself is parsed).
        #[test]
        fn mangled_checkpoints_never_panic(
            cut in 0usize..600,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
            refresh_header in any::<bool>(),
        ) {
            let mut cp = sample();
            cp.state.allocations = decode(&checkpoint_with(&[1, 5])).unwrap().state.allocations;
            cp.pending_cleanup.push(("a000009".into(), Target::Cgroup("x/../y".into())));
            let bytes = encode(&cp);
            let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
            let mut payload = bytes[nl + 1..].to_vec();
            for (at, byte) in edits {
                let i = usize::from(at) % payload.len();
                payload[i] = byte;
            }
            payload.truncate(cut.max(1).min(payload.len()));
            let out = if refresh_header {
                let mut h = format!(
                    "{MAGIC} v{FORMAT_VERSION} len={} crc32={:08x}\n",
                    payload.len(),
                    crc32fast::hash(&payload)
                )
                .into_bytes();
                h.extend_from_slice(&payload);
                h
            } else {
                let mut h = bytes[..=nl].to_vec();
                h.extend_from_slice(&payload);
                h
            };
            if let Ok(back) = decode(&out) {
                // What decodes re-encodes to a checkpoint that decodes the same.
                prop_assert_eq!(decode(&encode(&back)).unwrap(), back);
            }
        }
    }
}
