/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Static-analysis fixture: a plain tracepoint program, no scheduler.
 * Expected: no_struct_ops and unexpected_program.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

char _license[] SEC("license") = "GPL";

u64 switches;

SEC("tracepoint/sched/sched_switch")
int count_switch(void *ctx)
{
	__sync_fetch_and_add(&switches, 1);
	return 0;
}
