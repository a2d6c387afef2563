/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Verifier test corpus: starves a class of tasks. User tasks with a weight
 * below nice 0's (niced tasks) are parked in a DSQ that dispatch never
 * consumes; everything else runs FIFO. timeout_ms is the maximum, so the
 * kernel's watchdog would take 30 s to notice: the verifier's fairness
 * check must catch it first.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define FIFO_DSQ	0
#define PARK_DSQ	1

UEI_DEFINE(uei);

static __always_inline bool starved(struct task_struct *p)
{
	return !(p->flags & PF_KTHREAD) && p->scx.weight < 100;
}

s32 BPF_STRUCT_OPS(starve_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	if (starved(p))
		return prev_cpu;
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	return cpu;
}

void BPF_STRUCT_OPS(starve_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, starved(p) ? PARK_DSQ : FIFO_DSQ, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(starve_dispatch, s32 cpu, struct task_struct *prev)
{
	/* DELIBERATE BUG: PARK_DSQ is never consumed. */
	scx_bpf_dsq_move_to_local(FIFO_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(starve_init)
{
	s32 ret = scx_bpf_create_dsq(FIFO_DSQ, NUMA_NO_NODE);

	return ret ? ret : scx_bpf_create_dsq(PARK_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(starve_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(starve_ops,
	       .select_cpu	= (void *)starve_select_cpu,
	       .enqueue		= (void *)starve_enqueue,
	       .dispatch	= (void *)starve_dispatch,
	       .init		= (void *)starve_init,
	       .exit		= (void *)starve_exit,
	       .timeout_ms	= 30000,
	       .name		= "schedcp_starve");
