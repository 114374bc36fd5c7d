//! The pod end of the split's redirects: frames steered to a pod's
//! interface arrive as the pod's kernel expects them.
//!
//! A pod's interface is the far end of a veth whose near end is in this
//! (the node's) network namespace, where the split redirects to. Two
//! things make such a redirect deliver, both from `bpf/griffin_pod.c`:
//!
//! - the Ethernet addresses: the frame still names the data interface's
//!   MAC as its destination, which the pod's stack drops as another host's.
//!   [`PodPath::l2_program`] is a devmap program
//!   ([`crate::Datapath::set_egress_program`]) that rewrites them for the
//!   egress interfaces [`PodPath::set_l2`] names (to the pod end's MAC, from
//!   the near end's), as the kernel's forwarding would have;
//! - the veth's NAPI, for a split in native mode: a veth takes native XDP
//!   redirects only while its peer runs an XDP program (or has GRO on).
//!   [`PodPath::attach_pass`] attaches a pass-only program to the pod's
//!   end, from a thread that enters the pod's namespace (`setns`, so it
//!   needs `CAP_SYS_ADMIN`: this kernel takes `IFLA_IF_NETNSID` on
//!   `RTM_SETLINK` as a request to move the link, not to address it). A
//!   split in generic mode redirects through the veth's transmit path and
//!   needs nothing in the pod's namespace.
//!
//! [`pod_link`] finds the veth of a pod from its network namespace (an open
//! `/proc/<pid>/ns/net`): the namespace's id as this namespace knows it
//! (`RTM_GETNSID`, assigned with `RTM_NEWNSID` if it has none), then the
//! veth here whose peer lives there (`IFLA_LINK_NETNSID`, `IFLA_LINK`).

use std::{
    fmt, io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

use aya::{
    maps::{HashMap, MapData},
    programs::{ProgramFd, Xdp},
    Ebpf, EbpfLoader,
};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp},
    nsid::{NsidAttribute, NsidMessage},
    RouteNetlinkMessage,
};

use crate::rtnl;

/// The compiled pod-path object (ELF with BTF), aligned for aya.
pub static POD_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/griffin_pod.o"));

/// The devmap program rewriting the Ethernet addresses.
pub const L2_PROGRAM: &str = "griffin_pod_l2";
/// The pass-only program for the pod's end of the veth.
pub const PASS_PROGRAM: &str = "griffin_pod_pass";
/// The egress ifindex -> addresses map, pinned by this name.
pub const L2_MAP: &str = "griffin_pod_l2_map";

/// Where the pod path of the split on `iface` pins its address map:
/// `<bpffs>/griffin-pod/<iface>/` (beside the split's own pins, which
/// [`crate::split::detach`] removes with these).
pub fn pin_dir(bpffs: &Path, iface: &str) -> std::path::PathBuf {
    bpffs.join("griffin-pod").join(iface)
}

/// Removes what [`PodPath::load`] pinned in [`pin_dir`] (and the directory
/// when it is empty then); nothing there is not an error.
pub fn remove_pins(bpffs: &Path, iface: &str) -> io::Result<()> {
    let dir = pin_dir(bpffs, iface);
    match std::fs::remove_file(dir.join(L2_MAP)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::remove_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        // Shared by every split's pod path: only when it is empty.
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

/// `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `NETNSA_NSID_NOT_ASSIGNED`.
const NSID_NOT_ASSIGNED: i32 = -1;

/// Why a pod-path operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PodPathError {
    /// The object or one of its programs did not load.
    #[error("pod-path {what} did not load")]
    Load {
        /// The object or the program's name.
        what: &'static str,
        /// What aya said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The address map refused an operation.
    #[error("{L2_MAP}: {op} for ifindex {ifindex}")]
    Map {
        /// What was asked.
        op: &'static str,
        /// The egress interface.
        ifindex: u32,
        /// What aya said.
        #[source]
        source: aya::maps::MapError,
    },
    /// The kernel refused a netlink request.
    #[error("netlink {op}")]
    Netlink {
        /// What was asked, naming the interface or namespace.
        op: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// No veth here has its peer in the namespace.
    #[error("no veth in this network namespace has its peer in namespace id {nsid}")]
    NoVeth {
        /// The namespace's id here.
        nsid: i32,
    },
}

type Result<T> = std::result::Result<T, PodPathError>;

fn netlink(op: impl Into<String>) -> impl FnOnce(io::Error) -> PodPathError {
    let op = op.into();
    move |source| PodPathError::Netlink { op, source }
}

/// A MAC address.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok().map(Mac)
}

/// The addresses written into a frame leaving through an egress interface
/// (`struct griffin_l2` of `bpf/griffin_pod.c`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    /// Destination: the pod end's MAC.
    pub dst: Mac,
    /// Source: the near end's MAC.
    pub src: Mac,
}

// SAFETY: `L2` is `repr(C)` of two `Mac`s, each a `repr(transparent)`
// `[u8; 6]`: size 12, align 1, no padding, every bit pattern valid, as
// `aya::Pod` requires (checked below).
unsafe impl aya::Pod for L2 {}

const _: () = assert!(size_of::<L2>() == 12 && align_of::<L2>() == 1);

/// A pod's veth as seen from this namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodLink {
    /// The near end, here: the redirect target.
    pub host_ifindex: u32,
    /// Its name.
    pub host_name: String,
    /// Its MAC (the rewritten frames' source).
    pub host_mac: Mac,
    /// The pod's namespace's id here.
    pub nsid: i32,
    /// The pod end's ifindex in its namespace.
    pub peer_ifindex: u32,
    /// The pod end's MAC (the rewritten frames' destination).
    pub peer_mac: Mac,
}

impl PodLink {
    /// The addresses frames to this pod get.
    pub fn l2(&self) -> L2 {
        L2 {
            dst: self.peer_mac,
            src: self.host_mac,
        }
    }
}

/// The id this namespace has for the namespace `netns`, assigned if it has
/// none.
pub fn nsid_of(netns: BorrowedFd<'_>) -> Result<i32> {
    let get = |op: &'static str| -> Result<i32> {
        let mut msg = NsidMessage::default();
        msg.attributes
            .push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
        let replies =
            rtnl::request(RouteNetlinkMessage::GetNsId(msg), NLM_F_REQUEST).map_err(netlink(op))?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            })
            .next()
            .unwrap_or(NSID_NOT_ASSIGNED))
    };
    let id = get("get the id of a network namespace")?;
    if id != NSID_NOT_ASSIGNED {
        return Ok(id);
    }
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
    msg.attributes.push(NsidAttribute::Id(NSID_NOT_ASSIGNED));
    match rtnl::request(RouteNetlinkMessage::NewNsId(msg), NLM_F_REQUEST | NLM_F_ACK) {
        // Another process may have assigned one meanwhile.
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(netlink("assign an id to a network namespace")(e)),
    }
    match get("get the assigned id of a network namespace")? {
        NSID_NOT_ASSIGNED => Err(PodPathError::Netlink {
            op: "assign an id to a network namespace".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        }),
        id => Ok(id),
    }
}

/// The veth here whose peer is in the namespace `netns` (a pod's), with
/// both ends' addresses. A namespace with several such veths gives the
/// one with the lowest ifindex here.
pub fn pod_link(netns: BorrowedFd<'_>) -> Result<PodLink> {
    let nsid = nsid_of(netns)?;
    let links = rtnl::request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )
    .map_err(netlink("list links"))?;
    let (host_ifindex, host_name, host_mac, peer_ifindex) =
        veth_into(&links, nsid).ok_or(PodPathError::NoVeth { nsid })?;
    let mut msg = LinkMessage::default();
    msg.header.index = peer_ifindex;
    msg.attributes.push(LinkAttribute::IfNetnsId(nsid));
    let op =
        || format!("get the peer of {host_name} (ifindex {peer_ifindex} in namespace id {nsid})");
    let replies =
        rtnl::request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST).map_err(netlink(op()))?;
    let peer_mac = replies
        .iter()
        .find_map(|r| match r {
            RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Address(bytes) => mac_of(bytes),
                _ => None,
            }),
            _ => None,
        })
        .ok_or_else(|| PodPathError::Netlink {
            op: op(),
            source: io::Error::new(io::ErrorKind::InvalidData, "no MAC address in the reply"),
        })?;
    Ok(PodLink {
        host_ifindex,
        host_name,
        host_mac,
        nsid,
        peer_ifindex,
        peer_mac,
    })
}

/// Of the links of a dump, the veth whose peer is in namespace `nsid`
/// (the lowest ifindex when several are): its ifindex, name, MAC and its
/// peer's ifindex there.
fn veth_into(links: &[RouteNetlinkMessage], nsid: i32) -> Option<(u32, String, Mac, u32)> {
    let mut found: Option<(u32, String, Mac, u32)> = None;
    for r in links {
        let RouteNetlinkMessage::NewLink(link) = r else {
            continue;
        };
        let (mut veth, mut in_ns, mut peer, mut mac, mut name) = (false, false, None, None, None);
        for a in &link.attributes {
            match a {
                LinkAttribute::LinkInfo(infos) => {
                    veth = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                LinkAttribute::LinkNetNsId(id) => in_ns = *id == nsid,
                LinkAttribute::Link(index) => peer = Some(*index),
                LinkAttribute::Address(bytes) => mac = mac_of(bytes),
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                _ => {}
            }
        }
        if let (true, true, Some(peer), Some(mac), Some(name)) = (veth, in_ns, peer, mac, name) {
            let index = link.header.index;
            if found.as_ref().is_none_or(|f| index < f.0) {
                found = Some((index, name, mac, peer));
            }
        }
    }
    found
}

/// The loaded pod-path programs and their address map.
pub struct PodPath {
    ebpf: Ebpf,
    l2: HashMap<MapData, u32, L2>,
}

impl fmt::Debug for PodPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodPath").finish_non_exhaustive()
    }
}

impl PodPath {
    /// Loads the programs. The address map is the one pinned in `pin_dir`
    /// (a directory on a BPF file system, created if absent) as [`L2_MAP`],
    /// created and pinned if absent, so programs of an earlier load that a
    /// devmap still holds (a restarted daemon's predecessor's) read what
    /// this one writes.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        let pins = |source: Box<dyn std::error::Error + Send + Sync>| PodPathError::Load {
            what: "object (its pin directory)",
            source,
        };
        std::fs::create_dir_all(pin_dir).map_err(|e| pins(Box::new(e)))?;
        if !crate::sys::is_bpffs(pin_dir) {
            return Err(pins(
                format!("{} is not on a BPF file system", pin_dir.display()).into(),
            ));
        }
        let mut loader = EbpfLoader::new();
        loader.map_pin_path(pin_dir);
        let mut ebpf = loader.load(POD_OBJECT).map_err(|e| PodPathError::Load {
            what: "object",
            source: Box::new(e),
        })?;
        for name in [L2_PROGRAM, PASS_PROGRAM] {
            let load_err = |source: Box<dyn std::error::Error + Send + Sync>| PodPathError::Load {
                what: if name == L2_PROGRAM {
                    L2_PROGRAM
                } else {
                    PASS_PROGRAM
                },
                source,
            };
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| load_err("missing from the object".into()))?
                .try_into()
                .map_err(|e| load_err(Box::new(e)))?;
            prog.load().map_err(|e| load_err(Box::new(e)))?;
        }
        let map = ebpf.take_map(L2_MAP).ok_or_else(|| PodPathError::Load {
            what: "object",
            source: format!("no map {L2_MAP}").into(),
        })?;
        let l2 = HashMap::try_from(map).map_err(|source| PodPathError::Map {
            op: "open",
            ifindex: 0,
            source,
        })?;
        Ok(Self { ebpf, l2 })
    }

    fn program(&self, name: &'static str) -> &ProgramFd {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .expect("load checked both programs");
        prog.fd().expect("load loaded both programs")
    }

    /// The devmap program to give [`crate::Datapath::set_egress_program`].
    pub fn l2_program(&self) -> &ProgramFd {
        self.program(L2_PROGRAM)
    }

    /// Frames redirected out of `ifindex` get `l2`.
    pub fn set_l2(&mut self, ifindex: u32, l2: L2) -> Result<()> {
        self.l2
            .insert(ifindex, l2, 0)
            .map_err(|source| PodPathError::Map {
                op: "set",
                ifindex,
                source,
            })
    }

    /// Frames redirected out of `ifindex` keep their addresses; `false`
    /// when it had no entry.
    pub fn remove_l2(&mut self, ifindex: u32) -> Result<bool> {
        match self.l2.remove(&ifindex) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(source) => Err(PodPathError::Map {
                op: "remove",
                ifindex,
                source,
            }),
        }
    }

    /// The egress interfaces that have addresses set.
    pub fn l2_ifindexes(&self) -> Result<Vec<u32>> {
        self.l2
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(|source| PodPathError::Map {
                op: "list",
                ifindex: 0,
                source,
            })
    }

    /// The addresses set for `ifindex`.
    pub fn l2(&self, ifindex: u32) -> Result<Option<L2>> {
        match self.l2.get(&ifindex, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(PodPathError::Map {
                op: "get",
                ifindex,
                source,
            }),
        }
    }

    /// Attaches the pass-only program (native mode, through netlink, so it
    /// stays when this process exits) to the pod's end of `link`, whose
    /// namespace `netns` is, so its veth takes the redirected frames.
    /// Replaces a program attached there through netlink before.
    pub fn attach_pass(&self, netns: BorrowedFd<'_>, link: &PodLink) -> Result<()> {
        let fd = self.program(PASS_PROGRAM).as_fd().as_raw_fd();
        set_peer_xdp(netns, link, fd, "attach XDP to")
    }

    /// Detaches what [`PodPath::attach_pass`] attached (the pod's
    /// namespace going away detaches it too).
    pub fn detach_pass(netns: BorrowedFd<'_>, link: &PodLink) -> Result<()> {
        set_peer_xdp(netns, link, -1, "detach XDP from")
    }
}

fn set_peer_xdp(netns: BorrowedFd<'_>, link: &PodLink, fd: i32, what: &str) -> Result<()> {
    let op = || {
        format!(
            "{what} the peer of {} (ifindex {} in namespace id {})",
            link.host_name, link.peer_ifindex, link.nsid
        )
    };
    let mut msg = LinkMessage::default();
    msg.header.index = link.peer_ifindex;
    msg.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(fd),
        LinkXdp::Flags(XDP_FLAGS_DRV_MODE),
    ]));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Only this thread enters the namespace; it ends after.
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| netlink(format!("{} (entering its namespace)", op()))(e.into()))?;
                rtnl::request(RouteNetlinkMessage::SetLink(msg), NLM_F_REQUEST | NLM_F_ACK)
                    .map_err(netlink(op()))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(
        index: u32,
        kind: Option<InfoKind>,
        nsid: Option<i32>,
        peer: u32,
    ) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes
            .push(LinkAttribute::IfName(format!("if{index}")));
        m.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, index as u8]));
        m.attributes.push(LinkAttribute::Link(peer));
        if let Some(k) = kind {
            m.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]));
        }
        if let Some(id) = nsid {
            m.attributes.push(LinkAttribute::LinkNetNsId(id));
        }
        RouteNetlinkMessage::NewLink(m)
    }

    #[test]
    fn the_veth_into_the_namespace_is_found_in_a_dump() {
        let links = [
            link(9, Some(InfoKind::Veth), Some(4), 2),
            // Into another namespace; a non-veth link into this one (a
            // macvlan's lower device is also "link-netnsid").
            link(5, Some(InfoKind::Veth), Some(3), 2),
            link(6, Some(InfoKind::MacVlan), Some(4), 2),
            link(7, Some(InfoKind::Veth), Some(4), 3),
            link(8, None, Some(4), 2),
        ];
        assert_eq!(
            veth_into(&links, 4),
            Some((7, "if7".into(), Mac([2, 0, 0, 0, 0, 7]), 3))
        );
        assert_eq!(veth_into(&links, 1), None);
        assert_eq!(veth_into(&[], 4), None);
    }

    #[test]
    fn macs_print_as_ip_does() {
        assert_eq!(
            Mac([0x02, 0, 0xab, 1, 0x10, 0xff]).to_string(),
            "02:00:ab:01:10:ff"
        );
        assert_eq!(mac_of(&[1, 2, 3]), None);
        let link = PodLink {
            host_ifindex: 7,
            host_name: "veth1".into(),
            host_mac: Mac([2, 0, 0, 0, 0, 1]),
            nsid: 3,
            peer_ifindex: 2,
            peer_mac: Mac([2, 0, 0, 0, 0, 2]),
        };
        assert_eq!(
            link.l2(),
            L2 {
                dst: Mac([2, 0, 0, 0, 0, 2]),
                src: Mac([2, 0, 0, 0, 0, 1])
            }
        );
    }
}
