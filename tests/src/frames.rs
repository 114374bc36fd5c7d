//! Builders for crafted Ethernet frames.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_ARP: u16 = 0x0806;
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Ethernet header with optional VLAN tags (outermost first: (tpid, vid)).
pub fn eth(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Ethernet header between two MACs written `02:00:...` + payload.
pub fn eth_between(dst: &str, src: &str, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mac = |m: &str| -> Vec<u8> {
        m.split(':')
            .map(|b| u8::from_str_radix(b, 16).expect("a MAC in hex"))
            .collect()
    };
    let mut f = mac(dst);
    f.extend(mac(src));
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header (no options) + payload, with a correct total length and checksum.
pub fn ipv4(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, tos: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 header + payload (`payload` starts with the extension headers, if any).
pub fn ipv6(nexthdr: u8, src: Ipv6Addr, dst: Ipv6Addr, tclass: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60 | (tclass >> 4), tclass << 4, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.push(nexthdr);
    h.push(64);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// Generic IPv6 extension header (hop-by-hop, routing, destination options)
/// of `8 * (len_units + 1)` bytes.
pub fn ext_hdr(nexthdr: u8, len_units: u8) -> Vec<u8> {
    let mut h = vec![0u8; 8 * (usize::from(len_units) + 1)];
    h[0] = nexthdr;
    h[1] = len_units;
    // Pad options: PadN covering the rest of the header.
    h[2] = 1;
    h[3] = (h.len() - 4) as u8;
    h
}

/// IPv6 fragment header; `offset` in 8-byte units.
pub fn frag_hdr(nexthdr: u8, offset: u16, more: bool) -> Vec<u8> {
    let field = (offset << 3) | u16::from(more);
    let mut h = vec![nexthdr, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = 0x02; // SYN
    h
}

pub const V4_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7);

/// A well-formed IPv4/UDP frame.
pub fn udp4(tags: &[(u16, u16)], dport: u16) -> Vec<u8> {
    eth(
        tags,
        ETH_P_IP,
        &ipv4(UDP, V4_SRC, V4_DST, 0, &udp(40000, dport, b"griffin")),
    )
}

/// A well-formed IPv6/UDP frame.
pub fn udp6(dport: u16) -> Vec<u8> {
    eth(
        &[],
        ETH_P_IPV6,
        &ipv6(UDP, V6_SRC, V6_DST, 0, &udp(40000, dport, b"griffin")),
    )
}

/// Deterministic pseudo-random bytes (xorshift), for garbage frames.
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
