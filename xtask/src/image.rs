//! `cargo xtask image`: OCI image archives built from files on this
//! machine, with no base image to download.
//!
//! An image is one layer: the executable and exactly the shared libraries
//! it loads (its `DT_NEEDED` closure and its ELF interpreter, resolved by
//! the dynamic loader itself through `ldd`), each stored at the path the
//! loader found it, plus whatever extra files or links the image names.
//! The archive is an OCI image layout in a tar: `oci-layout`, `index.json`
//! (one manifest, annotated `io.containerd.image.name` so `ctr images
//! import` names the image), and `blobs/sha256/` holding the layer (an
//! uncompressed tar), the config and the manifest.
//!
//! Reproducible: the same files give the same bytes, hence the same
//! digests. Every tar entry (layer and archive) has mtime 0, uid/gid 0, no
//! user or group name, a fixed mode, and entries come in path order; the
//! JSON documents have sorted keys and no timestamps (no `created`, no
//! `history`). The image digest printed is the manifest's, the digest
//! containerd reports for the image.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The registry part of every image name built here (never pulled: the
/// e2e imports the archives and pods use `imagePullPolicy: Never`).
pub(crate) const REGISTRY: &str = "griffin.local";

/// One layer entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A directory (mode 0755).
    Dir,
    /// A regular file with its mode and contents.
    File { mode: u32, data: Vec<u8> },
    /// A symbolic link to the target.
    Link(String),
}

/// What an image is made of.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Repository below [`REGISTRY`], e.g. `griffin`.
    pub repo: String,
    /// The tag, e.g. the workspace version.
    pub tag: String,
    /// Layer entries by path (relative, no leading `/`); parent directories
    /// are added.
    pub entries: BTreeMap<String, Entry>,
    /// The config's Entrypoint.
    pub entrypoint: Vec<String>,
    /// The config's Cmd.
    pub cmd: Vec<String>,
}

/// A built image archive.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    /// `griffin.local/REPO:TAG`.
    pub name: String,
    /// The archive file.
    pub archive: PathBuf,
    /// The image (manifest) digest, `sha256:…`.
    pub digest: String,
}

impl Spec {
    /// An empty image named `REGISTRY/repo:tag`.
    pub(crate) fn new(repo: &str, tag: &str) -> Self {
        Self {
            repo: repo.into(),
            tag: tag.into(),
            entries: BTreeMap::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
        }
    }

    /// The full image name.
    pub(crate) fn name(&self) -> String {
        format!("{REGISTRY}/{}:{}", self.repo, self.tag)
    }

    /// Adds the executable `bin` at `at` (an absolute path in the image)
    /// and every shared library it loads at the path the loader resolves.
    pub(crate) fn add_executable(&mut self, bin: &Path, at: &str) -> Result<()> {
        let data = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
        self.entries
            .insert(rel(at)?, Entry::File { mode: 0o755, data });
        for lib in shared_libraries(bin)? {
            let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
            let at = lib.to_str().context("a library path that is not UTF-8")?;
            self.entries
                .insert(rel(at)?, Entry::File { mode: 0o755, data });
        }
        Ok(())
    }
}

fn rel(path: &str) -> Result<String> {
    let r = path.trim_start_matches('/');
    if r.is_empty() || r.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("{path:?} is not a clean path for an image");
    }
    Ok(r.to_owned())
}

/// The shared libraries (and the ELF interpreter) the dynamic loader maps
/// for `bin`, as `ldd` resolves them on this machine; empty for a static
/// executable.
pub(crate) fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", bin.display(), err.trim());
    }
    let mut libs = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.contains("not found") {
            bail!("{}: the loader cannot find `{l}`", bin.display());
        }
        let path = if let Some((_, rest)) = l.split_once("=> ") {
            rest.split_whitespace().next()
        } else if l.starts_with('/') {
            l.split_whitespace().next()
        } else {
            None
        };
        if let Some(p) = path.map(PathBuf::from).filter(|p| p.is_absolute()) {
            libs.push(p);
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// A minimal reproducible ustar writer.
#[derive(Debug, Default)]
pub(crate) struct Tar {
    out: Vec<u8>,
}

impl Tar {
    fn header(&mut self, path: &str, mode: u32, size: usize, kind: u8, link: &str) -> Result<()> {
        let mut h = [0u8; 512];
        let (prefix, name) = split_name(path)?;
        if link.len() > 100 {
            bail!("link target {link:?} is longer than 100 bytes");
        }
        let octal = |h: &mut [u8], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}", w = width - 1);
            h[at..at + width - 1].copy_from_slice(s.as_bytes());
        };
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&h);
        Ok(())
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
    }

    /// A directory entry (`path` without the trailing slash).
    pub(crate) fn dir(&mut self, path: &str) -> Result<()> {
        self.header(&format!("{path}/"), 0o755, 0, b'5', "")
    }

    /// A regular file.
    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.header(path, mode, data.len(), b'0', "")?;
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// A symbolic link.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.header(path, 0o777, 0, b'2', target)
    }

    /// The archive, with its two zero end blocks.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0u8; 1024]);
        self.out
    }
}

/// Splits a path into ustar's prefix (≤155) and name (≤100) fields.
fn split_name(path: &str) -> Result<(&str, &str)> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    for (i, _) in path.match_indices('/') {
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && name.len() <= 100 && !name.is_empty() {
            return Ok((prefix, name));
        }
    }
    bail!("{path:?} does not fit a ustar header")
}

/// The layer tar of `entries`, parents added, in path order.
pub(crate) fn layer(entries: &BTreeMap<String, Entry>) -> Result<Vec<u8>> {
    let mut all = entries.clone();
    for path in entries.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            match all.get(parent) {
                None => {
                    all.insert(parent.to_owned(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => bail!("{parent} is both a file and a directory in the image"),
            }
            p = parent;
        }
    }
    let mut tar = Tar::default();
    for (path, e) in &all {
        match e {
            Entry::Dir => tar.dir(path)?,
            Entry::File { mode, data } => tar.file(path, *mode, data)?,
            Entry::Link(target) => tar.symlink(path, target)?,
        }
    }
    Ok(tar.finish())
}

fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Builds the archive of `spec` as `out_dir/REPO-TAG.oci.tar` (written to a
/// temporary name, then renamed).
pub(crate) fn build(spec: &Spec, out_dir: &Path) -> Result<Built> {
    let layer = layer(&spec.entries)?;
    let layer_hex = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
    }))?;
    let config_hex = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_hex}"),
            "size": layer.len(),
        }],
    }))?;
    let manifest_hex = sha256(&manifest);
    let name = spec.name();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": spec.tag,
            },
        }],
    }))?;
    let mut blobs = BTreeMap::new();
    for (hex, data) in [
        (&layer_hex, &layer),
        (&config_hex, &config),
        (&manifest_hex, &manifest),
    ] {
        blobs.insert(format!("blobs/sha256/{hex}"), data.as_slice());
    }
    let mut tar = Tar::default();
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    for (path, data) in blobs {
        tar.file(&path, 0o644, data)?;
    }
    tar.file("index.json", 0o644, &index)?;
    tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let archive = out_dir.join(format!("{}-{}.oci.tar", spec.repo, spec.tag));
    let tmp = archive.with_extension("tar.tmp");
    fs::write(&tmp, tar.finish()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &archive).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(Built {
        name,
        archive,
        digest: format!("sha256:{manifest_hex}"),
    })
}

/// The image of Griffin: the `griffin` executable at `/usr/bin/griffin`
/// and its libraries; entrypoint `griffin`, command `daemon`.
pub(crate) fn griffin_spec(bin: &Path) -> Result<Spec> {
    let mut s = Spec::new("griffin", env!("CARGO_PKG_VERSION"));
    s.add_executable(bin, "/usr/bin/griffin")?;
    s.entrypoint = vec!["/usr/bin/griffin".into()];
    s.cmd = vec!["daemon".into()];
    Ok(s)
}

/// The static busybox of this machine (Debian's busybox-static).
pub(crate) fn static_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let p = PathBuf::from(p);
        if p.is_file() && shared_libraries(&p)?.is_empty() {
            return Ok(p);
        }
    }
    bail!("no static busybox (Debian package busybox-static; cargo xtask deps installs it)")
}

/// The helper image of the e2e: static busybox at `/bin/busybox` with a
/// link per applet in `/bin`. Its entrypoint sleeps until SIGTERM, so it
/// is also the pod sandbox ("pause") image; workloads give a command.
pub(crate) fn busybox_spec() -> Result<Spec> {
    let bin = static_busybox()?;
    let version = Command::new(&bin)
        .output()
        .ok()
        .and_then(|o| {
            let t = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = t
                .split_whitespace()
                .nth(1)?
                .trim_start_matches('v')
                .to_owned();
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.')
                .then_some(v)
        })
        .context("cannot read busybox's version")?;
    let mut s = Spec::new("busybox", &version);
    s.entries.insert(
        "bin/busybox".into(),
        Entry::File {
            mode: 0o755,
            data: fs::read(&bin)?,
        },
    );
    let list = Command::new(&bin)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        s.entries
            .insert(format!("bin/{applet}"), Entry::Link("busybox".into()));
    }
    s.entries.insert("tmp".into(), Entry::Dir);
    s.entrypoint = vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
    ];
    Ok(s)
}

/// Where `cargo xtask image` writes its archives.
pub(crate) fn out_dir() -> PathBuf {
    crate::workspace_root().join("target/image")
}

/// `cargo xtask image`: builds Griffin's release binary and the images;
/// prints each archive's path and digest.
pub(crate) fn run() -> Result<Vec<Built>> {
    let bin = crate::build_griffin(true)?;
    let out = out_dir();
    let images = vec![
        build(&griffin_spec(&bin)?, &out)?,
        build(&busybox_spec()?, &out)?,
    ];
    for b in &images {
        println!("{} {} {}", b.name, b.archive.display(), b.digest);
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of a ustar archive, in order: (path, kind, size, mode,
    /// uid, mtime, link target, data), read independently of the writer.
    fn read_tar(data: &[u8]) -> Vec<(String, u8, Vec<u8>, u32, String)> {
        let mut out = Vec::new();
        let mut at = 0;
        let field = |h: &[u8], a: usize, n: usize| {
            let f = &h[a..a + n];
            let end = f.iter().position(|&b| b == 0).unwrap_or(n);
            String::from_utf8(f[..end].to_vec()).unwrap()
        };
        let num = |s: String| u64::from_str_radix(s.trim(), 8).unwrap();
        while at + 512 <= data.len() {
            let h = &data[at..at + 512];
            if h.iter().all(|&b| b == 0) {
                break;
            }
            let stored = num(field(h, 148, 8));
            let mut copy = h.to_vec();
            copy[148..156].fill(b' ');
            assert_eq!(
                stored,
                copy.iter().map(|&b| u64::from(b)).sum::<u64>(),
                "checksum"
            );
            assert_eq!(num(field(h, 108, 8)), 0, "uid");
            assert_eq!(num(field(h, 116, 8)), 0, "gid");
            assert_eq!(num(field(h, 136, 12)), 0, "mtime");
            let prefix = field(h, 345, 155);
            let name = field(h, 0, 100);
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let size = num(field(h, 124, 12)) as usize;
            let mode = num(field(h, 100, 8)) as u32;
            let body = data[at + 512..at + 512 + size].to_vec();
            out.push((path, h[156], body, mode, field(h, 157, 100)));
            at += 512 + size.div_ceil(512) * 512;
        }
        out
    }

    fn blob<'a>(entries: &'a [(String, u8, Vec<u8>, u32, String)], digest: &str) -> &'a [u8] {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let e = entries
            .iter()
            .find(|e| e.0 == format!("blobs/sha256/{hex}"))
            .unwrap_or_else(|| panic!("no blob {digest}"));
        assert_eq!(sha256(&e.2), hex, "blob {digest} has another digest");
        &e.2
    }

    /// A layer's entries by absolute path: (tar type flag, data, link target).
    type Files = BTreeMap<String, (u8, Vec<u8>, String)>;

    /// The layer's files, by absolute path, from an archive.
    fn layer_of(archive: &[u8]) -> (serde_json::Value, Files) {
        let entries = read_tar(archive);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert!(names.contains(&"oci-layout"), "{names:?}");
        let index: serde_json::Value =
            serde_json::from_slice(&entries.iter().find(|e| e.0 == "index.json").unwrap().2)
                .unwrap();
        let m = &index["manifests"][0];
        let manifest: serde_json::Value =
            serde_json::from_slice(blob(&entries, m["digest"].as_str().unwrap())).unwrap();
        let config: serde_json::Value = serde_json::from_slice(blob(
            &entries,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
        assert!(config.get("created").is_none() && config.get("history").is_none());
        let layer = blob(&entries, layer_digest);
        let files = read_tar(layer)
            .into_iter()
            .map(|(p, k, d, _, l)| (format!("/{}", p.trim_end_matches('/')), (k, d, l)))
            .collect();
        (index, files)
    }

    /// An executable with shared libraries: this test binary itself.
    fn dynamic_executable() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        assert!(
            !shared_libraries(&exe).unwrap().is_empty(),
            "the test binary should be dynamically linked"
        );
        exe
    }

    #[test]
    fn two_builds_of_the_same_files_have_the_same_digest_and_bytes() {
        let exe = dynamic_executable();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spec = || griffin_spec(&exe).unwrap();
        let first = build(&spec(), a.path()).unwrap();
        let second = build(&spec(), b.path()).unwrap();
        assert!(first.digest.starts_with("sha256:") && first.digest.len() == 71);
        assert_eq!(first.digest, second.digest);
        assert_eq!(
            fs::read(&first.archive).unwrap(),
            fs::read(&second.archive).unwrap()
        );
        // A different file is a different image.
        let mut other = spec();
        other.entries.insert("etc/x".into(), Entry::Dir);
        assert_ne!(build(&other, a.path()).unwrap().digest, first.digest);
    }

    #[test]
    fn the_layer_holds_the_executable_its_interpreter_and_every_needed_library() {
        let exe = dynamic_executable();
        let d = tempfile::tempdir().unwrap();
        let built = build(&griffin_spec(&exe).unwrap(), d.path()).unwrap();
        let (index, files) = layer_of(&fs::read(&built.archive).unwrap());
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            format!("griffin.local/griffin:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            files["/usr/bin/griffin"].1,
            fs::read(&exe).unwrap(),
            "the executable"
        );
        // Independently of ldd: the interpreter and the DT_NEEDED closure
        // read from the ELF files themselves, each soname found in the
        // layer's library directories.
        let elf = |data: &[u8]| {
            use object::read::elf::{Dyn, ElfFile64};
            use object::{Object, ObjectSection};
            let f = ElfFile64::<object::Endianness>::parse(data).unwrap();
            let interp = f.section_by_name(".interp").map(|s| {
                String::from_utf8_lossy(s.data().unwrap())
                    .trim_end_matches('\0')
                    .to_owned()
            });
            let e = f.endian();
            let mut needed = Vec::new();
            if let Some((dynamic, index)) = f.elf_section_table().dynamic(e, f.data()).unwrap() {
                let strings = f.elf_section_table().strings(e, f.data(), index).unwrap();
                for d in dynamic {
                    if d.tag32(e) == Some(object::elf::DT_NEEDED) {
                        let off = d.d_val(e) as u32;
                        needed.push(String::from_utf8(strings.get(off).unwrap().to_vec()).unwrap());
                    }
                }
            }
            (interp, needed)
        };
        let (interp, mut todo) = elf(&fs::read(&exe).unwrap());
        let interp = interp.expect("a dynamic executable has an interpreter");
        assert!(files.contains_key(&interp), "no interpreter {interp}");
        let mut seen = std::collections::BTreeSet::new();
        while let Some(soname) = todo.pop() {
            if !seen.insert(soname.clone()) {
                continue;
            }
            let found = files
                .iter()
                .find(|(p, (k, _, _))| *k == b'0' && p.rsplit('/').next() == Some(soname.as_str()))
                .unwrap_or_else(|| panic!("{soname} is needed but not in the layer"));
            todo.extend(elf(&found.1 .1).1);
        }
        assert!(seen.len() >= 2, "{seen:?}");
        // Nothing else: every regular file is the executable, the
        // interpreter or a needed library.
        for (p, (k, _, _)) in &files {
            if *k == b'0' && p != "/usr/bin/griffin" && *p != interp {
                let base = p.rsplit('/').next().unwrap();
                assert!(seen.contains(base), "{p} is in the layer but not needed");
            }
        }
    }

    #[test]
    fn the_executable_runs_from_the_unpacked_layer_alone() {
        // chroot(8) into the unpacked layer: the loader finds everything it
        // needs there (root, as CI runs).
        let bin = fs::canonicalize("/bin/true").unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("t", "1");
        spec.add_executable(&bin, "/usr/bin/griffin").unwrap();
        let (_, files) = layer_of(&fs::read(build(&spec, d.path()).unwrap().archive).unwrap());
        let root = d.path().join("root");
        for (p, (k, data, _)) in &files {
            let at = root.join(p.trim_start_matches('/'));
            match k {
                b'5' => fs::create_dir_all(&at).unwrap(),
                b'0' => {
                    fs::create_dir_all(at.parent().unwrap()).unwrap();
                    fs::write(&at, data).unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&at, fs::Permissions::from_mode(0o755)).unwrap();
                }
                _ => panic!("unexpected entry {p}"),
            }
        }
        let st = Command::new("chroot")
            .arg(&root)
            .arg("/usr/bin/griffin")
            .status()
            .unwrap();
        assert!(st.success(), "{st}");
        // Without its libc it cannot run: the layer is what makes it work.
        for (p, (k, _, _)) in &files {
            if *k == b'0' && p.rsplit('/').next().unwrap().starts_with("libc.so") {
                fs::remove_file(root.join(p.trim_start_matches('/'))).unwrap();
            }
        }
        let st = Command::new("chroot")
            .arg(&root)
            .arg("/usr/bin/griffin")
            .status()
            .unwrap();
        assert!(!st.success());
    }

    #[test]
    fn the_daemonset_names_the_image_this_builds() {
        let ds =
            fs::read_to_string(crate::workspace_root().join("deploy/30-daemonset.yaml")).unwrap();
        let images: Vec<&str> = ds
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image:"))
            .map(str::trim)
            .collect();
        let want = format!("{REGISTRY}/griffin:{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(images, vec![want.as_str()], "deploy/30-daemonset.yaml");
    }

    #[test]
    fn long_paths_use_the_prefix_field_and_links_keep_their_target() {
        let mut e = BTreeMap::new();
        let dir = format!("{}/{}", "a".repeat(60), "d".repeat(90));
        let long = format!("{dir}/{}", "f".repeat(90));
        e.insert(
            long.clone(),
            Entry::File {
                mode: 0o644,
                data: b"x".to_vec(),
            },
        );
        e.insert("bin/sh".into(), Entry::Link("busybox".into()));
        let entries = read_tar(&layer(&e).unwrap());
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        // Parents first, then in path order.
        assert_eq!(
            paths,
            vec![
                &format!("{}/", "a".repeat(60)),
                &format!("{dir}/"),
                long.as_str(),
                "bin/",
                "bin/sh",
            ]
        );
        assert_eq!(entries[4].4, "busybox");
        assert_eq!(entries[4].1, b'2');
        let too_long = "x".repeat(300);
        let mut e = BTreeMap::new();
        e.insert(too_long, Entry::Dir);
        assert!(layer(&e).is_err());
    }
}
