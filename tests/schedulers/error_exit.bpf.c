/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus: a working global FIFO that aborts itself with scx_bpf_error()
 * on its error_after'th enqueue. Expect exit kind SCX_EXIT_ERROR_BPF (1025),
 * reason "scx_bpf_error", and a message of the form
 *
 *	<source path>:<line>: schedcp test: deliberate error after 100 enqueues
 *
 * (scx_bpf_error() prefixes __FILE__ and __LINE__; match on the text after
 * them).
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 error_after = 100;

#define FIFO_DSQ	0

UEI_DEFINE(uei);

static u64 nr_enqueues;

s32 BPF_STRUCT_OPS(error_exit_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	bool is_idle = false;

	/*
	 * Pick a CPU but never insert here, so that every wakeup goes through
	 * ops.enqueue() and the count grows at a predictable rate.
	 */
	return scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
}

void BPF_STRUCT_OPS(error_exit_enqueue, struct task_struct *p, u64 enq_flags)
{
	/* Atomic so exactly one CPU sees the trigger value. */
	u64 n = __sync_add_and_fetch(&nr_enqueues, 1);

	if (n == error_after)
		scx_bpf_error("schedcp test: deliberate error after %d enqueues",
			      (int)n);

	/* Keep scheduling normally until the kernel tears us down. */
	scx_bpf_dsq_insert(p, FIFO_DSQ, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(error_exit_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(FIFO_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(error_exit_init)
{
	return scx_bpf_create_dsq(FIFO_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(error_exit_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(error_exit_ops,
	       .select_cpu	= (void *)error_exit_select_cpu,
	       .enqueue		= (void *)error_exit_enqueue,
	       .dispatch	= (void *)error_exit_dispatch,
	       .init		= (void *)error_exit_init,
	       .exit		= (void *)error_exit_exit,
	       .timeout_ms	= 5000,
	       .name		= "schedcp_error_exit");
