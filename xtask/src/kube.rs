//! The Kubernetes binaries of `cargo xtask e2e`, built from Debian's
//! `kubernetes` source package with Debian's Go and cached outside the
//! clone.
//!
//! The cache is `CACHE/kube-v1.20.2` (`CACHE` is `$GRIFFIN_CACHE_DIR`, by
//! default `/var/cache/griffin`): `bin/` with the five binaries and
//! `debian-version` naming the source package they came from, sealed by a
//! manifest of sizes and CRC-32s ([`crate::cache`]) written last, after
//! every binary built and answered `--version` with the expected version.
//! A cache that does not verify (missing, interrupted, truncated, damaged)
//! is rebuilt from scratch. One preparation at a time per machine: a run
//! holds `CACHE/kube-v1.20.2.lock` while it checks or builds the cache, a
//! second run waits for it and then finds the cache built.
//!
//! The build: `apt-get source kubernetes` (bookworm's, which is
//! `1.20.5+really1.20.2`; dpkg-source applies Debian's patches) into
//! `CACHE/kube-v1.20.2.build`, then the project's own `make
//! WHAT="cmd/kubelet …"` there with `CGO_ENABLED=0` as Debian's rules do
//! (the project's scripts keep Go's build cache inside the tree, so every
//! build is cold). Before `make`, the vendored `github.com/modern-go/reflect2`
//! (v1.0.1) is replaced by Debian's `golang-github-modern-go-reflect2-dev`
//! (v1.0.2, [`REFLECT2_SRC`]): under Go 1.18 and later, v1.0.1's map
//! iteration calls the runtime with a stale signature, and kube-apiserver
//! dies with a segmentation fault on the first write of a custom resource
//! (json-iterator encoding its metadata). The cache records this in
//! `patches` ([`PATCHES`]); a cache without it is rebuilt.
//! The build tree is removed once the binaries are sealed
//! in the cache; the build log stays next to it
//! (`kube-v1.20.2.build.log`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cache;

/// The Kubernetes version the e2e runs (bookworm's source package).
pub(crate) const VERSION: &str = "v1.20.2";
/// What bookworm's `kubernetes` source version must contain.
const DEBIAN_UPSTREAM: &str = "really1.20.2";

/// What the build changed in Debian's source tree, recorded in the cache's
/// `patches` file: a cache recording anything else is rebuilt.
pub(crate) const PATCHES: &str =
    "vendor/github.com/modern-go/reflect2 from golang-github-modern-go-reflect2-dev (v1.0.2)\n";

/// Where Debian's reflect2 v1.0.2 source is.
const REFLECT2_SRC: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

/// Replaces the tree's vendored reflect2 with Debian's v1.0.2 (its `.go`
/// and `.s` files; see the module doc).
fn patch_reflect2(tree: &Path) -> Result<()> {
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    if !vendored.is_dir() {
        bail!("{} is not in the source tree", vendored.display());
    }
    let src: Vec<PathBuf> = fs::read_dir(REFLECT2_SRC)
        .with_context(|| format!("reading {REFLECT2_SRC} (cargo xtask deps installs golang-github-modern-go-reflect2-dev)"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "go" || x == "s"))
        .collect();
    if !src.iter().any(|p| p.ends_with("go_above_118.go")) {
        bail!("{REFLECT2_SRC} is not reflect2 v1.0.2 (no go_above_118.go)");
    }
    for e in fs::read_dir(&vendored)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "go" || x == "s") {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for p in &src {
        let to = vendored.join(p.file_name().context("file name")?);
        fs::copy(p, &to).with_context(|| format!("copying {} to {}", p.display(), to.display()))?;
    }
    Ok(())
}

/// The binaries built, all from one `make`.
pub(crate) const BINARIES: &[&str] = &[
    "kubelet",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
    "kubectl",
];

/// The root of xtask's machine-wide caches.
pub(crate) fn cache_root() -> PathBuf {
    std::env::var_os("GRIFFIN_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/griffin"))
}

/// The verified Kubernetes binaries.
#[derive(Debug)]
pub(crate) struct Bins {
    dir: PathBuf,
    /// How they were obtained.
    pub obtained: Obtained,
}

/// Whether the cache was reused or built, and how long that took.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Obtained {
    /// The cache verified; the time is the verification's.
    Reused(Duration),
    /// Built from source (the cache was missing or did not verify).
    Built(Duration),
}

impl Bins {
    /// The path of one of [`BINARIES`].
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }
}

/// The cached binaries, built first when the cache is missing or does not
/// verify. Holds the cache's lock while checking or building.
pub(crate) fn ensure() -> Result<Bins> {
    let root = cache_root();
    let dir = root.join(format!("kube-{VERSION}"));
    let _lock = cache::lock(
        &root.join(format!("kube-{VERSION}.lock")),
        "preparation of the Kubernetes binaries",
    )?;
    let t = Instant::now();
    if dir.exists() {
        match check(&dir) {
            Ok(()) => {
                return Ok(Bins {
                    dir,
                    obtained: Obtained::Reused(t.elapsed()),
                })
            }
            Err(e) => eprintln!("e2e: not trusting the Kubernetes cache ({e:#}); rebuilding it"),
        }
    }
    build(&root, &dir)?;
    check(&dir).context("the Kubernetes cache just built does not verify")?;
    Ok(Bins {
        dir,
        obtained: Obtained::Built(t.elapsed()),
    })
}

/// The cache verifies against its manifest and holds every binary.
fn check(dir: &Path) -> Result<()> {
    cache::verify(dir, "kube")?;
    let patches = fs::read_to_string(dir.join("patches")).unwrap_or_default();
    if patches != PATCHES {
        bail!(
            "the cache was built without the patches of this xtask ({})",
            PATCHES.trim()
        );
    }
    for b in BINARIES {
        let p = dir.join("bin").join(b);
        if !p.is_file() {
            bail!("{} is missing", p.display());
        }
    }
    Ok(())
}

fn build(root: &Path, dir: &Path) -> Result<()> {
    let work = root.join(format!("kube-{VERSION}.build"));
    let log_path = root.join(format!("kube-{VERSION}.build.log"));
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!(
        "e2e: building Kubernetes {VERSION} from Debian's source package in {} (minutes; log {})",
        work.display(),
        log_path.display()
    );
    crate::sh(
        Command::new("apt-get")
            // As root into a root-owned directory: no need for apt's
            // sandbox user.
            .args(["source", "-q", "-o", "APT::Sandbox::User=root", "kubernetes"])
            .current_dir(&work),
    )
    .context("fetching the kubernetes source package (is a bookworm deb-src line configured? cargo xtask deps adds it)")?;
    let dsc = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "dsc"))
        .context("apt-get source left no .dsc")?;
    let debian_version = fs::read_to_string(&dsc)?
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(str::to_owned)
        .with_context(|| format!("{} has no Version", dsc.display()))?;
    if !debian_version.contains(DEBIAN_UPSTREAM) {
        bail!(
            "Debian's kubernetes source is {debian_version}, not Kubernetes {VERSION}; the e2e is written for {VERSION}"
        );
    }
    let tree = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir() && p.join("Makefile").is_file())
        .context("apt-get source unpacked no tree with a Makefile")?;
    patch_reflect2(&tree)?;
    let what = BINARIES
        .iter()
        .map(|b| format!("cmd/{b}"))
        .collect::<Vec<_>>()
        .join(" ");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let t = Instant::now();
    let status = Command::new("make")
        .arg(format!("WHAT={what}"))
        .current_dir(&tree)
        .env("CGO_ENABLED", "0")
        .env("GOPATH", work.join("gopath"))
        .env("HOME", &work)
        .env_remove("GOFLAGS")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running make")?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        bail!(
            "building Kubernetes failed ({status}); full log {}",
            log_path.display()
        );
    }
    eprintln!(
        "e2e: make built {} in {:.0?}",
        BINARIES.join(", "),
        t.elapsed()
    );
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(tmp.join("bin"))?;
    for b in BINARIES {
        let from = tree.join("_output/bin").join(b);
        let to = tmp.join("bin").join(b);
        fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        let args: &[&str] = if *b == "kubectl" {
            &["version", "--client", "--short"]
        } else {
            &["--version"]
        };
        let out = Command::new(&to)
            .args(args)
            .output()
            .with_context(|| format!("running {} {}", to.display(), args.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.split_whitespace().any(|w| w == VERSION) {
            bail!(
                "{b} --version says {:?}, not Kubernetes {VERSION}",
                text.trim()
            );
        }
    }
    fs::write(tmp.join("debian-version"), format!("{debian_version}\n"))?;
    fs::write(tmp.join("patches"), PATCHES)?;
    // The manifest last: only a cache that got this far is ever trusted.
    cache::seal(&tmp, "kube")?;
    fs::rename(&tmp, dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(binaries: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("bin")).unwrap();
        for b in binaries {
            fs::write(d.path().join("bin").join(b), format!("{b} binary")).unwrap();
        }
        fs::write(d.path().join("debian-version"), "1.20.5+really1.20.2-1\n").unwrap();
        fs::write(d.path().join("patches"), PATCHES).unwrap();
        d
    }

    #[test]
    fn a_cache_built_without_the_patches_is_rebuilt() {
        let d = cache_with(BINARIES);
        fs::remove_file(d.path().join("patches")).unwrap();
        cache::seal(d.path(), "kube").unwrap();
        let e = format!("{:#}", check(d.path()).unwrap_err());
        assert!(e.contains("patches"), "{e}");
    }

    #[test]
    fn a_sealed_complete_cache_is_reused() {
        let d = cache_with(BINARIES);
        cache::seal(d.path(), "kube").unwrap();
        check(d.path()).unwrap();
    }

    #[test]
    fn a_cache_missing_a_binary_is_rebuilt_even_when_sealed() {
        let d = cache_with(&BINARIES[..BINARIES.len() - 1]);
        cache::seal(d.path(), "kube").unwrap();
        let e = format!("{:#}", check(d.path()).unwrap_err());
        assert!(e.contains(BINARIES[BINARIES.len() - 1]), "{e}");
    }

    #[test]
    fn a_damaged_or_unsealed_cache_is_rebuilt() {
        let d = cache_with(BINARIES);
        assert!(check(d.path()).is_err(), "unsealed");
        cache::seal(d.path(), "kube").unwrap();
        fs::write(d.path().join("bin/kubelet"), "kubelet binarz").unwrap();
        let e = format!("{:#}", check(d.path()).unwrap_err());
        assert!(e.contains("kubelet"), "{e}");
        // A kernel cache's manifest does not vouch for binaries.
        let k = cache_with(BINARIES);
        cache::seal(k.path(), "kernel").unwrap();
        assert!(check(k.path()).is_err());
    }
}
