//! The daemon's configuration: an embedded default, overridden by a file
//! (TOML or YAML, chosen by extension; see [`griffin_ebpf::format`]) and then
//! by command-line flags. Errors name the key path (`probes.interval_ms: ...`);
//! unknown keys are rejected with their name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use griffin_ebpf::format::{self, ReadError};
use serde::{Deserialize, Serialize};

pub use griffin_ebpf::format::Format;

/// The embedded default, as printed by `griffin daemon --print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default-config.toml");

/// Daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Allocator checkpoint and lock directory; also holds the control
    /// socket (`control.sock`).
    pub state_dir: PathBuf,
    /// Cgroup hierarchy root for enforcement (empty: detected, v2 unified
    /// or the v1 cpuset hierarchy).
    pub cgroup_root: PathBuf,
    /// Discovery root.
    pub root: PathBuf,
    /// Node-score HTTP endpoint.
    pub listen: SocketAddr,
    /// GS-Scheduler compatible listener.
    pub gsch_listen: SocketAddr,
    /// CPUs never handed out exclusively (cpulist).
    pub reserved: String,
    /// Node name reported to schedulers (empty: the host name).
    pub node_name: String,
    /// Cluster name reported to schedulers.
    pub cluster_name: String,
    /// Largest accepted HTTP request body, bytes.
    pub max_body_bytes: usize,
    /// Background RTT probes for the GS-Scheduler latency routes.
    pub probes: Probes,
    /// XDP management/data splits attached (or adopted from their bpffs
    /// pins) at start and watched while the daemon runs.
    pub xdp: Vec<XdpSplit>,
    /// AF_XDP relays ([`crate::relay`]) started on the splits of `xdp`:
    /// payloads of the frames their `xsk` rules steer, delivered to a
    /// workload's destination.
    pub relays: Vec<crate::relay::RelaySpec>,
    /// SR-IOV state reconciled at start (VF counts, per-VF settings; see
    /// [`crate::vfplan`]).
    pub sriov: Vec<crate::vfplan::PfSpec>,
    /// Device pools served to the kubelet (resource name and selectors).
    pub pools: Vec<crate::pools::PoolSpec>,
    /// An sriov-network-device-plugin `config.json` whose resources are
    /// pooled too, taken unchanged (empty: none).
    pub sriovdp_config: PathBuf,
    /// How the pools are served to the kubelet.
    pub device_plugins: DevicePlugins,
    /// Pods of this node realized on their containers' cgroups.
    pub pods: Pods,
    /// The node's NodeResourceTopology object.
    pub nrt: Nrt,
}

/// Whether the daemon realizes the pods of its node (see [`crate::pods`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodsMode {
    /// When Kubernetes credentials are found (in a pod's service account,
    /// or `KUBECONFIG`) and the node name is set.
    #[default]
    Auto,
    /// Always; the daemon does not start without credentials.
    On,
    /// Never.
    Off,
}

/// The pods of this node: learned from the API server (a watch on
/// `spec.nodeName`) and the kubelet's PodResources, realized as container
/// allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pods {
    /// `auto`, `on` or `off`.
    pub mode: PodsMode,
    /// The kubelet static CPU manager's rule without an annotation:
    /// Guaranteed containers with whole CPUs get them exclusively.
    pub exclusive_guaranteed: bool,
    /// NUMA alignment of those: none, best-effort, restricted,
    /// single-numa-node.
    pub policy: crate::alloc::Policy,
    /// Seconds between full reconciles (a pod event starts one at once).
    pub resync_s: u64,
    /// The kubelet's `--cgroup-root` (its `kubepods` is below it), relative
    /// to the cgroup root; empty: the root.
    pub kubelet_cgroup_root: String,
    /// The container runtime's NRI socket: containers are created with
    /// their CPUs through it (containerd 1.7 or later with NRI enabled,
    /// CRI-O 1.26 or later); empty: off. Without it (or while it is
    /// absent) containers are pinned right after they start.
    pub nri_socket: PathBuf,
    /// The data interface pods' `flows` are steered on: the `iface` of one
    /// of the `xdp` splits; empty: none (pods with `flows` are told so).
    pub flows_iface: String,
}

impl Default for Pods {
    fn default() -> Self {
        Self {
            mode: PodsMode::Auto,
            exclusive_guaranteed: true,
            policy: crate::alloc::Policy::BestEffort,
            resync_s: 5,
            kubelet_cgroup_root: String::new(),
            nri_socket: griffin_kubelet_api::nri::DEFAULT_SOCKET.into(),
            flows_iface: String::new(),
        }
    }
}

/// The scope of the topology manager settings Griffin publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyScope {
    /// Each container is placed on its own.
    #[default]
    Container,
    /// A pod's containers are placed together.
    Pod,
}

/// Publishing the node's NodeResourceTopology object
/// (`topology.node.k8s.io/v1alpha2`) for cluster schedulers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nrt {
    /// On, off, or (absent) on when the daemon runs in a cluster (a pod
    /// with a service account: `KUBERNETES_SERVICE_HOST` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The topology manager policy published (`topologyManagerPolicy`);
    /// absent: `[pods] policy`, the one Griffin applies to pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_manager_policy: Option<crate::alloc::Policy>,
    /// The topology manager scope published (`topologyManagerScope`).
    pub topology_manager_scope: TopologyScope,
    /// Seconds between writes of an unchanged object.
    pub resync_s: u64,
}

impl Default for Nrt {
    fn default() -> Self {
        Self {
            enabled: None,
            topology_manager_policy: None,
            topology_manager_scope: TopologyScope::default(),
            resync_s: 60,
        }
    }
}

impl Nrt {
    /// Whether to publish, given whether the daemon runs in a cluster.
    pub fn enabled(&self, in_cluster: bool) -> bool {
        self.enabled.unwrap_or(in_cluster)
    }
}

/// The kubelet device plugins serving the pools (started when there is at
/// least one pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicePlugins {
    /// The kubelet's device-plugin directory (its `kubelet.sock`).
    pub device_plugin_dir: PathBuf,
    /// The kubelet's plugin-watcher directory.
    pub plugins_registry_dir: PathBuf,
    /// Registration: `auto`, `kubelet-socket` or `plugin-watcher`.
    pub mode: crate::plugin::server::RegistrationMode,
    /// The kubelet's PodResources socket (which devices pods hold); empty:
    /// not asked, holdings only grow from Allocate until released by hand.
    pub pod_resources_socket: PathBuf,
    /// Seconds between PodResources checks.
    pub check_interval_s: u64,
    /// Seconds a device handed out by Allocate stays held without
    /// PodResources listing it (the pod is still being admitted).
    pub allocate_grace_s: u64,
    /// Watch NVML's critical XID events and list a GPU that raised one
    /// unhealthy ([`crate::gpuhealth`]); only where an NVIDIA GPU is
    /// pooled.
    pub gpu_health: bool,
    /// XIDs that leave a GPU healthy (application errors).
    pub gpu_health_ignored_xids: Vec<u64>,
    /// The NVML library: a file name the dynamic loader searches for, or
    /// a path.
    pub nvml_library: String,
}

impl Default for DevicePlugins {
    fn default() -> Self {
        let s = crate::plugin::server::PluginSettings::default();
        Self {
            device_plugin_dir: s.device_plugin_dir,
            plugins_registry_dir: s.plugins_registry_dir,
            mode: s.mode,
            pod_resources_socket: crate::plugin::podresources::DEFAULT_SOCKET.into(),
            check_interval_s: 2,
            allocate_grace_s: crate::plugin::holdings::DEFAULT_GRACE.as_secs(),
            gpu_health: true,
            gpu_health_ignored_xids: crate::gpuhealth::APPLICATION_XIDS.to_vec(),
            nvml_library: "libnvidia-ml.so.1".into(),
        }
    }
}

impl DevicePlugins {
    /// The server's settings.
    pub fn settings(&self) -> crate::plugin::server::PluginSettings {
        crate::plugin::server::PluginSettings {
            device_plugin_dir: self.device_plugin_dir.clone(),
            plugins_registry_dir: self.plugins_registry_dir.clone(),
            mode: self.mode,
        }
    }
}

/// One interface the daemon splits with XDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpSplit {
    /// The interface receiving the traffic to split.
    pub iface: String,
    /// Its rules file (TOML or YAML, as `griffin xdp attach --rules`).
    pub rules: PathBuf,
    /// Attach mode (`auto`, `native` or `generic`).
    #[serde(default)]
    pub mode: griffin_ebpf::AttachMode,
}

/// RTT probes: a TCP connect to each peer every `interval_ms`; the time to
/// the established connection is the RTT sample (no raw-socket ICMP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probes {
    /// Time between probe rounds.
    pub interval_ms: u64,
    /// Connect timeout of one probe.
    pub timeout_ms: u64,
    /// Samples kept per peer (a request averages the newest `pingCount`).
    pub keep: usize,
    /// Cluster name to its masters' addresses (`host:port`).
    pub clusters: std::collections::BTreeMap<String, Vec<SocketAddr>>,
    /// Neighbour nodes.
    pub near_nodes: Vec<Peer>,
}

/// A neighbour node probed for latency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Address probed (`ip:port`, e.g. its kubelet on 10250).
    pub addr: SocketAddr,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            interval_ms: 5000,
            timeout_ms: 1000,
            keep: 16,
            clusters: Default::default(),
            near_nodes: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/griffin".into(),
            cgroup_root: PathBuf::new(),
            root: "/".into(),
            listen: ([127, 0, 0, 1], 8420).into(),
            gsch_listen: ([127, 0, 0, 1], 8787).into(),
            reserved: String::new(),
            node_name: String::new(),
            cluster_name: "default".into(),
            max_body_bytes: 64 << 10,
            probes: Probes::default(),
            xdp: Vec::new(),
            relays: Vec::new(),
            sriov: Vec::new(),
            pools: Vec::new(),
            sriovdp_config: PathBuf::new(),
            device_plugins: DevicePlugins::default(),
            pods: Pods::default(),
            nrt: Nrt::default(),
        }
    }
}

/// Largest configuration file [`Config::load`] reads, bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, is not a regular file or is larger than
    /// [`MAX_FILE_BYTES`].
    #[error("reading config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ReadError,
    },
    /// The file is not valid configuration.
    #[error("config {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, after the key path (`probes.interval_ms: ...`) or
        /// the line and column of a syntax error.
        why: String,
    },
    /// The extension is neither TOML nor YAML.
    #[error("config {path}: unknown format (use .toml, .yaml or .yml)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// A value is out of range (the message names its key).
    #[error("config: {0}")]
    Value(String),
}

impl Config {
    /// Parses configuration text (pure); errors name the key path.
    pub fn parse(text: &str, format: Format) -> Result<Self, String> {
        let c: Self = format::parse(text, format).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    /// Loads a file, choosing the format by its extension (a regular file of
    /// at most [`MAX_FILE_BYTES`]; symbolic links are followed).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let format = Format::from_path(path).map_err(|e| ConfigError::Format { path: e.path })?;
        let text =
            format::read_regular(path, MAX_FILE_BYTES).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::parse(&text, format).map_err(|why| ConfigError::Invalid {
            path: path.to_owned(),
            why,
        })
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(ConfigError::Value)
    }

    fn check(&self) -> Result<(), String> {
        let mut ifaces = std::collections::BTreeSet::new();
        for (i, x) in self.xdp.iter().enumerate() {
            if x.iface.is_empty() || x.iface.len() > 15 || x.iface.contains(['/', ' ']) {
                return Err(format!(
                    "xdp[{i}].iface: {:?} is not an interface name",
                    x.iface
                ));
            }
            if !ifaces.insert(&x.iface) {
                return Err(format!("xdp[{i}].iface: {} appears twice", x.iface));
            }
        }
        if !self.pods.flows_iface.is_empty() && !ifaces.contains(&self.pods.flows_iface) {
            return Err(format!(
                "pods.flows_iface: {} has no xdp split",
                self.pods.flows_iface
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut queues = std::collections::BTreeSet::new();
        for (i, r) in self.relays.iter().enumerate() {
            let key = format!("relays[{i}]");
            if r.name.is_empty() || !names.insert(&r.name) {
                return Err(format!(
                    "{key}.name: {:?} is empty or appears twice",
                    r.name
                ));
            }
            if !ifaces.contains(&r.iface) {
                return Err(format!("{key}.iface: {} has no xdp split", r.iface));
            }
            for q in r.queues() {
                if !queues.insert((&r.iface, q)) {
                    return Err(format!(
                        "{key}.queues: {} queue {q} is served twice",
                        r.iface
                    ));
                }
            }
            if !(1..=4096).contains(&r.batch) {
                return Err(format!("{key}.batch: {} is not within 1..=4096", r.batch));
            }
            if let crate::relay::DestinationSpec::Shm {
                slots, slot_size, ..
            } = &r.destination
            {
                if !slots.is_power_of_two() {
                    return Err(format!(
                        "{key}.destination.slots: {slots} is not a power of two"
                    ));
                }
                if *slot_size < 16 || !slot_size.is_multiple_of(8) {
                    return Err(format!(
                        "{key}.destination.slot_size: {slot_size} is not a multiple of 8 of at least 16"
                    ));
                }
            }
        }
        let mut resources = std::collections::BTreeMap::new();
        for (i, p) in self.pools.iter().enumerate() {
            let key = format!("pools[{i}]");
            p.check(&key)?;
            if let Some(first) = resources.insert(&p.resource, i) {
                return Err(format!(
                    "{key}.resource: {} is also pools[{first}]",
                    p.resource
                ));
            }
        }
        let in_range = |key: &str, value: u64, min: u64, max: u64| match value {
            v if v < min => Err(format!("{key}: {v} is below {min}")),
            v if v > max => Err(format!("{key}: {v} is above {max}")),
            _ => Ok(()),
        };
        in_range("max_body_bytes", self.max_body_bytes as u64, 1, 16 << 20)?;
        let p = &self.probes;
        in_range("probes.interval_ms", p.interval_ms, 100, u64::MAX)?;
        in_range("probes.timeout_ms", p.timeout_ms, 1, u64::MAX)?;
        in_range("probes.keep", p.keep as u64, 1, 1024)?;
        in_range(
            "device_plugins.check_interval_s",
            self.device_plugins.check_interval_s,
            1,
            3600,
        )?;
        in_range(
            "device_plugins.allocate_grace_s",
            self.device_plugins.allocate_grace_s,
            1,
            86400,
        )?;
        in_range("pods.resync_s", self.pods.resync_s, 1, 3600)?;
        in_range("nrt.resync_s", self.nrt.resync_s, 1, 86400)?;
        griffin_devices::parse::cpulist(&self.reserved)
            .map_err(|e| format!("reserved: {}", griffin_devices::Chain(&e)))?;
        crate::vfplan::plan(&self.sriov)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A configuration using every kind of value, in YAML.
    const SAMPLE_YAML: &str = "state_dir: /tmp/griffin-state
listen: 127.0.0.1:9000
reserved: 0-1
max_body_bytes: 4096
xdp:
  - iface: eth1
    rules: /etc/griffin/split.yaml
sriov:
  - pf: eth1
    num_vfs: 4
    vfs:
      - {index: \"0-1\", trust: true, vlan: 100, qos: 2}
      - {index: \"3\", mac: \"02:00:00:00:00:03\"}
probes:
  interval_ms: 500
  keep: 8
  clusters:
    edge1: [\"198.19.48.1:6443\", \"198.19.48.2:6443\"]
  near_nodes:
    - {name: n2, addr: \"198.19.48.2:10250\"}
sriovdp_config: /etc/pcidp/config.json
pools:
  - resource: intel.com/intel_sriov_netdevice
    kinds: [nic-vf]
    pf_names: [\"eth1#0-3\"]
    numa_nodes: [0]
  - {resource: nvidia.com/gpu, kinds: [gpu], vendors: [\"10de\"], is_rdma: false}
";

    /// Why `text` fails, if it fails without saying where: a decoding
    /// error names its key path, or is a syntax error (or one of the top
    /// level) labelled with its syntax and, in TOML, its line; a validation
    /// error starts with its key.
    fn unlocated(text: &str, format: Format) -> Option<String> {
        const KEYS: [&str; 7] = [
            "nrt.",
            "xdp[",
            "max_body_bytes: ",
            "probes.",
            "reserved: ",
            "sriov[",
            "pools[",
        ];
        match format::parse::<Config>(text, format) {
            Err(e) if e.path.is_empty() => {
                let shown = e.to_string();
                let located = match format {
                    Format::Toml => shown.starts_with("TOML: line "),
                    Format::Yaml => shown.starts_with("YAML: "),
                };
                (!located).then_some(shown)
            }
            Err(_) => None,
            Ok(c) => c
                .check()
                .err()
                .filter(|m| !KEYS.iter().any(|k| m.starts_with(k))),
        }
    }

    proptest! {
        /// Mangled configs (TOML and YAML samples cut, flipped, with lines
        /// dropped or repeated and noise inserted, read in either syntax)
        /// and random bytes are errors that say where, never panics;
        /// anything accepted passed validation.
        #[test]
        fn garbage_configs_never_panic(
            yaml_sample in any::<bool>(),
            yaml in any::<bool>(),
            seed in 1..u64::MAX,
            noise in "[ -~\n]{0,200}",
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let sample = if yaml_sample { SAMPLE_YAML } else { DEFAULT_TOML };
            let text = griffin_tests::hostile::mangle(sample, &mut griffin_tests::Rng(seed));
            let random = String::from_utf8_lossy(&bytes).into_owned();
            let format = if yaml { Format::Yaml } else { Format::Toml };
            for text in [&text, &noise, &random] {
                let parsed = Config::parse(text, format);
                if let Ok(c) = &parsed {
                    prop_assert!(c.validate().is_ok());
                }
                let decoded = format::parse::<Config>(text, format);
                let valid = decoded.as_ref().is_ok_and(|c| c.check().is_ok());
                prop_assert_eq!(parsed.is_ok(), valid);
                prop_assert_eq!(unlocated(text, format), None, "{:?}", text);
            }
        }
    }

    #[test]
    fn the_samples_parse() {
        let c = Config::parse(SAMPLE_YAML, Format::Yaml).unwrap();
        assert_eq!(c.probes.keep, 8);
        assert_eq!(c.xdp[0].iface, "eth1");
        assert_eq!(c.pools.len(), 2);
        assert_eq!(c.pools[0].pf_names[0].to_string(), "eth1#0-3");
        assert_eq!(c.pools[1].is_rdma, Some(false));
        assert_eq!(c.sriovdp_config, PathBuf::from("/etc/pcidp/config.json"));
        assert_eq!(
            Config::parse("# nothing set\n", Format::Yaml).unwrap(),
            Config::default()
        );
    }

    /// Every error names the key path; validation names the key too.
    #[test]
    fn errors_name_the_key_path() {
        let e = Config::parse("[probes]\ninterval_ms = \"soon\"\n", Format::Toml).unwrap_err();
        assert_eq!(
            e,
            "probes.interval_ms: invalid type: string \"soon\", expected u64"
        );
        let e = Config::parse(
            "probes:\n  near_nodes:\n    - {name: a, addr: nowhere}\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(
            e.starts_with("probes.near_nodes[0].addr: invalid socket address syntax"),
            "{e}"
        );
        let e = Config::parse("[probes]\ninterval_ms = 50\n", Format::Toml).unwrap_err();
        assert_eq!(e, "probes.interval_ms: 50 is below 100");
        let e = Config::parse("probes: {keep: 2000}\n", Format::Yaml).unwrap_err();
        assert_eq!(e, "probes.keep: 2000 is above 1024");
        let e = Config::parse("max_body_bytes = 0", Format::Toml).unwrap_err();
        assert_eq!(e, "max_body_bytes: 0 is below 1");
        let e = Config::parse("listen = [\n", Format::Toml).unwrap_err();
        assert!(e.starts_with("TOML: line 1, column "), "{e}");
    }

    /// `load`'s error with its causes.
    fn load_err(path: &Path) -> String {
        griffin_devices::Chain(&Config::load(path).unwrap_err()).to_string()
    }

    /// Regression (issue 14 D3): a FIFO given as `--config` blocked the
    /// daemon in `open` forever, and a link to `/dev/zero` was read until
    /// memory ran out. Each load runs on a thread so that the old code fails
    /// the test instead of hanging it.
    #[test]
    fn only_bounded_regular_files_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let refused =
            griffin_tests::hostile::refused_files(dir.path(), "yaml", SAMPLE_YAML, MAX_FILE_BYTES);
        for (path, cause) in refused {
            let expected = format!("reading config {}: {cause}", path.display());
            let got =
                griffin_tests::liveness::within(std::time::Duration::from_secs(10), move || {
                    load_err(&path)
                });
            assert_eq!(got, Some(expected));
        }
        let full = dir.path().join("full.toml");
        let text = griffin_tests::hostile::padded(DEFAULT_TOML, MAX_FILE_BYTES as usize);
        std::fs::write(&full, text).unwrap();
        assert_eq!(Config::load(&full).unwrap(), Config::default());
        // Through a symbolic link (a ConfigMap mount is a chain of them).
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&full, &link).unwrap();
        assert_eq!(Config::load(&link).unwrap(), Config::default());
        let e = load_err(&dir.path().join("griffin.json"));
        assert!(
            e.ends_with("griffin.json: unknown format (use .toml, .yaml or .yml)"),
            "{e}"
        );
    }

    #[test]
    fn embedded_default_is_the_default() {
        assert_eq!(
            Config::parse(DEFAULT_TOML, Format::Toml).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e =
            Config::parse("listen = \"127.0.0.1:1\"\nlisten_addr = 3\n", Format::Toml).unwrap_err();
        assert!(e.contains("listen_addr"), "{e}");
        let e = Config::parse("stat_dir: /tmp\n", Format::Yaml).unwrap_err();
        assert!(e.contains("stat_dir"), "{e}");
    }

    #[test]
    fn probe_peers_parse() {
        let c = Config::parse(
            "[probes]\ninterval_ms = 500\nclusters = { edge1 = [\"198.19.48.1:6443\"] }\n\
             near_nodes = [{ name = \"n2\", addr = \"198.19.48.2:10250\" }]\n",
            Format::Toml,
        )
        .unwrap();
        assert_eq!(
            c.probes.clusters["edge1"],
            vec!["198.19.48.1:6443".parse().unwrap()]
        );
        assert_eq!(c.probes.near_nodes[0].name, "n2");
        assert_eq!(c.probes.keep, 16);
        let e =
            Config::parse("[probes]\nnear_nodes = [{ name = \"n\" }]\n", Format::Toml).unwrap_err();
        assert!(e.contains("addr"), "{e}");
    }

    #[test]
    fn files_override_the_default_partially() {
        let c = Config::parse("listen: 0.0.0.0:9000\nreserved: 0-1\n", Format::Yaml).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.reserved, "0-1");
        assert_eq!(c.state_dir, Config::default().state_dir);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::parse("listen = \"nowhere\"", Format::Toml).is_err());
        assert!(Config::parse("max_body_bytes = 0", Format::Toml).is_err());
        assert!(Config::parse("reserved = \"3-1\"", Format::Toml).is_err());
        let e = Config::parse(
            "xdp:\n- {iface: eth1, rules: /r.toml}\n- {iface: eth1, rules: /s.toml}\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(e.contains("xdp[1].iface: eth1 appears twice"), "{e}");
        let e = Config::parse(
            "xdp = [{ iface = \"eth1\", rules = \"/r\", mode = \"turbo\" }]",
            Format::Toml,
        )
        .unwrap_err();
        assert!(e.contains("turbo"), "{e}");
        let c = Config::parse(
            "xdp = [{ iface = \"eth1\", rules = \"/r.toml\" }]",
            Format::Toml,
        )
        .unwrap();
        assert_eq!(c.xdp[0].mode, griffin_ebpf::AttachMode::Auto);
    }

    #[test]
    fn relays_are_read_and_checked() {
        let base = "xdp = [{ iface = \"eth1\", rules = \"/r.toml\" }]\n";
        let c = Config::parse(
            &format!(
                "{base}[[relays]]\nname = \"video\"\niface = \"eth1\"\nqueues = [0, 1]\nrules = [3]\n\
                 destination = {{ kind = \"udp\", addr = \"198.18.0.5:9000\", netns = \"/run/netns/pod\" }}\n\
                 [[relays]]\nname = \"ring\"\niface = \"eth1\"\nqueues = [2]\n\
                 destination = {{ kind = \"shm\", path = \"/run/ring.sock\" }}\n"
            ),
            Format::Toml,
        )
        .unwrap();
        assert_eq!(c.relays.len(), 2);
        assert_eq!(c.pods.flows_iface, "");
        let with = Config::parse(
            &format!("{base}[pods]\nflows_iface = \"eth1\"\n"),
            Format::Toml,
        );
        assert_eq!(with.unwrap().pods.flows_iface, "eth1");
        assert_eq!(c.relays[0].queues(), [0, 1]);
        assert_eq!(c.relays[0].batch, 64);
        assert_eq!(
            c.relays[1].destination,
            crate::relay::DestinationSpec::Shm {
                path: "/run/ring.sock".into(),
                slots: 4096,
                slot_size: 2048
            }
        );
        for (relays, want) in [
            (
                "[[relays]]\nname = \"a\"\niface = \"eth2\"\ndestination = { kind = \"unix\", path = \"/s\" }",
                "relays[0].iface: eth2 has no xdp split",
            ),
            (
                "[[relays]]\nname = \"a\"\niface = \"eth1\"\ndestination = { kind = \"unix\", path = \"/s\" }\n\
                 [[relays]]\nname = \"b\"\niface = \"eth1\"\nqueues = [0]\ndestination = { kind = \"unix\", path = \"/t\" }",
                "relays[1].queues: eth1 queue 0 is served twice",
            ),
            (
                "[[relays]]\nname = \"a\"\niface = \"eth1\"\ndestination = { kind = \"shm\", path = \"/s\", slots = 3 }",
                "relays[0].destination.slots: 3 is not a power of two",
            ),
            (
                "[[relays]]\nname = \"a\"\niface = \"eth1\"\ndestination = { kind = \"pipe\", path = \"/s\" }",
                "pipe",
            ),
            ("[pods]\nflows_iface = \"eth2\"", "pods.flows_iface: eth2 has no xdp split"),
        ] {
            let e = Config::parse(&format!("{base}{relays}"), Format::Toml).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "\0\u{1}",
            "[[[",
            "- - -",
            ": :",
            "a = [1, {",
            "listen: [1, 2]",
        ] {
            let _ = Config::parse(text, Format::Toml);
            let _ = Config::parse(text, Format::Yaml);
        }
    }
}
