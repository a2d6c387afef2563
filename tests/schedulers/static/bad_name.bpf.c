/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: an ops name with characters outside
 * [A-Za-z0-9_]. Expected: bad_ops_name.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

void BPF_STRUCT_OPS(bn_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SCX_OPS_DEFINE(bn_ops,
	       .enqueue		= (void *)bn_enqueue,
	       .name		= "bad name!");
