// SPDX-License-Identifier: Apache-2.0
/*
 * The pod end of a redirect (griffin_ebpf::podpath).
 *
 * A frame the classifier redirects to a pod's host-side veth still carries
 * the Ethernet addresses it arrived with (the data interface's MAC as its
 * destination): the pod's stack would drop it as addressed to another host.
 * The kernel's forwarding path would have rewritten both addresses, so the
 * redirect does too:
 *
 * - griffin_pod_l2: a devmap program (runs on the egress interface after
 *   the redirect, before transmit). griffin_pod_l2 maps the egress ifindex
 *   to the pod interface's MAC (destination) and the host veth's MAC
 *   (source); an interface without an entry is sent as it is. The map is
 *   pinned by name, so a restarted daemon keeps writing the one the
 *   devmap's programs read.
 * - griffin_pod_pass: passes every frame. A veth takes native redirects
 *   only while its peer runs XDP (that enables the peer's NAPI), so this is
 *   attached to the pod's end of the veth.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Apache-2.0";

struct griffin_l2 {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct griffin_l2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} griffin_pod_l2_map SEC(".maps");

SEC("xdp/devmap")
int griffin_pod_l2(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 ifindex = ctx->egress_ifindex;
	struct griffin_l2 *l2;

	if (data + sizeof(struct griffin_l2) > end)
		return XDP_PASS;
	l2 = bpf_map_lookup_elem(&griffin_pod_l2_map, &ifindex);
	if (!l2)
		return XDP_PASS;
	__builtin_memcpy(data, l2, sizeof(*l2));
	return XDP_PASS;
}

SEC("xdp")
int griffin_pod_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
