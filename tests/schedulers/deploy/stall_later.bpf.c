/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A latent stall for the deploy tests: user-space tasks and kernel threads
 * queue on separate DSQs, and once the scheduler has been attached for
 * forget_after_ms, ops.dispatch() stops serving the user DSQ. Verification
 * runs are shorter, so it verifies; in production every user task -- the
 * schedcp daemon among them -- stops running until the kernel's watchdog
 * ejects the scheduler (SCX_EXIT_ERROR_STALL) after timeout_ms. The daemon
 * only sees it once it runs again, under the kernel default, and must then
 * roll back to the last known-good.
 *
 * Kernel threads stay served: the watchdog scan itself runs in a kworker.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 forget_after_ms = 15000;

#define USER_DSQ	0
#define KTHREAD_DSQ	1

static u64 forget_at_ns;

UEI_DEFINE(uei);

static __always_inline bool forgotten(struct task_struct *p)
{
	return !(p->flags & PF_KTHREAD) && bpf_ktime_get_ns() >= forget_at_ns;
}

s32 BPF_STRUCT_OPS(stall_later_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	/* A direct dispatch would bypass the forgetting: let enqueue decide. */
	if (forgotten(p))
		return prev_cpu;
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	return cpu;
}

void BPF_STRUCT_OPS(stall_later_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 dsq = (p->flags & PF_KTHREAD) ? KTHREAD_DSQ : USER_DSQ;

	scx_bpf_dsq_insert(p, dsq, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(stall_later_dispatch, s32 cpu, struct task_struct *prev)
{
	if (scx_bpf_dsq_move_to_local(KTHREAD_DSQ, 0))
		return;
	if (bpf_ktime_get_ns() < forget_at_ns)
		scx_bpf_dsq_move_to_local(USER_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(stall_later_init)
{
	s32 err;

	forget_at_ns = bpf_ktime_get_ns() + forget_after_ms * 1000000;
	err = scx_bpf_create_dsq(USER_DSQ, NUMA_NO_NODE);
	if (err)
		return err;
	return scx_bpf_create_dsq(KTHREAD_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(stall_later_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(stall_later_ops,
	       .select_cpu	= (void *)stall_later_select_cpu,
	       .enqueue		= (void *)stall_later_enqueue,
	       .dispatch	= (void *)stall_later_dispatch,
	       .init		= (void *)stall_later_init,
	       .exit		= (void *)stall_later_exit,
	       .timeout_ms	= 5000,
	       .name		= "test_stall_later");
