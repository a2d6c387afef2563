//! The tables behind the rules: helper ids → names, what a scheduler may
//! call, and the per-call cost model. Each table says why it says what it does.

/// `(libbpf_sys::BPF_FUNC_x, "BPF_FUNC_x")` for every helper libbpf-sys knows.
/// The ids come from libbpf-sys (the kernel's `enum bpf_func_id`), so a typo
/// here is a compile error, never a wrong id; the unit tests check the table
/// is dense (entry i has id i) so lookup is an index.
macro_rules! helper_table {
    ($($c:ident),* $(,)?) => {
        pub(super) static HELPERS: &[(u32, &str)] = &[$((libbpf_sys::$c, stringify!($c))),*];
    };
}

helper_table! {
    BPF_FUNC_unspec, BPF_FUNC_map_lookup_elem, BPF_FUNC_map_update_elem, BPF_FUNC_map_delete_elem,
    BPF_FUNC_probe_read, BPF_FUNC_ktime_get_ns, BPF_FUNC_trace_printk, BPF_FUNC_get_prandom_u32,
    BPF_FUNC_get_smp_processor_id, BPF_FUNC_skb_store_bytes, BPF_FUNC_l3_csum_replace,
    BPF_FUNC_l4_csum_replace, BPF_FUNC_tail_call, BPF_FUNC_clone_redirect,
    BPF_FUNC_get_current_pid_tgid, BPF_FUNC_get_current_uid_gid, BPF_FUNC_get_current_comm,
    BPF_FUNC_get_cgroup_classid, BPF_FUNC_skb_vlan_push, BPF_FUNC_skb_vlan_pop,
    BPF_FUNC_skb_get_tunnel_key, BPF_FUNC_skb_set_tunnel_key, BPF_FUNC_perf_event_read,
    BPF_FUNC_redirect, BPF_FUNC_get_route_realm, BPF_FUNC_perf_event_output,
    BPF_FUNC_skb_load_bytes, BPF_FUNC_get_stackid, BPF_FUNC_csum_diff, BPF_FUNC_skb_get_tunnel_opt,
    BPF_FUNC_skb_set_tunnel_opt, BPF_FUNC_skb_change_proto, BPF_FUNC_skb_change_type,
    BPF_FUNC_skb_under_cgroup, BPF_FUNC_get_hash_recalc, BPF_FUNC_get_current_task,
    BPF_FUNC_probe_write_user, BPF_FUNC_current_task_under_cgroup, BPF_FUNC_skb_change_tail,
    BPF_FUNC_skb_pull_data, BPF_FUNC_csum_update, BPF_FUNC_set_hash_invalid,
    BPF_FUNC_get_numa_node_id, BPF_FUNC_skb_change_head, BPF_FUNC_xdp_adjust_head,
    BPF_FUNC_probe_read_str, BPF_FUNC_get_socket_cookie, BPF_FUNC_get_socket_uid,
    BPF_FUNC_set_hash, BPF_FUNC_setsockopt, BPF_FUNC_skb_adjust_room, BPF_FUNC_redirect_map,
    BPF_FUNC_sk_redirect_map, BPF_FUNC_sock_map_update, BPF_FUNC_xdp_adjust_meta,
    BPF_FUNC_perf_event_read_value, BPF_FUNC_perf_prog_read_value, BPF_FUNC_getsockopt,
    BPF_FUNC_override_return, BPF_FUNC_sock_ops_cb_flags_set, BPF_FUNC_msg_redirect_map,
    BPF_FUNC_msg_apply_bytes, BPF_FUNC_msg_cork_bytes, BPF_FUNC_msg_pull_data, BPF_FUNC_bind,
    BPF_FUNC_xdp_adjust_tail, BPF_FUNC_skb_get_xfrm_state, BPF_FUNC_get_stack,
    BPF_FUNC_skb_load_bytes_relative, BPF_FUNC_fib_lookup, BPF_FUNC_sock_hash_update,
    BPF_FUNC_msg_redirect_hash, BPF_FUNC_sk_redirect_hash, BPF_FUNC_lwt_push_encap,
    BPF_FUNC_lwt_seg6_store_bytes, BPF_FUNC_lwt_seg6_adjust_srh, BPF_FUNC_lwt_seg6_action,
    BPF_FUNC_rc_repeat, BPF_FUNC_rc_keydown, BPF_FUNC_skb_cgroup_id,
    BPF_FUNC_get_current_cgroup_id, BPF_FUNC_get_local_storage, BPF_FUNC_sk_select_reuseport,
    BPF_FUNC_skb_ancestor_cgroup_id, BPF_FUNC_sk_lookup_tcp, BPF_FUNC_sk_lookup_udp,
    BPF_FUNC_sk_release, BPF_FUNC_map_push_elem, BPF_FUNC_map_pop_elem, BPF_FUNC_map_peek_elem,
    BPF_FUNC_msg_push_data, BPF_FUNC_msg_pop_data, BPF_FUNC_rc_pointer_rel, BPF_FUNC_spin_lock,
    BPF_FUNC_spin_unlock, BPF_FUNC_sk_fullsock, BPF_FUNC_tcp_sock, BPF_FUNC_skb_ecn_set_ce,
    BPF_FUNC_get_listener_sock, BPF_FUNC_skc_lookup_tcp, BPF_FUNC_tcp_check_syncookie,
    BPF_FUNC_sysctl_get_name, BPF_FUNC_sysctl_get_current_value, BPF_FUNC_sysctl_get_new_value,
    BPF_FUNC_sysctl_set_new_value, BPF_FUNC_strtol, BPF_FUNC_strtoul, BPF_FUNC_sk_storage_get,
    BPF_FUNC_sk_storage_delete, BPF_FUNC_send_signal, BPF_FUNC_tcp_gen_syncookie,
    BPF_FUNC_skb_output, BPF_FUNC_probe_read_user, BPF_FUNC_probe_read_kernel,
    BPF_FUNC_probe_read_user_str, BPF_FUNC_probe_read_kernel_str, BPF_FUNC_tcp_send_ack,
    BPF_FUNC_send_signal_thread, BPF_FUNC_jiffies64, BPF_FUNC_read_branch_records,
    BPF_FUNC_get_ns_current_pid_tgid, BPF_FUNC_xdp_output, BPF_FUNC_get_netns_cookie,
    BPF_FUNC_get_current_ancestor_cgroup_id, BPF_FUNC_sk_assign, BPF_FUNC_ktime_get_boot_ns,
    BPF_FUNC_seq_printf, BPF_FUNC_seq_write, BPF_FUNC_sk_cgroup_id, BPF_FUNC_sk_ancestor_cgroup_id,
    BPF_FUNC_ringbuf_output, BPF_FUNC_ringbuf_reserve, BPF_FUNC_ringbuf_submit,
    BPF_FUNC_ringbuf_discard, BPF_FUNC_ringbuf_query, BPF_FUNC_csum_level,
    BPF_FUNC_skc_to_tcp6_sock, BPF_FUNC_skc_to_tcp_sock, BPF_FUNC_skc_to_tcp_timewait_sock,
    BPF_FUNC_skc_to_tcp_request_sock, BPF_FUNC_skc_to_udp6_sock, BPF_FUNC_get_task_stack,
    BPF_FUNC_load_hdr_opt, BPF_FUNC_store_hdr_opt, BPF_FUNC_reserve_hdr_opt,
    BPF_FUNC_inode_storage_get, BPF_FUNC_inode_storage_delete, BPF_FUNC_d_path,
    BPF_FUNC_copy_from_user, BPF_FUNC_snprintf_btf, BPF_FUNC_seq_printf_btf,
    BPF_FUNC_skb_cgroup_classid, BPF_FUNC_redirect_neigh, BPF_FUNC_per_cpu_ptr,
    BPF_FUNC_this_cpu_ptr, BPF_FUNC_redirect_peer, BPF_FUNC_task_storage_get,
    BPF_FUNC_task_storage_delete, BPF_FUNC_get_current_task_btf, BPF_FUNC_bprm_opts_set,
    BPF_FUNC_ktime_get_coarse_ns, BPF_FUNC_ima_inode_hash, BPF_FUNC_sock_from_file,
    BPF_FUNC_check_mtu, BPF_FUNC_for_each_map_elem, BPF_FUNC_snprintf, BPF_FUNC_sys_bpf,
    BPF_FUNC_btf_find_by_name_kind, BPF_FUNC_sys_close, BPF_FUNC_timer_init,
    BPF_FUNC_timer_set_callback, BPF_FUNC_timer_start, BPF_FUNC_timer_cancel, BPF_FUNC_get_func_ip,
    BPF_FUNC_get_attach_cookie, BPF_FUNC_task_pt_regs, BPF_FUNC_get_branch_snapshot,
    BPF_FUNC_trace_vprintk, BPF_FUNC_skc_to_unix_sock, BPF_FUNC_kallsyms_lookup_name,
    BPF_FUNC_find_vma, BPF_FUNC_loop, BPF_FUNC_strncmp, BPF_FUNC_get_func_arg,
    BPF_FUNC_get_func_ret, BPF_FUNC_get_func_arg_cnt, BPF_FUNC_get_retval, BPF_FUNC_set_retval,
    BPF_FUNC_xdp_get_buff_len, BPF_FUNC_xdp_load_bytes, BPF_FUNC_xdp_store_bytes,
    BPF_FUNC_copy_from_user_task, BPF_FUNC_skb_set_tstamp, BPF_FUNC_ima_file_hash,
    BPF_FUNC_kptr_xchg, BPF_FUNC_map_lookup_percpu_elem, BPF_FUNC_skc_to_mptcp_sock,
    BPF_FUNC_dynptr_from_mem, BPF_FUNC_ringbuf_reserve_dynptr, BPF_FUNC_ringbuf_submit_dynptr,
    BPF_FUNC_ringbuf_discard_dynptr, BPF_FUNC_dynptr_read, BPF_FUNC_dynptr_write,
    BPF_FUNC_dynptr_data, BPF_FUNC_tcp_raw_gen_syncookie_ipv4, BPF_FUNC_tcp_raw_gen_syncookie_ipv6,
    BPF_FUNC_tcp_raw_check_syncookie_ipv4, BPF_FUNC_tcp_raw_check_syncookie_ipv6,
    BPF_FUNC_ktime_get_tai_ns, BPF_FUNC_user_ringbuf_drain, BPF_FUNC_cgrp_storage_get,
    BPF_FUNC_cgrp_storage_delete,
}

/// The C name of helper `id` (`bpf_map_lookup_elem`), if libbpf-sys knows it.
pub fn helper_name(id: i32) -> Option<String> {
    let (_, c) = HELPERS.get(usize::try_from(id).ok()?)?;
    Some(format!("bpf_{}", c.strip_prefix("BPF_FUNC_").unwrap_or(c)))
}

/// What a rule says about one helper or kfunc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ruling {
    Allow,
    /// Allowed, but worth a warning: `(code, why)`.
    Warn(&'static str, &'static str),
    /// Explicitly denied, with the reason.
    Deny(&'static str),
    /// Not on the allowlist: denied because the list fails closed.
    Unlisted,
}

/// Helpers a scheduler needs (names without `bpf_`): maps, time, CPU/task
/// identity, locks, bounded loops and timers, local storage, per-CPU data,
/// ring buffers to userspace, kptr exchange (cpumask kptrs in maps).
#[rustfmt::skip]
const HELPERS_ALLOWED: &[&str] = &[
    "map_lookup_elem", "map_update_elem", "map_delete_elem", "map_push_elem", "map_pop_elem",
    "map_peek_elem", "for_each_map_elem", "ktime_get_ns", "ktime_get_boot_ns",
    "ktime_get_coarse_ns", "ktime_get_tai_ns", "jiffies64", "get_smp_processor_id",
    "get_numa_node_id", "get_current_pid_tgid", "get_current_comm", "get_current_task_btf",
    "get_current_cgroup_id", "get_current_ancestor_cgroup_id", "get_ns_current_pid_tgid",
    "spin_lock", "spin_unlock", "loop", "timer_init", "timer_set_callback", "timer_start",
    "timer_cancel", "task_storage_get", "task_storage_delete", "inode_storage_get",
    "inode_storage_delete", "cgrp_storage_get", "cgrp_storage_delete", "get_prandom_u32",
    "per_cpu_ptr", "this_cpu_ptr", "kptr_xchg", "strncmp", "ringbuf_output", "ringbuf_reserve",
    "ringbuf_submit", "ringbuf_discard", "ringbuf_query", "ringbuf_reserve_dynptr",
    "ringbuf_submit_dynptr", "ringbuf_discard_dynptr", "dynptr_read", "dynptr_write",
    "dynptr_data", "user_ringbuf_drain",
];

/// Helpers denied outright, with the reason shown to the author.
const HELPERS_DENIED: &[(&str, &str)] = &[
    ("probe_read", "reads arbitrary kernel memory"),
    ("probe_read_str", "reads arbitrary kernel memory"),
    ("probe_read_kernel", "reads arbitrary kernel memory"),
    ("probe_read_kernel_str", "reads arbitrary kernel memory"),
    ("probe_read_user", "reads arbitrary user memory"),
    ("probe_read_user_str", "reads arbitrary user memory"),
    ("copy_from_user", "reads arbitrary user memory"),
    ("copy_from_user_task", "reads another process's memory"),
    ("probe_write_user", "writes into the memory of the current process"),
    ("override_return", "changes the return value of a kernel function"),
    ("send_signal", "sends signals to processes"),
    ("send_signal_thread", "sends signals to processes"),
    ("sys_bpf", "issues bpf() syscalls from inside the kernel"),
    ("sys_close", "closes file descriptors of the loading process"),
    ("kallsyms_lookup_name", "resolves kernel symbol addresses"),
    ("btf_find_by_name_kind", "looks up kernel BTF to reach arbitrary kernel objects"),
    ("d_path", "discloses file system paths"),
    ("snprintf_btf", "dumps arbitrary kernel objects"),
    ("seq_printf_btf", "dumps arbitrary kernel objects"),
    ("get_current_task", "returns an untyped task pointer only usable with bpf_probe_read_*; use bpf_get_current_task_btf"),
    ("find_vma", "walks a process's address space"),
];

/// Decide on helper `name` (with the `bpf_` prefix).
pub fn helper_verdict(name: &str) -> Ruling {
    let n = name.strip_prefix("bpf_").unwrap_or(name);
    if HELPERS_ALLOWED.contains(&n) {
        return Ruling::Allow;
    }
    if let Some((_, why)) = HELPERS_DENIED.iter().find(|(d, _)| *d == n) {
        return Ruling::Deny(why);
    }
    match n {
        "trace_printk" | "trace_vprintk" => Ruling::Warn(
            "debug_print",
            "writes to the shared trace buffer: slow (takes a global lock), visible to every \
             tracer, and %s can format kernel strings; remove it before deploying",
        ),
        "get_stack" | "get_stackid" | "get_task_stack" => Ruling::Warn(
            "stack_capture",
            "unwinds the stack (microseconds) and copies kernel addresses into BPF memory",
        ),
        _ => Ruling::Unlisted,
    }
}

/// The one exception to the `bpf_probe_read_kernel_str` denial. scx's
/// `UEI_RECORD` (`user_exit_info.bpf.h`) copies the exit reason, message and
/// dump strings out of the `struct scx_exit_info` the kernel hands to
/// `ops.exit`; every scheduler does so, once, at teardown. A call is allowed
/// only in `ops.exit`, and only when its source pointer (r3) is provably one
/// of these fields of the callback's first argument, read through a CO-RE
/// relocation (so libbpf places the offset by the field's name, whatever
/// layout the object's own headers claim). From any other address the helper
/// would copy arbitrary kernel memory into text that reaches agents.
pub const EXIT_STRING_READ: &str = "bpf_probe_read_kernel_str";
pub const EXIT_INFO_STRUCT: &str = "scx_exit_info";
pub const EXIT_INFO_STRINGS: &[&str] = &["reason", "msg", "dump"];

/// The kernel's formatted-output kfuncs and which argument (0-based) is the
/// format. They format into the exit message or the debug dump, which
/// reach agents; a `*_bstr` kfunc missing here is refused because its
/// format cannot be found.
pub const FORMAT_KFUNCS: &[(&str, usize)] = &[
    ("scx_bpf_error_bstr", 0),
    ("scx_bpf_exit_bstr", 1),
    ("scx_bpf_dump_bstr", 0),
    ("scx_bpf_sub_kill_bstr", 1),
];

/// Why format string `fmt` may not be used, if it may not. The kernel's
/// `bpf_bprintf_prepare` reads the string behind `%s` from whatever address
/// the argument holds (kernel memory included), and `%p` variants print
/// kernel addresses or read memory (`%pks`, `%pI4`); both would carry
/// kernel data into text agents read. Integers and characters are safe.
pub fn format_problem(fmt: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < fmt.len() {
        if fmt[i] != b'%' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        if fmt.get(i) == Some(&b'%') {
            i += 1;
            continue;
        }
        let skip = |i: &mut usize, set: &[u8]| {
            while fmt.get(*i).is_some_and(|c| set.contains(c)) {
                *i += 1;
            }
        };
        skip(&mut i, b"-+ 0#");
        skip(&mut i, b"0123456789");
        if fmt.get(i) == Some(&b'.') {
            i += 1;
            skip(&mut i, b"0123456789");
        }
        skip(&mut i, b"hlzjt");
        let spec = String::from_utf8_lossy(&fmt[start..(i + 1).min(fmt.len())]).into_owned();
        match fmt.get(i) {
            Some(b'd' | b'i' | b'u' | b'x' | b'X' | b'o' | b'c') => i += 1,
            Some(b's') => {
                return Some(format!(
                    "`{spec}` makes the kernel copy a string from whatever address the argument \
                     holds, so kernel memory could reach the exit message agents read; print \
                     numbers (%d, %u, %x) instead"
                ))
            }
            Some(b'p') => {
                return Some(format!(
                    "`{spec}` prints a kernel address (or, as %pks/%pI4, reads memory behind \
                     one); print numbers (%d, %u, %x) instead"
                ))
            }
            _ => {
                return Some(format!(
                    "`{spec}` is not a conversion schedcp accepts (%d %i %u %x %X %o %c and %%)"
                ))
            }
        }
    }
    None
}

/// kfunc prefixes a scheduler may call: the sched_ext API and the generic
/// BPF data-structure kfuncs (cpumasks, linked lists, rbtrees, open-coded
/// iterators over numbers/bits and scx DSQs).
#[rustfmt::skip]
const KFUNC_PREFIXES_ALLOWED: &[&str] = &[
    "scx_bpf_", "__scx_bpf_", "bpf_iter_scx_dsq_", "bpf_cpumask_", "bpf_list_", "bpf_rbtree_",
    "bpf_iter_num_", "bpf_iter_bits_",
];

/// Single kfuncs a scheduler may call. Task and cgroup lookups return
/// refcounted, BTF-typed pointers (the same kind of access struct_ops
/// callbacks already get to `task_struct`); cgroup-aware schedulers
/// (flatcg-style) need the cgroup ones. Arena kfuncs back arena maps.
#[rustfmt::skip]
const KFUNCS_ALLOWED: &[&str] = &[
    "bpf_task_from_pid", "bpf_task_from_vpid", "bpf_task_acquire", "bpf_task_release",
    "bpf_cgroup_from_id", "bpf_cgroup_acquire", "bpf_cgroup_release", "bpf_cgroup_ancestor",
    "bpf_rcu_read_lock", "bpf_rcu_read_unlock", "bpf_obj_new_impl", "bpf_obj_drop_impl",
    "bpf_percpu_obj_new_impl", "bpf_percpu_obj_drop_impl", "bpf_refcount_acquire_impl",
    "bpf_res_spin_lock", "bpf_res_spin_unlock", "bpf_res_spin_lock_irqsave",
    "bpf_res_spin_unlock_irqrestore", "bpf_local_irq_save", "bpf_local_irq_restore",
    "bpf_preempt_disable", "bpf_preempt_enable", "bpf_arena_alloc_pages", "bpf_arena_free_pages",
    "bpf_arena_reserve_pages",
];

/// kfuncs (or prefixes) denied outright, with the reason.
const KFUNCS_DENIED: &[(&str, &str)] = &[
    (
        "bpf_rdonly_cast",
        "casts any address to any kernel type: arbitrary kernel memory reads",
    ),
    ("bpf_probe_read_", "reads arbitrary kernel or user memory"),
    ("bpf_copy_from_user", "reads user memory"),
    ("bpf_send_signal", "sends signals to processes"),
    ("bpf_get_file_xattr", "reads file system metadata"),
    ("bpf_get_dentry_xattr", "reads file system metadata"),
    ("bpf_path_d_path", "discloses file system paths"),
    ("bpf_get_task_exe_file", "takes references to files"),
    (
        "bpf_iter_task",
        "walks every task in the system: unbounded cost, information disclosure",
    ),
    (
        "bpf_iter_css",
        "walks the cgroup tree and its tasks: unbounded cost",
    ),
    ("bpf_iter_kmem_cache", "walks kernel slab caches"),
    ("bpf_iter_dmabuf", "walks kernel DMA buffers"),
    ("bpf_get_kmem_cache", "reaches kernel slab internals"),
];

/// Decide on kfunc `name` (already stripped of libbpf's `___flavour` suffix).
pub fn kfunc_verdict(name: &str) -> Ruling {
    if KFUNCS_ALLOWED.contains(&name) || KFUNC_PREFIXES_ALLOWED.iter().any(|p| name.starts_with(p))
    {
        return Ruling::Allow;
    }
    match KFUNCS_DENIED.iter().find(|(d, _)| name.starts_with(d)) {
        Some((_, why)) => Ruling::Deny(why),
        None => Ruling::Unlisted,
    }
}

/// Typed kernel variables (`extern ... __ksym`) a scheduler may reference:
/// the per-CPU run queues and IRQ time that the scx headers read for
/// steal/IRQ-time accounting. Any other kernel variable is a direct kernel
/// memory read and is denied.
pub const KSYM_VARS_ALLOWED: &[&str] = &["runqueues", "cpu_irqtime"];

/// libbpf's "essential" name: `scx_bpf_dsq_insert___v2___compat` resolves
/// against the kernel's `scx_bpf_dsq_insert`.
pub fn essential_name(sym: &str) -> &str {
    match sym.find("___") {
        Some(i) if i > 0 => &sym[..i],
        _ => sym,
    }
}

/// Callbacks that run on every scheduling event (wakeup, enqueue, context
/// switch, tick, idle transition): their cost is paid millions of times a
/// second on a busy machine.
#[rustfmt::skip]
pub const HOT_CALLBACKS: &[&str] = &[
    "select_cpu", "enqueue", "dequeue", "dispatch", "tick", "runnable", "running", "stopping",
    "quiescent", "update_idle",
];

/// Cost model, nanoseconds. Rough figures for a current x86 core with the
/// BPF JIT: an instruction is ~0.5 ns (most JIT to 1–2 native instructions;
/// loads may miss cache); helper/kfunc costs are typical uncontended costs of
/// what they do in the kernel (a hash lookup, a clock read, a DSQ lock, an
/// IPI). They rank programs and flag heavy hot paths; they are not
/// measurements — the micro-VM stage measures.
pub const NS_PER_INSN: f64 = 0.5;

pub fn helper_cost_ns(name: &str) -> f64 {
    match name.strip_prefix("bpf_").unwrap_or(name) {
        "get_smp_processor_id"
        | "get_current_task_btf"
        | "per_cpu_ptr"
        | "this_cpu_ptr"
        | "jiffies64"
        | "get_numa_node_id"
        | "kptr_xchg" => 2.0,
        "get_prandom_u32" | "get_current_pid_tgid" | "ktime_get_coarse_ns" => 5.0,
        "get_current_comm" | "loop" | "strncmp" => 10.0,
        "map_lookup_elem" | "task_storage_get" | "cgrp_storage_get" | "inode_storage_get"
        | "spin_lock" | "spin_unlock" | "map_peek_elem" => 20.0,
        "ktime_get_ns" | "ktime_get_boot_ns" | "ktime_get_tai_ns" => 25.0,
        "map_delete_elem" | "task_storage_delete" | "ringbuf_discard" | "ringbuf_submit" => 40.0,
        "map_update_elem" | "map_push_elem" | "map_pop_elem" | "ringbuf_reserve"
        | "timer_start" | "timer_cancel" => 60.0,
        "ringbuf_output" => 100.0,
        "trace_printk" | "trace_vprintk" => 1000.0,
        "get_stack" | "get_stackid" | "get_task_stack" => 2000.0,
        _ => 50.0,
    }
}

pub fn kfunc_cost_ns(name: &str) -> f64 {
    match name {
        "bpf_rcu_read_lock"
        | "bpf_rcu_read_unlock"
        | "bpf_preempt_disable"
        | "bpf_preempt_enable"
        | "scx_bpf_nr_cpu_ids"
        | "scx_bpf_task_cpu" => 2.0,
        "scx_bpf_now" | "bpf_task_acquire" | "bpf_task_release" => 10.0,
        "scx_bpf_dsq_nr_queued" | "scx_bpf_test_and_clear_cpu_idle" => 20.0,
        "scx_bpf_dsq_insert"
        | "scx_bpf_dsq_insert_vtime"
        | "__scx_bpf_dsq_insert_vtime"
        | "scx_bpf_dispatch"
        | "scx_bpf_dispatch_vtime" => 60.0,
        "scx_bpf_dsq_move_to_local"
        | "scx_bpf_consume"
        | "scx_bpf_dsq_move"
        | "scx_bpf_pick_idle_cpu"
        | "scx_bpf_pick_any_cpu" => 200.0,
        "scx_bpf_select_cpu_dfl" | "scx_bpf_select_cpu_and" | "scx_bpf_kick_cpu" => 300.0,
        "scx_bpf_create_dsq"
        | "bpf_obj_new_impl"
        | "bpf_percpu_obj_new_impl"
        | "bpf_cpumask_create" => 200.0,
        n if n.starts_with("bpf_cpumask_") || n.starts_with("bpf_iter_") => 20.0,
        n if n.starts_with("bpf_list_") || n.starts_with("bpf_rbtree_") => 30.0,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_table_is_dense_and_matches_libbpf() {
        for (i, (id, _)) in HELPERS.iter().enumerate() {
            assert_eq!(*id as usize, i);
        }
        assert_eq!(helper_name(1).as_deref(), Some("bpf_map_lookup_elem"));
        assert_eq!(
            helper_name(libbpf_sys::BPF_FUNC_probe_write_user as i32).as_deref(),
            Some("bpf_probe_write_user")
        );
        assert_eq!(helper_name(-1), None);
        assert_eq!(helper_name(100_000), None);
    }

    #[test]
    fn every_listed_helper_exists() {
        // A typo in an allow/deny list would silently never match.
        let known: Vec<String> = (0..HELPERS.len() as i32).filter_map(helper_name).collect();
        for n in HELPERS_ALLOWED
            .iter()
            .chain(HELPERS_DENIED.iter().map(|(n, _)| n))
        {
            assert!(known.contains(&format!("bpf_{n}")), "{n}");
        }
    }

    #[test]
    fn helper_verdicts() {
        assert_eq!(helper_verdict("bpf_map_lookup_elem"), Ruling::Allow);
        assert_eq!(helper_verdict("bpf_loop"), Ruling::Allow);
        assert!(matches!(
            helper_verdict("bpf_probe_read_kernel"),
            Ruling::Deny(_)
        ));
        assert!(matches!(
            helper_verdict("bpf_probe_write_user"),
            Ruling::Deny(_)
        ));
        assert!(matches!(
            helper_verdict("bpf_override_return"),
            Ruling::Deny(_)
        ));
        assert!(matches!(helper_verdict("bpf_send_signal"), Ruling::Deny(_)));
        assert!(matches!(
            helper_verdict("bpf_trace_printk"),
            Ruling::Warn("debug_print", _)
        ));
        assert_eq!(helper_verdict("bpf_skb_store_bytes"), Ruling::Unlisted);
        assert_eq!(helper_verdict("bpf_tail_call"), Ruling::Unlisted);
        // Denied here; rules allow the exit-info copies one call at a time.
        assert!(matches!(helper_verdict(EXIT_STRING_READ), Ruling::Deny(_)));
    }

    #[test]
    fn formats_with_strings_or_pointers_are_refused() {
        for ok in [
            &b"plain"[..],
            b"cpu %d pid %u",
            b"%llu ns, %lx, %-08x, 100%%",
            b"%c%5.2d",
        ] {
            assert_eq!(format_problem(ok), None, "{}", String::from_utf8_lossy(ok));
        }
        let p = format_problem(b"task %s[%d]").unwrap();
        assert!(p.contains("`%s`") && p.contains("kernel memory"), "{p}");
        assert!(format_problem(b"at %px").unwrap().contains("`%p`"));
        assert!(format_problem(b"%pks").unwrap().contains("`%p`"));
        assert!(format_problem(b"%-10.3ls").unwrap().contains("`%-10.3ls`"));
        assert!(format_problem(b"%n").unwrap().contains("not a conversion"));
        assert!(
            format_problem(b"trailing %").is_some(),
            "a lone % is refused"
        );
    }

    #[test]
    fn kfunc_verdicts() {
        for k in [
            "scx_bpf_dsq_insert",
            "__scx_bpf_dsq_insert_vtime",
            "bpf_cpumask_test_cpu",
            "bpf_iter_scx_dsq_next",
            "bpf_iter_num_new",
            "bpf_task_from_pid",
            "bpf_rbtree_add_impl",
        ] {
            assert_eq!(kfunc_verdict(k), Ruling::Allow, "{k}");
        }
        assert!(matches!(kfunc_verdict("bpf_rdonly_cast"), Ruling::Deny(_)));
        assert!(matches!(
            kfunc_verdict("bpf_iter_task_new"),
            Ruling::Deny(_)
        ));
        assert!(matches!(
            kfunc_verdict("bpf_copy_from_user_str"),
            Ruling::Deny(_)
        ));
        assert_eq!(kfunc_verdict("bpf_foo"), Ruling::Unlisted);
    }

    #[test]
    fn essential_names() {
        assert_eq!(
            essential_name("scx_bpf_dsq_insert___v2___compat"),
            "scx_bpf_dsq_insert"
        );
        assert_eq!(
            essential_name("__scx_bpf_dsq_insert_vtime"),
            "__scx_bpf_dsq_insert_vtime"
        );
        assert_eq!(essential_name("___odd"), "___odd");
    }
}
