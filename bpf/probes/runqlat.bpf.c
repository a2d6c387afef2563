// SPDX-License-Identifier: GPL-2.0
/*
 * runqlat: run-queue latency, the time from a task becoming runnable
 * (woken, newly created, or preempted while still runnable) to it running on
 * a CPU, as a log2 histogram of microseconds.
 *
 * This probe fires on every wakeup and every context switch, so its hot
 * paths are kept to a clock read and a few loads and stores, without a lock,
 * an atomic or a helper call besides the clock:
 *
 * - Enqueue timestamps live in a direct-mapped array indexed by the low 16
 *   bits of the pid (an inlined bounds check, not a hash), 512 KiB in all.
 *   Each slot packs the rest of the pid (a tag) with the timestamp in one
 *   u64, so it is written and read in one go and never seen torn. While
 *   pid_max <= 65536 every task has a slot of its own; above that, two
 *   tasks 65536 pids apart that wait at the same time share one, the later
 *   enqueue wins, and the other's latency is counted as lost. (A pid-keyed
 *   hash map costs a hash and a bucket walk per event, its update and delete
 *   take the bucket lock; task-local storage measured ~60 ns more per event
 *   here.)
 * - The histogram is per-CPU, bumped without atomics: the tracepoints fire
 *   with interrupts off, so nothing else runs on this CPU meanwhile.
 *   Userspace sums the CPUs.
 * - sched_switch reads the clock once, for both the preempted task's
 *   enqueue and the incoming task's latency.
 */
#include "probe.h"

/* Slot i counts latencies in [2^i, 2^(i+1)) µs (slot 0 also holds 0). 2^31 µs
 * is 36 minutes: nothing is ever clamped in practice, but the index is. */
#define RQ_SLOTS 32

#define RQ_INDEX_BITS 16
#define RQ_ENTRIES (1U << RQ_INDEX_BITS)
/* A slot: pid >> RQ_INDEX_BITS in the top 6 bits (pids are below 2^22),
 * bpf_ktime_get_ns in the low 58 (9 years of uptime); 0 = empty. */
#define RQ_TAG_SHIFT 58
#define RQ_TS_MASK ((1ULL << RQ_TAG_SHIFT) - 1)

struct rq_hist {
	u64 slots[RQ_SLOTS];
	u64 sum_ns;
	u64 max_ns;
	/* Latencies not measured: another task's enqueue took the slot. */
	u64 lost;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct rq_hist);
} scp_rq_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RQ_ENTRIES);
	__type(key, u32);
	__type(value, u64);
} scp_rq_start SEC(".maps");

static __always_inline u64 *rq_slot(u32 pid)
{
	u32 idx = pid & (RQ_ENTRIES - 1);

	return bpf_map_lookup_elem(&scp_rq_start, &idx);
}

static __always_inline u64 rq_tag(u32 pid)
{
	return (u64)(pid >> RQ_INDEX_BITS) << RQ_TAG_SHIFT;
}

static __always_inline void rq_enqueued(struct task_struct *p, u64 now)
{
	u32 pid = p->pid;
	u64 *slot;

	/* pid 0 is a CPU's idle task: never queued. */
	if (!pid || !scp_wanted(p))
		return;
	slot = rq_slot(pid);
	if (slot)
		*slot = rq_tag(pid) | (now & RQ_TS_MASK);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(scp_rq_wake, struct task_struct *p)
{
	rq_enqueued(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(scp_rq_wake_new, struct task_struct *p)
{
	rq_enqueued(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(scp_rq_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 now = bpf_ktime_get_ns();
	u32 pid = next->pid, zero = 0, bucket;
	struct rq_hist *h;
	u64 *slot, v, delta;

	/* Still runnable when switched out (preempted, or yielded): it goes
	 * straight back on the run queue and waits from now. */
	if (scp_task_state(prev) == SCP_TASK_RUNNING)
		rq_enqueued(prev, now);

	if (!pid)
		return 0;
	slot = rq_slot(pid);
	if (!slot)
		return 0;
	v = *slot;
	/* Empty: not enqueued while we watched, or filtered out. */
	if (!v)
		return 0;
	h = bpf_map_lookup_elem(&scp_rq_hist, &zero);
	if (!h)
		return 0;
	if ((v & ~RQ_TS_MASK) != rq_tag(pid)) {
		h->lost++;
		return 0;
	}
	*slot = 0;
	delta = (now & RQ_TS_MASK) - (v & RQ_TS_MASK);
	/* A timestamp taken on another CPU can be a hair ahead of this one. */
	if ((s64)delta < 0)
		delta = 0;
	bucket = scp_log2(delta / 1000);
	if (bucket >= RQ_SLOTS)
		bucket = RQ_SLOTS - 1;
	h->slots[bucket]++;
	h->sum_ns += delta;
	if (delta > h->max_ns)
		h->max_ns = delta;
	return 0;
}
