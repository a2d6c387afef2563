/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: loops in a hot callback. dispatch has a plain
 * counted loop (bound only by the verifier's walk), a bpf_for() loop
 * (open-coded iterator) and a bpf_loop() callback.
 * Expected: no errors; one unbounded_loop_suspect warning (the plain loop),
 * three reported back-edges with bounds none / open-coded iterator /
 * bpf_loop callback.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u32 nr_queues = 4;
u64 seen;

static long visit(u64 i, void *ctx)
{
	u32 k;

	/* A plain loop, but inside a bpf_loop callback. */
	for (k = 0; k < nr_queues && k < 16; k++)
		if (scx_bpf_dsq_nr_queued(i * 16 + k) > 0)
			seen++;
	return 0;
}

void BPF_STRUCT_OPS(loops_dispatch, s32 cpu, struct task_struct *prev)
{
	u32 i;
	int j;

	for (i = 0; i < nr_queues && i < 64; i++) {
		if (scx_bpf_dsq_move_to_local(i, 0))
			return;
	}
	bpf_for(j, 0, 8) {
		if (scx_bpf_dsq_nr_queued(j) > 0)
			seen++;
	}
	bpf_loop(8, visit, NULL, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(loops_init)
{
	u32 i;

	for (i = 0; i < 64; i++)
		scx_bpf_create_dsq(i, -1);
	return 0;
}

SCX_OPS_DEFINE(loops_ops,
	       .dispatch	= (void *)loops_dispatch,
	       .init		= (void *)loops_init,
	       .name		= "static_loops");
