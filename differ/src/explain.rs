//! Plain-words reasons why a function's code differs between the two
//! objects, read off the two normalized bodies alone ([`Canon`]): where the
//! bytes differ, which calls, string literals and other references were
//! gained or lost. What the rest of the unit says about it (clones,
//! inlining, callees) is `why`'s.

use crate::normalize::{quote, Canon, NReloc, Target};
use object::elf;
use std::collections::{BTreeMap, BTreeSet};

/// Plain-words reasons why two normalized function bodies differ: where the
/// code differs, then calls, string literals and other references gained or
/// lost; failing those, where the relocations differ.
pub fn explain(o: &Canon, p: &Canon) -> Vec<String> {
    let mut reasons = code_reasons(o, p);
    reasons.extend(call_reasons(o, p));
    reasons.extend(string_reasons(o, p));
    reasons.extend(reference_reasons(o, p));
    if reasons.is_empty() {
        // Same targets, but at other places or with other addends/types.
        reasons.extend(reloc_reason(o, p));
    }
    if reasons.is_empty() {
        reasons.push("code differs".into());
    }
    reasons
}

/// The first differing byte and a size change.
fn code_reasons(o: &Canon, p: &Canon) -> Vec<String> {
    let mut reasons = Vec::new();
    let common = o.size.min(p.size) as usize;
    let byte = |c: &Canon, i: usize| c.bytes.get(i).copied().unwrap_or(0);
    if let Some(i) = (0..common).find(|&i| byte(o, i) != byte(p, i)) {
        reasons.push(format!("code differs at offset {i:#x}"));
    }
    if o.size != p.size {
        reasons.push(format!("size changed from {} to {} bytes", o.size, p.size));
    }
    reasons
}

/// A direct call of a function known by name.
fn is_named_call(r: &NReloc) -> bool {
    r.r_type == elf::R_X86_64_PLT32
        && matches!(r.target, Target::External(_) | Target::Named { .. })
}

/// Functions called now and no longer ("now calls X (was Y)" for one each).
fn call_reasons(o: &Canon, p: &Canon) -> Vec<String> {
    let calls = |c: &Canon| -> Vec<String> {
        let mut v: Vec<String> = c
            .relocs
            .iter()
            .filter(|r| is_named_call(r))
            .map(|r| r.target.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (oc, pc) = (calls(o), calls(p));
    let (gone, added) = (minus(&oc, &pc), minus(&pc, &oc));
    if let ([g], [a]) = (gone.as_slice(), added.as_slice()) {
        return vec![format!("now calls {a} (was {g})")];
    }
    let mut reasons: Vec<String> = added.iter().map(|a| format!("now calls {a}")).collect();
    reasons.extend(gone.iter().map(|g| format!("no longer calls {g}")));
    reasons
}

/// String literals used now and no longer, paired in order as changes.
fn string_reasons(o: &Canon, p: &Canon) -> Vec<String> {
    let strings = |c: &Canon| -> Vec<Vec<u8>> {
        c.relocs.iter().filter_map(|r| as_text(&r.target)).collect()
    };
    let (os, ps) = (strings(o), strings(p));
    let (gone, added) = (minus(&os, &ps), minus(&ps, &os));
    let pairs = gone.len().min(added.len());
    let mut reasons: Vec<String> = (0..pairs)
        .map(|i| {
            format!(
                "string literal changed: {} → {}",
                quote(&gone[i]),
                quote(&added[i])
            )
        })
        .collect();
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
    reasons
}

/// Everything else that is referenced (data, constants, tables, functions
/// taken by address), as sets: gained, then lost.
fn reference_reasons(o: &Canon, p: &Canon) -> Vec<String> {
    let others = |c: &Canon| -> BTreeSet<Target> {
        c.relocs
            .iter()
            .filter(|r| as_text(&r.target).is_none() && !is_named_call(r))
            .map(|r| r.target.clone())
            .collect()
    };
    let (ot, pt) = (others(o), others(p));
    let mut reasons: Vec<String> = pt.difference(&ot).map(gained_reference).collect();
    for t in ot.difference(&pt) {
        if !matches!(t, Target::Anon(_))
            && !matches!(t, Target::Named { .. } if pt.iter().any(|x| matches!(x, Target::Named { name, .. } if Some(name.as_str()) == named(t))))
        {
            reasons.push(format!("no longer references {t}"));
        }
    }
    reasons
}

fn gained_reference(t: &Target) -> String {
    match t {
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
    }
}

/// The offset of the first relocation that differs.
fn reloc_reason(o: &Canon, p: &Canon) -> Option<String> {
    let i =
        (0..o.relocs.len().max(p.relocs.len())).find(|&i| o.relocs.get(i) != p.relocs.get(i))?;
    let at = o.relocs.get(i).or(p.relocs.get(i)).map_or(0, |r| r.offset);
    Some(format!("relocations differ at offset {at:#x}"))
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
