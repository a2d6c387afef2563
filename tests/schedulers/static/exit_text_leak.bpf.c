/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: a scheduler that smuggles kernel memory and
 * pointers into the text agents read (issue 17, finding 5). Until the exit
 * exception was narrowed, every line of it passed static analysis.
 * Expected errors:
 *   - forbidden_helper in le_exit: two bpf_probe_read_kernel_str calls whose
 *     source is not ei->reason/msg/dump (the backtrace pointer, and an
 *     address the scheduler chose); the three UEI_RECORD copies pass;
 *   - unsafe_format in le_enqueue (%s of p->comm) and le_running (%px);
 *   - forbidden_unreached_code for le_unused_reader, which no program calls.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

u64 target_addr;
char leaked[64];

void BPF_STRUCT_OPS(le_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (p->pid == 1)
		scx_bpf_error("init is %s", p->comm);
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(le_running, struct task_struct *p)
{
	if (p->pid == 2)
		scx_bpf_error("kthreadd at %px", p);
}

void BPF_STRUCT_OPS(le_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
	/* The backtrace array: kernel addresses, read as a string. */
	bpf_probe_read_kernel_str(leaked, sizeof(leaked), (void *)ei->bt);
	/* Any address the scheduler likes. */
	bpf_probe_read_kernel_str(uei.msg, sizeof(uei.msg), (void *)target_addr);
}

__attribute__((noinline)) int le_unused_reader(void *dst, const void *src)
{
	return bpf_probe_read_kernel(dst, 8, src);
}

SCX_OPS_DEFINE(le_ops,
	       .enqueue		= (void *)le_enqueue,
	       .running		= (void *)le_running,
	       .exit		= (void *)le_exit,
	       .name		= "static_exit_text_leak");
