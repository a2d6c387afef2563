/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus: compiles cleanly, but the kernel verifier must reject it.
 *
 * verifier_reject_enqueue() dereferences the result of bpf_map_lookup_elem()
 * without checking it for NULL. The lookup returns a map_value_or_null
 * pointer, so loading through it fails with a message of the form
 *
 *	R<n> invalid mem access 'map_value_or_null'
 *
 * (with clang-19 -O2 the register is R0, the helper's return register),
 * and the load of struct_ops/verifier_reject_enqueue fails with -EACCES.
 * Everything else is a valid global-FIFO scheduler, so that bug is the only
 * reason for the rejection.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define FIFO_DSQ	0

UEI_DEFINE(uei);

/* Per-pid enqueue counter. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u64);
} enq_counts SEC(".maps");

void BPF_STRUCT_OPS(verifier_reject_enqueue, struct task_struct *p, u64 enq_flags)
{
	u32 pid = p->pid;
	u64 *cnt;

	cnt = bpf_map_lookup_elem(&enq_counts, &pid);
	/* DELIBERATE BUG: no "if (!cnt)" check; the verifier rejects this load. */
	*cnt += 1;

	scx_bpf_dsq_insert(p, FIFO_DSQ, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(verifier_reject_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(FIFO_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(verifier_reject_init)
{
	return scx_bpf_create_dsq(FIFO_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(verifier_reject_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(verifier_reject_ops,
	       .enqueue		= (void *)verifier_reject_enqueue,
	       .dispatch	= (void *)verifier_reject_dispatch,
	       .init		= (void *)verifier_reject_init,
	       .exit		= (void *)verifier_reject_exit,
	       .timeout_ms	= 5000,
	       .name		= "schedcp_verifier_reject");
