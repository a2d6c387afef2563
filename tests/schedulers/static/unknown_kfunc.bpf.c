/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: calls a kfunc no kernel exports, one schedcp
 * denies (bpf_rdonly_cast: read any kernel address as any type) and reads
 * a kernel variable through __ksym.
 * Expected: unknown_kfunc (bpf_foo), forbidden_kfunc (bpf_rdonly_cast),
 * kernel_variable_access (bpf_prog_active).
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

extern void bpf_foo(void) __ksym;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
extern const int bpf_prog_active __ksym;

u64 sink;

void BPF_STRUCT_OPS(uk_enqueue, struct task_struct *p, u64 enq_flags)
{
	bpf_foo();
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(uk_running, struct task_struct *p)
{
	const int *active = bpf_this_cpu_ptr(&bpf_prog_active);

	sink = (u64)bpf_rdonly_cast((void *)sink, 1) + *active;
}

SCX_OPS_DEFINE(uk_ops,
	       .enqueue		= (void *)uk_enqueue,
	       .running		= (void *)uk_running,
	       .name		= "static_unknown_kfunc");
