//! Static analysis of a compiled sched_ext BPF object — stage 2 of the
//! verifier, run before the object goes anywhere near a kernel.
//!
//! The object is read without a kernel (the host has no sched_ext): our own
//! ELF reader for instructions, symbols and relocations (kfunc names exist
//! only as relocations before load), libbpf (`bpf_object__open`, which needs
//! no kernel BTF) for the map definitions, and the object's own BTF for
//! struct_ops member offsets and extern declarations.
//!
//! # What is reported
//! Per program: ELF section, the `sched_ext_ops` callback it implements,
//! instruction count, helpers (id + name), kfuncs, reachable subprograms,
//! back-edges and an overhead estimate. Per map: type, sizes, estimated
//! bytes. The ops: name, `timeout_ms`, `flags`, `dispatch_max_batch`,
//! `exit_dump_len` and the callbacks set. Then findings; [`Analysis::passed`]
//! is true when there is no error finding.
//!
//! # Rules (finding codes are stable)
//! - `forbidden_helper` (error): a helper outside the allowlist in
//!   [`policy`]. The list fails closed: anything not known to be needed by a
//!   scheduler is refused, and the explicitly dangerous ones (arbitrary
//!   kernel/user memory reads `bpf_probe_read*`/`bpf_copy_from_user*`, user
//!   memory writes, `bpf_override_return`, signals, `bpf_sys_bpf`, symbol
//!   lookups, path/object dumps) carry their reason. Helper ids are named
//!   with libbpf-sys's `BPF_FUNC_*` constants. One contextual exception,
//!   checked call by call: `bpf_probe_read_kernel_str` in `ops.exit` whose
//!   source is traced ([`flow`]) to `ei->reason`, `ei->msg` or `ei->dump` of
//!   the callback's `struct scx_exit_info` through a CO-RE relocation — what
//!   scx's `UEI_RECORD` does, once, at teardown. Any other source is refused.
//! - `unsafe_format` / `unresolved_format` (error): the format of every
//!   formatted-output kfunc (`scx_bpf_error_bstr`, `_exit_bstr`,
//!   `_dump_bstr`, `_sub_kill_bstr`) must be a constant string in the object
//!   with only number and character conversions: `%s` makes the kernel copy
//!   a string from any address and `%p` prints kernel addresses, into text
//!   that reaches agents. The check reads the format as the object holds it;
//!   scx's macro puts it in writable `.data`, and a program that rewrites it
//!   at run time through its own stores is not caught here (the text is
//!   still bounded, pointer-masked and withheld below admin on output).
//! - `forbidden_unreached_code` (error): the helper, kfunc and kernel
//!   variable deny lists also hold for functions no program reaches.
//! - `debug_print` / `stack_capture` (warning): `bpf_trace_printk`-family
//!   and stack unwinding in a struct_ops program — slow, global, and they
//!   leak kernel strings/addresses. Not reported for the scx library's
//!   once-per-attach prolog probe.
//! - `forbidden_kfunc` / `unknown_kfunc` (error): kfuncs outside `scx_bpf_*`
//!   and the generic data-structure kfuncs (cpumask, list, rbtree, `bpf_obj_*`,
//!   refcount, number/bit/DSQ iterators, RCU and lock kfuncs, task and cgroup
//!   reference lookups, arena pages). `bpf_rdonly_cast`, user-memory reads,
//!   signal, file and system-wide iterator kfuncs are denied with a reason;
//!   any other unknown kfunc is refused. Flavoured names
//!   (`x___v2___compat`) are judged by libbpf's essential name (`x`).
//! - `kernel_variable_access` (error): a typed `__ksym` kernel variable is a
//!   direct kernel memory read; only `runqueues` and `cpu_irqtime` (which the
//!   scx headers read for steal/IRQ time) are allowed.
//! - `unexpected_program` (error) / `unattached_program` (warning): schedcp
//!   deploys a scheduler, so every program must be a struct_ops callback or
//!   the scx library's `fentry/bpf_scx_reg(_cid)` prolog probe; kprobes,
//!   tracepoints or other attach points could observe or alter unrelated
//!   kernel state. `SEC("syscall")` programs only run when userspace invokes
//!   them, which schedcp's loader never does: warning.
//! - `no_struct_ops`, `multiple_struct_ops`, `foreign_struct_ops` (error):
//!   exactly one `sched_ext_ops` (or its cid form `sched_ext_ops_cid`)
//!   struct_ops map, and no struct_ops of another kernel subsystem.
//!   No callback is mandatory: without `dispatch` the kernel runs tasks
//!   from the global DSQ, without `enqueue` they go there directly.
//! - `bad_ops_name` (error): `.name` must be 1..=127 characters of
//!   `[A-Za-z0-9_]` and NUL-terminated. The kernel also accepts `.`; schedcp
//!   is stricter so names are identifiers everywhere (paths, metrics, policy
//!   library).
//! - `timeout_out_of_range` (error): `timeout_ms` must be 0 (kernel default,
//!   30 s) or 1..=[`Limits::max_timeout_ms`] (30000, the kernel's
//!   `SCX_WATCHDOG_MAX_TIMEOUT`); the kernel refuses larger values at attach.
//! - `map_too_large` / `maps_too_large` (error): per-map and total estimated
//!   memory over [`Limits::max_map_bytes`] / [`Limits::max_total_map_bytes`].
//!   Per-CPU maps count [`Limits::possible_cpus`] copies, ring buffers their
//!   data size, arenas their page ceiling, local storage
//!   [`Limits::assumed_tasks`] elements.
//! - `hot_path_cost` (warning): a hot callback (`select_cpu`, `enqueue`,
//!   `dequeue`, `dispatch`, `tick`, `runnable`, `running`, `stopping`,
//!   `quiescent`, `update_idle` — run on every wakeup/switch/tick) whose
//!   estimate exceeds [`Limits::hot_path_warn_ns`] or whose reachable
//!   instructions exceed [`Limits::hot_path_warn_insns`].
//! - `unbounded_loop_suspect` (warning): loops are allowed (the kernel
//!   verifier bounds them) and every back-edge is reported, but a hot
//!   callback's loop that is not in a `bpf_loop`-style callback, not an
//!   open-coded iterator (`bpf_for`, `bpf_iter_*_next`) and has no `may_goto`
//!   (`can_loop`) costs an unknown number of iterations per call.
//! - `unresolved_call` (error): a call target the analysis could not
//!   follow: its facts are incomplete, so the deny lists could be evaded.
//!
//! # Overhead model
//! `overhead_ns` = (instructions of the program and of every subprogram and
//! callback it reaches, counted once per call site) × 0.5 ns + a fixed cost
//! per helper/kfunc call site (table in [`policy`]). Every branch is counted
//! as taken and loops once, so it over-estimates straight-line code and
//! under-estimates loops: an upper-bound-ish ranking figure, not a
//! measurement (the micro-VM stage measures).

mod btf;
mod code;
mod elf;
mod flow;
#[cfg(test)]
mod fuzz;
mod maps;
pub mod policy;
mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use libbpf_rs::ObjectBuilder;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bounds the rules enforce. `Default` holds schedcp's production values.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Objects larger than this are refused unread.
    pub max_object_bytes: u64,
    pub max_map_bytes: u64,
    pub max_total_map_bytes: u64,
    /// CPU count assumed for per-CPU maps.
    pub possible_cpus: u64,
    /// Elements assumed for task/cgroup/inode local storage maps.
    pub assumed_tasks: u64,
    /// Largest accepted `timeout_ms` (the kernel's SCX_WATCHDOG_MAX_TIMEOUT).
    pub max_timeout_ms: u32,
    pub hot_path_warn_ns: f64,
    pub hot_path_warn_insns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: 32 << 20,
            max_map_bytes: 64 << 20,
            max_total_map_bytes: 256 << 20,
            possible_cpus: 64,
            assumed_tasks: 8192,
            max_timeout_ms: 30_000,
            hot_path_warn_ns: 1000.0,
            hot_path_warn_insns: 4096,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    pub object: PathBuf,
    pub programs: Vec<Program>,
    pub maps: Vec<MapInfo>,
    pub total_map_bytes: u64,
    pub ops: Option<Ops>,
    pub findings: Vec<Finding>,
    pub analysis_ms: f64,
}

impl Analysis {
    /// True when no finding is an error.
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    pub section: String,
    /// libbpf's program type name (`struct_ops`, `tracing`, ...).
    pub prog_type: String,
    pub sleepable: bool,
    /// The `sched_ext_ops` member this program is installed in.
    pub callback: Option<String>,
    /// Instructions of the program's own function.
    pub insns: u64,
    /// Instructions including subprograms and callbacks, once per call site.
    pub reachable_insns: u64,
    pub helpers: Vec<HelperUse>,
    pub kfuncs: Vec<KfuncUse>,
    pub subprograms: Vec<String>,
    /// Subprograms reached only as callbacks (bpf_loop, timers, for_each).
    pub callbacks: Vec<String>,
    pub back_edges: Vec<BackEdge>,
    pub overhead_ns: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperUse {
    pub id: i32,
    pub name: String,
    pub call_sites: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KfuncUse {
    /// The kernel name the call resolves to.
    pub name: String,
    /// The symbols as written (libbpf flavours such as `___compat`).
    pub symbols: Vec<String>,
    pub call_sites: u32,
}

/// A jump to an earlier instruction that closes a cycle (a loop). Backward
/// jumps that never come round again (clang's shared `exit` blocks) are not
/// reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackEdge {
    pub function: String,
    /// Instruction indices within `function`.
    pub from: u32,
    pub to: u32,
    /// `bpf_loop callback`, `open-coded iterator`, `may_goto`, or none.
    pub bound: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapInfo {
    pub name: String,
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub per_cpu: bool,
    pub estimated_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ops {
    /// The struct_ops map (the `SCX_OPS_DEFINE` variable).
    pub map: String,
    pub struct_type: String,
    /// `.name`, the scheduler's name as the kernel shows it.
    pub name: String,
    pub timeout_ms: u32,
    pub flags: u64,
    pub dispatch_max_batch: u32,
    pub exit_dump_len: u32,
    /// Callback member → program.
    pub callbacks: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Location {
    Object,
    Program(String),
    Map(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    pub location: Location,
}

/// Analyse the BPF object at `object`. `Err` only when the file cannot be
/// read as a BPF object at all; everything wrong *with* the scheduler is a
/// finding.
pub fn analyze(object: &Path, limits: &Limits) -> Result<Analysis, Error> {
    let started = Instant::now();
    let bad = |what: String| Error::Input(format!("{}: {what}", object.display()));
    let size = std::fs::metadata(object)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if size > limits.max_object_bytes {
        return Err(bad(format!(
            "the object is {size} bytes; the limit is {}",
            limits.max_object_bytes
        )));
    }
    let data = std::fs::read(object).map_err(|e| bad(e.to_string()))?;
    let elf = elf::Elf::parse(&data).map_err(&bad)?;
    let code = code::Code::build(&elf).map_err(&bad)?;
    let obj_btf = btf::ObjectBtf::open(object).map_err(&bad)?;
    let struct_ops = obj_btf.struct_ops(&elf).map_err(&bad)?;
    let externs = obj_btf.externs();
    let core = obj_btf.core_fields(&elf);
    let open = ObjectBuilder::default()
        .open_file(object)
        .map_err(|e| bad(format!("libbpf cannot open the object: {e:#}")))?;

    let maps: Vec<MapInfo> = open
        .maps()
        .map(|m| {
            maps::info(
                m.name().to_string_lossy().into_owned(),
                m.map_type() as u32,
                m.key_size(),
                m.value_size(),
                m.max_entries(),
                limits,
            )
        })
        .collect();
    let total_map_bytes = maps
        .iter()
        .fold(0u64, |t, m| t.saturating_add(m.estimated_bytes));

    let is_scx = |s: &btf::StructOpsVar| rules::SCX_OPS_TYPES.contains(&s.struct_type.as_str());
    let callback_of: HashMap<&str, &str> = struct_ops
        .iter()
        .filter(|s| is_scx(s))
        .flat_map(|s| s.callbacks.iter())
        .map(|(cb, prog)| (prog.as_str(), cb.as_str()))
        .collect();

    let mut programs = Vec::new();
    let mut reaches = Vec::new();
    for p in open.progs() {
        let name = p.name().to_string_lossy().into_owned();
        let section = p.section().to_string_lossy().into_owned();
        let root = elf
            .section_by_name(&section)
            .and_then(|s| code.find(s, &name))
            .ok_or_else(|| bad(format!("program {name} not found in section {section}")))?;
        let reach = code.reach(root);
        programs.push(program_info(
            &code,
            root,
            &reach,
            name.clone(),
            section,
            prog_type_name(p.prog_type() as u32),
            callback_of.get(name.as_str()).map(|s| s.to_string()),
        ));
        reaches.push((root, reach));
    }

    let ops = struct_ops.iter().find(|s| is_scx(s)).map(ops_info);
    let roots: BTreeSet<usize> = reaches.iter().map(|(root, _)| *root).collect();
    let calls: Vec<Vec<flow::CallArgs>> = (0..code.funcs.len())
        .map(|f| flow::call_args(&code, &elf, &core, f, roots.contains(&f)))
        .collect();
    let mut findings = Vec::new();
    let ctx = rules::Context {
        limits,
        code: &code,
        elf: &elf,
        core: &core,
        calls: &calls,
        externs: &externs,
        struct_ops: &struct_ops,
    };
    rules::struct_ops(&ctx, &mut findings);
    for (p, (root, reach)) in programs.iter().zip(&reaches) {
        rules::program(&ctx, p, *root, reach, &mut findings);
    }
    let reached: BTreeSet<usize> = reaches
        .iter()
        .flat_map(|(root, r)| {
            std::iter::once(*root).chain(r.direct.iter().chain(&r.in_callback).copied())
        })
        .collect();
    rules::unreached_code(&ctx, &reached, &mut findings);
    rules::maps(&ctx, &maps, total_map_bytes, &mut findings);
    findings.sort_by_key(|f| f.severity != Severity::Error);

    Ok(Analysis {
        object: object.to_path_buf(),
        programs,
        maps,
        total_map_bytes,
        ops,
        findings,
        analysis_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn prog_type_name(ty: u32) -> String {
    // SAFETY: libbpf returns NULL or a pointer into its static string table.
    let p = unsafe { libbpf_sys::libbpf_bpf_prog_type_str(ty) };
    if p.is_null() {
        return format!("type {ty}");
    }
    // SAFETY: non-NULL results are NUL-terminated static strings.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

fn program_info(
    code: &code::Code,
    root: usize,
    reach: &code::Reach,
    name: String,
    section: String,
    prog_type: String,
    callback: Option<String>,
) -> Program {
    let all = std::iter::once(root)
        .chain(reach.direct.iter().copied())
        .chain(reach.in_callback.iter().copied());
    let mut helpers: BTreeMap<i32, u32> = BTreeMap::new();
    let mut kfuncs: BTreeMap<String, (BTreeSet<String>, u32)> = BTreeMap::new();
    let mut back_edges = Vec::new();
    for f in all {
        let func = &code.funcs[f];
        for &h in &func.facts.helpers {
            *helpers.entry(h).or_default() += 1;
        }
        for k in &func.facts.kfuncs {
            let e = kfuncs
                .entry(policy::essential_name(k).to_string())
                .or_default();
            e.0.insert(k.clone());
            e.1 += 1;
        }
        let in_cb = reach.in_callback.contains(&f);
        for e in &func.facts.back_edges {
            back_edges.push(BackEdge {
                function: func.name.clone(),
                from: e.from as u32,
                to: e.to as u32,
                bound: e
                    .bound
                    .or(in_cb.then_some("bpf_loop callback"))
                    .map(str::to_string),
            });
        }
    }
    let names = |set: &BTreeSet<usize>| -> Vec<String> {
        set.iter().map(|&f| code.funcs[f].name.clone()).collect()
    };
    let (reachable_insns, overhead_ns) = code.cost(root);
    Program {
        name,
        sleepable: section.starts_with("struct_ops.s/"),
        section,
        prog_type,
        callback,
        insns: code.funcs[root].insns() as u64,
        reachable_insns,
        helpers: helpers
            .into_iter()
            .map(|(id, n)| HelperUse {
                id,
                name: policy::helper_name(id).unwrap_or_else(|| format!("helper #{id}")),
                call_sites: n,
            })
            .collect(),
        kfuncs: kfuncs
            .into_iter()
            .map(|(name, (symbols, n))| KfuncUse {
                name,
                symbols: symbols.into_iter().collect(),
                call_sites: n,
            })
            .collect(),
        subprograms: names(&reach.direct),
        callbacks: names(&reach.in_callback),
        back_edges,
        overhead_ns: (overhead_ns * 10.0).round() / 10.0,
    }
}

fn ops_info(s: &btf::StructOpsVar) -> Ops {
    let int = |n: &str| s.ints.get(n).copied().unwrap_or(0);
    let name = s.strings.get("name").map_or_else(String::new, |b| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    });
    Ops {
        map: s.map.clone(),
        struct_type: s.struct_type.clone(),
        name,
        timeout_ms: int("timeout_ms") as u32,
        flags: int("flags"),
        dispatch_max_batch: int("dispatch_max_batch") as u32,
        exit_dump_len: int("exit_dump_len") as u32,
        callbacks: s.callbacks.clone(),
    }
}
