//! The one seam between discovery and the file system.
//!
//! Every read goes through [`SysRoot`], which resolves paths below a root
//! directory (`/` on a live node, a captured tree in tests and replays). It
//! distinguishes "absent" (an optional attribute, `Ok(None)`) from "present
//! but unreadable" (an error naming the file).
//!
//! A `--root` tree may be hostile, so only regular files are read, and at
//! most [`MAX_FILE_BYTES`] of them. What may be followed: symlinks on the
//! way to a file (sysfs reaches a device's attributes through the links
//! `sys/bus/pci/devices/<BDF>`, `sys/class/*/<name>`, `device`, …), never the
//! file itself (sysfs attributes are regular files, never links): a file is
//! opened with `O_NOFOLLOW` (a final symlink is refused, so a link to
//! `/dev/zero` is never opened), `O_NONBLOCK` (opening a FIFO does not wait
//! for a writer) and `O_NOCTTY`, and the opened descriptor must be a
//! regular file (`fstat`) before anything is read. A symlink loop is the
//! kernel's `ELOOP`, an error like any other. A FIFO, device, socket,
//! directory or link where a file is read, or a file over the bound, is an
//! error naming the file ([`DiscoveryError::NotRegular`],
//! [`DiscoveryError::TooLarge`]), never a hang or an unbounded allocation.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::DiscoveryError;
use crate::parse::ParseError;

/// The most bytes read from one file. A sysfs attribute is at most a page
/// (4 KiB on x86, 64 KiB with the largest common page size); the procfs
/// files discovery reads (`meminfo`) are a few KiB.
pub const MAX_FILE_BYTES: usize = 64 * 1024;

/// A root directory under which `sys/...` and `proc/...` are read.
#[derive(Debug, Clone)]
pub struct SysRoot {
    root: PathBuf,
}

impl SysRoot {
    /// A reader for the tree below `root` (`/` for the live node).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `rel` (e.g. `sys/devices/system/cpu/online`).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Reads an attribute that must exist.
    pub fn read(&self, rel: &str) -> Result<String, DiscoveryError> {
        let path = self.path(rel);
        read_small(&path).map_err(|e| e.naming(path))
    }

    /// Reads an attribute that may be absent (`Ok(None)`). An attribute that
    /// exists but cannot be read for another reason is still an error, except
    /// for permission and I/O errors, which sysfs returns for attributes that
    /// a device does not implement: those count as absent too.
    pub fn read_opt(&self, rel: &str) -> Result<Option<String>, DiscoveryError> {
        let path = self.path(rel);
        match read_small(&path) {
            Ok(s) => Ok(Some(s)),
            Err(ReadError::Io(e)) if is_absent(&e) => Ok(None),
            Err(e) => Err(e.naming(path)),
        }
    }

    /// Reads and parses an attribute that must exist.
    pub fn parse<T>(
        &self,
        rel: &str,
        f: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<T, DiscoveryError> {
        let text = self.read(rel)?;
        f(&text).map_err(|source| DiscoveryError::Parse {
            path: self.path(rel),
            source,
        })
    }

    /// Reads and parses an attribute that may be absent.
    pub fn parse_opt<T>(
        &self,
        rel: &str,
        f: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<Option<T>, DiscoveryError> {
        match self.read_opt(rel)? {
            None => Ok(None),
            Some(text) => f(&text).map(Some).map_err(|source| DiscoveryError::Parse {
                path: self.path(rel),
                source,
            }),
        }
    }

    /// Opens a binary attribute (PCI `config`) for reads at offsets.
    /// `Ok(None)` when the file is absent or cannot be opened; an error when
    /// it is not a regular file.
    pub fn config_reader(&self, rel: &str) -> Result<Option<ConfigReader>, DiscoveryError> {
        let path = self.path(rel);
        match open_regular(&path) {
            Ok(file) => Ok(Some(ConfigReader { file })),
            Err(ReadError::Io(_)) => Ok(None),
            Err(e) => Err(e.naming(path)),
        }
    }

    /// The target of a symlink as text, `None` when the link is absent.
    pub fn read_link_opt(&self, rel: &str) -> Result<Option<String>, DiscoveryError> {
        let path = self.path(rel);
        match std::fs::read_link(&path) {
            Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(None),
            Err(source) => Err(DiscoveryError::Read { path, source }),
        }
    }

    /// True when `rel` exists (following symlinks).
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// Names in a directory, sorted; an absent directory is empty.
    pub fn list_opt(&self, rel: &str) -> Result<Vec<String>, DiscoveryError> {
        let path = self.path(rel);
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(DiscoveryError::Read { path, source }),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| DiscoveryError::Read {
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort_unstable();
        Ok(names)
    }

    /// Names in a directory that must exist, sorted.
    pub fn list(&self, rel: &str) -> Result<Vec<String>, DiscoveryError> {
        let path = self.path(rel);
        if !path.is_dir() {
            return Err(DiscoveryError::Missing { path });
        }
        self.list_opt(rel)
    }
}

/// A binary attribute open for reads at offsets ([`SysRoot::config_reader`]).
#[derive(Debug)]
pub struct ConfigReader {
    file: File,
}

impl ConfigReader {
    /// Exactly `len` bytes at `offset`, or `None` (a short file, a read
    /// error, or a range past [`MAX_FILE_BYTES`]).
    pub fn read(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if offset.checked_add(len)? > MAX_FILE_BYTES {
            return None;
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset as u64).ok()?;
        Some(buf)
    }
}

/// Why a file could not be read (the path is added by the caller).
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The open or a read failed.
    Io(io::Error),
    /// The file is not a regular file but this.
    NotRegular(&'static str),
    /// The file holds more than the bound.
    TooLarge(usize),
}

impl ReadError {
    fn naming(self, path: PathBuf) -> DiscoveryError {
        match self {
            ReadError::Io(source) => DiscoveryError::Read { path, source },
            ReadError::NotRegular(kind) => DiscoveryError::NotRegular { path, kind },
            ReadError::TooLarge(limit) => DiscoveryError::TooLarge { path, limit },
        }
    }
}

/// What a file system object that is not a regular file is, for messages
/// ("a FIFO, not a regular file"): the one naming used wherever Griffin
/// refuses to read something that is not a regular file.
pub fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Opens `path` for reading if it is a regular file: `O_NOFOLLOW` (the
/// file itself is never a link; links on the way are followed),
/// `O_NONBLOCK` (a FIFO's open does not wait), `O_NOCTTY`, then `fstat`.
fn open_regular(path: &Path) -> Result<File, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        // ELOOP: the file is a symlink (O_NOFOLLOW) or the way to it loops;
        // ENXIO: a socket. Say which when the file itself is the culprit.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(m) if !m.is_file() => ReadError::NotRegular(file_kind(m.file_type())),
                _ => ReadError::Io(e),
            });
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = f.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(file_kind(meta.file_type())));
    }
    Ok(f)
}

/// Reads at most `limit` bytes of the regular file `path`; more is
/// [`ReadError::TooLarge`].
pub(crate) fn read_regular(path: &Path, limit: usize) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let f = open_regular(path)?;
    let mut out = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(ReadError::Io)?;
    if out.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(out)
}

/// Reads a small text attribute: one `open`, an `fstat`, and `read`s into a
/// small buffer, without the `statx` that `fs::read_to_string` spends on a
/// size hint sysfs cannot give (every attribute claims 4096 bytes).
fn read_small(path: &Path) -> Result<String, ReadError> {
    fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> ReadError {
        ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, e))
    }
    use std::io::Read;
    let mut f = open_regular(path)?;
    let mut buf = [0u8; 4096];
    let mut n = 0;
    loop {
        match f.read(&mut buf[n..]) {
            // sysfs and procfs hand over a whole attribute in one read; a
            // short read of a regular file means end of file, which saves
            // the second, empty read.
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n < buf.len() {
                    break;
                }
                // A full buffer: more than a page; read the rest, bounded.
                let mut rest = buf.to_vec();
                f.take((MAX_FILE_BYTES - buf.len()) as u64 + 1)
                    .read_to_end(&mut rest)
                    .map_err(ReadError::Io)?;
                if rest.len() > MAX_FILE_BYTES {
                    return Err(ReadError::TooLarge(MAX_FILE_BYTES));
                }
                return String::from_utf8(rest).map_err(invalid);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    std::str::from_utf8(&buf[..n])
        .map(str::to_owned)
        .map_err(invalid)
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENODEV | libc::EINVAL | libc::ENXIO)
    )
}
