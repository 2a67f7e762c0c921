//! A small, validated model of one ELF64 x86-64 relocatable object: the
//! sections (with their RELA relocations attached), the symbols, and the
//! STT_FILE name.
//!
//! Everything the rest of the differ needs is checked here once, so later
//! stages can index sections and symbols without re-validating: every
//! symbol's section index is in range, every relocation's symbol index is in
//! range and every relocated field lies inside its (non-NOBITS) section.
//! Malformed input becomes a [`DiffError`] with a one-line reason, never a
//! panic.

use crate::DiffError;
use object::elf;
use object::read::elf::{FileHeader, Rela as _, SectionHeader as _, Sym as _};
use object::LittleEndian as LE;

/// The kinds of symbols the differ distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SymKind {
    Func,
    /// STT_GNU_IFUNC: not code of its own but a name the dynamic linker
    /// resolves by calling the resolver it sits on (same section, same
    /// address), e.g. `add` for `__attribute__((ifunc("resolve_add")))` or a
    /// target_clones function's dispatcher.
    Ifunc,
    Object,
    Tls,
    Section,
    File,
    /// NOTYPE: a global NOTYPE is an assembler-defined name; a local one is
    /// a label such as GCC's `.LC0` for string literals and constants.
    NoType,
    Other,
}

#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub kind: SymKind,
    /// STB_GLOBAL or STB_WEAK.
    pub global: bool,
    /// Defining section, `None` for undefined, absolute and common symbols.
    pub section: Option<usize>,
    /// SHN_UNDEF (or SHN_COMMON: storage provided by the link, so it is
    /// referenced by name like an undefined symbol).
    pub external: bool,
    pub value: u64,
    pub size: u64,
}

impl Symbol {
    /// A "named" symbol is one the running program knows by name and that a
    /// route can point at: functions, data objects, TLS objects and global
    /// assembler labels. Local NOTYPE labels (`.LC0`) and section symbols are
    /// anonymous: they only stand for a place in a section.
    /// ELF's reserved symbol 0.
    fn null() -> Symbol {
        Symbol {
            name: String::new(),
            kind: SymKind::Other,
            global: false,
            section: None,
            external: false,
            value: 0,
            size: 0,
        }
    }

    pub fn is_named(&self) -> bool {
        match self.kind {
            SymKind::Func | SymKind::Ifunc | SymKind::Object | SymKind::Tls => {
                !self.name.is_empty()
            }
            SymKind::NoType => self.global && self.section.is_some() && !self.name.is_empty(),
            _ => false,
        }
    }

    pub fn is_data(&self) -> bool {
        matches!(self.kind, SymKind::Object | SymKind::Tls)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloc {
    pub offset: u64,
    pub r_type: u32,
    pub sym: usize,
    pub addend: i64,
}

#[derive(Debug, Clone)]
pub struct Section<'a> {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub entsize: u64,
    pub size: u64,
    /// File bytes; empty for NOBITS.
    pub data: &'a [u8],
    /// RELA relocations applying to this section, sorted by offset.
    pub relocs: Vec<Reloc>,
    /// Named symbols (see [`Symbol::is_named`]) defined in this section.
    pub named: Vec<usize>,
}

impl Section<'_> {
    pub fn is_alloc(&self) -> bool {
        self.flags & u64::from(elf::SHF_ALLOC) != 0
    }
    pub fn is_exec(&self) -> bool {
        self.flags & u64::from(elf::SHF_EXECINSTR) != 0
    }
    pub fn is_write(&self) -> bool {
        self.flags & u64::from(elf::SHF_WRITE) != 0
    }
    pub fn is_nobits(&self) -> bool {
        self.sh_type == elf::SHT_NOBITS
    }
    pub fn is_merge_strings(&self) -> bool {
        let f = u64::from(elf::SHF_MERGE | elf::SHF_STRINGS);
        self.flags & f == f
    }
    pub fn is_merge_const(&self) -> bool {
        self.flags & u64::from(elf::SHF_MERGE) != 0 && !self.is_merge_strings()
    }
    /// Read-only data as far as a running program is concerned: not
    /// writable, or RELRO data (`.data.rel.ro*`), which the object marks
    /// writable only so the dynamic linker can relocate it before it is
    /// sealed. Nothing at run time can have modified it, so a fresh copy is
    /// as good as the original.
    pub fn is_readonly(&self) -> bool {
        self.is_alloc() && (!self.is_write() || self.name.starts_with(".data.rel.ro"))
    }
    /// Sections that are never copied into a patch: debug info, unwind
    /// tables, notes, comments, groups, and anything not loaded at run time.
    pub fn never_ship(&self) -> bool {
        !self.is_alloc()
            || self.sh_type == elf::SHT_GROUP
            || self.name.starts_with(".debug")
            || self.name.starts_with(".eh_frame")
            || self.name.starts_with(".note")
            || self.name == ".comment"
    }
    /// The file bytes of `[start, end)` that exist: shorter than asked for
    /// NOBITS sections (none) and ranges running past the data. Callers
    /// treat missing bytes as zero; this never allocates more than the file.
    pub fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        let len = self.data.len() as u64;
        let (s, e) = (
            start.min(len) as usize,
            end.min(len).max(start.min(len)) as usize,
        );
        self.data[s..e].to_vec()
    }
}

#[derive(Debug, Clone)]
pub struct Object<'a> {
    /// The first STT_FILE symbol's name.
    pub file: Option<String>,
    /// Indexed by ELF section index (index 0 is the null section).
    pub sections: Vec<Section<'a>>,
    /// Indexed by ELF symbol index (index 0 is the null symbol).
    pub symbols: Vec<Symbol>,
}

/// Width of a relocation's field: the rule lives in the format crate.
pub use format::mask::reloc_width;

/// Relocation types whose field is PC-relative and (for the usual
/// instruction forms) ends the instruction, so the addend carries a -4 that
/// is not part of the referenced offset.
pub fn is_pc_relative32(r_type: u32) -> bool {
    matches!(
        r_type,
        elf::R_X86_64_PC32
            | elf::R_X86_64_PLT32
            | elf::R_X86_64_GOTPCREL
            | elf::R_X86_64_GOTPCRELX
            | elf::R_X86_64_REX_GOTPCRELX
    )
}

fn err(what: &str, e: impl std::fmt::Display) -> DiffError {
    DiffError(format!("{what}: {e}"))
}

type Header = elf::FileHeader64<LE>;
type SectionTable<'a> = object::read::elf::SectionTable<'a, Header>;
type SymbolTable<'a> = object::read::elf::SymbolTable<'a, Header>;

/// Parses and validates `data`. `which` ("original"/"patched") prefixes
/// error messages.
///
/// The steps, each checking what it reads: [`header`] (ELF64, x86-64,
/// relocatable), the section and symbol tables, [`read_sections`],
/// [`read_symbols`], then [`name_section_symbols`] and [`index_named`],
/// and last [`read_relocations`], which needs both the sections (bounds)
/// and the symbols (indices).
pub fn parse<'a>(data: &'a [u8], which: &str) -> Result<Object<'a>, DiffError> {
    let head = header(data, which)?;
    let table = head
        .sections(LE, data)
        .map_err(|e| err(&format!("{which} object: bad section headers"), e))?;
    let symtab = table
        .symbols(LE, data, elf::SHT_SYMTAB)
        .map_err(|e| err(&format!("{which} object: bad symbol table"), e))?;
    if symtab.is_empty() {
        return Err(DiffError(format!("{which} object has no symbol table")));
    }
    let mut sections = read_sections(&table, data, which)?;
    let mut symbols = read_symbols(&symtab, sections.len(), which)?;
    name_section_symbols(&mut symbols, &sections);
    index_named(&symbols, &mut sections);
    for (target, relocs) in read_relocations(&table, &symtab, data, &symbols, &sections, which)? {
        sections[target].relocs.extend(relocs);
    }
    for s in &mut sections {
        s.relocs.sort_by_key(|r| (r.offset, r.r_type));
    }
    let file = symbols
        .iter()
        .find(|s| s.kind == SymKind::File && !s.name.is_empty())
        .map(|s| s.name.clone());
    Ok(Object {
        file,
        sections,
        symbols,
    })
}

/// The file header, once the file is known to be an ELF64 little-endian
/// x86-64 relocatable object: from here on everything is read as [`LE`].
fn header<'a>(data: &'a [u8], which: &str) -> Result<&'a Header, DiffError> {
    let header = Header::parse(data)
        .map_err(|e| err(&format!("{which} object is not ELF64 little-endian"), e))?;
    let endian = header
        .endian()
        .map_err(|e| err(&format!("{which} object"), e))?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(DiffError(format!(
            "{which} object is not x86-64 (e_machine {})",
            header.e_machine(endian)
        )));
    }
    if header.e_type(endian) != elf::ET_REL {
        return Err(DiffError(format!(
            "{which} object is not a relocatable object (e_type {}); pass the .o file",
            header.e_type(endian)
        )));
    }
    Ok(header)
}

/// Every section, by ELF index, with its name and file bytes; relocations
/// and named symbols are attached later.
fn read_sections<'a>(
    table: &SectionTable<'a>,
    data: &'a [u8],
    which: &str,
) -> Result<Vec<Section<'a>>, DiffError> {
    let mut sections = Vec::with_capacity(table.len());
    for (index, sh) in table.enumerate() {
        let name = table
            .section_name(LE, sh)
            .map_err(|e| err(&format!("{which} object: section {} name", index.0), e))?;
        let sh_type = sh.sh_type(LE);
        let data_bytes: &[u8] = if sh_type == elf::SHT_NOBITS {
            &[]
        } else {
            sh.data(LE, data).map_err(|e| {
                err(
                    &format!("{which} object: section {} data truncated", index.0),
                    e,
                )
            })?
        };
        sections.push(Section {
            name: String::from_utf8_lossy(name).into_owned(),
            sh_type,
            flags: sh.sh_flags(LE),
            entsize: sh.sh_entsize(LE),
            size: sh.sh_size(LE),
            data: data_bytes,
            relocs: Vec::new(),
            named: Vec::new(),
        });
    }
    Ok(sections)
}

/// Every symbol, by ELF index; its section index is checked against the
/// `section_count` sections.
fn read_symbols(
    symtab: &SymbolTable,
    section_count: usize,
    which: &str,
) -> Result<Vec<Symbol>, DiffError> {
    let mut symbols = Vec::with_capacity(symtab.len());
    for (index, sym) in symtab.enumerate() {
        if index.0 == 0 {
            // ELF reserves entry 0 (a relocation naming it has no symbol):
            // whatever its bytes say, it is nothing. Read as a symbol, a
            // named one here is not correlated like the others, and an
            // object compared with itself differed (fuzz, differ_object).
            symbols.push(Symbol::null());
            continue;
        }
        let name = symtab
            .symbol_name(LE, sym)
            .map_err(|e| err(&format!("{which} object: symbol {} name", index.0), e))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let section = symtab
            .symbol_section(LE, sym, index)
            .map_err(|e| err(&format!("{which} object: symbol {}", index.0), e))?
            .map(|s| s.0);
        if let Some(s) = section.filter(|&s| s >= section_count) {
            return Err(DiffError(format!(
                "{which} object: symbol `{name}` refers to missing section {s}"
            )));
        }
        let kind = sym_kind(sym.st_type(), sym.st_bind(), &name);
        let shndx = sym.st_shndx(LE);
        symbols.push(Symbol {
            name,
            kind,
            global: matches!(
                sym.st_bind(),
                elf::STB_GLOBAL | elf::STB_WEAK | elf::STB_GNU_UNIQUE
            ),
            section,
            external: shndx == elf::SHN_UNDEF || shndx == elf::SHN_COMMON,
            value: sym.st_value(LE),
            size: sym.st_size(LE),
        });
    }
    Ok(symbols)
}

/// What the differ makes of a symbol's ELF type.
fn sym_kind(st_type: u8, st_bind: u8, name: &str) -> SymKind {
    match st_type {
        elf::STT_FUNC => SymKind::Func,
        elf::STT_GNU_IFUNC => SymKind::Ifunc,
        // Assembler-local names (clang's `.L.str`, `.L__const.f.t`) are
        // labels for a place in a section, like GCC's `.LC0`, even when the
        // compiler typed them as objects: compare them by contents.
        elf::STT_OBJECT | elf::STT_COMMON
            if st_bind == elf::STB_LOCAL && name.starts_with(".L") =>
        {
            SymKind::NoType
        }
        elf::STT_OBJECT | elf::STT_COMMON => SymKind::Object,
        elf::STT_TLS => SymKind::Tls,
        elf::STT_SECTION => SymKind::Section,
        elf::STT_FILE => SymKind::File,
        elf::STT_NOTYPE => SymKind::NoType,
        _ => SymKind::Other,
    }
}

/// Section symbols carry no name of their own; give them their section's
/// name so messages can mention them.
fn name_section_symbols(symbols: &mut [Symbol], sections: &[Section]) {
    for sym in symbols {
        if sym.kind == SymKind::Section && sym.name.is_empty() {
            if let Some(s) = sym.section {
                sym.name = sections[s].name.clone();
            }
        }
    }
}

/// Fills each section's `named` list.
fn index_named(symbols: &[Symbol], sections: &mut [Section]) {
    for (i, sym) in symbols.iter().enumerate() {
        if let (Some(s), true) = (sym.section, sym.is_named()) {
            sections[s].named.push(i);
        }
    }
}

/// The RELA relocations of every relocation section, as (index of the
/// section they apply to, relocations in file order); every symbol index
/// and every relocated field checked.
fn read_relocations(
    table: &SectionTable,
    symtab: &SymbolTable,
    data: &[u8],
    symbols: &[Symbol],
    sections: &[Section],
    which: &str,
) -> Result<Vec<(usize, Vec<Reloc>)>, DiffError> {
    let mut out = Vec::new();
    for (index, sh) in table.enumerate() {
        if sh.sh_type(LE) == elf::SHT_REL {
            return Err(DiffError(format!(
                "{which} object: section {} uses REL relocations; x86-64 objects use RELA",
                index.0
            )));
        }
        let Some((relas, link)) = sh.rela(LE, data).map_err(|e| {
            err(
                &format!("{which} object: relocation section {}", index.0),
                e,
            )
        })?
        else {
            continue;
        };
        if link != symtab.section() {
            // Relocations against another symbol table (dynamic objects):
            // nothing a relocatable object should have.
            return Err(DiffError(format!(
                "{which} object: relocation section {} does not use the symbol table",
                index.0
            )));
        }
        let target = sh.sh_info(LE) as usize;
        if target == 0 || target >= sections.len() {
            return Err(DiffError(format!(
                "{which} object: relocation section {} applies to missing section {target}",
                index.0
            )));
        }
        let relocs = relas
            .iter()
            .map(|rela| checked_reloc(rela, symbols, &sections[target], which))
            .collect::<Result<_, _>>()?;
        out.push((target, relocs));
    }
    Ok(out)
}

/// One relocation of `section`, its symbol index and field checked.
fn checked_reloc(
    rela: &elf::Rela64<LE>,
    symbols: &[Symbol],
    section: &Section,
    which: &str,
) -> Result<Reloc, DiffError> {
    let r = Reloc {
        offset: rela.r_offset(LE),
        r_type: rela.r_type(LE, false),
        sym: rela.r_sym(LE, false) as usize,
        addend: rela.r_addend(LE),
    };
    if r.sym >= symbols.len() {
        return Err(DiffError(format!(
            "{which} object: relocation in {} names missing symbol {}",
            section.name, r.sym
        )));
    }
    let end = r.offset.checked_add(reloc_width(r.r_type));
    if end.is_none_or(|end| end > section.size) {
        return Err(DiffError(format!(
            "{which} object: relocation at {:#x} lies outside section {}",
            r.offset, section.name
        )));
    }
    Ok(r)
}

impl<'a> Object<'a> {
    /// The only named symbol of `section` if it sits at offset 0: with
    /// -ffunction-sections / -fdata-sections a section symbol then simply
    /// stands for that symbol. An IFUNC sharing its resolver's section does
    /// not count: the bytes there are the resolver's code.
    pub fn single_named_at_zero(&self, section: usize) -> Option<usize> {
        let mut named = self.sections[section]
            .named
            .iter()
            .copied()
            .filter(|&s| self.symbols[s].kind != SymKind::Ifunc);
        match (named.next(), named.next()) {
            (Some(only), None) if self.symbols[only].value == 0 => Some(only),
            _ => None,
        }
    }

    /// The named symbol a relocation target stands for: the symbol itself if
    /// named, or for a section symbol the section's single named symbol.
    /// Labels (`.LC0`) never stand for a named symbol.
    pub fn named_target(&self, sym: usize) -> Option<usize> {
        let s = &self.symbols[sym];
        if s.is_named() {
            return Some(sym);
        }
        if s.kind == SymKind::Section {
            return s.section.and_then(|sec| self.single_named_at_zero(sec));
        }
        None
    }

    /// Relocations of `section` that fall within `[start, end)`.
    pub fn relocs_in(&self, section: usize, start: u64, end: u64) -> impl Iterator<Item = &Reloc> {
        self.sections[section]
            .relocs
            .iter()
            .filter(move |r| r.offset >= start && r.offset < end)
    }
}
