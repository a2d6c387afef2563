/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Verifier test corpus: a loop in the enqueue path whose bound the kernel
 * verifier cannot prove (it depends on a task's runtime), so the kernel
 * refuses to load the program.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

void BPF_STRUCT_OPS(loop_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 x = p->se.sum_exec_runtime;

	u64 steps = 0;

	/*
	 * DELIBERATE BUG: unbounded in the verifier's eyes. `steps` is used
	 * afterwards so that the compiler may not delete the loop.
	 */
	while (x > 1) {
		x = (x & 1) ? 3 * x + 1 : x / 2;
		steps++;
	}
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL + steps, enq_flags);
}

void BPF_STRUCT_OPS(loop_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(loop_ops,
	       .enqueue		= (void *)loop_enqueue,
	       .exit		= (void *)loop_exit,
	       .name		= "schedcp_loop");
