//! The rules, turning collected facts into findings. The module doc of
//! `analyze` explains each rule and why it exists.

use super::btf::{Externs, StructOpsVar};
use super::code::{Code, Reach};
use super::policy::{self, Ruling};
use super::{Finding, Limits, Location, MapInfo, Program, Severity};

/// struct_ops types that are a sched_ext scheduler (the cid form is the
/// same interface keyed by cid instead of cpu).
pub const SCX_OPS_TYPES: &[&str] = &["sched_ext_ops", "sched_ext_ops_cid"];

/// The scx library's prolog probe (common.bpf.h `scx_lib_init_probe`),
/// auto-attached once at scheduler registration.
const SCX_PROLOG_SECTIONS: &[&str] = &["fentry/bpf_scx_reg", "fentry/bpf_scx_reg_cid"];

pub struct Context<'a> {
    pub limits: &'a Limits,
    pub code: &'a Code,
    pub externs: &'a Externs,
    pub struct_ops: &'a [StructOpsVar],
}

fn push(out: &mut Vec<Finding>, severity: Severity, code: &str, loc: Location, message: String) {
    out.push(Finding {
        severity,
        code: code.into(),
        message,
        location: loc,
    });
}

fn mib(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

pub fn struct_ops(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let (scx, foreign): (Vec<_>, Vec<_>) = ctx
        .struct_ops
        .iter()
        .partition(|s| SCX_OPS_TYPES.contains(&s.struct_type.as_str()));
    for s in &foreign {
        push(
            out,
            Severity::Error,
            "foreign_struct_ops",
            Location::Map(s.map.clone()),
            format!(
                "struct_ops map `{}` implements `struct {}`, not `struct sched_ext_ops`; a \
                 scheduler object may only register sched_ext ops",
                s.map, s.struct_type
            ),
        );
    }
    let s = match scx.as_slice() {
        [] => {
            return push(
                out,
                Severity::Error,
                "no_struct_ops",
                Location::Object,
                "the object defines no `sched_ext_ops` struct_ops map, so there is no scheduler \
                 to attach; define one with SCX_OPS_DEFINE(name, .enqueue = ..., .name = \"...\")"
                    .into(),
            );
        }
        [one] => *one,
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.map.as_str()).collect();
            return push(
                out,
                Severity::Error,
                "multiple_struct_ops",
                Location::Object,
                format!(
                    "the object defines {} sched_ext_ops maps ({}); schedcp attaches exactly one \
                     scheduler per object — keep one SCX_OPS_DEFINE",
                    many.len(),
                    names.join(", ")
                ),
            );
        }
    };
    let loc = || Location::Map(s.map.clone());
    let raw = s.strings.get("name").cloned().unwrap_or_default();
    let end = raw.iter().position(|&b| b == 0);
    let name = &raw[..end.unwrap_or(raw.len())];
    let bad_char = name
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || **b == b'_'));
    let problem = if end.is_none() {
        Some("is not NUL-terminated (at most 127 characters)".to_string())
    } else if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > 127 {
        Some(format!("is {} characters long (at most 127)", name.len()))
    } else {
        bad_char.map(|b| format!("contains {:?}", char::from(*b)))
    };
    if let Some(problem) = problem {
        push(
            out,
            Severity::Error,
            "bad_ops_name",
            loc(),
            format!(
                "ops `{}` has .name = {:?}, which {problem}; use 1-127 characters of \
                 [A-Za-z0-9_], e.g. .name = \"schedcp_mysched\"",
                s.map,
                String::from_utf8_lossy(name)
            ),
        );
    }
    let timeout = s.ints.get("timeout_ms").copied().unwrap_or(0);
    if timeout > u64::from(ctx.limits.max_timeout_ms) {
        push(
            out,
            Severity::Error,
            "timeout_out_of_range",
            loc(),
            format!(
                "ops `{}` sets .timeout_ms = {timeout}; the kernel accepts 0 (default 30000 ms) \
                 or 1..={} (SCX_WATCHDOG_MAX_TIMEOUT) and refuses to attach otherwise",
                s.map, ctx.limits.max_timeout_ms
            ),
        );
    }
}

fn describe(p: &Program) -> String {
    match &p.callback {
        Some(cb) => format!("program `{}` (ops.{cb})", p.name),
        None => format!("program `{}`", p.name),
    }
}

pub fn program(ctx: &Context<'_>, p: &Program, root: usize, reach: &Reach, out: &mut Vec<Finding>) {
    let loc = || Location::Program(p.name.clone());
    let is_struct_ops =
        p.section.starts_with("struct_ops/") || p.section.starts_with("struct_ops.s/");
    if !is_struct_ops && !SCX_PROLOG_SECTIONS.contains(&p.section.as_str()) {
        if p.section == "syscall" {
            push(
                out,
                Severity::Warning,
                "unattached_program",
                loc(),
                format!(
                    "{} is a SEC(\"syscall\") program; schedcp's loader never runs it",
                    describe(p)
                ),
            );
        } else {
            push(
                out,
                Severity::Error,
                "unexpected_program",
                loc(),
                format!(
                    "{} in SEC(\"{}\") is a {} program, not a sched_ext callback; a scheduler \
                     object may only contain struct_ops programs, since other attach points \
                     observe or alter unrelated kernel state",
                    describe(p),
                    p.section,
                    p.prog_type
                ),
            );
        }
    }

    for h in &p.helpers {
        match policy::helper_verdict_in(&h.name, p.callback.as_deref()) {
            Ruling::Allow => {}
            Ruling::Warn(code, why) => {
                if is_struct_ops {
                    push(
                        out,
                        Severity::Warning,
                        code,
                        loc(),
                        format!("{} calls {}: {why}", describe(p), h.name),
                    );
                }
            }
            Ruling::Deny(why) => push(
                out,
                Severity::Error,
                "forbidden_helper",
                loc(),
                format!(
                    "{} calls {} (helper {}, {} call site(s)), which {why}; schedulers must not \
                     use it — remove the call",
                    describe(p),
                    h.name,
                    h.id,
                    h.call_sites
                ),
            ),
            Ruling::Unlisted => push(
                out,
                Severity::Error,
                "forbidden_helper",
                loc(),
                format!(
                    "{} calls {} (helper {}), which is not on the scheduler helper allowlist \
                     (schedcp fails closed); use a sched_ext kfunc or an allowed helper instead",
                    describe(p),
                    h.name,
                    h.id
                ),
            ),
        }
    }

    for k in &p.kfuncs {
        let (code, why) = match policy::kfunc_verdict(&k.name) {
            Ruling::Allow | Ruling::Warn(..) => continue,
            Ruling::Deny(why) => ("forbidden_kfunc", why.to_string()),
            Ruling::Unlisted => (
                "unknown_kfunc",
                "is not on the scheduler kfunc allowlist (scx_bpf_*, cpumask, list/rbtree, \
                 bpf_obj_*, iterators, RCU/lock, task/cgroup references, arena); schedcp \
                 fails closed"
                    .to_string(),
            ),
        };
        push(
            out,
            Severity::Error,
            code,
            loc(),
            format!("{} calls kfunc {}, which {why}", describe(p), k.name),
        );
    }

    let funcs = std::iter::once(root).chain(reach.direct.iter().chain(&reach.in_callback).copied());
    let mut vars = std::collections::BTreeSet::new();
    let mut unresolved = Vec::new();
    for f in funcs {
        let facts = &ctx.code.funcs[f].facts;
        for r in &facts.extern_refs {
            if ctx.externs.ksym_vars.contains(r) && !policy::KSYM_VARS_ALLOWED.contains(&r.as_str())
            {
                vars.insert(r.clone());
            }
        }
        unresolved.extend(facts.unresolved.iter().cloned());
    }
    for v in vars {
        push(
            out,
            Severity::Error,
            "kernel_variable_access",
            loc(),
            format!(
                "{} reads the kernel variable `{v}` through __ksym, a direct kernel memory read; \
                 only {} are allowed",
                describe(p),
                policy::KSYM_VARS_ALLOWED.join(", ")
            ),
        );
    }
    if !unresolved.is_empty() {
        // Fail closed: code the analysis cannot follow is code its deny
        // lists cannot see.
        push(
            out,
            Severity::Error,
            "unresolved_call",
            loc(),
            format!(
                "{} has call targets the analysis could not follow ({}); what they call cannot \
                 be checked against the helper and kfunc lists, so schedcp fails closed",
                describe(p),
                unresolved.join("; ")
            ),
        );
    }

    let Some(cb) = p
        .callback
        .as_deref()
        .filter(|c| policy::HOT_CALLBACKS.contains(c))
    else {
        return;
    };
    if p.overhead_ns > ctx.limits.hot_path_warn_ns
        || p.reachable_insns > ctx.limits.hot_path_warn_insns
    {
        push(
            out,
            Severity::Warning,
            "hot_path_cost",
            loc(),
            format!(
                "hot callback ops.{cb} (program `{}`) is estimated at {:.0} ns and {} \
                 instructions per call (warn above {:.0} ns or {} instructions); it runs on every \
                 scheduling event — move work to a colder callback or cache results in maps",
                p.name,
                p.overhead_ns,
                p.reachable_insns,
                ctx.limits.hot_path_warn_ns,
                ctx.limits.hot_path_warn_insns
            ),
        );
    }
    // One warning per function: clang often closes one source loop with
    // several back-edges.
    let mut loops: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for e in p.back_edges.iter().filter(|e| e.bound.is_none()) {
        loops
            .entry(e.function.as_str())
            .or_default()
            .push(format!("{}→{}", e.from, e.to));
    }
    for (function, edges) in loops {
        push(
            out,
            Severity::Warning,
            "unbounded_loop_suspect",
            loc(),
            format!(
                "hot callback ops.{cb} (program `{}`) loops in `{function}` (back-edges {}) \
                 outside bpf_loop/bpf_for/can_loop: the kernel verifier must walk every \
                 iteration and the per-call cost is not bounded by the estimate; prefer bpf_for() \
                 or bpf_loop()",
                p.name,
                edges.join(", ")
            ),
        );
    }
}

pub fn maps(ctx: &Context<'_>, maps: &[MapInfo], total: u64, out: &mut Vec<Finding>) {
    let l = ctx.limits;
    for m in maps.iter().filter(|m| m.estimated_bytes > l.max_map_bytes) {
        let per_cpu = if m.per_cpu {
            format!(" × {} CPUs", l.possible_cpus)
        } else {
            String::new()
        };
        push(
            out,
            Severity::Error,
            "map_too_large",
            Location::Map(m.name.clone()),
            format!(
                "map `{}` ({}, {} entries, key {} B, value {} B{per_cpu}) needs about {}; the \
                 per-map limit is {} — lower max_entries or the value size",
                m.name,
                m.map_type,
                m.max_entries,
                m.key_size,
                m.value_size,
                mib(m.estimated_bytes),
                mib(l.max_map_bytes)
            ),
        );
    }
    if total > l.max_total_map_bytes {
        push(
            out,
            Severity::Error,
            "maps_too_large",
            Location::Object,
            format!(
                "the object's maps need about {} together; the limit is {}",
                mib(total),
                mib(l.max_total_map_bytes)
            ),
        );
    }
}
