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
