//! Where call arguments come from, for the two rules that must know more
//! than *which* helper or kfunc is called:
//! - `bpf_probe_read_kernel_str` in `ops.exit` may only copy a string field
//!   of the exit info the kernel passes (scx's `UEI_RECORD`);
//! - the bstr kfuncs (`scx_bpf_error_bstr` & co.) must get a format string
//!   that is a constant in the object, so its conversions can be checked.
//!
//! A forward dataflow over each function with a deliberately small lattice:
//! a register or 8-byte stack slot holds a value of known origin ([`Val`]) or
//! is [`Val::Unknown`]; where paths meet with different origins it becomes
//! Unknown. Whatever is not modelled (other ALU operations, narrow loads,
//! stores through pointers of unknown origin) yields Unknown, so a check that
//! needs a known origin fails closed.

use std::collections::{BTreeMap, HashMap};

use super::code::{Code, Insn};
use super::elf::Elf;

/// The origin of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    Unknown,
    /// The program's context: r1 at a program's first instruction.
    Ctx,
    /// `ctx[i]`: the i-th argument of the struct_ops callback.
    Arg(u8),
    /// Read from argument `arg` at a CO-RE relocated field (index into
    /// [`CoreFields::fields`]); libbpf places the offset by the field's name.
    Field {
        arg: u8,
        field: u32,
    },
    /// The frame pointer plus a constant.
    Stack(i64),
    /// Somewhere in the stack frame (a variable offset).
    StackAny,
    /// The address of byte `offset` of data section `section` (.rodata, .data).
    Data {
        section: usize,
        offset: i64,
    },
}

/// A CO-RE field relocation of the simple shape `ptr->member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreField {
    pub strukt: String,
    pub member: String,
}

/// The object's `ptr->member` CO-RE relocations, by instruction.
#[derive(Debug, Default)]
pub struct CoreFields {
    pub fields: Vec<CoreField>,
    /// (section, instruction index in the section) → index into `fields`.
    pub at: HashMap<(usize, usize), u32>,
}

/// The arguments of one helper or kfunc call.
#[derive(Debug, Clone)]
pub struct CallArgs {
    /// Instruction index within the function.
    pub insn: usize,
    pub callee: Callee,
    /// r1..r5 just before the call.
    pub args: [Val; 5],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callee {
    Helper(i32),
    /// The kfunc symbol as written.
    Kfunc(String),
}

const FP: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    regs: [Val; 11],
    /// Frame offset of an 8-byte aligned slot → what was spilled there.
    stack: BTreeMap<i64, Val>,
}

impl State {
    fn entry(is_program: bool) -> State {
        let mut regs = [Val::Unknown; 11];
        if is_program {
            regs[1] = Val::Ctx;
        }
        regs[FP] = Val::Stack(0);
        State {
            regs,
            stack: BTreeMap::new(),
        }
    }

    /// Meet of two paths; true when `self` changed.
    fn join(&mut self, other: &State) -> bool {
        let mut changed = false;
        for (a, b) in self.regs.iter_mut().zip(&other.regs) {
            if a != b && *a != Val::Unknown {
                *a = Val::Unknown;
                changed = true;
            }
        }
        let before = self.stack.len();
        self.stack.retain(|k, v| other.stack.get(k) == Some(v));
        changed || self.stack.len() != before
    }

    /// A write of `size` bytes at frame offset `off`: spills of 8 aligned
    /// bytes are tracked, anything else forgets the slots it overlaps.
    fn store(&mut self, off: i64, size: i64, val: Val) {
        let (lo, hi) = (off, off + size);
        self.stack.retain(|&k, _| k + 8 <= lo || k >= hi);
        if size == 8 && off % 8 == 0 && val != Val::Unknown {
            self.stack.insert(off, val);
        }
    }
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_MEM: u8 = 0x60;
const SIZE_DW: u8 = 0x18;
const SRC_X: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_SUB: u8 = 0x10;
const OP_MOV: u8 = 0xb0;
const OP_CALL: u8 = 0x80;
const LD_IMM64: u8 = 0x18;

fn size_of(code: u8) -> i64 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

/// `base + delta` for the origins where an offset is meaningful.
fn offset(base: Val, delta: Option<i64>) -> Val {
    match (base, delta) {
        (Val::Stack(o), Some(d)) => Val::Stack(o.saturating_add(d)),
        (Val::Stack(_) | Val::StackAny, _) => Val::StackAny,
        (Val::Data { section, offset }, Some(d)) => Val::Data {
            section,
            offset: offset.saturating_add(d),
        },
        _ => Val::Unknown,
    }
}

/// What one function's calls get as arguments. `is_program`: the function
/// is a program's entry (r1 holds the context).
pub fn call_args(
    code: &Code,
    elf: &Elf,
    core: &CoreFields,
    f: usize,
    is_program: bool,
) -> Vec<CallArgs> {
    let func = &code.funcs[f];
    let Some(insns) = code.insns.get(&func.section) else {
        return Vec::new();
    };
    let relocs: HashMap<usize, usize> = elf
        .relocs(func.section)
        .iter()
        .map(|r| ((r.offset / 8) as usize, r.sym))
        .collect();
    let data_addr = |pc: usize, imm: i32| -> Val {
        let Some(sym) = relocs.get(&pc).and_then(|&s| elf.symbols.get(s)) else {
            return Val::Unknown;
        };
        let section = usize::from(sym.shndx);
        match elf.sections.get(section) {
            Some(s) if !sym.is_undefined() && !s.is_exec() => Val::Data {
                section,
                offset: sym.value as i64 + i64::from(imm),
            },
            _ => Val::Unknown,
        }
    };

    let n = func.insns();
    let mut states: Vec<Option<State>> = vec![None; n];
    if n == 0 {
        return Vec::new();
    }
    states[0] = Some(State::entry(is_program));
    let mut work = vec![0usize];
    // Each state only ever loses facts, so this converges; the cap keeps a
    // pathological object from costing more than a bounded amount.
    let mut budget = n.saturating_mul(64).max(4096);
    let mut gave_up = false;
    while let Some(rel) = work.pop() {
        if budget == 0 {
            gave_up = true;
            break;
        }
        budget -= 1;
        let mut s = states[rel].clone().expect("queued states are set");
        let pc = func.start + rel;
        step(&mut s, insns, pc, &data_addr, core, func.section);
        for &t in &func.succs[rel] {
            if t >= n {
                continue;
            }
            let changed = match &mut states[t] {
                None => {
                    states[t] = Some(s.clone());
                    true
                }
                Some(old) => old.join(&s),
            };
            if changed && !work.contains(&t) {
                work.push(t);
            }
        }
    }

    let mut out = Vec::new();
    for (rel, st) in states.iter().enumerate() {
        let insn = insns[func.start + rel];
        if insn.code != (CLASS_JMP | OP_CALL) {
            continue;
        }
        let callee = match relocs
            .get(&(func.start + rel))
            .and_then(|&s| elf.symbols.get(s))
        {
            Some(sym) if sym.is_undefined() => Callee::Kfunc(sym.name.clone()),
            None if insn.src == 0 => Callee::Helper(insn.imm),
            _ => continue,
        };
        let args = match st {
            Some(st) if !gave_up => [st.regs[1], st.regs[2], st.regs[3], st.regs[4], st.regs[5]],
            _ => [Val::Unknown; 5],
        };
        out.push(CallArgs {
            insn: rel,
            callee,
            args,
        });
    }
    out
}

/// The state after instruction `pc`.
fn step(
    s: &mut State,
    insns: &[Insn],
    pc: usize,
    data_addr: &impl Fn(usize, i32) -> Val,
    core: &CoreFields,
    section: usize,
) {
    let i = insns[pc];
    let (dst, src) = (usize::from(i.dst), usize::from(i.src));
    if dst > FP || src > FP {
        return;
    }
    let class = i.code & 0x07;
    let op = i.code & 0xf0;
    match class {
        CLASS_LD if i.code == LD_IMM64 => {
            s.regs[dst] = data_addr(pc, i.imm);
        }
        CLASS_LD => {
            // Legacy packet loads clobber r0-r5.
            for r in 0..=5 {
                s.regs[r] = Val::Unknown;
            }
        }
        CLASS_LDX => {
            let base = s.regs[src];
            let off = i64::from(i.off);
            s.regs[dst] = if i.code & 0xe0 != MODE_MEM || i.code & 0x18 != SIZE_DW {
                Val::Unknown
            } else {
                match base {
                    Val::Ctx if off >= 0 && off % 8 == 0 && off / 8 < 12 => {
                        Val::Arg((off / 8) as u8)
                    }
                    Val::Arg(arg) => match core.at.get(&(section, pc)) {
                        Some(&field) => Val::Field { arg, field },
                        None => Val::Unknown,
                    },
                    Val::Stack(o) => s
                        .stack
                        .get(&o.saturating_add(off))
                        .copied()
                        .unwrap_or(Val::Unknown),
                    _ => Val::Unknown,
                }
            };
        }
        CLASS_ST | CLASS_STX => {
            let val = if class == CLASS_STX && i.code & 0xe0 == MODE_MEM {
                s.regs[src]
            } else {
                Val::Unknown
            };
            match s.regs[dst] {
                Val::Stack(o) => s.store(o.saturating_add(i64::from(i.off)), size_of(i.code), val),
                Val::StackAny => s.stack.clear(),
                _ => {}
            }
            // Atomic fetch/xchg/cmpxchg write a register back.
            if class == CLASS_STX && i.code & 0xe0 == 0xc0 {
                s.regs[src] = Val::Unknown;
                s.regs[0] = Val::Unknown;
            }
        }
        CLASS_ALU64 | CLASS_ALU => {
            let by_reg = i.code & SRC_X != 0;
            let delta = if by_reg { None } else { Some(i64::from(i.imm)) };
            s.regs[dst] = match (class, op) {
                (CLASS_ALU64, OP_MOV) if by_reg && i.off == 0 => s.regs[src],
                (CLASS_ALU64, OP_ADD) => offset(s.regs[dst], delta),
                (CLASS_ALU64, OP_SUB) => offset(s.regs[dst], delta.map(|d| -d)),
                // Any other arithmetic on a stack pointer still points into
                // the frame; on anything else the origin is lost.
                (CLASS_ALU64, _) if matches!(s.regs[dst], Val::Stack(_) | Val::StackAny) => {
                    Val::StackAny
                }
                _ => Val::Unknown,
            };
        }
        CLASS_JMP if op == OP_CALL => {
            // A callee may write through any stack pointer it is given.
            if s.regs[1..=5]
                .iter()
                .any(|v| matches!(v, Val::Stack(_) | Val::StackAny))
            {
                s.stack.clear();
            }
            for r in 0..=5 {
                s.regs[r] = Val::Unknown;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_disagree_forget() {
        let mut a = State::entry(true);
        let mut b = State::entry(true);
        a.regs[3] = Val::Arg(0);
        b.regs[3] = Val::Arg(1);
        a.store(-8, 8, Val::Ctx);
        b.store(-8, 8, Val::Ctx);
        a.store(-16, 8, Val::Arg(0));
        assert!(a.join(&b));
        assert_eq!(a.regs[3], Val::Unknown);
        assert_eq!(a.regs[1], Val::Ctx);
        assert_eq!(a.stack.get(&-8), Some(&Val::Ctx));
        assert_eq!(a.stack.get(&-16), None);
        assert!(!a.join(&b), "a second join changes nothing");
    }

    #[test]
    fn narrow_stores_forget_the_slot_they_overlap() {
        let mut s = State::entry(false);
        s.store(-16, 8, Val::Arg(0));
        s.store(-8, 8, Val::Arg(1));
        s.store(-8, 4, Val::Unknown);
        assert_eq!(s.stack.get(&-16), Some(&Val::Arg(0)));
        assert_eq!(s.stack.get(&-8), None);
        s.store(-20, 8, Val::Ctx); // unaligned: not tracked, and clobbers -16
        assert!(s.stack.is_empty());
    }

    #[test]
    fn offsets_follow_pointers_and_drop_others() {
        let d = Val::Data {
            section: 3,
            offset: 8,
        };
        assert_eq!(
            offset(d, Some(4)),
            Val::Data {
                section: 3,
                offset: 12
            }
        );
        assert_eq!(offset(Val::Stack(-8), None), Val::StackAny);
        assert_eq!(offset(Val::Arg(0), Some(8)), Val::Unknown);
    }
}
