//! The relay's destinations and their delivery through io_uring.
//!
//! A datagram destination (UDP, Unix) is a connected socket; each payload
//! goes as one `IORING_OP_SEND` with `MSG_DONTWAIT` on the queue thread's
//! tokio-uring ring, holding the payload's [`Bytes`] (a view of the UMEM
//! frame: no copy in user space) until its completion. A batch is pushed
//! onto the submission queue whole and goes to the kernel in one
//! `io_uring_enter` when the thread waits for the completions.
//! `MSG_DONTWAIT` makes a full receiver fail the send at once (`EAGAIN`,
//! counted as a drop) instead of parking it, so no frame waits on a
//! consumer.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
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

/// What a send op keeps alive until its completion.
#[derive(Debug)]
pub(crate) struct SendData {
    _fd: Rc<OwnedFd>,
    buf: Bytes,
}

/// Turns a send's completion into its result (and the buffer, dropped by
/// the caller: its UMEM frame goes back then).
#[derive(Debug)]
pub(crate) struct SendDone;

impl OneshotOutputTransform for SendDone {
    type Output = (io::Result<usize>, Bytes);
    type StoredData = SendData;

    fn transform_oneshot_output(
        self,
        data: SendData,
        cqe: io_uring::cqueue::Entry,
    ) -> Self::Output {
        let res = if cqe.result() >= 0 {
            Ok(cqe.result() as usize)
        } else {
            Err(io::Error::from_raw_os_error(-cqe.result()))
        };
        (res, data.buf)
    }
}

/// Puts a `send(fd, buf, MSG_DONTWAIT)` on the thread's submission queue.
/// Must run inside a tokio-uring runtime.
pub(crate) fn send(
    fd: &Rc<OwnedFd>,
    buf: Bytes,
) -> tokio_uring::InFlightOneshot<SendData, SendDone> {
    let sqe = io_uring::opcode::Send::new(
        io_uring::types::Fd(fd.as_raw_fd()),
        buf.as_ptr(),
        buf.len() as u32,
    )
    .flags(libc::MSG_DONTWAIT)
    .build();
    // The buffer's bytes do not move while `SendData` (held by the op until
    // the completion) owns the `Bytes`.
    UnsubmittedOneshot::new(
        SendData {
            _fd: Rc::clone(fd),
            buf,
        },
        SendDone,
        sqe,
    )
    .submit()
}

/// A connected datagram socket (UDP or Unix) a queue thread sends on,
/// reconnected when its consumer went away.
#[derive(Debug)]
pub(crate) struct DatagramDest {
    spec: DestinationSpec,
    fd: Option<Rc<OwnedFd>>,
    last_try: Option<Instant>,
}

/// Time between reconnection attempts to an absent consumer.
pub(crate) const RECONNECT: Duration = Duration::from_millis(100);

impl DatagramDest {
    pub(crate) fn new(spec: DestinationSpec) -> Self {
        Self {
            spec,
            fd: None,
            last_try: None,
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
