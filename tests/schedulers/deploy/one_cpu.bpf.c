/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A deliberately bad policy for the deploy tests: it is correct (every task
 * runs, nothing stalls, so it verifies), but it funnels every task that may
 * run anywhere onto CPU 0 with long slices, leaving the other CPUs idle.
 * Run-queue latency and any latency-sensitive workload suffer: the canary
 * must catch it and roll it back.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ms = 40;

#define SHARED_DSQ 0

UEI_DEFINE(uei);

s32 BPF_STRUCT_OPS(one_cpu_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	/* No idle-CPU shortcut: everything goes through enqueue. */
	return prev_cpu;
}

void BPF_STRUCT_OPS(one_cpu_enqueue, struct task_struct *p, u64 enq_flags)
{
	/* Per-CPU kthreads must run where they are pinned, or they stall. */
	if (p->nr_cpus_allowed == 1) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ms * 1000000, enq_flags);
		return;
	}
	scx_bpf_dsq_insert(p, SHARED_DSQ, slice_ms * 1000000, enq_flags);
}

void BPF_STRUCT_OPS(one_cpu_dispatch, s32 cpu, struct task_struct *prev)
{
	if (cpu == 0)
		scx_bpf_dsq_move_to_local(SHARED_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(one_cpu_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(one_cpu_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(one_cpu_ops,
	       .select_cpu	= (void *)one_cpu_select_cpu,
	       .enqueue		= (void *)one_cpu_enqueue,
	       .dispatch	= (void *)one_cpu_dispatch,
	       .init		= (void *)one_cpu_init,
	       .exit		= (void *)one_cpu_exit,
	       .timeout_ms	= 10000,
	       .name		= "test_one_cpu");
