//! SR-IOV: enabling VFs (`sriov_numvfs`) and configuring them (MAC, VLAN and
//! QoS, trust, spoof checking) over rtnetlink (`RTM_SETLINK` with
//! `IFLA_VFINFO_LIST` on the PF's netdev), and reading their state back
//! (`RTM_GETLINK` with `RTEXT_FILTER_VF`). No `ip` shell-out.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use griffin_devices::{IoAt, PciAddress};
use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkMessage, LinkVfInfo, VfInfo, VfInfoMac, VfInfoSpoofCheck,
    VfInfoTrust, VfInfoVlan,
};
use netlink_packet_route::RouteNetlinkMessage;

/// Why an SR-IOV operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    /// A sysfs file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoAt),
    /// The kernel refused a netlink request.
    #[error("netlink {op} on {iface} refused")]
    Netlink {
        /// What was asked.
        op: &'static str,
        /// The PF netdev.
        iface: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// The VFs did not appear in time.
    #[error("{pf}: {want} VFs requested, {have} appeared within {secs} s")]
    Timeout {
        /// The PF.
        pf: PciAddress,
        /// VFs wanted.
        want: u32,
        /// VFs seen.
        have: u32,
        /// Seconds waited.
        secs: u64,
    },
    /// No such PF, VF or netdev.
    #[error("{0}: not found")]
    NotFound(String),
    /// More VFs than the device offers.
    #[error("{pf} offers {total} VFs, {want} requested")]
    TooMany {
        /// The PF.
        pf: PciAddress,
        /// `sriov_totalvfs`.
        total: u32,
        /// Requested.
        want: u32,
    },
}

type Result<T> = std::result::Result<T, SriovError>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SriovError {
    IoAt::on(op, path.to_path_buf())
}

/// Sets a PF's number of VFs (going through 0, as the kernel requires for a
/// change between two non-zero counts) and waits until the VF functions
/// exist. `sys` is the sysfs root (`/sys`).
pub fn set_num_vfs(sys: &Path, pf: PciAddress, n: u32) -> Result<Vec<PciAddress>> {
    let dev = sys.join("bus/pci/devices").join(pf.to_string());
    let total_path = dev.join("sriov_totalvfs");
    let total: u32 = fs::read_to_string(&total_path)
        .map_err(io("read", &total_path))?
        .trim()
        .parse()
        .map_err(|e| {
            io("parse", &total_path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
    if n > total {
        return Err(SriovError::TooMany { pf, total, want: n });
    }
    let num = dev.join("sriov_numvfs");
    let cur: u32 = fs::read_to_string(&num)
        .map_err(io("read", &num))?
        .trim()
        .parse()
        .unwrap_or(0);
    if cur != n {
        if cur != 0 && n != 0 {
            fs::write(&num, "0").map_err(io("write", &num))?;
        }
        tracing::info!(%pf, n, "setting sriov_numvfs");
        fs::write(&num, n.to_string()).map_err(io("write", &num))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let vfs: Vec<PciAddress> = (0..n)
            .filter_map(|i| fs::read_link(dev.join(format!("virtfn{i}"))).ok())
            .filter_map(|t| t.file_name()?.to_str()?.parse().ok())
            .collect();
        if vfs.len() as u32 == n {
            return Ok(vfs);
        }
        if Instant::now() > deadline {
            return Err(SriovError::Timeout {
                pf,
                want: n,
                have: vfs.len() as u32,
                secs: 30,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What to set on one VF; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfConfig {
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// VLAN id and 802.1p priority (QoS); VLAN 0 clears it.
    pub vlan: Option<(u16, u8)>,
    /// Trusted (may change its MAC, enter promiscuous mode).
    pub trust: Option<bool>,
    /// Spoof checking.
    pub spoof_check: Option<bool>,
}

/// One VF's state as the PF driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfState {
    /// VF index.
    pub vf: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// VLAN id and QoS.
    pub vlan: (u16, u8),
    /// Trusted.
    pub trust: Option<bool>,
    /// Spoof checking.
    pub spoof_check: Option<bool>,
}

fn ifindex(sys: &Path, iface: &str) -> Result<u32> {
    let p = sys.join("class/net").join(iface).join("ifindex");
    let t = fs::read_to_string(&p).map_err(io("read", &p))?;
    t.trim()
        .parse()
        .map_err(|e| io("parse", &p)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn request(
    iface: &str,
    op: &'static str,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>> {
    griffin_ebpf::rtnl::request(msg, flags).map_err(|source| SriovError::Netlink {
        op,
        iface: iface.to_owned(),
        source,
    })
}

/// Configures VF `vf` of the PF whose netdev is `iface`.
pub fn configure_vf(sys: &Path, iface: &str, vf: u32, cfg: &VfConfig) -> Result<()> {
    let mut infos = Vec::new();
    if let Some(mac) = cfg.mac {
        infos.push(VfInfo::Mac(VfInfoMac::new(vf, &mac)));
    }
    if let Some((vlan, qos)) = cfg.vlan {
        infos.push(VfInfo::Vlan(VfInfoVlan::new(
            vf,
            u32::from(vlan),
            u32::from(qos),
        )));
    }
    if let Some(t) = cfg.trust {
        infos.push(VfInfo::Trust(VfInfoTrust::new(vf, t)));
    }
    if let Some(s) = cfg.spoof_check {
        infos.push(VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, s)));
    }
    if infos.is_empty() {
        return Ok(());
    }
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex(sys, iface)?;
    msg.attributes
        .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(infos)]));
    tracing::info!(iface, vf, ?cfg, "configuring VF");
    request(
        iface,
        "set VF",
        RouteNetlinkMessage::SetLink(msg),
        NLM_F_REQUEST | NLM_F_ACK,
    )?;
    Ok(())
}

/// Moves the netdev `iface` (a VF's, handed to a pod) into the network
/// namespace `netns` (an open `/proc/<pid>/ns/net` or `/run/netns/<name>`):
/// `RTM_SETLINK` with `IFLA_NET_NS_FD`. A physical function's netdev
/// returns to the initial namespace when that namespace goes away.
pub fn move_to_netns(sys: &Path, iface: &str, netns: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex(sys, iface)?;
    msg.attributes
        .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    tracing::info!(iface, "moving netdev into a network namespace");
    request(
        iface,
        "move to a network namespace",
        RouteNetlinkMessage::SetLink(msg),
        NLM_F_REQUEST | NLM_F_ACK,
    )?;
    Ok(())
}

/// Moves netdev `iface` out of the network namespace `from` into `to`
/// (a VF given to a pod back to the host's namespace). The request is made
/// from inside `from`, which needs `CAP_SYS_ADMIN`.
pub fn move_from_netns(
    from: std::os::fd::BorrowedFd<'_>,
    iface: &str,
    to: std::os::fd::BorrowedFd<'_>,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    tracing::info!(iface, "moving netdev out of a network namespace");
    crate::nsenter::in_netns(from, || {
        let index = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| SriovError::NotFound(format!("{iface} in its network namespace")))?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::NetNsFd(to.as_raw_fd()));
        request(
            iface,
            "move out of a network namespace",
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(drop)
    })
    .map_err(|source| SriovError::Netlink {
        op: "enter the network namespace of",
        iface: iface.to_owned(),
        source,
    })?
}

/// The VFs of the PF whose netdev is `iface`, as its driver reports them.
pub fn vf_states(sys: &Path, iface: &str) -> Result<Vec<VfState>> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex(sys, iface)?;
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Vf]));
    let replies = request(
        iface,
        "get VFs",
        RouteNetlinkMessage::GetLink(msg),
        NLM_F_REQUEST,
    )?;
    let mut out = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewLink(link) = r else {
            continue;
        };
        for a in link.attributes {
            let LinkAttribute::VfInfoList(list) = a else {
                continue;
            };
            for LinkVfInfo(infos) in list {
                let mut st = VfState {
                    vf: u32::MAX,
                    mac: [0; 6],
                    vlan: (0, 0),
                    trust: None,
                    spoof_check: None,
                };
                for i in infos {
                    match i {
                        VfInfo::Mac(m) => {
                            st.vf = m.vf_id;
                            st.mac.copy_from_slice(&m.mac[..6]);
                        }
                        VfInfo::Vlan(v) => st.vlan = (v.vlan_id as u16, v.qos as u8),
                        VfInfo::Trust(t) => st.trust = Some(t.enabled),
                        VfInfo::SpoofCheck(s) => st.spoof_check = Some(s.enabled),
                        _ => {}
                    }
                }
                out.push(st);
            }
        }
    }
    out.sort_by_key(|s| s.vf);
    Ok(out)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:00:01"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
    }

    #[test]
    fn numvfs_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("griffin-sriov-{}", std::process::id()));
        let pf: PciAddress = "0000:13:00.0".parse().unwrap();
        let err = set_num_vfs(&dir, pf, 1).unwrap_err();
        assert!(err.to_string().contains("sriov_totalvfs"), "{err}");
        let dev = dir.join("bus/pci/devices/0000:13:00.0");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("sriov_totalvfs"), "2\n").unwrap();
        fs::write(dev.join("sriov_numvfs"), "0\n").unwrap();
        assert!(matches!(
            set_num_vfs(&dir, pf, 3),
            Err(SriovError::TooMany { total: 2, .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
