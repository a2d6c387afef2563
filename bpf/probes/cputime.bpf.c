// SPDX-License-Identifier: GPL-2.0
/*
 * cputime: per-task on-CPU and off-CPU time within the probe's window, from
 * sched_switch alone.
 *
 * Each task's entry records whether it was last seen switching in or out
 * and when; every switch closes the interval that just ended. The window is
 * opened by userspace writing window_start_ns once the program is attached,
 * and closed by writing window_end_ns before detaching; switches outside it
 * are ignored. Attaching and detaching a trampoline take milliseconds, and
 * bounding the window this way keeps that out of the figures: a task first
 * seen switching out has been on its CPU since before the window opened (its
 * switch in would have been seen otherwise), so its first interval is counted
 * from the window's start (or from the task's creation, if later), and
 * likewise off-CPU for a task first seen switching in. Userspace closes the
 * intervals still open at window_end_ns. Off-CPU time is sleeping plus
 * waiting on a run queue (the runqlat probe measures the latter on its own).
 *
 * A task's entry is only touched by the switch that takes it off a CPU and
 * the one that puts it on: the scheduler never runs both at once for the
 * same task, so plain read-modify-write is safe.
 */
#include "probe.h"

#define CPU_MAX_TASKS 10240

struct cpu_task {
	u64 on_ns;
	u64 off_ns;
	/* bpf_ktime_get_ns of the last switch in or out. */
	u64 last_ns;
	u32 tgid;
	/* Times switched in; switch-outs while still runnable (involuntary:
	 * preempted or yielded). */
	u32 switches;
	u32 involuntary;
	/* 1: last seen switching in; 0: switching out. */
	u8 on_cpu;
	/* Switched out for the last time (exiting): no open interval. */
	u8 dead;
	u8 pad[2];
	char comm[SCP_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CPU_MAX_TASKS);
	__type(key, u32);
	__type(value, struct cpu_task);
} scp_cpu_tasks SEC(".maps");

/* CLOCK_MONOTONIC ns; 0 = not yet open / still open. */
u64 window_start_ns = 0;
u64 window_end_ns = 0;
/* Tasks not tracked because scp_cpu_tasks was full. */
u64 dropped = 0;

/* Where a task's first interval in the window began: the window's start,
 * or the task's creation if later (both CLOCK_MONOTONIC, like
 * bpf_ktime_get_ns). */
static __always_inline u64 interval_start(const struct task_struct *p, u64 now)
{
	u64 from = window_start_ns;

	if (p->start_time > from)
		from = p->start_time;
	return from < now ? from : now;
}

/* Close the interval that ends with this switch of p (in: it goes on a CPU;
 * out: it leaves one), creating p's entry on first sight. */
static __always_inline void switched(struct task_struct *p, u64 now, bool in,
				     unsigned int prev_state)
{
	u32 pid = p->pid;
	struct cpu_task *t;

	/* pid 0 is a CPU's idle task. */
	if (!pid || !scp_wanted(p))
		return;
	t = bpf_map_lookup_elem(&scp_cpu_tasks, &pid);
	if (!t) {
		/* Not seen yet in the window: it has been in the opposite
		 * state since the window (or the task) began. */
		struct cpu_task init = {
			.tgid = p->tgid,
			.last_ns = interval_start(p, now),
			.on_cpu = !in,
		};

		bpf_probe_read_kernel_str(init.comm, sizeof(init.comm), p->comm);
		bpf_map_update_elem(&scp_cpu_tasks, &pid, &init, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&scp_cpu_tasks, &pid);
		if (!t) {
			__sync_fetch_and_add(&dropped, 1);
			return;
		}
	}
	if (in) {
		if (!t->on_cpu)
			t->off_ns += now - t->last_ns;
		t->on_cpu = 1;
		t->switches++;
	} else {
		if (t->on_cpu)
			t->on_ns += now - t->last_ns;
		t->on_cpu = 0;
		if (prev_state == SCP_TASK_RUNNING)
			t->involuntary++;
		if (prev_state & SCP_TASK_DEAD)
			t->dead = 1;
	}
	t->last_ns = now;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(scp_cpu_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 now = bpf_ktime_get_ns();

	if (!window_start_ns || window_end_ns)
		return 0;
	switched(prev, now, false, scp_task_state(prev));
	switched(next, now, true, 0);
	return 0;
}
