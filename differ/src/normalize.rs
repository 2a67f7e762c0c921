//! Turns sections (or parts of them) into a form that compares equal
//! between the two objects exactly when the code or data means the same.
//!
//! Raw bytes are not enough: relocated fields are placeholders, and
//! relocation targets are named differently on the two sides (numbered
//! clones and statics, string literals that moved inside a merged string
//! section because another string was added). So each relocation target is
//! replaced by a [`Target`] that names *what* is referenced:
//!
//! - an undefined symbol by its name;
//! - a named symbol of the unit by its *original* name (the patched side goes
//!   through the correlation), marked `new` when it has no counterpart and
//!   `changed` when it is read-only data whose contents changed;
//! - a string literal by its contents, a merged constant by its bytes;
//! - any other anonymous section (jump tables, `.rodata` blobs) by the
//!   contents of the referenced datum, a bounded number of levels deep.
//!
//! A "datum" of an anonymous section runs from a referenced offset to the
//! next offset anything references (or the section end). At -O0 GCC puts all
//! string literals of a file into one plain `.rodata`; comparing that whole
//! section would mark every function using any string as changed when one
//! string is added, while comparing only the referenced datum does not.

use crate::elf::{is_pc_relative32, reloc_width, Object, Reloc, SymKind};
use crate::names::strip_numeric;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Undefined (or common) symbol, by name.
    External(String),
    /// A named symbol of this unit, by its original name.
    Named {
        name: String,
        new: bool,
        changed: bool,
    },
    /// A string in a mergeable string section, by contents (without NUL).
    Str(Vec<u8>),
    /// An entry of a mergeable constant section, by its bytes, and the
    /// offset of the reference inside the entry.
    Const { entry: Vec<u8>, within: u64 },
    /// A datum of an anonymous section, by contents.
    Anon(Box<Canon>),
    /// An anonymous section referenced below [`MAX_DEPTH`]: by stripped
    /// section name only, so comparison stays finite.
    AnonRef(String),
    /// Fallback when nothing better applies: the raw symbol name.
    Raw(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::External(n) => f.write_str(n),
            Target::Named { name, .. } => f.write_str(name),
            Target::Str(s) => write!(f, "{}", quote(s)),
            Target::Const { entry, .. } => {
                write!(f, "constant 0x")?;
                for b in entry.iter().rev() {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
            Target::Anon(c) => write!(f, "anonymous data ({} bytes)", c.size),
            Target::AnonRef(n) | Target::Raw(n) => f.write_str(n),
        }
    }
}

fn trim_zeros(bytes: &mut Vec<u8>) {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
}

/// A string literal as a user would write it.
pub fn quote(s: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(s))
}

/// One relocation, normalized. `addend` is `None` where the target's
/// contents already pin down what is referenced (strings, constants).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NReloc {
    pub offset: u64,
    pub r_type: u32,
    pub target: Target,
    pub addend: Option<i64>,
}

/// Normalized contents of a byte range: its size, its bytes with every
/// relocated field zeroed and trailing zeros dropped, and its normalized relocations (offsets relative
/// to the range start).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Canon {
    pub size: u64,
    pub bytes: Vec<u8>,
    pub relocs: Vec<NReloc>,
}

/// How many anonymous-section hops are compared by contents.
pub const MAX_DEPTH: u8 = 2;

/// One object plus what is needed to name its symbols in original terms.
pub struct Side<'o, 'a> {
    pub obj: &'o Object<'a>,
    /// For named symbols: (original name, is new).
    pub ident: BTreeMap<usize, (String, bool)>,
    /// Read-only data symbols whose contents differ from the original.
    pub changed_ro: BTreeSet<usize>,
    /// For anonymous sections: every offset something references (plus 0
    /// and the section size); consecutive offsets delimit the data.
    pub bounds: BTreeMap<usize, BTreeSet<u64>>,
}

/// The offset inside the target section that a relocation designates.
fn content_offset(obj: &Object, r: &Reloc) -> i64 {
    let offset = (obj.symbols[r.sym].value as i64).wrapping_add(r.addend);
    // A pc-relative field at the end of its instruction has an addend of
    // (target - 4); the referenced datum is 4 bytes further.
    if is_pc_relative32(r.r_type) {
        offset.wrapping_add(4)
    } else {
        offset
    }
}

fn bounds(obj: &Object) -> BTreeMap<usize, BTreeSet<u64>> {
    let mut out: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for (i, sec) in obj.sections.iter().enumerate() {
        if sec.named.is_empty()
            && sec.is_alloc()
            && !sec.is_merge_strings()
            && !sec.is_merge_const()
        {
            out.insert(i, [0, sec.size].into_iter().collect());
        }
    }
    for sym in &obj.symbols {
        if let (SymKind::NoType, Some(s)) = (sym.kind, sym.section) {
            if let Some(b) = out.get_mut(&s) {
                b.insert(sym.value);
            }
        }
    }
    for sec in obj.sections.iter().filter(|s| !s.never_ship()) {
        for r in &sec.relocs {
            let Some(t) = obj.symbols[r.sym].section else {
                continue;
            };
            if let Some(b) = out.get_mut(&t) {
                let off = content_offset(obj, r);
                if off >= 0 && (off as u64) < obj.sections[t].size {
                    b.insert(off as u64);
                }
            }
        }
    }
    out
}

impl<'o, 'a> Side<'o, 'a> {
    /// Original side: every named symbol is itself.
    pub fn original(obj: &'o Object<'a>) -> Self {
        let ident = (0..obj.symbols.len())
            .filter(|&i| obj.symbols[i].is_named())
            .map(|i| (i, (obj.symbols[i].name.clone(), false)))
            .collect();
        Side {
            obj,
            ident,
            changed_ro: BTreeSet::new(),
            bounds: bounds(obj),
        }
    }

    /// Patched side: named symbols take their original partner's name.
    pub fn patched(obj: &'o Object<'a>, original: &Object, p2o: &BTreeMap<usize, usize>) -> Self {
        let ident = (0..obj.symbols.len())
            .filter(|&i| obj.symbols[i].is_named())
            .map(|i| match p2o.get(&i) {
                Some(&o) => (i, (original.symbols[o].name.clone(), false)),
                None => (i, (obj.symbols[i].name.clone(), true)),
            })
            .collect();
        Side {
            obj,
            ident,
            changed_ro: BTreeSet::new(),
            bounds: bounds(obj),
        }
    }

    /// Normalizes the target of `r`, met at anonymous-section nesting
    /// `depth` (0 for a function's or variable's own relocations).
    pub fn target(&self, r: &Reloc, depth: u8) -> (Target, Option<i64>) {
        let obj = self.obj;
        let sym = &obj.symbols[r.sym];
        if sym.external {
            return (Target::External(sym.name.clone()), Some(r.addend));
        }
        if let Some(named) = obj.named_target(r.sym) {
            let (name, new) = self
                .ident
                .get(&named)
                .cloned()
                .unwrap_or_else(|| (obj.symbols[named].name.clone(), true));
            let changed = self.changed_ro.contains(&named);
            // Through a section symbol the addend is relative to the section
            // start, which is where the named symbol sits: same meaning.
            return (
                Target::Named { name, new, changed },
                Some(r.addend.wrapping_add(sym.value as i64)),
            );
        }
        let raw = || (Target::Raw(sym.name.clone()), Some(r.addend));
        let Some(sec_index) = sym.section else {
            return raw();
        };
        if !matches!(sym.kind, SymKind::Section | SymKind::NoType) {
            return raw();
        }
        let sec = &obj.sections[sec_index];
        let offset = (sym.value as i64).wrapping_add(r.addend);
        let content_offset = content_offset(obj, r);
        let in_range = content_offset >= 0 && (content_offset as u64) < sec.size;
        if sec.is_merge_strings() {
            if !in_range || sec.is_nobits() {
                return raw();
            }
            let unit = sec.entsize.max(1) as usize;
            let start = content_offset as usize;
            let data = &sec.data[start.min(sec.data.len())..];
            let mut end = 0;
            while end + unit <= data.len() && data[end..end + unit].iter().any(|&b| b != 0) {
                end += unit;
            }
            return (Target::Str(data[..end].to_vec()), None);
        }
        if sec.is_merge_const() && sec.entsize > 0 {
            if !in_range {
                return raw();
            }
            let off = content_offset as u64;
            let within = off % sec.entsize;
            let start = off - within;
            let mut entry = sec.bytes(start, start.saturating_add(sec.entsize).min(sec.size));
            trim_zeros(&mut entry);
            return (Target::Const { entry, within }, None);
        }
        let datum = self
            .bounds
            .get(&sec_index)
            .filter(|_| in_range && depth < MAX_DEPTH);
        match datum {
            Some(b) => {
                let at = content_offset as u64;
                let start = b.range(..=at).next_back().copied().unwrap_or(0);
                let end = b.range(at + 1..).next().copied().unwrap_or(sec.size);
                let canon = self.canon(sec_index, start, end, depth + 1);
                (Target::Anon(Box::new(canon)), Some((at - start) as i64))
            }
            None => (Target::AnonRef(strip_numeric(&sec.name)), Some(offset)),
        }
    }

    /// Normalized contents of `[start, end)` of a section.
    pub fn canon(&self, section: usize, start: u64, end: u64, depth: u8) -> Canon {
        let sec = &self.obj.sections[section];
        let end = end.max(start);
        let mut bytes = sec.bytes(start, end);
        // Zeroing relocated fields and then dropping trailing zeros makes a
        // zero-initialised PROGBITS range equal to a NOBITS one of the same
        // size (`int x = 0;` may land in either).
        let mut relocs = Vec::new();
        for r in self.obj.relocs_in(section, start, end) {
            let rel = r.offset - start;
            let width = reloc_width(r.r_type);
            for i in rel..(rel + width).min(bytes.len() as u64) {
                bytes[i as usize] = 0;
            }
            let (target, addend) = self.target(r, depth);
            relocs.push(NReloc {
                offset: rel,
                r_type: r.r_type,
                target,
                addend,
            });
        }
        trim_zeros(&mut bytes);
        Canon {
            size: end - start,
            bytes,
            relocs,
        }
    }

    /// Normalized contents of a data symbol: its `[value, value + size)`.
    pub fn canon_symbol(&self, sym: usize) -> Canon {
        let s = &self.obj.symbols[sym];
        let section = s.section.unwrap_or(0);
        self.canon(section, s.value, s.value.saturating_add(s.size), 0)
    }
}
