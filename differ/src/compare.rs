//! Decides, symbol by symbol, what changed: functions get a [`Change`] and
//! plain-words reasons, data changes that cannot reach a running process
//! become [`Refusal`]s.

use crate::correlate::{data_symbols, functions, is_numbered_local, named_refs, Correlation};
use crate::elf::{Object, SymKind};
use crate::lines::only_line_numbers;
use crate::names::{is_cold, static_local_base, strip_numeric, without_cold_suffix};
use crate::normalize::{quote, Canon, Side, Target};
use crate::Context;
use crate::{Change, Refusal};
use object::elf;
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

/// Compares the two objects. `file` is the unit's source name for messages.
pub fn analyze<'o, 'a>(
    original: &'o Object<'a>,
    patched: &'o Object<'a>,
    corr: &Correlation,
    file: &str,
    ctx: &Context,
) -> Analysis<'o, 'a> {
    let mut notes = Vec::new();
    let orig = Side::original(original);
    let mut pat = Side::patched(patched, original, &corr.p2o);
    let mut refusals = Vec::new();

    // Read-only local data is compared by contents: a changed `static const`
    // table or switch table (CSWTCH) is shipped as a fresh copy and every
    // function using it counts as changed. Iterate because one table may
    // point into another (an array of pointers to changed strings).
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

    // Functions.
    let mut funcs = Vec::new();
    let mut crowded = BTreeSet::new();
    let patched_funcs = functions(patched);
    let mut by_section: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &p in &patched_funcs {
        by_section
            .entry(patched.symbols[p].section.unwrap_or(0))
            .or_default()
            .push(p);
    }
    for &p in &patched_funcs {
        let sec = patched.symbols[p].section.unwrap_or(0);
        let others: Vec<&str> = by_section[&sec]
            .iter()
            .copied()
            .filter(|&q| q != p)
            .map(|q| patched.symbols[q].name.as_str())
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
        let info = match corr.p2o.get(&p) {
            Some(&o) => {
                let osec = original.symbols[o].section.unwrap_or(0);
                let oc = orig.canon(osec, 0, original.sections[osec].size, 0);
                let pc = pat.canon(sec, 0, patched.sections[sec].size, 0);
                let name = &patched.symbols[p].name;
                // Only the bytes of `__LINE__` immediates differ: same
                // behaviour, nothing to ship. Never for an edited function.
                let line_delta = match (&ctx.orig_dbg, &ctx.pat_dbg) {
                    (Some(od), Some(pd)) if oc != pc && !ctx.edited(name) => {
                        only_line_numbers(&oc, &pc, od, pd, osec, sec)
                    }
                    _ => None,
                };
                if let Some(delta) = line_delta {
                    notes.push(format!(
                        "{name}: only line numbers changed (__LINE__ moved by {delta:+}), not shipped"
                    ));
                }
                if oc == pc || line_delta.is_some() {
                    FuncInfo {
                        patched: Some(p),
                        original: Some(o),
                        change: Change::Unchanged,
                        reasons: vec![],
                    }
                } else {
                    FuncInfo {
                        patched: Some(p),
                        original: Some(o),
                        change: Change::Changed,
                        reasons: explain(&oc, &pc),
                    }
                }
            }
            None => FuncInfo {
                patched: Some(p),
                original: None,
                change: Change::New,
                reasons: vec!["new function".into()],
            },
        };
        funcs.push(info);
    }
    for o in functions(original) {
        if !corr.o2p.contains_key(&o) {
            funcs.push(FuncInfo {
                patched: None,
                original: Some(o),
                change: Change::Removed,
                reasons: vec!["removed (no longer in the patched object)".into()],
            });
        }
    }

    // A `.cold` part is entered by a jump from the middle of its parent and
    // jumps back into it, so the two only make sense together: when the
    // cold part changes, the parent ships too.
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

    // Changed and new code keeps using the original storage of static
    // locals; say so, since that is what keeps their state.
    for f in funcs
        .iter_mut()
        .filter(|f| matches!(f.change, Change::Changed | Change::New))
    {
        let Some(p) = f.patched else { continue };
        let sec = patched.symbols[p].section.unwrap_or(0);
        for d in named_refs(patched, sec) {
            if let (true, false, Some(&o)) = (
                crate::correlate::is_static_local(patched, d),
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

    // Data.
    let owner_of = |obj: &Object, d: usize| -> Option<String> {
        functions(obj)
            .into_iter()
            .find(|&f| named_refs(obj, obj.symbols[f].section.unwrap_or(0)).contains(&d))
            .map(|f| obj.symbols[f].name.clone())
    };
    let mut new_data = Vec::new();
    for p in data_symbols(patched) {
        match corr.p2o.get(&p) {
            Some(&o) => {
                if pat.changed_ro.contains(&p) {
                    continue; // shipped as a fresh copy, see above
                }
                let (os, ps) = (&original.symbols[o], &patched.symbols[p]);
                let what = || describe_data(original, o, file, owner_of(original, o).as_deref());
                if os.size != ps.size {
                    refusals.push(Refusal {
                        symbol: os.name.clone(),
                        message: format!(
                            "{}: size changed from {} to {} bytes; the running process keeps \
                             the old layout in memory. Keep the old type and add a new variable \
                             instead, or restart.",
                            what(),
                            os.size,
                            ps.size
                        ),
                    });
                } else if orig.canon_symbol(o) != pat.canon_symbol(p) {
                    refusals.push(Refusal {
                        symbol: os.name.clone(),
                        message: format!(
                            "{}: initializer changed; a running process keeps the value it \
                             started with. Assign the new value in code, or restart.",
                            what()
                        ),
                    });
                }
            }
            None => {
                let ps = &patched.symbols[p];
                if ps.kind == SymKind::Tls {
                    let what = describe_data(patched, p, file, owner_of(patched, p).as_deref());
                    refusals.push(Refusal {
                        symbol: ps.name.clone(),
                        message: format!(
                            "new {what}: running threads have no storage for it. Use a global \
                             variable (or an existing thread-local one), or restart."
                        ),
                    });
                } else if ps.kind != SymKind::NoType {
                    new_data.push(p);
                }
            }
        }
    }
    for (p, candidates) in &corr.ambiguous {
        let names: Vec<&str> = candidates
            .iter()
            .map(|&o| original.symbols[o].name.as_str())
            .collect();
        let base = strip_numeric(&patched.symbols[*p].name);
        refusals.push(Refusal {
            symbol: patched.symbols[*p].name.clone(),
            message: format!(
                "static local `{base}` ({file}): cannot tell which original storage it continues \
                 (candidates: {}); rename one of the static locals so each name is used by one \
                 function, or restart.",
                names.join(", ")
            ),
        });
        new_data.retain(|&d| d != *p);
    }

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

/// Read-only data defined locally: safe to replace by a fresh copy.
pub fn is_ro_local(obj: &Object, sym: usize) -> bool {
    let s = &obj.symbols[sym];
    s.is_data()
        && s.kind != SymKind::Tls
        && !s.global
        && s.section.is_some_and(|sec| obj.sections[sec].is_readonly())
}

/// Multiset difference `a - b`.
fn minus<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    let mut rest: BTreeMap<&T, usize> = BTreeMap::new();
    for x in b {
        *rest.entry(x).or_default() += 1;
    }
    let mut out = Vec::new();
    for x in a {
        match rest.get_mut(x) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(x.clone()),
        }
    }
    out
}

/// Plain-words reasons why two normalized function bodies differ.
pub fn explain(o: &Canon, p: &Canon) -> Vec<String> {
    let mut reasons = Vec::new();
    let common = o.size.min(p.size) as usize;
    let byte = |c: &Canon, i: usize| c.bytes.get(i).copied().unwrap_or(0);
    let first_diff = (0..common).find(|&i| byte(o, i) != byte(p, i));
    if let Some(i) = first_diff {
        reasons.push(format!("code differs at offset {i:#x}"));
    }
    if o.size != p.size {
        reasons.push(format!("size changed from {} to {} bytes", o.size, p.size));
    }

    let is_call = |t: u32| t == elf::R_X86_64_PLT32;
    let calls = |c: &Canon| -> Vec<String> {
        let mut v: Vec<String> = c
            .relocs
            .iter()
            .filter(|r| {
                is_call(r.r_type) && matches!(r.target, Target::External(_) | Target::Named { .. })
            })
            .map(|r| r.target.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (oc, pc) = (calls(o), calls(p));
    let (gone, added) = (minus(&oc, &pc), minus(&pc, &oc));
    if let ([g], [a]) = (gone.as_slice(), added.as_slice()) {
        reasons.push(format!("now calls {a} (was {g})"));
    } else {
        reasons.extend(added.iter().map(|a| format!("now calls {a}")));
        reasons.extend(gone.iter().map(|g| format!("no longer calls {g}")));
    }

    let strings = |c: &Canon| -> Vec<Vec<u8>> {
        c.relocs.iter().filter_map(|r| as_text(&r.target)).collect()
    };
    let (os, ps) = (strings(o), strings(p));
    let (gone, added) = (minus(&os, &ps), minus(&ps, &os));
    let pairs = gone.len().min(added.len());
    for i in 0..pairs {
        reasons.push(format!(
            "string literal changed: {} → {}",
            quote(&gone[i]),
            quote(&added[i])
        ));
    }
    reasons.extend(
        added[pairs..]
            .iter()
            .map(|s| format!("uses new string literal {}", quote(s))),
    );
    reasons.extend(
        gone[pairs..]
            .iter()
            .map(|s| format!("no longer uses string literal {}", quote(s))),
    );

    // Everything else that is referenced (data, constants, tables,
    // functions taken by address), as sets.
    let others = |c: &Canon| -> BTreeSet<Target> {
        c.relocs
            .iter()
            .filter(|r| as_text(&r.target).is_none())
            .filter(|r| {
                !(is_call(r.r_type)
                    && matches!(r.target, Target::External(_) | Target::Named { .. }))
            })
            .map(|r| r.target.clone())
            .collect()
    };
    let (ot, pt) = (others(o), others(p));
    for t in pt.difference(&ot) {
        reasons.push(match t {
            Target::Named {
                name,
                changed: true,
                ..
            } => format!("uses changed read-only data {name}"),
            Target::Named {
                name, new: true, ..
            } => format!("uses new symbol {name}"),
            Target::Anon(_) => "a table or constant it uses changed".to_string(),
            Target::Const { .. } => format!("uses {t}"),
            _ => format!("now references {t}"),
        });
    }
    for t in ot.difference(&pt) {
        if !matches!(t, Target::Anon(_))
            && !matches!(t, Target::Named { .. } if pt.iter().any(|x| matches!(x, Target::Named { name, .. } if Some(name.as_str()) == named(t))))
        {
            reasons.push(format!("no longer references {t}"));
        }
    }

    if reasons.is_empty() {
        // Same targets, but at other places or with other addends/types.
        if let Some(i) =
            (0..o.relocs.len().max(p.relocs.len())).find(|&i| o.relocs.get(i) != p.relocs.get(i))
        {
            let at = o.relocs.get(i).or(p.relocs.get(i)).map_or(0, |r| r.offset);
            reasons.push(format!("relocations differ at offset {at:#x}"));
        }
    }
    if reasons.is_empty() {
        reasons.push("code differs".into());
    }
    reasons
}

/// The text of a string literal target: from a mergeable string section,
/// or (at -O0, where literals sit in plain `.rodata`) an anonymous datum that
/// reads as text.
fn as_text(t: &Target) -> Option<Vec<u8>> {
    match t {
        Target::Str(s) => Some(s.clone()),
        Target::Anon(c) if c.relocs.is_empty() && !c.bytes.is_empty() => {
            let text = c.bytes.split(|&b| b == 0).next().unwrap_or(&[]);
            let printable = |b: &u8| b.is_ascii_graphic() || b.is_ascii_whitespace() || *b >= 0x80;
            (text.len() + 1 >= c.bytes.len() && text.iter().all(printable)).then(|| text.to_vec())
        }
        _ => None,
    }
}

fn named(t: &Target) -> Option<&str> {
    match t {
        Target::Named { name, .. } => Some(name),
        _ => None,
    }
}
