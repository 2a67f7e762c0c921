//! Which source lines each function's code comes from, read from an object's
//! DWARF line table (`-g`). The builder uses it as ground truth for "which
//! function does this diff hunk edit" where the C parse is unsure (macros
//! tree-sitter cannot see through, computed `goto *`).
//!
//! Every line-table row is attributed to the innermost DIE whose code covers
//! its address: a concrete `DW_TAG_subprogram`, or a
//! `DW_TAG_inlined_subroutine` inside one. A row of inlined code thus belongs
//! to the inlined function (say a `static inline` helper), not to its
//! caller; the caller gets the call site line (`DW_AT_call_line`) instead.
//! All instances of one source function are merged under its source name
//! (`DW_AT_name`, through `DW_AT_abstract_origin`): the out-of-line copy,
//! compiler clones (`f.part.0`, `f.constprop.0`, `f.cold` are code of `f`)
//! and inlined copies. Each function also gets its head line
//! (`DW_AT_decl_line`), so its span in a file runs from the head to the last
//! line that has code.
//!
//! At -O2 the line table is noisy: instructions of the caller scheduled into
//! an inlined range keep the caller's lines. C functions do not nest, so in
//! the file of its head a function's lines are cut to [its head, the next
//! function definition's head): a stray line of another function is always
//! outside.
//!
//! Only the first compilation unit's file table is kept (a `.o` has one).

use crate::dwarf::{self, Debug};
use crate::elf::{self, SymKind};
use crate::DiffError;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

/// The source lines of one function.
#[derive(Debug, Clone, Default)]
pub struct FunctionLines {
    /// Source name: `luaV_concat` also for the code of `luaV_concat.part.0`.
    pub name: String,
    /// Function symbols whose code this is (e.g. `luaV_concat`,
    /// `luaV_concat.part.0`); empty for a function that is only inlined.
    pub symbols: Vec<String>,
    /// Full file path (as in the line table) → lines with code attributed
    /// to this function, plus its head line; in the head's file only the
    /// lines from the head to before the next function's head.
    pub lines: BTreeMap<String, BTreeSet<u64>>,
    /// File and line of the function's head (`DW_AT_decl_*`).
    pub head: Option<(String, u64)>,
}

impl FunctionLines {
    /// First to last line of this function in `file`.
    pub fn span(&self, file: &str) -> Option<RangeInclusive<u64>> {
        let l = self.lines.get(file)?;
        Some(*l.first()?..=*l.last()?)
    }
}

/// Per function, the lines its code comes from.
#[derive(Debug, Clone, Default)]
pub struct LineMap {
    /// In order of first appearance in the DWARF.
    pub functions: Vec<FunctionLines>,
}

impl LineMap {
    /// Reads the map of an ELF x86-64 relocatable object; `Ok(None)` when it
    /// carries no (readable) DWARF.
    pub fn read(object: &[u8]) -> Result<Option<LineMap>, DiffError> {
        let obj = elf::parse(object, "object")?;
        let Some(dbg) = dwarf::load(&obj) else {
            return Ok(None);
        };
        Ok(Some(build(&dbg, &obj)))
    }

    /// Every file some function has lines in.
    pub fn files(&self) -> BTreeSet<&str> {
        self.functions
            .iter()
            .flat_map(|f| f.lines.keys().map(String::as_str))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&FunctionLines> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Functions whose span in `file` contains one of `lines`.
    pub fn functions_at(&self, file: &str, lines: &[u64]) -> Vec<&str> {
        self.functions
            .iter()
            .filter(|f| {
                f.span(file)
                    .is_some_and(|s| lines.iter().any(|l| s.contains(l)))
            })
            .map(|f| f.name.as_str())
            .collect()
    }
}

fn is_code(tag: gimli::DwTag) -> bool {
    tag == gimli::DW_TAG_subprogram || tag == gimli::DW_TAG_inlined_subroutine
}

fn build(dbg: &Debug, obj: &elf::Object) -> LineMap {
    let mut rows = dbg.rows.clone();
    rows.sort_by_key(|r| r.addr);
    // DIE indices are in depth-first preorder, so a DIE is visited after
    // the DIEs containing it and the innermost one wins.
    let mut owner: Vec<Option<usize>> = vec![None; rows.len()];
    let mut parent: Vec<Option<usize>> = vec![None; dbg.dies.len()];
    for (i, d) in dbg.dies.iter().enumerate() {
        for &c in &d.children {
            parent[c] = Some(i);
        }
        if !is_code(d.tag) {
            continue;
        }
        for &(b, e) in &d.ranges {
            let start = rows.partition_point(|r| r.addr < b);
            for (r, o) in rows[start..].iter().zip(&mut owner[start..]) {
                if r.addr >= e {
                    break;
                }
                *o = Some(i);
            }
        }
    }

    let mut map = LineMap::default();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut entry = |map: &mut LineMap, name: &str| -> usize {
        *index.entry(name.to_string()).or_insert_with(|| {
            map.functions.push(FunctionLines {
                name: name.to_string(),
                ..Default::default()
            });
            map.functions.len() - 1
        })
    };
    let add = |map: &mut LineMap, fi: usize, file: u64, line: u64| {
        if line > 0 {
            let path = dbg.paths.get(file as usize).cloned().unwrap_or_default();
            map.functions[fi]
                .lines
                .entry(path)
                .or_default()
                .insert(line);
        }
    };

    // Scheduling mixes the caller's instructions into an inlined range: a
    // row there at the call site, or above the inlined function's head,
    // is the caller's.
    let enclosing = |mut i: usize| -> Option<usize> {
        while let Some(p) = parent[i] {
            if is_code(dbg.dies[p].tag) && !dbg.dies[p].ranges.is_empty() {
                return Some(p);
            }
            i = p;
        }
        None
    };
    for (i, d) in dbg.dies.iter().enumerate() {
        if !is_code(d.tag) || d.ranges.is_empty() {
            continue;
        }
        let Some(name) = dbg.name(i) else { continue };
        let fi = entry(&mut map, name);
        if let Some((file, line)) = head(dbg, i) {
            add(&mut map, fi, file, line);
            let path = dbg.paths.get(file as usize).cloned().unwrap_or_default();
            map.functions[fi].head.get_or_insert((path, line));
        }
        // The call site belongs to the enclosing function.
        if let (Some(file), Some(line)) = (d.call_file, d.call_line) {
            if let Some(pname) = enclosing(i).and_then(|p| dbg.name(p)) {
                let pf = entry(&mut map, pname);
                add(&mut map, pf, file, line);
            }
        }
        if d.tag == gimli::DW_TAG_subprogram {
            for &(b, _) in &d.ranges {
                let (sec, off) = ((b >> 32) as usize, b & 0xffff_ffff);
                for s in &obj.symbols {
                    if s.kind == SymKind::Func
                        && s.section == Some(sec)
                        && s.value == off
                        && !map.functions[fi].symbols.contains(&s.name)
                    {
                        map.functions[fi].symbols.push(s.name.clone());
                    }
                }
            }
        }
    }
    for (r, o) in rows.iter().zip(&owner) {
        let mut o = *o;
        while let Some(i) = o {
            let d = &dbg.dies[i];
            let at_call = d.call_file == Some(r.file) && d.call_line == Some(r.line);
            let above_head = head(dbg, i).is_some_and(|(f, l)| f == r.file && r.line < l);
            if d.tag != gimli::DW_TAG_inlined_subroutine || !(at_call || above_head) {
                break;
            }
            o = enclosing(i);
        }
        if let Some(name) = o.and_then(|i| dbg.name(i)) {
            let fi = entry(&mut map, name);
            add(&mut map, fi, r.file, r.line);
        }
    }
    // Bounds: the heads of all definitions, per file.
    let mut heads: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (i, d) in dbg.dies.iter().enumerate() {
        if d.tag == gimli::DW_TAG_subprogram && !d.declaration {
            if let Some((file, line)) = head(dbg, i) {
                let path = dbg.paths.get(file as usize).cloned().unwrap_or_default();
                heads.entry(path).or_default().insert(line);
            }
        }
    }
    for f in &mut map.functions {
        let Some((file, h)) = f.head.clone() else {
            continue;
        };
        let next = heads
            .get(&file)
            .and_then(|s| s.range(h + 1..).next().copied());
        if let Some(lines) = f.lines.get_mut(&file) {
            lines.retain(|&l| l >= h && next.is_none_or(|n| l < n));
        }
    }
    map
}

/// `DW_AT_decl_file`/`DW_AT_decl_line` of the definition, following
/// `DW_AT_abstract_origin` (a declaration DIE's line would be a prototype's).
fn head(dbg: &Debug, mut i: usize) -> Option<(u64, u64)> {
    for _ in 0..8 {
        let d = &dbg.dies[i];
        if let (Some(f), Some(l), false) = (d.decl_file, d.decl_line, d.declaration) {
            return Some((f, l));
        }
        match d.origin {
            Some(o) if o != i => i = o,
            _ => return None,
        }
    }
    None
}
