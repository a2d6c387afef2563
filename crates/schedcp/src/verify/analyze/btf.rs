//! What the analysis reads from the object's own BTF (parsed by libbpf, no
//! kernel BTF needed): the struct_ops variables with their field values and
//! callback slots, and how extern symbols are declared (kfunc, `__ksym`
//! kernel variable, `.kconfig`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use libbpf_rs::btf::types::{Array, DataSec, Int, MemberAttr, Struct, Var};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize, ReferencesType, TypeId};

use super::elf::Elf;
use super::flow::{CoreField, CoreFields};

/// `BPF_CORE_FIELD_BYTE_OFFSET`: libbpf rewrites the instruction's offset to
/// the field's offset in the running kernel, found by name.
const CORE_FIELD_BYTE_OFFSET: u32 = 0;

/// A struct_ops variable (libbpf makes each one a `BPF_MAP_TYPE_STRUCT_OPS` map).
#[derive(Debug, Clone)]
pub struct StructOpsVar {
    /// Variable name = map name.
    pub map: String,
    pub struct_type: String,
    /// Integer members and their initial values.
    pub ints: BTreeMap<String, u64>,
    /// `char` array members (the ops `name`), raw bytes.
    pub strings: BTreeMap<String, Vec<u8>>,
    /// Callback member → the program (symbol) it points to.
    pub callbacks: BTreeMap<String, String>,
}

/// How the object declares its undefined symbols.
#[derive(Debug, Default)]
pub struct Externs {
    pub ksym_vars: BTreeSet<String>,
}

pub struct ObjectBtf {
    btf: Btf<'static>,
}

fn name_of(t: &BtfType<'_>) -> String {
    t.name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl ObjectBtf {
    pub fn open(path: &Path) -> Result<Self, String> {
        Btf::from_path(path)
            .map(|btf| ObjectBtf { btf })
            .map_err(|e| format!("reading the object's BTF: {e}"))
    }

    fn datasecs(&self, pred: impl Fn(&str) -> bool) -> Vec<(String, DataSec<'_>)> {
        self.btf
            .type_by_kind::<DataSec<'_>>()
            .map(|d| (name_of(&d), d))
            .filter(|(n, _)| pred(n))
            .collect()
    }

    pub fn externs(&self) -> Externs {
        let mut ex = Externs::default();
        for (_, sec) in self.datasecs(|n| n == ".ksyms") {
            for v in sec.iter() {
                if let Some(t) = self.btf.type_by_id::<BtfType<'_>>(v.ty) {
                    if t.kind() == BtfKind::Var {
                        ex.ksym_vars.insert(name_of(&t));
                    }
                }
            }
        }
        ex
    }

    /// The `ptr->member` field-offset relocations in `.BTF.ext` (other
    /// relocation kinds and deeper access paths are not needed by any rule
    /// and are left out). A missing or malformed `.BTF.ext` yields none,
    /// which makes the rules that need them fail closed.
    pub fn core_fields(&self, elf: &Elf) -> CoreFields {
        let mut out = CoreFields::default();
        let (Some(btf), Some(ext)) = (
            elf.section_by_name(".BTF")
                .and_then(|i| elf.section_data(i).ok()),
            elf.section_by_name(".BTF.ext")
                .and_then(|i| elf.section_data(i).ok()),
        ) else {
            return out;
        };
        let u32_at = |d: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                d.get(at..at.checked_add(4)?)?.try_into().ok()?,
            ))
        };
        let strings = (|| {
            let start = (u32_at(btf, 4)? as usize).checked_add(u32_at(btf, 16)? as usize)?;
            btf.get(start..start.checked_add(u32_at(btf, 20)? as usize)?)
        })()
        .unwrap_or(&[]);
        let string = |off: u32| -> Option<&str> {
            let tail = strings.get(off as usize..)?;
            std::str::from_utf8(&tail[..tail.iter().position(|&b| b == 0)?]).ok()
        };
        let hdr_len = u32_at(ext, 4).unwrap_or(0) as usize;
        if hdr_len < 32 {
            return out;
        }
        let (Some(off), Some(len)) = (u32_at(ext, 24), u32_at(ext, 28)) else {
            return out;
        };
        let Some(region) = hdr_len
            .checked_add(off as usize)
            .and_then(|s| ext.get(s..s.checked_add(len as usize)?))
        else {
            return out;
        };
        let Some(rec) = u32_at(region, 0).map(|r| r as usize).filter(|r| *r >= 16) else {
            return out;
        };
        let mut at = 4;
        while let (Some(sec_name), Some(count)) = (u32_at(region, at), u32_at(region, at + 4)) {
            at += 8;
            let section = string(sec_name).and_then(|n| elf.section_by_name(n));
            for _ in 0..count {
                let (Some(insn_off), Some(type_id), Some(access), Some(kind)) = (
                    u32_at(region, at),
                    u32_at(region, at + 4),
                    u32_at(region, at + 8),
                    u32_at(region, at + 12),
                ) else {
                    return out;
                };
                at += rec;
                let (Some(section), CORE_FIELD_BYTE_OFFSET) = (section, kind) else {
                    continue;
                };
                let Some(field) = string(access).and_then(|a| self.simple_field(type_id, a)) else {
                    continue;
                };
                let idx = match out.fields.iter().position(|f| *f == field) {
                    Some(i) => i,
                    None => {
                        out.fields.push(field);
                        out.fields.len() - 1
                    }
                };
                out.at.insert((section, insn_off as usize / 8), idx as u32);
            }
        }
        out
    }

    /// The access string `0:N` on struct `type_id`: member N of the struct.
    fn simple_field(&self, type_id: u32, access: &str) -> Option<CoreField> {
        let (first, member) = access.split_once(':')?;
        let member: usize = member.parse().ok()?;
        if first != "0" {
            return None;
        }
        let t = self
            .btf
            .type_by_id::<BtfType<'_>>(TypeId::from(type_id))?
            .skip_mods_and_typedefs();
        let st = Struct::try_from(t).ok()?;
        let m = st.iter().nth(member)?;
        Some(CoreField {
            strukt: name_of(&st),
            member: m.name?.to_string_lossy().into_owned(),
        })
    }

    /// Every variable in a `.struct_ops*` section, with its initial data read
    /// from the ELF section at the offsets the BTF gives.
    pub fn struct_ops(&self, elf: &Elf) -> Result<Vec<StructOpsVar>, String> {
        let mut out = Vec::new();
        for (sec_name, sec) in self.datasecs(|n| n.starts_with(".struct_ops")) {
            let Some(sec_idx) = elf.section_by_name(&sec_name) else {
                continue;
            };
            let data = elf.section_data(sec_idx)?;
            let relocs = elf.relocs(sec_idx);
            for v in sec.iter() {
                let Some(var) = self.btf.type_by_id::<Var<'_>>(v.ty) else {
                    continue;
                };
                let ty = var.referenced_type().skip_mods_and_typedefs();
                let Ok(st) = Struct::try_from(ty) else {
                    continue;
                };
                let base = v.offset as usize;
                let bytes = data
                    .get(base..base + st.size())
                    .ok_or_else(|| format!("{sec_name}: variable lies outside the section"))?;
                let mut s = StructOpsVar {
                    map: name_of(&var),
                    struct_type: name_of(&st),
                    ints: BTreeMap::new(),
                    strings: BTreeMap::new(),
                    callbacks: BTreeMap::new(),
                };
                let mut slots = BTreeMap::new();
                for m in st.iter() {
                    let MemberAttr::Normal { offset } = m.attr else {
                        continue;
                    };
                    let (off, name) = ((offset / 8) as usize, m.name);
                    let name = name.map(|n| n.to_string_lossy().into_owned());
                    let (Some(name), Some(mt)) = (name, self.btf.type_by_id::<BtfType<'_>>(m.ty))
                    else {
                        continue;
                    };
                    let mt = mt.skip_mods_and_typedefs();
                    match mt.kind() {
                        BtfKind::Ptr => {
                            slots.insert(base + off, name);
                        }
                        BtfKind::Int => {
                            if let Ok(i) = Int::try_from(mt) {
                                if let Some(b) = bytes.get(off..off + i.size()) {
                                    let mut le = [0u8; 8];
                                    le[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
                                    s.ints.insert(name, u64::from_le_bytes(le));
                                }
                            }
                        }
                        BtfKind::Array => {
                            if let Ok(a) = Array::try_from(mt) {
                                let elem = a.contained_type().skip_mods_and_typedefs();
                                if elem.kind() == BtfKind::Int {
                                    if let Some(b) = bytes.get(off..off + a.capacity()) {
                                        s.strings.insert(name, b.to_vec());
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                for r in relocs {
                    if let (Some(slot), Some(sym)) =
                        (slots.get(&(r.offset as usize)), elf.symbols.get(r.sym))
                    {
                        s.callbacks.insert(slot.clone(), sym.name.clone());
                    }
                }
                out.push(s);
            }
        }
        Ok(out)
    }
}
