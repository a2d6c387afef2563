/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: timeout_ms above the kernel's 30 s watchdog
 * maximum. Expected: timeout_out_of_range.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

void BPF_STRUCT_OPS(bt_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SCX_OPS_DEFINE(bt_ops,
	       .enqueue		= (void *)bt_enqueue,
	       .timeout_ms	= 60000,
	       .name		= "static_bad_timeout");
