//! Says *why* a shipped function ships, beyond "its bytes differ":
//!
//! - "compiler clone of X (.constprop)": GCC made it from X; it is replaced
//!   with X's change because callers were rewritten to call it directly.
//! - "had X inlined": DWARF's `DW_TAG_inlined_subroutine` (its
//!   `DW_AT_abstract_origin` names X) lies in its code and X's code changed.
//! - "depends on X's registers or constants": it calls X, which changed.
//!   With -fipa-ra (default at -O2) a caller keeps values in registers the
//!   old X did not clobber, and IPA constant propagation bakes in what X
//!   returns, so the caller's code follows X's.
//!
//! X's code "changed" when an out-of-line copy of X (or a clone of it)
//! changed, when the builder says X was edited, or — for a static that
//! exists only inlined — when its inlined copies differ in every function
//! that has one in both objects (a change in one caller alone can reshuffle
//! registers inside the copy; a change of X shows in all of them).

use crate::compare::Analysis;
use crate::dwarf::{encode, Debug};
use crate::names::{clone_of, clone_source as source_name, cold_parent, is_cold};
use crate::normalize::{Canon, Side};
use crate::{Change, Context};
use std::collections::{BTreeMap, BTreeSet};

/// Inlined copies in a function symbol's code: origin name → section ranges
/// (offsets within the symbol's section).
fn inlined(
    dbg: &Debug,
    section: usize,
    start: u64,
    size: u64,
) -> BTreeMap<String, Vec<(u64, u64)>> {
    let (lo, hi) = (encode(section, start), encode(section, start + size.max(1)));
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let Some(sp) = dbg.subprogram_at(lo) else {
        return out;
    };
    for d in dbg.descendants(sp) {
        let die = &dbg.dies[d];
        if die.tag != gimli::DW_TAG_inlined_subroutine {
            continue;
        }
        let Some(name) = dbg.name(d) else { continue };
        // A copy folded into the caller's code has no range of its own, but
        // the caller still inlined it.
        let here = out.entry(name.to_string()).or_default();
        if die.ranges.is_empty() {
            continue;
        }
        for &(b, e) in &die.ranges {
            if b < hi && lo < e {
                let (b, e) = (b.max(lo), e.min(hi));
                here.push((b & 0xffff_ffff, e & 0xffff_ffff));
            }
        }
    }
    out
}

fn copies(side: &Side, section: usize, ranges: &[(u64, u64)]) -> Vec<Canon> {
    ranges
        .iter()
        .map(|&(b, e)| side.canon(section, b, e, 0))
        .collect()
}

/// Adds the reasons above to every changed or new function.
pub fn annotate(a: &mut Analysis, ctx: &Context) {
    let (orig, pat) = (a.orig.obj, a.pat.obj);
    // Source functions with an out-of-line copy (or clone) that changed, and
    // those whose out-of-line copies are all unchanged.
    let mut changed_src: BTreeSet<String> = BTreeSet::new();
    let mut out_of_line: BTreeSet<String> = BTreeSet::new();
    for f in &a.funcs {
        let Some(s) = f.patched.or(f.original) else {
            continue;
        };
        let name = if f.patched.is_some() {
            &pat.symbols[s].name
        } else {
            &orig.symbols[s].name
        };
        out_of_line.insert(source_name(name).to_string());
        if matches!(f.change, Change::Changed | Change::New) {
            changed_src.insert(source_name(name).to_string());
        }
    }
    let mut inline_verdict: BTreeMap<String, bool> = BTreeMap::new();
    let (od, pd) = (ctx.orig_dbg.as_ref(), ctx.pat_dbg.as_ref());

    // Per function: (patched inlined, original inlined) copies, computed once.
    let mut per_func = Vec::new();
    for f in &a.funcs {
        let both = match (f.original, f.patched, od, pd) {
            (Some(o), Some(p), Some(od), Some(pd)) => {
                let (os, ps) = (&orig.symbols[o], &pat.symbols[p]);
                let (osec, psec) = (os.section.unwrap_or(0), ps.section.unwrap_or(0));
                Some((
                    inlined(od, osec, os.value, os.size),
                    osec,
                    inlined(pd, psec, ps.value, ps.size),
                    psec,
                ))
            }
            _ => None,
        };
        per_func.push(both);
    }
    let mut x_changed = |x: &str| -> bool {
        if changed_src.contains(x) || ctx.edited(x) {
            return true;
        }
        if out_of_line.contains(x) {
            return false;
        }
        *inline_verdict.entry(x.to_string()).or_insert_with(|| {
            let mut seen = false;
            for (oi, osec, pi, psec) in per_func.iter().flatten() {
                let (Some(or), Some(pr)) = (oi.get(x), pi.get(x)) else {
                    continue;
                };
                if or.is_empty() && pr.is_empty() {
                    continue; // folded away on both sides: nothing to compare
                }
                seen = true;
                if copies(&a.orig, *osec, or) == copies(&a.pat, *psec, pr) {
                    return false;
                }
            }
            seen
        })
    };

    let mut extra: Vec<Vec<String>> = vec![Vec::new(); a.funcs.len()];
    for (i, f) in a.funcs.iter().enumerate() {
        if !matches!(f.change, Change::Changed | Change::New) {
            continue;
        }
        let Some(p) = f.patched else { continue };
        let name = pat.symbols[p].name.clone();
        let why = &mut extra[i];
        if is_cold(&name) {
            let parent = cold_parent(&name);
            why.push(format!(
                "cold part of {parent} (split off by the compiler; travels with it)"
            ));
        } else if let Some((parent, kind)) = clone_of(&name) {
            why.push(format!("compiler clone of {parent} (.{kind})"));
        }
        // Inlined functions whose code changed.
        let inl: Vec<String> = match (&per_func[i], pd) {
            (Some((_, _, pi, _)), _) => pi.keys().cloned().collect(),
            (None, Some(pd)) => {
                let s = &pat.symbols[p];
                inlined(pd, s.section.unwrap_or(0), s.value, s.size)
                    .into_keys()
                    .collect()
            }
            _ => Vec::new(),
        };
        for x in inl {
            if x != source_name(&name) && x_changed(&x) {
                why.push(format!("had {x} inlined, whose code changed"));
            }
        }
        // Callees that changed.
        if f.change == Change::Changed {
            let sec = pat.symbols[p].section.unwrap_or(0);
            let mut callees: Vec<String> = crate::correlate::named_refs(pat, sec)
                .into_iter()
                .filter(|&t| t != p && a.change_of(t) == Some(Change::Changed))
                .map(|t| pat.symbols[t].name.clone())
                .filter(|t| source_name(t) != source_name(&name))
                .collect();
            callees.sort();
            for x in callees {
                why.push(format!(
                    "depends on {x}'s registers or constants (calls {x}, which changed; -fipa-ra, IPA)"
                ));
            }
        }
    }
    for (f, mut why) in a.funcs.iter_mut().zip(extra) {
        why.retain(|w| !f.reasons.contains(w));
        why.append(&mut f.reasons);
        f.reasons = why;
    }
}
