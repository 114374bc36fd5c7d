// SPDX-License-Identifier: Apache-2.0
/*
 * Griffin XDP classifier.
 *
 * Parses Ethernet (up to two 802.1Q/802.1ad tags), IPv4 or IPv6 (extension
 * headers walked in a bounded loop) and TCP/UDP ports, then walks the active
 * rule bank in priority order; the first matching rule decides the action.
 * Every packet access is bounds-checked. Malformed or truncated frames are
 * passed untouched (and counted); a redirect whose target is missing falls
 * back to XDP_PASS (and is counted): the classifier fails open.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "griffin_xdp.h"

char LICENSE[] SEC("license") = "Apache-2.0";

/* 802.1Q / 802.1ad tag following the MAC addresses. */
struct griffin_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* IPv6 extension headers that use the generic next-header/length layout. */
struct griffin_ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct griffin_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GRIFFIN_MAX_RULES * GRIFFIN_RULE_BANKS);
	__type(key, __u32);
	__type(value, struct griffin_rule);
} griffin_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct griffin_config);
} griffin_config SEC(".maps");

/*
 * Per bank and rule id (key bank * GRIFFIN_MAX_RULES + id): packets/bytes of
 * frames the rule matched. One slot range per bank, so the loader can zero
 * the counters of a new rule set in the inactive bank before it flips
 * active_bank: a replaced rule set starts from zero.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GRIFFIN_MAX_RULES * GRIFFIN_RULE_BANKS);
	__type(key, __u32);
	__type(value, struct griffin_counter);
} griffin_rstats SEC(".maps");

/* Per enum griffin_action: the action actually taken (after fallback). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GRIFFIN_ACTION_COUNT);
	__type(key, __u32);
	__type(value, struct griffin_counter);
} griffin_astats SEC(".maps");

/* Per enum griffin_stat. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GRIFFIN_STAT_COUNT);
	__type(key, __u32);
	__type(value, struct griffin_counter);
} griffin_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GRIFFIN_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct griffin_lpm_v4_key);
	__type(value, struct griffin_lpm_value);
} griffin_lpm_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GRIFFIN_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct griffin_lpm_v6_key);
	__type(value, struct griffin_lpm_value);
} griffin_lpm_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, GRIFFIN_DEVMAP_SIZE);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} griffin_devmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, GRIFFIN_XSKMAP_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} griffin_xskmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, GRIFFIN_CPUMAP_SIZE);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} griffin_cpumap SEC(".maps");

/* What the parser learned about a frame (fields valid per `have`). */
#define HAVE_VLAN (1u << 0)
#define HAVE_IP (1u << 1)
#define HAVE_PORTS (1u << 2)

struct griffin_pkt {
	__u64 src_sets;
	__u64 dst_sets;
	__u32 have;
	__u16 vlan;
	__u16 dport;
	__u8 proto;
	__u8 dscp;
};

struct griffin_walk {
	const struct griffin_pkt *pkt;
	__u32 base;
	__u32 count;
	/* Result: matched rule fields, valid when matched != 0. */
	__u32 matched;
	__u32 id;
	__u32 action;
	__u32 target;
};

/* A big-endian 16-bit length read byte by byte. Verifiers before Linux
 * 6.13-ish do not track the range of a byte swap (bpf_ntohs), so a swapped
 * length added to a packet pointer is rejected as unbounded (seen on 6.12);
 * shifts and ors of single bytes are bounded on every kernel. The guest
 * test bed (Linux 6.12) checks this. */
static __always_inline __u32 be16_len(const void *p)
{
	const __u8 *b = p;
	__u32 hi = b[0], lo = b[1];

	/* Keeps clang from fusing the two loads back into a byte swap. */
	asm volatile("" : "+r"(hi));
	return (hi << 8) | lo;
}

static __always_inline void count(void *map, __u32 key, __u64 bytes)
{
	struct griffin_counter *c = bpf_map_lookup_elem(map, &key);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline int rule_matches(const struct griffin_rule *r,
					const struct griffin_pkt *p)
{
	__u32 f = r->match_flags;

	/* A flag this program does not know never matches. */
	if (f & ~GRIFFIN_MATCH_ALL)
		return 0;
	if ((f & GRIFFIN_MATCH_VLAN) &&
	    (!(p->have & HAVE_VLAN) || p->vlan != r->vlan))
		return 0;
	if ((f & GRIFFIN_MATCH_PROTO) &&
	    (!(p->have & HAVE_IP) || p->proto != r->ip_proto))
		return 0;
	if ((f & GRIFFIN_MATCH_DPORT) &&
	    (!(p->have & HAVE_PORTS) || p->dport < r->dport_lo ||
	     p->dport > r->dport_hi))
		return 0;
	if ((f & GRIFFIN_MATCH_SRC) &&
	    (!(p->have & HAVE_IP) || r->src_set >= GRIFFIN_MAX_PREFIX_SETS ||
	     !(p->src_sets & (1ULL << r->src_set))))
		return 0;
	if ((f & GRIFFIN_MATCH_DST) &&
	    (!(p->have & HAVE_IP) || r->dst_set >= GRIFFIN_MAX_PREFIX_SETS ||
	     !(p->dst_sets & (1ULL << r->dst_set))))
		return 0;
	if ((f & GRIFFIN_MATCH_DSCP) &&
	    (!(p->have & HAVE_IP) || p->dscp != r->dscp))
		return 0;
	return 1;
}

/* bpf_loop callback: returns 1 to stop at the first matching rule. */
static long walk_rule(__u32 i, void *data)
{
	struct griffin_walk *w = data;
	const struct griffin_rule *r;
	__u32 key;

	if (i >= w->count || i >= GRIFFIN_MAX_RULES)
		return 1;
	key = w->base + i;
	r = bpf_map_lookup_elem(&griffin_rules, &key);
	if (!r)
		return 1;
	if (!rule_matches(r, w->pkt))
		return 0;
	w->matched = 1;
	w->id = r->id;
	w->action = r->action;
	w->target = r->target;
	return 1;
}

static __always_inline __u64 lpm_v4(__be32 addr)
{
	struct griffin_lpm_v4_key key = { .prefixlen = 32 };
	struct griffin_lpm_value *v;

	__builtin_memcpy(key.addr, &addr, sizeof(key.addr));
	v = bpf_map_lookup_elem(&griffin_lpm_v4, &key);
	return v ? v->sets : 0;
}

static __always_inline __u64 lpm_v6(const struct in6_addr *addr)
{
	struct griffin_lpm_v6_key key = { .prefixlen = 128 };
	struct griffin_lpm_value *v;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	v = bpf_map_lookup_elem(&griffin_lpm_v6, &key);
	return v ? v->sets : 0;
}

/*
 * Parses the frame into *p. Returns 0 on success (including non-IP frames),
 * -1 for a malformed or truncated frame.
 */
static __always_inline int parse(struct xdp_md *ctx, struct griffin_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *cur;
	/* Offset of cur from data, tracked as an integer: the verifier cannot
	 * bound a difference of packet pointers. */
	__u32 nh_off = sizeof(*eth);
	void *l4 = 0;
	__u8 l4proto = 0;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return -1;
	proto = eth->h_proto;
	cur = eth + 1;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct griffin_vlan_hdr *vh = cur;

		if (proto != bpf_htons(ETH_P_8021Q) &&
		    proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return -1;
		if (i == 0) {
			p->vlan = bpf_ntohs(vh->tci) & 0x0fff;
			p->have |= HAVE_VLAN;
		}
		proto = vh->encap_proto;
		cur = vh + 1;
		nh_off += sizeof(*vh);
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		__u32 hlen, tot_len;

		if ((void *)(ip + 1) > data_end)
			return -1;
		if (ip->version != 4 || ip->ihl < 5)
			return -1;
		hlen = ip->ihl * 4;
		tot_len = be16_len(&ip->tot_len);
		if (tot_len < hlen || cur + tot_len > data_end)
			return -1;
		p->have |= HAVE_IP;
		p->proto = ip->protocol;
		p->dscp = ip->tos >> 2;
		p->src_sets = lpm_v4(ip->saddr);
		p->dst_sets = lpm_v4(ip->daddr);
		/* Non-first fragments carry no transport header. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		l4 = cur + hlen;
		l4proto = ip->protocol;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		__u32 off;
		__u8 nexthdr;
		int done = 0;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		if (ip6->version != 6)
			return -1;
		if (ip6->payload_len &&
		    (void *)(ip6 + 1) + be16_len(&ip6->payload_len) > data_end)
			return -1;
		p->have |= HAVE_IP;
		p->dscp = ((ip6->priority << 4) | (ip6->flow_lbl[0] >> 4)) >> 2;
		p->src_sets = lpm_v6(&ip6->saddr);
		p->dst_sets = lpm_v6(&ip6->daddr);
		nexthdr = ip6->nexthdr;
		off = nh_off + sizeof(*ip6);

#pragma unroll
		for (int i = 0; i < GRIFFIN_MAX_EXT_HDRS; i++) {
			struct griffin_ext_hdr *eh;
			struct griffin_frag_hdr *fh;

			/* Keep the offset provably small for the verifier. */
			if (off > 0x3fff)
				return -1;
			switch (nexthdr) {
			case IPPROTO_HOPOPTS:
			case IPPROTO_ROUTING:
			case IPPROTO_DSTOPTS:
				eh = data + off;
				if ((void *)(eh + 1) > data_end)
					return -1;
				nexthdr = eh->nexthdr;
				off += ((__u32)eh->hdrlen + 1) * 8;
				break;
			case IPPROTO_AH:
				eh = data + off;
				if ((void *)(eh + 1) > data_end)
					return -1;
				nexthdr = eh->nexthdr;
				off += ((__u32)eh->hdrlen + 2) * 4;
				break;
			case IPPROTO_FRAGMENT:
				fh = data + off;
				if ((void *)(fh + 1) > data_end)
					return -1;
				nexthdr = fh->nexthdr;
				off += sizeof(*fh);
				/* Non-first fragment: no transport header. */
				if (fh->frag_off & bpf_htons(0xfff8)) {
					p->proto = nexthdr;
					return 0;
				}
				break;
			default:
				done = 1;
				break;
			}
			if (done)
				break;
		}
		if (!done)
			return -1; /* too many extension headers */
		if (off > 0x3fff)
			return -1;
		p->proto = nexthdr;
		l4 = data + off;
		l4proto = nexthdr;
	} else {
		return 0;
	}

	if (l4proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return -1;
		p->dport = bpf_ntohs(udp->dest);
		p->have |= HAVE_PORTS;
	} else if (l4proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		p->dport = bpf_ntohs(tcp->dest);
		p->have |= HAVE_PORTS;
	}
	return 0;
}

SEC("xdp")
int griffin_xdp(struct xdp_md *ctx)
{
	__u64 bytes = ctx->data_end - ctx->data;
	/* Read now, straight off ctx: the verifier rejects ctx loads through a
	 * pointer the compiler derived later (ctx + 16). */
	__u32 rx_queue = ctx->rx_queue_index;
	struct griffin_pkt pkt = {};
	struct griffin_walk walk = { .pkt = &pkt };
	struct griffin_config *cfg;
	__u32 zero = 0;
	__u32 taken = GRIFFIN_ACTION_PASS;
	__u32 key;
	long ret;

	asm volatile("" : "+r"(rx_queue));
	if (parse(ctx, &pkt) < 0) {
		count(&griffin_stats, GRIFFIN_STAT_PARSE_FAIL, bytes);
		count(&griffin_astats, GRIFFIN_ACTION_PASS, bytes);
		return XDP_PASS;
	}

	cfg = bpf_map_lookup_elem(&griffin_config, &zero);
	if (cfg) {
		__u32 bank = cfg->active_bank & 1;

		walk.base = bank * GRIFFIN_MAX_RULES;
		walk.count = cfg->rule_count[bank];
		if (walk.count > GRIFFIN_MAX_RULES)
			walk.count = GRIFFIN_MAX_RULES;
		if (walk.count)
			bpf_loop(walk.count, walk_rule, &walk, 0);
	}

	if (!walk.matched) {
		count(&griffin_stats, GRIFFIN_STAT_NO_MATCH, bytes);
		count(&griffin_astats, GRIFFIN_ACTION_PASS, bytes);
		return XDP_PASS;
	}
	if (walk.id < GRIFFIN_MAX_RULES)
		count(&griffin_rstats, walk.base + walk.id, bytes);

	switch (walk.action) {
	case GRIFFIN_ACTION_DROP:
		count(&griffin_astats, GRIFFIN_ACTION_DROP, bytes);
		return XDP_DROP;
	case GRIFFIN_ACTION_REDIRECT:
		ret = bpf_redirect_map(&griffin_devmap, walk.target, XDP_PASS);
		taken = GRIFFIN_ACTION_REDIRECT;
		break;
	case GRIFFIN_ACTION_XSK:
		key = walk.target == GRIFFIN_TARGET_RX_QUEUE ?
			      rx_queue :
			      walk.target;
		ret = bpf_redirect_map(&griffin_xskmap, key, XDP_PASS);
		taken = GRIFFIN_ACTION_XSK;
		break;
	case GRIFFIN_ACTION_CPU:
		ret = bpf_redirect_map(&griffin_cpumap, walk.target, XDP_PASS);
		taken = GRIFFIN_ACTION_CPU;
		break;
	default:
		count(&griffin_astats, GRIFFIN_ACTION_PASS, bytes);
		return XDP_PASS;
	}

	if (ret != XDP_REDIRECT) {
		count(&griffin_stats, GRIFFIN_STAT_FALLBACK, bytes);
		count(&griffin_astats, GRIFFIN_ACTION_PASS, bytes);
		return XDP_PASS;
	}
	count(&griffin_astats, taken, bytes);
	return XDP_REDIRECT;
}
