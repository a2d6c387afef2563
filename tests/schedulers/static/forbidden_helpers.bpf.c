/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: a scheduler that calls four helpers schedcp
 * denies. Each callback uses one, so every finding names its program.
 * Expected: forbidden_helper for bpf_probe_write_user, bpf_send_signal,
 * bpf_override_return and bpf_probe_read_kernel.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

u64 sink;

void BPF_STRUCT_OPS(fh_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 v = 1;

	/* Writes into the memory of whichever process is current. */
	bpf_probe_write_user((void *)sink, &v, sizeof(v));
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(fh_running, struct task_struct *p)
{
	bpf_send_signal(9);
}

void BPF_STRUCT_OPS(fh_stopping, struct task_struct *p, bool runnable)
{
	bpf_override_return((struct pt_regs *)sink, 0);
}

void BPF_STRUCT_OPS(fh_tick, struct task_struct *p)
{
	u64 v;

	/* An arbitrary kernel address. */
	bpf_probe_read_kernel(&v, sizeof(v), (void *)sink);
	sink = v;
}

SCX_OPS_DEFINE(fh_ops,
	       .enqueue		= (void *)fh_enqueue,
	       .running		= (void *)fh_running,
	       .stopping	= (void *)fh_stopping,
	       .tick		= (void *)fh_tick,
	       .name		= "static_forbidden_helpers");
