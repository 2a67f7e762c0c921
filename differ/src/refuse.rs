//! Refusals that need more than byte comparison: what a running process
//! cannot take even though the patched code itself would be fine.
//!
//! - A struct/union whose layout (size, member offsets or types) changed
//!   while code that does not ship, or data that exists in memory, uses it:
//!   old code and old objects would read the new layout the old way.
//! - A function whose signature (DWARF: return type, parameter types) changed
//!   while callers keep calling it the old way: for a global function the
//!   callers in other files are unknown, so always; for a static one, when a
//!   caller in the file does not ship or its address is stored in data.
//! - A static local that the patched code no longer has: the running
//!   function (and frames of it still on a stack) keep using its storage,
//!   and its state would silently split from the new code's.

use crate::compare::{is_ro_local, Analysis};
use crate::correlate::{data_symbols, functions, is_static_local, named_refs, Correlation};
use crate::dwarf::{encode, Debug};
use crate::elf::Object;
use crate::names::{clone_of, static_local_base};
use crate::{Change, Context, Refusal};
use std::collections::BTreeMap;

pub fn check(a: &Analysis, corr: &Correlation, file: &str, ctx: &Context) -> Vec<Refusal> {
    let mut out = removed_static_locals(a, corr, file);
    if let (Some(od), Some(pd)) = (&ctx.orig_dbg, &ctx.pat_dbg) {
        out.extend(layouts(a, od, pd, file));
        out.extend(signatures(a, od, pd, file));
    }
    out
}

/// The concrete subprogram DIE of function symbol `sym`.
fn die_of(obj: &Object, dbg: &Debug, sym: usize) -> Option<usize> {
    let s = &obj.symbols[sym];
    dbg.subprogram_at(encode(s.section?, s.value))
}

fn removed_static_locals(a: &Analysis, corr: &Correlation, file: &str) -> Vec<Refusal> {
    let orig = a.orig.obj;
    let mut out = Vec::new();
    for o in data_symbols(orig) {
        if !is_static_local(orig, o) || is_ro_local(orig, o) || corr.o2p.contains_key(&o) {
            continue;
        }
        // Not gone: a patched static could continue it, and shipped code
        // using that one is refused (the plan).
        if corr.ambiguous.iter().any(|(_, cands)| cands.contains(&o)) {
            continue;
        }
        // Functions of the running program that use it and still exist.
        let users: Vec<&str> = functions(orig)
            .into_iter()
            .filter(|&f| corr.o2p.contains_key(&f))
            .filter(|&f| named_refs(orig, orig.symbols[f].section.unwrap_or(0)).contains(&o))
            .map(|f| orig.symbols[f].name.as_str())
            .collect();
        if users.is_empty() {
            continue;
        }
        let base = static_local_base(&orig.symbols[o].name);
        out.push(Refusal {
            symbol: orig.symbols[o].name.clone(),
            message: format!(
                "static local `{base}` in {}() ({file}) is gone from the patched code, but the \
                 running {}() and frames of it still on a stack use its storage. Keep the static \
                 local (it may stay unused), or restart.",
                users[0], users[0]
            ),
        });
    }
    out
}

/// Named aggregate types by key ("struct foo", "union u", or a typedef
/// name for an anonymous one): (DIE, layout text).
fn aggregates(dbg: &Debug) -> BTreeMap<String, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, d) in dbg.dies.iter().enumerate() {
        let key = match d.tag {
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type if d.name.is_some() => {
                dbg.type_name(Some(i))
            }
            gimli::DW_TAG_typedef => match d.type_ {
                Some(t)
                    if dbg.dies[t].name.is_none()
                        && matches!(
                            dbg.dies[t].tag,
                            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
                        ) =>
                {
                    let key = d.name.clone().unwrap_or_default();
                    out.entry(key).or_insert((t, layout(dbg, t)));
                    continue;
                }
                _ => continue,
            },
            _ => continue,
        };
        if d.byte_size.is_some() && !d.declaration {
            out.entry(key).or_insert((i, layout(dbg, i)));
        }
    }
    out
}

/// Members as (name, "offset type") of the struct/union DIE `t`: only the
/// DIE's own DW_TAG_member children, so a struct declared inside another's
/// body (a DIE of its own) keeps its members. Members of an anonymous
/// struct/union member belong to the enclosing type (`u.x`, or `x` for a C11
/// anonymous member): nothing else would see them change.
fn members(dbg: &Debug, t: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    members_into(dbg, t, "", 0, 0, &mut out);
    out
}

fn members_into(
    dbg: &Debug,
    t: usize,
    prefix: &str,
    base: u64,
    depth: u8,
    out: &mut Vec<(String, String)>,
) {
    for &m in &dbg.dies[t].children {
        let d = &dbg.dies[m];
        if d.tag != gimli::DW_TAG_member {
            continue;
        }
        let name = format!("{prefix}{}", d.name.as_deref().unwrap_or(""));
        let offset = base + d.member_offset.unwrap_or(0);
        let anon = d.type_.filter(|&ty| {
            let td = &dbg.dies[ty];
            td.name.is_none()
                && matches!(
                    td.tag,
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
                )
        });
        if let (Some(ty), true) = (anon, depth < 8) {
            let prefix = if name.is_empty() { name } else { name + "." };
            members_into(dbg, ty, &prefix, offset, depth + 1, out);
            continue;
        }
        let bits = d
            .bit_size
            .map(|b| format!(":{b}@{}", d.bit_offset.unwrap_or(0)))
            .unwrap_or_default();
        out.push((
            name,
            format!("offset {offset} {}{bits}", dbg.type_name(d.type_)),
        ));
    }
}

fn layout(dbg: &Debug, t: usize) -> String {
    let m: Vec<String> = members(dbg, t)
        .into_iter()
        .map(|(n, l)| format!("{n} {l}"))
        .collect();
    format!(
        "size {} {{{}}}",
        dbg.dies[t].byte_size.unwrap_or(0),
        m.join("; ")
    )
}

/// What changed between two layouts, in words.
fn layout_change(od: &Debug, o: usize, pd: &Debug, p: usize) -> String {
    let (os, ps) = (
        od.dies[o].byte_size.unwrap_or(0),
        pd.dies[p].byte_size.unwrap_or(0),
    );
    let (om, pm) = (members(od, o), members(pd, p));
    let mut what = Vec::new();
    if os != ps {
        what.push(format!("size {os} → {ps} bytes"));
    }
    for (n, l) in &pm {
        match om.iter().find(|(m, _)| m == n) {
            None => what.push(format!("member `{n}` added")),
            Some((_, ol)) if ol != l => what.push(format!("member `{n}`: {ol} → {l}")),
            _ => {}
        }
    }
    what.extend(
        om.iter()
            .filter(|(n, _)| !pm.iter().any(|(m, _)| m == n))
            .map(|(n, _)| format!("member `{n}` removed")),
    );
    if what.is_empty() {
        what.push("member order changed".into());
    }
    what.join(", ")
}

/// Whether type `t` is `target` or holds it by value (through typedefs,
/// qualifiers, arrays, members); `pointer_ok` also follows pointers (code
/// taking a `struct foo *` uses foo's layout; a struct holding a pointer
/// does not embed it).
fn reaches(dbg: &Debug, t: Option<usize>, target: usize, pointer_ok: bool, depth: u8) -> bool {
    let Some(t) = t else { return false };
    if t == target {
        return true;
    }
    if depth > 16 {
        return false;
    }
    let d = &dbg.dies[t];
    match d.tag {
        gimli::DW_TAG_pointer_type => pointer_ok && reaches(dbg, d.type_, target, true, depth + 1),
        gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => d
            .children
            .iter()
            .any(|&m| reaches(dbg, dbg.dies[m].type_, target, false, depth + 1)),
        _ => reaches(dbg, d.type_, target, pointer_ok, depth + 1),
    }
}

/// The type of a parameter/variable DIE (possibly through its origin).
fn die_type(dbg: &Debug, d: usize) -> Option<usize> {
    dbg.dies[d].type_.or(dbg.dies[dbg.origin(d)].type_)
}

fn function_uses(dbg: &Debug, sp: usize, target: usize) -> bool {
    reaches(dbg, die_type(dbg, sp), target, true, 0)
        || dbg
            .descendants(sp)
            .into_iter()
            .chain(dbg.descendants(dbg.origin(sp)))
            .any(|d| {
                matches!(
                    dbg.dies[d].tag,
                    gimli::DW_TAG_formal_parameter | gimli::DW_TAG_variable
                ) && reaches(dbg, die_type(dbg, d), target, true, 0)
            })
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn layouts(a: &Analysis, od: &Debug, pd: &Debug, file: &str) -> Vec<Refusal> {
    let orig = a.orig.obj;
    let (oa, pa) = (aggregates(od), aggregates(pd));
    let mut out = Vec::new();
    for (key, (o, ol)) in &oa {
        let Some((p, pl)) = pa.get(key) else { continue };
        if ol == pl {
            continue;
        }
        let change = layout_change(od, *o, pd, *p);
        let mut users = Vec::new();
        for f in functions(orig) {
            let unchanged = a
                .funcs
                .iter()
                .any(|v| v.original == Some(f) && v.change == Change::Unchanged);
            let uses = die_of(orig, od, f).is_some_and(|sp| function_uses(od, sp, *o));
            if unchanged && uses {
                users.push(format!("function `{}`", orig.symbols[f].name));
            }
        }
        for (i, d) in od.dies.iter().enumerate() {
            let storage = d.addr.is_some() || (d.external && d.declaration);
            if d.tag == gimli::DW_TAG_variable && storage && reaches(od, d.type_, *o, false, 0) {
                users.push(format!("variable `{}`", od.name(i).unwrap_or("?")));
            }
        }
        let header = od.dies[*o]
            .decl_file
            .and_then(|f| od.files.get(f as usize))
            .filter(|h| {
                !h.is_empty() && basename(h) != basename(od.cu_name.as_deref().unwrap_or(file))
            });
        let who = match (users.first(), header) {
            (Some(u), _) => format!(
                "{u}{} uses it and is not part of the patch",
                if users.len() > 1 {
                    format!(" (and {} more)", users.len() - 1)
                } else {
                    String::new()
                }
            ),
            (None, Some(h)) => format!("it is declared in header {h}, so other files may use it"),
            (None, None) => continue,
        };
        out.push(Refusal {
            symbol: key.clone(),
            message: format!(
                "{key} ({file}): layout changed ({change}); {who}, and objects in the running \
                 process keep the old layout. Keep the old layout (put new fields in a new \
                 structure), or restart."
            ),
        });
    }
    out
}

fn signature(dbg: &Debug, sp: usize) -> String {
    let decl = dbg.origin(sp);
    let params: Vec<String> = dbg.dies[decl]
        .children
        .iter()
        .filter_map(|&c| match dbg.dies[c].tag {
            gimli::DW_TAG_formal_parameter => Some(dbg.type_name(dbg.dies[c].type_)),
            gimli::DW_TAG_unspecified_parameters => Some("...".into()),
            _ => None,
        })
        .collect();
    format!(
        "{} ({})",
        dbg.type_name(dbg.dies[decl].type_),
        params.join(", ")
    )
}

fn signatures(a: &Analysis, od: &Debug, pd: &Debug, file: &str) -> Vec<Refusal> {
    let (orig, pat) = (a.orig.obj, a.pat.obj);
    let mut out = Vec::new();
    for f in a.funcs.iter().filter(|f| f.change == Change::Changed) {
        let (Some(o), Some(p)) = (f.original, f.patched) else {
            continue;
        };
        let name = &pat.symbols[p].name;
        if clone_of(name).is_some() {
            continue; // the compiler's own calling convention for its clones
        }
        let (Some(os), Some(ps)) = (die_of(orig, od, o), die_of(pat, pd, p)) else {
            continue;
        };
        let (old, new) = (signature(od, os), signature(pd, ps));
        if old == new {
            continue;
        }
        let why = if pat.symbols[p].global {
            Some("callers in other files cannot be known and would call it the old way".to_string())
        } else {
            static_callers_left(a, p)
        };
        if let Some(why) = why {
            out.push(Refusal {
                symbol: name.clone(),
                message: format!(
                    "function `{name}` ({file}): signature changed from `{old}` to `{new}`; {why}. \
                     Keep the old function and add a new one with the new signature (the old one \
                     may call it), or restart."
                ),
            });
        }
    }
    out
}

/// For a static function: what keeps using the old signature, if anything.
fn static_callers_left(a: &Analysis, p: usize) -> Option<String> {
    let pat = a.pat.obj;
    for q in functions(pat) {
        let sec = pat.symbols[q].section.unwrap_or(0);
        if q != p && a.change_of(q) == Some(Change::Unchanged) && named_refs(pat, sec).contains(&p)
        {
            return Some(format!(
                "its caller `{}` is not part of the patch",
                pat.symbols[q].name
            ));
        }
    }
    for d in data_symbols(pat) {
        let sec = pat.symbols[d].section.unwrap_or(0);
        let existing = !a.new_data.contains(&d) && !a.pat.changed_ro.contains(&d);
        if existing && named_refs(pat, sec).contains(&p) {
            return Some(format!(
                "its address is stored in `{}`, which keeps it",
                pat.symbols[d].name
            ));
        }
    }
    None
}
