/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Griffin XDP classifier: every map key and value shared between the kernel
 * program (griffin_xdp.c) and the Rust loader (ebpf/src/types.rs).
 *
 * The Rust mirror types are checked against the BTF that clang emits for the
 * structs below (ebpf/tests/layout.rs), so a change here that is not mirrored
 * in Rust fails the tests. Keep every struct free of implicit padding: add
 * explicit `pad` fields instead.
 */
#ifndef GRIFFIN_XDP_H
#define GRIFFIN_XDP_H

#include <linux/bpf.h>
#include <linux/types.h>

/* Rule slots per bank. The rules map holds two banks (see griffin_config). */
#define GRIFFIN_MAX_RULES 1024
#define GRIFFIN_RULE_BANKS 2
/* Prefix sets: a bit index in the u64 held by the LPM tries. */
#define GRIFFIN_MAX_PREFIX_SETS 64
#define GRIFFIN_MAX_PREFIXES 16384
#define GRIFFIN_DEVMAP_SIZE 256
#define GRIFFIN_XSKMAP_SIZE 256
#define GRIFFIN_CPUMAP_SIZE 256
/* Upper bound on IPv6 extension headers walked before giving up (pass). */
#define GRIFFIN_MAX_EXT_HDRS 8
/* Rule target meaning "the rx queue the frame arrived on" (xsk action). */
#define GRIFFIN_TARGET_RX_QUEUE 0xffffffffu

/* griffin_rule.match_flags: every set bit must match; 0 matches everything. */
#define GRIFFIN_MATCH_VLAN (1u << 0)
#define GRIFFIN_MATCH_PROTO (1u << 1)
#define GRIFFIN_MATCH_DPORT (1u << 2)
#define GRIFFIN_MATCH_SRC (1u << 3)
#define GRIFFIN_MATCH_DST (1u << 4)
#define GRIFFIN_MATCH_DSCP (1u << 5)
#define GRIFFIN_MATCH_ALL                                                      \
	(GRIFFIN_MATCH_VLAN | GRIFFIN_MATCH_PROTO | GRIFFIN_MATCH_DPORT |      \
	 GRIFFIN_MATCH_SRC | GRIFFIN_MATCH_DST | GRIFFIN_MATCH_DSCP)

/* Actions. */
enum griffin_action {
	GRIFFIN_ACTION_PASS = 0,
	GRIFFIN_ACTION_DROP = 1,
	GRIFFIN_ACTION_REDIRECT = 2,
	GRIFFIN_ACTION_XSK = 3,
	GRIFFIN_ACTION_CPU = 4,
	GRIFFIN_ACTION_COUNT = 5,
};

/*
 * Index into griffin_stats. There are no per-action counters in the
 * program: a matched frame only counts in its rule's griffin_rstats slot,
 * and the loader derives the per-action totals from those, the fallbacks
 * below and the totals of replaced rule sets (griffin_config.retired).
 */
enum griffin_stat {
	/* Malformed or truncated frame: passed untouched. */
	GRIFFIN_STAT_PARSE_FAIL = 0,
	/* No rule matched: default pass. */
	GRIFFIN_STAT_NO_MATCH = 1,
	/* A rule's redirect/xsk/cpu target was missing: passed instead. One
	 * counter per action, at the action's value. */
	GRIFFIN_STAT_FALLBACK_REDIRECT = GRIFFIN_ACTION_REDIRECT,
	GRIFFIN_STAT_FALLBACK_XSK = GRIFFIN_ACTION_XSK,
	GRIFFIN_STAT_FALLBACK_CPU = GRIFFIN_ACTION_CPU,
	GRIFFIN_STAT_COUNT = 5,
};

/* Value of the per-CPU counter maps. */
struct griffin_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * One classification rule, as the loader records it in griffin_rules. A
 * bank's rules are sorted by priority (position 0 = checked first); the
 * first rule whose match_flags all match wins. The program finds the
 * candidates through the bank's bitmaps and reads the winning position's
 * griffin_verdict.
 */
struct griffin_rule {
	/* Counter slot in griffin_rstats within the rule's bank
	 * (< GRIFFIN_MAX_RULES). */
	__u32 id;
	/* GRIFFIN_MATCH_* bits. */
	__u32 match_flags;
	/* Outer (first) 802.1Q/802.1ad VLAN id, 12 bits. */
	__u16 vlan;
	/* IPPROTO_* of the transport header (after IPv6 extension headers). */
	__u8 ip_proto;
	/* DSCP, 6 bits. */
	__u8 dscp;
	/* Inclusive destination port range, host byte order (TCP/UDP only). */
	__u16 dport_lo;
	__u16 dport_hi;
	/* Prefix-set bit index (< GRIFFIN_MAX_PREFIX_SETS) for src / dst. */
	__u8 src_set;
	__u8 dst_set;
	/* enum griffin_action. */
	__u8 action;
	__u8 pad0;
	/* devmap / xskmap / cpumap key for redirect / xsk / cpu. */
	__u32 target;
};

/*
 * Bit-vector classification. A rule bitmap has one bit per rule slot of a
 * bank: bit i (word i / 64, bit i % 64) is the rule at priority position i.
 */
#define GRIFFIN_BITMAP_WORDS (GRIFFIN_MAX_RULES / 64)
/*
 * Distinct class bitmaps per bank, shared by the fields (identical bitmaps
 * are stored once). n rules give at most n + 2 VLAN classes, 257 protocol,
 * 65 DSCP and 2n + 2 port classes, and 2 * (1 + 64) prefix-set classes: 3528
 * for 1024 rules. A power of two, so masking a class index keeps it in
 * bounds for the verifier.
 */
#define GRIFFIN_MAX_CLASSES 4096
/*
 * De Bruijn constant for bit indices: for a word with one bit set,
 * (bit * GRIFFIN_DEBRUIJN) >> 58 is distinct for each of the 64 bits.
 */
#define GRIFFIN_DEBRUIJN 0x03f79d71b4cb0a89ULL
/* Index of "field absent" in each class table of griffin_bank. */
#define GRIFFIN_VLAN_NONE 4096 /* untagged frame */
#define GRIFFIN_PROTO_NONE 256 /* no IP header */
#define GRIFFIN_DSCP_NONE 64 /* no IP header */
#define GRIFFIN_DPORT_NONE 65536 /* no TCP/UDP header (or non-first fragment) */

/* A rule bitmap (128 bytes: indexing by class is a shift). Bits of slots
 * at or beyond the bank's rule_count are zero. */
struct griffin_bitmap {
	__u64 words[GRIFFIN_BITMAP_WORDS];
};

/* What the program needs of the rule at a priority position: its counter
 * slot, action and target (16 bytes: indexing by position is a shift). */
struct griffin_verdict {
	/* The rule's griffin_rstats slot (bank * GRIFFIN_MAX_RULES + id). */
	__u32 id;
	/* griffin_rule.target. */
	__u32 target;
	/* enum griffin_action. */
	__u32 action;
	__u32 pad0;
};

/*
 * griffin_banks entry (key = bank): everything the program reads about one
 * rule set, in one value, so that the loader writes a bank with a single map
 * update and the program reaches every table from one lookup (no key
 * round trip through the stack between dependent loads).
 *
 * For each field, the value (or the *_NONE index) -> its class, an index
 * into bitmaps[]. A class's bitmap holds the rules that accept every value of
 * the class (rules not matching on the field accept all values; rules
 * matching on it never accept *_NONE).
 *
 * The source and destination prefix sets work the same way, except that an
 * address can be in several sets: the rules accepting it are those of the
 * *_any_class bitmap (rules not matching on that address) ORed with the
 * *_set_class bitmap of every set the address is in (rules on that set).
 */
struct griffin_bank {
	/* Union of the bank's rules' match_flags: the prefix sets are looked
	 * up only when it has GRIFFIN_MATCH_SRC/DST. */
	__u32 match_union;
	/* Rules in the bank (<= GRIFFIN_MAX_RULES). */
	__u32 rule_count;
	/* This bank's key in griffin_banks. */
	__u32 index;
	__u32 pad0;
	/* Bit n set: some rule matches on source (destination) prefix set n. */
	__u64 src_used;
	__u64 dst_used;
	/* Rules not matching on the source (destination) address. */
	__u16 src_any_class;
	__u16 dst_any_class;
	/* Per prefix set n: the rules matching on source (destination) set n. */
	__u16 src_set_class[GRIFFIN_MAX_PREFIX_SETS];
	__u16 dst_set_class[GRIFFIN_MAX_PREFIX_SETS];
	__u32 pad1;
	__u16 vlan_class[GRIFFIN_VLAN_NONE + 1];
	__u16 proto_class[GRIFFIN_PROTO_NONE + 1];
	__u16 dscp_class[GRIFFIN_DSCP_NONE + 1];
	__u16 dport_class[GRIFFIN_DPORT_NONE + 1];
	/* Per class: bit w set when bitmaps[class].words[w] is not zero. The
	 * AND of the fields' masks lists the only words that can hold
	 * candidates, so large rule sets cost no more than small ones when
	 * few rules are candidates. */
	__u32 nonzero[GRIFFIN_MAX_CLASSES];
	/* The rules' verdicts by priority; slots at or beyond rule_count are
	 * zero. */
	struct griffin_verdict verdicts[GRIFFIN_MAX_RULES];
	/* The verdicts of positions 0-63 again, each at the de Bruijn index of
	 * its bit ((1 << position) * GRIFFIN_DEBRUIJN >> 58): the lowest
	 * candidate of a one-word rule set is found without turning its bit
	 * into a position first. */
	struct griffin_verdict first_by_bit[64];
	struct griffin_bitmap bitmaps[GRIFFIN_MAX_CLASSES];
};

/*
 * The bank the program classifies with is the u32 global griffin_active_bank
 * (map ".data.griffin", see griffin_xdp.c). The loader writes the inactive
 * bank of griffin_banks (one update), its record of the rules (griffin_rules
 * and rule_count below), then flips griffin_active_bank: one 32-bit word, so
 * the program never sees a half-written rule set.
 *
 * Single entry of griffin_config: loader bookkeeping, unused by the program.
 * The loader reads and writes it whole under its spin lock (BPF_F_LOCK).
 */
struct griffin_config {
	/* Rules in each bank. */
	__u32 rule_count[GRIFFIN_RULE_BANKS];
	/* Attach mode and interface index. */
	__u32 attach_mode;
	__u32 ifindex;
	/* Bumped by every write: a reader of the counters that saw it change
	 * meanwhile reads them again. */
	__u64 generation;
	/* Per enum griffin_action: what the rules of replaced rule sets
	 * counted, by the rule's action (fallbacks not deducted), folded in
	 * before their griffin_rstats slots are zeroed for reuse. */
	struct griffin_counter retired[GRIFFIN_ACTION_COUNT];
	struct bpf_spin_lock lock;
	__u32 pad0;
};

/* LPM trie keys (prefixlen in bits, address in network byte order). */
struct griffin_lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct griffin_lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/*
 * LPM trie value: bit n set = the address is in prefix set n. The loader
 * stores, for each prefix, the union of the sets of every stored prefix that
 * contains it, so the longest match alone answers membership of every set.
 */
struct griffin_lpm_value {
	__u64 sets;
};

#endif /* GRIFFIN_XDP_H */
