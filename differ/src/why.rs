//! Says *why* a shipped function ships, beyond "its bytes differ":
//!
//! - "compiler clone of X (.constprop)": GCC made it from X; it is replaced
//!   with X's change because callers were rewritten to call it directly.
//! - "cold part of X": GCC split it off X; it ships with X.
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
    // A symbol's value and size come from the object as they are: a value
    // far outside its section must not overflow (found by fuzzing).
    let (lo, hi) = (
        encode(section, start),
        encode(section, start.saturating_add(size.max(1))),
    );
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

/// Adds the reasons above to every changed or new function, before the
/// reasons it has (without repeating one).
pub fn annotate(a: &mut Analysis, ctx: &Context) {
    let extra = extra_reasons(a, ctx);
    for (f, mut why) in a.funcs.iter_mut().zip(extra) {
        why.retain(|w| !f.reasons.contains(w));
        why.append(&mut f.reasons);
        f.reasons = why;
    }
}

/// Inlined copies (see [`inlined`]) of one function present on both sides:
/// (original copies, original section, patched copies, patched section).
type Copies = (
    BTreeMap<String, Vec<(u64, u64)>>,
    usize,
    BTreeMap<String, Vec<(u64, u64)>>,
    usize,
);

/// The reasons above for each function of `a.funcs`, in order (empty for
/// those that do not ship).
fn extra_reasons(a: &Analysis, ctx: &Context) -> Vec<Vec<String>> {
    let per_func = copies_per_function(a, ctx);
    let mut sources = SourceChanges::new(a, ctx, &per_func);
    let pat = a.pat.obj;
    let mut out = vec![Vec::new(); a.funcs.len()];
    for (i, f) in a.funcs.iter().enumerate() {
        if !matches!(f.change, Change::Changed | Change::New) {
            continue;
        }
        let Some(p) = f.patched else { continue };
        let name = &pat.symbols[p].name;
        let why = &mut out[i];
        why.extend(derivation(name));
        for x in inlined_names(a, p, per_func[i].as_ref(), ctx) {
            if x != source_name(name) && sources.changed(&x) {
                why.push(format!("had {x} inlined, whose code changed"));
            }
        }
        if f.change == Change::Changed {
            why.extend(changed_callees(a, p));
        }
    }
    out
}

/// Per function of `a.funcs` with both symbols, when both objects have
/// DWARF: its inlined copies on each side, computed once.
fn copies_per_function(a: &Analysis, ctx: &Context) -> Vec<Option<Copies>> {
    let (orig, pat) = (a.orig.obj, a.pat.obj);
    let (od, pd) = (ctx.orig_dbg.as_ref(), ctx.pat_dbg.as_ref());
    a.funcs
        .iter()
        .map(|f| match (f.original, f.patched, od, pd) {
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
        })
        .collect()
}

/// Which source functions' code changed (see the module doc).
struct SourceChanges<'r, 'o, 'a> {
    a: &'r Analysis<'o, 'a>,
    ctx: &'r Context,
    per_func: &'r [Option<Copies>],
    /// Source functions with an out-of-line copy (or clone) that changed.
    changed_src: BTreeSet<String>,
    /// Source functions with an out-of-line copy (or clone).
    out_of_line: BTreeSet<String>,
    /// Inlined-only functions decided so far.
    inline_verdict: BTreeMap<String, bool>,
}

impl<'r, 'o, 'a> SourceChanges<'r, 'o, 'a> {
    fn new(a: &'r Analysis<'o, 'a>, ctx: &'r Context, per_func: &'r [Option<Copies>]) -> Self {
        let (orig, pat) = (a.orig.obj, a.pat.obj);
        let mut changed_src = BTreeSet::new();
        let mut out_of_line = BTreeSet::new();
        for f in &a.funcs {
            let name = match (f.patched, f.original) {
                (Some(p), _) => &pat.symbols[p].name,
                (None, Some(o)) => &orig.symbols[o].name,
                (None, None) => continue,
            };
            out_of_line.insert(source_name(name).to_string());
            if matches!(f.change, Change::Changed | Change::New) {
                changed_src.insert(source_name(name).to_string());
            }
        }
        SourceChanges {
            a,
            ctx,
            per_func,
            changed_src,
            out_of_line,
            inline_verdict: BTreeMap::new(),
        }
    }

    /// Whether source function `x`'s code changed.
    fn changed(&mut self, x: &str) -> bool {
        if self.changed_src.contains(x) || self.ctx.edited(x) {
            return true;
        }
        if self.out_of_line.contains(x) {
            return false;
        }
        if let Some(&v) = self.inline_verdict.get(x) {
            return v;
        }
        let v = self.inlined_copies_differ(x);
        self.inline_verdict.insert(x.to_string(), v);
        v
    }

    /// An inlined-only `x` changed when its copies differ in every function
    /// that has one (not folded away) in both objects, and there is one.
    fn inlined_copies_differ(&self, x: &str) -> bool {
        let mut seen = false;
        for (oi, osec, pi, psec) in self.per_func.iter().flatten() {
            let (Some(or), Some(pr)) = (oi.get(x), pi.get(x)) else {
                continue;
            };
            if or.is_empty() && pr.is_empty() {
                continue; // folded away on both sides: nothing to compare
            }
            seen = true;
            if copies(&self.a.orig, *osec, or) == copies(&self.a.pat, *psec, pr) {
                return false;
            }
        }
        seen
    }
}

/// "cold part of X" or "compiler clone of X (.kind)" for a derived function.
fn derivation(name: &str) -> Option<String> {
    if is_cold(name) {
        let parent = cold_parent(name);
        Some(format!(
            "cold part of {parent} (split off by the compiler; travels with it)"
        ))
    } else {
        clone_of(name).map(|(parent, kind)| format!("compiler clone of {parent} (.{kind})"))
    }
}

/// The functions inlined into patched function `p`.
fn inlined_names(a: &Analysis, p: usize, both: Option<&Copies>, ctx: &Context) -> Vec<String> {
    match (both, ctx.pat_dbg.as_ref()) {
        (Some((_, _, pi, _)), _) => pi.keys().cloned().collect(),
        (None, Some(pd)) => {
            let s = &a.pat.obj.symbols[p];
            inlined(pd, s.section.unwrap_or(0), s.value, s.size)
                .into_keys()
                .collect()
        }
        _ => Vec::new(),
    }
}

/// "depends on X's registers or constants" for each changed function the
/// changed function `p` references, other than its own source function's.
fn changed_callees(a: &Analysis, p: usize) -> Vec<String> {
    let pat = a.pat.obj;
    let name = &pat.symbols[p].name;
    let sec = pat.symbols[p].section.unwrap_or(0);
    let mut callees: Vec<String> = crate::correlate::named_refs(pat, sec)
        .into_iter()
        .filter(|&t| t != p && a.change_of(t) == Some(Change::Changed))
        .map(|t| pat.symbols[t].name.clone())
        .filter(|t| source_name(t) != source_name(name))
        .collect();
    callees.sort();
    callees
        .into_iter()
        .map(|x| {
            format!(
                "depends on {x}'s registers or constants (calls {x}, which changed; -fipa-ra, IPA)"
            )
        })
        .collect()
}
