//! Pure parsers for the text formats sysfs and procfs use.
//!
//! Nothing here touches the file system: every function takes the text of an
//! attribute and returns a value or a [`ParseError`]. The discovery code adds
//! the path of the file the text came from.

use std::fmt;

/// Why a piece of sysfs text could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text was empty where a value is required.
    #[error("empty value")]
    Empty,
    /// A number could not be parsed.
    #[error("not a number: {0:?}")]
    Number(String),
    /// A cpulist range was reversed (`5-3`) or otherwise malformed.
    #[error("bad cpulist range: {0:?}")]
    Range(String),
    /// A CPU or node id above [`MAX_CPU_ID`].
    #[error("id {0} is out of range")]
    TooLarge(u64),
    /// A hex mask contained something that is not a hex digit.
    #[error("bad cpumask: {0:?}")]
    Mask(String),
    /// A `KEY=VALUE` line without `=`.
    #[error("bad uevent line: {0:?}")]
    Uevent(String),
    /// A PCI address not of the form `DDDD:BB:DD.F`.
    #[error("bad PCI address: {0:?}")]
    PciAddress(String),
    /// A meminfo line in an unexpected form.
    #[error("bad meminfo line: {0:?}")]
    Meminfo(String),
}

/// The highest CPU (or NUMA node) id accepted. Linux's `NR_CPUS` tops out at
/// 8192; the margin guards against garbage such as `0-4294967295` making us
/// allocate gigabytes.
pub const MAX_CPU_ID: u32 = 65_535;

/// A sorted, de-duplicated list of CPU (or node) ids.
#[derive(
    Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct CpuList(Vec<u32>);

impl CpuList {
    /// An empty list.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds a list from any ids, sorting and de-duplicating them.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v)
    }

    /// The ids, ascending.
    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }

    /// Iterates the ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no id.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `id` is in the list.
    pub fn contains(&self, id: u32) -> bool {
        self.0.binary_search(&id).is_ok()
    }

    /// True when every id of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuList) -> bool {
        self.0.iter().all(|&c| other.contains(c))
    }

    /// True when the two lists share at least one id.
    pub fn intersects(&self, other: &CpuList) -> bool {
        self.0.iter().any(|&c| other.contains(c))
    }
}

impl fmt::Display for CpuList {
    /// Kernel cpulist form: `0-3,8,10-11`; empty list prints nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl fmt::Debug for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuList({self})")
    }
}

fn parse_id(s: &str) -> Result<u32, ParseError> {
    let v: u64 = s.parse().map_err(|_| ParseError::Number(s.to_owned()))?;
    if v > u64::from(MAX_CPU_ID) {
        return Err(ParseError::TooLarge(v));
    }
    Ok(v as u32)
}

/// Parses a kernel cpulist (`0-3,8-11`, `0-31:2/4` stride form too). An empty
/// or whitespace-only text is an empty list: that is what sysfs prints for,
/// e.g., `isolated` or a memory-only NUMA node.
pub fn cpulist(text: &str) -> Result<CpuList, ParseError> {
    let text = text.trim();
    let mut ids = IdSet::default();
    if text.is_empty() {
        return Ok(CpuList::new());
    }
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(ParseError::Range(text.to_owned()));
        }
        let (range, stride) = match part.split_once(':') {
            Some((r, s)) => {
                let (used, group) = s
                    .split_once('/')
                    .ok_or_else(|| ParseError::Range(part.to_owned()))?;
                let used = parse_id(used)?;
                let group = parse_id(group)?;
                if used == 0 || group == 0 || used > group {
                    return Err(ParseError::Range(part.to_owned()));
                }
                (r, Some((used, group)))
            }
            None => (part, None),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (parse_id(a)?, parse_id(b)?),
            None => {
                let v = parse_id(range)?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(ParseError::Range(part.to_owned()));
        }
        match stride {
            None => ids.insert_range(lo, hi),
            Some((used, group)) => {
                let mut base = lo;
                while base <= hi {
                    ids.insert_range(base, base.saturating_add(used - 1).min(hi));
                    base = match base.checked_add(group) {
                        Some(b) => b,
                        None => break,
                    };
                }
            }
        }
    }
    Ok(ids.into_list())
}

/// Ids collected from a cpulist. Ranges may repeat (`0-65535,0-65535,…`),
/// so a plain list could grow with the text, not with the ids: once it
/// would hold more than [`MAX_CPU_ID`] + 1 entries it becomes a bitmap of
/// every possible id (8 KiB), which bounds memory whatever the text.
#[derive(Default)]
struct IdSet {
    list: Vec<u32>,
    bits: Option<Vec<u64>>,
}

impl IdSet {
    const IDS: usize = MAX_CPU_ID as usize + 1;

    fn bitmap(&mut self, more: usize) -> Option<&mut Vec<u64>> {
        if self.bits.is_none() && self.list.len() + more > Self::IDS {
            let mut bits = vec![0u64; Self::IDS / 64];
            for &id in &self.list {
                bits[id as usize / 64] |= 1 << (id % 64);
            }
            self.list = Vec::new();
            self.bits = Some(bits);
        }
        self.bits.as_mut()
    }

    /// `lo..=hi`, both at most [`MAX_CPU_ID`].
    fn insert_range(&mut self, lo: u32, hi: u32) {
        match self.bitmap((hi - lo) as usize + 1) {
            None => self.list.extend(lo..=hi),
            Some(bits) => {
                // Whole words at once: a repeated full range costs 1024
                // stores, not 65,536.
                let mut id = lo;
                while id <= hi {
                    if id.is_multiple_of(64) && hi - id >= 63 {
                        bits[id as usize / 64] = u64::MAX;
                        id += 64;
                    } else {
                        bits[id as usize / 64] |= 1 << (id % 64);
                        id += 1;
                    }
                }
            }
        }
    }

    fn into_list(self) -> CpuList {
        match self.bits {
            None => CpuList::from_ids(self.list),
            Some(bits) => CpuList::from_ids(
                (0..Self::IDS as u32).filter(|&id| bits[id as usize / 64] & (1 << (id % 64)) != 0),
            ),
        }
    }
}

/// Parses a kernel cpumask (`ff,00000001`: comma-separated 32-bit hex words,
/// most significant first).
pub fn cpumask(text: &str) -> Result<CpuList, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(CpuList::new());
    }
    let words: Vec<&str> = text.split(',').collect();
    if words.len() > (MAX_CPU_ID as usize + 1) / 32 {
        return Err(ParseError::Mask(text.to_owned()));
    }
    let mut ids = Vec::new();
    for (i, word) in words.iter().rev().enumerate() {
        if word.is_empty() || word.len() > 8 {
            return Err(ParseError::Mask(text.to_owned()));
        }
        let v = u32::from_str_radix(word, 16).map_err(|_| ParseError::Mask(text.to_owned()))?;
        for bit in 0..32 {
            if v & (1 << bit) != 0 {
                ids.push(i as u32 * 32 + bit);
            }
        }
    }
    Ok(CpuList::from_ids(ids))
}

/// Parses a hexadecimal sysfs attribute such as `vendor` (`0x8086`) or
/// `class` (`0x020000`). The `0x` prefix is optional.
pub fn hex_u32(text: &str) -> Result<u32, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(digits, 16).map_err(|_| ParseError::Number(t.to_owned()))
}

/// Parses a decimal attribute (`sriov_totalvfs`, `core_id`, `level`).
pub fn dec_u32(text: &str) -> Result<u32, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    t.parse().map_err(|_| ParseError::Number(t.to_owned()))
}

/// Parses a decimal that may be negative (`numa_node` is `-1` when unknown,
/// `die_id` may be `-1`). Negative values give `None`.
pub fn optional_id(text: &str) -> Result<Option<u32>, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    let v: i64 = t.parse().map_err(|_| ParseError::Number(t.to_owned()))?;
    if v < 0 {
        Ok(None)
    } else if v > i64::from(MAX_CPU_ID) {
        Err(ParseError::TooLarge(v as u64))
    } else {
        Ok(Some(v as u32))
    }
}

/// Parses a NUMA `distance` row (`10 21 31 41`).
pub fn distance_row(text: &str) -> Result<Vec<u32>, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    t.split_whitespace()
        .map(|w| w.parse().map_err(|_| ParseError::Number(w.to_owned())))
        .collect()
}

/// Parses `uevent` text (`KEY=VALUE` per line) into pairs, in order.
pub fn uevent(text: &str) -> Result<Vec<(&str, &str)>, ParseError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .ok_or_else(|| ParseError::Uevent(l.to_owned()))
        })
        .collect()
}

/// Parses a cache `size` attribute (`32K`, `16384K`, `2M`) into bytes.
pub fn size_bytes(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    let (num, mult) = match t.as_bytes()[t.len() - 1] {
        b'K' | b'k' => (&t[..t.len() - 1], 1024),
        b'M' | b'm' => (&t[..t.len() - 1], 1024 * 1024),
        b'G' | b'g' => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    let v: u64 = num.parse().map_err(|_| ParseError::Number(t.to_owned()))?;
    v.checked_mul(mult)
        .ok_or_else(|| ParseError::Number(t.to_owned()))
}

/// Memory of one NUMA node, from `nodeN/meminfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    /// `MemTotal`, bytes.
    pub total_bytes: u64,
    /// `MemFree`, bytes.
    pub free_bytes: u64,
}

/// Parses `nodeN/meminfo` (`Node 0 MemTotal:  1234 kB`) or `/proc/meminfo`
/// (`MemTotal:  1234 kB`). Both `MemTotal` and `MemFree` must be present.
pub fn meminfo(text: &str) -> Result<NodeMemory, ParseError> {
    let mut total = None;
    let mut free = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let key = key.split_whitespace().last().unwrap_or("");
        let slot = match key {
            "MemTotal" => &mut total,
            "MemFree" => &mut free,
            _ => continue,
        };
        let mut it = rest.split_whitespace();
        let num: u64 = it
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ParseError::Meminfo(line.to_owned()))?;
        let mult = match it.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => return Err(ParseError::Meminfo(line.to_owned())),
        };
        *slot = Some(
            num.checked_mul(mult)
                .ok_or_else(|| ParseError::Meminfo(line.to_owned()))?,
        );
    }
    match (total, free) {
        (Some(total_bytes), Some(free_bytes)) => Ok(NodeMemory {
            total_bytes,
            free_bytes,
        }),
        _ => Err(ParseError::Meminfo(
            text.lines().next().unwrap_or("").to_owned(),
        )),
    }
}

/// A PCI function address, `domain:bus:device.function`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI segment (domain); VMD domains go above 0xffff.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl fmt::Debug for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for PciAddress {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        pci_address(s)
    }
}

impl serde::Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        pci_address(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses `0000:3b:00.1` (a domain is required, as sysfs always has it).
pub fn pci_address(text: &str) -> Result<PciAddress, ParseError> {
    let t = text.trim();
    let bad = || ParseError::PciAddress(t.to_owned());
    let (domain, rest) = t.split_once(':').ok_or_else(bad)?;
    let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
    let hex = |s: &str, max_len: usize| -> Result<u32, ParseError> {
        if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(s, 16).map_err(|_| bad())
    };
    let domain = hex(domain, 8)?;
    let bus = hex(bus, 2)? as u8;
    let device = hex(dev, 2)?;
    let function = hex(func, 1)?;
    if device > 0x1f || function > 7 {
        return Err(bad());
    }
    Ok(PciAddress {
        domain,
        bus,
        device: device as u8,
        function: function as u8,
    })
}

/// Where a device sits in `/sys/devices`: its root bus (`pci0000:00`) and
/// the chain of PCI functions from the root bus down to the device itself
/// (the last element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePath {
    /// The host bridge / root bus component, e.g. `pci0000:00`.
    pub root_bus: String,
    /// PCI functions from the root port down to the device (inclusive).
    pub chain: Vec<PciAddress>,
}

/// Splits a sysfs device path (a symlink target such as
/// `../../../devices/pci0000:00/0000:00:1c.0/0000:03:00.0`, or an absolute
/// path) into its root bus and PCI chain. Components after the last PCI
/// function (e.g. `virtio2/net/eth0`) are ignored. Returns `None` when the
/// path does not go through a PCI root bus (virtual devices).
///
/// With nested PCI domains (Intel VMD: `pci0000:00/0000:00:0e.0/pci10000:00/…`)
/// the innermost root bus wins, and the chain restarts below it.
pub fn device_path(target: &str) -> Option<DevicePath> {
    let mut root_bus: Option<&str> = None;
    let mut chain = Vec::new();
    for comp in target.split('/') {
        if let Some(rest) = comp.strip_prefix("pci") {
            if rest.contains(':') && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                root_bus = Some(comp);
                chain.clear();
                continue;
            }
        }
        if root_bus.is_some() {
            match pci_address(comp) {
                Ok(a) => chain.push(a),
                Err(_) if chain.is_empty() => {}
                Err(_) => break,
            }
        }
    }
    let root_bus = root_bus?;
    if chain.is_empty() {
        return None;
    }
    Some(DevicePath {
        root_bus: root_bus.to_owned(),
        chain,
    })
}

/// Parses a link speed attribute (`8.0 GT/s PCIe`, `2.5 GT/s`) into GT/s.
/// `Unknown` (what sysfs prints for a link that is down) gives `None`.
pub fn link_speed(text: &str) -> Result<Option<f32>, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    if t.starts_with("Unknown") {
        return Ok(None);
    }
    let num = t.split_whitespace().next().unwrap_or("");
    num.parse::<f32>()
        .map(Some)
        .map_err(|_| ParseError::Number(t.to_owned()))
}

/// The last path component of a symlink target (`../0000:01:00.1` →
/// `0000:01:00.1`).
pub fn link_basename(target: &str) -> &str {
    target
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
}

/// The name of a netdev's link type, from its `type` attribute (an
/// `ARPHRD_*` number): the names netlink's `IFLA` encapsulation type has in
/// iproute2 and in Go's netlink (`1` → `ether`, `32` → `infiniband`, `772`
/// → `loopback`), which is what sriov-network-device-plugin's `linkTypes`
/// selector compares with; an unnamed number is `unknownN`.
pub fn link_type(text: &str) -> Result<String, ParseError> {
    let t = text.trim();
    let n: u16 = t.parse().map_err(|_| ParseError::Number(t.to_owned()))?;
    Ok(arphrd_name(n)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("unknown{n}")))
}

/// The name of an `ARPHRD_*` link type (see [`link_type`]).
pub fn arphrd_name(n: u16) -> Option<&'static str> {
    Some(match n {
        0 => "generic",
        1 => "ether",
        2 => "eether",
        3 => "ax25",
        4 => "pronet",
        5 => "chaos",
        6 => "ieee802",
        7 => "arcnet",
        8 => "atalk",
        15 => "dlci",
        19 => "atm",
        23 => "metricom",
        24 => "ieee1394",
        32 => "infiniband",
        256 => "slip",
        257 => "cslip",
        258 => "slip6",
        259 => "cslip6",
        260 => "rsrvd",
        264 => "adapt",
        270 => "rose",
        271 => "x25",
        272 => "hwx25",
        512 => "ppp",
        513 => "hdlc",
        516 => "lapb",
        517 => "ddcmp",
        518 => "rawhdlc",
        768 => "ipip",
        769 => "tunnel6",
        770 => "frad",
        771 => "skip",
        772 => "loopback",
        773 => "ltalk",
        774 => "fddi",
        775 => "bif",
        776 => "sit",
        777 => "ip/ddp",
        778 => "gre",
        779 => "pimreg",
        780 => "hippi",
        781 => "ash",
        782 => "econet",
        783 => "irda",
        784 => "fcpp",
        785 => "fcal",
        786 => "fcpl",
        787 => "fcfb0",
        788 => "fcfb1",
        789 => "fcfb2",
        790 => "fcfb3",
        791 => "fcfb4",
        792 => "fcfb5",
        793 => "fcfb6",
        794 => "fcfb7",
        795 => "fcfb8",
        796 => "fcfb9",
        797 => "fcfb10",
        798 => "fcfb11",
        799 => "fcfb12",
        800 => "tr",
        801 => "ieee802.11",
        802 => "ieee802.11/prism",
        803 => "ieee802.11/radiotap",
        804 => "ieee802.15.4",
        65534 => "none",
        65535 => "void",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_are_named_as_netlink_names_them() {
        assert_eq!(link_type("1\n").unwrap(), "ether");
        assert_eq!(link_type("32").unwrap(), "infiniband");
        assert_eq!(link_type("772").unwrap(), "loopback");
        assert_eq!(link_type("65534").unwrap(), "none");
        assert_eq!(link_type("27").unwrap(), "unknown27");
        assert!(link_type("ether").is_err());
        assert!(link_type("70000").is_err());
        assert!(link_type("").is_err());
    }

    #[test]
    fn cpulist_forms() {
        assert_eq!(cpulist("").unwrap(), CpuList::new());
        assert_eq!(cpulist("\n").unwrap(), CpuList::new());
        assert_eq!(cpulist("0").unwrap().as_slice(), &[0]);
        assert_eq!(
            cpulist("0-3,8-11\n").unwrap().as_slice(),
            &[0, 1, 2, 3, 8, 9, 10, 11]
        );
        assert_eq!(cpulist("3,1,2,1").unwrap().as_slice(), &[1, 2, 3]);
        assert_eq!(cpulist("0-7:2/4").unwrap().as_slice(), &[0, 1, 4, 5]);
        assert_eq!(cpulist("0-5:1/2").unwrap().as_slice(), &[0, 2, 4]);
    }

    #[test]
    fn cpulist_rejects_garbage() {
        assert!(matches!(cpulist("3-1"), Err(ParseError::Range(_))));
        assert!(matches!(cpulist("a-b"), Err(ParseError::Number(_))));
        assert!(matches!(cpulist("1,,2"), Err(ParseError::Range(_))));
        assert!(matches!(
            cpulist("0-4294967295"),
            Err(ParseError::TooLarge(_))
        ));
        assert!(matches!(cpulist("-1"), Err(ParseError::Number(_))));
        assert!(matches!(cpulist("0-3:0/4"), Err(ParseError::Range(_))));
    }

    #[test]
    fn cpulist_display_roundtrip() {
        let l = CpuList::from_ids([0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(l.to_string(), "0-3,8,10-11");
        assert_eq!(cpulist(&l.to_string()).unwrap(), l);
        assert_eq!(CpuList::new().to_string(), "");
    }

    #[test]
    fn cpumask_forms() {
        assert_eq!(cpumask("3\n").unwrap().as_slice(), &[0, 1]);
        assert_eq!(cpumask("00000001,00000000").unwrap().as_slice(), &[32]);
        assert_eq!(
            cpumask("ff,00000001").unwrap().as_slice(),
            &[0, 32, 33, 34, 35, 36, 37, 38, 39]
        );
        assert_eq!(cpumask("0").unwrap(), CpuList::new());
        assert!(cpumask("xyz").is_err());
        assert!(cpumask("1,,2").is_err());
        assert!(cpumask("123456789").is_err());
    }

    #[test]
    fn hex_and_dec() {
        assert_eq!(hex_u32("0x8086\n").unwrap(), 0x8086);
        assert_eq!(hex_u32("020000").unwrap(), 0x020000);
        assert!(hex_u32("").is_err());
        assert!(hex_u32("0xzz").is_err());
        assert_eq!(dec_u32(" 7\n").unwrap(), 7);
        assert!(dec_u32("-1").is_err());
        assert_eq!(optional_id("-1\n").unwrap(), None);
        assert_eq!(optional_id("3").unwrap(), Some(3));
        assert!(optional_id("").is_err());
        assert!(optional_id("999999999").is_err());
    }

    #[test]
    fn distances() {
        assert_eq!(distance_row("10 21 31 41\n").unwrap(), vec![10, 21, 31, 41]);
        assert!(distance_row("10 x").is_err());
        assert!(distance_row("").is_err());
    }

    #[test]
    fn uevent_lines() {
        let t = "DRIVER=igb\nPCI_CLASS=20000\nPCI_SLOT_NAME=0000:01:00.0\n\n";
        let kv = uevent(t).unwrap();
        assert_eq!(kv[0], ("DRIVER", "igb"));
        assert_eq!(kv[2], ("PCI_SLOT_NAME", "0000:01:00.0"));
        assert!(uevent("NOEQUALS").is_err());
        assert!(uevent("").unwrap().is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(size_bytes("32K\n").unwrap(), 32 * 1024);
        assert_eq!(size_bytes("2M").unwrap(), 2 * 1024 * 1024);
        assert_eq!(size_bytes("512").unwrap(), 512);
        assert!(size_bytes("K").is_err());
        assert!(size_bytes("").is_err());
    }

    #[test]
    fn meminfo_forms() {
        let node = "Node 1 MemTotal:        1048576 kB\nNode 1 MemFree:          524288 kB\nNode 1 MemUsed: 1 kB\n";
        let m = meminfo(node).unwrap();
        assert_eq!(m.total_bytes, 1024 * 1024 * 1024);
        assert_eq!(m.free_bytes, 512 * 1024 * 1024);
        let proc = "MemTotal:       24576000 kB\nMemFree:        20000000 kB\n";
        assert_eq!(meminfo(proc).unwrap().total_bytes, 24_576_000 * 1024);
        assert!(meminfo("Node 0 MemTotal: 5 kB\n").is_err());
        assert!(meminfo("Node 0 MemTotal: x kB\nNode 0 MemFree: 1 kB").is_err());
    }

    #[test]
    fn pci_addresses() {
        let a = pci_address("0000:3b:00.1").unwrap();
        assert_eq!((a.domain, a.bus, a.device, a.function), (0, 0x3b, 0, 1));
        assert_eq!(a.to_string(), "0000:3b:00.1");
        assert_eq!(
            pci_address("10000:01:00.0").unwrap().to_string(),
            "10000:01:00.0"
        );
        for bad in [
            "",
            "3b:00.1",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "0000:3bb:00.0",
            "0000:3b:00",
            "pci0000:00",
        ] {
            assert!(pci_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_paths() {
        let p = device_path(
            "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/0000:03:00.0",
        )
        .unwrap();
        assert_eq!(p.root_bus, "pci0000:00");
        assert_eq!(p.chain.len(), 4);
        assert_eq!(p.chain[3].to_string(), "0000:03:00.0");
        let virtio = device_path("../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0").unwrap();
        assert_eq!(virtio.chain, vec![pci_address("0000:00:03.0").unwrap()]);
        let vmd = device_path(
            "/sys/devices/pci0000:00/0000:00:0e.0/pci10000:00/10000:00:02.0/10000:01:00.0",
        )
        .unwrap();
        assert_eq!(vmd.root_bus, "pci10000:00");
        assert_eq!(vmd.chain.len(), 2);
        assert!(device_path("../../devices/virtual/net/lo").is_none());
        assert!(device_path("../../devices/pci0000:00").is_none());
    }

    #[test]
    fn link_speeds() {
        assert_eq!(link_speed("8.0 GT/s PCIe\n").unwrap(), Some(8.0));
        assert_eq!(link_speed("2.5 GT/s").unwrap(), Some(2.5));
        assert_eq!(link_speed("Unknown").unwrap(), None);
        assert!(link_speed("fast").is_err());
    }

    #[test]
    fn basenames() {
        assert_eq!(link_basename("../0000:01:00.1"), "0000:01:00.1");
        assert_eq!(link_basename("../../bus/pci/drivers/igb/"), "igb");
        assert_eq!(link_basename(""), "");
    }
}
