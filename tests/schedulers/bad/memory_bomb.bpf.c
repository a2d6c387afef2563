/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus: a memory bomb. B26 expands to 2^26 array initializers; the
 * AST outgrows the sandbox's address-space limit (RLIMIT_AS, 1 GiB) within
 * seconds. Passes the include check.
 */
#include <scx/common.bpf.h>

#define B0 1
#define B1 B0, B0
#define B2 B1, B1
#define B3 B2, B2
#define B4 B3, B3
#define B5 B4, B4
#define B6 B5, B5
#define B7 B6, B6
#define B8 B7, B7
#define B9 B8, B8
#define B10 B9, B9
#define B11 B10, B10
#define B12 B11, B11
#define B13 B12, B12
#define B14 B13, B13
#define B15 B14, B14
#define B16 B15, B15
#define B17 B16, B16
#define B18 B17, B17
#define B19 B18, B18
#define B20 B19, B19
#define B21 B20, B20
#define B22 B21, B21
#define B23 B22, B22
#define B24 B23, B23
#define B25 B24, B24
#define B26 B25, B25

const volatile unsigned char big[] = { B26 };

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
