//! Finding global variables in an object's data sections through its BTF,
//! and enumerator values in the running kernel's BTF.

use std::collections::HashMap;

use anyhow::{Context, Result};
use libbpf_rs::btf::types::{Composite, DataSec, Enum, Enum64, Var};
use libbpf_rs::btf::{Btf, BtfType, ReferencesType};

/// A global variable: where it lives in its section and how big it is.
#[derive(Debug, Clone)]
pub struct GlobalVar {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    /// Byte offsets of the members when the variable is a struct.
    pub members: HashMap<String, usize>,
}

/// All variables of the data section `section` (".rodata", ".data", ...).
///
/// `btf` must come from an *opened* object: clang leaves datasec offsets at
/// zero in the ELF and libbpf fills them in from the symbol table at open.
pub fn section_vars(btf: &Btf<'_>, section: &str) -> Vec<GlobalVar> {
    let Some(sec) = btf.type_by_name::<DataSec<'_>>(section) else {
        return Vec::new();
    };
    let mut vars = Vec::new();
    for info in sec.iter() {
        let Some(var) = btf.type_by_id::<Var<'_>>(info.ty) else {
            continue;
        };
        let Some(name) = var.name() else { continue };
        let members = struct_members(btf, &var);
        vars.push(GlobalVar {
            name: name.to_string_lossy().into_owned(),
            offset: info.offset as usize,
            size: info.size,
            members,
        });
    }
    vars
}

fn struct_members(btf: &Btf<'_>, var: &Var<'_>) -> HashMap<String, usize> {
    let Some(ty) = btf.type_by_id::<BtfType<'_>>(var.referenced_type_id()) else {
        return HashMap::new();
    };
    let Ok(comp) = Composite::try_from(ty.skip_mods_and_typedefs()) else {
        return HashMap::new();
    };
    comp.iter()
        .filter_map(|m| {
            let name = m.name?.to_string_lossy().into_owned();
            let bits = match m.attr {
                libbpf_rs::btf::types::MemberAttr::Normal { offset } => offset,
                libbpf_rs::btf::types::MemberAttr::BitField { offset, .. } => offset,
            };
            Some((name, (bits / 8) as usize))
        })
        .collect()
}

/// Every enumerator in the running kernel's BTF, by name.
pub fn kernel_enumerators() -> Result<HashMap<String, u64>> {
    let btf = Btf::from_vmlinux().context("reading /sys/kernel/btf/vmlinux")?;
    let mut out = HashMap::new();
    for e in btf.type_by_kind::<Enum<'_>>() {
        for m in e.iter() {
            if let Some(n) = m.name {
                out.insert(n.to_string_lossy().into_owned(), m.value as u64);
            }
        }
    }
    for e in btf.type_by_kind::<Enum64<'_>>() {
        for m in e.iter() {
            if let Some(n) = m.name {
                out.insert(n.to_string_lossy().into_owned(), m.value as u64);
            }
        }
    }
    Ok(out)
}
