/* SPDX-License-Identifier: GPL-2.0 */
/*
 * schedcp_fifo - a global first-in, first-out scheduler.
 *
 * Every runnable task goes to the tail of one shared dispatch queue and CPUs
 * take tasks from its head. Each task runs for at most one fixed slice before
 * it goes back to the tail, so this is round-robin across the whole machine.
 *
 * A waking task for which the kernel's default CPU selection finds an idle
 * CPU is put straight onto that CPU's local queue: the CPU has nothing else
 * to run, and going through the shared queue would only add a round trip.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

/* Tunables (rodata, set by the loader before load). */
const volatile u64 slice_us = 5000;	/* time slice, microseconds */

/* The one shared queue. User DSQ ids only need to be below 2^63. */
#define FIFO_DSQ	0

UEI_DEFINE(uei);

static __always_inline u64 slice_ns(void)
{
	return slice_us * 1000;
}

s32 BPF_STRUCT_OPS(fifo_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	/* Only picks CPUs in p->cpus_ptr, so affinity is respected. */
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns(), 0);

	return cpu;
}

void BPF_STRUCT_OPS(fifo_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, FIFO_DSQ, slice_ns(), enq_flags);
}

void BPF_STRUCT_OPS(fifo_dispatch, s32 cpu, struct task_struct *prev)
{
	/*
	 * Moves the first task in the queue that may run on this CPU; tasks
	 * whose affinity excludes it are skipped and stay queued for others.
	 */
	scx_bpf_dsq_move_to_local(FIFO_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(fifo_init)
{
	return scx_bpf_create_dsq(FIFO_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(fifo_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(fifo_ops,
	       .select_cpu	= (void *)fifo_select_cpu,
	       .enqueue		= (void *)fifo_enqueue,
	       .dispatch	= (void *)fifo_dispatch,
	       .init		= (void *)fifo_init,
	       .exit		= (void *)fifo_exit,
	       .timeout_ms	= 5000,
	       .name		= "schedcp_fifo");
