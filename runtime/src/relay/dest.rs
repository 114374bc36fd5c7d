//! The relay's destinations and their delivery through io_uring.
//!
//! A datagram destination (UDP, Unix) is a connected socket; payloads go
//! as `IORING_OP_SENDMSG` with `MSG_DONTWAIT` on the queue thread's
//! tokio-uring ring, gathered from the UMEM frames that hold them (no copy
//! in user space; the op owns the frames until its completion, then they
//! go back to the fill ring). To UDP, a run of payloads of one size (the
//! last may be shorter) goes as one UDP GSO send (`UDP_SEGMENT`): the
//! kernel cuts it into datagrams of that size, so the route, the socket
//! lock and the send path are paid once per run rather than per datagram;
//! the consumer receives the same datagrams either way. A kernel or path
//! that refuses GSO (`EINVAL` or `EMSGSIZE`: a segment larger than the
//! path's MTU allows) turns it off for payloads that large and the run is
//! sent again a datagram at a time. To a Unix socket, each payload is one send.
//! A batch's sends are pushed onto the submission queue together and go
//! to the kernel in one `io_uring_enter` when the thread waits for the
//! completions. `MSG_DONTWAIT` makes a full receiver fail the send at once
//! (`EAGAIN`, counted as a drop) instead of parking it, so no frame waits
//! on a consumer.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use griffin_ebpf::afxdp::Frame;
use serde::{Deserialize, Serialize};
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

/// Where a relay delivers the UDP payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum DestinationSpec {
    /// UDP to `addr`, sent from a socket opened in the network namespace
    /// `netns` (a path such as `/run/netns/NAME` or `/proc/PID/ns/net`;
    /// absent: the daemon's own).
    Udp {
        /// The consumer's address and port.
        addr: SocketAddr,
        /// The network namespace to open the socket in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<PathBuf>,
    },
    /// A Unix datagram socket bound at `path` by the consumer.
    Unix {
        /// The consumer's socket.
        path: PathBuf,
    },
    /// A shared-memory ring ([`super::shm`]) whose memfd is handed out on
    /// the Unix stream socket `path` (one ring per queue: `path` gets the
    /// suffix `.QUEUE`).
    Shm {
        /// The socket handing out the memfd.
        path: PathBuf,
        /// Slots in the ring (a power of two).
        #[serde(default = "default_slots")]
        slots: u32,
        /// Bytes per slot (a multiple of 8; payloads up to `slot_size - 4`).
        #[serde(default = "default_slot_size")]
        slot_size: u32,
    },
}

fn default_slots() -> u32 {
    4096
}

fn default_slot_size() -> u32 {
    2048
}

impl std::fmt::Display for DestinationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp { addr, netns: None } => write!(f, "udp {addr}"),
            Self::Udp {
                addr,
                netns: Some(ns),
            } => write!(f, "udp {addr} in {}", ns.display()),
            Self::Unix { path } => write!(f, "unix {}", path.display()),
            Self::Shm { path, .. } => write!(f, "shm {}", path.display()),
        }
    }
}

/// Opens a UDP socket connected to `addr` on a thread that entered `netns`
/// (setns affects only that thread); the socket keeps its namespace when
/// used from any other.
pub fn udp_socket_in(addr: SocketAddr, netns: Option<&Path>) -> io::Result<std::net::UdpSocket> {
    let open = move || -> io::Result<std::net::UdpSocket> {
        let any: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(any)?;
        socket.connect(addr)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    let Some(netns) = netns else {
        return open();
    };
    let ns = std::fs::File::open(netns)?;
    crate::nsenter::in_netns(std::os::fd::AsFd::as_fd(&ns), open)?
}

/// `UDP_SEGMENT` of `linux/udp.h` (`SOL_UDP`): the segment size of a UDP
/// GSO send.
const UDP_SEGMENT: libc::c_int = 103;

/// Datagrams in one GSO send at most (`UDP_MAX_SEGMENTS` was 64 when
/// UDP GSO came, Linux 4.18).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Payload bytes in one GSO send at most: an IPv4 packet's 65,535 less
/// its IP and UDP headers, with room for IP options.
pub const GSO_MAX_BYTES: usize = 65_535 - 60 - 8;

/// How many of the payloads whose sizes `sizes` gives, from the first, go
/// as one UDP GSO send (pure): a run of the first one's size, the last
/// possibly shorter but not empty, at most [`GSO_MAX_SEGMENTS`] and
/// [`GSO_MAX_BYTES`]; 1 (a plain send) when the first is empty, not below
/// `gso_below` or too large for a segment size; 0 when there is none.
pub fn gso_run(mut sizes: impl Iterator<Item = usize>, gso_below: usize) -> usize {
    let Some(size) = sizes.next() else {
        return 0;
    };
    if size == 0 || size >= gso_below || size > usize::from(u16::MAX) {
        return 1;
    }
    let (mut n, mut total) = (1, size);
    for len in sizes {
        if n == GSO_MAX_SEGMENTS || len > size || len == 0 || total + len > GSO_MAX_BYTES {
            break;
        }
        n += 1;
        total += len;
        if len < size {
            break;
        }
    }
    n
}

/// Points `hdr`'s control data at `buf`, holding a `UDP_SEGMENT` message
/// of `segment` bytes: `hdr` then describes a UDP GSO send (for as long
/// as `buf` stays where it is).
pub fn set_gso_segment(hdr: &mut libc::msghdr, buf: &mut [u64; 4], segment: u16) {
    *buf = [0; 4];
    hdr.msg_control = buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic; the buffer is 32
    // bytes, 8-byte aligned, more than CMSG_SPACE(2) (24), and the header
    // and data are written where CMSG_FIRSTHDR and CMSG_DATA point for a
    // msghdr whose control data is that buffer.
    unsafe {
        hdr.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
    }
}

/// One `sendmsg` of the relay: the payloads of some frames, gathered
/// without a copy from their UMEM chunks, as one datagram or (with a
/// segment size) as one UDP GSO send the kernel cuts into datagrams of
/// that size (the last may be shorter). Boxed, so that the header the
/// submission points to does not move while the op is in flight; kept and
/// reused by the queue thread (no allocation per send once warm).
pub(crate) struct SendBatch {
    hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
    /// `cmsghdr` + `u16` segment size, 8-byte aligned.
    cmsg: [u64; 4],
    /// The frames whose payloads are sent; dropped (their chunks returned)
    /// when the batch is cleared.
    pub(crate) frames: Vec<Frame>,
    fd: Option<Rc<OwnedFd>>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("frames", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    /// An empty batch with room for a GSO send's frames.
    pub(crate) fn new() -> Box<Self> {
        Box::new(Self {
            // SAFETY: msghdr is plain C data; all-zero is a valid value.
            hdr: unsafe { std::mem::zeroed() },
            iov: Vec::with_capacity(GSO_MAX_SEGMENTS),
            cmsg: [0; 4],
            frames: Vec::with_capacity(GSO_MAX_SEGMENTS),
            fd: None,
        })
    }

    /// Drops the frames (their chunks go back) and the socket reference.
    pub(crate) fn clear(&mut self) {
        self.frames.clear();
        self.iov.clear();
        self.fd = None;
    }

    /// Points the header at the frames' payloads, with the segment size
    /// when `gso` (more than one frame) is set.
    fn prepare(&mut self, gso: Option<u16>) {
        self.iov.clear();
        self.iov.extend(self.frames.iter().map(|f| libc::iovec {
            iov_base: f.data().as_ptr().cast_mut().cast(),
            iov_len: f.len(),
        }));
        // SAFETY: as in `new`.
        self.hdr = unsafe { std::mem::zeroed() };
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = self.iov.len();
        if let Some(size) = gso {
            set_gso_segment(&mut self.hdr, &mut self.cmsg, size);
        }
    }
}

/// Turns a send's completion into its result and the batch (the caller
/// counts, then clears and keeps it).
#[derive(Debug)]
pub(crate) struct SendDone;

impl OneshotOutputTransform for SendDone {
    type Output = (io::Result<usize>, Box<SendBatch>);
    type StoredData = Box<SendBatch>;

    fn transform_oneshot_output(
        self,
        data: Box<SendBatch>,
        cqe: io_uring::cqueue::Entry,
    ) -> Self::Output {
        let res = if cqe.result() >= 0 {
            Ok(cqe.result() as usize)
        } else {
            Err(io::Error::from_raw_os_error(-cqe.result()))
        };
        (res, data)
    }
}

/// An in-flight [`send`].
pub(crate) type InFlightSend = tokio_uring::InFlightOneshot<Box<SendBatch>, SendDone>;

/// Puts a `sendmsg(fd, batch, MSG_DONTWAIT)` on the thread's submission
/// queue: one datagram per frame, or with `gso` one UDP GSO send of
/// segments of that size. Must run inside a tokio-uring runtime.
pub(crate) fn send(fd: &Rc<OwnedFd>, mut batch: Box<SendBatch>, gso: Option<u16>) -> InFlightSend {
    batch.prepare(gso);
    batch.fd = Some(Rc::clone(fd));
    let sqe = io_uring::opcode::SendMsg::new(io_uring::types::Fd(fd.as_raw_fd()), &batch.hdr)
        .flags(libc::MSG_DONTWAIT as u32)
        .build();
    // The header, its iovecs and control data are in the box and the
    // payloads in UMEM chunks the batch's frames own: none moves or is
    // freed while the op (which holds the box until the completion) runs.
    UnsubmittedOneshot::new(batch, SendDone, sqe).submit()
}

/// A connected datagram socket (UDP or Unix) a queue thread sends on,
/// reconnected when its consumer went away.
#[derive(Debug)]
pub(crate) struct DatagramDest {
    spec: DestinationSpec,
    fd: Option<Rc<OwnedFd>>,
    last_try: Option<Instant>,
    /// Payloads of fewer bytes than this go as UDP GSO runs (0: none).
    gso_below: usize,
}

/// Time between reconnection attempts to an absent consumer.
pub(crate) const RECONNECT: Duration = Duration::from_millis(100);

impl DatagramDest {
    pub(crate) fn new(spec: DestinationSpec) -> Self {
        let gso_below = if matches!(spec, DestinationSpec::Udp { .. }) {
            usize::MAX
        } else {
            0
        };
        Self {
            spec,
            fd: None,
            last_try: None,
            gso_below,
        }
    }

    /// Payloads of fewer bytes than this go as UDP GSO runs (0: none).
    pub(crate) fn gso_below(&self) -> usize {
        self.gso_below
    }

    /// A GSO send of `segment`-byte datagrams was refused (`EINVAL` or
    /// `EMSGSIZE`: the segment does not fit the path's MTU): payloads that
    /// large go a datagram at a time from now on.
    pub(crate) fn gso_refused(&mut self, segment: usize, e: &io::Error) {
        if segment < self.gso_below {
            tracing::warn!(destination = %self.spec, segment, error = %e, "relay: UDP GSO refused; payloads this large go a datagram at a time");
            self.gso_below = segment;
        }
    }

    fn open(&self) -> io::Result<OwnedFd> {
        match &self.spec {
            DestinationSpec::Udp { addr, netns } => {
                Ok(OwnedFd::from(udp_socket_in(*addr, netns.as_deref())?))
            }
            DestinationSpec::Unix { path } => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(path)?;
                socket.set_nonblocking(true)?;
                Ok(OwnedFd::from(socket))
            }
            DestinationSpec::Shm { .. } => Err(io::Error::other("not a datagram destination")),
        }
    }

    /// The socket, (re)opened at most every [`RECONNECT`]; None while the
    /// consumer is absent.
    pub(crate) fn socket(&mut self) -> Option<Rc<OwnedFd>> {
        if self.fd.is_none() && self.last_try.is_none_or(|t| t.elapsed() >= RECONNECT) {
            self.last_try = Some(Instant::now());
            match self.open() {
                Ok(fd) => {
                    tracing::info!(destination = %self.spec, "relay: consumer connected");
                    self.fd = Some(Rc::new(fd));
                }
                Err(e) => {
                    tracing::debug!(destination = %self.spec, error = %e, "relay: consumer absent");
                }
            }
        }
        self.fd.clone()
    }

    /// Reacts to a failed send: a consumer gone (its socket closed) makes
    /// the next batch reconnect.
    pub(crate) fn failed(&mut self, e: &io::Error) {
        if matches!(
            e.raw_os_error(),
            Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ENOENT | libc::EPIPE)
        ) && matches!(self.spec, DestinationSpec::Unix { .. })
        {
            tracing::info!(destination = %self.spec, "relay: consumer gone");
            self.fd = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_runs() {
        let run = |sizes: &[usize], below| gso_run(sizes.iter().copied(), below);
        assert_eq!(run(&[], usize::MAX), 0);
        assert_eq!(run(&[64, 64, 64, 200], usize::MAX), 3, "a run of one size");
        assert_eq!(
            run(&[64, 64, 10, 64], usize::MAX),
            3,
            "a shorter one ends it"
        );
        assert_eq!(
            run(&[64, 64, 0, 64], usize::MAX),
            2,
            "never an empty last one"
        );
        assert_eq!(run(&[0, 0], usize::MAX), 1);
        assert_eq!(
            run(&[64, 200], usize::MAX),
            1,
            "a longer one is not a segment"
        );
        assert_eq!(run(&[1400; 64], usize::MAX), GSO_MAX_BYTES / 1400, "bytes");
        assert_eq!(run(&[64; 100], usize::MAX), GSO_MAX_SEGMENTS, "segments");
        assert_eq!(run(&[1400, 1400], 1400), 1, "refused at this size");
        assert_eq!(run(&[1399, 1399], 1400), 2);
        assert_eq!(run(&[70_000, 70_000], usize::MAX), 1, "no u16 segment size");
    }

    #[test]
    fn the_segment_control_message() {
        // SAFETY: all-zero is a valid msghdr.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut buf = [0u64; 4];
        set_gso_segment(&mut hdr, &mut buf, 1400);
        assert_eq!(hdr.msg_controllen, 24);
        // SAFETY: set_gso_segment pointed the header at `buf`.
        let c = unsafe { &*libc::CMSG_FIRSTHDR(&hdr) };
        assert_eq!(
            (c.cmsg_level, c.cmsg_type, c.cmsg_len),
            (libc::SOL_UDP, 103, 18)
        );
        let data = &bytes_of(&buf)[16..18];
        assert_eq!(u16::from_ne_bytes([data[0], data[1]]), 1400);
    }

    /// `buf`'s bytes.
    fn bytes_of(buf: &[u64; 4]) -> Vec<u8> {
        buf.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}
