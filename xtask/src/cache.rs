//! Caches of things xtask builds or downloads once (the guest kernel under
//! `target/vm/kernel`, the Kubernetes binaries under `/var/cache/griffin`):
//! what a complete cache is, the check that one still is, and the lock that
//! keeps two runs from building the same cache at once.
//!
//! A cache is complete when its manifest, `.griffin-manifest`, is there and
//! the tree matches it exactly: the same regular files with the same sizes
//! and CRC-32s, the same symlinks with the same targets, nothing more. The
//! manifest is written last, once the cache is built, to a temporary name
//! and then renamed: an interrupted preparation leaves no manifest, a
//! truncated or damaged file a mismatch, and either makes the cache rebuilt
//! instead of trusted. The manifest's header names the kind of cache, so a
//! manifest of one kind never vouches for another.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The manifest's name inside the cache directory.
pub(crate) const MANIFEST: &str = ".griffin-manifest";

/// The manifest's first line for a cache of `kind` (e.g. `kernel`).
fn header(kind: &str) -> String {
    format!("griffin-{kind}-cache 1\n")
}

/// The manifest text of the tree below `dir` (the manifest itself aside):
/// a header line naming the `kind` of cache, then one line per entry in
/// path order, `f SIZE CRC PATH` for a regular file, `l TARGET PATH` for a
/// symlink.
pub(crate) fn describe(dir: &Path, kind: &str) -> Result<String> {
    let mut out = header(kind);
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut String) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        if rel == Path::new(MANIFEST) {
            continue;
        }
        let rel_text = rel.to_string_lossy();
        if rel_text.contains('\n') {
            bail!("{} has a newline in its name", path.display());
        }
        let t = e
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if t.is_dir() {
            walk(root, &path, out)?;
        } else if t.is_symlink() {
            let target = fs::read_link(&path)
                .with_context(|| format!("reading the link {}", path.display()))?;
            let target = target.to_string_lossy();
            if target.contains('\n') {
                bail!("{} links to a target with a newline", path.display());
            }
            writeln!(out, "l {target} {rel_text}")?;
        } else if t.is_file() {
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            writeln!(
                out,
                "f {} {:08x} {rel_text}",
                bytes.len(),
                crc32fast::hash(&bytes)
            )?;
        } else {
            bail!(
                "{} is neither a file, a directory nor a link",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes the manifest of `dir` (a cache of `kind`), last and atomically
/// (a temporary name, flushed, then renamed).
pub(crate) fn seal(dir: &Path, kind: &str) -> Result<()> {
    let text = describe(dir, kind)?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(MANIFEST))
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

/// Checks that `dir` is the complete cache of `kind` its manifest
/// describes; the error says what differs (the first difference, naming the
/// file).
pub(crate) fn verify(dir: &Path, kind: &str) -> Result<()> {
    let path = dir.join(MANIFEST);
    let want = fs::read_to_string(&path)
        .with_context(|| format!("no readable manifest {}", path.display()))?;
    if !want.starts_with(&header(kind)) {
        bail!(
            "{} is not a manifest of a {kind} cache of this version",
            path.display()
        );
    }
    let have = describe(dir, kind)?;
    if have == want {
        return Ok(());
    }
    // Name the first entry that differs.
    let (mut w, mut h) = (want.lines(), have.lines());
    loop {
        match (w.next(), h.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => bail!(
                "{} differs from its manifest: found `{b}`, the manifest says `{a}`",
                dir.display()
            ),
            (Some(a), None) => bail!("{}: missing `{a}`", dir.display()),
            (None, Some(b)) => bail!("{}: not in the manifest: `{b}`", dir.display()),
            (None, None) => bail!("{} differs from its manifest", dir.display()),
        }
    }
}

/// Takes an exclusive `flock` on the file `path` (created when missing),
/// held until the returned file is closed, also when the process dies. When
/// another process holds it, says so (naming `what` and the holder's pid,
/// which the holder writes into the file) and waits.
pub(crate) fn lock(path: &Path, what: &str) -> Result<fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let flock = |op: libc::c_int| {
        // SAFETY: flock on a descriptor this function owns (kept open by
        // `file`); no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match flock(libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            let holder = fs::read_to_string(path).unwrap_or_default();
            eprintln!(
                "another {what} holds {} ({}); waiting for it to finish",
                path.display(),
                holder.trim()
            );
            let waited = Instant::now();
            flock(libc::LOCK_EX).with_context(|| format!("locking {}", path.display()))?;
            eprintln!(
                "got {} after {:.0} s",
                path.display(),
                waited.elapsed().as_secs_f64()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    file.set_len(0)?;
    (&file).write_all(format!("pid {}\n", std::process::id()).as_bytes())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("lib/modules/6.12.0/kernel/net");
        fs::create_dir_all(&m).unwrap();
        fs::write(m.join("igb.ko.xz"), vec![7u8; 5000]).unwrap();
        fs::write(m.join("veth.ko.xz"), b"veth module").unwrap();
        fs::create_dir_all(d.path().join("boot")).unwrap();
        fs::write(d.path().join("boot/vmlinuz-6.12.0"), b"kernel image").unwrap();
        std::os::unix::fs::symlink("kernel", d.path().join("lib/modules/6.12.0/build")).unwrap();
        d
    }

    #[test]
    fn a_sealed_cache_verifies() {
        let d = cache();
        seal(d.path(), "kernel").unwrap();
        verify(d.path(), "kernel").unwrap();
    }

    #[test]
    fn a_manifest_of_another_kind_is_not_trusted() {
        let d = cache();
        seal(d.path(), "kernel").unwrap();
        let e = format!("{:#}", verify(d.path(), "kube").unwrap_err());
        assert!(e.contains("kube cache"), "{e}");
    }

    #[test]
    fn a_second_lock_waits_for_the_first() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/lock");
        let first = lock(&path, "test").unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains("pid "));
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            let _second = lock(&p, "test").unwrap();
            tx.send(()).unwrap();
        });
        // The second lock is not granted while the first is held...
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(first);
        // ...and is once it is released.
        rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn an_unsealed_cache_is_not_trusted() {
        let d = cache();
        let e = verify(d.path(), "kernel").unwrap_err();
        assert!(format!("{e:#}").contains(MANIFEST), "{e:#}");
    }

    #[test]
    fn a_truncated_module_is_detected() {
        let d = cache();
        seal(d.path(), "kernel").unwrap();
        let igb = d.path().join("lib/modules/6.12.0/kernel/net/igb.ko.xz");
        fs::File::options()
            .write(true)
            .open(&igb)
            .unwrap()
            .set_len(0)
            .unwrap();
        let e = format!("{:#}", verify(d.path(), "kernel").unwrap_err());
        assert!(e.contains("igb.ko.xz") && e.contains("f 0 "), "{e}");
    }

    #[test]
    fn same_size_damage_a_missing_file_and_an_extra_one_are_detected() {
        let d = cache();
        seal(d.path(), "kernel").unwrap();
        let veth = d.path().join("lib/modules/6.12.0/kernel/net/veth.ko.xz");
        fs::write(&veth, b"veth modulf").unwrap();
        assert!(format!("{:#}", verify(d.path(), "kernel").unwrap_err()).contains("veth.ko.xz"));
        fs::write(&veth, b"veth module").unwrap();
        verify(d.path(), "kernel").unwrap();
        fs::remove_file(d.path().join("boot/vmlinuz-6.12.0")).unwrap();
        assert!(format!("{:#}", verify(d.path(), "kernel").unwrap_err()).contains("vmlinuz"));
        fs::write(d.path().join("boot/vmlinuz-6.12.0"), b"kernel image").unwrap();
        fs::write(d.path().join("boot/stray"), b"").unwrap();
        assert!(format!("{:#}", verify(d.path(), "kernel").unwrap_err()).contains("stray"));
    }
}
