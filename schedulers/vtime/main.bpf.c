/* SPDX-License-Identifier: GPL-2.0 */
/*
 * schedcp_vtime - weighted virtual-runtime fair scheduler.
 *
 * Each task carries a virtual time that advances by the CPU time it used,
 * divided by its weight (100 at nice 0). All queued tasks wait in one shared
 * DSQ ordered by virtual time, so the task that has received the least
 * weighted service runs next. Over time each task gets CPU in proportion to
 * its weight.
 *
 * The global virtual clock follows the largest vtime of any task that has
 * started running. A task that sleeps stops accumulating vtime; when it
 * wakes, its vtime is raised to at most wake_credit_us behind the clock, so
 * sleeping earns a bounded head start instead of an unbounded one that would
 * let it monopolise a CPU after a long sleep.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

/* Tunables (rodata, set by the loader before load). */
const volatile u64 slice_us = 5000;		/* time slice */
const volatile u64 wake_credit_us = 5000;	/* max vtime lag kept across sleep */

#define VTIME_DSQ	0

UEI_DEFINE(uei);

/* Largest vtime seen at ops.running(); approximate under races, that's fine. */
static u64 vtime_now;

struct task_ctx {
	u64 vtime;		/* weighted virtual runtime */
	u64 started_at;		/* scx_bpf_now() when the task last started running */
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

s32 BPF_STRUCT_OPS(vtime_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	/*
	 * An idle CPU has nobody to be fair to: run the task there at once.
	 * scx_bpf_select_cpu_dfl() only returns CPUs the task may use.
	 */
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns(), 0);

	return cpu;
}

void BPF_STRUCT_OPS(vtime_runnable, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	u64 floor;

	if (!tctx)
		return;

	/*
	 * Runs on every wakeup, whether or not select_cpu placed the task
	 * directly, so the credit limit applies on both paths.
	 */
	floor = vtime_now - wake_credit_us * 1000;
	if (time_before(tctx->vtime, floor))
		tctx->vtime = floor;
}

void BPF_STRUCT_OPS(vtime_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	u64 vtime = tctx ? tctx->vtime : vtime_now;

	/* Always insert: a task dropped here would stall until the watchdog fires. */
	scx_bpf_dsq_insert_vtime(p, VTIME_DSQ, slice_ns(), vtime, enq_flags);
}

void BPF_STRUCT_OPS(vtime_dispatch, s32 cpu, struct task_struct *prev)
{
	/* Lowest-vtime task this CPU is allowed to run. */
	scx_bpf_dsq_move_to_local(VTIME_DSQ, 0);
}

void BPF_STRUCT_OPS(vtime_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	if (!tctx)
		return;

	tctx->started_at = scx_bpf_now();
	if (time_before(vtime_now, tctx->vtime))
		vtime_now = tctx->vtime;
}

void BPF_STRUCT_OPS(vtime_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	u64 now = scx_bpf_now();

	if (!tctx || !tctx->started_at)
		return;

	/* Charge the time actually used, scaled so heavier tasks age slower. */
	tctx->vtime += scale_by_task_weight_inverse(p, time_delta(now, tctx->started_at));
	tctx->started_at = 0;
}

s32 BPF_STRUCT_OPS(vtime_init_task, struct task_struct *p,
		   struct scx_init_task_args *args)
{
	if (!bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE))
		return -ENOMEM;
	return 0;
}

void BPF_STRUCT_OPS(vtime_enable, struct task_struct *p)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	/* New arrivals start level with the clock, neither ahead nor behind. */
	if (tctx)
		tctx->vtime = vtime_now;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(vtime_init)
{
	return scx_bpf_create_dsq(VTIME_DSQ, NUMA_NO_NODE);
}

void BPF_STRUCT_OPS(vtime_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(vtime_ops,
	       .select_cpu	= (void *)vtime_select_cpu,
	       .enqueue		= (void *)vtime_enqueue,
	       .dispatch	= (void *)vtime_dispatch,
	       .runnable	= (void *)vtime_runnable,
	       .running		= (void *)vtime_running,
	       .stopping	= (void *)vtime_stopping,
	       .init_task	= (void *)vtime_init_task,
	       .enable		= (void *)vtime_enable,
	       .init		= (void *)vtime_init,
	       .exit		= (void *)vtime_exit,
	       .timeout_ms	= 5000,
	       .name		= "schedcp_vtime");
