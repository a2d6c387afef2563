/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus for the include check (crates/schedcp/tests/verify_compile.rs):
 * __has_include probing the host file system; the answer would end up in the object.
 * Must be refused before clang runs; the test names the line and reason.
 */
#include <scx/common.bpf.h>
#if __has_include(</root/.ssh/id_rsa>)
const volatile int root_has_a_key = 1;
#endif

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
