//! The Debian packages the build and the tests need.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Package, and why the project needs it.
pub(crate) const PACKAGES: &[(&str, &str)] = &[
    ("clang", "compiles the C XDP programs"),
    ("libbpf-dev", "BPF helper headers for the XDP programs"),
    ("libibverbs-dev", "rdma-sys links libibverbs"),
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
        .map(|p| p.0)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("deps: all {} Debian packages present", PACKAGES.len());
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
    crate::sh(
        Command::new("apt-get")
            .arg("update")
            .arg("-q")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update")?;
    crate::sh(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("installing Debian packages")?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("apt-get did not install: {}", still.join(" "));
    }
    Ok(())
}
