//! Fail-open for redirect targets that are down or gone.
//!
//! A devmap entry whose interface is down still makes `bpf_redirect_map`
//! return `XDP_REDIRECT`, and the kernel then drops the frame in transmit: it
//! is lost and counted as a redirect. The link watcher removes such entries
//! from the devmap so the program falls back to `XDP_PASS` (the frame reaches
//! the node's stack and counts as a fallback), and restores them when the
//! interface is usable again.
//!
//! **Usable** ([`target_usable`]) means the interface exists, is
//! administratively up (`IFF_UP`) and operationally up (`IFF_RUNNING`: the
//! kernel's operstate is `UP` or `UNKNOWN`, so it has carrier and is not
//! dormant). A veth whose peer is down has `IFF_UP` but not `IFF_RUNNING`
//! (operstate `LOWERLAYERDOWN`) and cannot deliver, so it is not usable.
//!
//! [`LinkWatcher`] keeps the link table of the network namespace it was
//! created in, from an `RTM_GETLINK` dump and the `RTNLGRP_LINK` multicast
//! group (re-dumped when the kernel reports a lost event, `ENOBUFS`).
//! [`LinkWatcher::run`] is a blocking loop for a thread of its own (no async
//! runtime) that applies it to a [`Datapath`] shared behind a mutex until its
//! `stopped` closure says so. Create the watcher and run it in the network namespace
//! of the attached interface: the link table is that namespace's, and the
//! kernel resolves a restored devmap entry's ifindex in the namespace of
//! the thread that writes it. A deleted target stays withdrawn: a re-created
//! interface has a new ifindex and needs [`Datapath::set_redirect_target`].

use std::{collections::BTreeMap, io, os::fd::AsRawFd, sync::Mutex, time::Duration};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{link::LinkMessage, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::{Datapath, Error as DatapathError, TargetChange};

/// `IFF_UP`.
const IFF_UP: u32 = libc::IFF_UP as u32;
/// `IFF_RUNNING`.
const IFF_RUNNING: u32 = libc::IFF_RUNNING as u32;
/// How long [`LinkWatcher::run`] waits for an event before it re-checks
/// whether it is stopped and the target list.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);

/// Whether a redirect target with these `IFF_*` link flags (`None`: the
/// interface does not exist) can receive redirected frames: admin up and
/// operationally up (see the module documentation).
pub fn target_usable(flags: Option<u32>) -> bool {
    flags.is_some_and(|f| f & IFF_UP != 0 && f & IFF_RUNNING != 0)
}

/// Errors of the link watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A netlink operation failed.
    #[error("link watcher: netlink {op}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Updating the devmap failed.
    #[error("link watcher on {iface}")]
    Datapath {
        /// The interface the datapath is attached to (`-` when not attached).
        iface: String,
        /// The failure.
        #[source]
        source: DatapathError,
    },
}

fn nl(op: &'static str) -> impl FnOnce(io::Error) -> WatchError {
    move |source| WatchError::Netlink { op, source }
}

/// The link table of one network namespace, kept current from rtnetlink.
#[derive(Debug)]
pub struct LinkWatcher {
    socket: Socket,
    /// ifindex -> `IFF_*` flags.
    links: BTreeMap<u32, u32>,
    buf: Vec<u8>,
    sequence: u32,
}

impl LinkWatcher {
    /// Subscribes to `RTNLGRP_LINK` in the calling thread's network
    /// namespace and dumps the current link table. Events are read with a
    /// receive timeout of `tick`.
    pub fn new(tick: Duration) -> Result<Self, WatchError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(nl("socket"))?;
        socket.bind_auto().map_err(nl("bind"))?;
        socket
            .add_membership(libc::RTNLGRP_LINK)
            .map_err(nl("join RTNLGRP_LINK"))?;
        set_recv_timeout(&socket, tick).map_err(nl("SO_RCVTIMEO"))?;
        let mut watcher = Self {
            socket,
            links: BTreeMap::new(),
            buf: vec![0; 1 << 16],
            sequence: 0,
        };
        watcher.dump()?;
        Ok(watcher)
    }

    /// The `IFF_*` flags of `ifindex`, `None` when it does not exist.
    pub fn flags(&self, ifindex: u32) -> Option<u32> {
        self.links.get(&ifindex).copied()
    }

    /// Whether `ifindex` is a usable redirect target ([`target_usable`]).
    pub fn usable(&self, ifindex: u32) -> bool {
        target_usable(self.flags(ifindex))
    }

    /// Replaces the link table with a fresh `RTM_GETLINK` dump. Events that
    /// arrive meanwhile are applied in order.
    fn dump(&mut self) -> Result<(), WatchError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.sequence;
        let mut message = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
        );
        message.finalize();
        let mut request = vec![0; message.buffer_len()];
        message.serialize(&mut request);
        self.socket
            .send_to(&request, &SocketAddr::new(0, 0), 0)
            .map_err(nl("send RTM_GETLINK"))?;
        self.links.clear();
        loop {
            match self.receive()? {
                Received::DumpDone => return Ok(()),
                Received::Timeout => {
                    return Err(WatchError::Netlink {
                        op: "RTM_GETLINK dump",
                        source: io::Error::from(io::ErrorKind::TimedOut),
                    })
                }
                Received::Events | Received::Overrun => {}
            }
        }
    }

    /// Reads one datagram (or times out) and applies the link messages in it.
    fn receive(&mut self) -> Result<Received, WatchError> {
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Received::Timeout)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Received::Overrun),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Received::Events),
            Err(e) => return Err(nl("recv")(e)),
        };
        let mut offset = 0;
        let mut done = false;
        while offset < n {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                .map_err(|e| {
                    nl("parse")(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                })?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    self.links
                        .insert(link.header.index, link.header.flags.bits());
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    self.links.remove(&link.header.index);
                }
                NetlinkPayload::Done(_) => done = true,
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(nl("RTM_GETLINK")(io::Error::from_raw_os_error(-code.get())));
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
        Ok(if done {
            Received::DumpDone
        } else {
            Received::Events
        })
    }

    /// Waits up to the receive timeout for link events and applies them.
    /// Returns whether anything was received (a lost-event overrun triggers
    /// a full re-dump).
    pub fn poll(&mut self) -> Result<bool, WatchError> {
        match self.receive()? {
            Received::Timeout => Ok(false),
            Received::Events | Received::DumpDone => Ok(true),
            Received::Overrun => {
                tracing::warn!("link watcher lost rtnetlink events; re-reading every link");
                self.dump()?;
                Ok(true)
            }
        }
    }

    /// Applies the link table to `datapath`'s redirect targets
    /// ([`Datapath::sync_redirect_targets`]) and logs what changed.
    pub fn sync(&self, datapath: &mut Datapath) -> Result<Vec<TargetChange>, WatchError> {
        let changes = datapath
            .sync_redirect_targets(|ifindex| self.usable(ifindex))
            .map_err(|source| WatchError::Datapath {
                iface: datapath
                    .attachment()
                    .map_or_else(|| "-".to_owned(), |a| a.iface.clone()),
                source,
            })?;
        for change in &changes {
            match *change {
                TargetChange::Withdrawn { slot, ifindex } => tracing::warn!(
                    slot,
                    ifindex,
                    flags = ?self.flags(ifindex),
                    "redirect target down or gone: withdrawn, its frames fall back to the stack"
                ),
                TargetChange::Restored { slot, ifindex } => {
                    tracing::info!(slot, ifindex, "redirect target up again: restored")
                }
            }
        }
        Ok(changes)
    }

    /// Keeps `datapath`'s redirect targets in line with their link state
    /// until `stopped()` says so (checked after every batch of events and
    /// every tick, e.g. `|| token.is_cancelled()`): syncs once at start (a target already down is
    /// withdrawn at once), then after every batch of events and every tick
    /// (so targets added meanwhile are checked too). Blocking; run it on a
    /// thread of its own. The lock is held only while the devmap is updated.
    pub fn run(
        mut self,
        datapath: &Mutex<Datapath>,
        stopped: impl Fn() -> bool,
    ) -> Result<(), WatchError> {
        let lock = || {
            datapath
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        self.sync(&mut lock())?;
        while !stopped() {
            self.poll()?;
            self.sync(&mut lock())?;
        }
        Ok(())
    }
}

impl LinkWatcher {
    /// Calls `on_change` each time a link appears, goes away, or becomes
    /// usable or unusable ([`target_usable`]), until `stopped()` says so
    /// (checked every tick) or `on_change` returns false. Other link events
    /// (MTU, statistics, names) are not changes. Blocking; run it on a
    /// thread of its own.
    pub fn run_usability(
        mut self,
        stopped: impl Fn() -> bool,
        mut on_change: impl FnMut() -> bool,
    ) -> Result<(), WatchError> {
        let usable = |w: &Self| -> BTreeMap<u32, bool> {
            w.links
                .iter()
                .map(|(&i, &f)| (i, target_usable(Some(f))))
                .collect()
        };
        let mut before = usable(&self);
        while !stopped() {
            if self.poll()? {
                let now = usable(&self);
                if now != before {
                    before = now;
                    if !on_change() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

enum Received {
    Events,
    DumpDone,
    Timeout,
    Overrun,
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: a valid socket fd and a `timeval` of the size passed; the
    // kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_needs_existence_admin_up_and_running() {
        assert!(!target_usable(None));
        assert!(!target_usable(Some(0)));
        assert!(!target_usable(Some(IFF_UP)), "up without carrier");
        assert!(!target_usable(Some(IFF_RUNNING)), "admin down");
        assert!(target_usable(Some(IFF_UP | IFF_RUNNING)));
        let lower_up = 1 << 16;
        assert!(target_usable(Some(IFF_UP | IFF_RUNNING | lower_up)));
    }
}
