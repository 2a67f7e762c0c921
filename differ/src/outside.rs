//! Shipped code that reaches data outside the executable.
//!
//! Code compiled for an executable reads a variable it does not define with
//! a 32-bit field (`mov stderr(%rip), %rdi`: R_X86_64_PC32; `-fno-pie`
//! immediates: R_X86_64_32), because the static linker gives the executable
//! its own copy of any library variable it uses. A variable the running
//! program never used has no such copy: it lives in its library, which in a
//! PIE process is terabytes away from the patch, and no 32-bit field
//! reaches it. Compiled with `-mno-direct-extern-access` (GCC 12) or
//! `-fno-direct-access-external-data` (Clang 14), the same code reads such
//! variables through the GOT (`mov stderr@GOTPCREL(%rip), %rax`), for which
//! the loader gives the patch slots of its own that can hold any address.
//!
//! Only the shipped functions are taken from that compile ([`ship_from`]);
//! the decision what ships stays with the ordinary compile, which is the
//! one that makes the same choices as the deployed build. The flag changes
//! how a reference to an outside symbol is emitted, after inlining and the
//! other interprocedural decisions (GCC legitimizes addresses when it
//! expands to RTL; Clang marks the declarations `dso_local` or not), but it
//! can change register allocation, and GCC's `-fipa-ra` lets a caller rely
//! on the registers its callee actually clobbers. So the shipped code is
//! only taken from the GOT-shaped compile when every function of the unit
//! that calls into it, or that it calls into (directly or through others),
//! and that does not ship compiles there to exactly what the running
//! program has: their assumptions about each other then hold unchanged.

use crate::compare::{self, Analysis};
use crate::correlate::{self, functions, named_refs};
use crate::elf::{self, Object, SymKind};
use crate::{dwarf, plan, Change, Context, Hints, UnitDiff};
use object::elf as E;
use std::collections::{BTreeMap, BTreeSet};

/// The undefined symbols the code `diff` ships from `patched` references
/// with a field that cannot hold an arbitrary 64-bit distance or address
/// (PC-relative or absolute, not through the GOT or the PLT): each is out of
/// reach when the running program holds no copy of it.
pub fn direct_outside_refs(diff: &UnitDiff, patched: &[u8]) -> Vec<String> {
    let Ok(obj) = elf::parse(patched, "patched") else {
        return Vec::new();
    };
    let mut names = BTreeSet::new();
    for &sec in &diff.ship_sections {
        let Some(section) = obj.sections.get(sec) else {
            continue;
        };
        for r in &section.relocs {
            let s = &obj.symbols[r.sym];
            let direct = matches!(
                r.r_type,
                E::R_X86_64_PC32 | E::R_X86_64_32 | E::R_X86_64_32S | E::R_X86_64_PC64
            );
            if direct && s.external && s.kind != SymKind::Tls && !s.name.is_empty() {
                names.insert(s.name.clone());
            }
        }
    }
    names.into_iter().collect()
}

/// `diff` (from comparing `original` with the ordinary patched compile)
/// re-planned to ship the same functions from `got_shaped`, the patched unit
/// compiled with outside data reached through the GOT. `Err` says why that
/// compile cannot be used (then `diff` stays as it is).
pub fn ship_from(
    diff: &UnitDiff,
    original: &[u8],
    got_shaped: &[u8],
    hints: &Hints,
) -> Result<UnitDiff, String> {
    let orig = elf::parse(original, "original").map_err(|e| e.0)?;
    let got = elf::parse(got_shaped, "GOT-shaped").map_err(|e| e.0)?;
    let file = diff.file.clone();
    let ctx = Context {
        orig_dbg: dwarf::load(&orig),
        pat_dbg: dwarf::load(&got),
        edited: hints.edited.clone(),
        line_edits: hints.line_edits.clone(),
    };
    let corr = correlate::correlate(&orig, &got, ctx.orig_dbg.as_ref(), ctx.pat_dbg.as_ref());
    let mut a = compare::analyze(&orig, &got, &corr, &file, &ctx);
    let shipped: BTreeMap<&str, Change> = diff
        .functions
        .iter()
        .filter(|f| matches!(f.change, Change::Changed | Change::New))
        .map(|f| (f.name.as_str(), f.change))
        .collect();
    let in_got: BTreeSet<&str> = functions(&got)
        .into_iter()
        .map(|f| got.symbols[f].name.as_str())
        .collect();
    if let Some(missing) = shipped.keys().find(|n| !in_got.contains(*n)) {
        return Err(format!("{missing} is not in that compile"));
    }
    let ship: BTreeSet<usize> = functions(&got)
        .into_iter()
        .filter(|&f| shipped.contains_key(got.symbols[f].name.as_str()))
        .collect();
    for f in neighbourhood(&got, &ship) {
        if a.change_of(f) != Some(Change::Unchanged) {
            return Err(format!(
                "{} compiles differently there (its own references to outside data), and it \
                 calls or is called by the shipped code",
                got.symbols[f].name
            ));
        }
    }
    force_verdicts(&mut a, &got, &shipped)?;
    if let Some(r) = a.refusals.first() {
        return Err(r.message.clone());
    }
    let planned = plan::plan(&a, &corr, &file);
    if let Some(r) = planned.refusals.first() {
        return Err(r.message.clone());
    }
    let replacements = plan::replacements(&a);
    let names = |rs: &[crate::Replacement]| -> BTreeSet<String> {
        rs.iter().map(|r| r.name.clone()).collect()
    };
    if names(&replacements) != names(&diff.replacements) {
        return Err("it replaces other functions".into());
    }
    Ok(UnitDiff {
        file,
        functions: diff.functions.clone(),
        refusals: Vec::new(),
        replacements,
        ship_sections: planned.ship.into_iter().collect(),
        routes: planned.routes,
        notes: diff.notes.clone(),
    })
}

/// The functions of `obj` outside `ship` connected to it by direct
/// references between function sections: those it reaches (and what they
/// reach), and those reaching it (and what reaches them).
fn neighbourhood(obj: &Object, ship: &BTreeSet<usize>) -> BTreeSet<usize> {
    let funcs = functions(obj);
    let is_func = |s: usize| obj.symbols[s].kind == SymKind::Func;
    let callees: BTreeMap<usize, BTreeSet<usize>> = funcs
        .iter()
        .map(|&f| {
            let sec = obj.symbols[f].section.unwrap_or(0);
            let refs = named_refs(obj, sec)
                .into_iter()
                .filter(|&g| g != f && is_func(g))
                .collect();
            (f, refs)
        })
        .collect();
    let mut callers: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (&f, gs) in &callees {
        for &g in gs {
            callers.entry(g).or_default().insert(f);
        }
    }
    let mut seen = BTreeSet::new();
    for edges in [&callees, &callers] {
        let mut work: Vec<usize> = ship.iter().copied().collect();
        let mut reached: BTreeSet<usize> = ship.clone();
        while let Some(f) = work.pop() {
            for &g in edges.get(&f).into_iter().flatten() {
                if reached.insert(g) {
                    work.push(g);
                }
            }
        }
        seen.extend(reached.difference(ship));
    }
    seen
}

/// The verdicts of the ordinary compile, by name: the functions it ships
/// are changed or new, every other one is left to the running program. A
/// function changed there must have its original partner here too.
fn force_verdicts(
    a: &mut Analysis,
    got: &Object,
    shipped: &BTreeMap<&str, Change>,
) -> Result<(), String> {
    for f in &mut a.funcs {
        let Some(p) = f.patched else { continue };
        f.change = match shipped.get(got.symbols[p].name.as_str()) {
            Some(Change::Changed) if f.original.is_none() => {
                return Err(format!(
                    "{} has no original counterpart there",
                    got.symbols[p].name
                ))
            }
            Some(&c) => c,
            None => Change::Unchanged,
        };
    }
    Ok(())
}
