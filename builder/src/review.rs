//! The reviewable C source of the patch, via the `extern-gen` crate (which
//! functions the diff edits is `edits.rs`).

use differ::{Change, Route, UnitDiff};
use extern_gen::{OutsideSymbol, PatchSource, SymbolKind, UnitSource};
use std::path::Path;

/// What the review source needs of one unit.
pub struct ReviewUnit<'a> {
    pub rel: &'a str,
    pub diff: &'a UnitDiff,
}

/// The reviewable C source: shipped functions verbatim plus an `extern`
/// declaration for every outside symbol they use.
pub fn source(patch_id: &str, patched_root: &Path, units: &[ReviewUnit]) -> String {
    let units = units
        .iter()
        .map(|u| {
            let text = std::fs::read_to_string(patched_root.join(u.rel)).unwrap_or_default();
            UnitSource {
                path: u.rel.to_string(),
                text,
                functions: shipped_functions(u.diff),
                outside: outside_symbols(u.diff),
            }
        })
        .collect();
    extern_gen::generate(&PatchSource {
        patch_id: patch_id.to_string(),
        units,
    })
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
