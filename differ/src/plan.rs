//! Decides what the patch ships and where every reference of shipped code
//! goes, and builds the replacement records.
//!
//! Shipping is a closure: start from changed and new functions and new data,
//! then follow relocations. What the running program already has (unchanged
//! functions, existing variables, unchanged read-only data) is referenced by
//! name; everything the program does not have in the right form (string
//! literals, constants, jump tables, `.cold` parts, new functions and data,
//! changed read-only tables) is shipped along.

use crate::compare::{ambiguous_static_local, Analysis};
use crate::correlate::Correlation;
use crate::elf::{Object, SymKind};
use crate::names::is_cold;
use crate::{Change, Refusal, Replacement, Route};
use std::collections::{BTreeMap, BTreeSet};

pub struct Plan {
    pub ship: BTreeSet<usize>,
    pub routes: BTreeMap<usize, Route>,
    pub refusals: Vec<Refusal>,
    /// Extra reasons for the function owning a shipped section, keyed by
    /// that section.
    pub notes: BTreeMap<usize, Vec<String>>,
}

/// What a relocation target of shipped code becomes.
enum Decision {
    Route(Route),
    Ship(usize),
    Refuse(String),
}

/// Route to the running program's copy of original symbol `o`.
fn base_route(original: &Object, o: usize) -> Route {
    let s = &original.symbols[o];
    if s.global {
        Route::BaseGlobal(s.name.clone())
    } else {
        Route::BaseLocal(s.name.clone())
    }
}

fn decide(a: &Analysis, corr: &Correlation, sym: usize, file: &str) -> Decision {
    let patched = a.pat.obj;
    let original = a.orig.obj;
    let s = &patched.symbols[sym];
    if s.external {
        return Decision::Route(Route::BaseGlobal(s.name.clone()));
    }
    let Some(sec) = s.section else {
        return Decision::Refuse(format!(
            "shipped code references `{}` ({file}), an absolute symbol the patch cannot relocate",
            s.name
        ));
    };
    if let Some(n) = patched.named_target(sym) {
        let ns = &patched.symbols[n];
        let partner = corr.p2o.get(&n).copied();
        return match (ns.kind, partner) {
            // A cold part jumps back into its parent's body: it belongs to
            // whichever copy of the parent runs, here the shipped one.
            (SymKind::Func, _) if is_cold(&ns.name) => Decision::Ship(sec),
            (SymKind::Func, Some(o)) if a.change_of(n) == Some(Change::Unchanged) => {
                Decision::Route(base_route(original, o))
            }
            (SymKind::Func, _) => Decision::Ship(sec),
            (_, Some(_)) if a.pat.changed_ro.contains(&n) => Decision::Ship(sec),
            (_, Some(o)) => Decision::Route(base_route(original, o)),
            (SymKind::Tls, None) => Decision::Refuse(String::new()), // refused in analysis
            // An existing IFUNC took the arm above: the running program's,
            // which the loader resolves as the dynamic linker did. A new one
            // is refused in analysis.
            (SymKind::Ifunc, None) => Decision::Refuse(String::new()),
            (_, None) => match ambiguous_static_local(original, patched, corr, n, file) {
                Some(msg) => Decision::Refuse(msg),
                None => Decision::Ship(sec),
            },
        };
    }
    let section = &patched.sections[sec];
    if section.never_ship() {
        return Decision::Refuse(format!(
            "shipped code references section `{}` ({file}), which is not loaded at run time",
            section.name
        ));
    }
    if section.is_write() && !section.named.is_empty() {
        // Keeping the addend while routing to one variable would be wrong
        // when the section holds several; copying it would fork their state.
        return Decision::Refuse(format!(
            "shipped code references section `{}` ({file}) by offset, but it holds several \
             variables; compile with -fdata-sections.",
            section.name
        ));
    }
    Decision::Ship(sec)
}

pub fn plan(a: &Analysis, corr: &Correlation, file: &str) -> Plan {
    let patched = a.pat.obj;
    let mut ship = BTreeSet::new();
    let mut work = Vec::new();
    let mut notes: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut refusals = Vec::new();
    let seed_funcs = a
        .funcs
        .iter()
        .filter(|f| matches!(f.change, Change::Changed | Change::New))
        .filter_map(|f| f.patched);
    for sym in seed_funcs.chain(a.new_data.iter().copied()) {
        if let Some(sec) = patched.symbols[sym].section {
            if ship.insert(sec) {
                work.push(sec);
            }
        }
    }
    let mut routes = BTreeMap::new();
    let mut refused = BTreeSet::new();
    while let Some(sec) = work.pop() {
        for r in &patched.sections[sec].relocs {
            // Symbol 0 (R_X86_64_NONE and the like) needs no route.
            if r.sym == 0 || routes.contains_key(&r.sym) {
                continue;
            }
            match decide(a, corr, r.sym, file) {
                Decision::Route(route) => {
                    routes.insert(r.sym, route);
                }
                Decision::Ship(target) => {
                    if ship.insert(target) {
                        work.push(target);
                        let t = &patched.sections[target];
                        if t.is_write() {
                            notes.entry(sec).or_default().push(format!(
                                "uses writable anonymous data in `{}`: shipped as a fresh copy, \
                                 not shared with the running program",
                                t.name
                            ));
                        }
                    }
                }
                Decision::Refuse(msg) => {
                    if !msg.is_empty() && refused.insert(msg.clone()) {
                        let named = patched.named_target(r.sym).unwrap_or(r.sym);
                        refusals.push(Refusal {
                            symbol: patched.symbols[named].name.clone(),
                            message: msg,
                        });
                    }
                }
            }
        }
    }
    // Now that the set is final: everything defined in a shipped section
    // stays inside the patch, whatever was decided on the way.
    let mut final_routes = BTreeMap::new();
    for &sec in &ship {
        for r in &patched.sections[sec].relocs {
            let s = &patched.symbols[r.sym];
            if s.section.is_some_and(|t| ship.contains(&t)) && !s.external {
                final_routes.insert(r.sym, Route::Shipped);
            } else if let Some(route) = routes.get(&r.sym) {
                final_routes.insert(r.sym, route.clone());
            }
        }
    }
    Plan {
        ship,
        routes: final_routes,
        refusals,
        notes,
    }
}

/// The fields of original code that depend on linking, as (offset, length).
/// Offsets are relative to `start`; only relocations in `[start, end)`
/// count.
pub fn masks(obj: &Object, section: usize, start: u64, end: u64) -> Vec<(u32, u32)> {
    format::mask::function_masks(
        obj.relocs_in(section, start, end)
            .map(|r| (r.offset - start, r.r_type)),
    )
}

/// One replacement per changed function that is entered by calls: `.cold`
/// parts are entered by jumps from their parent and are never redirected.
pub fn replacements(a: &Analysis) -> Vec<Replacement> {
    let original = a.orig.obj;
    let mut out = Vec::new();
    for f in a.funcs.iter().filter(|f| f.change == Change::Changed) {
        let (Some(o), Some(p)) = (f.original, f.patched) else {
            continue;
        };
        let os = &original.symbols[o];
        if is_cold(&os.name) {
            continue;
        }
        let sec = os.section.unwrap_or(0);
        let end = os.value.saturating_add(os.size);
        let masks = masks(original, sec, os.value, end);
        let code = original.sections[sec].bytes(os.value, end);
        out.push(Replacement {
            name: os.name.clone(),
            local: !os.global,
            patched_symbol: p,
            old_size: os.size,
            fingerprint: format::fingerprint(&code, &masks),
            masks,
        });
    }
    out
}
