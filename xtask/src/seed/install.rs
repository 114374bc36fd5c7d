//! Installing the real workloads without downloads at run time: the Python
//! tools in a virtual environment under `target/seed/venv` (from PyPI,
//! pinned in `xtask/seed/requirements.txt`) and the clip `vtest.avi`
//! extracted from Debian's `opencv-doc` (only that file). Both are caches
//! in the sense of [`crate::cache`]: built once, verified on every run
//! (the venv against its manifest, the clip against its SHA-256) and
//! rebuilt when missing or damaged.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The pinned requirements (installed with their dependencies checked).
const REQUIREMENTS: &str = include_str!("../../seed/requirements.txt");
/// Installed with `--no-deps`: it asks for `opencv-python` (the GUI build)
/// where the headless one of the requirements serves.
const NO_DEPS: &str = "rapidocr-onnxruntime==1.4.4";
/// What the workloads need from the venv, checked once after installing.
const SMOKE: &str = "import cv2, onnxruntime, rapidocr_onnxruntime, numpy\n\
assert hasattr(cv2, 'HOGDescriptor') and hasattr(cv2, 'CascadeClassifier'), cv2.__version__\n\
assert not cv2.CascadeClassifier(cv2.data.haarcascades + 'haarcascade_russian_plate_number.xml').empty()\n";

/// The clip inside `opencv-doc` and its SHA-256 (bookworm's 4.6.0).
const CLIP_IN_DEB: &str = "./usr/share/doc/opencv-doc/examples/data/vtest.avi";
const CLIP_SHA256: &str = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf";

/// The Debian interpreter the venv is made from (`python3-venv`).
const PYTHON: &str = "/usr/bin/python3";

/// What the workloads run with.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The venv's interpreter.
    pub python: PathBuf,
    /// The workloads' scripts (`xtask/seed`).
    pub scripts: PathBuf,
    /// `vtest.avi`.
    pub clip: PathBuf,
    /// `pip freeze` of the venv, for the report.
    pub freeze: String,
}

/// The venv's cache kind: names the requirements' hash, so changed pins
/// make a new venv.
fn venv_kind() -> String {
    let mut h = Sha256::new();
    h.update(REQUIREMENTS.as_bytes());
    h.update(NO_DEPS.as_bytes());
    let hex = hex(&h.finalize());
    format!("seed-venv-{}", &hex[..12])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes sure the venv and the clip are there and sound below `dir`
/// (`target/seed`), building what is missing or damaged.
pub(crate) fn prepare(dir: &Path) -> Result<Env> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = crate::cache::lock(&dir.join("install.lock"), "seed-claims install")?;
    let venv = dir.join("venv");
    venv_ready(&venv)?;
    let clip = clip_ready(&dir.join("clip"))?;
    let freeze = python_output(&venv.join("bin/python"), &["-m", "pip", "freeze"])?;
    Ok(Env {
        python: venv.join("bin/python"),
        scripts: crate::workspace_root().join("xtask/seed"),
        clip,
        freeze,
    })
}

/// A Python command that never writes bytecode (the venv must keep matching
/// its manifest).
pub(crate) fn python(python: &Path) -> Command {
    let mut c = Command::new(python);
    c.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1");
    c
}

fn python_output(py: &Path, args: &[&str]) -> Result<String> {
    let out = python(py)
        .args(args)
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}",
            py.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn venv_ready(venv: &Path) -> Result<()> {
    let kind = venv_kind();
    match crate::cache::verify(venv, &kind) {
        Ok(()) => return Ok(()),
        Err(e) if venv.exists() => eprintln!("seed-claims: rebuilding the venv: {e:#}"),
        Err(_) => eprintln!("seed-claims: creating the venv {}", venv.display()),
    }
    if venv.exists() {
        std::fs::remove_dir_all(venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    if !Path::new(PYTHON).exists() {
        bail!("{PYTHON} is missing: run `cargo xtask deps` (python3-venv)");
    }
    crate::sh(python(Path::new(PYTHON)).arg("-m").arg("venv").arg(venv))?;
    let py = venv.join("bin/python");
    let reqs = venv.join("requirements.txt");
    std::fs::write(&reqs, REQUIREMENTS).with_context(|| format!("writing {}", reqs.display()))?;
    crate::sh(
        python(&py)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&reqs),
    )
    .context("installing the requirements from PyPI")?;
    crate::sh(python(&py).args(["-m", "pip", "install", "-q", "--no-deps", NO_DEPS]))
        .with_context(|| format!("installing {NO_DEPS} from PyPI"))?;
    python_output(&py, &["-c", SMOKE]).context("the new venv fails its smoke check")?;
    crate::cache::seal(venv, &kind)?;
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn clip_ready(dir: &Path) -> Result<PathBuf> {
    let clip = dir.join("vtest.avi");
    if clip.exists() {
        match sha256_file(&clip) {
            Ok(h) if h == CLIP_SHA256 => return Ok(clip),
            Ok(h) => eprintln!(
                "seed-claims: {} has SHA-256 {h}, not {CLIP_SHA256}: extracting it again",
                clip.display()
            ),
            Err(e) => eprintln!("seed-claims: {e:#}: extracting it again"),
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile_dir(dir)?;
    let download = |w: &Path| {
        Command::new("apt-get")
            // Root downloads into a directory of its own (no _apt
            // sandbox, no warning about it).
            .args([
                "download",
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                "opencv-doc",
            ])
            .current_dir(w)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !download(&work) {
        // A fresh machine's package lists may not know it yet.
        crate::sh(
            Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        if !download(&work) {
            bail!("apt-get download opencv-doc failed (in {})", work.display());
        }
    }
    let deb = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("no .deb in {}", work.display()))?;
    crate::sh(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' '{CLIP_IN_DEB}'",
        deb.display(),
        work.display()
    )))?;
    let extracted = work.join(CLIP_IN_DEB);
    let h = sha256_file(&extracted)?;
    if h != CLIP_SHA256 {
        bail!(
            "{} from {} has SHA-256 {h}, expected {CLIP_SHA256}",
            CLIP_IN_DEB,
            deb.display()
        );
    }
    std::fs::rename(&extracted, &clip)
        .with_context(|| format!("moving the clip to {}", clip.display()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(clip)
}

/// A fresh work directory below `dir` (removed by the caller).
fn tempfile_dir(dir: &Path) -> Result<PathBuf> {
    let w = dir.join(format!("extract-{}", std::process::id()));
    if w.exists() {
        std::fs::remove_dir_all(&w)?;
    }
    std::fs::create_dir_all(&w).with_context(|| format!("creating {}", w.display()))?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_are_pinned_and_name_no_opencv_5() {
        let pins: Vec<&str> = REQUIREMENTS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert!(pins.len() >= 10, "{pins:?}");
        for p in &pins {
            assert!(p.contains("=="), "{p} is not pinned");
        }
        let cv = pins
            .iter()
            .find(|p| p.starts_with("opencv-python-headless=="))
            .expect("the headless OpenCV");
        assert!(cv.split("==").nth(1).unwrap().starts_with("4."), "{cv}");
    }

    #[test]
    fn the_venv_kind_names_a_hash_of_the_pins() {
        let k = venv_kind();
        assert_eq!(k.len(), "seed-venv-".len() + 12, "{k}");
        assert!(
            k["seed-venv-".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit()),
            "{k}"
        );
    }
}
