//! The rules, turning collected facts into findings. The module doc of
//! `analyze` explains each rule and why it exists.

use std::collections::BTreeSet;

use super::btf::{Externs, StructOpsVar};
use super::code::{Code, Reach};
use super::elf::Elf;
use super::flow::{CallArgs, Callee, CoreFields, Val};
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
    pub elf: &'a Elf<'a>,
    pub core: &'a CoreFields,
    /// Per function: the arguments of its helper and kfunc calls.
    pub calls: &'a [Vec<CallArgs>],
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

    let funcs: Vec<usize> = std::iter::once(root)
        .chain(reach.direct.iter().chain(&reach.in_callback).copied())
        .collect();
    for h in &p.helpers {
        let ruling = policy::helper_verdict(&h.name);
        if h.name == policy::EXIT_STRING_READ && p.callback.as_deref() == Some("exit") {
            exit_string_reads(ctx, p, h.id, &funcs, out);
            continue;
        }
        match ruling {
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

    formats(ctx, p, &funcs, out);

    let mut vars = BTreeSet::new();
    let mut unresolved = Vec::new();
    for &f in &funcs {
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

/// Where a traced value came from, for messages.
fn origin(ctx: &Context<'_>, v: Val) -> String {
    match v {
        Val::Field { arg, field } => {
            let f = &ctx.core.fields[field as usize];
            format!(
                "field `{}` of `struct {}` (argument {arg})",
                f.member, f.strukt
            )
        }
        Val::Arg(arg) => format!("callback argument {arg} itself"),
        Val::Ctx => "the program context".into(),
        Val::Stack(_) | Val::StackAny => "the stack".into(),
        Val::Data { section, .. } => format!(
            "the object's own data ({})",
            ctx.elf
                .sections
                .get(section)
                .map_or("?", |s| s.name.as_str())
        ),
        Val::Unknown => "an address the analysis cannot trace".into(),
    }
}

fn site(ctx: &Context<'_>, f: usize, c: &CallArgs) -> String {
    format!("`{}`+{}", ctx.code.funcs[f].name, c.insn)
}

/// `bpf_probe_read_kernel_str` in `ops.exit`: allowed call by call, when the
/// source is one of the exit info's strings ([`policy::EXIT_STRING_READ`]).
fn exit_string_reads(
    ctx: &Context<'_>,
    p: &Program,
    helper: i32,
    funcs: &[usize],
    out: &mut Vec<Finding>,
) {
    for &f in funcs {
        for c in ctx.calls[f]
            .iter()
            .filter(|c| c.callee == Callee::Helper(helper))
        {
            let src = c.args[2];
            let allowed = matches!(src, Val::Field { arg: 0, field }
            if ctx.core.fields.get(field as usize).is_some_and(|x| {
                x.strukt == policy::EXIT_INFO_STRUCT
                    && policy::EXIT_INFO_STRINGS.contains(&x.member.as_str())
            }));
            if allowed {
                continue;
            }
            push(
                out,
                Severity::Error,
                "forbidden_helper",
                Location::Program(p.name.clone()),
                format!(
                    "{} calls {} at {} with a source read from {}; in ops.exit this helper may \
                     only copy the exit info's own strings (ei->reason, ei->msg, ei->dump, as \
                     scx's UEI_RECORD does): from anywhere else it reads arbitrary kernel memory \
                     into text that reaches agents",
                    describe(p),
                    policy::EXIT_STRING_READ,
                    site(ctx, f, c),
                    origin(ctx, src)
                ),
            );
        }
    }
}

/// The format string of every formatted-output kfunc call must be a
/// constant in the object, and use only conversions that print numbers.
fn formats(ctx: &Context<'_>, p: &Program, funcs: &[usize], out: &mut Vec<Finding>) {
    for &f in funcs {
        for c in &ctx.calls[f] {
            let Callee::Kfunc(sym) = &c.callee else {
                continue;
            };
            let name = policy::essential_name(sym);
            let known = policy::FORMAT_KFUNCS.iter().find(|(k, _)| *k == name);
            if known.is_none() && !name.ends_with("_bstr") {
                continue;
            }
            let fmt = known.and_then(|&(_, arg)| constant_string(ctx, c.args[arg]));
            let problem = match (&fmt, known) {
                (Some(fmt), _) => match policy::format_problem(fmt) {
                    Some(why) => ("unsafe_format", why),
                    None => continue,
                },
                (None, Some(&(_, arg))) => (
                    "unresolved_format",
                    format!(
                        "its format (argument {arg}) comes from {}, not a constant string in \
                         the object, so its conversions cannot be checked; pass a string \
                         literal (scx_bpf_error(\"...\", ...) does)",
                        origin(ctx, c.args[arg])
                    ),
                ),
                (None, None) => (
                    "unresolved_format",
                    "it is a formatted-output kfunc schedcp does not know, so its format \
                     cannot be found and checked"
                        .to_string(),
                ),
            };
            let shown = fmt.map_or_else(String::new, |f| {
                let text = String::from_utf8_lossy(&f[..f.len().min(120)]).into_owned();
                format!(" with format {text:?}")
            });
            push(
                out,
                Severity::Error,
                problem.0,
                Location::Program(p.name.clone()),
                format!(
                    "{} calls {name} at {}{shown}: {}",
                    describe(p),
                    site(ctx, f, c),
                    problem.1
                ),
            );
        }
    }
}

/// The NUL-terminated string at a traced data address, if it is one.
fn constant_string<'a>(ctx: &Context<'a>, v: Val) -> Option<&'a [u8]> {
    let Val::Data { section, offset } = v else {
        return None;
    };
    let data = ctx.elf.section_data(section).ok()?;
    let tail = data.get(usize::try_from(offset).ok()?..)?;
    let end = tail.iter().take(4096).position(|&b| b == 0)?;
    Some(&tail[..end])
}

/// The deny lists hold for every function in the object, not only for what
/// the analysis sees being called: a function no program reaches is still
/// refused if it calls something forbidden.
pub fn unreached_code(ctx: &Context<'_>, reached: &BTreeSet<usize>, out: &mut Vec<Finding>) {
    for (f, func) in ctx.code.funcs.iter().enumerate() {
        if reached.contains(&f) {
            continue;
        }
        let facts = &func.facts;
        let mut what = BTreeSet::new();
        for &h in &facts.helpers {
            let name = policy::helper_name(h).unwrap_or_else(|| format!("helper #{h}"));
            match policy::helper_verdict(&name) {
                Ruling::Deny(why) => what.insert(format!("{name}, which {why}")),
                Ruling::Unlisted => what.insert(format!("{name}, which is not on the allowlist")),
                Ruling::Allow | Ruling::Warn(..) => false,
            };
        }
        for k in &facts.kfuncs {
            let name = policy::essential_name(k);
            match policy::kfunc_verdict(name) {
                Ruling::Deny(why) => what.insert(format!("kfunc {name}, which {why}")),
                Ruling::Unlisted => {
                    what.insert(format!("kfunc {name}, which is not on the allowlist"))
                }
                Ruling::Allow | Ruling::Warn(..) => false,
            };
        }
        for r in &facts.extern_refs {
            if ctx.externs.ksym_vars.contains(r) && !policy::KSYM_VARS_ALLOWED.contains(&r.as_str())
            {
                what.insert(format!("the kernel variable `{r}`"));
            }
        }
        for u in &facts.unresolved {
            what.insert(format!("a call the analysis cannot follow ({u})"));
        }
        if what.is_empty() {
            continue;
        }
        let section = ctx
            .elf
            .sections
            .get(func.section)
            .map_or("?", |s| s.name.as_str());
        push(
            out,
            Severity::Error,
            "forbidden_unreached_code",
            Location::Object,
            format!(
                "function `{}` in section {section} is reached from no program, yet uses {}; \
                 the deny lists hold for every function in the object — remove it",
                func.name,
                what.into_iter().collect::<Vec<_>>().join("; ")
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
