/* SPDX-License-Identifier: GPL-2.0 */
/*
 * schedcp_batch - shortest-job-first batch scheduler with aging.
 *
 * The "length" of a job is learned, not declared: for each task we keep an
 * EWMA of how much CPU it uses per burst (from wakeup until it sleeps again),
 * and a task still inside a longer burst counts as at least that long. Job
 * length is capped at long_job_ms; everything beyond counts as "long".
 *
 * Queued tasks are ordered by a key fixed at enqueue time:
 *
 *	key = now + max_wait_ms * length / long_job_ms
 *
 * With shortest-first a long job is pushed back by up to max_wait_ms, which
 * is the same as priority = length penalty - time waited: every nanosecond a
 * task waits cancels a nanosecond of penalty, and once a task has waited
 * max_wait_ms nothing that arrives later can overtake it. That is the aging
 * term that prevents starvation. longest_first inverts the penalty.
 *
 * Slices are long because batch work values throughput and cache warmth
 * over responsiveness. A waking task takes an idle CPU directly when there
 * is one, bypassing the queue: ordering only matters when tasks compete.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

/* Tunables (rodata, set by the loader before load). */
const volatile u64 slice_us = 20000;		/* time slice */
const volatile u64 long_job_ms = 1000;		/* length at which a job counts as maximally long */
const volatile u64 max_wait_ms = 1000;		/* largest penalty: longest job (shortest if longest_first) */
const volatile bool longest_first = false;	/* run long jobs first instead */

#define BATCH_DSQ	0

UEI_DEFINE(uei);

struct task_ctx {
	u64 started_at;		/* scx_bpf_now() at the last ops.running() */
	u64 burst;		/* CPU time used since the task last woke */
	u64 avg_burst;		/* EWMA of completed bursts, capped at long_job_ms */
};

/*
 * Task-local storage is freed by the kernel when the task is, so exiting
 * tasks leave nothing behind (a pid-keyed hash would need ops.exit_task).
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

static __always_inline struct task_ctx *lookup_task_ctx(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, 0);
}

static __always_inline u64 slice_ns(void)
{
	return slice_us * 1000;
}

static __always_inline u64 long_job_ns(void)
{
	return long_job_ms * 1000 * 1000;
}

/* Ordering penalty in ns, in [0, max_wait_ms]. */
static __always_inline u64 task_penalty(struct task_struct *p)
{
	struct task_ctx *tctx;
	u64 cap = long_job_ns();
	u64 len;

	/*
	 * Kernel threads (kworkers, ksoftirqd, ...) are not batch jobs and
	 * other work often waits on them: never push them back.
	 */
	if (p->flags & PF_KTHREAD)
		return 0;

	tctx = lookup_task_ctx(p);
	if (!tctx)
		return 0;

	len = tctx->avg_burst;
	if (tctx->burst > len)
		len = tctx->burst;
	if (len > cap)
		len = cap;
	if (longest_first)
		len = cap - len;

	/* len <= long_job_ms * 1e6, so this cannot overflow for sane tunables. */
	return len * max_wait_ms / long_job_ms;
}

s32 BPF_STRUCT_OPS(batch_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	/* Only ever returns CPUs in p->cpus_ptr, so affinity is respected. */
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns(), 0);

	return cpu;
}

void BPF_STRUCT_OPS(batch_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 key = scx_bpf_now() + task_penalty(p);

	scx_bpf_dsq_insert_vtime(p, BATCH_DSQ, slice_ns(), key, enq_flags);
}

void BPF_STRUCT_OPS(batch_dispatch, s32 cpu, struct task_struct *prev)
{
	/* Smallest key among tasks this CPU is allowed to run. */
	scx_bpf_dsq_move_to_local(BATCH_DSQ, 0);
}

void BPF_STRUCT_OPS(batch_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	if (tctx)
		tctx->started_at = scx_bpf_now();
}

void BPF_STRUCT_OPS(batch_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	u64 now = scx_bpf_now();

	if (!tctx || !tctx->started_at)
		return;

	tctx->burst += time_delta(now, tctx->started_at);
	tctx->started_at = 0;
}

void BPF_STRUCT_OPS(batch_quiescent, struct task_struct *p, u64 deq_flags)
{
	struct task_ctx *tctx;
	u64 burst, cap;

	/*
	 * Only a real sleep ends a burst; dequeues for attribute changes
	 * (affinity, nice, ...) are followed straight by a re-enqueue.
	 */
	if (!(deq_flags & SCX_DEQ_SLEEP))
		return;

	tctx = lookup_task_ctx(p);
	if (!tctx)
		return;

	/*
	 * Fold the finished burst into the average with weight 1/4. Clamping
	 * first keeps one enormous burst from dominating the estimate for
	 * dozens of bursts after.
	 */
	cap = long_job_ns();
	burst = tctx->burst < cap ? tctx->burst : cap;
	tctx->avg_burst = tctx->avg_burst - (tctx->avg_burst >> 2) + (burst >> 2);
	tctx->burst = 0;
}

s32 BPF_STRUCT_OPS(batch_init_task, struct task_struct *p,
		   struct scx_init_task_args *args)
{
	/* Zeroed: new tasks look short, so short-lived jobs finish quickly. */
	if (!bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE))
		return -ENOMEM;
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(batch_init)
{
	return scx_bpf_create_dsq(BATCH_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(batch_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(batch_ops,
	       .select_cpu	= (void *)batch_select_cpu,
	       .enqueue		= (void *)batch_enqueue,
	       .dispatch	= (void *)batch_dispatch,
	       .running		= (void *)batch_running,
	       .stopping	= (void *)batch_stopping,
	       .quiescent	= (void *)batch_quiescent,
	       .init_task	= (void *)batch_init_task,
	       .init		= (void *)batch_init,
	       .exit		= (void *)batch_exit,
	       /* Long slices make round-robin waits longer; leave headroom. */
	       .timeout_ms	= 10000,
	       .name		= "schedcp_batch");
