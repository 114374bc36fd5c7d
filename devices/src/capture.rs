//! Capture: copy the part of sysfs/procfs that discovery reads into a
//! directory, keeping sysfs's relative symlinks, so the tree can be replayed
//! with `griffin topo --root OUT` on any machine (`cargo xtask capture-sysfs`).
//! This writes only below the output directory; the source is only read.
//!
//! Skipped: BAR `resource*` files and `rom` (large, and meaningless off the
//! node), write-only and unreadable attributes, and child directories of a
//! PCI function other than what discovery follows.
//!
//! Files are read through the same guarded open as discovery's
//! ([`crate::sysfs`]): only regular files, never through a final symlink,
//! at most [`MAX_CAPTURED_FILE_BYTES`] each; anything else where a file is
//! copied is an error naming it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::IoAt;

/// Why a capture failed.
pub type CaptureError = IoAt;

type Result<T> = std::result::Result<T, CaptureError>;

/// The most bytes copied from one file: `/proc/cpuinfo` of a large node is
/// hundreds of KiB, more than discovery's own bound.
pub const MAX_CAPTURED_FILE_BYTES: usize = 16 << 20;

fn err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CaptureError {
    IoAt::on(op, path)
}

fn invalid(op: &'static str, path: impl Into<PathBuf>, what: &str) -> CaptureError {
    IoAt {
        op,
        path: path.into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()),
    }
}

/// What a capture copied.
#[derive(Debug, Default)]
pub struct Stats {
    /// Regular files copied.
    pub files: usize,
    /// Symlinks recreated.
    pub links: usize,
    /// Attributes that exist but could not be read (write-only, …).
    pub skipped: usize,
}

struct Capture<'a> {
    root: &'a Path,
    out: &'a Path,
    stats: Stats,
}

/// Captures the tree below `root` into `out` (which must be empty or absent).
pub fn capture(root: &Path, out: &Path) -> Result<Stats> {
    if out.exists()
        && fs::read_dir(out)
            .map_err(err("read", out))?
            .next()
            .is_some()
    {
        return Err(invalid("write into", out, "directory is not empty"));
    }
    let root = root.canonicalize().map_err(err("resolve", root))?;
    let mut c = Capture {
        root: &root,
        out,
        stats: Stats::default(),
    };
    for f in ["proc/meminfo", "proc/cpuinfo"] {
        c.file(f)?;
    }

    let cpu = "sys/devices/system/cpu";
    for f in [
        "online",
        "possible",
        "present",
        "isolated",
        "offline",
        "kernel_max",
    ] {
        c.file(&format!("{cpu}/{f}"))?;
    }
    for name in c.list(cpu)? {
        if name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            let dir = format!("{cpu}/{name}");
            c.file(&format!("{dir}/online"))?;
            c.files_in(&format!("{dir}/topology"))?;
            for idx in c.list(&format!("{dir}/cache"))? {
                if idx.starts_with("index") {
                    c.files_in(&format!("{dir}/cache/{idx}"))?;
                }
            }
        }
    }

    let node = "sys/devices/system/node";
    c.files_in(node)?;
    for name in c.list(node)? {
        if name.starts_with("node") && name[4..].bytes().all(|b| b.is_ascii_digit()) {
            for f in ["cpulist", "cpumap", "meminfo", "distance"] {
                c.file(&format!("{node}/{name}/{f}"))?;
            }
        }
    }

    let pci = "sys/bus/pci/devices";
    for name in c.list(pci)? {
        let link = format!("{pci}/{name}");
        c.link(&link)?;
        let real = c.resolve(&link)?;
        for entry in c.list(&real)? {
            let rel = format!("{real}/{entry}");
            let meta =
                fs::symlink_metadata(c.root.join(&rel)).map_err(err("read", c.root.join(&rel)))?;
            if meta.file_type().is_symlink() {
                if entry == "driver"
                    || entry == "physfn"
                    || entry == "iommu_group"
                    || entry.starts_with("virtfn")
                {
                    c.link(&rel)?;
                }
            } else if meta.is_file() && !entry.starts_with("resource") && entry != "rom" {
                c.file(&rel)?;
            }
        }
    }

    for class in ["net", "nvme", "infiniband"] {
        let dir = format!("sys/class/{class}");
        for name in c.list(&dir)? {
            let link = format!("{dir}/{name}");
            c.link(&link)?;
            let real = c.resolve(&link)?;
            fs::create_dir_all(c.out.join(&real)).map_err(err("create", c.out.join(&real)))?;
            if class == "net" {
                // The link type discovery reads, and the state device pools
                // read for health.
                for f in ["type", "operstate"] {
                    c.file(&format!("{real}/{f}"))?;
                }
            }
            if class == "infiniband" {
                c.file(&format!("{real}/parent"))?;
                for port in c.list(&format!("{real}/ports"))? {
                    c.files_in(&format!("{real}/ports/{port}/gid_attrs/ndevs"))?;
                }
            }
        }
    }
    Ok(c.stats)
}

impl Capture<'_> {
    fn list(&self, rel: &str) -> Result<Vec<String>> {
        match fs::read_dir(self.root.join(rel)) {
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                Ok(v)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(err("list", self.root.join(rel))(e)),
        }
    }

    /// The path, relative to the root, a symlink resolves to.
    fn resolve(&self, rel: &str) -> Result<String> {
        let src = self.root.join(rel);
        let real = src.canonicalize().map_err(err("resolve", &src))?;
        let r = real
            .strip_prefix(self.root)
            .map_err(|_| invalid("follow", &src, "link points outside the root"))?;
        Ok(r.to_string_lossy().into_owned())
    }

    fn dest(&self, rel: &str) -> Result<PathBuf> {
        let d = self.out.join(rel);
        if let Some(p) = d.parent() {
            fs::create_dir_all(p).map_err(err("create", p))?;
        }
        Ok(d)
    }

    /// Copies a readable regular file; absent or unreadable ones are
    /// skipped; a FIFO, device, socket or link where a file is expected, or
    /// a file over the bound, is an error.
    fn file(&mut self, rel: &str) -> Result<()> {
        use crate::sysfs::ReadError;
        let src = self.root.join(rel);
        match crate::sysfs::read_regular(&src, MAX_CAPTURED_FILE_BYTES) {
            Ok(bytes) => {
                let d = self.dest(rel)?;
                fs::write(&d, bytes).map_err(err("write", &d))?;
                self.stats.files += 1;
            }
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(ReadError::Io(_)) => self.stats.skipped += 1,
            Err(ReadError::NotRegular(kind)) => {
                return Err(invalid(
                    "copy",
                    &src,
                    &format!("a {kind}, not a regular file"),
                ))
            }
            Err(ReadError::TooLarge(limit)) => {
                return Err(invalid("copy", &src, &format!("larger than {limit} bytes")))
            }
        }
        Ok(())
    }

    /// Copies the regular files of a directory (links and special files in
    /// it are left out).
    fn files_in(&mut self, rel: &str) -> Result<()> {
        for name in self.list(rel)? {
            let p = format!("{rel}/{name}");
            if fs::symlink_metadata(self.root.join(&p)).is_ok_and(|m| m.is_file()) {
                self.file(&p)?;
            }
        }
        Ok(())
    }

    /// Recreates a symlink with the same (relative) target.
    fn link(&mut self, rel: &str) -> Result<()> {
        let src = self.root.join(rel);
        let target = fs::read_link(&src).map_err(err("read link", &src))?;
        if target.is_absolute() {
            return Err(invalid(
                "copy",
                &src,
                "absolute link; sysfs links are relative",
            ));
        }
        let d = self.dest(rel)?;
        std::os::unix::fs::symlink(&target, &d).map_err(err("create link", &d))?;
        self.stats.links += 1;
        Ok(())
    }
}
