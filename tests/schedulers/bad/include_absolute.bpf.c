/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus for the include check (crates/schedcp/tests/verify_compile.rs):
 * an absolute include path.
 * Must be refused before clang runs; the test names the line and reason.
 */
#include <scx/common.bpf.h>
#include </etc/shadow>

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

void BPF_STRUCT_OPS(bad_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(bad_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(bad_ops,
	       .enqueue		= (void *)bad_enqueue,
	       .exit		= (void *)bad_exit,
	       .name		= "schedcp_bad");
