/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A latent bug for the deploy tests: a sound global FIFO that calls
 * scx_bpf_error() once it has been attached for fail_after_ms. Verification
 * runs are shorter, so it verifies; in production the kernel ejects it, and
 * the circuit breaker must roll back.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 fail_after_ms = 15000;

#define SHARED_DSQ 0

static u64 attached_ns;

UEI_DEFINE(uei);

s32 BPF_STRUCT_OPS(fail_later_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	return cpu;
}

void BPF_STRUCT_OPS(fail_later_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SHARED_DSQ, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(fail_later_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(SHARED_DSQ, 0);
}

void BPF_STRUCT_OPS(fail_later_tick, struct task_struct *p)
{
	u64 ms = (bpf_ktime_get_ns() - attached_ns) / 1000000;

	if (ms > fail_after_ms)
		scx_bpf_error("fail_later: deliberate error %llu ms after attach", ms);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(fail_later_init)
{
	attached_ns = bpf_ktime_get_ns();
	return scx_bpf_create_dsq(SHARED_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(fail_later_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(fail_later_ops,
	       .select_cpu	= (void *)fail_later_select_cpu,
	       .enqueue		= (void *)fail_later_enqueue,
	       .dispatch	= (void *)fail_later_dispatch,
	       .tick		= (void *)fail_later_tick,
	       .init		= (void *)fail_later_init,
	       .exit		= (void *)fail_later_exit,
	       .timeout_ms	= 5000,
	       .name		= "test_fail_later");
