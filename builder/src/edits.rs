//! Which functions the diff edits. This explains ("edited in the diff") and
//! keeps the differ from taking an edited function's changed constant for a
//! shifted `__LINE__`; what ships is decided by the objects.
//!
//! Each hunk is located in the two trees (GNU patch may have applied it at
//! an offset), giving its removed lines (old file) and added lines (new
//! file). For each side, two views name the functions those lines are in:
//!
//! * tree-sitter (`extern-gen`): the top-level items touching the lines, and
//!   of those the functions whose tokens changed (a comment edit is not an
//!   edit). Trusted when it is certain.
//! * DWARF (`differ::source_lines`, the object of that side): functions whose
//!   line span (head to last line with code) contains a changed line.
//!   Used when an item touching the lines is `uncertain` or a parse error
//!   overlaps them (macros tree-sitter cannot see through, `goto *`), or
//!   when tree-sitter's items there include none of the functions DWARF
//!   names (a misnamed or swallowed function). When DWARF names nothing
//!   (a line without code), tree-sitter's answer stands, less any
//!   "function" named like one of the file's macros (a misparse).
//!
//! Headers of the diff count for a unit when its line table lists them.
//! A compiler clone (`f.part.0`) is edited when its source function is: the
//! line map lists the clone's symbol under `f`, so it goes into the differ's
//! hints (`hint_names`), and the manifest names `f` for it through
//! [`differ::names::source_function`].

use crate::diff::{Diff, Hunk};
use crate::parsed::Source;
use differ::source_lines::LineMap;
use extern_gen::ItemKind;
use serde::Serialize;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

/// The function a compiler clone was made from (`f.part.0` → `f`): re-exported
/// under its old name for `manifest.rs`.
pub use differ::names::source_function as clone_parent;

/// The functions of one unit that the diff edits.
#[derive(Debug, Default)]
pub struct Edited {
    /// Source names (`luaV_concat`, not `luaV_concat.part.0`), in diff order.
    pub functions: Vec<String>,
    /// Where the DWARF line table, not tree-sitter, gave the answer.
    pub by_line_table: Vec<LineTableEdit>,
    /// For the differ: the functions plus their compiler clones' symbols.
    pub hint_names: Vec<String>,
}

/// A function found edited through the line table.
#[derive(Debug, Clone, Serialize)]
pub struct LineTableEdit {
    pub function: String,
    /// `file:first-last` of the changed lines (in the new file for added
    /// lines, in the old one for removed lines).
    pub lines: String,
    /// Why tree-sitter's answer was not used there.
    pub because: String,
}

/// The two versions of one file and their objects' line maps.
struct Side<'a> {
    /// The file's text and parse, shared with the layout check.
    src: Arc<Source>,
    map: Option<&'a LineMap>,
    /// This file's path in `map`'s line table.
    dwarf_path: Option<String>,
}

/// The functions of unit `unit_rel` that `diff` edits. `orig_root` and
/// `patched_root` are the two trees, `base_root` the path the objects' debug
/// info names (`-ffile-prefix-map`); `orig_obj`/`patched_obj` the objects.
pub fn edited_functions(
    unit_rel: &str,
    diff: &Diff,
    roots: (&Path, &Path, &Path),
    objects: (&[u8], &[u8]),
) -> Edited {
    let (orig_root, patched_root, base_root) = roots;
    let maps = (
        LineMap::read(objects.0).ok().flatten(),
        LineMap::read(objects.1).ok().flatten(),
    );
    let mut out = Edited::default();
    for f in &diff.files {
        if !f.is_c() || f.added || f.deleted || !(f.path == unit_rel || f.is_header()) {
            continue;
        }
        let old = load(orig_root, &f.path, maps.0.as_ref(), base_root);
        let new = load(patched_root, &f.path, maps.1.as_ref(), base_root);
        let (Some(old), Some(new)) = (old, new) else {
            continue;
        };
        // A header counts only for units whose line table lists it.
        if f.is_header() && old.dwarf_path.is_none() && new.dwarf_path.is_none() {
            continue;
        }
        let changed = match (&old.src.file, &new.src.file) {
            (Some(o), Some(n)) => extern_gen::changed::compare(o, n),
            _ => Vec::new(),
        };
        // A "function" named like a macro of the file is a misparse.
        let macros: Vec<&str> = [&old.src.file, &new.src.file]
            .into_iter()
            .flatten()
            .flat_map(|p| &p.items)
            .filter(|i| i.kind == ItemKind::Preproc && i.conditional.is_none())
            .filter_map(|i| i.name.as_deref())
            .collect();
        for hunk in &f.hunks {
            let (removed, added) = locate(hunk, &old.src.text, &new.src.text);
            // The added lines name the place; a pure removal, the old lines.
            let place = if added.is_empty() {
                format!("{}:{} (old)", f.path, span_text(&removed))
            } else {
                format!("{}:{}", f.path, span_text(&added))
            };
            for (lines, side, is_old) in [(&removed, &old, true), (&added, &new, false)] {
                if lines.is_empty() {
                    continue;
                }
                let ts: Vec<String> = changed
                    .iter()
                    .filter(|c| c.kind == ItemKind::Function)
                    .filter(|c| {
                        let span = if is_old { &c.old_lines } else { &c.new_lines };
                        span.as_ref()
                            .is_some_and(|s| lines.iter().any(|l| s.contains(l)))
                    })
                    .filter_map(|c| c.name.clone())
                    .filter(|n| !macros.contains(&n.as_str()))
                    .collect();
                let names = match decide(side, lines) {
                    Some((dwarf, because)) => {
                        for n in &dwarf {
                            let e = LineTableEdit {
                                function: n.clone(),
                                lines: place.clone(),
                                because: because.clone(),
                            };
                            if !out
                                .by_line_table
                                .iter()
                                .any(|x| x.function == e.function && x.lines == e.lines)
                            {
                                out.by_line_table.push(e);
                            }
                        }
                        dwarf
                    }
                    None => ts,
                };
                for n in names {
                    if !out.functions.contains(&n) {
                        out.functions.push(n);
                    }
                }
            }
        }
    }
    out.hint_names = out.functions.clone();
    for m in [&maps.0, &maps.1].into_iter().flatten() {
        for f in out.functions.iter().filter_map(|n| m.get(n)) {
            for s in &f.symbols {
                if !out.hint_names.contains(s) {
                    out.hint_names.push(s.clone());
                }
            }
        }
    }
    out
}

fn load<'a>(
    root: &Path,
    rel: &str,
    map: Option<&'a LineMap>,
    base_root: &Path,
) -> Option<Side<'a>> {
    let src = crate::parsed::load(&root.join(rel))?;
    let dwarf_path = map.and_then(|m| dwarf_path(m, base_root, rel));
    Some(Side {
        src,
        map,
        dwarf_path,
    })
}

/// The line table's name for `rel`: the path in the deployed tree, else
/// the only listed file ending with `rel`.
fn dwarf_path(map: &LineMap, base_root: &Path, rel: &str) -> Option<String> {
    let files = map.files();
    let want = base_root.join(rel);
    if let Some(f) = files.iter().find(|f| Path::new(f) == want) {
        return Some(f.to_string());
    }
    let mut ending = files.iter().filter(|f| Path::new(f).ends_with(rel));
    match (ending.next(), ending.next()) {
        (Some(f), None) => Some(f.to_string()),
        _ => None,
    }
}

/// `Some((functions, why))` when DWARF, not tree-sitter, answers for the
/// changed `lines` of one side.
fn decide(side: &Side, lines: &[usize]) -> Option<(Vec<String>, String)> {
    let (map, path) = (side.map?, side.dwarf_path.as_deref()?);
    let wanted: Vec<u64> = lines.iter().map(|&l| l as u64).collect();
    let dwarf: Vec<String> = map
        .functions_at(path, &wanted)
        .into_iter()
        .map(str::to_string)
        .collect();
    if dwarf.is_empty() {
        return None;
    }
    let Some(parsed) = &side.src.file else {
        return Some((dwarf, "tree-sitter cannot parse the file".into()));
    };
    let ranges: Vec<RangeInclusive<usize>> = lines.iter().map(|&l| l..=l).collect();
    let touching: Vec<_> = parsed
        .items_touching(&ranges)
        .into_iter()
        .filter(|i| i.conditional.is_none())
        .collect();
    let error_lines = parsed.error_ranges.iter().map(|r| {
        line_of(&side.src.text, r.start)..=line_of(&side.src.text, r.end.max(r.start + 1) - 1)
    });
    let in_error = error_lines
        .clone()
        .any(|r| lines.iter().any(|l| r.contains(l)));
    if in_error || touching.iter().any(|i| i.uncertain) {
        return Some((dwarf, "tree-sitter is unsure here (parse error)".into()));
    }
    let ts_functions: Vec<&str> = touching
        .iter()
        .filter(|i| i.kind == ItemKind::Function)
        .filter_map(|i| i.name.as_deref())
        .collect();
    if dwarf.iter().any(|d| ts_functions.contains(&d.as_str())) {
        return None;
    }
    let because = if ts_functions.is_empty() {
        "tree-sitter sees no function here".to_string()
    } else {
        format!("tree-sitter sees `{}` here", ts_functions.join("`, `"))
    };
    Some((dwarf, because))
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `12-14` or `12`, of a sorted list of lines.
fn span_text(lines: &[usize]) -> String {
    match (lines.first(), lines.last()) {
        (Some(a), Some(b)) if a != b => format!("{a}-{b}"),
        (Some(a), _) => a.to_string(),
        _ => String::new(),
    }
}

/// The 1-based lines the hunk removes from `old` and adds in `new`, where
/// its text is found nearest to the stated position (GNU patch accepts
/// offsets); at the stated position when it is not found (fuzz).
fn locate(h: &Hunk, old: &str, new: &str) -> (Vec<usize>, Vec<usize>) {
    let side = |text: &str, start: usize, keep: char| -> Vec<usize> {
        let block: Vec<(char, &str)> = h
            .lines
            .iter()
            .filter(|(k, _)| *k == ' ' || *k == keep)
            .map(|(k, t)| (*k, t.trim_end_matches(['\n', '\r'])))
            .collect();
        let file: Vec<&str> = text.lines().collect();
        let stated = start.saturating_sub(1);
        let fits = |at: usize| {
            at + block.len() <= file.len()
                && block
                    .iter()
                    .zip(&file[at..])
                    .all(|((_, b), f)| b.trim_end() == f.trim_end())
        };
        let at = (0..=file.len())
            .flat_map(|d| [stated.checked_sub(d), Some(stated + d)])
            .flatten()
            .find(|&a| !block.is_empty() && fits(a))
            .unwrap_or(stated);
        block
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| *k == keep)
            .map(|(i, _)| at + i + 1)
            .collect()
    };
    (side(old, h.old_start, '-'), side(new, h.new_start, '+'))
}

/// The diff's edits of C files as line numbers, for the differ's rule that
/// an edit which compiled to nothing does not ship its function.
pub fn line_edits(diff: &Diff) -> Vec<differ::LineEdit> {
    diff.files
        .iter()
        .filter(|f| f.is_c() && !f.added && !f.deleted)
        .map(|f| {
            let mut e = differ::LineEdit {
                file: f.path.clone(),
                ..Default::default()
            };
            for h in &f.hunks {
                hunk_lines(h, &mut e);
            }
            e
        })
        .collect()
}

/// Walks one hunk, numbering old lines (context and removed) and new lines
/// (context and added).
fn hunk_lines(h: &Hunk, e: &mut differ::LineEdit) {
    let (mut old, mut new) = (h.old_start as u64, h.new_start as u64);
    for (mark, _) in &h.lines {
        match mark {
            '-' => {
                e.removed.push(old);
                old += 1;
            }
            '+' => {
                e.added.push(new);
                new += 1;
            }
            _ => {
                old += 1;
                new += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_are_found_at_an_offset() {
        let h = Hunk {
            old_start: 2,
            new_start: 2,
            lines: vec![
                (' ', "b".into()),
                ('-', "c".into()),
                ('+', "C".into()),
                ('+', "C2".into()),
                (' ', "d".into()),
            ],
        };
        // Two lines were inserted above the hunk since the diff was made.
        let (removed, added) = locate(&h, "x\ny\na\nb\nc\nd\n", "x\ny\na\nb\nC\nC2\nd\n");
        assert_eq!(removed, [5]);
        assert_eq!(added, [5, 6]);
        // Not found: the stated position.
        let (removed, _) = locate(&h, "q\nq\nq\n", "q\n");
        assert_eq!(removed, [3]);
    }
}
