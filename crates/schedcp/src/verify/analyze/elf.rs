//! Just enough of ELF64 to read a clang `-target bpf` object: section headers,
//! the symbol table and `SHT_REL` relocations. Hand-written (no crate) because
//! BPF objects only ever use this little-endian 64-bit subset, and every read
//! is bounds-checked so a hostile object yields an error, never a panic.

use std::collections::HashMap;

const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;
const SHF_EXECINSTR: u64 = 4;
const EM_BPF: u16 = 247;
pub const STT_FUNC: u8 = 2;

#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub kind: u32,
    pub flags: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
}

impl Section {
    pub fn is_exec(&self) -> bool {
        self.flags & SHF_EXECINSTR != 0 && self.kind != SHT_NOBITS
    }
}

#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub value: u64,
    pub size: u64,
    pub kind: u8,
    /// Section index; 0 (`SHN_UNDEF`) for externs (kfuncs, `__ksym`, `.kconfig`).
    pub shndx: u16,
}

impl Symbol {
    pub fn is_undefined(&self) -> bool {
        self.shndx == 0
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Reloc {
    pub offset: u64,
    pub sym: usize,
}

pub struct Elf<'a> {
    data: &'a [u8],
    pub sections: Vec<Section>,
    pub symbols: Vec<Symbol>,
    /// Section index → its relocations (from the `SHT_REL` section naming it).
    relocs: HashMap<usize, Vec<Reloc>>,
}

fn rd<const N: usize>(d: &[u8], at: u64) -> Result<[u8; N], String> {
    let at = usize::try_from(at).map_err(|_| "offset out of range".to_string())?;
    d.get(at..at.checked_add(N).ok_or("offset overflow")?)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("truncated ELF (read of {N} bytes at {at})"))
}
fn u16_at(d: &[u8], at: u64) -> Result<u16, String> {
    rd::<2>(d, at).map(u16::from_le_bytes)
}
fn u32_at(d: &[u8], at: u64) -> Result<u32, String> {
    rd::<4>(d, at).map(u32::from_le_bytes)
}
fn u64_at(d: &[u8], at: u64) -> Result<u64, String> {
    rd::<8>(d, at).map(u64::from_le_bytes)
}

fn cstr(d: &[u8], at: u64) -> String {
    let at = at as usize;
    let tail = d.get(at..).unwrap_or(&[]);
    // Symbol and section names are short; a missing NUL must not turn the
    // rest of the file into one name.
    let tail = &tail[..tail.len().min(1024)];
    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..end]).into_owned()
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, String> {
        if data.get(..4) != Some(b"\x7fELF") {
            return Err("not an ELF file".into());
        }
        // EI_CLASS = ELFCLASS64, EI_DATA = ELFDATA2LSB: what clang emits for x86 hosts.
        if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
            return Err("not a 64-bit little-endian ELF object".into());
        }
        if u16_at(data, 18)? != EM_BPF {
            return Err("not a BPF object (e_machine is not EM_BPF)".into());
        }
        let shoff = u64_at(data, 0x28)?;
        let shentsize = u64::from(u16_at(data, 0x3a)?);
        let shnum = u64::from(u16_at(data, 0x3c)?);
        let shstrndx = u64::from(u16_at(data, 0x3e)?);
        if shentsize < 64 {
            return Err("bad section header size".into());
        }
        let mut raw = Vec::new();
        for i in 0..shnum {
            let h = i
                .checked_mul(shentsize)
                .and_then(|o| o.checked_add(shoff))
                .filter(|h| h.checked_add(64).is_some_and(|e| e <= data.len() as u64))
                .ok_or("section header table lies outside the file")?;
            raw.push((
                u32_at(data, h)?,
                Section {
                    name: String::new(),
                    kind: u32_at(data, h + 4)?,
                    flags: u64_at(data, h + 8)?,
                    offset: u64_at(data, h + 24)?,
                    size: u64_at(data, h + 32)?,
                    link: u32_at(data, h + 40)?,
                    info: u32_at(data, h + 44)?,
                },
            ));
        }
        let strtab_off = raw
            .get(shstrndx as usize)
            .map(|(_, s)| s.offset)
            .ok_or("bad section-name table index")?;
        let sections: Vec<Section> = raw
            .into_iter()
            .map(|(name_off, mut s)| {
                s.name = cstr(data, strtab_off.saturating_add(u64::from(name_off)));
                s
            })
            .collect();
        let mut elf = Elf {
            data,
            sections,
            symbols: Vec::new(),
            relocs: HashMap::new(),
        };
        elf.read_symbols()?;
        elf.read_relocs()?;
        Ok(elf)
    }

    /// Bytes of section `idx`; empty for `SHT_NOBITS` (.bss) and bad indices.
    pub fn section_data(&self, idx: usize) -> Result<&'a [u8], String> {
        let Some(s) = self.sections.get(idx) else {
            return Ok(&[]);
        };
        if s.kind == SHT_NOBITS {
            return Ok(&[]);
        }
        let start = usize::try_from(s.offset).map_err(|_| "section offset")?;
        let end = start
            .checked_add(usize::try_from(s.size).map_err(|_| "section size")?)
            .ok_or("section overflow")?;
        self.data
            .get(start..end)
            .ok_or_else(|| format!("section {} lies outside the file", s.name))
    }

    pub fn section_by_name(&self, name: &str) -> Option<usize> {
        self.sections.iter().position(|s| s.name == name)
    }

    pub fn relocs(&self, section: usize) -> &[Reloc] {
        self.relocs.get(&section).map_or(&[], Vec::as_slice)
    }

    fn read_symbols(&mut self) -> Result<(), String> {
        let Some(idx) = self.sections.iter().position(|s| s.kind == SHT_SYMTAB) else {
            return Err("the object has no symbol table".into());
        };
        let d = self.section_data(idx)?;
        let strtab = self.sections[idx].link as usize;
        let str_off = self
            .sections
            .get(strtab)
            .map(|s| s.offset)
            .ok_or("bad symbol string table")?;
        for e in d.chunks_exact(24) {
            self.symbols.push(Symbol {
                name: cstr(self.data, str_off.saturating_add(u64::from(u32_at(e, 0)?))),
                kind: e[4] & 0xf,
                shndx: u16_at(e, 6)?,
                value: u64_at(e, 8)?,
                size: u64_at(e, 16)?,
            });
        }
        Ok(())
    }

    fn read_relocs(&mut self) -> Result<(), String> {
        for idx in 0..self.sections.len() {
            let s = &self.sections[idx];
            if s.kind != SHT_REL {
                continue;
            }
            let target = s.info as usize;
            let d = self.section_data(idx)?;
            let list = self.relocs.entry(target).or_default();
            for e in d.chunks_exact(16) {
                let info = u64_at(e, 8)?;
                list.push(Reloc {
                    offset: u64_at(e, 0)?,
                    sym: (info >> 32) as usize,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Elf::parse(b"").is_err());
        assert!(Elf::parse(b"\x7fELF").is_err());
        let mut hdr = vec![0u8; 64];
        hdr[..4].copy_from_slice(b"\x7fELF");
        hdr[4] = 2;
        hdr[5] = 1;
        hdr[18] = 62; // EM_X86_64
        assert!(matches!(Elf::parse(&hdr), Err(e) if e.contains("not a BPF object")));
        hdr[18] = 247;
        // Section headers pointing past the end of the file.
        hdr[0x28] = 0xff;
        hdr[0x3a] = 64;
        hdr[0x3c] = 3;
        assert!(Elf::parse(&hdr).is_err());
        // Every truncation of a plausible header fails cleanly.
        for n in 0..hdr.len() {
            let _ = Elf::parse(&hdr[..n]);
        }
    }
}
