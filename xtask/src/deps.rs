//! The Debian packages the build and the tests need.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Package, and why the project needs it.
pub(crate) const PACKAGES: &[(&str, &str)] = &[
    ("clang", "compiles the C XDP programs"),
    ("libbpf-dev", "BPF helper headers for the XDP programs"),
    ("libibverbs-dev", "rdma-sys links libibverbs"),
    ("librdmacm-dev", "rdma-sys links librdmacm"),
    (
        "ibverbs-providers",
        "the rxe provider libibverbs loads in the guest",
    ),
    ("pkg-config", "rdma-sys finds the RDMA libraries with it"),
    (
        "libclang-dev",
        "rdma-sys generates its bindings with bindgen",
    ),
    (
        "pciutils",
        "lspci: live tests check PCI discovery against it",
    ),
    (
        "hwloc-nox",
        "lstopo: live tests and the discovery benchmark compare with it",
    ),
    ("numactl", "numactl --hardware: live NUMA check"),
    ("iproute2", "ip: tests check network state independently"),
    (
        "strace",
        "pinning tests and the SIGKILL campaign kill griffin inside sched_setaffinity and write (syscall fault injection)",
    ),
    (
        "xdp-tools",
        "xdp-bench: the XDP benchmark's redirect ceiling",
    ),
    (
        "ffmpeg",
        "bench seed-claims: the video-encoding workload (libx264)",
    ),
    (
        "stress-ng",
        "bench seed-claims: the noisy neighbours (CPU and cache stressors)",
    ),
    (
        "python3-venv",
        "bench seed-claims: the venv of the detection and plate workloads",
    ),
];

/// Packages of the real single-node Kubernetes of `cargo xtask e2e`, from
/// bookworm (Kubernetes itself is built from bookworm's `kubernetes` source
/// package, which needs the `deb-src` source [`DEB_SRC`]).
pub(crate) const E2E_PACKAGES: &[(&str, &str)] = &[
    ("etcd-server", "the e2e cluster's etcd"),
    ("containerd", "the e2e kubelet's container runtime (CRI)"),
    ("runc", "the OCI runtime under containerd"),
    (
        "containernetworking-plugins",
        "bridge, host-local and loopback CNI plugins for the e2e pod network",
    ),
    ("iptables", "the bridge CNI plugin and the kubelet call it"),
    (
        "golang-go",
        "builds kubelet, kube-apiserver, kube-scheduler and kubectl from source",
    ),
    (
        "golang-github-modern-go-reflect2-dev",
        "reflect2 v1.0.2 replaces Kubernetes 1.20's vendored v1.0.1, which crashes kube-apiserver under Go >= 1.18",
    ),
    ("rsync", "Kubernetes' make uses it"),
    ("jq", "Kubernetes' make uses it"),
    ("openssl", "the e2e cluster's service-account signing key"),
    (
        "dpkg-dev",
        "dpkg-source unpacks the kubernetes source package with Debian's patches",
    ),
];

/// The apt source of the Debian source packages the e2e builds.
pub(crate) const DEB_SRC: AptSource = AptSource {
    file: "/etc/apt/sources.list.d/griffin-deb-src.sources",
    types: "deb-src",
    suite: "bookworm",
};

/// bookworm-backports, for the guest test bed's packages.
pub(crate) const BACKPORTS: AptSource = AptSource {
    file: "/etc/apt/sources.list.d/griffin-backports.sources",
    types: "deb",
    suite: "bookworm-backports",
};

/// An apt source xtask adds (one deb822 file) when missing.
#[derive(Debug)]
pub(crate) struct AptSource {
    /// The file under /etc/apt/sources.list.d.
    pub file: &'static str,
    /// `deb` or `deb-src`.
    pub types: &'static str,
    /// The suite (main component).
    pub suite: &'static str,
}

impl AptSource {
    fn present(&self) -> bool {
        std::path::Path::new(self.file).exists()
    }

    /// Adds the source (same mirror as the system's Debian source) when
    /// missing; true when it was added (apt-get update is then due).
    pub(crate) fn ensure(&self) -> Result<bool> {
        if self.present() {
            return Ok(false);
        }
        let debian =
            std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
        let uri = debian
            .lines()
            .find_map(|l| l.strip_prefix("URIs: "))
            .filter(|u| u.contains("debian") && !u.contains("security"))
            .unwrap_or("http://deb.debian.org/debian")
            .to_owned();
        std::fs::write(
            self.file,
            format!(
                "Types: {}\nURIs: {uri}\nSuites: {}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
                self.types, self.suite
            ),
        )
        .with_context(|| format!("writing {} (needs root)", self.file))?;
        eprintln!(
            "deps: added {} {} ({uri}) as an apt source",
            self.types, self.suite
        );
        Ok(true)
    }
}

/// Packages of the QEMU guest test bed, from bookworm-backports (QEMU 10:
/// bookworm's 7.2 has no `igb`), installed without recommends.
pub(crate) const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots the guest test bed"),
    ("busybox-static", "the guest's shell and init"),
    (
        "kmod",
        "depmod for the guest kernel, modprobe inside the guest",
    ),
    ("xz-utils", "unpacks the guest kernel's modules"),
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    // `id -u` keeps xtask free of unsafe code for one getuid call.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn tool_present(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Checks the packages; installs the missing ones with apt when root on a
/// Debian-like system (unless `check_only`), else fails with the command.
pub(crate) fn ensure(check_only: bool) -> Result<()> {
    for (tool, args) in [
        ("rustfmt", ["cargo", "fmt", "--version"]),
        ("clippy", ["cargo", "clippy", "--version"]),
    ] {
        if !tool_present(&args) {
            bail!(
                "the Rust toolchain has no {tool}; install it with `rustup component add {tool}`"
            );
        }
    }
    if !tool_present(&["dpkg-query", "--version"]) {
        bail!(
            "not a Debian-like system (no dpkg-query); install the equivalents of: {}",
            PACKAGES.iter().map(|p| p.0).collect::<Vec<_>>().join(" ")
        );
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .chain(E2E_PACKAGES)
        .map(|p| p.0)
        .filter(|p| !installed(p))
        .collect();
    let vm_missing: Vec<&str> = VM_PACKAGES
        .iter()
        .map(|p| p.0)
        .filter(|p| !installed(p) || (*p == "qemu-system-x86" && !qemu_is_recent()))
        .collect();
    if !DEB_SRC.present() {
        if check_only || !is_root() {
            bail!(
                "no deb-src source for bookworm (the e2e builds Kubernetes from Debian's source package); as root create {} with: Types: deb-src, URIs: http://deb.debian.org/debian, Suites: bookworm, Components: main; then apt-get update",
                DEB_SRC.file
            );
        }
        DEB_SRC.ensure()?;
        crate::sh(
            Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("apt-get update")?;
    }
    if missing.is_empty() && vm_missing.is_empty() {
        eprintln!(
            "deps: all {} Debian packages present",
            PACKAGES.len() + E2E_PACKAGES.len() + VM_PACKAGES.len()
        );
        return Ok(());
    }
    if !vm_missing.is_empty() {
        install_vm(&vm_missing, check_only)?;
    }
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if check_only {
        bail!(
            "missing Debian packages: {}; install with: sudo apt-get update && sudo {install}",
            missing.join(" ")
        );
    }
    if !is_root() || !tool_present(&["apt-get", "--version"]) {
        bail!(
            "missing Debian packages: {}; run as root: apt-get update && {install}",
            missing.join(" ")
        );
    }
    eprintln!("deps: installing {}", missing.join(" "));
    apt_install(&missing, false)?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("apt-get did not install: {}", still.join(" "));
    }
    Ok(())
}

/// True when the installed QEMU is 8.0 or newer (has the `igb` device).
fn qemu_is_recent() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "qemu-system-x86"])
        .output()
        .ok()
        .and_then(|o| {
            let v = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = v.split_once(':').map_or(v.as_str(), |(_, r)| r).to_owned();
            v.split('.').next()?.parse::<u32>().ok()
        })
        .is_some_and(|major| major >= 8)
}

fn install_vm(missing: &[&str], check_only: bool) -> Result<()> {
    let install = format!(
        "apt-get install -y --no-install-recommends -t bookworm-backports {}",
        missing.join(" ")
    );
    if check_only || !is_root() {
        bail!(
            "missing test-bed packages: {}; as root add bookworm-backports as an apt source, then: apt-get update && {install}",
            missing.join(" ")
        );
    }
    BACKPORTS.ensure()?;
    eprintln!(
        "deps: installing {} from bookworm-backports",
        missing.join(" ")
    );
    apt_install(missing, true)?;
    Ok(())
}

/// `apt-get update`, then `apt-get install` without recommends (from
/// bookworm-backports when asked).
fn apt_install(packages: &[&str], backports: bool) -> Result<()> {
    crate::sh(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update")?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-q", "--no-install-recommends"]);
    if backports {
        install.args(["-t", "bookworm-backports"]);
    }
    crate::sh(
        install
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("installing {}", packages.join(" ")))
}
