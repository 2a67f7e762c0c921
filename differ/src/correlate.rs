//! Pairs the named symbols of the patched object with those of the original.
//!
//! Names are not stable between two compilations: GCC numbers compiler-made
//! clones (`foo.constprop.0`, `foo.part.1`) and static locals (`calls.0`,
//! `calls.1`) in the order it meets them, so an edit elsewhere in the file
//! renumbers them. Functions with plain names pair by name; numbered ones
//! (clones) pair by their name without numbers when there is one per side,
//! else by their callers, then by exact name, then by the name without
//! numbers where that is unique ([`names`](crate::names) reads the names).
//! Static locals are paired first by what DWARF says declares them (the
//! function and the variable's name: sqlite has several `static const
//! sMutex`, and every `assert()` makes a `__PRETTY_FUNCTION__`), then through
//! the functions that use them, because the same base name (`calls`) is
//! common and an exact-name match could hand one function's state to
//! another; one that several original ones could continue is left
//! [`Correlation::ambiguous`].

use crate::dwarf::{encode, Debug};
use crate::elf::{Object, SymKind};
use crate::names::{is_numbered, strip_numeric};
use std::collections::{BTreeMap, BTreeSet};

/// A data symbol named like a GCC static local or other compiler-numbered
/// local (`calls.0`, `CSWTCH.11`, `__func__.2`).
pub fn is_numbered_local(obj: &Object, sym: usize) -> bool {
    let s = &obj.symbols[sym];
    !s.global && s.is_data() && is_numbered(&s.name)
}

/// A function's static local: GCC names it `calls.N`, clang `count.calls`
/// (after the function). Writable local data only.
pub fn is_static_local(obj: &Object, sym: usize) -> bool {
    let s = &obj.symbols[sym];
    let writable = s
        .section
        .is_some_and(|sec| !obj.sections[sec].is_readonly());
    if !writable || s.global || !s.is_data() {
        return false;
    }
    is_numbered_local(obj, sym)
        || s.name.split_once('.').is_some_and(|(f, _)| {
            obj.symbols
                .iter()
                .any(|g| g.kind == SymKind::Func && g.name == f)
        })
}

/// Defined function symbols.
pub fn functions(obj: &Object) -> Vec<usize> {
    (0..obj.symbols.len())
        .filter(|&i| {
            let s = &obj.symbols[i];
            s.kind == SymKind::Func && s.section.is_some() && !s.name.is_empty()
        })
        .collect()
}

/// Defined data symbols (objects, TLS objects) and global assembler labels.
pub fn data_symbols(obj: &Object) -> Vec<usize> {
    (0..obj.symbols.len())
        .filter(|&i| {
            let s = &obj.symbols[i];
            s.section.is_some() && s.is_named() && !matches!(s.kind, SymKind::Func | SymKind::Ifunc)
        })
        .collect()
}

/// Defined IFUNC symbols (each sits on its resolver).
pub fn ifuncs(obj: &Object) -> Vec<usize> {
    (0..obj.symbols.len())
        .filter(|&i| {
            let s = &obj.symbols[i];
            s.kind == SymKind::Ifunc && s.section.is_some() && !s.name.is_empty()
        })
        .collect()
}

/// The named symbols a section's relocations reach (directly, or through
/// the section symbol of a single-symbol section).
pub fn named_refs(obj: &Object, section: usize) -> BTreeSet<usize> {
    obj.sections[section]
        .relocs
        .iter()
        .filter_map(|r| obj.named_target(r.sym))
        .collect()
}

/// The result: for each symbol index, its partner on the other side.
#[derive(Debug, Default)]
pub struct Correlation {
    pub p2o: BTreeMap<usize, usize>,
    pub o2p: BTreeMap<usize, usize>,
    /// Patched static locals that could stand for several original ones:
    /// (patched symbol, candidate original symbols).
    pub ambiguous: Vec<(usize, Vec<usize>)>,
}

impl Correlation {
    fn pair(&mut self, o: usize, p: usize) {
        self.p2o.insert(p, o);
        self.o2p.insert(o, p);
    }

    /// Pairs unpaired symbols of `orig` and `patched` by exact name, then by
    /// stripped name where the stripped name is unique among the unpaired
    /// symbols on both sides.
    fn pair_by_name(&mut self, original: &Object, patched: &Object, orig: &[usize], pat: &[usize]) {
        let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
        for &o in orig.iter().filter(|o| !self.o2p.contains_key(o)) {
            by_name
                .entry(original.symbols[o].name.as_str())
                .or_insert(o);
        }
        for &p in pat {
            if self.p2o.contains_key(&p) {
                continue;
            }
            if let Some(&o) = by_name.get(patched.symbols[p].name.as_str()) {
                if !self.o2p.contains_key(&o) {
                    self.pair(o, p);
                }
            }
        }
        let group = |obj: &Object, syms: &[usize], taken: &BTreeMap<usize, usize>| {
            let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for &s in syms.iter().filter(|s| !taken.contains_key(s)) {
                m.entry(strip_numeric(&obj.symbols[s].name))
                    .or_default()
                    .push(s);
            }
            m
        };
        let og = group(original, orig, &self.o2p);
        let pg = group(patched, pat, &self.p2o);
        for (name, ps) in &pg {
            if let (Some(os), [p]) = (og.get(name), ps.as_slice()) {
                if let [o] = os.as_slice() {
                    self.pair(*o, *p);
                }
            }
        }
    }
}

/// Names (in original terms) of the functions whose code references `f`.
fn callers(
    obj: &Object,
    funcs: &[usize],
    f: usize,
    rename: &dyn Fn(usize) -> String,
) -> BTreeSet<String> {
    funcs
        .iter()
        .copied()
        .filter(|&g| g != f && named_refs(obj, obj.symbols[g].section.unwrap_or(0)).contains(&f))
        .map(rename)
        .collect()
}

/// Numbered compiler clones (`foo.constprop.0`, `foo.part.1`): GCC numbers
/// them per function in the order it makes them, so the same number can
/// name a different specialisation after an edit (the k=2 clone was `.0`,
/// now the k=3 one is). A lone clone on each side pairs whatever its number;
/// otherwise clones pair by who calls them (a clone exists for its callers),
/// best overlap first, and only then by exact name.
fn pair_clones(
    c: &mut Correlation,
    original: &Object,
    patched: &Object,
    of: &[usize],
    pf: &[usize],
) {
    let group = |obj: &Object, v: &[usize], taken: &BTreeMap<usize, usize>| {
        let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &f in v.iter().filter(|f| !taken.contains_key(f)) {
            let base = strip_numeric(&obj.symbols[f].name);
            if base != obj.symbols[f].name {
                m.entry(base).or_default().push(f);
            }
        }
        m
    };
    let og = group(original, of, &c.o2p);
    let pg = group(patched, pf, &c.p2o);
    for (base, ps) in &pg {
        let Some(os) = og.get(base) else { continue };
        if let ([o], [p]) = (os.as_slice(), ps.as_slice()) {
            c.pair(*o, *p);
            continue;
        }
        let oname = |g: usize| original.symbols[g].name.clone();
        let pname = |g: usize| match c.p2o.get(&g) {
            Some(&o) => original.symbols[o].name.clone(),
            None => patched.symbols[g].name.clone(),
        };
        let oc: Vec<(usize, BTreeSet<String>)> = os
            .iter()
            .map(|&o| (o, callers(original, of, o, &oname)))
            .collect();
        let pc: Vec<(usize, BTreeSet<String>)> = ps
            .iter()
            .map(|&p| (p, callers(patched, pf, p, &pname)))
            .collect();
        let mut scored: Vec<(usize, usize, usize)> = Vec::new();
        for (o, ocs) in &oc {
            for (p, pcs) in &pc {
                let shared = ocs.intersection(pcs).count();
                if shared > 0 {
                    scored.push((shared, *o, *p));
                }
            }
        }
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, o, p) in scored {
            if !c.o2p.contains_key(&o) && !c.p2o.contains_key(&p) {
                c.pair(o, p);
            }
        }
    }
}

/// Correlates both objects' named symbols: functions first (plain names,
/// then clones, then whatever is left by name), then static locals by their
/// declaring function (with DWARF on both sides), the rest of them through
/// the functions using them, then the other data by name, then IFUNCs by
/// name.
pub fn correlate(
    original: &Object,
    patched: &Object,
    orig_dbg: Option<&Debug>,
    pat_dbg: Option<&Debug>,
) -> Correlation {
    let mut c = Correlation::default();
    let (of, pf) = (functions(original), functions(patched));
    // Plain names first: they are what the source calls the functions.
    let plain = |obj: &Object, v: &[usize]| -> Vec<usize> {
        v.iter()
            .copied()
            .filter(|&f| !is_numbered(&obj.symbols[f].name))
            .collect()
    };
    c.pair_by_name(
        original,
        patched,
        &plain(original, &of),
        &plain(patched, &pf),
    );
    pair_clones(&mut c, original, patched, &of, &pf);
    c.pair_by_name(original, patched, &of, &pf);
    if let (Some(od), Some(pd)) = (orig_dbg, pat_dbg) {
        pair_static_locals_by_owner(&mut c, original, patched, od, pd);
    }
    let undecided = pair_static_locals(&mut c, original, patched, &of, &pf);
    pair_other_data(&mut c, original, patched, &undecided);
    // An IFUNC is the name callers use; the source gives it.
    c.pair_by_name(original, patched, &ifuncs(original), &ifuncs(patched));
    c
}

/// The numbered locals of `obj` that DWARF places in a function, by
/// (function, variable name, symbol kind); several symbols under one key
/// (two blocks of one function each with a `static int n`) all stay listed.
fn owned_locals(obj: &Object, dbg: &Debug) -> BTreeMap<(String, String, SymKind), Vec<usize>> {
    let owners = dbg.static_locals();
    let mut out: BTreeMap<(String, String, SymKind), Vec<usize>> = BTreeMap::new();
    for s in data_symbols(obj) {
        if !is_numbered_local(obj, s) {
            continue;
        }
        let sym = &obj.symbols[s];
        let Some(sec) = sym.section else { continue };
        if let Some((f, v)) = owners.get(&encode(sec, sym.value)) {
            out.entry((f.clone(), v.clone(), sym.kind))
                .or_default()
                .push(s);
        }
    }
    out
}

/// Pairs numbered locals declared under the same name in the same function
/// (one per side). Whoever references them does not matter, so a function
/// that inlined two owners of a `sMutex` does not make them ambiguous.
fn pair_static_locals_by_owner(
    c: &mut Correlation,
    original: &Object,
    patched: &Object,
    od: &Debug,
    pd: &Debug,
) {
    let orig = owned_locals(original, od);
    for (key, ps) in owned_locals(patched, pd) {
        if let (Some([o]), [p]) = (orig.get(&key).map(Vec::as_slice), ps.as_slice()) {
            if !c.o2p.contains_key(o) && !c.p2o.contains_key(p) {
                c.pair(*o, *p);
            }
        }
    }
}

/// What the functions using a patched static local say about its original.
enum Evidence {
    One(usize),
    Several(Vec<usize>),
    /// Correlated functions use it but used no such static before: the
    /// static is new (e.g. `static int calls` added to count()).
    New,
    /// Only new functions or data use it.
    None,
}

/// Pairs the patched numbered locals (`calls.1`) through their users, in
/// symbol order; records the ambiguous ones. Returns those no correlated
/// function uses, left for [`pair_other_data`].
fn pair_static_locals(
    c: &mut Correlation,
    original: &Object,
    patched: &Object,
    of: &[usize],
    pf: &[usize],
) -> Vec<usize> {
    let orig_uses = numbered_locals_used(original, of);
    let users = numbered_local_users(patched, pf);
    let mut undecided = Vec::new();
    for p in data_symbols(patched) {
        if !is_numbered_local(patched, p) || c.p2o.contains_key(&p) {
            continue;
        }
        let user_list = users.get(&p).map_or(&[][..], Vec::as_slice);
        match static_local_evidence(c, original, patched, p, &orig_uses, user_list) {
            Evidence::One(o) => c.pair(o, p),
            Evidence::Several(v) => c.ambiguous.push((p, v)),
            Evidence::New => {}
            Evidence::None => undecided.push(p),
        }
    }
    undecided
}

/// For each function of `funcs`, the numbered locals its code references.
fn numbered_locals_used(obj: &Object, funcs: &[usize]) -> BTreeMap<usize, BTreeSet<usize>> {
    funcs
        .iter()
        .map(|&f| {
            let sec = obj.symbols[f].section.unwrap_or(0);
            let refs = named_refs(obj, sec)
                .into_iter()
                .filter(|&s| is_numbered_local(obj, s))
                .collect();
            (f, refs)
        })
        .collect()
}

/// For each numbered local, the functions of `funcs` referencing it.
fn numbered_local_users(obj: &Object, funcs: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let mut users: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &f in funcs {
        let sec = obj.symbols[f].section.unwrap_or(0);
        for s in named_refs(obj, sec) {
            if is_numbered_local(obj, s) {
                users.entry(s).or_default().push(f);
            }
        }
    }
    users
}

/// The unpaired original statics of `p`'s kind and base name that the
/// original partners of `p`'s users referenced.
fn static_local_evidence(
    c: &Correlation,
    original: &Object,
    patched: &Object,
    p: usize,
    orig_uses: &BTreeMap<usize, BTreeSet<usize>>,
    users: &[usize],
) -> Evidence {
    let base = strip_numeric(&patched.symbols[p].name);
    let kind = patched.symbols[p].kind;
    let mut known_user = false;
    let mut candidates: Option<BTreeSet<usize>> = None;
    for f in users {
        let Some(of) = c.p2o.get(f) else { continue };
        known_user = true;
        let set: BTreeSet<usize> = orig_uses[of]
            .iter()
            .copied()
            .filter(|&o| {
                let s = &original.symbols[o];
                s.kind == kind && strip_numeric(&s.name) == base && !c.o2p.contains_key(&o)
            })
            .collect();
        // An inlined copy may use several statics of the same base name
        // (it inlined two functions): intersect the non-empty sets so the
        // function that owns the static decides.
        if !set.is_empty() {
            candidates = Some(match candidates {
                None => set,
                Some(prev) => prev.intersection(&set).copied().collect(),
            });
        }
    }
    match candidates.map(|c| c.into_iter().collect::<Vec<_>>()) {
        Some(v) if v.len() == 1 => Evidence::One(v[0]),
        Some(v) if v.len() > 1 => Evidence::Several(v),
        _ if known_user => Evidence::New,
        _ => Evidence::None,
    }
}

/// Data other than the static locals paired through their users: exact
/// names are only trusted for unnumbered data; the `undecided` numbered
/// locals pair when their base name is unique on both sides.
fn pair_other_data(c: &mut Correlation, original: &Object, patched: &Object, undecided: &[usize]) {
    let (numbered_od, unnumbered_od): (Vec<usize>, Vec<usize>) = data_symbols(original)
        .into_iter()
        .partition(|&o| is_numbered_local(original, o));
    let (numbered_pd, unnumbered_pd): (Vec<usize>, Vec<usize>) = data_symbols(patched)
        .into_iter()
        .partition(|&p| is_numbered_local(patched, p));
    c.pair_by_name(original, patched, &unnumbered_od, &unnumbered_pd);
    for &p in undecided {
        let base = strip_numeric(&patched.symbols[p].name);
        let same = |obj: &Object, v: &[usize]| -> Vec<usize> {
            v.iter()
                .copied()
                .filter(|&s| strip_numeric(&obj.symbols[s].name) == base)
                .collect()
        };
        let (os, ps) = (same(original, &numbered_od), same(patched, &numbered_pd));
        if let ([o], [_]) = (os.as_slice(), ps.as_slice()) {
            if !c.o2p.contains_key(o) && original.symbols[*o].kind == patched.symbols[p].kind {
                c.pair(*o, p);
            }
        }
    }
}
