//! The reviewable C source of the patch, via the `extern-gen` crate (which
//! functions the diff edits is `edits.rs`).

use differ::{Change, Route, UnitDiff};
use extern_gen::{OutsideSymbol, PatchSource, SymbolKind, UnitSource};
use object::{Object, ObjectSymbol, SectionIndex, SymbolKind as ElfKind};
use std::collections::HashSet;
use std::path::Path;

/// What the review source needs of one unit.
pub struct ReviewUnit<'a> {
    pub rel: &'a str,
    pub diff: &'a UnitDiff,
    /// Variables the patch defines ([`new_variables`]).
    pub new_data: &'a [String],
}

/// The reviewable C source: shipped functions verbatim plus an `extern`
/// declaration for every outside symbol they use.
pub fn source(patch_id: &str, patched_root: &Path, units: &[ReviewUnit]) -> String {
    // The patched files as parsed for the edited-function search.
    let sources: Vec<_> = units
        .iter()
        .map(|u| crate::parsed::load(&patched_root.join(u.rel)))
        .collect();
    let parsed: Vec<_> = sources
        .iter()
        .map(|s| s.as_ref().and_then(|s| s.file.as_ref()))
        .collect();
    let units = units
        .iter()
        .zip(&sources)
        .map(|(u, src)| {
            let text = src.as_ref().map(|s| s.text.clone()).unwrap_or_default();
            UnitSource {
                path: u.rel.to_string(),
                text,
                functions: shipped_functions(u.diff),
                outside: outside_symbols(u.diff),
                new_data: u.new_data.to_vec(),
                changes: changes(u.diff),
            }
        })
        .collect();
    let patch = PatchSource {
        patch_id: patch_id.to_string(),
        units,
    };
    extern_gen::generate_parsed(&patch, &parsed)
}

fn shipped_functions(diff: &UnitDiff) -> Vec<String> {
    diff.functions
        .iter()
        .filter(|f| matches!(f.change, Change::Changed | Change::New))
        .map(|f| f.name.clone())
        .collect()
}

fn outside_symbols(diff: &UnitDiff) -> Vec<OutsideSymbol> {
    let mut out: Vec<OutsideSymbol> = Vec::new();
    for route in diff.routes.values() {
        let (name, local) = match route {
            Route::BaseGlobal(n) => (n, false),
            Route::BaseLocal(n) => (n, true),
            Route::Shipped => continue,
        };
        if !out.iter().any(|o| &o.name == name) {
            out.push(OutsideSymbol {
                name: name.clone(),
                local,
                kind: SymbolKind::Unknown,
            });
        }
    }
    out
}

/// What the object comparison saw in each shipped function ("string literal
/// changed: …", "uses new symbol …"): a change folded into code, a macro or
/// a constant shows in no line of the function's own text.
fn changes(diff: &UnitDiff) -> Vec<String> {
    diff.functions
        .iter()
        .filter(|f| matches!(f.change, Change::Changed | Change::New))
        .map(|f| format!("{}: {}", f.name, f.reasons.join("; ")))
        .collect()
}

/// The named variables the patch ships that the original object does not
/// have: data the diff adds (a changed read-only constant ships as a fresh
/// copy too, but the original has it). Static locals keep their symbol name
/// (`count.1`).
pub fn new_variables(diff: &UnitDiff, orig: &[u8], patched: &[u8]) -> Vec<String> {
    let (Ok(orig), Ok(patched)) = (object::File::parse(orig), object::File::parse(patched)) else {
        return Vec::new();
    };
    let base_name = |n: &str| differ::names::strip_numeric(n);
    let known: HashSet<String> = orig
        .symbols()
        .filter(|s| s.kind() == ElfKind::Data)
        .filter_map(|s| s.name().ok().map(base_name))
        .collect();
    let shipped: HashSet<SectionIndex> = diff
        .ship_sections
        .iter()
        .map(|&i| SectionIndex(i))
        .collect();
    patched
        .symbols()
        .filter(|s| s.kind() == ElfKind::Data && !s.name().unwrap_or("").is_empty())
        .filter(|s| s.section_index().is_some_and(|i| shipped.contains(&i)))
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| !n.starts_with('.') && !known.contains(&base_name(n)))
        .collect()
}
