//! The pod path on real veths: frames addressed to a pod's IP, steered by
//! the split on the node's data interface straight to the pod's veth, with
//! the node's kernel unable to forward them (a fresh namespace does not
//! forward), so every datagram the pod receives went through XDP.
//!
//! ```text
//! sender ns               node ns                        pod ns
//!   s_if  ==(wire)==>  n_if [griffin, native]
//!                      n_out  ==(pod's veth)==>  c_if 198.19.37.2/32
//! ```
//!
//! Each piece is shown necessary: in native mode, without the pod end's XDP
//! program the veth drops the redirects, without the address rewrite the
//! pod's stack drops them (they name the node's MAC), with both every
//! datagram arrives; in generic mode the rewrite alone suffices.

mod common;

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsFd,
    path::Path,
    time::Duration,
};

use common::netns::{unique, PinCleanup, ThreeNs};
use griffin_ebpf::{
    pin_dir,
    podpath::{self, pod_link, Mac, PodLink, PodPath, L2, L2_MAP},
    split::{self, Split, SplitPaths},
    Action, AttachMode, Prefix, Rule, RulesFile, DEFAULT_BPFFS,
};

const S_MAC: &str = "02:00:00:00:3a:01";
const N_MAC: &str = "02:00:00:00:3b:01";
const O_MAC: &str = "02:00:00:00:3c:01";
const P_MAC: &str = "02:00:00:00:3d:01";
const POD: Ipv4Addr = Ipv4Addr::new(198, 19, 37, 2);
const PORT: u16 = 7400;

fn mac(s: &str) -> Mac {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap();
    }
    Mac(out)
}

/// The topology with the split attached on `n_if` in `mode`, one rule
/// redirecting the pod's flow (UDP to `POD:PORT`) to the pod's veth, and
/// the pod path loaded (nothing of it installed yet).
struct Setup {
    net: ThreeNs,
    _pins: [PinCleanup; 2],
    pod: UdpSocket,
    pod_ns: File,
    split: Split,
    /// The pod flow's rule id.
    rule: u32,
    path: PodPath,
    link: PodLink,
    paths: SplitPaths,
    rules: std::path::PathBuf,
    _meta: tempfile::TempDir,
}

fn setup(mode: AttachMode) -> Setup {
    let net = ThreeNs::new("q", [S_MAC, N_MAC, O_MAC], "198.19.36");
    let pod_pins = podpath::pin_dir(Path::new(DEFAULT_BPFFS), &net.n_if);
    let pins = [
        PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), &net.n_if)),
        PinCleanup(pod_pins.clone()),
    ];
    // The pod: its own MAC and address; the sender routes the pod's
    // address through the node, whose kernel does not forward.
    net.consumer
        .ip(&["link", "set", &net.c_if, "address", P_MAC]);
    net.consumer
        .ip(&["addr", "add", &format!("{POD}/32"), "dev", &net.c_if]);
    let via = net.n_addr.to_string();
    net.sender.ip(&[
        "route",
        "add",
        &format!("{POD}/32"),
        "via",
        &via,
        "dev",
        &net.s_if,
    ]);
    net.sender.tx_checksum_off(&net.s_if);
    let forwarding = net
        .node
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap());
    assert_eq!(
        forwarding.trim(),
        "0",
        "the node namespace must not forward"
    );
    let pod = net.consumer.udp_receiver(POD, PORT);
    let pod_ns = File::open(format!("/run/netns/{}", net.consumer.name)).unwrap();
    let meta = tempfile::tempdir().unwrap();
    let rules = meta.path().join("split.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"no-telnet\"\npriority = 1\naction = \"drop\"\nprotocol = \"tcp\"\ndst_ports = 23\n",
    )
    .unwrap();
    let paths = SplitPaths {
        bpffs: DEFAULT_BPFFS.into(),
        meta_dir: meta.path().to_owned(),
    };
    let (split, rule, path, link) = net.node.run(|| {
        let split = split::attach(&paths, &net.n_if, &rules, mode)
            .unwrap()
            .split;
        let link = pod_link(pod_ns.as_fd()).unwrap();
        // The pod's flow, as the pods engine adds it after the file's rules.
        let mut extra = RulesFile::default();
        extra
            .push(
                "default/pod/video",
                &Rule::new(0, 10, Action::Redirect { slot: 0 })
                    .ip_proto(libc::IPPROTO_UDP as u8)
                    .dst_ports(PORT..=PORT),
                None,
                Some(vec![Prefix::new(POD.into(), 32).unwrap()]),
                Some(&link.host_name),
            )
            .unwrap();
        let rule = split.set_extra(&extra).unwrap();
        (split, rule, PodPath::load(&pod_pins).unwrap(), link)
    });
    assert_eq!(rule, 1, "the pod's rule follows the file's one");
    assert_eq!(
        split::read_meta(&paths, &net.n_if).names,
        ["no-telnet", "default/pod/video"]
    );
    assert_eq!(link.host_name, net.n_out);
    assert_eq!(link.host_mac, mac(O_MAC));
    assert_eq!(link.peer_mac, mac(P_MAC));
    assert_eq!(
        link.peer_ifindex,
        net.consumer
            .run(|| nix::net::if_::if_nametoindex(net.c_if.as_str()).unwrap())
    );
    Setup {
        net,
        _pins: pins,
        pod,
        pod_ns,
        split,
        rule,
        path,
        link,
        paths,
        rules,
        _meta: meta,
    }
}

impl Setup {
    /// Rewrites the addresses of frames leaving through the pod's veth.
    fn rewrite(&mut self) {
        let Self {
            split, path, link, ..
        } = self;
        self.net.node.run(|| {
            path.set_l2(link.host_ifindex, link.l2()).unwrap();
            split
                .lock()
                .set_egress_program(Some(path.l2_program()))
                .unwrap();
        });
        assert_eq!(
            path.l2(link.host_ifindex).unwrap(),
            Some(L2 {
                dst: mac(P_MAC),
                src: mac(O_MAC)
            })
        );
    }

    /// Sends `n` datagrams to the pod's flow (`port`) and counts what the
    /// pod's `socket` receives.
    fn deliver(&self, socket: &UdpSocket, port: u16, n: u32) -> u32 {
        let sender = self
            .net
            .sender
            .run(|| griffin_tests::flow::sender(self.net.s_addr));
        let to = SocketAddr::from((POD, port));
        griffin_tests::flow::send(&sender, to, n, Duration::from_millis(1));
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while socket.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    }

    fn steered(&self) -> u64 {
        self.split.lock().rule_counter(self.rule).unwrap().packets
    }
}

#[test]
fn native_redirects_reach_the_pod_only_with_its_xdp_end_and_rewritten_addresses() {
    let mut s = setup(AttachMode::Native);
    // Matched and redirected, but the pod's veth end runs no XDP: dropped.
    let before = s.steered();
    assert_eq!(
        s.deliver(&s.pod, PORT, 20),
        0,
        "delivered without the pod end"
    );
    assert_eq!(s.steered() - before, 20);

    // Its NAPI on, but the frames still name the node's MAC.
    s.path.attach_pass(s.pod_ns.as_fd(), &s.link).unwrap();
    assert_eq!(
        s.deliver(&s.pod, PORT, 20),
        0,
        "delivered with the node's MAC"
    );

    // The addresses rewritten on the way out of n_out: all arrive.
    s.rewrite();
    assert_eq!(s.deliver(&s.pod, PORT, 200), 200);
    assert_eq!(s.steered() - before, 240);

    // Another port is not the pod's flow: passed to the node's stack,
    // which does not forward it.
    let other = s.net.consumer.udp_receiver(POD, PORT + 1);
    assert_eq!(
        s.deliver(&other, PORT + 1, 10),
        0,
        "an unsteered flow arrived"
    );
    assert_eq!(s.steered() - before, 240);

    // Undone: without the rewrite the frames are dropped again.
    assert!(s.path.remove_l2(s.link.host_ifindex).unwrap());
    assert!(!s.path.remove_l2(s.link.host_ifindex).unwrap());
    assert_eq!(s.deliver(&s.pod, PORT, 20), 0);
    PodPath::detach_pass(s.pod_ns.as_fd(), &s.link).unwrap();
    let pod_pins = podpath::pin_dir(Path::new(DEFAULT_BPFFS), &s.net.n_if);
    assert!(pod_pins.join(L2_MAP).exists());
    let warnings = s
        .net
        .node
        .run(|| split::detach(&s.paths, &s.net.n_if).unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!pod_pins.exists(), "detach leaves {}", pod_pins.display());
}

#[test]
fn generic_redirects_need_nothing_in_the_pod_namespace() {
    let mut s = setup(AttachMode::Generic);
    let before = s.steered();
    assert_eq!(
        s.deliver(&s.pod, PORT, 20),
        0,
        "delivered with the node's MAC"
    );
    s.rewrite();
    assert_eq!(s.deliver(&s.pod, PORT, 200), 200);
    assert_eq!(s.steered() - before, 220);

    // A restarted daemon adopts the split: the pod's rule is kept in force
    // (the pods engine sets it again later), and its frames still arrive
    // once the pod path's egress program is set on the adopted split.
    let adopted = s
        .net
        .node
        .run(|| split::attach(&s.paths, &s.net.n_if, &s.rules, AttachMode::Generic))
        .unwrap();
    assert_eq!(adopted.run_time_rules, 1, "{adopted}");
    assert!(adopted.to_string().ends_with("and 1 run-time rule(s) kept"));
    let meta = split::read_meta(&s.paths, &s.net.n_if);
    assert_eq!(meta.names, ["no-telnet", "default/pod/video"]);
    assert_eq!(meta.extra.len(), 1);
    s.split = adopted.split;
    assert_eq!(s.split.lock().active_rules().unwrap().len(), 2);
    s.rewrite();
    assert_eq!(s.deliver(&s.pod, PORT, 200), 200);

    // The pod's rule withdrawn: its frames take the node's stack, which
    // does not forward them; the file's rule stays.
    s.net
        .node
        .run(|| s.split.set_extra(&RulesFile::default()))
        .unwrap();
    assert_eq!(split::read_meta(&s.paths, &s.net.n_if).names, ["no-telnet"]);
    assert_eq!(s.deliver(&s.pod, PORT, 20), 0);
    assert_eq!(s.split.lock().active_rules().unwrap().len(), 1);
    let warnings = s
        .net
        .node
        .run(|| split::detach(&s.paths, &s.net.n_if).unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_pinned_address_map_is_shared_by_later_loads() {
    let dir = Path::new(DEFAULT_BPFFS).join(unique("gpp"));
    let _pins = PinCleanup(dir.clone());
    let mut first = PodPath::load(&dir).unwrap();
    assert!(dir.join(L2_MAP).exists());
    let l2 = L2 {
        dst: mac(P_MAC),
        src: mac(O_MAC),
    };
    first.set_l2(42, l2).unwrap();
    let mut second = PodPath::load(&dir).unwrap();
    assert_eq!(second.l2(42).unwrap(), Some(l2));
    assert_eq!(second.l2_ifindexes().unwrap(), [42]);
    assert!(second.remove_l2(42).unwrap());
    assert_eq!(first.l2(42).unwrap(), None);
}

#[test]
fn a_namespace_without_a_veth_here_is_named() {
    let ns = common::netns::NetNs::new();
    let fd = File::open(format!("/run/netns/{}", ns.name)).unwrap();
    let err = pod_link(fd.as_fd()).unwrap_err().to_string();
    assert!(
        err.starts_with("no veth in this network namespace has its peer in namespace id"),
        "{err}"
    );
}
