//! RAII network namespaces and veth pairs, set up with the `ip` command
//! (tests only). Everything is removed on drop, panics included.

use std::{
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{setns, CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `<prefix><pid>x<n>`
/// (interface names have at most 15 bytes).
pub fn unique(prefix: &str) -> String {
    let name = format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    assert!(name.len() <= 15, "{name} is too long for an interface");
    name
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        let name = unique("gft");
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        ns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Writes a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let assignment = format!("{key}={value}");
        ip(&[
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-q",
            "-w",
            &assignment,
        ]);
    }

    /// Runs `f` on a thread that has entered this namespace; the calling
    /// thread's namespace is untouched.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).expect("opening the netns handle");
                    setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair with static addresses and static
/// neighbour entries (no ARP) and IPv6 disabled, so the only traffic is
/// what a test sends.
#[derive(Debug)]
pub struct VethPair {
    // Interfaces go with their namespaces; fields drop in order.
    pub a: NetNs,
    pub b: NetNs,
    pub a_if: String,
    pub b_if: String,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
}

const A_MAC: &str = "02:00:00:00:0a:01";
const B_MAC: &str = "02:00:00:00:0b:01";

impl VethPair {
    pub fn new() -> Self {
        let a = NetNs::new();
        let b = NetNs::new();
        let a_if = unique("gva");
        let b_if = unique("gvb");
        // Created inside namespace a, so nothing ever lands in the host's.
        a.ip(&[
            "link", "add", &a_if, "address", A_MAC, "type", "veth", "peer", "name", &b_if,
            "address", B_MAC, "netns", &b.name,
        ]);
        let (a_addr, b_addr) = (Ipv4Addr::new(10, 231, 0, 1), Ipv4Addr::new(10, 231, 0, 2));
        a.ip(&["addr", "add", "10.231.0.1/24", "dev", &a_if]);
        b.ip(&["addr", "add", "10.231.0.2/24", "dev", &b_if]);
        a.ip(&[
            "neigh",
            "add",
            "10.231.0.2",
            "lladdr",
            B_MAC,
            "dev",
            &a_if,
            "nud",
            "permanent",
        ]);
        b.ip(&[
            "neigh",
            "add",
            "10.231.0.1",
            "lladdr",
            A_MAC,
            "dev",
            &b_if,
            "nud",
            "permanent",
        ]);
        a.ip(&["link", "set", &a_if, "up"]);
        b.ip(&["link", "set", &b_if, "up"]);
        Self {
            a,
            b,
            a_if,
            b_if,
            a_addr,
            b_addr,
        }
    }
}

/// Removes a pin directory (and `griffin/` if it ends up empty) on drop, so
/// a failing test leaves nothing in bpffs.
#[derive(Debug)]
pub struct PinCleanup(pub PathBuf);

impl Drop for PinCleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
