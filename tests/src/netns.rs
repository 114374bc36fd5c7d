//! RAII network namespaces and veth pairs, set up with the `ip` command
//! (tests only). Everything is removed on drop, panics included.
// `new()` creates kernel objects; a `Default` would hide that.
#![allow(clippy::new_without_default)]

use std::{
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
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

/// Sets its flag when dropped: stops helper threads even when the code
/// between panics.
#[derive(Debug)]
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        Self::with_prefix("gft")
    }

    /// A namespace named `<prefix><pid>x<n>` (tests of one helper or
    /// suite can be told apart).
    pub fn with_prefix(prefix: &str) -> Self {
        let name = unique(prefix);
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

    /// Turns off the transmit checksum offload of `iface` in this namespace
    /// (ethtool's `tx off`, through `SIOCETHTOOL`). veth leaves TCP and UDP
    /// checksums to be completed later (CHECKSUM_PARTIAL), a state an XDP
    /// redirect loses: redirected segments would arrive with bad checksums
    /// and be dropped (a TCP connection through a `cpu` rule never opens).
    pub fn tx_checksum_off(&self, iface: &str) {
        /// `struct ethtool_value`.
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        const ETHTOOL_STXCSUM: u32 = 0x17;
        assert!(iface.len() < libc::IFNAMSIZ, "interface name {iface}");
        self.run(|| {
            let sock = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Datagram,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )
            .expect("a socket for SIOCETHTOOL");
            let mut value = EthtoolValue {
                cmd: ETHTOOL_STXCSUM,
                data: 0,
            };
            // SAFETY: ifreq is plain data; all zeroes is a valid value.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
                *d = s as libc::c_char;
            }
            ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
            // SAFETY: SIOCETHTOOL reads `ifr` (a NUL-terminated name, the
            // name is shorter than IFNAMSIZ) and the ethtool_value it
            // points to, both alive for the call.
            let r = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    libc::SIOCETHTOOL,
                    &raw mut ifr,
                )
            };
            assert!(
                r == 0,
                "SIOCETHTOOL ETHTOOL_STXCSUM off on {iface}: {}",
                std::io::Error::last_os_error()
            );
        });
    }

    /// A UDP socket bound in this namespace, with a 200 ms read timeout and
    /// a receive buffer big enough for a whole burst (on a busy machine the
    /// receiving thread may lag; the default buffer would drop the tail of a
    /// burst in the socket, after XDP).
    pub fn udp_receiver(&self, addr: Ipv4Addr, port: u16) -> UdpSocket {
        self.run(|| {
            let s = UdpSocket::bind((addr, port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            crate::sockopt::force_receive_buffer(&s, 16 << 20);
            s
        })
    }

    /// A permanent neighbour entry (no ARP).
    pub fn neigh(&self, addr: &str, mac: &str, dev: &str) {
        self.ip(&[
            "neigh",
            "add",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }

    /// Waits (up to 5 s) until `dev` is operationally up. Until the
    /// kernel's link watch has seen its carrier, a veth's transmit queue
    /// is the no-op one that drops every packet: a test sending right
    /// after `ip link set up` could lose its first packets.
    pub fn wait_up(&self, dev: &str) {
        let t = std::time::Instant::now();
        loop {
            let out = Command::new("ip")
                .args(["-n", &self.name, "-o", "link", "show", "dev", dev])
                .output()
                .expect("running ip (iproute2)");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains(" state UP ") {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{dev} in {} not up after 5 s: {text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
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

/// The split topology the real-traffic tests and the rate benchmark share:
///
/// ```text
/// sender ns            node ns                  consumer ns
///   s_if  ==(wire)==>  n_if
///                      n_out  ==(second veth)==>  c_if
/// ```
///
/// The wire is `NET.0/24` (sender `.1`, node `.2`) with static neighbour
/// entries both ways; `c_if` carries `n_if`'s MAC, so a frame redirected
/// unchanged from `n_if` out of `n_out` is addressed to it. Every link has
/// one queue and is up; the consumer side's addressing is the caller's.
#[derive(Debug)]
pub struct ThreeNs {
    pub sender: NetNs,
    pub node: NetNs,
    pub consumer: NetNs,
    pub s_if: String,
    pub n_if: String,
    pub n_out: String,
    pub c_if: String,
    /// The sender's and the node's wire addresses.
    pub s_addr: Ipv4Addr,
    pub n_addr: Ipv4Addr,
}

/// MAC addresses of `s_if`, `n_if` (and `c_if`), `n_out`.
pub type Macs<'a> = [&'a str; 3];

impl ThreeNs {
    /// `tag` (two letters) makes the interface names tell the tests apart.
    pub fn new(tag: &str, [s_mac, n_mac, o_mac]: Macs<'_>, net: &str) -> Self {
        let (sender, node, consumer) = (NetNs::new(), NetNs::new(), NetNs::new());
        let name = |role: char| unique(&format!("g{tag}{role}"));
        let (s_if, n_if, n_out, c_if) = (name('s'), name('n'), name('o'), name('c'));
        let one_queue = ["numtxqueues", "1", "numrxqueues", "1"];
        let pair = |ns: &NetNs, a: &str, a_mac: &str, b: &str, b_mac: &str, b_ns: &str| {
            let mut args = vec!["link", "add", a, "address", a_mac];
            args.extend(one_queue);
            args.extend(["type", "veth", "peer", "name", b, "address", b_mac]);
            args.extend(one_queue);
            args.extend(["netns", b_ns]);
            ns.ip(&args);
        };
        pair(&sender, &s_if, s_mac, &n_if, n_mac, &node.name);
        pair(&node, &n_out, o_mac, &c_if, n_mac, &consumer.name);
        let (s_addr, n_addr) = (format!("{net}.1"), format!("{net}.2"));
        let addr = |a: &str| a.parse::<Ipv4Addr>().expect("NET is a /24 prefix, a.b.c");
        sender.ip(&["addr", "add", &format!("{s_addr}/24"), "dev", &s_if]);
        node.ip(&["addr", "add", &format!("{n_addr}/24"), "dev", &n_if]);
        sender.neigh(&n_addr, n_mac, &s_if);
        node.neigh(&s_addr, s_mac, &n_if);
        for (ns, dev) in [
            (&sender, &s_if),
            (&node, &n_if),
            (&node, &n_out),
            (&consumer, &c_if),
        ] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        for (ns, dev) in [
            (&sender, &s_if),
            (&node, &n_if),
            (&node, &n_out),
            (&consumer, &c_if),
        ] {
            ns.wait_up(dev);
        }
        Self {
            sender,
            node,
            consumer,
            s_if,
            n_if,
            n_out,
            c_if,
            s_addr: addr(&s_addr),
            n_addr: addr(&n_addr),
        }
    }
}

/// The management TCP connection: sender-side client, node-side server.
#[derive(Debug)]
pub struct Mgmt {
    client: TcpStream,
    server: TcpStream,
    round: u32,
}

impl Mgmt {
    /// Connects from the sender to `port` on the node's wire address.
    pub fn connect(net: &ThreeNs, port: u16) -> Self {
        let at = SocketAddr::from((net.n_addr, port));
        let listener = net.node.run(|| TcpListener::bind(at).unwrap());
        let client = net
            .sender
            .run(|| TcpStream::connect_timeout(&at, Duration::from_secs(2)).unwrap());
        let (server, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), net.s_addr);
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.set_nodelay(true).unwrap();
        }
        Self {
            client,
            server,
            round: 0,
        }
    }

    /// One request/response round trip; panics if it does not complete.
    pub fn ping(&mut self, phase: &str) {
        self.round += 1;
        let request = format!("ping {:08} {phase:>16}", self.round);
        let reply = format!("pong {:08} {phase:>16}", self.round);
        self.client.write_all(request.as_bytes()).unwrap();
        let mut buf = vec![0u8; request.len()];
        self.server
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("management request lost in {phase}: {e}"));
        assert_eq!(buf, request.as_bytes());
        self.server.write_all(reply.as_bytes()).unwrap();
        self.client
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("management reply lost in {phase}: {e}"));
        assert_eq!(buf, reply.as_bytes());
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
    /// A pair on 198.19.32.0/24 (a `.1`, b `.2`) in namespaces `gft...`.
    pub fn new() -> Self {
        Self::with_addrs(
            "gft",
            Ipv4Addr::new(198, 19, 32, 1),
            Ipv4Addr::new(198, 19, 32, 2),
        )
    }

    /// A pair in namespaces named after `prefix`, addressed `a_addr/24` and
    /// `b_addr/24` (one /24).
    pub fn with_addrs(prefix: &str, a_addr: Ipv4Addr, b_addr: Ipv4Addr) -> Self {
        let a = NetNs::with_prefix(prefix);
        let b = NetNs::with_prefix(prefix);
        let a_if = unique("gva");
        let b_if = unique("gvb");
        // Created inside namespace a, so nothing ever lands in the host's.
        a.ip(&[
            "link", "add", &a_if, "address", A_MAC, "type", "veth", "peer", "name", &b_if,
            "address", B_MAC, "netns", &b.name,
        ]);
        a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", &a_if]);
        b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", &b_if]);
        a.neigh(&b_addr.to_string(), B_MAC, &a_if);
        b.neigh(&a_addr.to_string(), A_MAC, &b_if);
        a.ip(&["link", "set", &a_if, "up"]);
        b.ip(&["link", "set", &b_if, "up"]);
        a.wait_up(&a_if);
        b.wait_up(&b_if);
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

/// Two namespaces joined by one veth pair with `queues` RX and TX queues on
/// each end (AF_XDP and relay tests):
///
/// ```text
/// sender ns                node ns
///   s_if (NET.1)  ==>  n_if (NET.2)
/// ```
///
/// `NET` is a /24 prefix `a.b.c` (tests use 198.18.0.0/15); neighbours
/// are static both ways and IPv6 is off. veth picks the receiving queue
/// from the sending one, which the sender's flow hash picks: datagrams from
/// many source ports spread over the queues.
#[derive(Debug)]
pub struct Wire {
    pub sender: NetNs,
    pub node: NetNs,
    pub s_if: String,
    pub n_if: String,
    pub s_addr: Ipv4Addr,
    pub n_addr: Ipv4Addr,
    pub s_mac: &'static str,
    pub n_mac: &'static str,
}

impl Wire {
    /// `tag` (two letters) makes the interface names tell the tests apart.
    pub fn new(tag: &str, queues: u32, net: &str) -> Self {
        let (s_mac, n_mac) = ("02:00:00:00:3a:01", "02:00:00:00:3b:01");
        let (sender, node) = (NetNs::new(), NetNs::new());
        let (s_if, n_if) = (unique(&format!("g{tag}s")), unique(&format!("g{tag}n")));
        let q = queues.to_string();
        sender.ip(&[
            "link",
            "add",
            &s_if,
            "address",
            s_mac,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &n_if,
            "address",
            n_mac,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &node.name,
        ]);
        let (s_addr, n_addr) = (format!("{net}.1"), format!("{net}.2"));
        sender.ip(&["addr", "add", &format!("{s_addr}/24"), "dev", &s_if]);
        node.ip(&["addr", "add", &format!("{n_addr}/24"), "dev", &n_if]);
        sender.neigh(&n_addr, n_mac, &s_if);
        node.neigh(&s_addr, s_mac, &n_if);
        sender.ip(&["link", "set", &s_if, "up"]);
        node.ip(&["link", "set", &n_if, "up"]);
        sender.wait_up(&s_if);
        node.wait_up(&n_if);
        let addr = |a: &str| a.parse::<Ipv4Addr>().expect("NET is a /24 prefix, a.b.c");
        Self {
            s_addr: addr(&s_addr),
            n_addr: addr(&n_addr),
            sender,
            node,
            s_if,
            n_if,
            s_mac,
            n_mac,
        }
    }
}
