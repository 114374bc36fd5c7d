//! One rtnetlink request and its replies, for the crates that configure
//! links (XDP attachments here, SR-IOV VFs and namespace moves in the
//! runtime). No `ip` shell-out.

use std::io;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Sends `msg` with header `flags` on a fresh `NETLINK_ROUTE` socket and
/// collects the replies: with `NLM_F_ACK` up to the acknowledgement, with
/// `NLM_F_DUMP` up to `NLMSG_DONE`, else the first reply. The kernel's
/// refusal is its errno.
pub fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let until_end = flags & (NLM_F_ACK | NLM_F_DUMP) != 0;
    let mut out = Vec::new();
    let mut rbuf = vec![0u8; 1 << 16];
    loop {
        let n = sock.recv(&mut &mut rbuf[..], 0)?;
        let mut off = 0;
        while off < n {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(out),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::InnerMessage(inner) => {
                    out.push(inner);
                    if !until_end {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}
