//! What the differ needs from an object's DWARF (`-g`), as a flat model:
//! every DIE with the few attributes the rules use, and the line table.
//!
//! A relocatable object's debug sections are not usable as they are: string
//! offsets (`DW_FORM_strp`), `DW_AT_stmt_list`, addresses (`DW_AT_low_pc`,
//! range lists, the line program's `DW_LNE_set_address`) are all relocation
//! placeholders. We apply the relocations ourselves into private copies.
//! Addresses become *section-encoded*: `section index << 32 | offset`, so an
//! address says which `-ffunction-sections` section it lies in (every
//! section starts at 0 in a `.o`, so plain offsets would be ambiguous).
//!
//! Without DWARF (no `-g`) [`load`] returns `None` and every rule that needs
//! it falls back to the conservative answer.

use crate::elf::{reloc_width, Object};
use gimli::{AttributeValue, EndianSlice, LittleEndian, UnitOffset};
use std::collections::HashMap;

pub use gimli::DwTag;

/// One DIE. References are indices into [`Debug::dies`].
#[derive(Debug, Clone)]
pub struct Die {
    pub tag: DwTag,
    pub name: Option<String>,
    /// The enclosing DIE (`None` for a unit's root).
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub type_: Option<usize>,
    /// `DW_AT_abstract_origin` or `DW_AT_specification`.
    pub origin: Option<usize>,
    /// Section-encoded address ranges (code of subprograms and inlined
    /// copies).
    pub ranges: Vec<(u64, u64)>,
    pub byte_size: Option<u64>,
    pub member_offset: Option<u64>,
    pub bit_size: Option<u64>,
    pub bit_offset: Option<u64>,
    /// Element count of a `DW_TAG_subrange_type`.
    pub count: Option<u64>,
    pub decl_line: Option<u64>,
    pub decl_file: Option<u64>,
    /// Call site of a `DW_TAG_inlined_subroutine` (file index, line).
    pub call_file: Option<u64>,
    pub call_line: Option<u64>,
    /// `DW_OP_addr` location of a variable with static storage.
    pub addr: Option<u64>,
    pub external: bool,
    pub declaration: bool,
}

impl Default for Die {
    fn default() -> Self {
        Die {
            tag: gimli::DW_TAG_null,
            name: None,
            parent: None,
            children: Vec::new(),
            type_: None,
            origin: None,
            ranges: Vec::new(),
            byte_size: None,
            member_offset: None,
            bit_size: None,
            bit_offset: None,
            count: None,
            decl_line: None,
            decl_file: None,
            call_file: None,
            call_line: None,
            addr: None,
            external: false,
            declaration: false,
        }
    }
}

/// One line-table row: section-encoded address, line, and file index (as in
/// [`Debug::files`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub addr: u64,
    pub line: u64,
    pub file: u64,
}

/// A line-table row as [`Debug::line_rows`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRow<'a> {
    pub line: u64,
    /// The file name as the compiler was given it.
    pub file: &'a str,
    /// The same file as a full path.
    pub path: &'a str,
    /// Whether the row covers at least one byte.
    pub covers: bool,
}

#[derive(Debug, Default)]
pub struct Debug {
    pub dies: Vec<Die>,
    pub rows: Vec<Row>,
    /// `DW_AT_name` of the first compilation unit.
    pub cu_name: Option<String>,
    /// File names of the line table, by `DW_AT_decl_file` index.
    pub files: Vec<String>,
    /// The same files as full paths (compilation directory, include
    /// directory and name joined, `.`/`..` resolved).
    pub paths: Vec<String>,
    /// `subprogram_at`'s index, built on first use.
    subprograms: std::sync::OnceLock<SubprogramIndex>,
}

/// Every range of every subprogram DIE, sorted by start, with the running
/// maximum of the ends: a lookup is a binary search plus a walk back over
/// the ranges that can still reach the address (almost always none).
#[derive(Debug, Default)]
struct SubprogramIndex {
    /// (begin, end, DIE index), by begin.
    ranges: Vec<(u64, u64, usize)>,
    /// `max_end[i]`: the largest end among `ranges[..=i]`.
    max_end: Vec<u64>,
}

impl SubprogramIndex {
    fn new(dies: &[Die]) -> Self {
        let mut ranges: Vec<(u64, u64, usize)> = dies
            .iter()
            .enumerate()
            .filter(|(_, d)| d.tag == gimli::DW_TAG_subprogram)
            .flat_map(|(i, d)| d.ranges.iter().map(move |&(b, e)| (b, e, i)))
            .collect();
        ranges.sort_unstable();
        let max_end = ranges
            .iter()
            .scan(0, |m, r| {
                *m = (*m).max(r.1);
                Some(*m)
            })
            .collect();
        SubprogramIndex { ranges, max_end }
    }

    /// The first DIE (in DIE order) with a range holding `addr`.
    fn at(&self, addr: u64) -> Option<usize> {
        let mut i = self.ranges.partition_point(|r| r.0 <= addr);
        let mut best = None;
        while i > 0 && self.max_end[i - 1] > addr {
            i -= 1;
            let (b, e, die) = self.ranges[i];
            if b <= addr && addr < e {
                best = Some(best.map_or(die, |x: usize| x.min(die)));
            }
        }
        best
    }
}

pub fn encode(section: usize, offset: u64) -> u64 {
    ((section as u64) << 32) | (offset & 0xffff_ffff)
}

/// A copy of debug section `name` with its relocations applied.
fn relocated(obj: &Object, name: &str) -> Vec<u8> {
    let Some(sec) = obj.sections.iter().find(|s| s.name == name) else {
        return Vec::new();
    };
    let mut data = sec.data.to_vec();
    for r in &sec.relocs {
        let s = &obj.symbols[r.sym];
        let base = match s.section {
            Some(t) if obj.sections[t].is_alloc() => encode(t, s.value),
            Some(_) => s.value,
            None => 0,
        };
        let value = base.wrapping_add(r.addend as u64);
        let (at, width) = (r.offset as usize, reloc_width(r.r_type) as usize);
        if width == 4 || width == 8 {
            if let Some(field) = data.get_mut(at..at + width) {
                field.copy_from_slice(&value.to_le_bytes()[..width]);
            }
        }
    }
    data
}

/// Reads the DWARF of `obj`; `None` when there is none or it cannot be read
/// (rules that need it then stay conservative).
pub fn load(obj: &Object) -> Option<Debug> {
    if !obj.sections.iter().any(|s| s.name == ".debug_info") {
        return None;
    }
    let sections: gimli::DwarfSections<Vec<u8>> =
        gimli::DwarfSections::load(|id| Ok::<_, ()>(relocated(obj, id.name()))).ok()?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s.as_slice(), LittleEndian));
    read(&dwarf).ok()
}

type R<'a> = EndianSlice<'a, LittleEndian>;

fn read(dwarf: &gimli::Dwarf<R<'_>>) -> gimli::Result<Debug> {
    let mut out = Debug::default();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        read_unit(dwarf, &unit, &mut out)?;
    }
    Ok(out)
}

fn read_unit(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    out: &mut Debug,
) -> gimli::Result<()> {
    let first = out.dies.len();
    let mut index: HashMap<UnitOffset, usize> = HashMap::new();
    // Unresolved unit-relative references: (die, attribute kind, target).
    let mut refs: Vec<(usize, bool, UnitOffset)> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut entries = unit.entries();
    let mut depth = 0isize;
    while let Some((delta, entry)) = entries.next_dfs()? {
        depth += delta;
        stack.truncate(depth.max(0) as usize);
        let i = out.dies.len();
        let mut die = Die {
            tag: entry.tag(),
            ..Die::default()
        };
        let mut attrs = entry.attrs();
        while let Some(a) = attrs.next()? {
            match (a.name(), a.value()) {
                (gimli::DW_AT_name, v) => {
                    die.name = dwarf
                        .attr_string(unit, v)
                        .ok()
                        .map(|s| String::from_utf8_lossy(s.slice()).into_owned());
                }
                (gimli::DW_AT_type, AttributeValue::UnitRef(o)) => refs.push((i, true, o)),
                (
                    gimli::DW_AT_abstract_origin | gimli::DW_AT_specification,
                    AttributeValue::UnitRef(o),
                ) => refs.push((i, false, o)),
                (gimli::DW_AT_byte_size, v) => die.byte_size = v.udata_value(),
                (gimli::DW_AT_data_member_location, v) => die.member_offset = v.udata_value(),
                (gimli::DW_AT_bit_size, v) => die.bit_size = v.udata_value(),
                (gimli::DW_AT_data_bit_offset | gimli::DW_AT_bit_offset, v) => {
                    die.bit_offset = v.udata_value()
                }
                (gimli::DW_AT_count, v) => die.count = v.udata_value(),
                (gimli::DW_AT_upper_bound, v) => die.count = v.udata_value().map(|u| u + 1),
                (gimli::DW_AT_decl_line, v) => die.decl_line = v.udata_value(),
                (gimli::DW_AT_decl_file, AttributeValue::FileIndex(f)) => die.decl_file = Some(f),
                (gimli::DW_AT_decl_file, v) => die.decl_file = v.udata_value(),
                (gimli::DW_AT_call_line, v) => die.call_line = v.udata_value(),
                (gimli::DW_AT_call_file, AttributeValue::FileIndex(f)) => die.call_file = Some(f),
                (gimli::DW_AT_call_file, v) => die.call_file = v.udata_value(),
                (gimli::DW_AT_external, AttributeValue::Flag(f)) => die.external = f,
                (gimli::DW_AT_declaration, AttributeValue::Flag(f)) => die.declaration = f,
                (gimli::DW_AT_location, v) => {
                    if let Some(expr) = v.exprloc_value() {
                        let mut ops = expr.operations(unit.encoding());
                        if let Ok(Some(gimli::Operation::Address { address })) = ops.next() {
                            die.addr = Some(address);
                        }
                    }
                }
                _ => {}
            }
        }
        if matches!(
            die.tag,
            gimli::DW_TAG_subprogram
                | gimli::DW_TAG_inlined_subroutine
                | gimli::DW_TAG_lexical_block
        ) {
            // gimli adds DW_AT_low_pc and a constant DW_AT_high_pc without
            // checking (a malformed object overflows it; found by fuzzing).
            if !pc_range_overflows(dwarf, unit, entry) {
                push_ranges(dwarf, unit, entry, &mut die);
            }
        }
        if die.tag == gimli::DW_TAG_compile_unit && out.cu_name.is_none() {
            out.cu_name = die.name.clone();
        }
        if let Some(&p) = stack.last() {
            out.dies[p].children.push(i);
            die.parent = Some(p);
        }
        index.insert(entry.offset(), i);
        out.dies.push(die);
        stack.push(i);
    }
    for (i, is_type, target) in refs {
        let t = index.get(&target).copied();
        if is_type {
            out.dies[i].type_ = t;
        } else {
            out.dies[i].origin = t;
        }
    }
    debug_assert!(out.dies.len() >= first);
    if let Some(program) = unit.line_program.clone() {
        let header = program.header().clone();
        out.files = (0..header.file_names().len() as u64 + 1)
            .map(|f| {
                header
                    .file(f)
                    .and_then(|e| dwarf.attr_string(unit, e.path_name()).ok())
                    .map(|s| String::from_utf8_lossy(s.slice()).into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let text = |v: AttributeValue<R<'_>>| {
            dwarf
                .attr_string(unit, v)
                .map(|s| String::from_utf8_lossy(s.slice()).into_owned())
                .unwrap_or_default()
        };
        let comp_dir = unit
            .comp_dir
            .map(|d| String::from_utf8_lossy(d.slice()).into_owned())
            .unwrap_or_default();
        out.paths = (0..header.file_names().len() as u64 + 1)
            .map(|f| {
                let Some(e) = header.file(f) else {
                    return String::new();
                };
                let mut p = std::path::PathBuf::from(&comp_dir);
                if let Some(d) = e.directory(&header) {
                    p.push(text(d)); // an absolute directory replaces comp_dir
                }
                p.push(text(e.path_name()));
                normalize_path(&p)
            })
            .collect();
        let mut rows = program.rows();
        while let Some((_, row)) = rows.next_row()? {
            if let (false, Some(line)) = (row.end_sequence(), row.line()) {
                out.rows.push(Row {
                    addr: row.address(),
                    line: line.get(),
                    file: row.file_index(),
                });
            }
        }
    }
    Ok(())
}

/// `a/./b/../c` → `a/c`, lexically (the files need not exist here).
fn normalize_path(p: &std::path::Path) -> String {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

/// Whether `entry`'s DW_AT_low_pc plus a constant DW_AT_high_pc (a size)
/// overflows 64 bits: read as gimli's `die_ranges` reads them.
fn pc_range_overflows(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, R<'_>>,
) -> bool {
    // Every attribute in order, the last of a name winning, as gimli does.
    let (mut low, mut size) = (None, None);
    let mut attrs = entry.attrs();
    while let Ok(Some(a)) = attrs.next() {
        match (a.name(), a.value()) {
            (gimli::DW_AT_low_pc, v) => low = dwarf.attr_address(unit, v).ok().flatten(),
            (gimli::DW_AT_high_pc, gimli::AttributeValue::Udata(n)) => size = Some(n),
            (gimli::DW_AT_high_pc, _) => size = None,
            _ => {}
        }
    }
    matches!((low, size), (Some(l), Some(n)) if l.checked_add(n).is_none())
}

/// The address ranges of `entry` (non-empty ones) into `die`.
fn push_ranges(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, R<'_>>,
    die: &mut Die,
) {
    if let Ok(mut it) = dwarf.die_ranges(unit, entry) {
        while let Ok(Some(r)) = it.next() {
            if r.end > r.begin {
                die.ranges.push((r.begin, r.end));
            }
        }
    }
}

impl Debug {
    /// Follows `DW_AT_abstract_origin`/`DW_AT_specification` to the DIE that
    /// carries the declaration (name, type, parameters).
    pub fn origin(&self, mut i: usize) -> usize {
        for _ in 0..8 {
            match self.dies[i].origin {
                Some(o) if o != i => i = o,
                _ => break,
            }
        }
        i
    }

    pub fn name(&self, i: usize) -> Option<&str> {
        self.dies[i]
            .name
            .as_deref()
            .or_else(|| self.dies[self.origin(i)].name.as_deref())
    }

    /// The concrete subprogram whose code contains section-encoded `addr`.
    pub fn subprogram_at(&self, addr: u64) -> Option<usize> {
        self.subprograms
            .get_or_init(|| SubprogramIndex::new(&self.dies))
            .at(addr)
    }

    /// The static storage of function-scope variables (static locals, GCC's
    /// `__func__`/`__PRETTY_FUNCTION__`), by section-encoded address: (the
    /// function whose body declares it, the variable's name). A variable of
    /// an inlined function belongs to that function, not to the one it was
    /// inlined into. Addresses claimed for two different owners (a
    /// function-scope `extern`, say) are left out.
    pub fn static_locals(&self) -> HashMap<u64, (String, String)> {
        let mut out: HashMap<u64, Option<(String, String)>> = HashMap::new();
        for (i, d) in self.dies.iter().enumerate() {
            let (gimli::DW_TAG_variable, Some(addr)) = (d.tag, d.addr) else {
                continue;
            };
            let Some(owner) = self.enclosing_function(i) else {
                continue;
            };
            let (Some(f), Some(v)) = (self.name(owner), self.name(i)) else {
                continue;
            };
            let key = Some((f.to_string(), v.to_string()));
            let entry = out.entry(addr).or_insert_with(|| key.clone());
            if *entry != key {
                *entry = None;
            }
        }
        out.into_iter()
            .filter_map(|(a, k)| k.map(|k| (a, k)))
            .collect()
    }

    /// The nearest subprogram or inlined copy of one around DIE `i`.
    fn enclosing_function(&self, i: usize) -> Option<usize> {
        let mut at = self.dies[i].parent;
        while let Some(p) = at {
            match self.dies[p].tag {
                gimli::DW_TAG_subprogram | gimli::DW_TAG_inlined_subroutine => return Some(p),
                gimli::DW_TAG_compile_unit | gimli::DW_TAG_partial_unit => return None,
                _ => at = self.dies[p].parent,
            }
        }
        None
    }

    /// All descendants of `i` (depth first, without `i`).
    pub fn descendants(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut work: Vec<usize> = self.dies[i].children.iter().rev().copied().collect();
        while let Some(d) = work.pop() {
            out.push(d);
            work.extend(self.dies[d].children.iter().rev().copied());
        }
        out
    }

    /// (line, file name) of the rows in `[lo, hi)`, in address order.
    pub fn lines_in(&self, lo: u64, hi: u64) -> Vec<(u64, &str)> {
        self.line_rows(lo, hi)
            .into_iter()
            .map(|r| (r.line, r.file))
            .collect()
    }

    /// The line rows in `[lo, hi)` in address order (the compiler's order
    /// among rows of one address), each with its file's full path and
    /// whether it covers a byte: a row whose address the next row repeats
    /// stands for a statement that generated nothing there.
    pub fn line_rows(&self, lo: u64, hi: u64) -> Vec<LineRow<'_>> {
        let mut rows: Vec<Row> = self
            .rows
            .iter()
            .copied()
            .filter(|r| lo <= r.addr && r.addr < hi)
            .collect();
        rows.sort_by_key(|r| r.addr);
        fn name(v: &[String], f: u64) -> &str {
            v.get(f as usize).map_or("", |s| s.as_str())
        }
        (0..rows.len())
            .map(|i| LineRow {
                line: rows[i].line,
                file: name(&self.files, rows[i].file),
                path: name(&self.paths, rows[i].file),
                covers: rows.get(i + 1).is_none_or(|n| n.addr != rows[i].addr),
            })
            .collect()
    }

    /// A type as C would spell it (approximately), for comparisons and
    /// messages. Structs by tag name only: their layout is compared apart.
    pub fn type_name(&self, t: Option<usize>) -> String {
        self.type_name_depth(t, 0)
    }

    fn type_name_depth(&self, t: Option<usize>, depth: u8) -> String {
        let Some(t) = t else { return "void".into() };
        if depth > 12 {
            return "…".into();
        }
        let d = &self.dies[t];
        let inner = || self.type_name_depth(d.type_, depth + 1);
        let named = |kw: &str| format!("{kw} {}", d.name.as_deref().unwrap_or("<anonymous>"));
        match d.tag {
            gimli::DW_TAG_pointer_type => format!("{} *", inner()),
            gimli::DW_TAG_const_type => format!("const {}", inner()),
            gimli::DW_TAG_volatile_type => format!("volatile {}", inner()),
            gimli::DW_TAG_restrict_type => format!("{} restrict", inner()),
            gimli::DW_TAG_atomic_type => format!("_Atomic {}", inner()),
            gimli::DW_TAG_structure_type => named("struct"),
            gimli::DW_TAG_union_type => named("union"),
            gimli::DW_TAG_enumeration_type => named("enum"),
            gimli::DW_TAG_array_type => {
                let dims: String = d
                    .children
                    .iter()
                    .map(|&c| match self.dies[c].count {
                        Some(n) => format!("[{n}]"),
                        None => "[]".into(),
                    })
                    .collect();
                format!("{}{dims}", inner())
            }
            gimli::DW_TAG_subroutine_type => {
                let params: Vec<String> = d
                    .children
                    .iter()
                    .filter(|&&c| self.dies[c].tag == gimli::DW_TAG_formal_parameter)
                    .map(|&c| self.type_name_depth(self.dies[c].type_, depth + 1))
                    .collect();
                format!("{} (*)({})", inner(), params.join(", "))
            }
            // Base types and typedefs by name.
            _ => d.name.clone().unwrap_or_else(|| format!("<{}>", d.tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index answers as a scan of the DIEs in order would, also for
    /// nested and overlapping ranges and addresses between ranges.
    #[test]
    fn subprogram_index_answers_like_a_scan() {
        let die = |tag, ranges: &[(u64, u64)]| Die {
            tag,
            ranges: ranges.to_vec(),
            ..Die::default()
        };
        let dies = vec![
            die(gimli::DW_TAG_compile_unit, &[(0, 1000)]),
            die(gimli::DW_TAG_subprogram, &[(100, 200), (500, 600)]),
            die(gimli::DW_TAG_subprogram, &[(0, 900)]),
            die(gimli::DW_TAG_inlined_subroutine, &[(150, 160)]),
            die(gimli::DW_TAG_subprogram, &[(150, 170)]),
            die(gimli::DW_TAG_subprogram, &[(950, 960)]),
        ];
        let scan = |addr: u64| {
            dies.iter().position(|d| {
                d.tag == gimli::DW_TAG_subprogram
                    && d.ranges.iter().any(|&(b, e)| b <= addr && addr < e)
            })
        };
        let index = SubprogramIndex::new(&dies);
        for addr in 0..1100 {
            assert_eq!(index.at(addr), scan(addr), "address {addr}");
        }
    }
}
