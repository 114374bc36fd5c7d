//! containerd 1.7 (with NRI) for `cargo xtask e2e --containerd 1.7`:
//! Debian trixie's `containerd` package, fetched with `apt-get download`
//! through a private trixie source list (nothing of trixie is installed
//! into the system) and unpacked with `dpkg -x`. Its binaries need only
//! glibc ≥ 2.34; runc stays bookworm's. Cached in `CACHE/containerd-1.7`
//! (`bin/containerd`, `bin/containerd-shim-runc-v2`), sealed with a
//! manifest like the Kubernetes cache and rebuilt when it does not verify.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache;

/// The binaries taken from the package.
const BINARIES: &[&str] = &["containerd", "containerd-shim-runc-v2"];

/// The cached `bin/` directory, fetched first when the cache is missing or
/// does not verify.
pub(crate) fn ensure() -> Result<PathBuf> {
    let root = crate::kube::cache_root();
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let dir = root.join("containerd-1.7");
    let _lock = cache::lock(
        &root.join("containerd-1.7.lock"),
        "the containerd 1.7 cache",
    )?;
    if check(&dir).is_ok() {
        return Ok(dir.join("bin"));
    }
    eprintln!(
        "e2e: fetching containerd 1.7 (Debian trixie's package) into {}",
        dir.display()
    );
    let tmp = root.join("containerd-1.7.tmp");
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_dir_all(&dir);
    fetch(&tmp)?;
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
    check(&dir)?;
    Ok(dir.join("bin"))
}

fn check(dir: &Path) -> Result<()> {
    cache::verify(dir, "containerd-1.7")?;
    for b in BINARIES {
        if !dir.join("bin").join(b).is_file() {
            bail!("{} has no bin/{b}", dir.display());
        }
    }
    Ok(())
}

/// apt-get with a private state: the trixie source list and its lists and
/// archives below `work`.
fn apt(work: &Path) -> Command {
    let mut c = Command::new("apt-get");
    c.arg("-q")
        .arg("-o")
        .arg(format!(
            "Dir::Etc::sourcelist={}",
            work.join("sources.list").display()
        ))
        .args(["-o", "Dir::Etc::sourceparts=-"])
        .arg("-o")
        .arg(format!(
            "Dir::State::lists={}",
            work.join("lists").display()
        ))
        .arg("-o")
        .arg(format!("Dir::Cache={}", work.join("cache").display()))
        .args(["-o", "APT::Sandbox::User=root"])
        .current_dir(work);
    c
}

fn fetch(tmp: &Path) -> Result<()> {
    let work = tmp.join("apt");
    fs::create_dir_all(work.join("lists/partial"))?;
    fs::create_dir_all(work.join("cache/archives/partial"))?;
    fs::write(
        work.join("sources.list"),
        "deb http://deb.debian.org/debian trixie main\n",
    )?;
    crate::sh(apt(&work).arg("update"))?;
    crate::sh(apt(&work).args(["download", "containerd"]))?;
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("containerd_1.7"))
        })
        .context(
            "apt-get download left no containerd_1.7*.deb (is trixie's containerd still 1.7?)",
        )?;
    let unpacked = tmp.join("unpacked");
    crate::sh(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    let bin = tmp.join("bin");
    fs::create_dir_all(&bin)?;
    for b in BINARIES {
        let from = unpacked.join("usr/bin").join(b);
        fs::copy(&from, bin.join(b))
            .with_context(|| format!("copying {} (not in the package?)", from.display()))?;
    }
    fs::write(
        tmp.join("package"),
        deb.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .as_bytes(),
    )?;
    fs::remove_dir_all(&work)?;
    fs::remove_dir_all(&unpacked)?;
    cache::seal(tmp, "containerd-1.7")?;
    Ok(())
}
