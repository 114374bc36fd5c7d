//! What a complete guest-kernel cache is, and the check that a cache under
//! `target/vm/kernel` still is one.
//!
//! A cache is complete when its manifest, `.griffin-manifest`, is there and
//! the tree matches it exactly: the same regular files with the same sizes
//! and CRC-32s, the same symlinks with the same targets, nothing more. The
//! manifest is written last, once the package is unpacked and indexed, to a
//! temporary name and then renamed: an interrupted preparation leaves no
//! manifest, a truncated or damaged file a mismatch, and either makes the
//! cache rebuilt instead of trusted.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The manifest's name inside the cache directory.
pub(crate) const MANIFEST: &str = ".griffin-manifest";
const HEADER: &str = "griffin-kernel-cache 1";

/// The manifest text of the tree below `dir` (the manifest itself aside):
/// a header line, then one line per entry in path order, `f SIZE CRC PATH`
/// for a regular file, `l TARGET PATH` for a symlink.
pub(crate) fn describe(dir: &Path) -> Result<String> {
    let mut out = format!("{HEADER}\n");
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

/// Writes the manifest of `dir`, last and atomically (a temporary name,
/// flushed, then renamed).
pub(crate) fn seal(dir: &Path) -> Result<()> {
    let text = describe(dir)?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    {
        use std::io::Write;
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(MANIFEST))
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

/// Checks that `dir` is the complete cache its manifest describes; the
/// error says what differs (the first difference, naming the file).
pub(crate) fn verify(dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST);
    let want = fs::read_to_string(&path)
        .with_context(|| format!("no readable manifest {}", path.display()))?;
    if !want.starts_with(&format!("{HEADER}\n")) {
        bail!("{} is not a manifest of this version", path.display());
    }
    let have = describe(dir)?;
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
        seal(d.path()).unwrap();
        verify(d.path()).unwrap();
    }

    #[test]
    fn an_unsealed_cache_is_not_trusted() {
        let d = cache();
        let e = verify(d.path()).unwrap_err();
        assert!(format!("{e:#}").contains(MANIFEST), "{e:#}");
    }

    #[test]
    fn a_truncated_module_is_detected() {
        let d = cache();
        seal(d.path()).unwrap();
        let igb = d.path().join("lib/modules/6.12.0/kernel/net/igb.ko.xz");
        fs::File::options()
            .write(true)
            .open(&igb)
            .unwrap()
            .set_len(0)
            .unwrap();
        let e = format!("{:#}", verify(d.path()).unwrap_err());
        assert!(e.contains("igb.ko.xz") && e.contains("f 0 "), "{e}");
    }

    #[test]
    fn same_size_damage_a_missing_file_and_an_extra_one_are_detected() {
        let d = cache();
        seal(d.path()).unwrap();
        let veth = d.path().join("lib/modules/6.12.0/kernel/net/veth.ko.xz");
        fs::write(&veth, b"veth modulf").unwrap();
        assert!(format!("{:#}", verify(d.path()).unwrap_err()).contains("veth.ko.xz"));
        fs::write(&veth, b"veth module").unwrap();
        verify(d.path()).unwrap();
        fs::remove_file(d.path().join("boot/vmlinuz-6.12.0")).unwrap();
        assert!(format!("{:#}", verify(d.path()).unwrap_err()).contains("vmlinuz"));
        fs::write(d.path().join("boot/vmlinuz-6.12.0"), b"kernel image").unwrap();
        fs::write(d.path().join("boot/stray"), b"").unwrap();
        assert!(format!("{:#}", verify(d.path()).unwrap_err()).contains("stray"));
    }
}
