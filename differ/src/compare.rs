//! Decides, symbol by symbol, what changed: functions get a [`Change`] and
//! plain-words reasons (`explain`), data changes that cannot reach a running
//! process become [`Refusal`]s, and so do functions sharing a section. A
//! function whose only change is a `__LINE__` immediate stays unchanged, with
//! a note (`lines`).

use crate::correlate::{
    data_symbols, functions, ifuncs, is_numbered_local, is_static_local, named_refs, Correlation,
};
use crate::elf::{Object, SymKind};
use crate::explain::explain;
use crate::lines::only_line_numbers;
use crate::names::{is_cold, static_local_base, strip_numeric, without_cold_suffix};
use crate::normalize::Side;
use crate::Context;
use crate::{Change, Refusal};
use std::collections::{BTreeMap, BTreeSet};

/// One function's verdict, with both symbol indices.
#[derive(Debug, Clone)]
pub struct FuncInfo {
    pub patched: Option<usize>,
    pub original: Option<usize>,
    pub change: Change,
    pub reasons: Vec<String>,
}

/// Everything learnt from comparing the two objects.
pub struct Analysis<'o, 'a> {
    pub orig: Side<'o, 'a>,
    pub pat: Side<'o, 'a>,
    pub funcs: Vec<FuncInfo>,
    /// Patched data symbols with no original counterpart.
    pub new_data: Vec<usize>,
    pub refusals: Vec<Refusal>,
    /// Patched function symbol → index in `funcs`.
    pub by_patched: BTreeMap<usize, usize>,
    /// Facts worth telling that are neither reasons nor refusals.
    pub notes: Vec<String>,
}

impl Analysis<'_, '_> {
    /// The change verdict of a patched function symbol.
    pub fn change_of(&self, patched_sym: usize) -> Option<Change> {
        self.by_patched
            .get(&patched_sym)
            .map(|&i| self.funcs[i].change)
    }
}

/// Compares the two objects. `file` is the unit's source name for messages.
///
/// The passes, each a function below with its own inputs and outputs:
/// 1. [`mark_changed_ro`]: read-only local data whose contents changed (the
///    patched side's `changed_ro`, which the other passes' comparisons see);
/// 2. [`shared_sections`]: refuse functions that share a section;
/// 3. [`function_verdicts`]: each function Unchanged, Changed, New or
///    Removed, with notes on `__LINE__`-only changes;
/// 4. [`with_cold_parents`]: the parent of a changed `.cold` part changes too;
/// 5. [`with_static_local_reasons`]: shipped code keeps static locals' storage;
/// 6. [`data_verdicts`]: new data, and refusals of changed existing data;
/// 7. [`without_ambiguous`]: static locals with several candidate
///    originals are not new data (the plan refuses shipped code using one);
/// 8. [`ifunc_refusals`]: refuse new IFUNCs and changed resolvers.
pub fn analyze<'o, 'a>(
    original: &'o Object<'a>,
    patched: &'o Object<'a>,
    corr: &Correlation,
    file: &str,
    ctx: &Context,
) -> Analysis<'o, 'a> {
    let orig = Side::original(original);
    let mut pat = Side::patched(
        patched,
        original,
        &names_for_comparison(original, patched, corr),
    );
    mark_changed_ro(&orig, &mut pat, corr);
    let mut refusals = shared_sections(patched, file);
    let (funcs, notes) = function_verdicts(&orig, &pat, corr, ctx);
    let funcs = with_cold_parents(funcs, patched);
    let funcs = with_static_local_reasons(funcs, &pat, original, corr);
    let (new_data, data_refusals) = data_verdicts(&orig, &pat, corr, file);
    let new_data = without_ambiguous(new_data, corr);
    refusals.extend(data_refusals);
    refusals.extend(ifunc_refusals(&funcs, original, patched, corr, file));
    let by_patched = funcs
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.patched.map(|p| (p, i)))
        .collect();
    Analysis {
        orig,
        pat,
        funcs,
        new_data,
        refusals,
        by_patched,
        notes,
    }
}

/// The original names patched symbols are compared under: their partners,
/// and for a static local the correlation could not pin (no DWARF), the
/// candidate of exactly its name. A unit compiled twice from the same code
/// numbers its statics the same, so its functions compare unchanged and
/// nothing is refused; shipped code using such a static still is (the
/// plan asks [`ambiguous_static_local`], which reads the correlation).
fn names_for_comparison(
    original: &Object,
    patched: &Object,
    corr: &Correlation,
) -> BTreeMap<usize, usize> {
    let mut names = corr.p2o.clone();
    for (p, candidates) in &corr.ambiguous {
        let same = |&&o: &&usize| original.symbols[o].name == patched.symbols[*p].name;
        if let Some(&o) = candidates.iter().find(same) {
            names.insert(*p, o);
        }
    }
    names
}

/// Read-only local data is compared by contents: a changed `static const`
/// table or switch table (CSWTCH) is shipped as a fresh copy and every
/// function using it counts as changed. Fills `pat.changed_ro`, iterating
/// because one table may point into another (an array of pointers to
/// changed strings).
fn mark_changed_ro(orig: &Side, pat: &mut Side, corr: &Correlation) {
    let (original, patched) = (orig.obj, pat.obj);
    let ro_pairs: Vec<(usize, usize)> = corr
        .p2o
        .iter()
        .map(|(&p, &o)| (p, o))
        .filter(|&(p, o)| is_ro_local(patched, p) && is_ro_local(original, o))
        .collect();
    loop {
        let mut grew = false;
        for &(p, o) in &ro_pairs {
            if !pat.changed_ro.contains(&p)
                && (original.symbols[o].size != patched.symbols[p].size
                    || orig.canon_symbol(o) != pat.canon_symbol(p))
            {
                pat.changed_ro.insert(p);
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
}

/// A refusal per section that holds several patched functions, named
/// after the first of them: one cannot be replaced without the others.
fn shared_sections(patched: &Object, file: &str) -> Vec<Refusal> {
    let patched_funcs = functions(patched);
    let section_of = |p: usize| patched.symbols[p].section.unwrap_or(0);
    let mut by_section: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &p in &patched_funcs {
        by_section.entry(section_of(p)).or_default().push(p);
    }
    let mut crowded = BTreeSet::new();
    let mut refusals = Vec::new();
    for &p in &patched_funcs {
        let sec = section_of(p);
        let others: Vec<&str> = by_section[&sec]
            .iter()
            .filter(|&&q| q != p)
            .map(|&q| patched.symbols[q].name.as_str())
            .collect();
        if !others.is_empty() && crowded.insert(sec) {
            let name = &patched.symbols[p].name;
            refusals.push(Refusal {
                symbol: name.clone(),
                message: format!(
                    "function `{name}` ({file}) shares section `{}` with `{}`; each function must be \
                     in its own section to be replaced alone. Compile with -ffunction-sections and \
                     without aliases.",
                    patched.sections[sec].name,
                    others.join("`, `")
                ),
            });
        }
    }
    refusals
}

/// The verdict of every patched function (in symbol order), then of every
/// original function without a partner (Removed); plus a note per function
/// whose only change is `__LINE__`.
fn function_verdicts(
    orig: &Side,
    pat: &Side,
    corr: &Correlation,
    ctx: &Context,
) -> (Vec<FuncInfo>, Vec<String>) {
    let mut notes = Vec::new();
    let mut funcs = Vec::new();
    for p in functions(pat.obj) {
        funcs.push(match corr.p2o.get(&p) {
            Some(&o) => {
                let (info, note) = paired_verdict(orig, pat, o, p, ctx);
                notes.extend(note);
                info
            }
            None => FuncInfo {
                patched: Some(p),
                original: None,
                change: Change::New,
                reasons: vec!["new function".into()],
            },
        });
    }
    for o in functions(orig.obj) {
        if !corr.o2p.contains_key(&o) {
            funcs.push(FuncInfo {
                patched: None,
                original: Some(o),
                change: Change::Removed,
                reasons: vec!["removed (no longer in the patched object)".into()],
            });
        }
    }
    (funcs, notes)
}

/// Original function `o` against its partner `p`: their whole sections,
/// normalized. Unchanged when only the bytes of `__LINE__` immediates differ
/// (same behaviour, nothing to ship; for an edited function only when no
/// instruction comes from the edited lines), with a note saying so.
fn paired_verdict(
    orig: &Side,
    pat: &Side,
    o: usize,
    p: usize,
    ctx: &Context,
) -> (FuncInfo, Option<String>) {
    let (original, patched) = (orig.obj, pat.obj);
    let osec = original.symbols[o].section.unwrap_or(0);
    let sec = patched.symbols[p].section.unwrap_or(0);
    let oc = orig.canon(osec, 0, original.sections[osec].size, 0);
    let pc = pat.canon(sec, 0, patched.sections[sec].size, 0);
    let name = &patched.symbols[p].name;
    let line_delta = match (&ctx.orig_dbg, &ctx.pat_dbg) {
        (Some(od), Some(pd)) if oc != pc && !ctx.edited(name) => {
            only_line_numbers(&oc, &pc, od, pd, osec, sec)
        }
        // An edited function: only when the edit itself compiled to nothing.
        (Some(od), Some(pd)) if oc != pc => {
            crate::lines::edit_without_code(&oc, &pc, od, pd, (osec, sec), &ctx.line_edits)
        }
        _ => None,
    };
    let note = line_delta.map(|delta| {
        format!("{name}: only line numbers changed (__LINE__ moved by {delta:+}), not shipped")
    });
    let (change, reasons) = if oc == pc || line_delta.is_some() {
        (Change::Unchanged, vec![])
    } else {
        (Change::Changed, explain(&oc, &pc))
    };
    let info = FuncInfo {
        patched: Some(p),
        original: Some(o),
        change,
        reasons,
    };
    (info, note)
}

/// A `.cold` part is entered by a jump from the middle of its parent and
/// jumps back into it, so the two only make sense together: when the cold
/// part changes, an unchanged parent changes too.
fn with_cold_parents(mut funcs: Vec<FuncInfo>, patched: &Object) -> Vec<FuncInfo> {
    let changed_cold: Vec<(String, String)> = funcs
        .iter()
        .filter(|f| f.change == Change::Changed)
        .filter_map(|f| f.patched)
        .filter(|&p| is_cold(&patched.symbols[p].name))
        .map(|p| {
            let n = &patched.symbols[p].name;
            (without_cold_suffix(n).to_string(), n.clone())
        })
        .collect();
    for (parent, cold) in changed_cold {
        for f in funcs.iter_mut() {
            if f.change == Change::Unchanged
                && f.patched.is_some_and(|p| patched.symbols[p].name == parent)
            {
                f.change = Change::Changed;
                f.reasons.push(format!("its cold part {cold} changed"));
            }
        }
    }
    funcs
}

/// Changed and new code keeps using the original storage of static locals;
/// say so, since that is what keeps their state.
fn with_static_local_reasons(
    mut funcs: Vec<FuncInfo>,
    pat: &Side,
    original: &Object,
    corr: &Correlation,
) -> Vec<FuncInfo> {
    let patched = pat.obj;
    for f in funcs
        .iter_mut()
        .filter(|f| matches!(f.change, Change::Changed | Change::New))
    {
        let Some(p) = f.patched else { continue };
        let sec = patched.symbols[p].section.unwrap_or(0);
        for d in named_refs(patched, sec) {
            if let (true, false, Some(&o)) = (
                is_static_local(patched, d),
                is_ro_local(patched, d),
                corr.p2o.get(&d),
            ) {
                f.reasons.push(format!(
                    "uses static local {} (kept: original storage {})",
                    static_local_base(&patched.symbols[d].name),
                    original.symbols[o].name
                ));
            }
        }
    }
    funcs
}

/// The patched data symbols without an original (new data, shipped), and
/// the refusals: existing data whose size or initializer changed, and new
/// thread-locals. Changed read-only locals are neither: they ship as fresh
/// copies (see [`mark_changed_ro`]).
fn data_verdicts(
    orig: &Side,
    pat: &Side,
    corr: &Correlation,
    file: &str,
) -> (Vec<usize>, Vec<Refusal>) {
    let patched = pat.obj;
    let mut new_data = Vec::new();
    let mut refusals = Vec::new();
    for p in data_symbols(patched) {
        match corr.p2o.get(&p) {
            Some(_) if pat.changed_ro.contains(&p) => {}
            Some(&o) => refusals.extend(changed_data(orig, pat, o, p, file)),
            None if patched.symbols[p].kind == SymKind::Tls => {
                refusals.push(new_thread_local(patched, p, file))
            }
            None if patched.symbols[p].kind != SymKind::NoType => new_data.push(p),
            None => {}
        }
    }
    (new_data, refusals)
}

/// The refusal for existing data `o` whose partner `p` has another size or
/// initializer: the running process keeps the old one.
fn changed_data(orig: &Side, pat: &Side, o: usize, p: usize, file: &str) -> Option<Refusal> {
    let (original, patched) = (orig.obj, pat.obj);
    let (os, ps) = (&original.symbols[o], &patched.symbols[p]);
    let what = || describe_data(original, o, file, owner_of(original, o).as_deref());
    let message = if os.size != ps.size {
        format!(
            "{}: size changed from {} to {} bytes; the running process keeps \
             the old layout in memory. Keep the old type and add a new variable \
             instead, or restart.",
            what(),
            os.size,
            ps.size
        )
    } else if orig.canon_symbol(o) != pat.canon_symbol(p) {
        format!(
            "{}: initializer changed; a running process keeps the value it \
             started with. Assign the new value in code, or restart.",
            what()
        )
    } else {
        return None;
    };
    Some(Refusal {
        symbol: os.name.clone(),
        message,
    })
}

/// The refusal for thread-local `p`, which the original object lacks.
fn new_thread_local(patched: &Object, p: usize, file: &str) -> Refusal {
    let what = describe_data(patched, p, file, owner_of(patched, p).as_deref());
    Refusal {
        symbol: patched.symbols[p].name.clone(),
        message: format!(
            "new {what}: running threads have no storage for it. Use a global \
             variable (or an existing thread-local one), or restart."
        ),
    }
}

/// The first function whose code references data symbol `d`.
fn owner_of(obj: &Object, d: usize) -> Option<String> {
    functions(obj)
        .into_iter()
        .find(|&f| named_refs(obj, obj.symbols[f].section.unwrap_or(0)).contains(&d))
        .map(|f| obj.symbols[f].name.clone())
}

/// How to speak of a data symbol in a message.
fn describe_data(obj: &Object, sym: usize, file: &str, owner: Option<&str>) -> String {
    let s = &obj.symbols[sym];
    let tls = if s.kind == SymKind::Tls {
        "thread-local "
    } else {
        ""
    };
    if s.global {
        format!("{tls}global `{}` ({file})", s.name)
    } else if is_numbered_local(obj, sym) {
        match owner {
            Some(f) => format!(
                "{tls}static local `{}` in {f}() ({file})",
                strip_numeric(&s.name)
            ),
            None => format!("{tls}static local `{}` ({file})", strip_numeric(&s.name)),
        }
    } else {
        format!("{tls}static `{}` ({file})", s.name)
    }
}

/// `new_data` without the patched static locals the correlation could not
/// pin to one original storage: they are not new, and shipping a fresh copy
/// would fork their state. Only shipped code referencing one is refused
/// ([`ambiguous_static_local`], asked by the plan): a unit whose code and
/// data did not change never is.
fn without_ambiguous(mut new_data: Vec<usize>, corr: &Correlation) -> Vec<usize> {
    new_data.retain(|d| !corr.ambiguous.iter().any(|(p, _)| p == d));
    new_data
}

/// The refusal message for shipped code referencing patched static local
/// `p` when the correlation found several original storages it could
/// continue; `None` when `p` is not such a static.
pub fn ambiguous_static_local(
    original: &Object,
    patched: &Object,
    corr: &Correlation,
    p: usize,
    file: &str,
) -> Option<String> {
    let (_, candidates) = corr.ambiguous.iter().find(|(a, _)| *a == p)?;
    let names: Vec<&str> = candidates
        .iter()
        .map(|&o| original.symbols[o].name.as_str())
        .collect();
    let base = strip_numeric(&patched.symbols[p].name);
    Some(format!(
        "static local `{base}` ({file}): cannot tell which original storage it continues \
         (candidates: {}); rename one of the static locals so each name is used by one \
         function, compile with -g so the debug info says which function declares it, or \
         restart.",
        names.join(", ")
    ))
}

/// Refusals of what a running program cannot take from IFUNCs: it ran every
/// resolver at start-up (the dynamic linker stored each choice), so a new
/// IFUNC would never be resolved for it, and a changed resolver would never
/// run again. A fix to an implementation (a target_clones clone, or a
/// function a resolver returns) ships like any function.
fn ifunc_refusals(
    funcs: &[FuncInfo],
    original: &Object,
    patched: &Object,
    corr: &Correlation,
    file: &str,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    for p in ifuncs(patched) {
        if !corr.p2o.contains_key(&p) {
            let name = &patched.symbols[p].name;
            refusals.push(Refusal {
                symbol: name.clone(),
                message: format!(
                    "new IFUNC `{name}` ({file}): a running program resolves IFUNCs only when it \
                     starts. Call one of its implementations directly, or restart."
                ),
            });
        }
    }
    let orig_ifuncs = ifuncs(original);
    for f in funcs.iter().filter(|f| f.change == Change::Changed) {
        let Some(o) = f.original else { continue };
        let r = &original.symbols[o];
        let served: Vec<&str> = orig_ifuncs
            .iter()
            .map(|&i| &original.symbols[i])
            .filter(|i| i.section == r.section && i.value == r.value)
            .map(|i| i.name.as_str())
            .collect();
        if let Some(first) = served.first() {
            refusals.push(Refusal {
                symbol: r.name.clone(),
                message: format!(
                    "resolver `{}` of IFUNC `{}` ({file}) changed: the running program chose \
                     `{first}`'s implementation when it started and never asks again. Change the \
                     implementations instead, or restart.",
                    r.name,
                    served.join("`, `")
                ),
            });
        }
    }
    refusals
}

/// Read-only data defined locally: safe to replace by a fresh copy.
pub fn is_ro_local(obj: &Object, sym: usize) -> bool {
    let s = &obj.symbols[sym];
    s.is_data()
        && s.kind != SymKind::Tls
        && !s.global
        && s.section.is_some_and(|sec| obj.sections[sec].is_readonly())
}
