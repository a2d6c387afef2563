/* SPDX-License-Identifier: GPL-2.0 */
/*
 * schedcp_latency - deadline scheduler that favours short CPU bursts.
 *
 * Every task has a weighted virtual runtime (vtime), exactly as in a fair
 * scheduler, and a "burst" estimate: how long it typically runs between
 * wakeup and going back to sleep (an EWMA over past bursts, or the current
 * burst if that is already longer). Queued tasks are ordered by
 *
 *	deadline = vtime + min(burst, burst_cap) * 100 / weight
 *
 * so among tasks with similar service, those that only need the CPU briefly
 * (interactive, I/O bound, message passing) are picked before CPU hogs. The
 * vtime term keeps it fair over the long run: a hog that keeps losing to
 * short-burst tasks falls behind in vtime until its deadline is the earliest.
 *
 * Latency also comes from placement and short slices: a waking task goes
 * directly to an idle CPU when there is one, an idle CPU is kicked when a
 * waking task has to be queued, and nobody holds a CPU for longer than
 * slice_us while others wait.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

/* Tunables (rodata, set by the loader before load). */
const volatile u64 slice_us = 2000;		/* time slice */
const volatile u64 burst_cap_us = 10000;	/* max deadline penalty for long bursts */
const volatile u64 wake_credit_us = 2000;	/* max vtime lag kept across sleep */

#define LAT_DSQ		0

UEI_DEFINE(uei);

/* Largest vtime seen at ops.running(); approximate under races, that's fine. */
static u64 vtime_now;

struct task_ctx {
	u64 vtime;		/* weighted virtual runtime */
	u64 started_at;		/* scx_bpf_now() at the last ops.running() */
	u64 burst;		/* CPU time used since the task last woke */
	u64 avg_burst;		/* EWMA of completed bursts */
};

/* Freed by the kernel together with the task, so exits need no cleanup. */
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

static __always_inline u64 task_deadline(struct task_struct *p,
					 struct task_ctx *tctx)
{
	u64 cap = burst_cap_us * 1000;
	u64 burst = tctx->avg_burst;

	/* A task in the middle of a long burst is treated as long already. */
	if (tctx->burst > burst)
		burst = tctx->burst;
	if (burst > cap)
		burst = cap;

	return tctx->vtime + scale_by_task_weight_inverse(p, burst);
}

s32 BPF_STRUCT_OPS(latency_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	/*
	 * Prefers prev_cpu if idle (cache-warm), then other idle CPUs; only
	 * ever returns CPUs in p->cpus_ptr. Inserting into the local DSQ of
	 * the idle CPU it claimed lets the task run without a dispatch pass.
	 */
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns(), 0);

	return cpu;
}

void BPF_STRUCT_OPS(latency_runnable, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	u64 floor;

	if (!tctx)
		return;

	/* Cap the credit a sleeper brings back, on every wakeup path. */
	floor = vtime_now - wake_credit_us * 1000;
	if (time_before(tctx->vtime, floor))
		tctx->vtime = floor;
}

void BPF_STRUCT_OPS(latency_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	u64 deadline = tctx ? task_deadline(p, tctx) : vtime_now;
	s32 cpu;

	scx_bpf_dsq_insert_vtime(p, LAT_DSQ, slice_ns(), deadline, enq_flags);

	/*
	 * A waking task lands here when select_cpu found no idle CPU, but one
	 * may have gone idle since. Wake it so it pulls from LAT_DSQ now.
	 * Re-queues after a slice expires are left alone: their CPU dispatches
	 * right after this, and kicking another CPU would only bounce the task.
	 */
	if (!(enq_flags & SCX_ENQ_WAKEUP))
		return;
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0)
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void BPF_STRUCT_OPS(latency_dispatch, s32 cpu, struct task_struct *prev)
{
	/* Earliest-deadline task this CPU is allowed to run. */
	scx_bpf_dsq_move_to_local(LAT_DSQ, 0);
}

void BPF_STRUCT_OPS(latency_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	if (!tctx)
		return;

	tctx->started_at = scx_bpf_now();
	if (time_before(vtime_now, tctx->vtime))
		vtime_now = tctx->vtime;
}

void BPF_STRUCT_OPS(latency_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	u64 now = scx_bpf_now();
	u64 ran;

	if (!tctx || !tctx->started_at)
		return;

	ran = time_delta(now, tctx->started_at);
	tctx->started_at = 0;
	tctx->vtime += scale_by_task_weight_inverse(p, ran);
	tctx->burst += ran;
}

void BPF_STRUCT_OPS(latency_quiescent, struct task_struct *p, u64 deq_flags)
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
	 * Fold the finished burst into the average (new sample weighted 1/4).
	 * Clamping to the cap first means a former hog that turns interactive
	 * recovers within a few bursts.
	 */
	cap = burst_cap_us * 1000;
	burst = tctx->burst < cap ? tctx->burst : cap;
	tctx->avg_burst = tctx->avg_burst - (tctx->avg_burst >> 2) + (burst >> 2);
	tctx->burst = 0;
}

s32 BPF_STRUCT_OPS(latency_init_task, struct task_struct *p,
		   struct scx_init_task_args *args)
{
	if (!bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE))
		return -ENOMEM;
	return 0;
}

void BPF_STRUCT_OPS(latency_enable, struct task_struct *p)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	/* New tasks start level with the clock and with no burst history. */
	if (tctx)
		tctx->vtime = vtime_now;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(latency_init)
{
	return scx_bpf_create_dsq(LAT_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(latency_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(latency_ops,
	       .select_cpu	= (void *)latency_select_cpu,
	       .enqueue		= (void *)latency_enqueue,
	       .dispatch	= (void *)latency_dispatch,
	       .runnable	= (void *)latency_runnable,
	       .running		= (void *)latency_running,
	       .stopping	= (void *)latency_stopping,
	       .quiescent	= (void *)latency_quiescent,
	       .init_task	= (void *)latency_init_task,
	       .enable		= (void *)latency_enable,
	       .init		= (void *)latency_init,
	       .exit		= (void *)latency_exit,
	       .timeout_ms	= 5000,
	       .name		= "schedcp_latency");
