//! The one seam between discovery and the file system.
//!
//! Every read goes through [`SysRoot`], which resolves paths below a root
//! directory (`/` on a live node, a captured tree in tests and replays). It
//! distinguishes "absent" (an optional attribute, `Ok(None)`) from "present
//! but unreadable" (an error naming the file).

use std::io;
use std::path::{Path, PathBuf};

use crate::error::DiscoveryError;
use crate::parse::ParseError;

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
        read_small(&path).map_err(|source| DiscoveryError::Read { path, source })
    }

    /// Reads an attribute that may be absent (`Ok(None)`). An attribute that
    /// exists but cannot be read for another reason is still an error, except
    /// for permission and I/O errors, which sysfs returns for attributes that
    /// a device does not implement: those count as absent too.
    pub fn read_opt(&self, rel: &str) -> Result<Option<String>, DiscoveryError> {
        let path = self.path(rel);
        match read_small(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(source) => Err(DiscoveryError::Read { path, source }),
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

    /// Opens a binary attribute (PCI `config`) for reads at offsets: the
    /// reader returns exactly `len` bytes at `offset`, or `None`. `None`
    /// when the file is absent or unreadable.
    pub fn config_reader(&self, rel: &str) -> Option<impl FnMut(usize, usize) -> Option<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(self.path(rel)).ok()?;
        Some(move |offset: usize, len: usize| {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, offset as u64).ok()?;
            Some(buf)
        })
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

/// Reads a small text attribute: one `open` and `read`s into a small buffer,
/// without the `statx` that `fs::read_to_string` spends on a size hint
/// sysfs cannot give (every attribute claims 4096 bytes).
fn read_small(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
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
                // A full buffer: more than a page; read the rest normally.
                let mut rest = buf.to_vec();
                f.read_to_end(&mut rest)?;
                return String::from_utf8(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    std::str::from_utf8(&buf[..n])
        .map(str::to_owned)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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
