//! The daemon's configuration: an embedded default, overridden by a file
//! (TOML or YAML, chosen by extension) and then by command-line flags.
//! Unknown keys are rejected with their name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid configuration (the message names the key).
    #[error("config {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        why: String,
    },
    /// The extension is neither TOML nor YAML.
    #[error("config {path}: unknown format (use .toml, .yaml or .yml)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Value(String),
}

/// Config file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// YAML.
    Yaml,
}

impl Config {
    /// Parses configuration text (pure).
    pub fn parse(text: &str, format: Format) -> Result<Self, String> {
        let c: Self = match format {
            Format::Toml => toml::from_str(text).map_err(|e| e.message().to_owned())?,
            Format::Yaml => {
                if text.trim().is_empty() {
                    Self::default()
                } else {
                    serde_norway::from_str(text).map_err(|e| e.to_string())?
                }
            }
        };
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Loads a file, choosing the format by its extension.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Format::Toml,
            Some("yaml" | "yml") => Format::Yaml,
            _ => {
                return Err(ConfigError::Format {
                    path: path.to_owned(),
                })
            }
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
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
        let mut ifaces = std::collections::BTreeSet::new();
        for (i, x) in self.xdp.iter().enumerate() {
            if x.iface.is_empty() || x.iface.len() > 15 || x.iface.contains(['/', ' ']) {
                return Err(ConfigError::Value(format!(
                    "xdp[{i}].iface: {:?} is not an interface name",
                    x.iface
                )));
            }
            if !ifaces.insert(&x.iface) {
                return Err(ConfigError::Value(format!(
                    "xdp[{i}].iface: {} appears twice",
                    x.iface
                )));
            }
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > 16 << 20 {
            return Err(ConfigError::Value(format!(
                "max_body_bytes {} out of range 1..=16777216",
                self.max_body_bytes
            )));
        }
        let p = &self.probes;
        if p.interval_ms < 100 || p.timeout_ms == 0 || p.keep == 0 || p.keep > 1024 {
            return Err(ConfigError::Value(
                "probes: interval_ms >= 100, timeout_ms >= 1 and keep in 1..=1024".into(),
            ));
        }
        griffin_devices::parse::cpulist(&self.reserved)
            .map_err(|e| ConfigError::Value(format!("reserved: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Garbage and mangled configs are errors, never panics; anything
        /// accepted passed validation.
        #[test]
        fn garbage_configs_never_panic(
            cut in 0usize..2000,
            flip in 0usize..2000,
            byte in any::<u8>(),
            noise in "[ -~\n]{0,200}",
            yaml in any::<bool>(),
        ) {
            let mut text = DEFAULT_TOML.as_bytes().to_vec();
            let n = text.len();
            text.truncate(cut.min(n));
            if !text.is_empty() {
                let i = flip % text.len();
                text[i] = byte;
            }
            text.extend_from_slice(noise.as_bytes());
            let text = String::from_utf8_lossy(&text);
            let format = if yaml { Format::Yaml } else { Format::Toml };
            if let Ok(c) = Config::parse(&text, format) {
                prop_assert!(c.validate().is_ok());
            }
            let _ = Config::parse(&noise, format);
        }
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
            "[probes]\ninterval_ms = 500\nclusters = { edge1 = [\"10.0.0.1:6443\"] }\n\
             near_nodes = [{ name = \"n2\", addr = \"10.0.0.2:10250\" }]\n",
            Format::Toml,
        )
        .unwrap();
        assert_eq!(
            c.probes.clusters["edge1"],
            vec!["10.0.0.1:6443".parse().unwrap()]
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
