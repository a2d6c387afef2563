//! Loading an arbitrary sched_ext BPF object and attaching it through
//! struct_ops, the way a production loader would, but without a generated
//! skeleton: schedcp runs objects it has never seen at build time.

#[path = "loader/btf_vars.rs"]
mod btf_vars;
#[path = "loader/verifier_log.rs"]
pub mod verifier_log;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::btf::Btf;
use libbpf_rs::{AsRawLibbpf, Link, MapCore, MapFlags, MapType, Object, ObjectBuilder};
use schedcp_proto::job::{RodataScalar, RodataValue};
use schedcp_proto::report::{exit_kind_name, ExitInfo, ProgramInfo};

use btf_vars::{kernel_enumerators, section_vars, GlobalVar};

/// Why a scheduler did not get loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The object or its configuration is wrong before the kernel sees it.
    Prepare(anyhow::Error),
    /// The kernel refused it; `log` is the trimmed verifier log.
    Rejected { error: String, log: String },
}

pub struct Scheduler {
    /// `.data` variables, located while the object was open.
    data_vars: Vec<GlobalVar>,
    rodata_vars: Vec<GlobalVar>,
    /// How many `__SCX_*` constants were filled, and which the kernel lacks.
    pub scx_enums: (usize, Vec<String>),
    object: Object,
    link: Option<Link>,
    pub programs: Vec<ProgramInfo>,
}

/// Open `path`, fill the sched_ext constants and tunables, and load it.
pub fn load(path: &Path, tunables: &[RodataValue]) -> Result<Scheduler, LoadError> {
    verifier_log::install();
    let enums = kernel_enumerators().map_err(LoadError::Prepare)?;

    let mut open = ObjectBuilder::default()
        .open_file(path)
        .map_err(|e| LoadError::Prepare(anyhow!("libbpf could not open the object: {e}")))?;
    let (rodata_vars, data_vars) = {
        // SAFETY: the pointer comes from a live OpenObject; the Btf borrow ends in this block.
        let btf = Btf::from_bpf_object(unsafe { open.as_libbpf_object().as_ref() })
            .map_err(|e| LoadError::Prepare(anyhow!("reading the object's BTF: {e}")))?
            .ok_or_else(|| LoadError::Prepare(anyhow!("the object has no BTF; compile with -g")))?;
        (section_vars(&btf, ".rodata"), section_vars(&btf, ".data"))
    };

    let mut scx_enums = (0, Vec::new());
    if !rodata_vars.is_empty() {
        let mut rodata = open
            .maps_mut()
            .find(|m| m.name().to_string_lossy().ends_with(".rodata"))
            .ok_or_else(|| {
                LoadError::Prepare(anyhow!("object has .rodata BTF but no .rodata map"))
            })?;
        let buf = rodata
            .initial_value_mut()
            .ok_or_else(|| LoadError::Prepare(anyhow!(".rodata map has no initial value")))?;
        scx_enums = fill_scx_enums(buf, &rodata_vars, &enums);
        set_tunables(buf, &rodata_vars, tunables).map_err(LoadError::Prepare)?;
    } else if !tunables.is_empty() {
        return Err(LoadError::Prepare(anyhow!(
            "tunables given but the object has no .rodata"
        )));
    }

    let programs = open
        .progs()
        .map(|p| ProgramInfo {
            name: p.name().to_string_lossy().into_owned(),
            section: p.section().to_string_lossy().into_owned(),
            insns: p.insn_cnt(),
        })
        .collect();

    let _ = verifier_log::take();
    let object = open.load().map_err(|e| LoadError::Rejected {
        error: e.to_string(),
        log: verifier_log::trim(&verifier_log::take(), 80),
    })?;
    Ok(Scheduler {
        data_vars,
        rodata_vars,
        scx_enums,
        object,
        link: None,
        programs,
    })
}

/// The scx headers read every `SCX_*` constant from a `__SCX_*` rodata
/// variable; left at zero, an insert into SCX_DSQ_GLOBAL targets DSQ 0 and the
/// kernel ejects the scheduler. Fill each one from the running kernel's BTF.
/// Returns (filled, names the running kernel does not define).
fn fill_scx_enums(
    buf: &mut [u8],
    vars: &[GlobalVar],
    enums: &HashMap<String, u64>,
) -> (usize, Vec<String>) {
    let mut filled = 0;
    let mut missing = Vec::new();
    for var in vars.iter().filter(|v| v.name.starts_with("__SCX_")) {
        match enums.get(&var.name[2..]) {
            Some(&value) if write_scalar(buf, var, value).is_ok() => filled += 1,
            _ => missing.push(var.name[2..].to_string()),
        }
    }
    (filled, missing)
}

fn set_tunables(buf: &mut [u8], vars: &[GlobalVar], tunables: &[RodataValue]) -> Result<()> {
    for t in tunables {
        let var = vars.iter().find(|v| v.name == t.name).ok_or_else(|| {
            anyhow!(
                "tunable '{}' is not a const volatile global of the object",
                t.name
            )
        })?;
        let value = match t.value {
            RodataScalar::Bool(b) => b as u64,
            RodataScalar::Int(i) => {
                let bits = var.size * 8;
                if bits < 64 && (i >= 1i64 << bits.min(63) || i < -(1i64 << (bits - 1))) {
                    bail!(
                        "tunable '{}' = {} does not fit its {}-byte variable",
                        t.name,
                        i,
                        var.size
                    );
                }
                i as u64
            }
        };
        write_scalar(buf, var, value)?;
    }
    Ok(())
}

fn write_scalar(buf: &mut [u8], var: &GlobalVar, value: u64) -> Result<()> {
    let bytes = value.to_ne_bytes();
    let n = var.size;
    if !matches!(n, 1 | 2 | 4 | 8) {
        bail!(
            "variable '{}' is {} bytes; only 1, 2, 4 and 8-byte scalars can be set",
            var.name,
            n
        );
    }
    let dst = buf
        .get_mut(var.offset..var.offset + n)
        .ok_or_else(|| anyhow!("variable '{}' lies outside .rodata", var.name))?;
    // Little-endian x86: the low-order bytes come first.
    dst.copy_from_slice(&bytes[..n]);
    Ok(())
}

impl Scheduler {
    /// Attach the object's sched_ext_ops struct_ops map.
    pub fn attach(&mut self) -> Result<()> {
        let mut ops = self
            .object
            .maps_mut()
            .find(|m| m.map_type() == MapType::StructOps)
            .ok_or_else(|| {
                anyhow!("the object defines no struct_ops map (missing SCX_OPS_DEFINE?)")
            })?;
        let link = ops.attach_struct_ops().context("attaching struct_ops")?;
        self.link = Some(link);
        Ok(())
    }

    /// Detach by dropping the link; the kernel then unregisters the scheduler.
    pub fn detach(&mut self) {
        self.link.take();
    }

    /// Read `names` back from the loaded (kernel-side) `.rodata` map, proving
    /// what the programs actually see. Values are zero-extended.
    pub fn rodata_values(&self, names: &[&str]) -> Vec<(String, u64)> {
        let Some(map) = self
            .object
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(".rodata"))
        else {
            return Vec::new();
        };
        let Ok(Some(data)) = map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| {
                let v = self.rodata_vars.iter().find(|v| v.name == *n)?;
                let bytes = data.get(v.offset..v.offset + v.size)?;
                let mut buf = [0u8; 8];
                buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
                Some((n.to_string(), u64::from_le_bytes(buf)))
            })
            .collect()
    }

    /// The scheduler's own exit record (`UEI_DEFINE(uei)` + `UEI_RECORD`),
    /// if the object has one and the scheduler has exited.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        let uei = self.data_vars.iter().find(|v| v.name == "uei")?;
        let map = self
            .object
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(".data"))?;
        let data = map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok()??;
        let field = |name: &str| uei.members.get(name).map(|off| uei.offset + off);
        let kind = read_i32(&data, field("kind")?)? as i64;
        if kind == 0 {
            return None;
        }
        let exit_code = field("exit_code")
            .and_then(|o| read_i64(&data, o))
            .unwrap_or(0);
        let reason_off = field("reason")?;
        let msg_off = field("msg")?;
        Some(ExitInfo {
            kind,
            kind_name: exit_kind_name(kind).into(),
            exit_code,
            reason: read_cstr(&data, reason_off, msg_off - reason_off),
            message: read_cstr(&data, msg_off, 1024),
            source: "uei".into(),
        })
    }
}

fn read_i32(d: &[u8], off: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(d.get(off..off + 4)?.try_into().ok()?))
}

fn read_i64(d: &[u8], off: usize) -> Option<i64> {
    Some(i64::from_ne_bytes(d.get(off..off + 8)?.try_into().ok()?))
}

fn read_cstr(d: &[u8], off: usize, max: usize) -> String {
    let end = (off + max).min(d.len());
    let s = d.get(off..end).unwrap_or(&[]);
    let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(s).into_owned()
}
