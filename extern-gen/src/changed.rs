//! Item-by-item comparison of two versions of one C file.
//!
//! The builder uses this to name the functions "edited in the diff" and to
//! notice changed globals and types (which a function-level live patch cannot
//! carry and must refuse or flag).  Comparing items rather than diff hunks
//! means a hunk that only touches a comment or the blank line between two
//! functions does not mark either function as edited.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use crate::source::{parse, CFile, Item, ItemKind, SourceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    Added,
    Removed,
    Modified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedItem {
    pub kind: ItemKind,
    pub name: Option<String>,
    pub change: Change,
    /// Line span in the old text (None when Added).
    pub old_lines: Option<RangeInclusive<usize>>,
    /// Line span in the new text (None when Removed).
    pub new_lines: Option<RangeInclusive<usize>>,
}

/// Compare two versions of a file top-level item by item.
///
/// Named items are matched by (kind, name, n-th occurrence of that pair), so
/// a function defined in both branches of an `#if` is compared branch by
/// branch.  Unnamed items (anonymous enums, macro invocations, `#pragma`s)
/// are matched by content first and the rest paired in order.  Two items are
/// the same when their token sequences are, i.e. ignoring layout and
/// comments.  The lines of conditional groups (`#if`/`#else`/`#endif`) are
/// structure, not items, and are not reported.
///
/// Output: Added and Modified in new-file order, then Removed in old-file
/// order.
pub fn changed_items(old_text: &str, new_text: &str) -> Result<Vec<ChangedItem>, SourceError> {
    let old = parse(old_text)?;
    let new = parse(new_text)?;
    Ok(compare(&old, &new))
}

/// [`changed_items`] on already parsed files.
pub fn compare(old: &CFile, new: &CFile) -> Vec<ChangedItem> {
    let relevant = |it: &&Item| it.conditional.is_none();
    let old_items: Vec<&Item> = old.items.iter().filter(relevant).collect();
    let new_items: Vec<&Item> = new.items.iter().filter(relevant).collect();

    // new index -> matched old index
    let mut matched_new: Vec<Option<usize>> = vec![None; new_items.len()];
    let mut old_used = vec![false; old_items.len()];

    // Named: (kind, name, occurrence).
    let keyed = |items: &[&Item]| {
        let mut seen: HashMap<(ItemKind, &str), usize> = HashMap::new();
        let mut out: HashMap<(ItemKind, String, usize), usize> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            if let Some(n) = it.name.as_deref() {
                let c = seen.entry((it.kind, n)).or_default();
                out.insert((it.kind, n.to_string(), *c), i);
                *c += 1;
            }
        }
        out
    };
    let old_keys = keyed(&old_items);
    for (key, ni) in keyed(&new_items) {
        if let Some(&oi) = old_keys.get(&key) {
            matched_new[ni] = Some(oi);
            old_used[oi] = true;
        }
    }

    // Unnamed, per kind: identical content first, then leftovers in order.
    for (ni, it) in new_items.iter().enumerate() {
        if it.name.is_some() {
            continue;
        }
        if let Some(oi) = (0..old_items.len()).find(|&oi| {
            !old_used[oi]
                && old_items[oi].name.is_none()
                && old_items[oi].kind == it.kind
                && old_items[oi].fingerprint == it.fingerprint
        }) {
            matched_new[ni] = Some(oi);
            old_used[oi] = true;
        }
    }
    for (ni, it) in new_items.iter().enumerate() {
        if it.name.is_some() || matched_new[ni].is_some() {
            continue;
        }
        if let Some(oi) = (0..old_items.len()).find(|&oi| {
            !old_used[oi] && old_items[oi].name.is_none() && old_items[oi].kind == it.kind
        }) {
            matched_new[ni] = Some(oi);
            old_used[oi] = true;
        }
    }

    let lines = |it: &Item| Some(it.start_line..=it.end_line);
    let mut out = Vec::new();
    for (ni, it) in new_items.iter().enumerate() {
        match matched_new[ni] {
            Some(oi) if old_items[oi].fingerprint == it.fingerprint => {}
            Some(oi) => out.push(ChangedItem {
                kind: it.kind,
                name: it.name.clone(),
                change: Change::Modified,
                old_lines: lines(old_items[oi]),
                new_lines: lines(it),
            }),
            None => out.push(ChangedItem {
                kind: it.kind,
                name: it.name.clone(),
                change: Change::Added,
                old_lines: None,
                new_lines: lines(it),
            }),
        }
    }
    for (oi, it) in old_items.iter().enumerate() {
        if !old_used[oi] {
            out.push(ChangedItem {
                kind: it.kind,
                name: it.name.clone(),
                change: Change::Removed,
                old_lines: lines(it),
                new_lines: None,
            });
        }
    }
    out
}
