//! RDMA: soft-RoCE (rxe) links over RDMA netlink (`RDMA_NLDEV_CMD_NEWLINK`
//! / `DELLINK`, the interface `rdma link add` uses; the old module parameter
//! is gone in 6.x), the RDMA subsystem's network-namespace mode
//! (`RDMA_NLDEV_CMD_SYS_GET/SET`), and the devices libibverbs sees
//! (`rdma-sys`). The messages are built here: no crate covers NETLINK_RDMA.

use std::ffi::CStr;

use netlink_sys::{Socket, SocketAddr};

/// `NETLINK_RDMA`.
const NETLINK_RDMA: isize = 20;
/// `RDMA_NL_NLDEV` client.
const RDMA_NL_NLDEV: u16 = 5;
const CMD_GET: u16 = 1;
const CMD_NEWLINK: u16 = 3;
const CMD_DELLINK: u16 = 4;
const CMD_SYS_GET: u16 = 6;
const CMD_SYS_SET: u16 = 7;
const ATTR_DEV_INDEX: u16 = 1;
const ATTR_DEV_NAME: u16 = 2;
const ATTR_NDEV_NAME: u16 = 51;
const ATTR_LINK_TYPE: u16 = 65;
const ATTR_NETNS_MODE: u16 = 66;
const CMD_SET: u16 = 2;
const ATTR_NET_NS_FD: u16 = 68;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Why an RDMA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// The kernel refused or the socket failed.
    #[error("RDMA netlink {op} failed")]
    Netlink {
        /// What was asked.
        op: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A reply that does not parse.
    #[error("RDMA netlink {op}: malformed reply")]
    Malformed {
        /// What was asked.
        op: String,
    },
    /// No such RDMA device.
    #[error("no RDMA device {0}")]
    NoDevice(String),
    /// libibverbs failed.
    #[error("libibverbs: ibv_get_device_list failed")]
    Verbs(#[source] std::io::Error),
}

type Result<T> = std::result::Result<T, RdmaError>;

fn msg_type(cmd: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) | cmd
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink message: header plus attributes.
fn message(cmd: u16, flags: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, p) in attrs {
        push_attr(&mut body, *t, p);
    }
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&msg_type(cmd).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id
    m.extend_from_slice(&body);
    m
}

/// Attributes of one reply payload: `(type, payload)`.
pub fn parse_attrs(mut b: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        out.push((ty, &b[4..len]));
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or(&[]);
    }
    Some(out)
}

/// Sends one request and collects the payloads of its replies.
fn transact(op: &str, req: &[u8], dump: bool) -> Result<Vec<Vec<u8>>> {
    let err = |source: std::io::Error| RdmaError::Netlink {
        op: op.to_owned(),
        source,
    };
    let mut sock = Socket::new(NETLINK_RDMA).map_err(err)?;
    sock.bind_auto().map_err(err)?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(err)?;
    sock.send(req, 0).map_err(err)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0).map_err(err)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                return Err(RdmaError::Malformed { op: op.to_owned() });
            }
            let payload = &buf[off + 16..off + len];
            match ty {
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(
                        payload
                            .get(..4)
                            .ok_or_else(|| RdmaError::Malformed { op: op.to_owned() })?
                            .try_into()
                            .unwrap(),
                    );
                    return if code == 0 {
                        Ok(out)
                    } else {
                        Err(err(std::io::Error::from_raw_os_error(-code)))
                    };
                }
                NLMSG_DONE => return Ok(out),
                _ => {
                    out.push(payload.to_vec());
                    if !dump {
                        return Ok(out);
                    }
                }
            }
            off += (len + 3) & !3;
        }
    }
}

/// An RDMA device as RDMA netlink lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaLink {
    /// Kernel index.
    pub index: u32,
    /// Name (`rxe0`, `mlx5_0`).
    pub name: String,
}

/// Every RDMA device (`RDMA_NLDEV_CMD_GET`, dump).
pub fn devices() -> Result<Vec<RdmaLink>> {
    let req = message(CMD_GET, NLM_F_REQUEST | NLM_F_DUMP, &[]);
    let mut out = Vec::new();
    for p in transact("get devices", &req, true)? {
        let attrs = parse_attrs(&p).ok_or_else(|| RdmaError::Malformed {
            op: "get devices".into(),
        })?;
        let index = attrs
            .iter()
            .find(|(t, _)| *t == ATTR_DEV_INDEX)
            .and_then(|(_, v)| Some(u32::from_ne_bytes((*v).get(..4)?.try_into().ok()?)));
        let name = attrs
            .iter()
            .find(|(t, _)| *t == ATTR_DEV_NAME)
            .map(|(_, v)| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned());
        if let (Some(index), Some(name)) = (index, name) {
            out.push(RdmaLink { index, name });
        }
    }
    Ok(out)
}

/// Creates a soft-RoCE device `name` over netdev `netdev` (the kernel loads
/// `rdma_rxe` on demand through modprobe).
pub fn add_rxe(name: &str, netdev: &str) -> Result<()> {
    tracing::info!(name, netdev, "creating soft-RoCE device");
    let req = message(
        CMD_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        &[
            (ATTR_DEV_NAME, cstr(name)),
            (ATTR_LINK_TYPE, cstr("rxe")),
            (ATTR_NDEV_NAME, cstr(netdev)),
        ],
    );
    transact(&format!("add rxe link {name} on {netdev}"), &req, false).map(drop)
}

/// Deletes the RDMA link `name` (a soft-RoCE or siw device).
pub fn delete_link(name: &str) -> Result<()> {
    let dev = devices()?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| RdmaError::NoDevice(name.to_owned()))?;
    let req = message(
        CMD_DELLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        &[(ATTR_DEV_INDEX, dev.index.to_ne_bytes().to_vec())],
    );
    transact(&format!("delete link {name}"), &req, false).map(drop)
}

/// The RDMA subsystem's netns mode: `true` shared, `false` exclusive.
pub fn netns_shared() -> Result<bool> {
    let req = message(CMD_SYS_GET, NLM_F_REQUEST, &[]);
    let replies = transact("get netns mode", &req, false)?;
    let p = replies.first().ok_or_else(|| RdmaError::Malformed {
        op: "get netns mode".into(),
    })?;
    let attrs = parse_attrs(p).ok_or_else(|| RdmaError::Malformed {
        op: "get netns mode".into(),
    })?;
    attrs
        .iter()
        .find(|(t, _)| *t == ATTR_NETNS_MODE)
        .and_then(|(_, v)| v.first())
        .map(|&m| m != 0)
        .ok_or_else(|| RdmaError::Malformed {
            op: "get netns mode".into(),
        })
}

/// Sets the RDMA subsystem's netns mode (only possible while no RDMA
/// device lives in another namespace).
pub fn set_netns_shared(shared: bool) -> Result<()> {
    let req = message(
        CMD_SYS_SET,
        NLM_F_REQUEST | NLM_F_ACK,
        &[(ATTR_NETNS_MODE, vec![u8::from(shared)])],
    );
    transact("set netns mode", &req, false).map(drop)
}

/// Moves the RDMA device `name` into the network namespace `netns` (an
/// open `/proc/<pid>/ns/net` or `/run/netns/<name>`): `RDMA_NLDEV_CMD_SET`
/// with `RDMA_NLDEV_NET_NS_FD`. The subsystem must be in exclusive mode
/// ([`set_netns_shared`]`(false)`); the device comes back to the initial
/// namespace when that namespace goes away.
pub fn move_to_netns(name: &str, netns: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let dev = devices()?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| RdmaError::NoDevice(name.to_owned()))?;
    tracing::info!(name, "moving RDMA device into a network namespace");
    let fd = u32::try_from(netns.as_raw_fd()).unwrap_or_default();
    let req = message(
        CMD_SET,
        NLM_F_REQUEST | NLM_F_ACK,
        &[
            (ATTR_DEV_INDEX, dev.index.to_ne_bytes().to_vec()),
            (ATTR_NET_NS_FD, fd.to_ne_bytes().to_vec()),
        ],
    );
    transact(&format!("move {name} to a network namespace"), &req, false).map(drop)
}

/// Moves RDMA device `name` out of the network namespace `from` into
/// `to` (exclusive netns mode; the request is made from inside `from`,
/// which needs `CAP_SYS_ADMIN`).
pub fn move_from_netns(
    from: std::os::fd::BorrowedFd<'_>,
    name: &str,
    to: std::os::fd::BorrowedFd<'_>,
) -> Result<()> {
    crate::nsenter::in_netns(from, || move_to_netns(name, to)).map_err(|source| {
        RdmaError::Netlink {
            op: format!("enter the network namespace of {name}"),
            source,
        }
    })?
}

/// Names of the devices libibverbs sees (`ibv_get_device_list`).
pub fn verbs_devices() -> Result<Vec<String>> {
    let mut n: i32 = 0;
    // SAFETY: `n` is a valid out-pointer; the returned list is checked for
    // null and freed below with `ibv_free_device_list`.
    let list = unsafe { rdma_sys::ibv_get_device_list(&mut n) };
    if list.is_null() {
        return Err(RdmaError::Verbs(std::io::Error::last_os_error()));
    }
    let mut names = Vec::with_capacity(n.max(0) as usize);
    for i in 0..n.max(0) as usize {
        // SAFETY: `list` holds `n` valid device pointers (libibverbs'
        // contract), and each device's name is a NUL-terminated string
        // owned by the device, valid until the list is freed.
        let name = unsafe {
            let dev = *list.add(i);
            CStr::from_ptr(rdma_sys::ibv_get_device_name(dev))
        };
        names.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: `list` came from `ibv_get_device_list` and is freed once.
    unsafe { rdma_sys::ibv_free_device_list(list) };
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_as_the_kernel_expects() {
        let m = message(
            CMD_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &[(ATTR_DEV_NAME, cstr("rxe0")), (ATTR_LINK_TYPE, cstr("rxe"))],
        );
        // Header: length, type (client 5 << 10 | 3), flags.
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 5 * 1024 + 3);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x5);
        let attrs = parse_attrs(&m[16..]).unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (ATTR_DEV_NAME, &b"rxe0\0"[..]));
        assert_eq!(attrs[1], (ATTR_LINK_TYPE, &b"rxe\0"[..]));
        assert_eq!(m.len() % 4, 0);
    }

    #[test]
    fn attribute_parsing_rejects_garbage() {
        assert_eq!(parse_attrs(&[]).unwrap().len(), 0);
        assert!(
            parse_attrs(&[8, 0, 1, 0, 1, 2]).is_none(),
            "length past the end"
        );
        assert!(
            parse_attrs(&[2, 0, 1, 0]).is_none(),
            "length below the header"
        );
    }
}
