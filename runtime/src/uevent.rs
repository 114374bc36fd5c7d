//! Kernel uevents (`NETLINK_KOBJECT_UEVENT`): how the daemon learns that the
//! hardware changed (PCI functions added or removed, VFs created, drivers
//! bound, CPUs on- or offlined, RDMA and network devices appearing).
//!
//! Parsing is a pure function over the datagram; [`Listener`] is the socket.
//! The kernel multicasts to group 1; udev's re-broadcasts (group 2, with a
//! `libudev` header) are not needed and not read.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

/// Errors of the uevent socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating, binding or reading the netlink socket.
    #[error("uevent netlink socket: {op}")]
    Socket {
        /// What failed.
        op: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `move`, `online`, `offline`, `bind`, `unbind`.
    pub action: String,
    /// Path below `/sys`.
    pub devpath: String,
    /// `SUBSYSTEM=`.
    pub subsystem: String,
    /// Every `KEY=value` of the message.
    pub vars: BTreeMap<String, String>,
}

/// Parses a kernel uevent datagram: `ACTION@DEVPATH\0KEY=VALUE\0...`.
/// `None` for anything else (udev's `libudev` messages, garbage).
pub fn parse(msg: &[u8]) -> Option<Uevent> {
    let mut parts = msg.split(|&b| b == 0).filter(|p| !p.is_empty());
    let head = std::str::from_utf8(parts.next()?).ok()?;
    let (action, devpath) = head.split_once('@')?;
    let mut vars = BTreeMap::new();
    for p in parts {
        let Ok(kv) = std::str::from_utf8(p) else {
            continue;
        };
        if let Some((k, v)) = kv.split_once('=') {
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    // The header and the variables must agree; a mismatch is not a kernel
    // message.
    if vars.get("ACTION").is_some_and(|a| a != action)
        || vars.get("DEVPATH").is_some_and(|d| d != devpath)
    {
        return None;
    }
    Some(Uevent {
        action: action.to_owned(),
        devpath: devpath.to_owned(),
        subsystem: vars.get("SUBSYSTEM").cloned().unwrap_or_default(),
        vars,
    })
}

/// Whether an event changes what discovery would find: PCI functions
/// (including VF creation, driver bind/unbind), CPUs, NUMA nodes and
/// memory blocks, network and RDMA devices.
pub fn changes_topology(e: &Uevent) -> bool {
    let subsystem = matches!(
        e.subsystem.as_str(),
        "pci" | "cpu" | "node" | "memory" | "net" | "infiniband" | "nvme" | "accel" | "drm"
    );
    let action = matches!(
        e.action.as_str(),
        "add" | "remove" | "online" | "offline" | "bind" | "unbind" | "move" | "change"
    );
    // `change` on a net device is carrier/ethtool noise; on the others it is
    // a real change (SR-IOV numvfs, CPU capacity).
    subsystem && action && !(e.subsystem == "net" && e.action == "change")
}

/// A socket receiving kernel uevents.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Subscribes to the kernel's uevent multicast group.
    pub fn open() -> Result<Self, Error> {
        let err = |op| move |source| Error::Socket { op, source };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(err("socket"))?;
        // Bursts (hundreds of VFs at once) must not overflow the queue
        // before the daemon reads; a lost event is recovered by the next one
        // anyway, since each triggers a whole re-discovery.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1)).map_err(err("bind"))?;
        Ok(Self { fd })
    }

    /// Reads uevents on a thread of its own (the netlink socket blocks)
    /// until `stopped()` says so (looked at twice a second), handing each one
    /// that changes the topology ([`changes_topology`]) to `changed` as a
    /// one-line description; stops when `changed` returns false.
    pub fn watch(
        self,
        stopped: impl Fn() -> bool + Send + 'static,
        changed: impl Fn(String) -> bool + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("uevents".into())
            .spawn(move || {
                while !stopped() {
                    match self.next(Duration::from_millis(500)) {
                        Ok(Some(e)) if changes_topology(&e) => {
                            tracing::debug!(action = %e.action, devpath = %e.devpath, "uevent");
                            if !changed(format!(
                                "uevent {} {} {}",
                                e.action, e.subsystem, e.devpath
                            )) {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %griffin_devices::Chain(&e), "uevents stopped");
                            return;
                        }
                    }
                }
            })
    }

    /// Waits up to `timeout` for the next kernel uevent; `Ok(None)` on
    /// timeout. Messages that are not kernel uevents are skipped.
    pub fn next(&self, timeout: Duration) -> Result<Option<Uevent>, Error> {
        let tv = nix::sys::time::TimeVal::new(
            timeout.as_secs() as _,
            timeout.subsec_micros().max(1) as _,
        );
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv).map_err(|source| Error::Socket {
            op: "SO_RCVTIMEO",
            source,
        })?;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => {
                    if let Some(e) = parse(&buf[..n]) {
                        return Ok(Some(e));
                    }
                }
                Err(nix::Error::EAGAIN | nix::Error::EINTR) => return Ok(None),
                // The queue overflowed: events were lost, which only means
                // "something changed".
                Err(nix::Error::ENOBUFS) => {
                    return Ok(Some(Uevent {
                        action: "change".into(),
                        devpath: String::new(),
                        subsystem: "pci".into(),
                        vars: BTreeMap::new(),
                    }))
                }
                Err(source) => return Err(Error::Socket { op: "recv", source }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_messages_parse() {
        let e = parse(
            b"add@/devices/pci0000:00/0000:00:02.0/0000:01:10.0\0ACTION=add\0\
              DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:10.0\0SUBSYSTEM=pci\0\
              PCI_SLOT_NAME=0000:01:10.0\0SEQNUM=2411\0",
        )
        .unwrap();
        assert_eq!(e.action, "add");
        assert_eq!(e.subsystem, "pci");
        assert_eq!(e.vars["PCI_SLOT_NAME"], "0000:01:10.0");
        assert!(changes_topology(&e));

        let cpu =
            parse(b"offline@/devices/system/cpu/cpu3\0ACTION=offline\0SUBSYSTEM=cpu\0").unwrap();
        assert!(changes_topology(&cpu));
        let carrier =
            parse(b"change@/devices/virtual/net/veth0\0ACTION=change\0SUBSYSTEM=net\0").unwrap();
        assert!(!changes_topology(&carrier));
        let block =
            parse(b"add@/devices/virtual/block/loop0\0ACTION=add\0SUBSYSTEM=block\0").unwrap();
        assert!(!changes_topology(&block));
    }

    #[test]
    fn non_kernel_messages_are_refused() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b"no header here\0A=B\0"), None);
        // Header and variables disagree.
        assert_eq!(parse(b"add@/devices/x\0ACTION=remove\0"), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(e) = parse(&msg) {
                prop_assert!(!e.action.contains('@'));
            }
        }
    }
}
