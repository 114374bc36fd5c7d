//! Classification rules and prefix sets, and their encoding into map values.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    str::FromStr,
};

use crate::types::{self, match_flags, GriffinRule, MAX_PREFIX_SETS, MAX_RULES};

/// What to do with a frame that a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand the frame to the kernel stack (also the default when no rule matches).
    Pass,
    /// Drop the frame.
    Drop,
    /// Redirect out of the interface stored at `slot` of the devmap
    /// (see [`crate::Datapath::set_redirect_target`]).
    Redirect {
        /// Devmap key.
        slot: u32,
    },
    /// Redirect to the AF_XDP socket stored at `queue` of the xskmap; `None`
    /// uses the queue the frame arrived on.
    Xsk {
        /// Xskmap key.
        queue: Option<u32>,
    },
    /// Redirect to another CPU through the cpumap (see [`crate::Datapath::set_cpu_target`]).
    Cpu {
        /// Cpumap key (the CPU number).
        cpu: u32,
    },
}

impl Action {
    fn encode(self) -> (u8, u32) {
        match self {
            Self::Pass => (types::action::PASS, 0),
            Self::Drop => (types::action::DROP, 0),
            Self::Redirect { slot } => (types::action::REDIRECT, slot),
            Self::Xsk { queue } => (types::action::XSK, queue.unwrap_or(types::TARGET_RX_QUEUE)),
            Self::Cpu { cpu } => (types::action::CPU, cpu),
        }
    }
}

/// One classification rule. Unset match fields match everything; a rule with
/// no match field matches every well-formed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Counter slot, `< MAX_RULES`, unique in a rule set.
    pub id: u32,
    /// Lower values are checked first; ties keep the order given.
    pub priority: u32,
    /// Outer (first) VLAN id of the ingress frame; untagged frames never match.
    pub vlan: Option<u16>,
    /// IP protocol of the transport header (after IPv6 extension headers).
    pub ip_proto: Option<u8>,
    /// Inclusive TCP/UDP destination port range; non-TCP/UDP frames and
    /// non-first fragments never match.
    pub dst_ports: Option<RangeInclusive<u16>>,
    /// Source address in this prefix set (see [`PrefixSets`]).
    pub src_set: Option<u8>,
    /// Destination address in this prefix set.
    pub dst_set: Option<u8>,
    /// DSCP (6 bits) of the IPv4 TOS / IPv6 traffic class.
    pub dscp: Option<u8>,
    /// What to do on a match.
    pub action: Action,
}

impl Rule {
    /// A rule matching everything, to be narrowed with the builder methods.
    pub fn new(id: u32, priority: u32, action: Action) -> Self {
        Self {
            id,
            priority,
            vlan: None,
            ip_proto: None,
            dst_ports: None,
            src_set: None,
            dst_set: None,
            dscp: None,
            action,
        }
    }

    /// Matches the outer VLAN id.
    pub fn vlan(mut self, vlan: u16) -> Self {
        self.vlan = Some(vlan);
        self
    }

    /// Matches the IP protocol (`libc::IPPROTO_UDP` etc.).
    pub fn ip_proto(mut self, proto: u8) -> Self {
        self.ip_proto = Some(proto);
        self
    }

    /// Matches a destination port range.
    pub fn dst_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.dst_ports = Some(ports);
        self
    }

    /// Matches sources in a prefix set.
    pub fn src_set(mut self, set: u8) -> Self {
        self.src_set = Some(set);
        self
    }

    /// Matches destinations in a prefix set.
    pub fn dst_set(mut self, set: u8) -> Self {
        self.dst_set = Some(set);
        self
    }

    /// Matches the DSCP.
    pub fn dscp(mut self, dscp: u8) -> Self {
        self.dscp = Some(dscp);
        self
    }

    /// Checks the fields and encodes the rule as the program reads it.
    pub fn encode(&self) -> Result<GriffinRule, RuleError> {
        let invalid = |reason: String| RuleError {
            id: self.id,
            reason,
        };
        if self.id >= MAX_RULES {
            return Err(invalid(format!("id must be below {MAX_RULES}")));
        }
        let mut out = GriffinRule {
            id: self.id,
            ..GriffinRule::default()
        };
        if let Some(vlan) = self.vlan {
            if vlan > 0x0fff {
                return Err(invalid(format!("VLAN id {vlan} exceeds 4095")));
            }
            out.match_flags |= match_flags::VLAN;
            out.vlan = vlan;
        }
        if let Some(proto) = self.ip_proto {
            out.match_flags |= match_flags::PROTO;
            out.ip_proto = proto;
        }
        if let Some(ports) = &self.dst_ports {
            if ports.start() > ports.end() {
                return Err(invalid(format!("empty port range {ports:?}")));
            }
            out.match_flags |= match_flags::DPORT;
            out.dport_lo = *ports.start();
            out.dport_hi = *ports.end();
        }
        for (set, flag, field) in [
            (self.src_set, match_flags::SRC, &mut out.src_set),
            (self.dst_set, match_flags::DST, &mut out.dst_set),
        ] {
            if let Some(set) = set {
                if set >= MAX_PREFIX_SETS {
                    return Err(invalid(format!(
                        "prefix set {set} must be below {MAX_PREFIX_SETS}"
                    )));
                }
                out.match_flags |= flag;
                *field = set;
            }
        }
        if let Some(dscp) = self.dscp {
            if dscp > 63 {
                return Err(invalid(format!("DSCP {dscp} exceeds 63")));
            }
            out.match_flags |= match_flags::DSCP;
            out.dscp = dscp;
        }
        (out.action, out.target) = self.action.encode();
        Ok(out)
    }
}

/// A rule that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {id}: {reason}")]
pub struct RuleError {
    /// The rule's id.
    pub id: u32,
    /// What is wrong.
    pub reason: String,
}

/// Sorts `rules` by priority (stable) and encodes them, rejecting duplicate
/// ids and more than [`MAX_RULES`] rules.
pub fn encode_rules(rules: &[Rule]) -> Result<Vec<GriffinRule>, RuleError> {
    if rules.len() > MAX_RULES as usize {
        return Err(RuleError {
            id: rules[MAX_RULES as usize].id,
            reason: format!("more than {MAX_RULES} rules"),
        });
    }
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by_key(|rule| rule.priority);
    let mut seen = BTreeSet::new();
    sorted
        .into_iter()
        .map(|rule| {
            if !seen.insert(rule.id) {
                return Err(RuleError {
                    id: rule.id,
                    reason: "duplicate rule id".to_owned(),
                });
            }
            rule.encode()
        })
        .collect()
}

/// An IPv4 or IPv6 prefix (`198.18.0.0/15`, `2001:db8::/32`); host bits are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len` (host bits of `addr` cleared).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError(format!("{addr}/{len}: length exceeds {max}")));
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Self { addr, len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this prefix contains `other` (same family, at most as long).
    pub fn contains(&self, other: &Prefix) -> bool {
        if self.len > other.len {
            return false;
        }
        match (self.addr, other.addr) {
            (IpAddr::V4(_), IpAddr::V4(o)) => {
                Prefix::new(IpAddr::V4(o), self.len).is_ok_and(|p| p.addr == self.addr)
            }
            (IpAddr::V6(_), IpAddr::V6(o)) => {
                Prefix::new(IpAddr::V6(o), self.len).is_ok_and(|p| p.addr == self.addr)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PrefixError(format!("{s:?} is not ADDR/LEN"));
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (
                addr.parse::<IpAddr>().map_err(|_| bad())?,
                Some(len.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let len = len.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Prefix::new(addr, len)
    }
}

/// An invalid prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix: {0}")]
pub struct PrefixError(String);

/// Named-by-number sets of prefixes that rules match source/destination
/// addresses against (`Rule::src_set`, `Rule::dst_set`); an address is in a
/// set when any of the set's prefixes contains it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixSets {
    prefixes: BTreeMap<Prefix, u64>,
}

impl PrefixSets {
    /// No prefixes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `prefix` to `set` (`< MAX_PREFIX_SETS`).
    pub fn insert(&mut self, set: u8, prefix: Prefix) -> Result<(), PrefixError> {
        if set >= MAX_PREFIX_SETS {
            return Err(PrefixError(format!(
                "set {set} must be below {MAX_PREFIX_SETS}"
            )));
        }
        *self.prefixes.entry(prefix).or_default() |= 1 << set;
        Ok(())
    }

    /// The LPM trie entries: each stored prefix with the union of the sets of
    /// every stored prefix containing it, so the longest match in the kernel
    /// yields every set the address belongs to.
    pub fn entries(&self) -> Vec<(Prefix, u64)> {
        lpm_values(&self.prefixes).into_iter().collect()
    }

    /// The members of each set that has any: its prefixes that no other
    /// prefix of the set contains (two sets with the same members hold the
    /// same addresses).
    pub fn members(&self) -> BTreeMap<u8, BTreeSet<Prefix>> {
        let mut sets: BTreeMap<u8, Vec<Prefix>> = BTreeMap::new();
        for (prefix, bits) in &self.prefixes {
            for set in 0..MAX_PREFIX_SETS {
                if bits & (1 << set) != 0 {
                    sets.entry(set).or_default().push(*prefix);
                }
            }
        }
        sets.into_iter()
            .map(|(set, prefixes)| (set, outermost(prefixes)))
            .collect()
    }
}

impl Prefix {
    /// This prefix cut to `len` bits (`len` at most its own length).
    fn truncated(&self, len: u8) -> Self {
        Self::new(self.addr, len.min(self.len)).unwrap_or(*self)
    }

    /// The prefixes containing this one, shortest first, itself last.
    fn outer(&self) -> impl Iterator<Item = Prefix> + '_ {
        (0..=self.len).map(|len| self.truncated(len))
    }
}

/// The prefixes of `prefixes` that no other of them contains.
pub fn outermost(prefixes: impl IntoIterator<Item = Prefix>) -> BTreeSet<Prefix> {
    let all: BTreeSet<Prefix> = prefixes.into_iter().collect();
    all.iter()
        .filter(|p| !p.outer().any(|o| o != **p && all.contains(&o)))
        .copied()
        .collect()
}

/// LPM trie values for `keys` (prefix -> its own set bits): each key with
/// the union of the bits of every key containing it.
pub fn lpm_values(keys: &BTreeMap<Prefix, u64>) -> BTreeMap<Prefix, u64> {
    keys.keys()
        .map(|prefix| {
            let bits = prefix
                .outer()
                .filter_map(|o| keys.get(&o))
                .fold(0, |acc, bits| acc | bits);
            (*prefix, bits)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_normalise() {
        let p: Prefix = "198.19.48.3/15".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.0.0/15");
        let p: Prefix = "2001:db8::1/32".parse().unwrap();
        assert_eq!(p.to_string(), "2001:db8::/32");
        assert_eq!("0.0.0.0/0".parse::<Prefix>().unwrap().prefix_len(), 0);
        assert!("198.18.0.0/33".parse::<Prefix>().is_err());
        assert!("nonsense".parse::<Prefix>().is_err());
    }

    #[test]
    fn nested_prefixes_inherit_outer_sets() {
        let mut sets = PrefixSets::new();
        sets.insert(0, "198.18.0.0/15".parse().unwrap()).unwrap();
        sets.insert(1, "198.19.0.0/16".parse().unwrap()).unwrap();
        sets.insert(2, "2001:db8::/32".parse().unwrap()).unwrap();
        let entries: BTreeMap<String, u64> = sets
            .entries()
            .into_iter()
            .map(|(p, s)| (p.to_string(), s))
            .collect();
        assert_eq!(entries["198.18.0.0/15"], 0b001);
        assert_eq!(entries["198.19.0.0/16"], 0b011);
        assert_eq!(entries["2001:db8::/32"], 0b100);
    }

    #[test]
    fn members_are_the_outermost_prefixes_of_each_set() {
        let mut sets = PrefixSets::new();
        for (set, p) in [
            (0, "198.18.0.0/15"),
            (0, "198.19.0.0/16"),
            (0, "192.0.2.1/32"),
            (1, "198.19.0.0/16"),
            (1, "198.19.48.0/24"),
            (3, "2001:db8::/32"),
        ] {
            sets.insert(set, p.parse().unwrap()).unwrap();
        }
        let members: BTreeMap<u8, Vec<String>> = sets
            .members()
            .into_iter()
            .map(|(s, m)| (s, m.iter().map(ToString::to_string).collect()))
            .collect();
        assert_eq!(
            members,
            BTreeMap::from([
                (
                    0,
                    vec!["192.0.2.1/32".to_owned(), "198.18.0.0/15".to_owned()]
                ),
                (1, vec!["198.19.0.0/16".to_owned()]),
                (3, vec!["2001:db8::/32".to_owned()]),
            ])
        );
        // The fast union agrees with containment, pair by pair.
        for (prefix, bits) in sets.entries() {
            let slow = sets
                .prefixes
                .iter()
                .filter(|(outer, _)| outer.contains(&prefix))
                .fold(0, |acc, (_, b)| acc | b);
            assert_eq!(bits, slow, "{prefix}");
        }
    }

    #[test]
    fn rules_sort_by_priority_and_validate() {
        let rules = [
            Rule::new(1, 20, Action::Drop),
            Rule::new(2, 10, Action::Pass)
                .ip_proto(17)
                .dst_ports(53..=53),
        ];
        let encoded = encode_rules(&rules).unwrap();
        assert_eq!(encoded[0].id, 2);
        assert_eq!(
            encoded[0].match_flags,
            match_flags::PROTO | match_flags::DPORT
        );
        assert_eq!(encoded[1].action, types::action::DROP);
        assert!(
            encode_rules(&[Rule::new(1, 0, Action::Drop), Rule::new(1, 1, Action::Pass)]).is_err()
        );
        assert!(Rule::new(MAX_RULES, 0, Action::Drop).encode().is_err());
        assert!(Rule::new(0, 0, Action::Drop).vlan(4096).encode().is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 10..=1;
        assert!(Rule::new(0, 0, Action::Drop)
            .dst_ports(empty)
            .encode()
            .is_err());
        assert!(Rule::new(0, 0, Action::Drop).src_set(64).encode().is_err());
    }
}
