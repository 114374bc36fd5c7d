//! `cargo xtask vm-test`: the QEMU guest test bed.
//!
//! Prepares (cached under `target/vm/`) a Debian 6.12 kernel from
//! bookworm-backports and a tiny initramfs (static busybox and the 9p
//! modules), builds the guest test binaries on the host, and boots the guest
//! with a 9p share as its root file system: the share holds busybox, kmod,
//! iproute2 and the host libraries they and the test binaries need, a copy
//! of the kernel's modules, and the test binaries. The guest runs each test
//! binary single-threaded as root, printing whole-line markers on the serial
//! console, writes its exit code to the share and leaves QEMU through
//! `isa-debug-exit`.
//!
//! Tests a topology cannot run (it lacks the hardware their entry in
//! `griffin_tests::vm::GUEST_TESTS` declares) are passed to libtest as
//! `--skip` filters and reported as filtered out, with what they need; they
//! never count as passed.
//!
//! Concurrency: a run holds an exclusive lock on `target/vm/lock` from start
//! to end; a second run in the same checkout says so and waits. The guest
//! root holds copies, never hard links, of the cache's files, so nothing the
//! guest (or a root being rebuilt) writes reaches the cache.
//!
//! The kernel cache is verified on every run against its manifest
//! ([`crate::cache`]) and rebuilt when it is incomplete or damaged.
//!
//! Robustness: TCG unless KVM is verified to work (the nested KVM on these
//! machines kills stock kernels), a hard timeout per boot, a guest that
//! reported but whose QEMU did not exit is killed, `KVM internal error` is
//! detected, and a boot that hung before the guest came up is retried once.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use griffin_tests::vm::{Need, VmTopology};

use crate::{cache, cargo, sh};

/// Kernel flavour: the standard one (the cloud flavour lacks igb, igbvf,
/// rdma_rxe and 9p).
const KERNEL_META: &str = "linux-image-6.12-amd64";

/// Modules loaded from the initramfs, in order, to reach the 9p root.
const INITRAMFS_MODULES: &[&str] = &["netfs", "9pnet", "9pnet_virtio", "9p"];
/// Modules the guest loads once its root is up.
const GUEST_MODULES: &[&str] = &[
    "virtio_net",
    "igb",
    "igbvf",
    "nvme",
    "veth",
    "ib_uverbs",
    "rdma_rxe",
    "crc32_generic",
];

/// No display, no reboot, the serial console on stdio, no monitor.
const CONSOLE_ONLY: &[&str] = &[
    "-display",
    "none",
    "-no-reboot",
    "-serial",
    "stdio",
    "-monitor",
    "none",
];

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const RUN_TIMEOUT: Duration = Duration::from_secs(1200);
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// Options of `cargo xtask vm-test`.
#[derive(Debug)]
pub(crate) struct Opts {
    pub topology: String,
    pub filter: Option<String>,
    pub keep: bool,
    pub update_fixture: bool,
}

fn vm_dir() -> PathBuf {
    crate::workspace_root().join("target/vm")
}

struct Kernel {
    version: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The guest kernel: reuse the one cached under target/vm/kernel when it
/// verifies against its manifest, else download the newest 6.12 image from
/// bookworm-backports, unpack and index it, and seal the cache.
fn kernel() -> Result<Kernel> {
    let dir = vm_dir().join("kernel");
    if dir.exists() {
        match cache::verify(&dir, "kernel") {
            Ok(()) => {
                if let Some(k) = find_unpacked(&dir)? {
                    return Ok(k);
                }
                eprintln!(
                    "vm: the kernel cache {} holds no kernel; rebuilding it",
                    dir.display()
                );
            }
            Err(e) => eprintln!("vm: not trusting the kernel cache ({e:#}); rebuilding it"),
        }
    }
    let deps = output(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    let pkg = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-6.12"))
        .with_context(|| format!("no kernel package behind {KERNEL_META}: is bookworm-backports an apt source? (apt-get update)"))?
        .to_owned();
    let dl = vm_dir().join("download");
    fs::create_dir_all(&dl)?;
    eprintln!("vm: downloading {pkg} from bookworm-backports");
    sh(Command::new("apt-get")
        // Downloading as root into target/: no need for apt's sandbox user.
        .args([
            "download",
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            "-t",
            "bookworm-backports",
            &pkg,
        ])
        .current_dir(&dl))
    .with_context(|| format!("fetching the guest kernel package {pkg}"))?;
    let deb = fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&pkg))
        })
        .with_context(|| format!("apt-get download left no {pkg}*.deb in {}", dl.display()))?;
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    sh(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    let k = find_unpacked(&tmp)?.context("the kernel package holds no vmlinuz")?;
    sh(Command::new("depmod").arg("-b").arg(&tmp).arg(&k.version))?;
    // The manifest last: only a cache that got this far is ever trusted.
    cache::seal(&tmp, "kernel")?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    let _ = fs::remove_file(&deb);
    // An initramfs built from an earlier cache is rebuilt from this one.
    let _ = fs::remove_file(initramfs_path(&k.version));
    find_unpacked(&dir)?.context("unpacked kernel vanished")
}

/// The kernel unpacked in `dir`.
fn find_unpacked(dir: &Path) -> Result<Option<Kernel>> {
    let boot = dir.join("boot");
    let Ok(rd) = fs::read_dir(&boot) else {
        return Ok(None);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("vmlinuz-") {
            return Ok(Some(Kernel {
                version: v.to_owned(),
                vmlinuz: e.path(),
                modules: dir.join("lib/modules").join(v),
            }));
        }
    }
    Ok(None)
}

/// The module files (`.ko.xz`) to load for `wanted`, dependencies first.
fn module_closure(k: &Kernel, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let dep = fs::read_to_string(k.modules.join("modules.dep"))?;
    let name_of = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|f| {
                f.to_string_lossy()
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .replace('-', "_")
            })
            .unwrap_or_default()
    };
    let mut order: Vec<String> = Vec::new();
    fn visit(
        m: &str,
        dep: &str,
        order: &mut Vec<String>,
        name_of: &dyn Fn(&str) -> String,
    ) -> Result<()> {
        let line = dep
            .lines()
            .find(|l| name_of(l.split(':').next().unwrap_or("")) == m.replace('-', "_"))
            .with_context(|| format!("module {m} is not in the guest kernel"))?;
        let (path, deps) = line.split_once(':').unwrap_or((line, ""));
        for d in deps.split_whitespace() {
            visit(&name_of(d), dep, order, name_of)?;
        }
        if !order.iter().any(|p| p == path) {
            order.push(path.to_owned());
        }
        Ok(())
    }
    for m in wanted {
        visit(m, &dep, &mut order, &name_of)?;
    }
    Ok(order.into_iter().map(|p| k.modules.join(p)).collect())
}

/// A minimal newc cpio writer.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data);
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

fn initramfs_path(version: &str) -> PathBuf {
    vm_dir().join(format!("initramfs-{version}.cpio"))
}

/// The initramfs for `k`, built once per kernel cache (written to a
/// temporary name and renamed, so it is never seen half-written).
fn initramfs(k: &Kernel) -> Result<PathBuf> {
    let path = initramfs_path(&k.version);
    if path.exists() {
        return Ok(path);
    }
    let mut c = Cpio {
        out: Vec::new(),
        ino: 0,
    };
    for d in ["bin", "dev", "proc", "sys", "mnt", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.file(
        "bin/busybox",
        0o755,
        &fs::read(crate::image::static_busybox()?)?,
    );
    for applet in [
        "sh",
        "mount",
        "insmod",
        "switch_root",
        "echo",
        "cat",
        "mkdir",
        "sleep",
    ] {
        c.symlink(&format!("bin/{applet}"), "busybox");
    }
    let mut insmods = String::new();
    for m in module_closure(k, INITRAMFS_MODULES)? {
        let name = m
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".xz")
            .to_owned();
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&m)
            .output()
            .context("running xz")?;
        if !out.status.success() {
            bail!("xz could not decompress {}", m.display());
        }
        let raw = out.stdout;
        c.file(&format!("lib/modules/{name}"), 0o644, &raw);
        insmods.push_str(&format!(
            "insmod /lib/modules/{name} || fail 'insmod {name}'\n"
        ));
    }
    let init = format!(
        "#!/bin/sh\n\
         fail() {{ echo \"GRIFFIN-INIT-FAILED $1\"; echo 1 > /dev/null; exec sh; }}\n\
         mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n\
         {insmods}\
         mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none griffinroot /mnt || fail 'mount 9p'\n\
         umount /proc /sys /dev 2>/dev/null\n\
         exec switch_root /mnt /griffin-init\n"
    );
    c.file("init", 0o755, init.as_bytes());
    fs::create_dir_all(vm_dir())?;
    let tmp = path.with_extension("cpio.tmp");
    fs::write(&tmp, c.finish())?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

fn copy_into(root: &Path, src: &Path, dst_rel: &Path) -> Result<()> {
    let dst = root.join(dst_rel);
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p)?;
    }
    let _ = fs::remove_file(&dst);
    fs::copy(src, &dst)
        .with_context(|| format!("copying {} into the guest root", src.display()))?;
    Ok(())
}

/// The guest's root file system (shared over 9p). The tests named in
/// `skips` are left out (libtest `--skip`).
fn guest_root(
    k: &Kernel,
    topo: &VmTopology,
    tests: &[(String, PathBuf)],
    griffin: &Path,
    opts: &Opts,
    skips: &[&str],
) -> Result<PathBuf> {
    let root = vm_dir().join(format!("root-{}", topo.name));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    for d in [
        "bin",
        "sbin",
        "usr/sbin",
        "usr/bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "lib/modules",
        "results",
        "griffin/tests",
        "var/lib/griffin",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    let bb = crate::image::static_busybox()?;
    copy_into(&root, &bb, Path::new("bin/busybox"))?;
    let list = output(Command::new(&bb).arg("--list"))?;
    // iproute2's ip, not busybox's, is the `ip` on the PATH.
    for applet in list.lines().filter(|a| *a != "ip") {
        let p = root.join("bin").join(applet);
        if !p.exists() {
            symlink("busybox", &p)?;
        }
    }
    // kmod as modprobe (handles .ko.xz and modules.dep), iproute2 for
    // independent checks in tests.
    let kmod = PathBuf::from("/usr/bin/kmod");
    copy_into(&root, &kmod, Path::new("usr/bin/kmod"))?;
    for name in ["modprobe", "insmod", "lsmod", "rmmod", "depmod"] {
        let p = root.join("sbin").join(name);
        let _ = fs::remove_file(&p);
        symlink("/usr/bin/kmod", &p)?;
    }
    let ip = PathBuf::from("/usr/sbin/ip");
    copy_into(&root, &ip, Path::new("usr/sbin/ip"))?;
    copy_into(&root, griffin, Path::new("griffin/griffin"))?;
    let mut libs: BTreeSet<PathBuf> = BTreeSet::new();
    for b in [kmod.as_path(), ip.as_path(), griffin]
        .into_iter()
        .chain(tests.iter().map(|(_, p)| p.as_path()))
    {
        libs.extend(crate::image::shared_libraries(b)?);
    }
    // libibverbs' providers are loaded at run time.
    for extra in [
        "/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so",
        "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    ] {
        let p = PathBuf::from(extra);
        if p.exists() {
            libs.insert(p);
        }
    }
    for l in &libs {
        copy_into(&root, l, l.strip_prefix("/").unwrap_or(l))?;
    }
    if Path::new("/etc/libibverbs.d").exists() {
        fs::create_dir_all(root.join("etc/libibverbs.d"))?;
        // Only the provider that is copied (soft-RoCE), so libibverbs does
        // not warn about the others.
        let rxe = Path::new("/etc/libibverbs.d/rxe.driver");
        if rxe.exists() {
            fs::copy(rxe, root.join("etc/libibverbs.d/rxe.driver"))?;
        }
    }
    // The kernel's modules, copied: a hard link would share its inode with
    // the cache, and the guest (root over 9p) could write through it.
    let mods = root.join("lib/modules").join(&k.version);
    copy_tree(&k.modules, &mods)?;
    for (name, path) in tests {
        copy_into(&root, path, &Path::new("griffin/tests").join(name))?;
    }
    let mut filter = opts.filter.clone().unwrap_or_default();
    // Tests for hardware this topology does not have are not run (libtest
    // reports them as filtered out, never as passed).
    for name in skips {
        filter.push_str(&format!(" --skip {name}"));
    }
    let mut runs = String::new();
    for (name, _) in tests {
        runs.push_str(&format!(
            "echo \"GRIFFIN-TEST-BEGIN {name}\"\n\
             /griffin/tests/{name} --test-threads=1 {filter}\n\
             r=$?; echo \"GRIFFIN-TEST-END {name} rc=$r\"; [ $r -eq 0 ] || rc=1\n"
        ));
    }
    let init = format!(
        "#!/bin/sh\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp RUST_BACKTRACE=1\n\
         export GRIFFIN_GUEST_TOPOLOGY={topo} GRIFFIN_BIN=/griffin/griffin\n\
         mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n\
         mount -t tmpfs tmp /tmp; mount -t tmpfs run /run\n\
         mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         echo /sbin/modprobe > /proc/sys/kernel/modprobe\n\
         for m in {mods}; do modprobe $m || echo \"GRIFFIN-WARN modprobe $m failed\"; done\n\
         ip link set lo up\n\
         echo \"GRIFFIN-GUEST-UP $(uname -r) cpus=$(nproc)\"\n\
         rc=0\n\
         {runs}\
         echo $rc > /results/rc\n\
         sync\n\
         echo \"GRIFFIN-GUEST-DONE rc=$rc\"\n\
         printf \"\\\\$(printf %o $rc)\" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null\n\
         sleep 5; poweroff -f\n",
        topo = topo.name,
        mods = GUEST_MODULES.join(" "),
    );
    let p = root.join("griffin-init");
    fs::write(&p, init)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
    Ok(root)
}

/// Copies the tree `src` to `dst`, which must not exist yet: every file is
/// created anew (never opened for writing if it exists, which could
/// truncate a file shared with another tree).
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            copy_tree(&s, &d)?;
        } else if t.is_file() {
            let mut from = fs::File::open(&s)?;
            let mut to =
                fs::File::create_new(&d).with_context(|| format!("creating {}", d.display()))?;
            std::io::copy(&mut from, &mut to)
                .with_context(|| format!("copying {}", s.display()))?;
        } else if t.is_symlink() {
            symlink(fs::read_link(&s)?, &d)?;
        }
    }
    Ok(())
}

/// Builds the guest test binaries and `griffin`; returns (name, path).
fn build_guest_binaries() -> Result<(Vec<(String, PathBuf)>, PathBuf)> {
    let griffin = crate::build_griffin(false)?;
    let out = cargo()
        .args([
            "test",
            "--quiet",
            "-p",
            "griffin-tests",
            "--test",
            "guest",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the guest tests failed");
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"executable\"") || !line.contains("\"test\":true") {
            continue;
        }
        if let Some(exe) = line
            .split("\"executable\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            let p = PathBuf::from(exe);
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .split('-')
                .next()
                .unwrap_or("test")
                .to_owned();
            tests.push((name, p));
        }
    }
    if tests.is_empty() {
        bail!("cargo built no guest test binary");
    }
    Ok((tests, griffin))
}

/// KVM only when it demonstrably works: a short boot of the guest kernel
/// that must print its banner without `KVM internal error`.
fn kvm_works(k: &Kernel) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-m", "256M"])
        .args(CONSOLE_ONLY)
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/nonexistent"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else { return false };
    let start = Instant::now();
    let mut ok = false;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while start.elapsed() < Duration::from_secs(20) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("KVM internal error") => break,
            Ok(l)
                if l.contains("Kernel panic")
                    || l.contains("Run /nonexistent")
                    || l.contains("No working init") =>
            {
                ok = true;
                break;
            }
            _ => {}
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    ok
}

enum Boot {
    /// Guest finished with this status.
    Done(i32),
    /// Guest never came up (retryable).
    Hung,
}

fn boot(
    k: &Kernel,
    initrd: &Path,
    root: &Path,
    topo: &VmTopology,
    kvm: bool,
    log: &Path,
) -> Result<Boot> {
    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max,vendor=GenuineIntel",
        ]);
    }
    cmd.args(topo.qemu_args())
        .args(CONSOLE_ONLY)
        .args(["-vga", "none"])
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"])
        // The 9p device on the root complex, explicitly: auto-placement
        // could pick an expander bridge, which takes only bridges.
        .arg("-fsdev")
        .arg(format!(
            "local,id=griffinfs,path={},security_model=none,multidevs=remap",
            root.display()
        ))
        .args([
            "-device",
            "virtio-9p-pci,fsdev=griffinfs,mount_tag=griffinroot,bus=pcie.0,addr=0x3",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "vm: booting {} ({})",
        topo.name,
        if kvm { "KVM" } else { "TCG" }
    );
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask deps installs it)")?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut logf = fs::File::create(log)?;
    let start = Instant::now();
    let (mut up, mut done): (Option<Instant>, Option<(Instant, i32)>) = (None, None);
    let verdict = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                writeln!(logf, "{line}")?;
                // Whole-line markers only: firmware output has escape codes.
                let clean = line.trim_end_matches('\r');
                eprintln!("guest| {clean}");
                if clean.contains("KVM internal error") {
                    let _ = child.kill();
                    bail!("KVM internal error in the guest (see {})", log.display());
                }
                if clean.starts_with("GRIFFIN-GUEST-UP") {
                    up = Some(Instant::now());
                    eprintln!("vm: guest up after {:.1} s", start.elapsed().as_secs_f64());
                }
                if let Some(rc) = clean.strip_prefix("GRIFFIN-GUEST-DONE rc=") {
                    done = Some((Instant::now(), rc.trim().parse().unwrap_or(1)));
                }
                if clean.starts_with("GRIFFIN-INIT-FAILED") {
                    let _ = child.kill();
                    bail!("guest init failed: {clean} (see {})", log.display());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait()? {
            break match done {
                Some((_, rc)) => Boot::Done(rc),
                // QEMU stopping on its own before the guest ran is a
                // configuration error, not a hang: no retry.
                None => bail!(
                    "QEMU exited ({status}) before the guest {} (see {})",
                    if up.is_none() { "came up" } else { "reported" },
                    log.display()
                ),
            };
        }
        if let Some((at, rc)) = done {
            if at.elapsed() > EXIT_GRACE {
                eprintln!("vm: guest reported but QEMU did not exit; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break Boot::Done(rc);
            }
        }
        if up.is_none() && start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break Boot::Hung;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "guest run exceeded {} s (see {})",
                RUN_TIMEOUT.as_secs(),
                log.display()
            );
        }
    };
    eprintln!("vm: guest wall time {:.1} s", start.elapsed().as_secs_f64());
    Ok(verdict)
}

pub(crate) fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    let topo = griffin_tests::vm::by_name(&opts.topology).with_context(|| {
        let names: Vec<&str> = griffin_tests::vm::all().iter().map(|t| t.name).collect();
        format!(
            "unknown topology {:?} (known: {})",
            opts.topology,
            names.join(", ")
        )
    })?;
    let _lock = cache::lock(&vm_dir().join("lock"), "vm-test run in this checkout")?;
    let k = kernel()?;
    let initrd = initramfs(&k)?;
    let (tests, griffin) = build_guest_binaries()?;
    for (_, bin) in &tests {
        check_declared_needs(bin)?;
    }
    let unmet = griffin_tests::vm::unmet_needs(&topo);
    for (name, needs) in &unmet {
        eprintln!(
            "vm: filtered out on {}: {name} needs {}",
            topo.name,
            describe_needs(needs)
        );
    }
    let skips: Vec<&str> = unmet.iter().map(|(n, _)| *n).collect();
    let root = guest_root(&k, &topo, &tests, &griffin, opts, &skips)?;
    let kvm = kvm_works(&k);
    let log = vm_dir().join(format!("{}.log", topo.name));
    let mut result = boot(&k, &initrd, &root, &topo, kvm, &log)?;
    if matches!(result, Boot::Hung) {
        eprintln!("vm: the guest hung before coming up; retrying once");
        result = boot(&k, &initrd, &root, &topo, kvm, &log)?;
    }
    let rc = match result {
        Boot::Done(rc) => rc,
        Boot::Hung => bail!(
            "the guest hung twice before coming up (see {})",
            log.display()
        ),
    };
    let written = fs::read_to_string(root.join("results/rc")).ok();
    if opts.update_fixture && rc == 0 {
        let fixture = crate::workspace_root().join(format!("tests/fixtures/{}-qemu", topo.name));
        let _ = fs::remove_dir_all(&fixture);
        fs::rename(root.join("results/capture"), &fixture)
            .with_context(|| format!("moving the guest's capture to {}", fixture.display()))?;
        eprintln!("vm: guest sysfs capture saved as {}", fixture.display());
    }
    if !opts.keep {
        let _ = fs::remove_dir_all(&root);
    }
    let counts = fs::read_to_string(&log)
        .map(|text| TestCounts::from_log(&text))
        .unwrap_or_default();
    eprintln!(
        "vm-test {}: guest rc {rc} (share says {:?}), total {:.1} s, log {}",
        topo.name,
        written.map(|s| s.trim().to_owned()),
        started.elapsed().as_secs_f64(),
        log.display()
    );
    eprintln!(
        "vm-test {}: {} passed, {} failed, {} filtered out{}",
        topo.name,
        counts.passed,
        counts.failed,
        counts.filtered,
        if unmet.is_empty() {
            String::new()
        } else {
            format!(
                " ({} for hardware {} lacks: {})",
                unmet.len(),
                topo.name,
                unmet
                    .iter()
                    .map(|(n, needs)| format!("{n} needs {}", describe_needs(needs)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    );
    if rc != 0 {
        bail!("guest tests failed on {}", topo.name);
    }
    Ok(())
}

fn describe_needs(needs: &[Need]) -> String {
    needs
        .iter()
        .map(Need::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Every test in the guest test binary `bin` has its hardware needs
/// declared in `griffin_tests::vm::GUEST_TESTS`, and every entry there is a
/// test: a new test cannot silently run (and fail) on a topology that lacks
/// what it needs, and a renamed one cannot silently stop being filtered.
fn check_declared_needs(bin: &Path) -> Result<()> {
    let list = output(Command::new(bin).args(["--list", "--format", "terse"]))?;
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    for name in &names {
        if griffin_tests::vm::needs_of(name).is_none() {
            bail!(
                "guest test {name} declares no hardware needs: add it to griffin_tests::vm::GUEST_TESTS"
            );
        }
    }
    for (name, _) in griffin_tests::vm::GUEST_TESTS {
        if !names.contains(name) {
            bail!(
                "griffin_tests::vm::GUEST_TESTS lists {name}, which {} does not have",
                bin.display()
            );
        }
    }
    Ok(())
}

/// Totals of the libtest summaries (`test result: ...`) in a guest log.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestCounts {
    passed: u32,
    failed: u32,
    filtered: u32,
}

impl TestCounts {
    fn from_log(text: &str) -> Self {
        let mut c = TestCounts::default();
        for line in text.lines() {
            let Some(rest) = line.trim_end_matches('\r').split("test result: ").nth(1) else {
                continue;
            };
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let slot = match (what, n) {
                    ("passed", _) => &mut c.passed,
                    ("failed", _) => &mut c.failed,
                    ("out", "filtered") => {
                        let n = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                        c.filtered += n;
                        continue;
                    }
                    _ => continue,
                };
                *slot += n.parse::<u32>().unwrap_or(0);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_libtest_summaries() {
        let log = "guest noise\n\
                   test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out; finished in 3.10s\r\n\
                   test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n";
        assert_eq!(
            TestCounts::from_log(log),
            TestCounts {
                passed: 5,
                failed: 2,
                filtered: 7
            }
        );
    }
}
