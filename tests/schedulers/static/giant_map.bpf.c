/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: an array map of 2^30 u64 values (8 GiB).
 * Expected: map_too_large on `giant` and maps_too_large for the object.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 30);
	__type(key, u32);
	__type(value, u64);
} giant SEC(".maps");

void BPF_STRUCT_OPS(giant_enqueue, struct task_struct *p, u64 enq_flags)
{
	u32 key = 0;
	u64 *n = bpf_map_lookup_elem(&giant, &key);

	if (n)
		(*n)++;
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SCX_OPS_DEFINE(giant_ops,
	       .enqueue		= (void *)giant_enqueue,
	       .name		= "static_giant_map");
