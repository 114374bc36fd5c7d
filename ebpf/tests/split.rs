//! [`griffin_ebpf::split`] on a real veth inside throwaway network
//! namespaces, with real UDP traffic (needs root, iproute2 and native XDP on
//! veth).

mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
};

use common::netns::{PinCleanup, VethPair};
use griffin_ebpf::{
    pin_dir,
    split::{self, Outcome, SplitError, SplitPaths, Warning},
    AttachMode, XdpMode, DEFAULT_BPFFS,
};

const PORT: u16 = 5300;
const N: usize = 20;

/// A veth pair, sender `198.18.<net>.2` (a) - `198.18.<net>.1` (b, where
/// the split is) in namespaces named `gfe...`, the split's paths (records in
/// a temporary directory) and the cleanup of b's pins.
struct Bed {
    _pins: PinCleanup,
    pair: VethPair,
    paths: SplitPaths,
    dir: tempfile::TempDir,
}

impl Bed {
    fn new(net: u8) -> Self {
        let pair = VethPair::with_addrs(
            "gfe",
            Ipv4Addr::new(198, 18, net, 2),
            Ipv4Addr::new(198, 18, net, 1),
        );
        let dir = tempfile::tempdir().unwrap();
        let paths = SplitPaths {
            bpffs: PathBuf::from(DEFAULT_BPFFS),
            meta_dir: dir.path().join("xdp"),
        };
        Self {
            _pins: PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), &pair.b_if)),
            pair,
            paths,
            dir,
        }
    }

    /// Writes a rules file.
    fn rules(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// [`split::attach`] on b's interface, in b's namespace.
    fn attach(&self, rules: &Path, mode: AttachMode) -> Result<split::Attached, SplitError> {
        self.pair
            .b
            .run(|| split::attach(&self.paths, &self.pair.b_if, rules, mode))
    }

    /// How many of `n` datagrams from a to b's `port` arrive.
    fn delivered(&self, port: u16, n: usize) -> usize {
        let to = self.pair.b.udp_receiver(self.pair.b_addr, port);
        let from = self
            .pair
            .a
            .run(|| UdpSocket::bind((self.pair.a_addr, 0)).unwrap());
        for i in 0..n {
            from.send_to(&[i as u8; 32], (self.pair.b_addr, port))
                .unwrap();
        }
        let mut buf = [0u8; 64];
        let mut got = 0;
        while to.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        got
    }
}

const DROP_PORT: &str = r#"
[[rules]]
name = "block"
priority = 1
action = "drop"
protocol = "udp"
dst_ports = 5300
"#;

const PASS_ALL: &str = r#"
[[rules]]
name = "open"
priority = 1
action = "pass"
"#;

#[test]
fn attach_update_and_detach_a_split_with_warnings_as_values() {
    let bed = Bed::new(41);
    let iface = bed.pair.b_if.clone();
    let block = bed.rules("block.toml", DROP_PORT);
    let open = bed.rules("open.toml", PASS_ALL);
    assert_eq!(bed.delivered(PORT, N), N, "before any split");

    let attached = bed.attach(&block, AttachMode::Native).unwrap();
    assert_eq!(
        attached.outcome,
        Outcome::AttachedFresh {
            mode: XdpMode::Native
        }
    );
    assert!(attached.warnings.is_empty(), "{:?}", attached.warnings);
    assert_eq!(attached.rules, 1);
    assert!(
        attached
            .to_string()
            .starts_with(&format!("attached to {iface} (ifindex ")),
        "{attached}"
    );
    assert_eq!(bed.delivered(PORT, N), 0, "the drop rule holds");
    let meta = split::read_meta(&bed.paths, &iface);
    assert_eq!(meta.names, ["block"]);
    assert_eq!(meta.rules_file, block);
    drop(attached);

    // Again, generic asked over a native attachment: adopted, rules
    // replaced, the mode kept and said so as a value.
    let updated = bed.attach(&open, AttachMode::Generic).unwrap();
    assert_eq!(
        updated.outcome,
        Outcome::Adopted {
            mode: XdpMode::Native
        }
    );
    assert!(
        matches!(
            updated.warnings[..],
            [Warning::ModeKept {
                asked: AttachMode::Generic,
                current: XdpMode::Native,
                ..
            }]
        ),
        "{:?}",
        updated.warnings
    );
    assert!(updated.to_string().starts_with("updated "), "{updated}");
    assert_eq!(bed.delivered(PORT, N), N, "the pass rule holds");
    let c = updated.split.counters().unwrap();
    assert_eq!(c.rules[&0].packets, N as u64);
    assert_eq!(split::read_meta(&bed.paths, &iface).names, ["open"]);
    drop(updated);

    let warnings = bed
        .pair
        .b
        .run(|| split::detach(&bed.paths, &iface))
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!bed.paths.meta_path(&iface).exists());
    assert!(!pin_dir(&bed.paths.bpffs, &iface).exists());
    let err = bed
        .pair
        .b
        .run(|| split::detach(&bed.paths, &iface))
        .unwrap_err();
    assert!(matches!(err, SplitError::NotAttached { .. }), "{err}");
}

#[test]
fn a_split_that_cannot_be_configured_is_not_left_attached() {
    let bed = Bed::new(42);
    let iface = bed.pair.b_if.clone();
    // A redirect to an interface that does not exist: refused before the
    // interface is touched.
    let bad = bed.rules(
        "bad.toml",
        "[[rules]]\nname = \"r\"\npriority = 1\naction = \"redirect\"\nto = \"gfenosuch0\"\n",
    );
    let err = bed.attach(&bad, AttachMode::Native).unwrap_err();
    assert!(matches!(err, SplitError::NoTarget { .. }), "{err}");
    assert!(err.to_string().contains("gfenosuch0"), "{err}");
    assert!(!pin_dir(&bed.paths.bpffs, &iface).exists());
    assert!(!bed.paths.meta_path(&iface).exists());
    assert_eq!(bed.delivered(PORT, N), N);
}

/// A drop rule for UDP from `src`.
fn drop_udp_from(src: &[String]) -> String {
    let list: Vec<String> = src.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[[rules]]\nname = \"deny\"\npriority = 1\naction = \"drop\"\nprotocol = \"udp\"\nsrc = [{}]\n",
        list.join(", ")
    )
}

/// `n` host prefixes `<a>.<b>.x.y/32`.
fn hosts(a: u8, b: u8, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{a}.{b}.{}.{}/32", i / 256, i % 256))
        .collect()
}

/// Issue 14 D1: an update that cannot fit must leave the old rules in force
/// exactly. File A drops UDP from 10,000 hosts of 198.19/16, so datagrams
/// from 198.18.40.2 pass; file B would drop them (198.18.40.2/32 plus 9,999
/// hosts of 198.20/16), but A's and B's prefixes side by side exceed the
/// trie. The update is refused before any map write, naming the limit, and
/// every datagram from 198.18.40.2 still arrives (before the fix, B's first
/// prefixes went live under A's rule: 0 of 20 arrived).
#[test]
fn a_rejected_update_leaves_the_old_rules_exactly_in_force() {
    let bed = Bed::new(40);
    assert_eq!(bed.pair.a_addr, Ipv4Addr::new(198, 18, 40, 2));
    let iface = bed.pair.b_if.clone();
    let a = bed.rules("a.toml", &drop_udp_from(&hosts(198, 19, 10_000)));
    let mut b_src = vec!["198.18.40.2/32".to_owned()];
    b_src.extend(hosts(198, 20, 9_999));
    let b = bed.rules("b.toml", &drop_udp_from(&b_src));

    let attached = bed.attach(&a, AttachMode::Native).unwrap();
    assert!(attached.warnings.is_empty(), "{:?}", attached.warnings);
    let rules_a = attached.split.lock().active_rules().unwrap();
    drop(attached);
    assert_eq!(
        bed.delivered(PORT, N),
        N,
        "file A does not match 198.18.40.2"
    );

    let err = bed.attach(&b, AttachMode::Native).unwrap_err();
    let chain = griffin_devices::Chain(&err).to_string();
    assert_eq!(
        bed.delivered(PORT, N),
        N,
        "entries of the rejected file went live ({chain})"
    );
    assert!(
        chain.contains("16384") && chain.contains("griffin_lpm_v4") && chain.contains("20000"),
        "the limit, its map and the need are named: {chain}"
    );
    assert!(
        !chain.contains("os error"),
        "refused before the kernel was asked: {chain}"
    );
    let dp = bed.pair.b.run(|| split::adopt(&bed.paths, &iface)).unwrap();
    assert_eq!(dp.active_rules().unwrap(), rules_a);
    let c = dp.counters().unwrap();
    assert_eq!(c.rules[&0].packets, 0, "A's rule counted nothing");
    assert_eq!(c.actions.drop.packets, 0);
    assert_eq!(split::read_meta(&bed.paths, &iface).rules_file, a);
}
