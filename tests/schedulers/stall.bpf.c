/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus: loads and attaches, then stops running user-space tasks so
 * the kernel's sched_ext watchdog ejects it with SCX_EXIT_ERROR_STALL and a
 * message like "<comm>[<pid>] failed to run for 3.xxxs".
 *
 * For stall_after_ms after ops.init() everything is scheduled FIFO, which
 * lets the attach finish and the loader see the scheduler enabled. After
 * that, every user-space task that becomes runnable is parked in PARK_DSQ,
 * which ops.dispatch() never consumes.
 *
 * Kernel threads keep being served on purpose: the watchdog scan runs from
 * a workqueue, i.e. in a kworker that is itself scheduled by us. Parking
 * kworkers too would leave detection to the tick-based "watchdog failed to
 * check in" backstop, which idle CPUs with a stopped tick may never reach.
 *
 * Expected time to ejection: stall_after_ms + timeout_ms (3 s) + up to
 * timeout_ms / 2 for the watchdog's next scan, i.e. roughly 4-6 s.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 stall_after_ms = 1000;

#define FIFO_DSQ	0	/* served normally */
#define PARK_DSQ	1	/* never dispatched from */

UEI_DEFINE(uei);

static u64 park_from;	/* bpf_ktime_get_ns() after which user tasks are parked */

static __always_inline bool should_park(struct task_struct *p)
{
	if (p->flags & PF_KTHREAD)
		return false;
	return park_from && bpf_ktime_get_ns() >= park_from;
}

s32 BPF_STRUCT_OPS(stall_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	/* No direct dispatch for tasks to be parked: they must reach enqueue. */
	if (should_park(p))
		return prev_cpu;

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	return cpu;
}

void BPF_STRUCT_OPS(stall_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 dsq = should_park(p) ? PARK_DSQ : FIFO_DSQ;

	scx_bpf_dsq_insert(p, dsq, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(stall_dispatch, s32 cpu, struct task_struct *prev)
{
	/* DELIBERATE BUG: PARK_DSQ is never consumed. */
	scx_bpf_dsq_move_to_local(FIFO_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(stall_init)
{
	s32 ret;

	ret = scx_bpf_create_dsq(FIFO_DSQ, NUMA_NO_NODE);
	if (ret)
		return ret;
	ret = scx_bpf_create_dsq(PARK_DSQ, NUMA_NO_NODE);
	if (ret)
		return ret;

	park_from = bpf_ktime_get_ns() + stall_after_ms * 1000 * 1000;
	return 0;
}

void BPF_STRUCT_OPS(stall_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(stall_ops,
	       .select_cpu	= (void *)stall_select_cpu,
	       .enqueue		= (void *)stall_enqueue,
	       .dispatch	= (void *)stall_dispatch,
	       .init		= (void *)stall_init,
	       .exit		= (void *)stall_exit,
	       .timeout_ms	= 3000,
	       .name		= "schedcp_stall");
