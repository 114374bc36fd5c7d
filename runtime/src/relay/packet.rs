//! Where a UDP payload lies in an Ethernet frame (pure).
//!
//! - Ethernet II with up to two VLAN tags (802.1Q `0x8100`, 802.1ad
//!   `0x88a8`), as the classifier parses them.
//! - IPv4: the header length from IHL (options skipped); a fragment (MF set
//!   or a non-zero offset) is refused: only the first fragment carries the
//!   UDP header and the relay does not reassemble.
//! - IPv6: hop-by-hop (0), routing (43) and destination-options (60)
//!   extension headers are skipped; a fragment header (44) is refused, as
//!   are AH/ESP and anything else before UDP.
//! - UDP: the payload is what the UDP length field says, so Ethernet
//!   padding after a short datagram is cut off; a length shorter than the
//!   header or running past the frame is refused. Checksums are not
//!   verified (the NIC or the kernel path before XDP does not either).

use std::ops::Range;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;

/// Why a frame carries no deliverable UDP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotUdp {
    /// Shorter than its headers say.
    Truncated,
    /// Not IPv4 or IPv6 (after at most two VLAN tags).
    NotIp,
    /// An IP packet that is not UDP (or UDP behind a header not skipped).
    NotUdp,
    /// An IP fragment.
    Fragment,
    /// A UDP length that does not fit the frame.
    BadLength,
}

fn be16(frame: &[u8], at: usize) -> Result<u16, NotUdp> {
    frame
        .get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(NotUdp::Truncated)
}

fn byte(frame: &[u8], at: usize) -> Result<u8, NotUdp> {
    frame.get(at).copied().ok_or(NotUdp::Truncated)
}

/// The byte range of the UDP payload in `frame`.
pub fn udp_payload(frame: &[u8]) -> Result<Range<usize>, NotUdp> {
    let mut ethertype = be16(frame, 12)?;
    let mut off = ETH_HLEN;
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = be16(frame, off + 2)?;
            off += 4;
        }
    }
    let udp = match ethertype {
        ETH_P_IP => {
            let vihl = byte(frame, off)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(NotUdp::NotIp);
            }
            let frag = be16(frame, off + 6)?;
            if frag & 0x3fff != 0 {
                return Err(NotUdp::Fragment);
            }
            if byte(frame, off + 9)? != IPPROTO_UDP {
                return Err(NotUdp::NotUdp);
            }
            off + ihl
        }
        ETH_P_IPV6 => {
            if byte(frame, off)? >> 4 != 6 {
                return Err(NotUdp::NotIp);
            }
            let mut next = byte(frame, off + 6)?;
            let mut at = off + 40;
            // A bounded walk: at most eight extension headers.
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        next = byte(frame, at)?;
                        at += (usize::from(byte(frame, at + 1)?) + 1) * 8;
                    }
                    44 => return Err(NotUdp::Fragment),
                    _ => break,
                }
            }
            if next != IPPROTO_UDP {
                return Err(NotUdp::NotUdp);
            }
            at
        }
        _ => return Err(NotUdp::NotIp),
    };
    let len = usize::from(be16(frame, udp + 4)?);
    if len < UDP_HLEN || udp + len > frame.len() {
        return Err(NotUdp::BadLength);
    }
    Ok(udp + UDP_HLEN..udp + len)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use griffin_tests::frames::{eth, ext_hdr, frag_hdr, ipv4, ipv6, tcp, udp, ETH_P_8021AD};
    use proptest::prelude::*;

    use super::*;

    const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn payload_of(frame: &[u8]) -> Result<&[u8], NotUdp> {
        udp_payload(frame).map(|r| &frame[r])
    }

    #[test]
    fn ipv4_udp_payload_without_the_ethernet_padding() {
        let f = eth(&[], ETH_P_IP, &ipv4(17, A4, B4, 0, &udp(1, 2, b"hi")));
        assert_eq!(payload_of(&f), Ok(&b"hi"[..]));
        let mut padded = f.clone();
        padded.resize(60, 0);
        assert_eq!(payload_of(&padded), Ok(&b"hi"[..]));
    }

    #[test]
    fn vlan_tags_and_ipv4_options_are_skipped() {
        let mut ip = ipv4(17, A4, B4, 0, &udp(1, 2, b"tagged"));
        // IHL 6: one word of options (NOPs) before UDP.
        ip[0] = 0x46;
        ip.splice(20..20, [1, 1, 1, 1]);
        let f = eth(&[(ETH_P_8021AD, 10), (0x8100, 20)], ETH_P_IP, &ip);
        assert_eq!(payload_of(&f), Ok(&b"tagged"[..]));
    }

    #[test]
    fn ipv6_extension_headers_are_skipped_and_fragments_refused() {
        let mut body = ext_hdr(60, 0);
        body.extend(ext_hdr(17, 1));
        body.extend(udp(1, 2, b"six"));
        let f = eth(&[], ETH_P_IPV6, &ipv6(0, A6, B6, 0, &body));
        assert_eq!(payload_of(&f), Ok(&b"six"[..]));
        let mut frag = frag_hdr(17, 0, true);
        frag.extend(udp(1, 2, b"x"));
        let f = eth(&[], ETH_P_IPV6, &ipv6(44, A6, B6, 0, &frag));
        assert_eq!(payload_of(&f), Err(NotUdp::Fragment));
    }

    #[test]
    fn other_traffic_is_refused_with_its_reason() {
        let tcp4 = eth(&[], ETH_P_IP, &ipv4(6, A4, B4, 0, &tcp(1, 2)));
        assert_eq!(payload_of(&tcp4), Err(NotUdp::NotUdp));
        assert_eq!(payload_of(&eth(&[], 0x0806, &[0; 28])), Err(NotUdp::NotIp));
        let mut frag4 = ipv4(17, A4, B4, 0, &udp(1, 2, b"frag"));
        frag4[6] = 0x20; // MF
        assert_eq!(
            payload_of(&eth(&[], ETH_P_IP, &frag4)),
            Err(NotUdp::Fragment)
        );
        let mut long = eth(&[], ETH_P_IP, &ipv4(17, A4, B4, 0, &udp(1, 2, b"abc")));
        let n = long.len();
        long[n - 7] = 200; // UDP length low byte: past the frame
        assert_eq!(payload_of(&long), Err(NotUdp::BadLength));
        assert_eq!(payload_of(&[0; 10]), Err(NotUdp::Truncated));
    }

    proptest! {
        /// Any bytes: no panic, and a payload found lies within the frame.
        #[test]
        fn never_panics_and_stays_in_the_frame(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(r) = udp_payload(&frame) {
                prop_assert!(r.start <= r.end && r.end <= frame.len());
            }
        }
    }
}
