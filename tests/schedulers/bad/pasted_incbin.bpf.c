/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test corpus: an .incbin the include check cannot see. Token pasting builds
 * the word "incbin" only during preprocessing, so the source passes the
 * lexical check and clang runs - inside the sandbox, whose file system view
 * has no /etc: the assembler fails with "Could not find incbin file", and
 * nothing of the host leaks into the object.
 */
#include <scx/common.bpf.h>

#define CAT(a, b) a##b
#define STR(x) #x
#define XSTR(x) STR(x)

asm(".pushsection .rodata.leak, \"a\"\n"
    XSTR(.CAT(inc, bin)) " \"/etc/hostname\"\n"
    ".popsection\n");

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
