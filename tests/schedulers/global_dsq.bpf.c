/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The smallest scheduler that depends on the loader filling the SCX_*
 * constants: every task goes to SCX_DSQ_GLOBAL with SCX_SLICE_DFL. If the
 * loader left the __SCX_* rodata at zero, the first insert would target DSQ
 * 0x0 and the kernel would eject the scheduler ("non-existent DSQ 0x0"), and
 * a zero slice would make every task expire at once.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

void BPF_STRUCT_OPS(global_dsq_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(global_dsq_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(global_dsq_ops,
	       .enqueue		= (void *)global_dsq_enqueue,
	       .exit		= (void *)global_dsq_exit,
	       .name		= "schedcp_global_dsq");
