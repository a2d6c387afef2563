/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by schedcp's host probes: target filters, task-state and log2
 * helpers.
 *
 * Naming: every program and map is called scp_<...> (at most 15 characters,
 * the kernel's limit), and build.rs names each object scp_<probe>, so that
 * libbpf's internal maps are "scp_xxxx.rodata"/"scp_xxxx.bss". Whatever a
 * probe puts into the kernel is therefore recognisable by the "scp_" prefix,
 * which is what the leak check and the overhead benchmark look for.
 *
 * Every program is tp_btf: a BTF-typed raw tracepoint, the cheapest hook
 * (no perf-event buffer, arguments passed as-is, trusted task pointers that
 * can be dereferenced without bpf_probe_read).
 */
#ifndef SCHEDCP_PROBE_H
#define SCHEDCP_PROBE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define SCP_COMM_LEN 16
#define SCP_TASK_RUNNING 0
#define SCP_TASK_DEAD 0x80

char LICENSE[] SEC("license") = "GPL";

/*
 * Filters, written by userspace into .rodata before load. The verifier sees
 * the frozen values and removes the branches of a disabled filter, so an
 * unfiltered probe pays nothing for them.
 *
 * targ_tgid: only tasks of this process (0 = any).
 * targ_comm: only tasks whose comm is exactly this (zero-padded, as the
 * kernel pads task->comm); compared as two 8-byte words.
 */
const volatile u32 targ_tgid = 0;
const volatile bool targ_comm_on = false;
const volatile u64 targ_comm[2] = {};

static __always_inline bool scp_wanted(const struct task_struct *p)
{
	if (targ_tgid && p->tgid != targ_tgid)
		return false;
	if (targ_comm_on) {
		const u64 *c = (const u64 *)p->comm;

		if (c[0] != targ_comm[0] || c[1] != targ_comm[1])
			return false;
	}
	return true;
}

/* Kernels before 5.14 called task_struct::__state "state" (and a long). */
struct task_struct___pre_5_14 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline unsigned int scp_task_state(const struct task_struct *p)
{
	if (bpf_core_field_exists(p->__state))
		return p->__state;
	return ((const struct task_struct___pre_5_14 *)p)->state;
}

/* floor(log2(v)) for v > 0, 0 for v == 0; BPF has no count-leading-zeros. */
static __always_inline u32 scp_log2(u64 v)
{
	u32 r = 0, s;

	s = (v > 0xffffffffULL) << 5; v >>= s; r |= s;
	s = (v > 0xffffULL) << 4; v >>= s; r |= s;
	s = (v > 0xffULL) << 3; v >>= s; r |= s;
	s = (v > 0xfULL) << 2; v >>= s; r |= s;
	s = (v > 0x3ULL) << 1; v >>= s; r |= s;
	return r | (u32)(v >> 1);
}

#endif /* SCHEDCP_PROBE_H */
