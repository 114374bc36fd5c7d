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

/* Actions; also the index into griffin_action_stats. */
enum griffin_action {
	GRIFFIN_ACTION_PASS = 0,
	GRIFFIN_ACTION_DROP = 1,
	GRIFFIN_ACTION_REDIRECT = 2,
	GRIFFIN_ACTION_XSK = 3,
	GRIFFIN_ACTION_CPU = 4,
	GRIFFIN_ACTION_COUNT = 5,
};

/* Index into griffin_stats. */
enum griffin_stat {
	/* Malformed or truncated frame: passed untouched. */
	GRIFFIN_STAT_PARSE_FAIL = 0,
	/* A redirect/xsk/cpu target was missing: passed instead. */
	GRIFFIN_STAT_FALLBACK = 1,
	/* No rule matched: default pass. */
	GRIFFIN_STAT_NO_MATCH = 2,
	GRIFFIN_STAT_COUNT = 3,
};

/* Value of the per-CPU counter maps. */
struct griffin_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * One classification rule. Rules live in griffin_rules, sorted by priority
 * (index 0 = checked first); the first rule whose match_flags all match wins.
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
 * Single entry of griffin_config. The loader writes the inactive bank of
 * griffin_rules, then sets rule_count[bank], then flips active_bank: each
 * update changes one 32-bit word, so the program never sees a half-written
 * rule set.
 */
struct griffin_config {
	__u32 active_bank;
	__u32 rule_count[GRIFFIN_RULE_BANKS];
	/* Loader bookkeeping, unused by the program: attach mode, ifindex. */
	__u32 attach_mode;
	__u32 ifindex;
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
