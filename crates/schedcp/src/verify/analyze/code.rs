//! Instruction-level facts: the functions in each executable section, what
//! each one calls (helpers, kfuncs, subprograms, callbacks), its back-edges,
//! and the call graph used for reachability and the cost estimate.
//!
//! Call targets are resolved the way libbpf resolves them before load: a
//! relocation against an undefined symbol is a kfunc call; against a defined
//! symbol the target instruction is `sym.value / 8 + imm + 1` (calls) or
//! `(sym.value + imm) / 8` (function-pointer loads); without a relocation a
//! pseudo call is relative to its own position.

use std::collections::{BTreeSet, HashMap};

use super::elf::{Elf, STT_FUNC};
use super::policy;

const CLASS_LD: u8 = 0x00;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const OP_JCOND: u8 = 0xe0; // may_goto
const LD_IMM64: u8 = CLASS_LD | 0x18;
const PSEUDO_CALL: u8 = libbpf_sys::BPF_PSEUDO_CALL as u8;
const PSEUDO_FUNC: u8 = libbpf_sys::BPF_PSEUDO_FUNC as u8;

#[derive(Debug, Clone, Copy)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

fn decode(bytes: &[u8]) -> Vec<Insn> {
    bytes
        .chunks_exact(8)
        .map(|b| Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect()
}

/// One jump backwards, in instruction indices relative to its function.
#[derive(Debug, Clone)]
pub struct BackEdge {
    pub from: usize,
    pub to: usize,
    /// Why the loop is bounded by construction, when it visibly is.
    pub bound: Option<&'static str>,
}

#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// Helper ids, one entry per call site.
    pub helpers: Vec<i32>,
    /// kfunc symbols as written (`scx_bpf_dsq_insert___v2___compat`), per call site.
    pub kfuncs: Vec<String>,
    /// Direct bpf-to-bpf calls (function indices), per call site.
    pub calls: Vec<usize>,
    /// Functions whose address is taken (bpf_loop / timer / for_each callbacks).
    pub callbacks: Vec<usize>,
    /// Undefined symbols loaded with ld_imm64 (kernel variables, kconfig, kfunc addresses).
    pub extern_refs: Vec<String>,
    pub back_edges: Vec<BackEdge>,
    /// Call or pointer targets that do not land on a known function.
    pub unresolved: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Func {
    pub name: String,
    pub section: usize,
    /// Instruction range within the section.
    pub start: usize,
    pub end: usize,
    pub facts: Facts,
    /// Successors of each instruction (function-relative; a target outside
    /// the function is kept, so users must bound it).
    pub succs: Vec<Vec<usize>>,
}

impl Func {
    pub fn insns(&self) -> usize {
        self.end - self.start
    }
}

pub struct Code {
    pub funcs: Vec<Func>,
    /// Decoded instructions of each executable section.
    pub insns: HashMap<usize, Vec<Insn>>,
}

fn predecessors(succs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut preds = vec![Vec::new(); succs.len()];
    for (i, ss) in succs.iter().enumerate() {
        for &t in ss.iter().filter(|&&t| t < succs.len()) {
            preds[t].push(i);
        }
    }
    preds
}

/// The instructions on some path `to` → … → `from` that does not pass
/// through `to` again: the loop closed by the jump `from` → `to`. Layout
/// back-edges need not be dominator back-edges (clang rotates loops), so
/// this is "reachable from the target and able to reach the jump", which
/// stays inside the loop instead of leaking into the code before it.
fn loop_body(succs: &[Vec<usize>], preds: &[Vec<usize>], from: usize, to: usize) -> Vec<bool> {
    let n = succs.len();
    let walk = |start: usize, edges: &[Vec<usize>], stop: Option<usize>| {
        let mut seen = vec![false; n];
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            if Some(i) == stop {
                continue;
            }
            for &t in edges[i].iter().filter(|&&t| t < n) {
                if !seen[t] {
                    seen[t] = true;
                    stack.push(t);
                }
            }
        }
        seen
    };
    let fwd = walk(to, succs, None);
    let bwd = walk(from, preds, Some(to));
    fwd.iter().zip(&bwd).map(|(a, b)| *a && *b).collect()
}

/// Functions reachable from a program: `direct` through calls only,
/// `in_callback` only through a callback (so they run inside bpf_loop & co).
#[derive(Debug, Default)]
pub struct Reach {
    pub direct: BTreeSet<usize>,
    pub in_callback: BTreeSet<usize>,
}

impl Code {
    pub fn build(elf: &Elf) -> Result<Code, String> {
        let mut funcs = Vec::new();
        let mut insns_of: HashMap<usize, Vec<Insn>> = HashMap::new();
        for (idx, sec) in elf.sections.iter().enumerate() {
            if !sec.is_exec() || sec.size == 0 {
                continue;
            }
            let insns = decode(elf.section_data(idx)?);
            let n = insns.len();
            let mut syms: Vec<(usize, usize, &str)> = elf
                .symbols
                .iter()
                .filter(|s| s.kind == STT_FUNC && usize::from(s.shndx) == idx)
                .map(|s| {
                    let start = (s.value / 8) as usize;
                    (start, start + (s.size / 8) as usize, s.name.as_str())
                })
                .filter(|(start, _, _)| *start < n)
                .collect();
            syms.sort();
            syms.dedup_by_key(|s| s.0);
            if syms.is_empty() {
                syms.push((0, n, sec.name.as_str()));
            }
            for (i, &(start, end, name)) in syms.iter().enumerate() {
                let next = syms.get(i + 1).map_or(n, |s| s.0);
                let end = if end <= start { next } else { end.min(next) };
                funcs.push(Func {
                    name: name.to_string(),
                    section: idx,
                    start,
                    end,
                    facts: Facts::default(),
                    succs: Vec::new(),
                });
            }
            insns_of.insert(idx, insns);
        }
        let mut code = Code {
            funcs,
            insns: insns_of,
        };
        for f in 0..code.funcs.len() {
            let sec = code.funcs[f].section;
            let (facts, succs) = code.scan(elf, &code.insns[&sec], f);
            code.funcs[f].facts = facts;
            code.funcs[f].succs = succs;
        }
        Ok(code)
    }

    /// The function of `section` containing instruction `idx`.
    fn func_at(&self, section: usize, idx: usize) -> Option<usize> {
        // `funcs` is ordered by (section, start): binary search.
        let i = self
            .funcs
            .partition_point(|f| (f.section, f.start) <= (section, idx));
        i.checked_sub(1)
            .filter(|&j| self.funcs[j].section == section && idx < self.funcs[j].end)
    }

    pub fn find(&self, section: usize, name: &str) -> Option<usize> {
        self.funcs
            .iter()
            .position(|f| f.section == section && f.name == name)
    }

    fn scan(&self, elf: &Elf, insns: &[Insn], f: usize) -> (Facts, Vec<Vec<usize>>) {
        let func = &self.funcs[f];
        let relocs: HashMap<usize, usize> = elf
            .relocs(func.section)
            .iter()
            .map(|r| ((r.offset / 8) as usize, r.sym))
            .collect();
        let mut facts = Facts::default();
        // Positions of may_goto and iterator `_next` calls, to recognise loops
        // that are bounded by construction.
        let mut bounded_marks: Vec<(usize, &'static str)> = Vec::new();
        let target = |sec: usize, idx: i64, what: &str, facts: &mut Facts| -> Option<usize> {
            let found = usize::try_from(idx).ok().and_then(|i| self.func_at(sec, i));
            if found.is_none() {
                let sec = elf.sections.get(sec).map_or("?", |s| s.name.as_str());
                facts
                    .unresolved
                    .push(format!("{what} target {idx} in section {sec}"));
            }
            found
        };
        // Successors of each instruction (function-relative) for loop bodies.
        let mut succs: Vec<Vec<usize>> = vec![Vec::new(); func.insns()];
        let mut pc = func.start;
        while pc < func.end {
            let insn = insns[pc];
            let rel = pc - func.start;
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            let sym = relocs.get(&pc).and_then(|&s| elf.symbols.get(s));
            if insn.code == LD_IMM64 {
                match sym {
                    Some(s) if s.is_undefined() => facts.extern_refs.push(s.name.clone()),
                    // clang leaves src_reg 0; libbpf recognises a function
                    // pointer by the relocation landing in code.
                    Some(s)
                        if elf
                            .sections
                            .get(usize::from(s.shndx))
                            .is_some_and(|sec| sec.is_exec()) =>
                    {
                        let at = (s.value as i64 + i64::from(insn.imm)) / 8;
                        if let Some(t) = target(usize::from(s.shndx), at, "callback", &mut facts) {
                            facts.callbacks.push(t);
                        }
                    }
                    None if insn.src == PSEUDO_FUNC => {
                        let at = pc as i64 + i64::from(insn.imm) + 1;
                        if let Some(t) = target(func.section, at, "callback", &mut facts) {
                            facts.callbacks.push(t);
                        }
                    }
                    _ => {}
                }
                succs[rel].push(rel + 2);
                pc += 2; // ld_imm64 occupies two slots
                continue;
            }
            if class == CLASS_JMP && op == OP_CALL {
                succs[rel].push(rel + 1);
                match sym {
                    Some(s) if s.is_undefined() => {
                        let name = policy::essential_name(&s.name);
                        if name.starts_with("bpf_iter_") && name.ends_with("_next") {
                            bounded_marks.push((pc, "open-coded iterator"));
                        }
                        facts.kfuncs.push(s.name.clone());
                    }
                    Some(s) => {
                        let at = (s.value / 8) as i64 + i64::from(insn.imm) + 1;
                        if let Some(t) = target(usize::from(s.shndx), at, "call", &mut facts) {
                            facts.calls.push(t);
                        }
                    }
                    None if insn.src == PSEUDO_CALL => {
                        let at = pc as i64 + i64::from(insn.imm) + 1;
                        if let Some(t) = target(func.section, at, "call", &mut facts) {
                            facts.calls.push(t);
                        }
                    }
                    None if insn.src == 0 => facts.helpers.push(insn.imm),
                    None => facts
                        .unresolved
                        .push(format!("call with src_reg {} at {pc}", insn.src)),
                }
            } else if (class == CLASS_JMP || class == CLASS_JMP32) && op != OP_EXIT {
                if class == CLASS_JMP && op == OP_JCOND {
                    bounded_marks.push((pc, "may_goto"));
                }
                // `gotol` (JMP32|JA) keeps its offset in imm.
                let delta = if class == CLASS_JMP32 && op == OP_JA {
                    i64::from(insn.imm)
                } else {
                    i64::from(insn.off)
                };
                let to = pc as i64 + 1 + delta;
                if op != OP_JA {
                    succs[rel].push(rel + 1);
                }
                if let Ok(t) = usize::try_from(to - func.start as i64) {
                    succs[rel].push(t);
                }
                if to <= pc as i64 && to >= func.start as i64 {
                    let to = to as usize;
                    facts.back_edges.push(BackEdge {
                        from: pc - func.start,
                        to: to - func.start,
                        bound: None,
                    });
                }
            } else if !(class == CLASS_JMP || class == CLASS_JMP32) {
                succs[rel].push(rel + 1);
            }
            pc += 1;
        }
        // Classifying costs O(function size) per back-edge: on a pathological
        // object leave the loops unclassified (reported as unbounded).
        if facts.back_edges.len().saturating_mul(succs.len()) <= 20_000_000 {
            let preds = predecessors(&succs);
            facts.back_edges.retain_mut(|e| {
                let body = loop_body(&succs, &preds, e.from, e.to);
                e.bound = bounded_marks
                    .iter()
                    .find(|(at, _)| body[at - func.start])
                    .map(|(_, why)| *why);
                // A backward jump that never comes round again (to a shared
                // `exit`, say) is layout, not a loop.
                body[e.from]
            });
        }
        (facts, succs)
    }

    /// Functions reachable from `root` (excluding `root`).
    pub fn reach(&self, root: usize) -> Reach {
        let mut r = Reach::default();
        let mut stack = vec![(root, false)];
        let mut seen = BTreeSet::from([(root, false)]);
        while let Some((f, in_cb)) = stack.pop() {
            let facts = &self.funcs[f].facts;
            let next = facts
                .calls
                .iter()
                .map(|&c| (c, in_cb))
                .chain(facts.callbacks.iter().map(|&c| (c, true)));
            for (c, cb) in next {
                if seen.insert((c, cb)) {
                    stack.push((c, cb));
                }
            }
        }
        for (f, cb) in seen {
            if f == root && !cb {
                continue;
            }
            if cb {
                r.in_callback.insert(f);
            } else {
                r.direct.insert(f);
            }
        }
        r.in_callback.retain(|f| !r.direct.contains(f));
        r
    }

    /// `(instructions, ns)` of one pass through `root`: every instruction of
    /// every function counted once per call site (all branches taken, loops
    /// and callbacks once), plus each helper/kfunc call site's cost.
    pub fn cost(&self, root: usize) -> (u64, f64) {
        let mut memo: HashMap<usize, (u64, f64)> = HashMap::new();
        self.cost_rec(root, &mut memo, &mut BTreeSet::new())
    }

    fn cost_rec(
        &self,
        f: usize,
        memo: &mut HashMap<usize, (u64, f64)>,
        active: &mut BTreeSet<usize>,
    ) -> (u64, f64) {
        if let Some(c) = memo.get(&f) {
            return *c;
        }
        // Recursion is rejected by the kernel verifier; count a cycle once.
        if !active.insert(f) {
            return (0, 0.0);
        }
        let func = &self.funcs[f];
        let mut insns = func.insns() as u64;
        let mut ns = func.insns() as f64 * policy::NS_PER_INSN;
        for &h in &func.facts.helpers {
            ns += policy::helper_name(h).map_or(50.0, |n| policy::helper_cost_ns(&n));
        }
        for k in &func.facts.kfuncs {
            ns += policy::kfunc_cost_ns(policy::essential_name(k));
        }
        for &c in func.facts.calls.iter().chain(&func.facts.callbacks) {
            let (i, n) = self.cost_rec(c, memo, active);
            insns = insns.saturating_add(i);
            ns += n;
        }
        active.remove(&f);
        memo.insert(f, (insns, ns));
        (insns, ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_body_follows_paths_not_layout() {
        // 0 → 3 (rotated loop entry); 1 → 2 → 3 → 4 → 1 (back-edge 4 → 1);
        // 3 → 5 exits; 5 → 6 → 5 is a later, separate loop.
        let succs = vec![
            vec![3],
            vec![2],
            vec![3],
            vec![4, 5],
            vec![1],
            vec![6],
            vec![5, 7],
            vec![],
        ];
        let preds = predecessors(&succs);
        let body = loop_body(&succs, &preds, 4, 1);
        assert_eq!(body, [false, true, true, true, true, false, false, false]);
        // A backward jump to code that never returns to it is no loop.
        let succs = vec![vec![1], vec![], vec![1]];
        let preds = predecessors(&succs);
        assert!(!loop_body(&succs, &preds, 2, 1)[2]);
    }
}
