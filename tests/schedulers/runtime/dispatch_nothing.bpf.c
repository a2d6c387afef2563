/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Verifier test corpus: queues every task in its own DSQ and dispatches
 * nothing from it, so no queued task ever runs (only tasks placed directly
 * on an idle CPU do). The kernel's watchdog ejects it with
 * SCX_EXIT_ERROR_STALL after timeout_ms.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define NEVER_DSQ	0

UEI_DEFINE(uei);

void BPF_STRUCT_OPS(nothing_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, NEVER_DSQ, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(nothing_dispatch, s32 cpu, struct task_struct *prev)
{
	/* DELIBERATE BUG: nothing is ever moved to a local DSQ. */
}

s32 BPF_STRUCT_OPS_SLEEPABLE(nothing_init)
{
	return scx_bpf_create_dsq(NEVER_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(nothing_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(nothing_ops,
	       .enqueue		= (void *)nothing_enqueue,
	       .dispatch	= (void *)nothing_dispatch,
	       .init		= (void *)nothing_init,
	       .exit		= (void *)nothing_exit,
	       .timeout_ms	= 2000,
	       .name		= "schedcp_nothing");
