// SPDX-License-Identifier: GPL-2.0
/*
 * schedevents: per-process (tgid) counts of scheduler events: context
 * switches (and how many were involuntary), wakeups, wakeups of new tasks,
 * migrations, forks and execs.
 *
 * Counts live in a per-CPU hash keyed by tgid so that threads of one
 * process counting on different CPUs never contend for a cache line and
 * need no atomics; userspace sums the CPUs. Process names live apart, in a
 * shared hash written only when a process is first seen or execs.
 *
 * Plain increments are safe even from the preemptible fork and exec
 * tracepoints: each counter has a single writing program, and the
 * trampoline never lets a program nest inside itself on one CPU (a second
 * entry is dropped and shows as a recursion miss).
 */
#include "probe.h"

#define EV_MAX_PROCS 10240

enum ev_kind {
	EV_SWITCH,	/* a thread was switched out */
	EV_INVOLUNTARY,	/* ... while still runnable (preempted or yielded) */
	EV_WAKEUP,	/* sched_wakeup */
	EV_WAKEUP_NEW,	/* sched_wakeup_new: a new task's first wakeup */
	EV_MIGRATE,	/* sched_migrate_task */
	EV_FORK,	/* sched_process_fork, counted for the parent (threads too) */
	EV_EXEC,	/* sched_process_exec */
	EV_KINDS,
};

struct ev_counts {
	u64 n[EV_KINDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, EV_MAX_PROCS);
	__type(key, u32);
	__type(value, struct ev_counts);
} scp_ev_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EV_MAX_PROCS);
	__type(key, u32);
	__type(value, char[SCP_COMM_LEN]);
} scp_ev_comm SEC(".maps");

/* Events not counted because scp_ev_counts was full. */
u64 dropped = 0;

static __always_inline void name_process(struct task_struct *p, u32 tgid, u64 flags)
{
	char comm[SCP_COMM_LEN];

	/* The group leader's name: the process, not whichever thread came
	 * first. */
	BPF_CORE_READ_STR_INTO(&comm, p, group_leader, comm);
	bpf_map_update_elem(&scp_ev_comm, &tgid, &comm, flags);
}

/* p's process's counters on this CPU, created on first sight; NULL if p is
 * filtered out, an idle task, or the map is full. */
static __always_inline struct ev_counts *counts(struct task_struct *p)
{
	struct ev_counts *c, zero = {};
	u32 tgid;

	if (!p->pid || !scp_wanted(p))
		return NULL;
	tgid = p->tgid;
	c = bpf_map_lookup_elem(&scp_ev_counts, &tgid);
	if (c)
		return c;
	bpf_map_update_elem(&scp_ev_counts, &tgid, &zero, BPF_NOEXIST);
	c = bpf_map_lookup_elem(&scp_ev_counts, &tgid);
	if (!c) {
		__sync_fetch_and_add(&dropped, 1);
		return NULL;
	}
	name_process(p, tgid, BPF_NOEXIST);
	return c;
}

static __always_inline void count(struct task_struct *p, enum ev_kind kind)
{
	struct ev_counts *c = counts(p);

	if (c)
		c->n[kind]++;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(scp_ev_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct ev_counts *c = counts(prev);

	if (!c)
		return 0;
	c->n[EV_SWITCH]++;
	if (scp_task_state(prev) == SCP_TASK_RUNNING)
		c->n[EV_INVOLUNTARY]++;
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(scp_ev_wake, struct task_struct *p)
{
	count(p, EV_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(scp_ev_wake_new, struct task_struct *p)
{
	count(p, EV_WAKEUP_NEW);
	return 0;
}

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(scp_ev_migrate, struct task_struct *p, int dest_cpu)
{
	count(p, EV_MIGRATE);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(scp_ev_fork, struct task_struct *parent, struct task_struct *child)
{
	count(parent, EV_FORK);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(scp_ev_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	count(p, EV_EXEC);
	/* The process has a new name now. */
	if (p->pid && scp_wanted(p))
		name_process(p, p->tgid, BPF_ANY);
	return 0;
}
