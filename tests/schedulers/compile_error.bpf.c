/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus: must fail to compile, with exactly one error, on line 28:
 *
 *	compile_error.bpf.c:28:17: error: no member named 'no_such_field' in
 *	'struct sched_ext_entity'
 *
 * Everything else is a valid global-FIFO scheduler. If you edit this file,
 * keep the error on line 28 or update this comment and the tests.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define FIFO_DSQ	0

UEI_DEFINE(uei);

/*
 * The next function's body holds the deliberate type error: it reads a
 * field that struct sched_ext_entity does not have.
 */

void BPF_STRUCT_OPS(compile_error_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 slice;

	slice = p->scx.no_such_field;	/* line 28: DELIBERATE COMPILE ERROR */
	scx_bpf_dsq_insert(p, FIFO_DSQ, slice, enq_flags);
}

void BPF_STRUCT_OPS(compile_error_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(FIFO_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(compile_error_init)
{
	return scx_bpf_create_dsq(FIFO_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(compile_error_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(compile_error_ops,
	       .enqueue		= (void *)compile_error_enqueue,
	       .dispatch	= (void *)compile_error_dispatch,
	       .init		= (void *)compile_error_init,
	       .exit		= (void *)compile_error_exit,
	       .timeout_ms	= 5000,
	       .name		= "schedcp_compile_error");
