// SPDX-License-Identifier: Apache-2.0
/*
 * Benchmark baselines (griffin_ebpf::bench), never attached by Griffin
 * itself:
 *
 * - trivial_pass: passes every frame and does nothing else. `cargo xtask
 *   bench` measures the classifier's BPF_PROG_TEST_RUN cost against it in
 *   the same run, and attaches it to the data consumer's veth, whose NAPI
 *   must run an XDP program to receive native redirects.
 * - redirect_all: redirects every frame to the interface redirect_ifindex
 *   (set at load time), the data-path rate ceiling: what `xdp-bench
 *   redirect` does, without its MAC swap and per-CPU counter.
 * - redirect_map_all: redirects every frame through slot 0 of a devmap, as
 *   Griffin's redirect action does: the per-packet floor of that action.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Apache-2.0";

volatile const __u32 redirect_ifindex = 0;

SEC("xdp")
int trivial_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int redirect_all(struct xdp_md *ctx)
{
	return bpf_redirect(redirect_ifindex, 0);
}

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_devmap SEC(".maps");

SEC("xdp")
int redirect_map_all(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bench_devmap, 0, XDP_PASS);
}
