//! Bit-vector classification tables: the `griffin_banks` value the loader
//! writes for one bank (see `bpf/griffin_xdp.h`).
//!
//! For each matched field (VLAN, protocol, DSCP, destination port) every
//! value, plus "field absent", maps to a class whose bitmap holds the rules
//! accepting that value: rules that do not match on the field accept every
//! value, rules that do accept their value (port: their range) and never
//! "absent". The prefix sets of the source and destination addresses work
//! alike, except that an address can be in several sets: the rules accepting
//! it are those not matching on it ORed with those of each of its sets. The
//! program ANDs the bitmaps and takes the lowest set bit, which is the first
//! rule by priority that matches: the tests below check this against a plain
//! first-match walk.

use std::collections::{BTreeSet, HashMap};

use crate::types::{
    debruijn_index, match_flags, GriffinBank, GriffinBitmap, GriffinRule, GriffinVerdict,
    BITMAP_WORDS, DPORT_NONE, DSCP_NONE, MAX_CLASSES, MAX_PREFIX_SETS, MAX_RULES, PROTO_NONE,
    VLAN_NONE,
};

/// Every `GRIFFIN_MATCH_*` bit the program knows.
const KNOWN_FLAGS: u32 = match_flags::VLAN
    | match_flags::PROTO
    | match_flags::DPORT
    | match_flags::SRC
    | match_flags::DST
    | match_flags::DSCP;

/// One bank's classification tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassTables {
    /// The `griffin_banks` entry of the bank.
    pub bank: Box<GriffinBank>,
    /// How many classes (distinct bitmaps, at the start of
    /// [`GriffinBank::bitmaps`]) the rules made; at most [`MAX_CLASSES`].
    pub classes: usize,
}

fn set_bit(bitmap: &mut GriffinBitmap, position: usize) {
    bitmap.words[position / 64] |= 1 << (position % 64);
}

/// Hands out one class per distinct bitmap.
#[derive(Default)]
struct Interner {
    classes: HashMap<GriffinBitmap, u16>,
    bitmaps: Vec<GriffinBitmap>,
}

impl Interner {
    fn class(&mut self, bitmap: GriffinBitmap) -> u16 {
        if let Some(&class) = self.classes.get(&bitmap) {
            return class;
        }
        // n rules give at most 3n + 456 distinct bitmaps (see
        // GRIFFIN_MAX_CLASSES), below the limit for n <= MAX_RULES.
        let class = u16::try_from(self.bitmaps.len())
            .ok()
            .filter(|&c| u32::from(c) < MAX_CLASSES)
            .expect("class count bounded by GRIFFIN_MAX_CLASSES");
        self.classes.insert(bitmap, class);
        self.bitmaps.push(bitmap);
        class
    }
}

/// Fills `table` for a field compared for equality: `value` is the rule's
/// value when it has `flag` (values at or beyond `none` can never equal a
/// frame's, so such rules accept nothing).
fn exact_field(
    rules: &[(usize, &GriffinRule)],
    flag: u32,
    value: impl Fn(&GriffinRule) -> usize,
    table: &mut [u16],
    interner: &mut Interner,
) {
    let none = table.len() - 1;
    let mut wild = GriffinBitmap::default();
    for &(position, rule) in rules {
        if rule.match_flags & flag == 0 {
            set_bit(&mut wild, position);
        }
    }
    let mut by_value: HashMap<usize, GriffinBitmap> = HashMap::new();
    for &(position, rule) in rules {
        let v = value(rule);
        if rule.match_flags & flag != 0 && v < none {
            set_bit(by_value.entry(v).or_insert(wild), position);
        }
    }
    let wild_class = interner.class(wild);
    table.fill(wild_class);
    // Sorted, so class numbers do not depend on hash order.
    let mut values: Vec<_> = by_value.into_iter().collect();
    values.sort_unstable_by_key(|(v, _)| *v);
    for (v, bitmap) in values {
        table[v] = interner.class(bitmap);
    }
}

/// Fills the port table: one class per run of ports between range ends.
fn port_field(rules: &[(usize, &GriffinRule)], table: &mut [u16], interner: &mut Interner) {
    let ranged: Vec<(usize, u32, u32)> = rules
        .iter()
        .filter(|(_, r)| r.match_flags & match_flags::DPORT != 0 && r.dport_lo <= r.dport_hi)
        .map(|&(p, r)| (p, u32::from(r.dport_lo), u32::from(r.dport_hi)))
        .collect();
    let mut wild = GriffinBitmap::default();
    for &(position, rule) in rules {
        if rule.match_flags & match_flags::DPORT == 0 {
            set_bit(&mut wild, position);
        }
    }
    // Every port where the set of covering ranges can change.
    let mut starts = BTreeSet::from([0u32]);
    for &(_, lo, hi) in &ranged {
        starts.insert(lo);
        if hi < 65535 {
            starts.insert(hi + 1);
        }
    }
    let starts: Vec<u32> = starts.into_iter().collect();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(DPORT_NONE as u32);
        let mut bitmap = wild;
        for &(position, lo, hi) in &ranged {
            if lo <= start && start <= hi {
                set_bit(&mut bitmap, position);
            }
        }
        let class = interner.class(bitmap);
        table[start as usize..end as usize].fill(class);
    }
    table[DPORT_NONE] = interner.class(wild);
}

/// One address's prefix-set classes: which rules match on it through
/// `flag`, with the set `set` (a set beyond the last never matches).
struct SetField<'a> {
    any_class: &'a mut u16,
    set_class: &'a mut [u16; MAX_PREFIX_SETS as usize],
    used: &'a mut u64,
}

/// Fills one address's prefix-set classes: the rules not matching on the
/// address, and per set the rules matching on that set.
fn set_field(
    rules: &[(usize, &GriffinRule)],
    flag: u32,
    set: impl Fn(&GriffinRule) -> u8,
    out: SetField<'_>,
    interner: &mut Interner,
) {
    let mut any = GriffinBitmap::default();
    let mut by_set = [GriffinBitmap::default(); MAX_PREFIX_SETS as usize];
    for &(position, rule) in rules {
        if rule.match_flags & flag == 0 {
            set_bit(&mut any, position);
        } else if let Some(bitmap) = by_set.get_mut(usize::from(set(rule))) {
            set_bit(bitmap, position);
            *out.used |= 1 << set(rule);
        }
    }
    *out.any_class = interner.class(any);
    for (class, bitmap) in out.set_class.iter_mut().zip(by_set) {
        *class = interner.class(bitmap);
    }
}

/// The tables for `rules` in priority order (position = bit), at most
/// [`MAX_RULES`], as bank `index` of `griffin_banks` (which makes the
/// verdicts' counter slots absolute). A rule with a flag the program does not
/// know, or a value no frame can have, is in no bitmap: it never matches, as
/// in a walk.
pub fn build(rules: &[GriffinRule], index: u32) -> ClassTables {
    assert!(
        rules.len() <= MAX_RULES as usize,
        "more than MAX_RULES rules"
    );
    let usable: Vec<(usize, &GriffinRule)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.match_flags & !KNOWN_FLAGS == 0)
        .collect();
    let mut bank = GriffinBank::boxed();
    bank.rule_count = rules.len() as u32;
    bank.index = index;
    for (position, rule) in (0..).zip(rules) {
        let verdict = GriffinVerdict {
            // The program counts into the slot as it is.
            id: index * MAX_RULES + rule.id,
            target: rule.target,
            action: rule.action.into(),
            pad0: 0,
        };
        bank.verdicts[position as usize] = verdict;
        if position < 64 {
            bank.first_by_bit[debruijn_index(position)] = verdict;
        }
    }
    bank.match_union = usable.iter().fold(0, |acc, (_, r)| acc | r.match_flags);
    let mut interner = Interner::default();
    exact_field(
        &usable,
        match_flags::VLAN,
        |r| usize::from(r.vlan),
        &mut bank.vlan_class,
        &mut interner,
    );
    exact_field(
        &usable,
        match_flags::PROTO,
        |r| usize::from(r.ip_proto),
        &mut bank.proto_class,
        &mut interner,
    );
    exact_field(
        &usable,
        match_flags::DSCP,
        |r| usize::from(r.dscp),
        &mut bank.dscp_class,
        &mut interner,
    );
    port_field(&usable, &mut bank.dport_class, &mut interner);
    let t = &mut *bank;
    set_field(
        &usable,
        match_flags::SRC,
        |r| r.src_set,
        SetField {
            any_class: &mut t.src_any_class,
            set_class: &mut t.src_set_class,
            used: &mut t.src_used,
        },
        &mut interner,
    );
    set_field(
        &usable,
        match_flags::DST,
        |r| r.dst_set,
        SetField {
            any_class: &mut t.dst_any_class,
            set_class: &mut t.dst_set_class,
            used: &mut t.dst_used,
        },
        &mut interner,
    );
    let classes = interner.bitmaps.len();
    for (class, bitmap) in interner.bitmaps.into_iter().enumerate() {
        bank.nonzero[class] = (0..BITMAP_WORDS)
            .filter(|&w| bitmap.words[w] != 0)
            .fold(0, |acc, w| acc | 1 << w);
        bank.bitmaps[class] = bitmap;
    }
    ClassTables { bank, classes }
}

// The absent indices are the tables' last entries.
const _: () = assert!(VLAN_NONE == 4096 && PROTO_NONE == 256 && DSCP_NONE == 64);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::types::action;

    /// What the program learns about a frame (`struct griffin_pkt`), with
    /// the prefix sets of its addresses already resolved.
    #[derive(Clone, Debug, Default)]
    struct Frame {
        vlan: Option<u16>,
        ip: Option<Ip>,
        dport: Option<u16>,
    }

    #[derive(Clone, Debug, Default)]
    struct Ip {
        proto: u8,
        dscp: u8,
        src_sets: u64,
        dst_sets: u64,
    }

    /// The classifier before bit vectors: every rule in order, first match.
    fn first_match(rules: &[GriffinRule], f: &Frame) -> Option<usize> {
        rules.iter().position(|r| {
            let has = |flag| r.match_flags & flag != 0;
            let in_set = |sets: u64, set: u8| set < 64 && sets & (1u64 << set) != 0;
            r.match_flags & !KNOWN_FLAGS == 0
                && (!has(match_flags::VLAN) || f.vlan == Some(r.vlan))
                && (!has(match_flags::PROTO) || f.ip.as_ref().map(|i| i.proto) == Some(r.ip_proto))
                && (!has(match_flags::DPORT)
                    || f.dport.is_some_and(|p| r.dport_lo <= p && p <= r.dport_hi))
                && (!has(match_flags::SRC)
                    || f.ip.as_ref().is_some_and(|i| in_set(i.src_sets, r.src_set)))
                && (!has(match_flags::DST)
                    || f.ip.as_ref().is_some_and(|i| in_set(i.dst_sets, r.dst_set)))
                && (!has(match_flags::DSCP) || f.ip.as_ref().map(|i| i.dscp) == Some(r.dscp))
        })
    }

    /// What `classify` in griffin_xdp.c does with the tables.
    fn bit_vector(t: &ClassTables, rules: &[GriffinRule], f: &Frame) -> Option<usize> {
        if rules.is_empty() {
            return None;
        }
        let c = &t.bank;
        let classes = [
            c.vlan_class[f.vlan.map_or(VLAN_NONE, usize::from)],
            c.proto_class[f.ip.as_ref().map_or(PROTO_NONE, |i| usize::from(i.proto))],
            c.dscp_class[f.ip.as_ref().map_or(DSCP_NONE, |i| usize::from(i.dscp))],
            c.dport_class[f.dport.map_or(DPORT_NONE, usize::from)],
        ]
        .map(usize::from);
        let bitmaps = classes.map(|class| &t.bank.bitmaps[class]);
        let mask = classes
            .iter()
            .fold(u32::MAX, |acc, &class| acc & c.nonzero[class]);
        let ip = f.ip.clone().unwrap_or_default();
        // The rules accepting an address in `sets` (set_rules in the C).
        let accepting = |word: usize, any: u16, per_set: &[u16; 64], mut sets: u64| {
            let mut acc = t.bank.bitmaps[usize::from(any)].words[word];
            while sets != 0 {
                acc |= t.bank.bitmaps[usize::from(per_set[sets.trailing_zeros() as usize])].words
                    [word];
                sets &= sets - 1;
            }
            acc
        };
        for word in (0..BITMAP_WORDS).filter(|w| mask & (1 << w) != 0) {
            let mut bits = bitmaps.iter().fold(u64::MAX, |acc, b| acc & b.words[word]);
            if c.match_union & match_flags::SRC != 0 {
                bits &= accepting(
                    word,
                    c.src_any_class,
                    &c.src_set_class,
                    ip.src_sets & c.src_used,
                );
            }
            if c.match_union & match_flags::DST != 0 {
                bits &= accepting(
                    word,
                    c.dst_any_class,
                    &c.dst_set_class,
                    ip.dst_sets & c.dst_used,
                );
            }
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
        }
        None
    }

    fn rule(flags: u32) -> GriffinRule {
        GriffinRule {
            match_flags: flags,
            action: action::DROP,
            ..GriffinRule::default()
        }
    }

    fn bits_of(b: &GriffinBitmap) -> Vec<usize> {
        (0..MAX_RULES as usize)
            .filter(|&i| b.words[i / 64] & (1 << (i % 64)) != 0)
            .collect()
    }

    #[test]
    fn tables_for_a_small_rule_set() {
        let rules = [
            // 0: UDP ports 10..=20
            GriffinRule {
                ip_proto: 17,
                dport_lo: 10,
                dport_hi: 20,
                ..rule(match_flags::PROTO | match_flags::DPORT)
            },
            // 1: VLAN 5, port 15..=30
            GriffinRule {
                vlan: 5,
                dport_lo: 15,
                dport_hi: 30,
                ..rule(match_flags::VLAN | match_flags::DPORT)
            },
            // 2: DSCP 46
            GriffinRule {
                dscp: 46,
                ..rule(match_flags::DSCP)
            },
            // 3: everything
            rule(0),
        ];
        let t = build(&rules, 0);
        let class = |table: &[u16], i: usize| bits_of(&t.bank.bitmaps[usize::from(table[i])]);
        let c = &t.bank;
        assert_eq!(c.match_union, 0b100111);
        assert_eq!(class(&c.vlan_class, 5), [0, 1, 2, 3]);
        assert_eq!(class(&c.vlan_class, 6), [0, 2, 3]);
        assert_eq!(class(&c.vlan_class, VLAN_NONE), [0, 2, 3]);
        assert_eq!(class(&c.proto_class, 17), [0, 1, 2, 3]);
        assert_eq!(class(&c.proto_class, 6), [1, 2, 3]);
        assert_eq!(class(&c.proto_class, PROTO_NONE), [1, 2, 3]);
        assert_eq!(class(&c.dscp_class, 46), [0, 1, 2, 3]);
        assert_eq!(class(&c.dscp_class, 0), [0, 1, 3]);
        assert_eq!(class(&c.dscp_class, DSCP_NONE), [0, 1, 3]);
        assert_eq!(class(&c.dport_class, 9), [2, 3]);
        assert_eq!(class(&c.dport_class, 10), [0, 2, 3]);
        assert_eq!(class(&c.dport_class, 15), [0, 1, 2, 3]);
        assert_eq!(class(&c.dport_class, 20), [0, 1, 2, 3]);
        assert_eq!(class(&c.dport_class, 21), [1, 2, 3]);
        assert_eq!(class(&c.dport_class, 30), [1, 2, 3]);
        assert_eq!(class(&c.dport_class, 31), [2, 3]);
        assert_eq!(class(&c.dport_class, 65535), [2, 3]);
        assert_eq!(class(&c.dport_class, DPORT_NONE), [2, 3]);
        // No prefix sets: every rule accepts every address.
        assert_eq!((c.src_used, c.dst_used), (0, 0));
        assert_eq!(class(&[c.src_any_class], 0), [0, 1, 2, 3]);
        assert_eq!(class(&c.dst_set_class, 7), [0usize; 0]);
        // Identical bitmaps share a class: only [0,2,3], [0,1,2,3],
        // [1,2,3], [0,1,3], [2,3] and (the prefix sets) [] exist.
        assert_eq!(t.classes, 6);
        assert_eq!(c.dport_class[9], c.dport_class[31]);
        assert_eq!(c.vlan_class[5], c.proto_class[17]);
    }

    #[test]
    fn prefix_set_tables_split_rules_by_set() {
        let on = |src: Option<u8>, dst: Option<u8>| GriffinRule {
            src_set: src.unwrap_or(0),
            dst_set: dst.unwrap_or(0),
            ..rule(src.map_or(0, |_| match_flags::SRC) | dst.map_or(0, |_| match_flags::DST))
        };
        let rules = [
            on(Some(2), None),
            on(None, Some(5)),
            on(Some(2), Some(1)),
            on(None, None),
            // A set past the last: never matches on the source.
            on(Some(64), None),
        ];
        let t = build(&rules, 0);
        let c = &t.bank;
        let class = |class: u16| bits_of(&t.bank.bitmaps[usize::from(class)]);
        assert_eq!((c.src_used, c.dst_used), (1 << 2, 1 << 5 | 1 << 1));
        assert_eq!(class(c.src_any_class), [1, 3]);
        assert_eq!(class(c.src_set_class[2]), [0, 2]);
        assert_eq!(class(c.src_set_class[3]), [0usize; 0]);
        assert_eq!(class(c.dst_any_class), [0, 3, 4]);
        assert_eq!(class(c.dst_set_class[5]), [1]);
        assert_eq!(class(c.dst_set_class[1]), [2]);
    }

    #[test]
    fn verdicts_carry_absolute_slots_and_the_first_word_is_found_by_bit() {
        let indices: BTreeSet<usize> = (0..64).map(debruijn_index).collect();
        assert_eq!(indices, (0..64).collect(), "a permutation of 0..64");
        let rules: Vec<GriffinRule> = (0..70u32)
            .map(|i| GriffinRule {
                id: 1000 - i,
                target: i,
                ..rule(0)
            })
            .collect();
        let t = build(&rules, 1);
        assert_eq!((t.bank.index, t.bank.rule_count), (1, 70));
        for (position, r) in (0..).zip(&rules) {
            let v = t.bank.verdicts[position as usize];
            assert_eq!(
                (v.id, v.target, v.action),
                (MAX_RULES + r.id, r.target, u32::from(r.action))
            );
            if position < 64 {
                assert_eq!(t.bank.first_by_bit[debruijn_index(position)], v);
            }
        }
        assert_eq!(t.bank.verdicts[70], GriffinVerdict::default());
    }

    #[test]
    fn nonzero_masks_list_the_words_with_bits() {
        // 130 TCP rules (words 0-2), rules 0 and 129 also on port 7.
        let rules: Vec<GriffinRule> = (0..130u32)
            .map(|i| GriffinRule {
                ip_proto: 6,
                dport_lo: 7,
                dport_hi: 7,
                ..rule(
                    match_flags::PROTO
                        | if i.is_multiple_of(129) {
                            match_flags::DPORT
                        } else {
                            0
                        },
                )
            })
            .collect();
        let t = build(&rules, 0);
        let class = |table: &[u16], i: usize| usize::from(table[i]);
        let nonzero = |table: &[u16], i: usize| t.bank.nonzero[class(table, i)];
        assert_eq!(nonzero(&t.bank.proto_class, 6), 0b111);
        assert_eq!(nonzero(&t.bank.proto_class, 17), 0);
        assert_eq!(nonzero(&t.bank.dport_class, 7), 0b111);
        // Ports other than 7: every rule but 0 and 129.
        let other = &t.bank.bitmaps[class(&t.bank.dport_class, 8)];
        assert_eq!(nonzero(&t.bank.dport_class, 8), 0b111);
        assert_eq!(other.words[2], 0b01);
        assert_eq!(bits_of(other).len(), 128);
    }

    #[test]
    fn rules_that_can_never_match_are_in_no_bitmap() {
        let rules = [
            rule(1 << 6),
            GriffinRule {
                dport_lo: 9,
                dport_hi: 8,
                ..rule(match_flags::DPORT)
            },
            GriffinRule {
                vlan: 4096,
                ..rule(match_flags::VLAN)
            },
            GriffinRule {
                dscp: 64,
                ..rule(match_flags::DSCP)
            },
        ];
        let t = build(&rules, 0);
        let c = &t.bank;
        // Rule i is in no bitmap of field `table` (for rule 0: of any field).
        let never = |i: usize, table: &[u16]| {
            table
                .iter()
                .all(|&class| !bits_of(&t.bank.bitmaps[usize::from(class)]).contains(&i))
        };
        for table in [
            &c.vlan_class[..],
            &c.proto_class,
            &c.dscp_class,
            &c.dport_class,
        ] {
            assert!(never(0, table));
        }
        assert!(never(1, &c.dport_class) && !never(1, &c.vlan_class));
        assert!(never(2, &c.vlan_class) && !never(2, &c.dport_class));
        assert!(never(3, &c.dscp_class) && !never(3, &c.proto_class));
        assert_eq!(
            t.bank.match_union,
            match_flags::DPORT | match_flags::VLAN | match_flags::DSCP
        );
    }

    #[test]
    fn the_worst_case_rule_set_fits_the_class_limit() {
        // Every rule its own VLAN, protocol, DSCP and port range, and the
        // prefix sets spread over all 64: the most distinct bitmaps
        // MAX_RULES rules can make.
        let rules: Vec<GriffinRule> = (0..MAX_RULES as u16)
            .map(|i| GriffinRule {
                vlan: i,
                ip_proto: i as u8,
                dscp: (i % 64) as u8,
                dport_lo: 2 * i + 1,
                dport_hi: 2 * i + 1,
                src_set: (i % 64) as u8,
                dst_set: (i / 16 % 64) as u8,
                ..rule(
                    match_flags::SRC
                        | match_flags::DST
                        | [
                            match_flags::VLAN,
                            match_flags::PROTO,
                            match_flags::DSCP,
                            match_flags::DPORT,
                        ][usize::from(i % 4)],
                )
            })
            .collect();
        let t = build(&rules, 0);
        assert!(t.classes <= MAX_CLASSES as usize);
        // Only rule 4k + 3 matches port 2 (4k + 3) + 1, besides wildcards.
        let port = 2 * 7 + 1;
        let got = bits_of(&t.bank.bitmaps[usize::from(t.bank.dport_class[port])]);
        assert!(got.contains(&7) && !got.contains(&3) && got.contains(&0));
        // Rules without a VLAN match (i % 4 != 0) accept untagged frames.
        let all = &t.bank.bitmaps[usize::from(t.bank.vlan_class[VLAN_NONE])];
        assert_eq!(all.words[BITMAP_WORDS - 1], 0xeeee_eeee_eeee_eeee);
    }

    fn arb_rule() -> impl Strategy<Value = GriffinRule> {
        (
            // Mostly known flags; bit 6 now and then (never matches).
            prop_oneof![9 => 0u32..64, 1 => 0u32..128],
            prop_oneof![0u16..4, Just(4095), Just(4096)],
            prop_oneof![Just(6u8), Just(17), Just(0), Just(255)],
            prop_oneof![0u8..3, Just(63), Just(64)],
            (0u16..12, 0u16..12),
            prop_oneof![Just(65535u16), Just(0)],
            (0u8..4, prop_oneof![3 => 0u8..4, 1 => Just(64u8)]),
        )
            .prop_map(|(flags, vlan, proto, dscp, (lo, hi), top, (src, dst))| {
                GriffinRule {
                    match_flags: flags,
                    vlan,
                    ip_proto: proto,
                    dscp,
                    dport_lo: if top == 0 { lo } else { lo.max(65530) },
                    dport_hi: if top == 0 { hi } else { top },
                    src_set: src,
                    dst_set: dst,
                    ..GriffinRule::default()
                }
            })
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            proptest::option::of(prop_oneof![0u16..5, Just(4095)]),
            proptest::option::of((
                prop_oneof![Just(6u8), Just(17), Just(0), Just(255), Just(1)],
                prop_oneof![0u8..4, Just(63)],
                0u64..16,
                0u64..16,
            )),
            proptest::option::of(prop_oneof![0u16..13, 65529u16..=65535]),
        )
            .prop_map(|(vlan, ip, dport)| Frame {
                vlan,
                ip: ip.map(|(proto, dscp, src_sets, dst_sets)| Ip {
                    proto,
                    dscp,
                    src_sets,
                    dst_sets,
                }),
                dport,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn bit_vectors_give_the_first_match(
            rules in proptest::collection::vec(arb_rule(), 0..150),
            frames in proptest::collection::vec(arb_frame(), 1..40),
        ) {
            let t = build(&rules, 0);
            prop_assert!(t.classes <= MAX_CLASSES as usize);
            for f in &frames {
                prop_assert_eq!(bit_vector(&t, &rules, f), first_match(&rules, f), "{:?}", f);
            }
        }
    }
}
