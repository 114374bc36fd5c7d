//! The real-traffic topology of the kernel tests, driven through the library
//! (the CLI tests in cli/tests/xdp_split.rs use the same shape):
//!
//! ```text
//! sender ns            node ns                         consumer ns
//!   s_if  ==(wire)==>  n_if [griffin, native XDP]
//!                      n_out  ==(second veth)==>      c_if [pass-all XDP]
//! ```
//!
//! `c_if` carries the same MAC and IPv4 address as `n_if`, so a frame
//! redirected from `n_if` out of `n_out` is accepted by the consumer
//! unchanged, and a frame passed to the stack is accepted by the node: both
//! bind a UDP socket on the same address and port, and every datagram is
//! accounted for on one side or the other. The wire has one queue, so every
//! frame arrives on `n_if`'s queue 0 (where an AF_XDP socket is bound). `XDP_REDIRECT` into a veth needs
//! the receiving peer's NAPI, hence the pass-all instance on `c_if`.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use griffin_ebpf::{pin_dir, AttachMode, AttachOptions, Datapath, DEFAULT_BPFFS};

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use griffin_tests::flow::{
    assert_all, distinct, payload, wait_for, wait_until, FlowResult, Seen, PAYLOAD_LEN,
};

use super::netns::{NetNs, PinCleanup, ThreeNs};

pub const S_MAC: &str = "02:00:00:00:2a:01";
pub const N_MAC: &str = "02:00:00:00:2b:01";
pub const O_MAC: &str = "02:00:00:00:2c:01";
pub const S_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 34, 1);
pub const N_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 34, 2);
pub const MGMT_PORT: u16 = 7033;

pub struct Split {
    // Pins first: they are removed (detaching) before the namespaces go.
    _pins: [PinCleanup; 2],
    net: ThreeNs,
}

/// The namespaces and interfaces, as `split.node`, `split.n_if`, ...
impl std::ops::Deref for Split {
    type Target = ThreeNs;

    fn deref(&self) -> &ThreeNs {
        &self.net
    }
}

impl Split {
    pub fn new() -> Self {
        let net = ThreeNs::new("l", [S_MAC, N_MAC, O_MAC], "198.19.34");
        net.consumer
            .ip(&["addr", "add", "198.19.34.2/24", "dev", &net.c_if]);
        net.consumer.neigh("198.19.34.1", S_MAC, &net.c_if);
        let bpffs = std::path::Path::new(DEFAULT_BPFFS);
        Self {
            _pins: [
                PinCleanup(pin_dir(bpffs, &net.n_if)),
                PinCleanup(pin_dir(bpffs, &net.c_if)),
            ],
            net,
        }
    }

    /// Attaches a pass-all Griffin on `c_if` (for its NAPI) and Griffin on
    /// `n_if`, both native; returns the node's datapath (no rules yet) and
    /// the consumer's.
    pub fn attach(&self) -> (Datapath, Datapath) {
        let options = AttachOptions {
            mode: AttachMode::Native,
            ..AttachOptions::default()
        };
        let consumer = self
            .consumer
            .run(|| Datapath::attach(&self.c_if, &options))
            .unwrap();
        let node = self
            .node
            .run(|| Datapath::attach(&self.n_if, &options))
            .unwrap();
        (node, consumer)
    }

    /// The ifindex of `iface` in `ns`.
    pub fn ifindex(&self, ns: &NetNs, iface: &str) -> u32 {
        ns.run(|| nix::net::if_::if_nametoindex(iface).unwrap())
    }

    /// A receiving UDP socket in `ns` ([`NetNs::udp_receiver`]).
    pub fn udp(&self, ns: &NetNs, addr: Ipv4Addr, port: u16) -> UdpSocket {
        ns.udp_receiver(addr, port)
    }

    /// The sender's UDP socket ([`griffin_tests::flow::sender`]).
    pub fn sender_socket(&self) -> UdpSocket {
        self.sender.run(|| griffin_tests::flow::sender(S_ADDR))
    }
}

/// Runs a flow of `n` datagrams from the sender to `port` on the node's
/// address while `during` runs on the calling thread; `consumer` and `node`
/// receive.
pub fn flow(
    net: &Split,
    consumer: &UdpSocket,
    node: &UdpSocket,
    port: u16,
    n: u32,
    gap: Duration,
    during: impl FnOnce(&Seen),
) -> FlowResult {
    let dest = SocketAddr::from((N_ADDR, port));
    griffin_tests::flow::run(&net.sender_socket(), dest, consumer, node, n, gap, during)
}
