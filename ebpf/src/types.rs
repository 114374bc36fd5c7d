//! `#[repr(C)]` mirrors of every map key and value in `bpf/griffin_xdp.h`.
//!
//! `tests/layout.rs` compares each struct's size and field offsets with the
//! BTF clang emitted for the C struct, so the two cannot drift apart.

/// Rule slots per bank (`GRIFFIN_MAX_RULES`); rule ids must be below it.
pub const MAX_RULES: u32 = 1024;
/// Banks in the rules map (`GRIFFIN_RULE_BANKS`).
pub const RULE_BANKS: u32 = 2;
/// Prefix sets (`GRIFFIN_MAX_PREFIX_SETS`): bits of [`GriffinLpmValue::sets`].
pub const MAX_PREFIX_SETS: u8 = 64;
/// Entries per LPM trie (`GRIFFIN_MAX_PREFIXES`).
pub const MAX_PREFIXES: u32 = 16384;
/// `GRIFFIN_TARGET_RX_QUEUE`: xsk target meaning "the frame's rx queue".
pub const TARGET_RX_QUEUE: u32 = u32::MAX;
/// `GRIFFIN_DEBRUIJN`: `(bit * DEBRUIJN) >> 58` is distinct for each of
/// the 64 single-bit words.
pub const DEBRUIJN: u64 = 0x03f7_9d71_b4cb_0a89;

/// Where the program finds position `position` (< 64) of a one-word rule set
/// in [`GriffinBank::first_by_bit`]: the de Bruijn index of its bit.
pub const fn debruijn_index(position: u32) -> usize {
    ((1u64 << position).wrapping_mul(DEBRUIJN) >> 58) as usize
}

/// `GRIFFIN_BITMAP_WORDS`: 64-bit words of a rule bitmap.
pub const BITMAP_WORDS: usize = MAX_RULES as usize / 64;
/// `GRIFFIN_MAX_CLASSES`: class bitmaps per bank.
pub const MAX_CLASSES: u32 = 4096;
/// `GRIFFIN_VLAN_NONE`: [`GriffinBank::vlan_class`] index of untagged frames.
pub const VLAN_NONE: usize = 4096;
/// `GRIFFIN_PROTO_NONE`: [`GriffinBank::proto_class`] index of non-IP frames.
pub const PROTO_NONE: usize = 256;
/// `GRIFFIN_DSCP_NONE`: [`GriffinBank::dscp_class`] index of non-IP frames.
pub const DSCP_NONE: usize = 64;
/// `GRIFFIN_DPORT_NONE`: [`GriffinBank::dport_class`] index of frames
/// without a TCP/UDP header.
pub const DPORT_NONE: usize = 65536;

/// `GRIFFIN_MATCH_*` bits of [`GriffinRule::match_flags`].
pub mod match_flags {
    /// Outer VLAN id.
    pub const VLAN: u32 = 1 << 0;
    /// IP protocol.
    pub const PROTO: u32 = 1 << 1;
    /// Destination port range.
    pub const DPORT: u32 = 1 << 2;
    /// Source address in a prefix set.
    pub const SRC: u32 = 1 << 3;
    /// Destination address in a prefix set.
    pub const DST: u32 = 1 << 4;
    /// DSCP.
    pub const DSCP: u32 = 1 << 5;
}

/// `enum griffin_action` values (also indices of `GriffinConfig::retired`).
pub mod action {
    /// `GRIFFIN_ACTION_PASS`.
    pub const PASS: u8 = 0;
    /// `GRIFFIN_ACTION_DROP`.
    pub const DROP: u8 = 1;
    /// `GRIFFIN_ACTION_REDIRECT`.
    pub const REDIRECT: u8 = 2;
    /// `GRIFFIN_ACTION_XSK`.
    pub const XSK: u8 = 3;
    /// `GRIFFIN_ACTION_CPU`.
    pub const CPU: u8 = 4;
    /// `GRIFFIN_ACTION_COUNT`.
    pub const COUNT: u32 = 5;
}

/// `enum griffin_stat` values (indices of `griffin_stats`).
pub mod stat {
    /// `GRIFFIN_STAT_PARSE_FAIL`.
    pub const PARSE_FAIL: u32 = 0;
    /// `GRIFFIN_STAT_NO_MATCH`.
    pub const NO_MATCH: u32 = 1;
    /// `GRIFFIN_STAT_FALLBACK_REDIRECT`: the fallback counter of an action
    /// is at the action's value.
    pub const FALLBACK_REDIRECT: u32 = super::action::REDIRECT as u32;
    /// `GRIFFIN_STAT_FALLBACK_XSK`.
    pub const FALLBACK_XSK: u32 = super::action::XSK as u32;
    /// `GRIFFIN_STAT_FALLBACK_CPU`.
    pub const FALLBACK_CPU: u32 = super::action::CPU as u32;
    /// `GRIFFIN_STAT_COUNT`.
    pub const COUNT: u32 = 5;
}

/// `struct griffin_counter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GriffinCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames as XDP saw them).
    pub bytes: u64,
}

/// `struct griffin_rule`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GriffinRule {
    /// Slot in the per-rule counters.
    pub id: u32,
    /// [`match_flags`] bits.
    pub match_flags: u32,
    /// Outer VLAN id.
    pub vlan: u16,
    /// IP protocol.
    pub ip_proto: u8,
    /// DSCP.
    pub dscp: u8,
    /// Inclusive destination port range, host order.
    pub dport_lo: u16,
    /// See `dport_lo`.
    pub dport_hi: u16,
    /// Source prefix-set bit.
    pub src_set: u8,
    /// Destination prefix-set bit.
    pub dst_set: u8,
    /// [`action`] value.
    pub action: u8,
    /// Explicit padding.
    pub pad0: u8,
    /// devmap / xskmap / cpumap key.
    pub target: u32,
}

/// `struct griffin_config`: loader bookkeeping, unused by the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GriffinConfig {
    /// Rules in each bank.
    pub rule_count: [u32; RULE_BANKS as usize],
    /// [`crate::XdpMode`] as attached (0 = not attached).
    pub attach_mode: u32,
    /// Interface index attached to.
    pub ifindex: u32,
    /// Bumped by every write of the loader.
    pub generation: u64,
    /// Per [`action`]: what the rules of replaced rule sets counted, by the
    /// rule's action (fallbacks not deducted).
    pub retired: [GriffinCounter; action::COUNT as usize],
    /// `struct bpf_spin_lock` (the kernel's; BPF_F_LOCK reads and writes).
    pub lock: u32,
    /// Explicit padding.
    pub pad0: u32,
}

/// `struct griffin_bitmap`: bit i = the rule at priority position i.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GriffinBitmap {
    /// Bit i % 64 of word i / 64.
    pub words: [u64; BITMAP_WORDS],
}

/// `struct griffin_verdict`: what the program needs of a matched rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GriffinVerdict {
    /// The rule's `griffin_rstats` slot (bank * [`MAX_RULES`] + id).
    pub id: u32,
    /// [`GriffinRule::target`].
    pub target: u32,
    /// [`GriffinRule::action`].
    pub action: u32,
    /// Explicit padding.
    pub pad0: u32,
}

/// `struct griffin_bank`: one bank's class tables, bitmaps and rule verdicts (the
/// `griffin_banks` value; about 700 KiB, so only ever boxed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GriffinBank {
    /// Union of the bank's rules' [`match_flags`].
    pub match_union: u32,
    /// Rules in the bank.
    pub rule_count: u32,
    /// This bank's key in `griffin_banks`.
    pub index: u32,
    /// Explicit padding.
    pub pad0: u32,
    /// Bit n set: some rule matches on source prefix set n.
    pub src_used: u64,
    /// Bit n set: some rule matches on destination prefix set n.
    pub dst_used: u64,
    /// The rules not matching on the source address.
    pub src_any_class: u16,
    /// The rules not matching on the destination address.
    pub dst_any_class: u16,
    /// Per prefix set n: the rules matching on source set n.
    pub src_set_class: [u16; MAX_PREFIX_SETS as usize],
    /// Per prefix set n: the rules matching on destination set n.
    pub dst_set_class: [u16; MAX_PREFIX_SETS as usize],
    /// Explicit padding.
    pub pad1: u32,
    /// Outer VLAN id, or [`VLAN_NONE`] -> class.
    pub vlan_class: [u16; VLAN_NONE + 1],
    /// IP protocol, or [`PROTO_NONE`] -> class.
    pub proto_class: [u16; PROTO_NONE + 1],
    /// DSCP, or [`DSCP_NONE`] -> class.
    pub dscp_class: [u16; DSCP_NONE + 1],
    /// Destination port, or [`DPORT_NONE`] -> class.
    pub dport_class: [u16; DPORT_NONE + 1],
    /// Per class: bit w set when `bitmaps[class].words[w]` is not zero.
    pub nonzero: [u32; MAX_CLASSES as usize],
    /// The rules' verdicts by priority; slots past the rule count are zero.
    pub verdicts: [GriffinVerdict; MAX_RULES as usize],
    /// The verdicts of positions 0-63 again, each at index
    /// [`debruijn_index`] of its bit.
    pub first_by_bit: [GriffinVerdict; 64],
    /// Class c's bitmap at index c.
    pub bitmaps: [GriffinBitmap; MAX_CLASSES as usize],
}

impl GriffinBank {
    /// All zero: every table entry in class 0, no rules, empty bitmaps.
    pub fn boxed() -> Box<Self> {
        // Built on the heap: the value is too large for a thread's stack.
        let layout = std::alloc::Layout::new::<Self>();
        // SAFETY: the layout is GriffinBank's own (not zero-sized). A
        // non-null pointer from alloc_zeroed with that layout is owned,
        // aligned memory that Box may free with the same layout, and its
        // all-zero bytes are a valid GriffinBank: it is made only of
        // integers and arrays of integer structs (the `Pod` impl below).
        unsafe {
            let bank = std::alloc::alloc_zeroed(layout).cast::<Self>();
            if bank.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(bank)
        }
    }
}

/// `struct griffin_lpm_v4_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GriffinLpmV4Key {
    /// Prefix length in bits.
    pub prefixlen: u32,
    /// Address, network order.
    pub addr: [u8; 4],
}

/// `struct griffin_lpm_v6_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GriffinLpmV6Key {
    /// Prefix length in bits.
    pub prefixlen: u32,
    /// Address, network order.
    pub addr: [u8; 16],
}

/// `struct griffin_lpm_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GriffinLpmValue {
    /// Bit n set: the prefix is in prefix set n.
    pub sets: u64,
}

// SAFETY: each type below is `#[repr(C)]`, `Copy`, made only of integers and
// integer arrays with no implicit padding (tests/layout.rs checks the layout
// against the C BTF), so every bit pattern is valid and all bytes are
// initialised.
unsafe impl aya::Pod for GriffinCounter {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinRule {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinLpmV4Key {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinLpmV6Key {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinLpmValue {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinBank {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinVerdict {}
// SAFETY: as above.
unsafe impl aya::Pod for GriffinBitmap {}
