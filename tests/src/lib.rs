//! Test support for Griffin's integration tests and benchmarks.
//!
//! * [`sysfs`]: a builder that writes fake sysfs/procfs trees (CPUs, caches,
//!   NUMA nodes, PCI hierarchies with relative symlinks, netdevs, NVMe and
//!   RDMA devices) for `griffin_devices::discover` to read.
//! * [`apiserver`]: a real etcd and kube-apiserver (from `GRIFFIN_KUBE_BIN`)
//!   on free loopback ports, with a `kube::Client` per user.
//! * [`edge2s`]: the hand-described multi-NUMA, multi-switch fixture.
//! * [`synthetic`]: parametric topologies, in memory or as sysfs trees.
//! * [`vm`]: the QEMU guest topologies, what a guest must discover, and the
//!   hardware each guest test needs.
//! * [`http`]: the one HTTP/1.1 client of tests and benchmarks.
//! * [`kubelet`]: an in-process kubelet stand-in (device-plugin
//!   registration, plugin watcher, restart, PodResources) over unix sockets.
//! * [`netns`]: RAII network namespaces and veth pairs for kernel tests,
//!   [`frames`]: Ethernet/IP/UDP/TCP frame builders, [`sockopt`]: the
//!   socket options those tests set, [`flow`]: sequence-numbered UDP flows
//!   to a split's consumer and node.
//! * [`nvml`]: a stand-in of NVML's C ABI, for GPU health events without a
//!   GPU.
//! * [`Rng`]: a seeded generator for randomized tests that print their seed.
//! * [`hostile`]: damaged copies of good samples, and paths (FIFOs, devices,
//!   oversize files) that loaders must refuse.
//! * [`liveness`]: runs a call or a command that might hang with a bound,
//!   so that a regression test fails instead of hanging.
pub mod apiserver;
pub mod cgroup;
pub mod edge2s;
pub mod flow;
pub mod frames;
pub mod hostile;
pub mod http;
pub mod kubelet;
pub mod liveness;
pub mod netns;
pub mod nvml;
pub mod sockopt;
pub mod synthetic;
pub mod sysfs;
pub mod vm;

/// xorshift64: deterministic, so a failing randomized test names a seed
/// that replays it.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n` (> 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// `Some(pick)` one time in `one_in`.
    pub fn maybe<T: Copy>(&mut self, one_in: u64, items: &[T]) -> Option<T> {
        (self.below(one_in) == 0).then(|| self.pick(items))
    }
}

/// Cases a fuzz test runs: `GRIFFIN_FUZZ_CASES` when set (the long campaign
/// of `cargo xtask fuzz`), else `default` (the CI run).
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("GRIFFIN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
